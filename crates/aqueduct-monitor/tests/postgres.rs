#![allow(clippy::unwrap_used)]
//! The main behaviours against the PostgreSQL backend (the local server, which CI starts).

mod common;

use std::sync::{Arc, Mutex};

use aqueduct_monitor::{
    AlertRules, AlertSink, AlertTransition, MonitorConfig, MonitorError, TransitionKind,
    assess_run, evaluate_alerts, notify_pending, render_metrics,
};
use async_trait::async_trait;
use chrono::{Duration, Utc};
use common::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<AlertTransition>>);

#[async_trait]
impl AlertSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn send(&self, t: &AlertTransition) -> Result<(), MonitorError> {
        self.0.lock().unwrap().push(t.clone());
        Ok(())
    }
}

#[tokio::test]
async fn findings_alerts_and_metrics_on_postgres() {
    // CI starts PostgreSQL (.ci/run): these tests must run there, never skip.
    let sim = Sim::postgres().await.expect(
        "the PostgreSQL tests need the local server at AQUEDUCT_TEST_POSTGRES or 127.0.0.1:5432",
    );
    let store = sim.store.as_ref();
    sim.seed(10, TYPES, Duration::days(1)).await;
    let cfg = MonitorConfig::default();
    for _ in 0..5 {
        let r = sim.clean_run(10, TYPES).await;
        let f = assess_run(store, &sim.conn, r, &cfg).await.unwrap();
        assert!(f.is_empty(), "{f:#?}");
    }
    let r = sim.clean_run(10, &TYPES[..4]).await;
    let f = assess_run(store, &sim.conn, r, &cfg).await.unwrap();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].kind, "type-dropped-to-zero");
    assert!(f[0].detail.contains("returned 80"), "{}", f[0].detail);

    let rec = Arc::new(Recorder::default());
    let sinks: Vec<Arc<dyn AlertSink>> = vec![rec.clone()];
    let rules = AlertRules::default();
    let now = Utc::now();
    assert_eq!(
        evaluate_alerts(store, "acme", &rules, now)
            .await
            .unwrap()
            .len(),
        1
    );
    notify_pending(store, "acme", &sinks).await.unwrap();
    assert!(
        evaluate_alerts(store, "acme", &rules, now)
            .await
            .unwrap()
            .is_empty()
    );
    notify_pending(store, "acme", &sinks).await.unwrap();
    let r = sim.clean_run(10, TYPES).await;
    assess_run(store, &sim.conn, r, &cfg).await.unwrap();
    let t = evaluate_alerts(store, "acme", &rules, Utc::now())
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].kind, TransitionKind::Resolved);
    notify_pending(store, "acme", &sinks).await.unwrap();
    assert_eq!(rec.0.lock().unwrap().len(), 2);

    let text = render_metrics(store, "acme", std::time::Duration::from_secs(900))
        .await
        .unwrap();
    assert!(text.contains("aqueduct_requests{organization=\"acme\",connection=\"hospital\",host=\"fhir.hospital.example\",resource_type=\"Observation\",status=\"200\"}"), "{text}");
}
