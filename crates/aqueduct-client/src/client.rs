//! [`FhirClient`]: one `GET` function with its behaviour composed from small layers:
//!
//! ```text
//! get(req) = retry( attempt )                  -- retry.rs: backoff + jitter, transient only
//! attempt  = limiter.acquire                   -- limiter.rs: pacing, AIMD concurrency, pauses
//!          → auth header (refresh once on 401) -- auth.rs
//!          → send + read body
//!          → classify (html-200, invalid-json, truncated, OperationOutcome)
//!          → throttling feedback to the limiter (Retry-After, X-RateLimit-*)
//!          → observer.on_attempt(LedgerEntry)  -- every attempt, failed ones included
//! ```

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aqueduct_core::LedgerEntry;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, DATE, HeaderMap, HeaderName, HeaderValue,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use url::Url;

use crate::auth::{AccessTokenSource, AuthError, NoAuth};
use crate::body::BodyError;
use crate::error::{FetchError, FetchErrorKind};
use crate::fhir::{Bundle, CapabilityStatement, OperationOutcome};
use crate::headers::{parse_rate_limit_reset, parse_retry_after};
use crate::limiter::{HostLimiter, LimiterRegistry, Signal};
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
    http: reqwest::Client,
    base: Url,
    headers: HeaderMap,
    accept: String,
    timeout: Duration,
    max_response_bytes: u64,
    max_binary_bytes: u64,
    /// Origins besides the base's that may receive the token (document hosts).
    document_origins: Vec<String>,
    auth: Arc<dyn AccessTokenSource>,
    limiter: Arc<HostLimiter>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.inner.base.as_str())
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
            // redirects are followed by FhirClient::send, same origin only
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
}

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
        Ok(FhirClient {
            inner: Arc::new(Inner {
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
                auth: self.auth,
                limiter,
                retry: self.retry,
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

#[derive(Deserialize)]
struct BodyShape {
    #[serde(rename = "resourceType", default)]
    resource_type: Option<String>,
    #[serde(default)]
    entry: Option<Vec<IgnoredAny>>,
}

enum Attempt {
    Done(FhirResponse),
    Failed(FetchError),
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
        &self.inner.base
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
        let mut u = self.inner.base.join(path).map_err(|e| {
            FetchError::new(
                FetchErrorKind::InvalidUrl,
                format!("{}{path}", self.inner.base),
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
        let (path, base) = (url.path(), self.inner.base.path());
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

    /// GET with every layer: limiter, auth (refresh once on 401), classification, retries,
    /// and a ledger entry per attempt.
    pub async fn get(&self, req: FhirRequest) -> Result<FhirResponse, FetchError> {
        let template = req.derived_template();
        let policy = &self.inner.retry;
        let mut token = self
            .inner
            .auth
            .token()
            .await
            .map_err(|e| auth_error(&req, e))?;
        let mut refreshed = false;
        let mut attempt: u32 = 0;
        let mut transient_failures: u32 = 0;
        let mut timeouts: u32 = 0;
        loop {
            attempt += 1;
            match self
                .attempt(&req, &template, token.as_deref(), attempt)
                .await
            {
                Attempt::Done(mut r) => {
                    r.attempts = attempt;
                    return Ok(r);
                }
                Attempt::Failed(mut err) => {
                    err.attempts = attempt;
                    if err.kind == FetchErrorKind::Http(401) {
                        if refreshed {
                            err.kind = FetchErrorKind::ReauthorizationNeeded;
                            return Err(err);
                        }
                        refreshed = true;
                        let rejected = token.clone().unwrap_or_default();
                        match self.inner.auth.on_unauthorized(&rejected).await {
                            Ok(Some(t)) => {
                                token = Some(t);
                                continue;
                            }
                            Ok(None) => {
                                err.kind = FetchErrorKind::ReauthorizationNeeded;
                                return Err(err);
                            }
                            Err(e) => {
                                err.kind = FetchErrorKind::Auth(e);
                                return Err(err);
                            }
                        }
                    }
                    if !err.is_transient() {
                        return Err(err);
                    }
                    // A stalled server costs one more try, not one per retry: each timeout
                    // is a whole `timeout` of waiting.
                    if err.kind == FetchErrorKind::Timeout {
                        timeouts += 1;
                        if timeouts > 1 {
                            return Err(err);
                        }
                    }
                    transient_failures += 1;
                    if transient_failures >= policy.max_attempts {
                        return Err(err);
                    }
                    // A Retry-After already paused the host in the limiter; backoff on top
                    // spreads retries out.
                    tokio::time::sleep(policy.backoff(transient_failures)).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        req: &FhirRequest,
        template: &str,
        token: Option<&str>,
        attempt: u32,
    ) -> Attempt {
        let permit = self.inner.limiter.acquire().await;
        let started = Instant::now();
        let at = Utc::now();
        let mut entry = LedgerEntry {
            at,
            method: if req.body.is_some() { "POST" } else { "GET" }.into(),
            url_template: template.to_string(),
            url: req.url.to_string(),
            resource_type: req.resource_type.clone(),
            patient_id: req.patient_id.clone(),
            status: None,
            duration_ms: 0.0,
            bytes: 0,
            resources: 0,
            error_kind: None,
            page_complete: false,
            attempt,
        };
        let result = self.send(req, token).await;
        drop(permit);
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outcome = match result {
            Ok(mut resp) => {
                resp.duration = started.elapsed();
                entry.status = Some(resp.status);
                entry.bytes = resp.body.len() as u64;
                entry.resources = resp.resources;
                entry.page_complete = true;
                self.inner.limiter.observe(Signal::Success);
                Attempt::Done(resp)
            }
            Err((err, bytes)) => {
                entry.status = err.status;
                entry.bytes = bytes;
                entry.error_kind = Some(err.kind_code());
                self.inner.limiter.observe(if err.is_throttled() {
                    Signal::Throttled
                } else {
                    Signal::Neutral
                });
                Attempt::Failed(err)
            }
        };
        if let Some(o) = &self.observer {
            o.on_attempt(&entry);
        }
        outcome
    }

    /// One request on the wire, classified. Errors carry the bytes received.
    ///
    /// Redirects are followed here, not by the HTTP library, and only within the same origin
    /// as the FHIR base: a redirect elsewhere is refused (its body could replace a patient's
    /// data, and the token or configured headers would leave the server).
    async fn send(
        &self,
        req: &FhirRequest,
        token: Option<&str>,
    ) -> Result<FhirResponse, (FetchError, u64)> {
        const MAX_REDIRECTS: u32 = 5;
        let url_s = req.url.as_str();
        let mut url = req.url.clone();
        let mut body = req.body.clone();
        let mut hops = 0u32;
        let resp = loop {
            if !matches!(url.scheme(), "http" | "https") {
                return Err((
                    FetchError::new(
                        FetchErrorKind::InvalidUrl,
                        url_s,
                        "only http and https URLs are fetched",
                    ),
                    0,
                ));
            }
            let resp = match self.send_once(req, &url, body.clone(), token).await {
                Ok(r) => r,
                Err(e) => return Err((transport_error(url_s, &e), 0)),
            };
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                break resp;
            }
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(next) = location else {
                break resp;
            };
            if origin_of(&next) != origin_of(&url) || !self.may_receive_token(&next) {
                return Err((
                    FetchError::new(
                        FetchErrorKind::RedirectRefused,
                        url_s,
                        format!(
                            "HTTP {status} to another origin ({}); not followed",
                            origin_of(&next)
                        ),
                    ),
                    0,
                ));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err((
                    FetchError::new(
                        FetchErrorKind::RedirectRefused,
                        url_s,
                        format!("more than {MAX_REDIRECTS} redirects"),
                    ),
                    0,
                ));
            }
            if status == 303 {
                body = None;
            }
            url = next;
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let final_url = resp.url().clone();
        let content_length = resp.content_length();
        self.apply_throttle_headers(status, &headers);
        let cap = match req.expect {
            Expect::Json => self.inner.max_response_bytes,
            Expect::Any => self.inner.max_binary_bytes,
        };
        let (body, lane) = match crate::body::read_capped(resp, cap).await {
            Ok(b) => b,
            Err(BodyError::TooLarge {
                read,
                cap,
                declared,
            }) => {
                let how = if declared {
                    "its Content-Length is"
                } else {
                    "it grew"
                };
                return Err((
                    FetchError::new(
                        FetchErrorKind::TooLarge,
                        url_s,
                        format!("body aborted: {how} past the cap of {cap} bytes"),
                    ),
                    read,
                ));
            }
            Err(BodyError::Transport(e)) => {
                let kind = if e.is_timeout() {
                    FetchErrorKind::Timeout
                } else {
                    FetchErrorKind::Truncated
                };
                return Err((
                    FetchError::new(kind, url_s, format!("reading the body: {e}")),
                    0,
                ));
            }
        };
        let len = body.len() as u64;
        // A UTF-8 byte-order mark before JSON is transport noise some servers add; JSON
        // parsers refuse it, so it is dropped (a Binary's raw content is left as it is).
        let body = if req.expect == Expect::Json && body.starts_with(b"\xEF\xBB\xBF") {
            body.slice(3..)
        } else {
            body
        };
        if let Some(cl) = content_length.filter(|cl| len < *cl) {
            return Err((
                FetchError::new(
                    FetchErrorKind::Truncated,
                    url_s,
                    format!("body of {len} bytes, Content-Length {cl}"),
                ),
                len,
            ));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !(200..300).contains(&status) {
            let mut err = FetchError::new(FetchErrorKind::Http(status), url_s, "");
            if let Some(o) = OperationOutcome::parse(&body) {
                err.outcome = Some(o.summary().into_boxed_str());
                err.outcome_codes = o.issue.iter().filter_map(|i| i.code.clone()).collect();
            }
            err.retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err((err, len));
        }
        let mut resource_type = None;
        let mut resources = 0;
        if req.expect == Expect::Json {
            let looks_html = content_type.as_deref().is_some_and(|c| c.contains("html"))
                || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
            if looks_html {
                return Err((
                    FetchError::new(
                        FetchErrorKind::Html200,
                        url_s,
                        "an HTML page instead of FHIR JSON",
                    ),
                    len,
                ));
            }
            match serde_json::from_slice::<BodyShape>(&body) {
                Ok(shape) => {
                    resources = match (&shape.entry, shape.resource_type.as_deref()) {
                        (Some(e), _) => e.len() as u64,
                        (None, Some("Bundle")) => 0,
                        (None, Some(_)) => 1,
                        (None, None) => 0,
                    };
                    resource_type = shape.resource_type;
                }
                Err(_) => {
                    if let Err(e) = serde_json::from_slice::<IgnoredAny>(&body) {
                        let kind = if e.is_eof() {
                            FetchErrorKind::Truncated
                        } else {
                            FetchErrorKind::InvalidJson
                        };
                        return Err((
                            FetchError::new(kind, url_s, format!("body is not JSON: {e}")),
                            len,
                        ));
                    }
                }
            }
        }
        if req.expect == Expect::Any && content_type.as_deref().is_some_and(|c| c.contains("json"))
        {
            // Not required to be JSON, but say what it is when it is.
            if let Ok(shape) = serde_json::from_slice::<BodyShape>(&body) {
                resources = u64::from(shape.resource_type.is_some());
                resource_type = shape.resource_type;
            }
        }
        let server_date = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .map(DateTime::<Utc>::from);
        Ok(FhirResponse {
            status,
            url: final_url,
            body,
            content_type,
            server_date,
            resource_type,
            resources,
            attempts: 1,
            duration: Duration::ZERO,
            large_body_lane: lane,
            headers,
        })
    }

    /// One HTTP exchange. The token and the configured headers go only to the FHIR server's
    /// own origin.
    async fn send_once(
        &self,
        req: &FhirRequest,
        url: &Url,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let rb = match body {
            Some(body) => self
                .inner
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .body(body),
            None => self.inner.http.get(url.clone()),
        };
        let mut rb = rb
            .timeout(self.inner.timeout)
            .header(ACCEPT, req.accept.as_deref().unwrap_or(&self.inner.accept));
        // configured headers (API keys) belong to the FHIR server; the token also goes to the
        // organization's document hosts, and to nobody else
        if self.is_same_origin(url) {
            rb = rb.headers(self.inner.headers.clone());
        }
        if let Some(t) = token.filter(|_| self.may_receive_token(url)) {
            rb = rb.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        rb.send().await
    }

    /// The FHIR server's origin, or one of the organization's document hosts.
    pub fn may_receive_token(&self, url: &Url) -> bool {
        self.is_same_origin(url) || self.inner.document_origins.contains(&origin_of(url))
    }

    /// Same scheme, host and port as the FHIR base.
    pub fn is_same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.inner.base.scheme()
            && url.host_str() == self.inner.base.host_str()
            && url.port_or_known_default() == self.inner.base.port_or_known_default()
    }

    /// Pauses the host on `Retry-After` (429/503) or `X-RateLimit-Remaining: 0`.
    fn apply_throttle_headers(&self, status: u16, headers: &HeaderMap) {
        let now = SystemTime::now();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if matches!(status, 429 | 503) {
            if let Some(d) = header("retry-after").and_then(|v| parse_retry_after(v, now)) {
                self.inner.limiter.pause_for(d);
                return;
            }
        }
        if header("x-ratelimit-remaining").map(str::trim) == Some("0") {
            if let Some(d) =
                header("x-ratelimit-reset").and_then(|v| parse_rate_limit_reset(v, now))
            {
                self.inner.limiter.pause_for(d);
            }
        }
    }
}

/// "scheme://host:port", for messages.
fn origin_of(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

fn auth_error(req: &FhirRequest, e: AuthError) -> FetchError {
    let mut err = FetchError::new(
        FetchErrorKind::Auth(e.clone()),
        req.url.as_str(),
        e.to_string(),
    );
    err.attempts = 0;
    err
}

fn transport_error(url: &str, e: &reqwest::Error) -> FetchError {
    let kind = if e.is_timeout() {
        FetchErrorKind::Timeout
    } else if e.is_body() || e.is_decode() {
        FetchErrorKind::Truncated
    } else if e.is_builder() {
        FetchErrorKind::InvalidUrl
    } else {
        FetchErrorKind::Connect
    };
    // The source chain says what really happened (refused, reset, DNS...).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError::new(kind, url, msg)
}
