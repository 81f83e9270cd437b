#![allow(clippy::unwrap_used)]

// the monitor crate's own fixtures (ledger runs and findings), shared rather than copied
#[path = "../../aqueduct-monitor/tests/common/mod.rs"]
mod monitor_common;

use std::sync::Arc;

use aqueduct_cli::monitor_cli::{
    AlertsArgs, FindingsArgs, MetricsArgs, run_alerts, run_findings, run_metrics,
};
use aqueduct_monitor::{AlertRules, AlertSink, LogSink, MonitorConfig, assess_run};
use aqueduct_store::RunOutcome;
use clap::Parser;
use monitor_common::*;

#[derive(Parser)]
enum Cmd {
    Findings(FindingsArgs),
    Metrics(MetricsArgs),
    Alerts(AlertsArgs),
}

#[test]
fn arguments_parse() {
    match Cmd::try_parse_from(["aq", "metrics", "--window", "1h"]).unwrap() {
        Cmd::Metrics(m) => assert_eq!(m.window.as_secs(), 3600),
        _ => unreachable!(),
    }
    match Cmd::try_parse_from(["aq", "metrics"]).unwrap() {
        Cmd::Metrics(m) => assert_eq!(m.window.as_secs(), 900),
        _ => unreachable!(),
    }
    assert!(Cmd::try_parse_from(["aq", "metrics", "--window", "soon"]).is_err());
    match Cmd::try_parse_from(["aq", "findings", "--connection", "c", "--json"]).unwrap() {
        Cmd::Findings(f) => assert!(f.json && f.connection.as_deref() == Some("c")),
        _ => unreachable!(),
    }
    assert!(
        matches!(Cmd::try_parse_from(["aq", "alerts", "--json"]).unwrap(), Cmd::Alerts(a) if a.json)
    );
}

#[tokio::test]
async fn commands_print_findings_metrics_and_alerts() {
    let sim = Sim::new().await;
    sim.seed(3, TYPES, chrono::Duration::days(1)).await;
    let cfg = MonitorConfig::default();
    for _ in 0..2 {
        let r = sim.clean_run(3, TYPES).await;
        assess_run(sim.store.as_ref(), &sim.conn, r, &cfg)
            .await
            .unwrap();
    }
    let r = sim
        .run_with(
            "full:patients",
            3,
            &TYPES[..4],
            RunOutcome::Complete,
            clean_summary(),
            |_| {},
        )
        .await;
    assess_run(sim.store.as_ref(), &sim.conn, r, &cfg)
        .await
        .unwrap();

    let mut out = Vec::new();
    let args = FindingsArgs {
        connection: None,
        json: false,
        limit: 50,
        open: false,
        ack: None,
        note: None,
    };
    run_findings(sim.store.clone(), "acme", &args, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("critical") && text.contains("type-dropped-to-zero [Encounter]"),
        "{text}"
    );

    let mut out = Vec::new();
    let args = FindingsArgs {
        connection: Some("hospital".into()),
        json: true,
        limit: 50,
        open: false,
        ack: None,
        note: None,
    };
    run_findings(sim.store.clone(), "acme", &args, &mut out)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["connection"], "hospital");
    assert_eq!(v[0]["kind"], "type-dropped-to-zero");

    // acknowledge it: it stays listed with who and why, and leaves the open ones
    let id = v[0]["id"].as_i64().unwrap();
    let ack = |ack: Option<i64>, open: bool| FindingsArgs {
        connection: Some("hospital".into()),
        json: true,
        limit: 50,
        open,
        ack,
        note: ack.map(|_| "Encounters are paused at this site".to_string()),
    };
    let mut out = Vec::new();
    run_findings(sim.store.clone(), "acme", &ack(Some(id), false), &mut out)
        .await
        .unwrap();
    let acked: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        acked[0]["acknowledged"]["by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );
    assert_eq!(
        acked[0]["acknowledged"]["note"],
        "Encounters are paused at this site"
    );
    let mut out = Vec::new();
    run_findings(sim.store.clone(), "acme", &ack(None, true), &mut out)
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(open.as_array().unwrap().iter().all(|f| f["id"] != id));
    let err = run_findings(
        sim.store.clone(),
        "acme",
        &ack(Some(id + 10_000), false),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not in the store"), "{err}");

    let mut out = Vec::new();
    run_metrics(
        sim.store.clone(),
        "acme",
        &MetricsArgs {
            window: std::time::Duration::from_secs(900),
        },
        &mut out,
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("# TYPE aqueduct_requests gauge")
    );

    let sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(LogSink)];
    let mut out = Vec::new();
    run_alerts(
        sim.store.clone(),
        "acme",
        &AlertRules::default(),
        &sinks,
        &AlertsArgs {
            json: false,
            all: false,
        },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("firing") && text.contains("type-dropped-to-zero [Encounter]"),
        "{text}"
    );
    let mut out = Vec::new();
    run_alerts(
        sim.store.clone(),
        "acme",
        &AlertRules::default(),
        &sinks,
        &AlertsArgs {
            json: true,
            all: true,
        },
        &mut out,
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v[0]["notified_state"], "firing");

    let text = aqueduct_monitor::render_metrics(
        sim.store.as_ref(),
        "acme",
        std::time::Duration::from_secs(900),
    )
    .await
    .unwrap();
    assert!(
        text.contains("aqueduct_alerts_firing{organization=\"acme\",connection=\"hospital\",rule=\"type-dropped-to-zero\",severity=\"critical\"} 1"),
        "{text}"
    );
}
