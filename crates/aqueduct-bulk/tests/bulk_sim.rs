//! The Bulk client against the simulator's Bulk server over real HTTP on loopback, into a
//! real SQLite file: the contract is that every resource of the simulator's truth is stored
//! exactly once, byte for byte, or the run is partial and says what is missing — one test per
//! fault.
#![allow(clippy::unwrap_used)]
mod common;

use aqueduct_bulk::{BulkOptions, Level};
use aqueduct_store::RunOutcome;
use common::*;

/// The truth is in the store byte for byte, once; besides it only `flagged` lines that were
/// not resources, stored with their parse problem.
async fn assert_truth_stored_once(e: &Env) {
    assert_truth_and_flagged(e, 0).await
}

async fn assert_truth_and_flagged(e: &Env, flagged: usize) {
    let truth = e.truth();
    let mut stored = e.stored().await;
    let extras: Vec<(String, String)> = stored
        .keys()
        .filter(|k| !truth.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(extras.len(), flagged, "stored beyond the truth: {extras:?}");
    for (t, id) in &extras {
        let r = e.store.get_resource(&e.conn, t, id).await.unwrap().unwrap();
        assert_ne!(r.parse_status, aqueduct_store::ParseStatus::Ok, "{t}/{id}");
        stored.remove(&(t.clone(), id.clone()));
    }
    assert!(!truth.is_empty());
    let missing: Vec<_> = truth
        .keys()
        .filter(|k| !stored.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing from the store: {missing:?}");
    let differ: Vec<_> = truth
        .iter()
        .filter(|(k, h)| stored.get(*k) != Some(*h))
        .map(|(k, _)| k)
        .take(5)
        .collect();
    assert!(differ.is_empty(), "bytes differ: {differ:?}");
}

#[tokio::test]
async fn patient_export_stores_every_resource_once_gzip_and_token() {
    let e = env("", &[]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert!(
        report.files > e.sim.personality().types.len(),
        "several files per type"
    );
    assert_eq!(report.files, report.files_complete);
    assert!(
        report.bytes_received < report.bytes_decoded,
        "gzip was used"
    );
    assert_truth_stored_once(&e).await;
    // every request of the job reached the run's ledger: kick-off, polls, files, DELETE
    let ledger = e.store.run_requests(&e.conn, report.run_id).await.unwrap();
    assert_eq!(ledger.len() as u64, report.requests);
    assert!(ledger.iter().any(|l| l.method == "DELETE"));
    assert_eq!(
        ledger
            .iter()
            .filter(|l| l.url_template == "bulkfile/{file}")
            .count(),
        report.files
    );
    assert!(
        ledger
            .iter()
            .filter(|l| l.url_template == "bulkstatus/{job}")
            .count()
            >= 3
    );
    // the job is gone at the server and in the store
    assert!(
        e.store
            .list_checkpoints(&e.conn, "bulk/file/")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        e.store
            .load_checkpoint(&e.conn, "bulk/job")
            .await
            .unwrap()
            .is_none()
    );
    // a second import stores nothing new
    let again = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(again.outcome, RunOutcome::Complete);
    let inserted: u64 = again.by_type.values().map(|t| t.inserted + t.updated).sum();
    assert_eq!(inserted, 0);
}

#[tokio::test]
async fn group_export_without_gzip_or_token_and_http_date_retry_after() {
    let e = env(
        "bulk_requires_token = false\nbulk_gzip = false\nbulk_retry_after_http_date = true",
        &[],
    )
    .await;
    let report = e
        .exporter(options(Level::Group(e.sim.group_id())))
        .run()
        .await
        .unwrap();
    // the open file route refuses a request that carries a token, so complete means none leaked
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_eq!(report.bytes_received, report.bytes_decoded);
    assert_truth_stored_once(&e).await;
}

#[tokio::test]
async fn system_export_with_type_and_type_filter() {
    let e = env("", &[]).await;
    let opts = BulkOptions {
        types: vec!["Observation".into(), "Patient".into()],
        type_filters: vec!["Observation?category=laboratory".into()],
        output_format: Some("application/fhir+ndjson".into()),
        ..options(Level::System)
    };
    let report = e.exporter(opts).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_eq!(
        report.by_type.keys().cloned().collect::<Vec<_>>(),
        vec!["Observation".to_string(), "Patient".to_string()]
    );
    let obs = e
        .store
        .list_resources(&e.conn, "Observation", None, 10_000, false)
        .await
        .unwrap();
    assert!(!obs.is_empty());
    for o in &obs {
        let text = String::from_utf8_lossy(&o.bytes);
        assert!(text.contains("laboratory"), "{text}");
    }
}

#[tokio::test]
async fn incremental_uses_transaction_time_and_deleted_entries_tombstone() {
    let e = env("", &[]).await;
    let first = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Complete);
    e.sim.evolve(1);
    let opts = BulkOptions {
        incremental: true,
        ..options(Level::Patient)
    };
    let second = e.exporter(opts).run().await.unwrap();
    assert_eq!(second.outcome, RunOutcome::Complete, "{second:#?}");
    assert_eq!(second.since, first.transaction_time);
    assert!(second.resources() < first.resources(), "only what changed");
    let tombstoned: u64 = second.by_type.values().map(|t| t.tombstoned).sum();
    assert!(tombstoned > 0, "{second:#?}");
    // the store now holds exactly the truth after the change
    assert_truth_stored_once(&e).await;
}

#[tokio::test]
async fn transient_status_errors_are_retried() {
    let e = env("", &["bulk-status-5xx@0.5"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert!(report.retries > 0);
    assert_truth_stored_once(&e).await;
}

#[tokio::test]
async fn throttling_429_is_honoured() {
    let e = env("", &["bulk-429@0.2"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert!(report.throttled > 0);
    assert_truth_stored_once(&e).await;
}

#[tokio::test]
async fn expired_files_are_asked_for_again() {
    let e = env("", &["bulk-expired-files"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_eq!(report.jobs, 2);
    // the simulator expires the first type with data
    assert_eq!(
        report.rerequested_types,
        vec!["AllergyIntolerance".to_string()]
    );
    assert!(report.notes.iter().any(|n| n.contains("expired")));
    assert_truth_stored_once(&e).await;
}

#[tokio::test]
async fn a_file_that_ends_mid_line_is_partial() {
    let e = env("", &["bulk-truncated-file"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Partial, "{report:#?}");
    assert_eq!(report.partial.len(), 1);
    assert!(
        report.partial[0].detail.contains("middle of line"),
        "{:?}",
        report.partial
    );
    // everything else is there, exactly once
    let truth = e.truth();
    let stored = e.stored().await;
    let missing = truth.keys().filter(|k| !stored.contains_key(*k)).count();
    assert_eq!(missing, 1, "only the cut resource is missing");
}

#[tokio::test]
async fn invalid_lines_are_quarantined_with_line_numbers() {
    let e = env("", &["bulk-invalid-lines"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Partial, "{report:#?}");
    assert_eq!(report.malformed_lines, 2);
    let lines: Vec<u64> = report.quarantined.iter().map(|q| q.line).collect();
    assert_eq!(lines, vec![2, 4], "line 3 is blank and not counted");
    let findings = e.store.list_findings(&e.conn, 100).await.unwrap();
    let malformed: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == "bulk-line-malformed")
        .collect();
    assert_eq!(malformed.len(), 2);
    assert!(malformed.iter().all(|f| f.detail.contains(" line ")));
    // the real resources are all there; the bad lines are stored flagged, not dropped
    assert_truth_and_flagged(&e, 2).await;
    let invalid: u64 = report.by_type.values().map(|t| t.invalid).sum();
    assert_eq!(invalid, 2);
    let ledger = e.store.run_requests(&e.conn, report.run_id).await.unwrap();
    assert!(
        ledger
            .iter()
            .any(|l| l.error_kind.as_deref() == Some("malformed-lines"))
    );
}

#[tokio::test]
async fn a_failed_job_ends_failed_with_the_servers_reason() {
    let e = env("", &["bulk-job-fails"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Failed);
    let err = report.error.clone().unwrap_or_default();
    assert!(err.contains("disk space"), "{err}");
    let run = e
        .store
        .get_run(&e.conn, report.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    // the failed job is deleted at the server and forgotten here
    assert!(
        e.store
            .load_checkpoint(&e.conn, "bulk/job")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn error_files_become_findings() {
    let e = env("", &["outcome-in-bundle"]).await;
    let report = e.exporter(options(Level::Patient)).run().await.unwrap();
    assert_eq!(report.error_outcomes, 1);
    assert_eq!(
        report.outcome,
        RunOutcome::Partial,
        "an error outcome is a gap"
    );
    let findings = e.store.list_findings(&e.conn, 100).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "bulk-error-outcome" && f.detail.contains("line 1"))
    );
}

#[tokio::test]
async fn cancel_deletes_the_stored_job() {
    let e = env("bulk_polls_before_ready = 1000", &[]).await;
    let opts = BulkOptions {
        max_duration: std::time::Duration::from_millis(300),
        ..options(Level::Patient)
    };
    // kick off, then stop polling by the deadline: the job stays stored for a resume...
    let r = e.exporter(opts.clone()).run().await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Failed);
    let _ = r;
    assert!(
        e.store
            .load_checkpoint(&e.conn, "bulk/job")
            .await
            .unwrap()
            .is_some()
    );
    // ...until it is cancelled
    let n = e.exporter(opts).cancel().await.unwrap();
    assert_eq!(n, 1);
    assert!(
        e.store
            .load_checkpoint(&e.conn, "bulk/job")
            .await
            .unwrap()
            .is_none()
    );
}
