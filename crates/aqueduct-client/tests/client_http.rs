//! The client against the simulator over real HTTP: classification, retries, throttling,
//! auth refresh and the ledger hook.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_client::{
    AccessTokenSource, AuthError, FetchErrorKind, FhirClient, FhirRequest, LimiterRegistry,
    RequestObserver, RetryPolicy, StaticBearer, VendorProfile,
};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_store::LedgerEntry;
use async_trait::async_trait;
use url::Url;

async fn sim(faults: &[&str]) -> SimServer {
    Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 2,
        resources_per_patient: 40,
        faults: faults.iter().map(|f| f.parse::<Fault>().unwrap()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn token(base: &str) -> String {
    let http = reqwest::Client::new();
    let conf: serde_json::Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp: serde_json::Value = http
        .post(conf["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-confidential-app"),
            ("client_secret", "sim-confidential-secret"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap().to_string()
}

#[derive(Default)]
struct Recorder(Mutex<Vec<LedgerEntry>>);

impl RequestObserver for Recorder {
    fn on_attempt(&self, e: &LedgerEntry) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Recorder {
    fn entries(&self) -> Vec<LedgerEntry> {
        self.0.lock().unwrap().clone()
    }
}

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

async fn client(
    s: &SimServer,
    profile: &VendorProfile,
    attempts: u32,
) -> (FhirClient, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let c = FhirClient::builder(Url::parse(&s.base_url()).unwrap(), profile)
        .auth(Arc::new(StaticBearer::new(token(&s.base_url()).await)))
        .limiter_registry(Arc::new(LimiterRegistry::new()))
        .retry(retry(attempts))
        .observer(rec.clone())
        .build()
        .unwrap();
    (c, rec)
}

fn search(c: &FhirClient, s: &SimServer) -> FhirRequest {
    let pid = s.patient_ids()[0].clone();
    FhirRequest::new(c.url("Condition", &[("patient", &pid)]).unwrap())
        .patient(pid)
        .resource_type("Condition")
}

#[tokio::test]
async fn a_search_succeeds_and_is_recorded() {
    let s = sim(&[]).await;
    let (c, rec) = client(&s, &VendorProfile::default(), 3).await;
    let r = c.get(search(&c, &s)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.resource_type.as_deref(), Some("Bundle"));
    assert!(r.server_date.is_some());
    let e = rec.entries();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].status, Some(200));
    assert_eq!(e[0].resources, r.resources);
    assert!(
        e[0].url_template.contains("patient={patient}"),
        "{}",
        e[0].url_template
    );
    assert!(e[0].page_complete);
}

#[tokio::test]
async fn bodies_that_lie_are_classified() {
    for (fault, kind) in [
        ("html-error-200", FetchErrorKind::Html200),
        ("invalid-json", FetchErrorKind::InvalidJson),
        ("truncated-body", FetchErrorKind::Truncated),
    ] {
        let s = sim(&[fault]).await;
        let (c, rec) = client(&s, &VendorProfile::default(), 1).await;
        let e = c.get(search(&c, &s)).await.unwrap_err();
        assert_eq!(e.kind, kind, "{fault}: {e}");
        assert!(e.is_transient());
        let entries = rec.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].error_kind.as_deref(),
            Some(e.kind_code().as_str())
        );
        assert!(!entries[0].page_complete);
    }
}

#[tokio::test]
async fn every_attempt_reaches_the_observer() {
    let s = sim(&["server-error-500"]).await;
    let (c, rec) = client(&s, &VendorProfile::default(), 3).await;
    let e = c.get(search(&c, &s)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Http(500));
    assert_eq!(e.attempts, 3);
    assert!(
        e.outcome.is_some(),
        "the OperationOutcome is parsed into the error"
    );
    let entries = rec.entries();
    assert_eq!(
        entries.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.error_kind.as_deref() == Some("http-500"))
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let s = sim(&[]).await;
    let (c, rec) = client(&s, &VendorProfile::default(), 4).await;
    let e = c
        .get(FhirRequest::new(
            c.url("Condition/does-not-exist", &[]).unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Http(404));
    assert_eq!(rec.entries().len(), 1);
}

#[tokio::test]
async fn retry_after_pauses_the_host() {
    let s = sim(&["rate-limit-429"]).await;
    let (c, rec) = client(&s, &VendorProfile::default(), 1).await;
    let e = c.get(search(&c, &s)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Http(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert!(c.limiter().paused_for().is_some());
    assert_eq!(c.limiter().throttled(), 1);
    s.set_faults(vec![]);
    let start = Instant::now();
    c.get(search(&c, &s)).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(rec.entries().len(), 2);
}

#[tokio::test]
async fn x_ratelimit_headers_pause_the_host_and_429s_are_retried() {
    let s = sim(&["rate-limit-headers@0.5"]).await;
    let (c, rec) = client(&s, &VendorProfile::default(), 6).await;
    for _ in 0..4 {
        c.get(search(&c, &s)).await.unwrap();
    }
    let throttled = rec
        .entries()
        .iter()
        .filter(|e| e.status == Some(429))
        .count();
    assert!(throttled > 0);
    assert!(c.limiter().concurrency_limit() < VendorProfile::default().rate_limit.max_concurrency);
}

#[tokio::test]
async fn pacing_follows_the_profile_rate_across_clients_of_one_host() {
    let s = sim(&[]).await;
    let profile = VendorProfile::resolve_with_toml(
        "generic",
        "[rate_limit]\nrequests_per_sec = 20.0\nburst = 1\n",
    )
    .unwrap();
    let registry = Arc::new(LimiterRegistry::new());
    let t = token(&s.base_url()).await;
    let mk = || {
        FhirClient::builder(Url::parse(&s.base_url()).unwrap(), &profile)
            .auth(Arc::new(StaticBearer::new(t.clone())))
            .limiter_registry(registry.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (mk(), mk());
    assert!(Arc::ptr_eq(a.limiter(), b.limiter()));
    let start = Instant::now();
    let fa = async {
        for _ in 0..10 {
            a.get(search(&a, &s)).await.unwrap();
        }
    };
    let fb = async {
        for _ in 0..10 {
            b.get(search(&b, &s)).await.unwrap();
        }
    };
    tokio::join!(fa, fb);
    // 20 requests at 20/s with no burst: at least 19 intervals of 50 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

struct Refreshing {
    good: String,
    refreshed: Mutex<u32>,
}

#[async_trait]
impl AccessTokenSource for Refreshing {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        Ok(Some("expired-token".into()))
    }
    async fn on_unauthorized(&self, rejected: &str) -> Result<Option<String>, AuthError> {
        assert_eq!(rejected, "expired-token");
        *self.refreshed.lock().unwrap() += 1;
        Ok(Some(self.good.clone()))
    }
}

#[tokio::test]
async fn a_401_refreshes_once_then_gives_up_as_reauthorization_needed() {
    let s = sim(&[]).await;
    let auth = Arc::new(Refreshing {
        good: token(&s.base_url()).await,
        refreshed: Mutex::new(0),
    });
    let c = FhirClient::builder(
        Url::parse(&s.base_url()).unwrap(),
        &VendorProfile::default(),
    )
    .auth(auth.clone())
    .limiter_registry(Arc::new(LimiterRegistry::new()))
    .build()
    .unwrap();
    let r = c.get(search(&c, &s)).await.unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(*auth.refreshed.lock().unwrap(), 1);

    let stuck = FhirClient::builder(
        Url::parse(&s.base_url()).unwrap(),
        &VendorProfile::default(),
    )
    .auth(Arc::new(StaticBearer::new("nope")))
    .limiter_registry(Arc::new(LimiterRegistry::new()))
    .build()
    .unwrap();
    let e = stuck.get(search(&stuck, &s)).await.unwrap_err();
    assert!(e.needs_reauthorization(), "{e}");
}

#[tokio::test]
async fn a_slow_server_times_out_per_the_profile() {
    let s = sim(&["timeout:3"]).await;
    let profile =
        VendorProfile::resolve_with_toml("generic", "[http]\ntimeout_secs = 1\n").unwrap();
    let (c, rec) = client(&s, &profile, 1).await;
    let started = Instant::now();
    let e = c.get(search(&c, &s)).await.unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Timeout, "{e}");
    assert!(e.is_transient());
    assert!(started.elapsed() < Duration::from_millis(2500));
    let entries = rec.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, None);
    assert_eq!(entries[0].error_kind.as_deref(), Some("timeout"));
}

#[test]
fn ledger_templates_hide_patients_ids_and_cursors() {
    let u = |s: &str| Url::parse(s).unwrap();
    let r = FhirRequest::new(u(
        "http://h/fhir/Observation?patient=p1&category=laboratory&_count=100&_lastUpdated=gt2020",
    ))
    .patient("p1")
    .resource_type("Observation");
    assert_eq!(
        r.derived_template(),
        "/fhir/Observation?patient={patient}&category=laboratory&_count=100&_lastUpdated={}"
    );
    let r = FhirRequest::new(u("http://h/fhir/Patient/p1/$everything?_count=50")).patient("p1");
    assert_eq!(
        r.derived_template(),
        "/fhir/Patient/{patient}/$everything?_count=50"
    );
    let r = FhirRequest::new(u("http://h/fhir/Binary/b-17")).resource_type("Binary");
    assert_eq!(r.derived_template(), "/fhir/Binary/{id}");
}

/// A server that puts a UTF-8 byte-order mark before its JSON still gets its page read
/// (found by fuzzing the sync's page handling: the BOM made the whole page "not a Bundle").
#[tokio::test]
async fn a_byte_order_mark_before_the_json_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let body = b"\xEF\xBB\xBF{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"p1\"}}]}";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(body).await.unwrap();
    });
    let base = Url::parse(&format!("http://{addr}/fhir/")).unwrap();
    let profile = VendorProfile::resolve("generic", None).unwrap();
    let client = FhirClient::builder(base, &profile)
        .limiter_registry(Arc::new(LimiterRegistry::new()))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let url = client.url("Patient", &[]).unwrap();
    let resp = client.get(FhirRequest::new(url)).await.unwrap();
    assert_eq!(resp.resource_type.as_deref(), Some("Bundle"));
    assert_eq!(resp.resources, 1);
    assert!(resp.bundle().unwrap().is_bundle());
}
