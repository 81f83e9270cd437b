#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use aqueduct_monitor::{
    AlertRules, AlertSink, AlertTransition, FindingsSink, LogSink, MonitorConfig, MonitorError,
    TransitionKind, WebhookSink, assess_run, evaluate_alerts, notify_pending, verify_signature,
};
use aqueduct_store::{AuthEvent, RunOutcome};
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

fn failing(l: &mut [aqueduct_store::LedgerEntry], share: usize) {
    for (i, e) in l.iter_mut().enumerate() {
        if i % share == 0 {
            e.status = Some(500);
            e.error_kind = Some("http-500".into());
        }
    }
}

#[tokio::test]
async fn an_alert_fires_once_stays_quiet_and_resolves_once() {
    let sim = Sim::new().await;
    let rec = Arc::new(Recorder::default());
    let sinks: Vec<Arc<dyn AlertSink>> = vec![rec.clone(), Arc::new(LogSink)];
    let rules = AlertRules::default();
    let store = sim.store.as_ref();
    // 1 in 4 requests fails: 25 % > 5 %
    sim.run_with(
        "full:patients",
        5,
        TYPES,
        RunOutcome::Partial,
        clean_summary(),
        |l| failing(l, 4),
    )
    .await;
    let now = Utc::now();
    let t = evaluate_alerts(store, "acme", &rules, now).await.unwrap();
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!(t[0].kind, TransitionKind::Fired);
    assert_eq!(t[0].alert.rule, "error-rate");
    assert!(
        t[0].alert.detail.contains("requests failed"),
        "{}",
        t[0].alert.detail
    );
    notify_pending(store, "acme", &sinks).await.unwrap();
    assert_eq!(rec.0.lock().unwrap().len(), 1);

    // still failing: no new transition, nothing sent again
    for k in 1..=3 {
        let t = evaluate_alerts(store, "acme", &rules, now + Duration::seconds(k))
            .await
            .unwrap();
        assert!(t.is_empty(), "{t:#?}");
        assert!(
            notify_pending(store, "acme", &sinks)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    let firing = store.list_alerts("acme", true).await.unwrap();
    assert_eq!(firing.len(), 1);
    assert!(
        (firing[0].first_seen - now).num_milliseconds().abs() < 1,
        "first_seen kept"
    );

    // the window moves past the failures: resolves once
    let later = now + Duration::minutes(20);
    let t = evaluate_alerts(store, "acme", &rules, later).await.unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].kind, TransitionKind::Resolved);
    assert_eq!(t[0].alert.resolved_at, Some(later));
    notify_pending(store, "acme", &sinks).await.unwrap();
    assert!(
        evaluate_alerts(store, "acme", &rules, later)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        notify_pending(store, "acme", &sinks)
            .await
            .unwrap()
            .is_empty()
    );
    let sent = rec.0.lock().unwrap().clone();
    assert_eq!(
        sent.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TransitionKind::Fired, TransitionKind::Resolved]
    );
    assert!(store.list_alerts("acme", true).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_healthy_connection_raises_nothing() {
    let sim = Sim::new().await;
    sim.clean_run(5, TYPES).await;
    let rules = AlertRules {
        default_schedule_minutes: Some(60),
        ..Default::default()
    };
    assert!(
        evaluate_alerts(sim.store.as_ref(), "acme", &rules, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn slow_requests_late_schedules_and_refresh_failures() {
    let sim = Sim::new().await;
    let store = sim.store.as_ref();
    sim.run_with(
        "full:patients",
        5,
        TYPES,
        RunOutcome::Complete,
        clean_summary(),
        |l| {
            for e in l.iter_mut() {
                e.duration_ms = 12_000.0;
            }
        },
    )
    .await;
    store
        .record_auth_event(
            &sim.conn,
            &AuthEvent {
                at: Utc::now(),
                event: "refresh".into(),
                outcome: "failure".into(),
                reason: Some("invalid_grant".into()),
            },
        )
        .await
        .unwrap();
    let mut rules = AlertRules::default();
    rules.schedules.insert("hospital".into(), 60);
    let now = Utc::now();
    let t = evaluate_alerts(store, "acme", &rules, now).await.unwrap();
    let mut rules_fired: Vec<&str> = t.iter().map(|t| t.alert.rule.as_str()).collect();
    rules_fired.sort();
    assert_eq!(
        rules_fired,
        ["p95-latency", "token-refresh-failure"],
        "{t:#?}"
    );
    let tok = t
        .iter()
        .find(|t| t.alert.rule == "token-refresh-failure")
        .unwrap();
    assert_eq!(tok.alert.severity, "critical");
    assert!(tok.alert.detail.contains("invalid_grant"));

    // 3 h 5 min later: window empty (latency resolves), schedule 60 min + 2 h late
    let later = now + Duration::minutes(185);
    let t = evaluate_alerts(store, "acme", &rules, later).await.unwrap();
    let mut got: Vec<(&str, TransitionKind)> =
        t.iter().map(|t| (t.alert.rule.as_str(), t.kind)).collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            ("p95-latency", TransitionKind::Resolved),
            ("refresh-late", TransitionKind::Fired)
        ],
        "{t:#?}"
    );

    // a successful refresh resolves the refresh alert
    store
        .record_auth_event(
            &sim.conn,
            &AuthEvent {
                at: later,
                event: "refresh".into(),
                outcome: "success".into(),
                reason: None,
            },
        )
        .await
        .unwrap();
    let t = evaluate_alerts(store, "acme", &rules, later + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].alert.rule.as_str(), t[0].kind),
        ("token-refresh-failure", TransitionKind::Resolved)
    );
}

#[tokio::test]
async fn type_dropped_to_zero_alert_follows_the_latest_run_of_its_kind() {
    let sim = Sim::new().await;
    sim.seed(5, TYPES, Duration::days(1)).await;
    let store = sim.store.as_ref();
    let cfg = MonitorConfig::default();
    let rules = AlertRules::default();
    for _ in 0..2 {
        let r = sim.clean_run(5, TYPES).await;
        assess_run(store, &sim.conn, r, &cfg).await.unwrap();
    }
    let r = sim.clean_run(5, &TYPES[..4]).await; // Encounter gone
    assert_eq!(
        assess_run(store, &sim.conn, r, &cfg).await.unwrap().len(),
        1
    );
    let t = evaluate_alerts(store, "acme", &rules, Utc::now())
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].alert.rule.as_str(), t[0].alert.subject.as_str()),
        ("type-dropped-to-zero", "Encounter")
    );
    let sink: Vec<Arc<dyn AlertSink>> = vec![Arc::new(FindingsSink {
        store: sim.store.clone(),
    })];
    notify_pending(store, "acme", &sink).await.unwrap();
    assert!(
        store
            .list_findings(&sim.conn, 10)
            .await
            .unwrap()
            .iter()
            .any(|f| f.kind == "alert-fired")
    );
    // Encounters come back
    let r = sim.clean_run(5, TYPES).await;
    assess_run(store, &sim.conn, r, &cfg).await.unwrap();
    let t = evaluate_alerts(store, "acme", &rules, Utc::now())
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].kind, TransitionKind::Resolved);
}

#[tokio::test]
async fn webhook_posts_signed_json_once_per_transition() {
    use axum::{
        Router,
        body::Bytes,
        http::{HeaderMap, StatusCode},
        routing::post,
    };
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let r2 = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let r2 = r2.clone();
            async move {
                let sig = headers
                    .get("x-aqueduct-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !verify_signature(b"s3cret", &body, sig) {
                    return StatusCode::UNAUTHORIZED;
                }
                r2.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/hook");

    let sim = Sim::new().await;
    let store = sim.store.as_ref();
    sim.run_with(
        "full:patients",
        5,
        TYPES,
        RunOutcome::Partial,
        clean_summary(),
        |l| failing(l, 3),
    )
    .await;
    let now = Utc::now();
    let rules = AlertRules::default();

    // a wrong secret is rejected: the alert stays pending and is retried
    let bad: Vec<Arc<dyn AlertSink>> = vec![Arc::new(
        WebhookSink::new(url.clone(), Some(b"wrong".to_vec())).unwrap(),
    )];
    evaluate_alerts(store, "acme", &rules, now).await.unwrap();
    let e = notify_pending(store, "acme", &bad).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert!(received.lock().unwrap().is_empty());

    let good: Vec<Arc<dyn AlertSink>> = vec![Arc::new(
        WebhookSink::new(url, Some(b"s3cret".to_vec())).unwrap(),
    )];
    assert_eq!(notify_pending(store, "acme", &good).await.unwrap().len(), 1);
    assert!(
        notify_pending(store, "acme", &good)
            .await
            .unwrap()
            .is_empty()
    );
    evaluate_alerts(store, "acme", &rules, now + Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(notify_pending(store, "acme", &good).await.unwrap().len(), 1);
    assert!(
        notify_pending(store, "acme", &good)
            .await
            .unwrap()
            .is_empty()
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["kind"], "fired");
    assert_eq!(got[0]["alert"]["rule"], "error-rate");
    assert_eq!(got[0]["organization"], "acme");
    assert_eq!(got[1]["kind"], "resolved");
}
