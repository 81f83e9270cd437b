//! The behaviour of [`FhirClient::get`](crate::FhirClient::get) as [tower] layers over one
//! transport service, so every caller gets all of it and a caller can add or reorder layers.
//!
//! The default stack, outermost first:
//!
//! ```text
//! auth        per request: token once, refresh once on 401       (auth.rs)
//!  retry      transient failures only, backoff + jitter           (retry.rs)
//!   caller    layers added with FhirClientBuilder::layer          (CallerLayers)
//!    limiter  host permit around the attempt, load feedback       (limiter.rs)
//!     ledger  one LedgerEntry per attempt to the observer         (ledger.rs)
//!      classify  status, HTML-under-200, JSON, truncation, OO     (classify.rs)
//!       transport  one HTTP exchange: same-origin redirects, capped body, BOM (transport.rs)
//! ```
//!
//! Everything travels as an [`Attempt`]: the request (shared, never copied), the attempt
//! number (1 for the first try; the retry and auth layers number the next ones), the token the
//! auth layer put on and the observer the ledger layer reports to. The transport answers an
//! [`Exchange`] (status, headers, body, unjudged); [`classify`] turns it into a
//! [`FhirResponse`] or a [`FetchError`], which is what every layer above it speaks.
//!
//! Why this order: auth is per request, not per attempt (see [`auth`]); a caller's layer sits
//! inside retry so it sees every attempt, and outside the limiter so it sees an attempt before
//! it waits for the host; the ledger sits inside the limiter so an entry's duration is the
//! server's, not the queue's, and outside classification so it records what the answer really
//! was.
//!
//! To change the order, [`FhirClientBuilder::stack`](crate::FhirClientBuilder::stack) hands
//! over the client's configured [`Layers`] to compose with [`tower::ServiceBuilder`].

pub mod auth;
pub mod classify;
pub mod ledger;
pub mod limiter;
pub mod retry;
pub mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};
use url::Url;

use crate::body::LargeBodyLane;
use crate::client::{FhirRequest, FhirResponse, RequestObserver};
use crate::error::FetchError;

pub use auth::AuthLayer;
pub use classify::ClassifyLayer;
pub use ledger::LedgerLayer;
pub use limiter::LimiterLayer;
pub use retry::{TransientRetry, retry_layer};
pub use transport::Transport;

/// The futures of this crate's services: boxed, because an `async` block cannot be named.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A whole stack (or any part of it above classification), type-erased: what a client holds
/// and what the caller's layers are applied to. Cloning it is cheap.
pub type AttemptService = BoxCloneSyncService<Attempt, FhirResponse, FetchError>;

/// One try at a request, as it travels down the layers.
#[derive(Clone)]
pub struct Attempt {
    /// What to fetch; shared by every attempt of the request.
    pub request: Arc<FhirRequest>,
    /// 1 for the first try.
    pub number: u32,
    /// The bearer token, once the auth layer has put it on.
    pub token: Option<Arc<str>>,
    /// Where the ledger layer reports this attempt; none: no entry is made.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

impl Attempt {
    /// The first attempt of `request`, with no token yet.
    pub fn first(request: FhirRequest, observer: Option<Arc<dyn RequestObserver>>) -> Self {
        Self {
            request: Arc::new(request),
            number: 1,
            token: None,
            observer,
        }
    }
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Attempt")
            .field("url", &self.request.url.as_str())
            .field("number", &self.number)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// What the transport received, before anyone judged it.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    /// The URL answered, after redirects.
    pub url: Url,
    pub headers: HeaderMap,
    /// The body, without a byte-order mark before JSON.
    pub body: Bytes,
    /// Body bytes read off the wire (the mark included).
    pub received: u64,
    /// The length the server announced.
    pub content_length: Option<u64>,
    /// Held while a large body is in memory (see [`crate::body`]).
    pub large_body_lane: Option<LargeBodyLane>,
}

/// A layer a caller can add to a client: any tower [`Layer`] over the stack below it whose
/// service speaks [`Attempt`] → [`FhirResponse`]. Implemented for every such layer; the
/// builder type-erases it, so a client's type does not depend on its callers' layers.
pub trait CallerLayer: Send + Sync + 'static {
    /// Wraps `inner` (what lies below the caller's layers) in this layer.
    fn wrap(&self, inner: AttemptService) -> AttemptService;
}

impl<L> CallerLayer for L
where
    L: Layer<AttemptService> + Send + Sync + 'static,
    L::Service: Service<Attempt, Response = FhirResponse, Error = FetchError>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Attempt>>::Future: Send + 'static,
{
    fn wrap(&self, inner: AttemptService) -> AttemptService {
        BoxCloneSyncService::new(self.layer(inner))
    }
}

/// The layers a caller added with [`FhirClientBuilder::layer`](crate::FhirClientBuilder::layer),
/// applied as one layer: the first added is the outermost, as with [`ServiceBuilder`].
#[derive(Clone, Default)]
pub struct CallerLayers {
    layers: Vec<Arc<dyn CallerLayer>>,
}

impl std::fmt::Debug for CallerLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerLayers")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl CallerLayers {
    /// Adds `layer` inside the ones already added.
    pub fn push(&mut self, layer: impl CallerLayer) {
        self.layers.push(Arc::new(layer));
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl<S> Layer<S> for CallerLayers
where
    S: Service<Attempt, Response = FhirResponse, Error = FetchError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = AttemptService;

    fn layer(&self, inner: S) -> AttemptService {
        let mut service = BoxCloneSyncService::new(inner);
        for layer in self.layers.iter().rev() {
            service = layer.wrap(service);
        }
        service
    }
}

/// A client's layers, configured from its profile and builder, not yet composed.
/// [`Layers::into_default_stack`] is the order every client gets unless its builder was given
/// [`stack`](crate::FhirClientBuilder::stack).
#[derive(Debug, Clone)]
pub struct Layers {
    pub auth: AuthLayer,
    pub retry: tower::retry::RetryLayer<TransientRetry>,
    pub caller: CallerLayers,
    pub limiter: LimiterLayer,
    pub ledger: LedgerLayer,
    pub classify: ClassifyLayer,
    pub transport: Transport,
}

impl Layers {
    /// auth ∘ retry ∘ caller ∘ limiter ∘ ledger ∘ classify ∘ transport.
    pub fn into_default_stack(self) -> AttemptService {
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(self.auth)
                .layer(self.retry)
                .layer(self.caller)
                .layer(self.limiter)
                .layer(self.ledger)
                .layer(self.classify)
                .service(self.transport),
        )
    }
}
