#![allow(clippy::unwrap_used)]

mod common;

use aqueduct_monitor::{MonitorConfig, assess_run};
use aqueduct_store::{Finding, RunOutcome};
use chrono::Duration;
use common::*;
use serde_json::json;

const PATIENTS: usize = 20;

fn kinds(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.kind.as_str()).collect()
}

async fn history(sim: &Sim, runs: usize) {
    let cfg = MonitorConfig::default();
    for _ in 0..runs {
        let run = sim.clean_run(PATIENTS, TYPES).await;
        let f = assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
            .await
            .unwrap();
        assert!(f.is_empty(), "clean run produced findings: {f:#?}");
    }
}

#[tokio::test]
async fn ten_clean_runs_produce_no_findings() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    let cfg = MonitorConfig::default();
    for i in 0..10 {
        // realistic drift: the record grows a little between runs
        let obs = 40 + (i % 3) as u64;
        let types: Vec<(&str, u64)> = TYPES
            .iter()
            .map(|(t, n)| (*t, if *t == "Observation" { obs } else { *n }))
            .collect();
        let run = sim.clean_run(PATIENTS, &types).await;
        let f = assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
            .await
            .unwrap();
        assert!(f.is_empty(), "run {i} produced findings: {f:#?}");
    }
    assert!(
        sim.store
            .list_findings(&sim.conn, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn type_dropping_to_zero_is_critical_and_names_the_previous_count() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 3).await;
    let without: Vec<(&str, u64)> = TYPES
        .iter()
        .copied()
        .filter(|(t, _)| *t != "Condition")
        .collect();
    let run = sim.clean_run(PATIENTS, &without).await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["type-dropped-to-zero"], "{f:#?}");
    assert_eq!(f[0].severity, "critical");
    assert_eq!(f[0].resource_type.as_deref(), Some("Condition"));
    assert!(
        f[0].detail.contains("Condition returned 0"),
        "{}",
        f[0].detail
    );
    assert!(f[0].detail.contains("returned 120"), "{}", f[0].detail); // 20 patients × 6
    // recorded in the store too
    let stored = sim.store.list_findings(&sim.conn, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].run_id, Some(run));
    // assessing again records nothing twice
    let again = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        sim.store.list_findings(&sim.conn, 10).await.unwrap().len(),
        1
    );
    // still zero next time: still critical, pointing at the last run that had data
    let run2 = sim.clean_run(PATIENTS, &without).await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run2,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["type-dropped-to-zero"], "{f:#?}");
    assert!(
        f[0].detail.contains(&format!(
            "run {} of this kind (2 runs ago) returned 120",
            run - 1
        )),
        "{}",
        f[0].detail
    );
}

#[tokio::test]
async fn zero_with_sync_reason_explains_it() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 2).await;
    let summary = json!({"missing": [{"patient_id": "pat-0000", "resource_type": "MedicationRequest",
        "reason": "forbidden", "detail": "403 on MedicationRequest"}], "skipped_types": [], "notes": []});
    let run = sim
        .run_with(
            "full:patients",
            PATIENTS,
            &TYPES[..3],
            RunOutcome::Partial,
            summary,
            |_| {},
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    let zero: Vec<&Finding> = f
        .iter()
        .filter(|f| f.kind == "type-dropped-to-zero")
        .collect();
    assert_eq!(zero.len(), 2, "{f:#?}"); // MedicationRequest and Encounter
    let med = zero
        .iter()
        .find(|f| f.resource_type.as_deref() == Some("MedicationRequest"))
        .unwrap();
    assert!(med.detail.contains("forbidden"), "{}", med.detail);
    let partial: Vec<&Finding> = f.iter().filter(|f| f.kind == "partial-run").collect();
    assert_eq!(partial.len(), 1);
    assert!(partial[0].detail.contains("1 patient(s)") && partial[0].detail.contains("forbidden"));
}

#[tokio::test]
async fn a_large_drop_warns_and_a_small_one_does_not() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 3).await;
    let cfg = MonitorConfig::default();
    let small: Vec<(&str, u64)> = TYPES
        .iter()
        .map(|(t, n)| (*t, if *t == "Observation" { 30 } else { *n }))
        .collect();
    let run = sim.clean_run(PATIENTS, &small).await;
    let f = assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
        .await
        .unwrap();
    assert!(f.is_empty(), "25 % drop is tolerated: {f:#?}");

    let big: Vec<(&str, u64)> = TYPES
        .iter()
        .map(|(t, n)| (*t, if *t == "Observation" { 12 } else { *n }))
        .collect();
    let run = sim.clean_run(PATIENTS, &big).await;
    let f = assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
        .await
        .unwrap();
    let drops: Vec<&Finding> = f.iter().filter(|f| f.kind == "type-count-drop").collect();
    assert_eq!(drops.len(), 1, "{f:#?}");
    assert_eq!(drops[0].severity, "warning");
    assert_eq!(drops[0].resource_type.as_deref(), Some("Observation"));
    assert!(
        drops[0].detail.contains("returned 240") && drops[0].detail.contains("baseline of 800"),
        "{}",
        drops[0].detail
    );
    // every patient fell too
    assert!(f.iter().any(|f| f.kind == "patient-count-drop"));
}

#[tokio::test]
async fn a_patient_whose_total_falls_is_named() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 2).await;
    let run = sim
        .run_with(
            "full:patients",
            PATIENTS,
            TYPES,
            RunOutcome::Complete,
            clean_summary(),
            |l| {
                for e in l.iter_mut() {
                    if e.patient_id.as_deref() == Some("pat-0007")
                        && e.resource_type.as_deref() == Some("Observation")
                    {
                        e.resources = 10;
                    }
                }
            },
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["patient-count-drop"], "{f:#?}");
    assert!(
        f[0].detail.contains("pat-0007") && f[0].detail.contains("down from 60"),
        "{}",
        f[0].detail
    );
}

#[tokio::test]
async fn in_band_failures_come_with_evidence() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 2).await;
    let run = sim
        .run_with(
            "full:patients",
            PATIENTS,
            TYPES,
            RunOutcome::Complete,
            clean_summary(),
            |l| {
                // an HTML login page with 200, never recovered
                let i = l
                    .iter()
                    .position(|e| e.resource_type.as_deref() == Some("Encounter"))
                    .unwrap();
                l[i].error_kind = Some("html-200".into());
                l[i].page_complete = false;
                l[i].resources = 0;
                // a truncated page that succeeded on retry
                let j = l
                    .iter()
                    .position(|e| e.resource_type.as_deref() == Some("Condition"))
                    .unwrap();
                let mut bad = l[j].clone();
                bad.error_kind = Some("truncated".into());
                bad.page_complete = false;
                bad.resources = 0;
                l[j].attempt = 2;
                l.insert(j, bad);
            },
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    let html = f.iter().find(|f| f.detail.contains("html-200")).unwrap();
    assert_eq!(html.kind, "in-band-error");
    assert_eq!(html.severity, "warning");
    assert_eq!(html.resource_type.as_deref(), Some("Encounter"));
    assert!(
        html.detail.contains("Encounter?patient=pat-0000"),
        "{}",
        html.detail
    );
    assert!(html.detail.contains("HTML"));
    let trunc = f.iter().find(|f| f.detail.contains("truncated")).unwrap();
    assert_eq!(trunc.severity, "info");
    assert!(trunc.detail.contains("succeeded on retry"));
}

#[tokio::test]
async fn operation_outcome_in_bundle_notes_are_reported() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    let summary = json!({"missing": [], "notes": [
        "Observation of patient pat-0001: server outcome in results: warning: too many results, truncated"]});
    let run = sim
        .run_with(
            "full:patients",
            PATIENTS,
            TYPES,
            RunOutcome::Complete,
            summary,
            |_| {},
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["in-band-error"], "{f:#?}");
    assert!(f[0].detail.contains("OperationOutcome") && f[0].detail.contains("too many results"));
}

#[tokio::test]
async fn stale_data_is_flagged_when_fetches_happen() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(90)).await;
    let run = sim.clean_run(PATIENTS, TYPES).await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig {
            max_data_age_days: 30,
            ..MonitorConfig::default()
        },
    )
    .await
    .unwrap();
    let stale: Vec<&Finding> = f.iter().filter(|f| f.kind == "stale-data").collect();
    // Observation, MedicationRequest, Encounter are checked; Condition and Patient are not
    assert_eq!(stale.len(), 3, "{f:#?}");
    assert!(stale.iter().all(|f| f.detail.contains("90 days ago")));
}

#[tokio::test]
async fn incremental_runs_whose_newest_data_does_not_advance_are_stale() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    let cfg = MonitorConfig::default();
    let obs_only = [("Observation", 2u64)];
    // incremental runs that bring newer data: fine
    for k in 0..4 {
        let pid = patient_id(k);
        let id = format!("{pid}-Observation-new-{k}");
        let body = resource(
            "Observation",
            &id,
            &pid,
            chrono::Utc::now() + Duration::seconds(k as i64),
        );
        sim.write(vec![raw("Observation", &id, &pid, body)]).await;
        let run = sim
            .run_with(
                "incremental:patients",
                PATIENTS,
                &obs_only,
                RunOutcome::Complete,
                clean_summary(),
                |_| {},
            )
            .await;
        let f = assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
            .await
            .unwrap();
        assert!(f.is_empty(), "{f:#?}");
    }
    // full runs re-fetch the same data: not counted
    for _ in 0..4 {
        let run = sim.clean_run(PATIENTS, TYPES).await;
        assert!(
            assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
                .await
                .unwrap()
                .is_empty()
        );
    }
    // incremental runs that fetch "changes" which are never newer: stale after 3
    let mut last = Vec::new();
    for _ in 0..4 {
        let run = sim
            .run_with(
                "incremental:patients",
                PATIENTS,
                &obs_only,
                RunOutcome::Complete,
                clean_summary(),
                |_| {},
            )
            .await;
        last.push(
            assess_run(sim.store.as_ref(), &sim.conn, run, &cfg)
                .await
                .unwrap(),
        );
    }
    assert!(last[0].is_empty() && last[1].is_empty(), "{last:#?}");
    assert_eq!(kinds(&last[2]), ["stale-data"], "{last:#?}");
    assert_eq!(last[2][0].resource_type.as_deref(), Some("Observation"));
    assert!(
        last[2][0]
            .detail
            .contains("has not advanced over 3 incremental runs"),
        "{}",
        last[2][0].detail
    );
}

#[tokio::test]
async fn must_support_gaps_are_flagged() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 1).await;
    // half the Observations of the first patients lose their value
    let mut broken = Vec::new();
    for p in 0..3 {
        let pid = patient_id(p);
        for i in 0..40 {
            let id = format!("{pid}-Observation-{i}");
            let mut body = resource("Observation", &id, &pid, chrono::Utc::now());
            body.as_object_mut().unwrap().remove("valueQuantity");
            broken.push(raw("Observation", &id, &pid, body));
        }
    }
    sim.write(broken).await;
    let run = sim.clean_run(PATIENTS, TYPES).await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["must-support-missing"], "{f:#?}");
    assert!(
        f[0].detail.contains("value[x]") && f[0].detail.contains("of 200 sampled"),
        "{}",
        f[0].detail
    );
}

#[tokio::test]
async fn failed_and_incremental_runs() {
    let sim = Sim::new().await;
    sim.seed(PATIENTS, TYPES, Duration::days(2)).await;
    history(&sim, 2).await;
    let run = sim
        .run_with(
            "full:patients",
            1,
            &TYPES[..1],
            RunOutcome::Failed,
            json!({}),
            |_| {},
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&f), ["run-failed"], "{f:#?}");
    assert_eq!(f[0].severity, "critical");
    // incremental runs fetch only changes: zero is normal
    for _ in 0..3 {
        let run = sim
            .run_with(
                "incremental:patients",
                PATIENTS,
                TYPES,
                RunOutcome::Complete,
                clean_summary(),
                |_| {},
            )
            .await;
        assert!(
            assess_run(
                sim.store.as_ref(),
                &sim.conn,
                run,
                &MonitorConfig::default()
            )
            .await
            .unwrap()
            .is_empty()
        );
    }
    let run = sim
        .run_with(
            "incremental:patients",
            PATIENTS,
            &[],
            RunOutcome::Complete,
            clean_summary(),
            |_| {},
        )
        .await;
    let f = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        run,
        &MonitorConfig::default(),
    )
    .await
    .unwrap();
    assert!(f.is_empty(), "{f:#?}");
}

#[tokio::test]
async fn unknown_run_is_an_error() {
    let sim = Sim::new().await;
    let e = assess_run(
        sim.store.as_ref(),
        &sim.conn,
        4242,
        &MonitorConfig::default(),
    )
    .await;
    assert!(e.unwrap_err().to_string().contains("4242"));
}
