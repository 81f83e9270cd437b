//! The engine's use cases against the simulator over real HTTP, on a real SQLite file, with
//! HL7 messages over real MLLP: an event becomes a refreshed record exactly once, schedules
//! fire once across processes, and nothing is dropped without an outcome.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::time::Duration;

use aqueduct_core::{ConnectionRef, RefreshOutcome, RefreshRequest, Store};
use aqueduct_engine::{Engine, SyncRequest};
use aqueduct_sim::{SimConfig, SimServer, Simulator};
use aqueduct_sync::SyncMode;

struct Env {
    sim: SimServer,
    dir: tempfile::TempDir,
    config: Arc<aqueduct_config::Config>,
}

const ORG: &str = "acme";

async fn env(schedule: Option<&str>) -> Env {
    env_with(schedule, "").await
}

async fn env_with(schedule: Option<&str>, connection_extra: &str) -> Env {
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 3,
        seed: 11,
        resources_per_patient: 40,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config_with(&sim.base_url(), schedule, connection_extra));
    Env { sim, dir, config }
}

fn config_for(base: &str, schedule: Option<&str>) -> aqueduct_config::Config {
    config_with(base, schedule, "")
}

fn config_with(base: &str, schedule: Option<&str>, extra: &str) -> aqueduct_config::Config {
    let text = format!(
        r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[engine]
poll_interval = "50ms"
claim_ttl = "3s"
stale_run_after = "3s"
retry_backoff = "100ms"
busy_retry = "100ms"
[organizations.acme.connections.ehr]
base_url = "{}"
profile = "generic"
auth = {{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = {{ value = "sim-confidential-secret" }} }}
{}
{extra}
"#,
        base,
        schedule
            .map(|s| format!("schedule = \"{s}\""))
            .unwrap_or_default()
    );
    aqueduct_config::parse(&text, "test.toml").unwrap()
}

impl Env {
    fn store_path(&self) -> String {
        self.dir
            .path()
            .join("store.db")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// A store handle of its own, as another process would open the same file.
    async fn open(&self) -> Arc<dyn Store> {
        aqueduct_store::open(&self.store_path()).await.unwrap()
    }

    async fn engine(&self) -> Arc<Engine> {
        Arc::new(Engine::new(self.config.clone(), self.open().await).unwrap())
    }
}

fn conn() -> ConnectionRef {
    ConnectionRef::new(ORG, "ehr")
}

/// The MRN (system, value) of a patient the sync stored.
async fn an_mrn(store: &dyn Store) -> (String, String, String) {
    let patients = store
        .list_resources(&conn(), "Patient", None, 10, false)
        .await
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&patients[0].bytes).unwrap();
    let ident = &p["identifier"][0];
    (
        patients[0].logical_id.clone(),
        ident["system"].as_str().unwrap().to_string(),
        ident["value"].as_str().unwrap().to_string(),
    )
}

fn oru(control: &str, oid: &str, mrn: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|AQ|AQ|20261201101500||ORU^R01^ORU_R01|{control}|P|2.5.1\r\
PID|1||{mrn}^^^HOSP&{oid}&ISO^MR||Doe^Jane||19700215|F\r\
OBR|1|PL1|FL1|24331-1^Lipid panel^LN|||20261201090000\r\
OBX|1|NM|2093-3^Cholesterol^LN||182|mg/dL^mg/dL^UCUM|<200|N|||F|||20261201090000\r"
    )
}

fn adt(control: &str, oid: &str, mrn: &str) -> String {
    format!(
        "MSH|^~\\&|ADT|HOSP|AQ|AQ|20261201101600||ADT^A08^ADT_A01|{control}|P|2.5.1\r\
EVN|A08|20261201101600\r\
PID|1||{mrn}^^^HOSP&{oid}&ISO^MR||Doe^Jane||19700215|F\r\
PV1|1|I\r"
    )
}

async fn wait_for_requests(store: &dyn Store, n: usize) {
    for _ in 0..200 {
        if store.list_refresh_requests(ORG, 100).await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the listener did not queue {n} refresh requests");
}

#[tokio::test]
async fn an_hl7_message_refreshes_that_patients_record_once_and_unknown_patients_are_said_so() {
    let env = env(None).await;
    let engine = env.engine().await;
    let store = engine.store().clone();
    // the first sync indexes the connection's patients by their identifiers
    let first = engine
        .sync_connection(&SyncRequest {
            connection: "ehr".into(),
            patients: Vec::new(),
            mode: SyncMode::Full,
            patient_concurrency: None,
        })
        .await
        .unwrap();
    assert_eq!(first.report.outcome.as_str(), "complete");
    let (patient_id, system, mrn) = an_mrn(store.as_ref()).await;
    let oid = system.strip_prefix("urn:oid:").unwrap();

    // an ORU and an ADT for that patient, and an ORU for a patient no connection holds
    let listener = aqueduct_hl7::listen(
        "127.0.0.1:0",
        env.open().await,
        ORG.into(),
        aqueduct_hl7::ListenerOptions::default(),
    )
    .await
    .unwrap();
    let acks = aqueduct_hl7::send(
        listener.local_addr(),
        [
            oru("M1", oid, &mrn),
            adt("M2", oid, &mrn),
            oru("M3", oid, "NOBODY-9"),
        ],
    )
    .await;
    assert!(acks.iter().all(|a| a.accepted()), "{acks:?}");
    wait_for_requests(store.as_ref(), 3).await;
    listener.shutdown().await;

    let summary = engine.run_until(|_| true).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    let done = store.recent_refreshes(ORG, 10).await.unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.state == "done"), "{done:?}");
    let (unknown, ours): (Vec<_>, Vec<_>) = done.iter().partition(|r| {
        r.request
            .patient_key
            .as_deref()
            .is_some_and(|k| k.ends_with("NOBODY-9"))
    });
    assert_eq!(unknown[0].outcome, Some(RefreshOutcome::Unmatched));
    assert!(unknown[0].run_ids.is_empty(), "nothing synced for it");
    assert!(
        unknown[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("no connection")
    );
    // the two messages for our patient coalesced into one sync of that patient
    assert_eq!(ours.len(), 2);
    assert!(
        ours.iter()
            .all(|r| r.outcome == Some(RefreshOutcome::Complete))
    );
    assert_eq!(ours[0].run_ids, ours[1].run_ids);
    assert_eq!(ours[0].run_ids.len(), 1);
    assert!(ours.iter().any(|r| r.coalesced_into.is_some()));
    let runs = store.list_runs(&conn(), 10).await.unwrap();
    assert_eq!(runs.len(), 2, "the first sync and exactly one refresh");
    assert_eq!(runs[0].id, ours[0].run_ids[0]);
    assert_eq!(runs[0].kind, format!("full:patient:{patient_id}"));
    assert_eq!(runs[0].outcome.as_str(), "complete");
    // nothing left to do: another pass claims nothing and syncs nothing
    let again = engine.run_until(|_| true).await;
    assert!(again.handled.is_empty());
    assert_eq!(store.list_runs(&conn(), 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_schedule_fires_once_across_two_processes_and_not_again_until_due() {
    let env = env(Some("every 1h")).await;
    let (a, b) = (env.engine().await, env.engine().await);
    let (sa, sb) = tokio::join!(a.run_until(|_| true), b.run_until(|_| true));
    assert_eq!(
        sa.schedules_fired + sb.schedules_fired,
        1,
        "one slot, one firing"
    );
    let handled: Vec<_> = sa.handled.iter().chain(&sb.handled).collect();
    assert_eq!(handled.len(), 1, "{handled:?}");
    let result = handled[0].result.as_ref().unwrap();
    assert_eq!(
        result.outcome,
        RefreshOutcome::Complete,
        "{}",
        result.detail
    );
    let store = a.store();
    let runs = store.list_runs(&conn(), 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the connection was synced exactly once");
    assert_eq!(runs[0].outcome.as_str(), "complete");
    // the truth of the simulator is in the store
    let counts = store.count_by_type(&conn()).await.unwrap();
    let patients = counts
        .iter()
        .find(|c| c.resource_type == "Patient")
        .unwrap();
    assert_eq!(patients.live as usize, env.sim.patient_ids().len());
    // the next slot is an hour away: nothing fires, nothing runs
    let again = a.run_until(|_| true).await;
    assert_eq!(again.schedules_fired, 0);
    assert_eq!(store.list_runs(&conn(), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_that_keeps_failing_is_retried_then_closed_as_failed_with_its_reason() {
    // a server that is not there: every attempt fails
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/fhir", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(Arc::new(config_for(&base, None)), store.clone()).unwrap());
    store
        .enqueue_refresh(
            ORG,
            &RefreshRequest {
                patient_key: Some("Patient/p1".into()),
                connection: Some("ehr".into()),
                reason: "api".into(),
                source: "test".into(),
            },
        )
        .await
        .unwrap();
    let summary = engine.run_until(|s| !s.handled.is_empty()).await;
    let done = store.recent_refreshes(ORG, 10).await.unwrap();
    assert_eq!(
        done[0].outcome,
        Some(RefreshOutcome::Failed),
        "{done:?} {summary:?}"
    );
    assert_eq!(done[0].attempts, engine.settings().max_attempts - 1);
    let detail = done[0].detail.as_deref().unwrap();
    assert!(detail.contains("failed after 5 attempts"), "{detail}");
    assert!(detail.contains("Patient/p1"), "{detail}");
    assert_eq!(summary.requeued, 4, "retried before giving up");
    // every attempt is a failed run in the ledger, with its reason
    let runs = store.list_runs(&conn(), 10).await.unwrap();
    assert_eq!(runs.len(), 5);
    assert!(
        runs.iter()
            .all(|r| r.outcome.as_str() == "failed" && r.error.is_some())
    );
}

#[tokio::test]
async fn a_local_mrn_finds_its_patient_through_the_connections_assigning_authority() {
    // the simulator's MRN system, as the connection's config maps the feed's "HOSP" MRNs
    let env = env_with(
        None,
        "hl7_assigning_authorities = { HOSP = \"urn:oid:2.16.840.1.113883.3.9999.1\" }",
    )
    .await;
    let engine = env.engine().await;
    let store = engine.store().clone();
    engine
        .sync_connection(&SyncRequest {
            connection: "ehr".into(),
            patients: Vec::new(),
            mode: SyncMode::Full,
            patient_concurrency: None,
        })
        .await
        .unwrap();
    let (patient_id, system, mrn) = an_mrn(store.as_ref()).await;
    assert_eq!(system, "urn:oid:2.16.840.1.113883.3.9999.1");
    // PID-3 names the authority only ("HOSP", no OID), as most feeds do
    let listener = aqueduct_hl7::listen(
        "127.0.0.1:0",
        env.open().await,
        ORG.into(),
        aqueduct_hl7::ListenerOptions::default(),
    )
    .await
    .unwrap();
    let msg = adt("L1", "", &mrn).replace(
        &format!("{mrn}^^^HOSP&&ISO^MR"),
        &format!("{mrn}^^^HOSP^MR"),
    );
    assert!(msg.contains(&format!("{mrn}^^^HOSP^MR")), "{msg}");
    let acks = aqueduct_hl7::send(listener.local_addr(), [msg]).await;
    assert!(acks[0].accepted(), "{acks:?}");
    wait_for_requests(store.as_ref(), 1).await;
    listener.shutdown().await;
    let pending = store.list_refresh_requests(ORG, 10).await.unwrap();
    assert_eq!(
        pending[0].1.patient_key.as_deref(),
        Some(format!("urn:aqueduct:hl7v2:HOSP|{mrn}").as_str())
    );
    engine.run_until(|_| true).await;
    let done = store.recent_refreshes(ORG, 10).await.unwrap();
    assert_eq!(done[0].outcome, Some(RefreshOutcome::Complete), "{done:?}");
    let runs = store.list_runs(&conn(), 10).await.unwrap();
    assert_eq!(runs[0].kind, format!("full:patient:{patient_id}"));
}
