//! [`FhirClient`]: one `GET` function whose behaviour is a stack of tower layers
//! ([`crate::layers`]) built once per client:
//!
//! ```text
//! get(req) = stack(Attempt 1 of req, with this client's observer)
//! stack    = auth ∘ retry ∘ caller ∘ limiter ∘ ledger ∘ classify ∘ transport
//! ```
//!
//! This module holds the request and response types, the builder that configures the layers
//! from a [`VendorProfile`] and composes them (in that order, unless the caller composes its
//! own with [`FhirClientBuilder::stack`]), and the client, which keeps the composed stack and
//! answers questions about its server (origins, URLs, the host's limiter).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aqueduct_core::LedgerEntry;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tower::ServiceExt;
use url::Url;

use crate::auth::{AccessTokenSource, NoAuth};
use crate::error::{FetchError, FetchErrorKind};
use crate::fhir::{Bundle, CapabilityStatement};
use crate::layers::transport::{TransportSettings, origin_of};
use crate::layers::{
    Attempt, AttemptService, AuthLayer, CallerLayer, CallerLayers, ClassifyLayer, Layers,
    LedgerLayer, LimiterLayer, Transport, retry_layer,
};
use crate::limiter::{HostLimiter, LimiterRegistry};
use crate::profile::VendorProfile;
use crate::retry::RetryPolicy;

/// Receives one ledger entry per HTTP attempt. Must be cheap: it runs on the request path.
pub trait RequestObserver: Send + Sync + 'static {
    fn on_attempt(&self, entry: &LedgerEntry);
}

/// What the body of a request is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// FHIR JSON: HTML or invalid JSON is an error.
    #[default]
    Json,
    /// Anything (attachments): only transport and status are checked.
    Any,
}

/// One GET to make.
#[derive(Debug, Clone)]
pub struct FhirRequest {
    pub url: Url,
    /// For the ledger: the resource type asked for.
    pub resource_type: Option<String>,
    /// For the ledger: the patient whose record this is for.
    pub patient_id: Option<String>,
    /// For the ledger; derived from the URL when not given.
    pub url_template: Option<String>,
    pub expect: Expect,
    /// Overrides the profile's Accept header.
    pub accept: Option<String>,
    /// A FHIR JSON body to POST (a batch Bundle of reads); None for a GET.
    pub body: Option<Bytes>,
}

impl FhirRequest {
    pub fn new(url: Url) -> Self {
        Self {
            url,
            resource_type: None,
            patient_id: None,
            url_template: None,
            expect: Expect::Json,
            accept: None,
            body: None,
        }
    }

    /// POSTs `body` (FHIR JSON) instead of a GET: batch Bundles of reads, which are safe to
    /// retry like a GET.
    pub fn post_json(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn resource_type(mut self, t: impl Into<String>) -> Self {
        self.resource_type = Some(t.into());
        self
    }

    pub fn patient(mut self, p: impl Into<String>) -> Self {
        self.patient_id = Some(p.into());
        self
    }

    pub fn template(mut self, t: impl Into<String>) -> Self {
        self.url_template = Some(t.into());
        self
    }

    pub fn expect(mut self, e: Expect) -> Self {
        self.expect = e;
        self
    }

    pub fn accept(mut self, a: impl Into<String>) -> Self {
        self.accept = Some(a.into());
        self
    }

    /// The URL with patient values and opaque cursors replaced by placeholders, so requests of
    /// the same shape aggregate in the ledger.
    pub fn derived_template(&self) -> String {
        if let Some(t) = &self.url_template {
            return t.clone();
        }
        let mut path = self.url.path().to_string();
        if let Some(p) = &self.patient_id {
            path = path.replace(&format!("/{p}/"), "/{patient}/");
            if path.ends_with(&format!("/{p}")) {
                let cut = path.len() - p.len();
                path.truncate(cut);
                path.push_str("{patient}");
            }
        }
        // A read: `.../{Type}/{id}` aggregates as `.../{Type}/{id}`.
        if let Some(t) = &self.resource_type {
            let marker = format!("/{t}/");
            if let Some(pos) = path.rfind(&marker) {
                let rest = &path[pos + marker.len()..];
                if !rest.is_empty() && !rest.contains('/') && !rest.starts_with('{') {
                    path.truncate(pos + marker.len());
                    path.push_str("{id}");
                }
            }
        }
        let mut out = path;
        let mut first = true;
        for (k, v) in self.url.query_pairs() {
            out.push(if first { '?' } else { '&' });
            first = false;
            out.push_str(&k);
            out.push('=');
            let keep = matches!(
                k.as_ref(),
                "category" | "intent" | "_count" | "_summary" | "_elements" | "_type" | "status"
            );
            if self.patient_id.as_deref() == Some(v.as_ref()) {
                out.push_str("{patient}");
            } else if keep {
                out.push_str(&v);
            } else {
                out.push_str("{}");
            }
        }
        out
    }
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct FhirResponse {
    pub status: u16,
    pub url: Url,
    pub body: Bytes,
    pub content_type: Option<String>,
    /// The server's clock (Date header), for incremental syncs.
    pub server_date: Option<DateTime<Utc>>,
    /// `resourceType` of the body when it is JSON.
    pub resource_type: Option<String>,
    /// Entries in a Bundle, 1 for a single resource.
    pub resources: u64,
    /// Attempts it took (1 = first try).
    pub attempts: u32,
    pub duration: Duration,
    /// Held while a large body is in memory (see [`crate::body`]); dropping the response
    /// lets the next large body be read.
    pub large_body_lane: Option<crate::body::LargeBodyLane>,
    /// The response headers, for callers that study the server (rate-limit signals, the
    /// software it names) rather than its data.
    pub headers: reqwest::header::HeaderMap,
}

impl FhirResponse {
    /// Parses the body as a Bundle (lenient).
    pub fn bundle(&self) -> Result<Bundle, serde_json::Error> {
        Bundle::parse(&self.body)
    }
}

/// Tells the client how to build and pace requests: settings from the profile.
#[derive(Clone)]
pub struct FhirClient {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn RequestObserver>>,
}

struct Inner {
    /// The stack's transport, kept for its origin rules (the stack owns a clone).
    transport: Transport,
    auth: Arc<dyn AccessTokenSource>,
    limiter: Arc<HostLimiter>,
    stack: AttemptService,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.inner.transport.base().as_str())
            .field("host", &self.inner.limiter.host())
            .finish()
    }
}

/// The process-wide HTTP client: one connection pool for every FHIR server.
pub fn shared_http() -> reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("aqueduct/", env!("CARGO_PKG_VERSION")))
            // redirects are followed by the transport layer, same origin only
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
    .clone()
}

/// Builds a [`FhirClient`].
pub struct FhirClientBuilder {
    base: Url,
    profile: VendorProfile,
    auth: Arc<dyn AccessTokenSource>,
    registry: Option<Arc<LimiterRegistry>>,
    http: Option<reqwest::Client>,
    retry: RetryPolicy,
    observer: Option<Arc<dyn RequestObserver>>,
    caller: CallerLayers,
    stack: Option<ComposeFn>,
}

type ComposeFn = Box<dyn FnOnce(Layers) -> AttemptService + Send>;

impl FhirClientBuilder {
    pub fn auth(mut self, auth: Arc<dyn AccessTokenSource>) -> Self {
        self.auth = auth;
        self
    }
    /// Use another limiter registry than the process-wide one (tests, isolated pools).
    pub fn limiter_registry(mut self, r: Arc<LimiterRegistry>) -> Self {
        self.registry = Some(r);
        self
    }
    pub fn http(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    pub fn observer(mut self, o: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(o);
        self
    }

    /// Adds a layer around every attempt: inside retry (it sees each retry, numbered), outside
    /// the limiter (it sees an attempt before it waits for the host). The first added is the
    /// outermost. Layers that are generic over their inner service fit as they are.
    pub fn layer(mut self, layer: impl CallerLayer) -> Self {
        self.caller.push(layer);
        self
    }

    /// Composes the stack with `compose` instead of [`Layers::into_default_stack`]: to reorder
    /// the layers, leave one out, or put one of the caller's elsewhere. `compose` gets the
    /// layers configured from the profile and this builder (the ones added with
    /// [`layer`](Self::layer) as `caller`).
    pub fn stack(
        mut self,
        compose: impl FnOnce(Layers) -> AttemptService + Send + 'static,
    ) -> Self {
        self.stack = Some(Box::new(compose));
        self
    }

    pub fn build(self) -> Result<FhirClient, FetchError> {
        let mut base = self.base;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let host = host_key(&base);
        let registry = self.registry.unwrap_or_else(LimiterRegistry::global);
        let limiter = registry.for_host(&host, &self.profile.rate_limit);
        let mut headers = HeaderMap::new();
        for (k, v) in &self.profile.http.extra_headers {
            let name = HeaderName::try_from(k.as_str()).map_err(|e| {
                FetchError::new(
                    FetchErrorKind::InvalidUrl,
                    base.as_str(),
                    format!("bad header name {k:?} in profile: {e}"),
                )
            })?;
            let value = HeaderValue::try_from(v.as_str()).map_err(|e| {
                FetchError::new(
                    FetchErrorKind::InvalidUrl,
                    base.as_str(),
                    format!("bad header value for {k:?} in profile: {e}"),
                )
            })?;
            headers.insert(name, value);
        }
        let transport = Transport::new(TransportSettings {
            http: self.http.unwrap_or_else(shared_http),
            base,
            headers,
            accept: self.profile.http.accept.clone(),
            timeout: Duration::from_secs(self.profile.http.timeout_secs.max(1)),
            max_response_bytes: self.profile.http.max_response_mb.max(1) * 1024 * 1024,
            max_binary_bytes: self.profile.http.max_binary_mb.max(1) * 1024 * 1024,
            document_origins: self
                .profile
                .http
                .document_hosts
                .iter()
                .filter_map(|h| Url::parse(h).ok())
                .map(|u| origin_of(&u))
                .collect(),
        });
        let layers = Layers {
            auth: AuthLayer::new(Arc::clone(&self.auth)),
            retry: retry_layer(self.retry),
            caller: self.caller,
            limiter: LimiterLayer::new(Arc::clone(&limiter)),
            ledger: LedgerLayer,
            classify: ClassifyLayer,
            transport: transport.clone(),
        };
        let stack = match self.stack {
            Some(compose) => compose(layers),
            None => layers.into_default_stack(),
        };
        Ok(FhirClient {
            inner: Arc::new(Inner {
                transport,
                auth: self.auth,
                limiter,
                stack,
            }),
            observer: self.observer,
        })
    }
}

/// "host:port", the key of the per-host limiter.
pub fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl FhirClient {
    pub fn builder(base: Url, profile: &VendorProfile) -> FhirClientBuilder {
        FhirClientBuilder {
            base,
            profile: profile.clone(),
            auth: Arc::new(NoAuth),
            registry: None,
            http: None,
            retry: RetryPolicy::default(),
            observer: None,
            caller: CallerLayers::default(),
            stack: None,
        }
    }

    /// A client with the default layers: shared HTTP pool, process-wide limiter registry,
    /// default retry policy.
    pub fn new(
        base: Url,
        profile: &VendorProfile,
        auth: Arc<dyn AccessTokenSource>,
    ) -> Result<Self, FetchError> {
        Self::builder(base, profile).auth(auth).build()
    }

    /// The same client (same pool, limiter, auth) reporting attempts to `observer`.
    pub fn with_observer(&self, observer: Arc<dyn RequestObserver>) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            observer: Some(observer),
        }
    }

    /// The FHIR base URL, always ending with '/'.
    pub fn base(&self) -> &Url {
        self.inner.transport.base()
    }

    /// The scopes granted with the current token, when the token source knows them.
    pub fn granted_scopes(&self) -> Option<Vec<String>> {
        self.inner.auth.granted_scopes()
    }

    pub fn limiter(&self) -> &Arc<HostLimiter> {
        &self.inner.limiter
    }

    /// `base` + `path` (e.g. "Observation") with query parameters.
    pub fn url(&self, path: &str, params: &[(&str, &str)]) -> Result<Url, FetchError> {
        let base = self.base();
        let mut u = base.join(path).map_err(|e| {
            FetchError::new(
                FetchErrorKind::InvalidUrl,
                format!("{base}{path}"),
                e.to_string(),
            )
        })?;
        if !params.is_empty() {
            u.query_pairs_mut().extend_pairs(params.iter());
        }
        Ok(u)
    }

    /// True when `url` is on the same server: the same origin exactly, under the base path
    /// compared without regard to letter case (servers send `/fhir/R4` next links for a
    /// `/fhir/r4` base).
    pub fn is_same_server(&self, url: &Url) -> bool {
        let (path, base) = (url.path(), self.base().path());
        self.is_same_origin(url)
            && path.len() >= base.len()
            && path.is_char_boundary(base.len())
            && path[..base.len()].eq_ignore_ascii_case(base)
    }

    /// Fetches and parses the CapabilityStatement (`GET metadata`).
    pub async fn capability_statement(&self) -> Result<Option<CapabilityStatement>, FetchError> {
        let url = self.url("metadata", &[])?;
        let resp = self.get(FhirRequest::new(url).template("metadata")).await?;
        Ok(CapabilityStatement::parse(&resp.body))
    }

    /// GET (or a batch POST) through the client's stack: by default the limiter, auth
    /// (refresh once on 401), classification, retries, and a ledger entry per attempt to this
    /// client's observer.
    pub async fn get(&self, req: FhirRequest) -> Result<FhirResponse, FetchError> {
        let attempt = Attempt::first(req, self.observer.clone());
        self.inner.stack.clone().oneshot(attempt).await
    }

    /// The FHIR server's origin, or one of the organization's document hosts.
    pub fn may_receive_token(&self, url: &Url) -> bool {
        self.inner.transport.may_receive_token(url)
    }

    /// Same scheme, host and port as the FHIR base.
    pub fn is_same_origin(&self, url: &Url) -> bool {
        self.inner.transport.is_same_origin(url)
    }
}
