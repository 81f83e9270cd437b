//! The client's layers as a caller composes them, against the simulator over real HTTP: what
//! a caller's own layer sees, what a stack without a layer does, and how attempts are
//! numbered on their way to the ledger.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aqueduct_client::layers::{Attempt, AttemptService, BoxFuture};
use aqueduct_client::{
    AccessTokenSource, AuthError, ClientSecretGrant, FetchError, FetchErrorKind, FhirClient,
    FhirClientBuilder, FhirRequest, FhirResponse, LimiterRegistry, RequestObserver, RetryPolicy,
    VendorProfile,
};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_store::LedgerEntry;
use async_trait::async_trait;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};
use url::Url;

async fn sim(faults: &[&str]) -> SimServer {
    Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 1,
        resources_per_patient: 20,
        faults: faults.iter().map(|f| f.parse::<Fault>().unwrap()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn grant(s: &SimServer) -> Arc<ClientSecretGrant> {
    let g = ClientSecretGrant::discover(
        &s.base_url(),
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await
    .unwrap();
    Arc::new(g)
}

/// A builder with its own limiter registry (tests must not share host pauses), fast retries
/// and `ledger` as observer.
fn builder(s: &SimServer, attempts: u32, ledger: &Arc<Ledger>) -> FhirClientBuilder {
    FhirClient::builder(
        Url::parse(&s.base_url()).unwrap(),
        &VendorProfile::default(),
    )
    .limiter_registry(Arc::new(LimiterRegistry::new()))
    .retry(RetryPolicy {
        max_attempts: attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    })
    .observer(ledger.clone())
}

fn search(c: &FhirClient, s: &SimServer) -> FhirRequest {
    let pid = s.patient_ids()[0].clone();
    FhirRequest::new(c.url("Condition", &[("patient", &pid)]).unwrap())
        .patient(pid)
        .resource_type("Condition")
}

#[derive(Default)]
struct Ledger(Mutex<Vec<LedgerEntry>>);

impl RequestObserver for Ledger {
    fn on_attempt(&self, e: &LedgerEntry) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Ledger {
    fn attempts(&self) -> Vec<(u32, Option<u16>)> {
        let entries = self.0.lock().unwrap();
        entries.iter().map(|e| (e.attempt, e.status)).collect()
    }
}

/// What [`Watch`] layers saw: (layer name, attempt number, status).
type Log = Arc<Mutex<Vec<(&'static str, u32, Option<u16>)>>>;

/// A caller's layer, written as any tower layer is: it notes each attempt it passes on, by
/// name, number and the status it came back with.
#[derive(Clone)]
struct Watch {
    name: &'static str,
    log: Log,
}

impl<S> Layer<S> for Watch {
    type Service = Watched<S>;

    fn layer(&self, inner: S) -> Watched<S> {
        Watched {
            inner,
            watch: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Watched<S> {
    inner: S,
    watch: Watch,
}

impl<S> Service<Attempt> for Watched<S>
where
    S: Service<Attempt, Response = FhirResponse, Error = FetchError>,
    S::Future: Send + 'static,
{
    type Response = FhirResponse;
    type Error = FetchError;
    type Future = BoxFuture<Result<FhirResponse, FetchError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let (name, number, log) = (self.watch.name, attempt.number, self.watch.log.clone());
        let answer = self.inner.call(attempt);
        Box::pin(async move {
            let result = answer.await;
            let status = match &result {
                Ok(r) => Some(r.status),
                Err(e) => e.status,
            };
            log.lock().unwrap().push((name, number, status));
            result
        })
    }
}

fn watch(name: &'static str, log: &Log) -> Watch {
    Watch {
        name,
        log: log.clone(),
    }
}

#[tokio::test]
async fn a_caller_layer_sees_every_attempt_including_retries() {
    let s = sim(&["server-error-500"]).await;
    let ledger = Arc::new(Ledger::default());
    let log = Log::default();
    let c = builder(&s, 3, &ledger)
        .auth(grant(&s).await)
        .layer(watch("outer", &log))
        .layer(watch("inner", &log))
        .build()
        .unwrap();
    let e = c.get(search(&c, &s)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Http(500));
    assert_eq!(e.attempts, 3);
    // Inner layers finish first; the first added is the outermost.
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen,
        [1, 2, 3]
            .into_iter()
            .flat_map(|n| [("inner", n, Some(500)), ("outer", n, Some(500))])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ledger.attempts(),
        vec![(1, Some(500)), (2, Some(500)), (3, Some(500))]
    );
}

#[tokio::test]
async fn a_stack_without_retry_fails_on_the_first_503() {
    let s = sim(&["unavailable-503"]).await;
    let ledger = Arc::new(Ledger::default());
    let no_retry = builder(&s, 5, &ledger)
        .auth(grant(&s).await)
        .stack(|l| {
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(l.auth)
                    .layer(l.limiter)
                    .layer(l.ledger)
                    .layer(l.classify)
                    .service(l.transport),
            )
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let e = no_retry.get(search(&no_retry, &s)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Http(503));
    assert_eq!(e.attempts, 1);
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no backoff, no wait"
    );
    assert_eq!(ledger.attempts(), vec![(1, Some(503))]);
    // The limiter is still in the stack: the host is paused as the server asked.
    assert!(no_retry.limiter().paused_for().is_some());

    // The same settings with the default stack try again after the pause.
    let ledger = Arc::new(Ledger::default());
    let default = builder(&s, 2, &ledger)
        .auth(grant(&s).await)
        .build()
        .unwrap();
    let started = Instant::now();
    let e = default.get(search(&default, &s)).await.unwrap_err();
    assert_eq!(e.attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "waited for Retry-After"
    );
    assert_eq!(ledger.attempts(), vec![(1, Some(503)), (2, Some(503))]);
}

#[tokio::test]
async fn a_layer_moved_outside_retry_sees_the_request_once() {
    let s = sim(&["server-error-500"]).await;
    let ledger = Arc::new(Ledger::default());
    let log = Log::default();
    let outside = watch("outside", &log);
    let c = builder(&s, 3, &ledger)
        .auth(grant(&s).await)
        .stack(move |l| {
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(l.auth)
                    .layer(outside)
                    .layer(l.retry)
                    .layer(l.limiter)
                    .layer(l.ledger)
                    .layer(l.classify)
                    .service(l.transport),
            )
        })
        .build()
        .unwrap();
    let e = c.get(search(&c, &s)).await.unwrap_err();
    assert_eq!(e.attempts, 3);
    // One call seen: the request going in as attempt 1, the last attempt's answer coming out.
    assert_eq!(*log.lock().unwrap(), vec![("outside", 1, Some(500))]);
    assert_eq!(ledger.attempts().len(), 3);
}

/// Hands out a token the server rejects, then a good one when told it was rejected.
struct Expired {
    good: Arc<ClientSecretGrant>,
}

#[async_trait]
impl AccessTokenSource for Expired {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        Ok(Some("expired-token".into()))
    }
    async fn on_unauthorized(&self, _rejected: &str) -> Result<Option<String>, AuthError> {
        self.good.token().await
    }
}

#[tokio::test]
async fn attempts_are_numbered_across_a_token_refresh() {
    let s = sim(&[]).await;
    let ledger = Arc::new(Ledger::default());
    let log = Log::default();
    let c = builder(&s, 3, &ledger)
        .auth(Arc::new(Expired {
            good: grant(&s).await,
        }))
        .layer(watch("caller", &log))
        .build()
        .unwrap();
    let r = c.get(search(&c, &s)).await.unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(ledger.attempts(), vec![(1, Some(401)), (2, Some(200))]);
    assert_eq!(
        *log.lock().unwrap(),
        vec![("caller", 1, Some(401)), ("caller", 2, Some(200))]
    );
}

/// The default stack is what `FhirClient::new` builds, and a caller can build it explicitly.
#[tokio::test]
async fn the_default_stack_composed_by_hand_behaves_as_the_default() {
    let s = sim(&["server-error-500@0.5"]).await;
    let ledger = Arc::new(Ledger::default());
    let c = builder(&s, 20, &ledger)
        .auth(grant(&s).await)
        .stack(|l| -> AttemptService { l.into_default_stack() })
        .build()
        .unwrap();
    for _ in 0..5 {
        c.get(search(&c, &s)).await.unwrap();
    }
    let numbers: Vec<u32> = ledger.attempts().iter().map(|(n, _)| *n).collect();
    // Each request counts from 1, and only the last attempt of each succeeded.
    assert_eq!(numbers.iter().filter(|n| **n == 1).count(), 5);
    let ok = ledger
        .attempts()
        .iter()
        .filter(|(_, s)| *s == Some(200))
        .count();
    assert_eq!(ok, 5);
}
