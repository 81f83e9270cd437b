//! Each simulator fault the sync can see: nothing lost, nothing duplicated, partial reported
//! as partial, and a rerun completes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_client::StaticBearer;
use aqueduct_store::RunOutcome;
use aqueduct_sync::{MissingReason, SyncMode, SyncReport};
use aqueduct_testkit::sim_env::*;

fn generic_small_pages() -> aqueduct_client::VendorProfile {
    profile("generic", "[paging]\nmax_page_size = 25\n")
}

async fn sync_with_faults(fault_list: &[&str]) -> (Env, SyncReport) {
    let env = start("reference", 2, 80, fault_list).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(
        &env,
        &generic_small_pages(),
        auth,
        options(clinical_types()),
    );
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    (env, r)
}

async fn assert_transient_fault_absorbed(fault: &str) -> SyncReport {
    let (env, r) = sync_with_faults(&[fault]).await;
    assert_eq!(r.outcome, RunOutcome::Complete, "{fault}: {r:#?}");
    assert!(r.retries > 0, "{fault}: no retry seen");
    assert_all_patients_match(&env, &clinical_types()).await;
    // Failed attempts are in the ledger too.
    let stats = env
        .store
        .run_request_stats(&env.conn, r.run_id)
        .await
        .unwrap();
    assert_eq!(stats.requests, r.requests);
    assert!(
        stats.errors > 0,
        "{fault}: failed attempts missing from the ledger"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_nothing_is_lost() {
    for fault in [
        "server-error-500@0.15",
        "drop-connection@0.1",
        "truncated-body@0.15",
        "invalid-json@0.15",
        "html-error-200@0.15",
    ] {
        assert_transient_fault_absorbed(fault).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_signals_are_honoured() {
    for fault in [
        "rate-limit-429@0.15",
        "rate-limit-headers@0.15",
        "unavailable-503@0.15",
    ] {
        let r = assert_transient_fault_absorbed(fault).await;
        assert!(r.throttled > 0, "{fault}: {r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_paging_is_partial_and_the_next_full_run_asks_again() {
    let (env, r) = sync_with_faults(&["error-mid-paging"]).await;
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == MissingReason::FailedAfterRetries),
        "{r:#?}"
    );
    assert!(r.partial.iter().any(|p| p.resource_type == "Observation"));
    // The run finished: no search checkpoint of it is left to be reused by a later run
    // (only the per-patient marks a resumed run would read).
    let cps = env
        .store
        .list_checkpoints(&env.conn, "sync/full/")
        .await
        .unwrap();
    assert!(cps.iter().all(|(k, _)| k.ends_with("/~patient")), "{cps:?}");
    // The server recovers: the next full run starts fresh — it asks for every type again
    // (a stale "done" would hide new data) — and completes.
    env.sim.set_faults(vec![]);
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(
        &env,
        &generic_small_pages(),
        auth,
        options(clinical_types()),
    );
    let again = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(again.outcome, RunOutcome::Complete, "{again:#?}");
    for t in clinical_types() {
        assert!(
            again.by_type.get(&t).is_some_and(|c| c.fetched > 0),
            "{t} fetched again: {again:#?}"
        );
    }
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_loops_and_broken_next_links_are_partial() {
    for fault in ["looping-next-link", "broken-next-link"] {
        let (_env, r) = sync_with_faults(&[fault]).await;
        assert_eq!(r.outcome, RunOutcome::Partial, "{fault}: {r:#?}");
        assert!(
            r.partial.iter().any(|p| p.resource_type == "Observation"),
            "{fault}: {r:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_entries_are_counted_and_stored_once() {
    let (env, r) = sync_with_faults(&["duplicate-entries"]).await;
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    let dups: u64 = r.by_type.values().map(|c| c.duplicates).sum();
    assert!(dups > 0);
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_without_ids_get_stable_synthetic_ids() {
    // References name the real ids the faulty searches leave out, and reads of them would
    // store those resources a second time under their real ids: this test is about the
    // synthetic ids alone, so no references are followed.
    let env = start("reference", 2, 80, &["missing-ids"]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let mut no_refs = options(clinical_types());
    no_refs.reference_depth = 0;
    let s = syncer(&env, &generic_small_pages(), auth, no_refs.clone());
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    let invalid: u64 = r.by_type.values().map(|c| c.invalid).sum();
    assert!(invalid > 0, "{r:#?}");
    let ids = env
        .store
        .list_resources(&env.conn, "Observation", None, 5, false)
        .await
        .unwrap();
    assert!(
        ids.iter()
            .all(|x| x.logical_id.starts_with("aqueduct-sha256-"))
    );
    assert_all_patients_match(&env, &clinical_types()).await;
    // Same bytes, same ids: a second sync inserts nothing new.
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &generic_small_pages(), auth, no_refs);
    let again = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    let inserted: u64 = again.by_type.values().map(|c| c.inserted).sum();
    assert_eq!(inserted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_entries_in_bundles_are_noted_not_stored() {
    let (env, r) = sync_with_faults(&["outcome-in-bundle"]).await;
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    assert!(r.notes.iter().any(|n| n.contains("outcome")));
    assert!(!r.by_type.contains_key("OperationOutcome"));
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_capability_statement_is_checked_by_probing() {
    let env = start("reference", 1, 60, &["lying-capability"]).await;
    let mut types = clinical_types();
    types.push("Specimen".into());
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &generic_small_pages(), auth, options(types.clone()));
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .any(|p| p.resource_type == "Specimen" && p.reason == MissingReason::NotSupported),
        "{r:#?}"
    );
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_200_after_data_was_seen_tombstones_nothing() {
    let env = start("reference", 1, 60, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(
        &env,
        &generic_small_pages(),
        auth,
        options(clinical_types()),
    );
    let pids = env.sim.patient_ids();
    assert_eq!(
        s.sync_patients(&pids, SyncMode::Full)
            .await
            .unwrap()
            .outcome,
        RunOutcome::Complete
    );
    env.sim.set_faults(faults(&["empty-bundle"]));
    let r = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == MissingReason::Incomplete)
    );
    let tomb: u64 = r.by_type.values().map(|c| c.tombstoned).sum();
    assert_eq!(tomb, 0);
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_on_401() {
    let env = start("reference", 1, 80, &["token-expires-mid-sync:5"]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(
        &env,
        &generic_small_pages(),
        auth.clone(),
        options(clinical_types()),
    );
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    assert!(*auth.refreshes.lock().unwrap() > 0);
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_refreshed_stops_the_run_cleanly_and_it_resumes() {
    let env = start("reference", 2, 80, &["token-expires-mid-sync:8"]).await;
    let token = fetch_token(&env.sim.base_url()).await.unwrap();
    let s = syncer(
        &env,
        &generic_small_pages(),
        Arc::new(StaticBearer::new(token)),
        options(clinical_types()),
    );
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Failed, "{r:#?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("re-authorization needed"),
        "{r:#?}"
    );
    let run = env
        .store
        .get_run(&env.conn, r.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    // Re-authorized: the rerun completes the record.
    env.sim.set_faults(vec![]);
    let token = fetch_token(&env.sim.base_url()).await.unwrap();
    let s = syncer(
        &env,
        &generic_small_pages(),
        Arc::new(StaticBearer::new(token)),
        options(clinical_types()),
    );
    let again = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(again.outcome, RunOutcome::Complete, "{again:#?}");
    assert_all_patients_match(&env, &clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_without_loss_or_duplicates() {
    let env = start("reference", 3, 200, &[]).await;
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 10\n[rate_limit]\nrequests_per_sec = 100.0\n",
    );
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    // A short life without heartbeat: the killed run (and its lease) count as dead soon.
    let mut o = options(clinical_types());
    o.stale_run_after = std::time::Duration::from_millis(600);
    let s = Arc::new(syncer(&env, &p, auth.clone(), o.clone()));
    let pids = env.sim.patient_ids();
    let task = {
        let s = s.clone();
        let pids = pids.clone();
        tokio::spawn(async move { s.sync_patients(&pids, SyncMode::Full).await })
    };
    // Kill it about half-way through.
    let expected: usize = pids
        .iter()
        .map(|p| env.sim.expected_resource_count(p))
        .sum();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let n: u64 = env
            .store
            .count_by_type(&env.conn)
            .await
            .unwrap()
            .iter()
            .map(|c| c.live)
            .sum();
        if n as usize > expected / 2 {
            break;
        }
    }
    task.abort();
    let _ = task.await;
    let before: u64 = env
        .store
        .count_by_type(&env.conn)
        .await
        .unwrap()
        .iter()
        .map(|c| c.live)
        .sum();
    assert!(
        (before as usize) < expected,
        "killed too late: {before} of {expected}"
    );
    // The killed run is still "running": nothing finished it.
    let runs = env.store.list_runs(&env.conn, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    let killed = runs[0].id;
    assert_eq!(runs[0].outcome, RunOutcome::Running);
    // Its ledger is not behind its progress: every page it checkpointed has its requests.
    let logged = env.store.run_requests(&env.conn, killed).await.unwrap();
    assert!(!logged.is_empty(), "ledger flushed before each checkpoint");
    // While its lease lasts, a second sync is refused rather than run side by side.
    let s = syncer(&env, &p, auth, o);
    assert!(
        matches!(
            s.sync_patients(&pids, SyncMode::Full).await,
            Err(aqueduct_sync::SyncError::Busy { .. })
        ),
        "a second sync while the first may still be alive"
    );
    // Its heartbeat stopped with it: once that is long enough ago, the next sync closes it
    // and resumes its checkpoints.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let r = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    assert_all_patients_match(&env, &clinical_types()).await;
    let unchanged: u64 = r.by_type.values().map(|c| c.unchanged).sum();
    assert!(
        unchanged < before,
        "resumed from checkpoints rather than refetching everything"
    );
    // The next sync closed the dead run as failed, and said so.
    let dead = env.store.get_run(&env.conn, killed).await.unwrap().unwrap();
    assert_eq!(dead.outcome, RunOutcome::Failed);
    assert!(
        dead.error.as_deref().unwrap().starts_with("interrupted"),
        "{dead:?}"
    );
    let findings = env.store.list_findings(&env.conn, 50).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "run-interrupted" && f.run_id == Some(killed)),
        "{findings:?}"
    );
    assert_eq!(
        env.store
            .get_run(&env.conn, r.run_id)
            .await
            .unwrap()
            .unwrap()
            .outcome,
        RunOutcome::Complete,
        "the live run is not mistaken for a dead one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_closed_as_dead_that_finishes_records_its_real_outcome() {
    let env = start("reference", 3, 200, &[]).await;
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 10\n[rate_limit]\nrequests_per_sec = 100.0\n",
    );
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = Arc::new(syncer(&env, &p, auth, options(clinical_types())));
    let pids = env.sim.patient_ids();
    let task = {
        let s = s.clone();
        let pids = pids.clone();
        tokio::spawn(async move { s.sync_patients(&pids, SyncMode::Full).await })
    };
    // Another process decides this run is dead while it is in fact only slow.
    let run = loop {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        if let Some(r) = env.store.list_runs(&env.conn, 1).await.unwrap().first() {
            break r.id;
        }
    };
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let closed = env
        .store
        .close_stale_runs(&env.conn, later, aqueduct_sync::INTERRUPTED)
        .await
        .unwrap();
    assert_eq!(closed, vec![run]);
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    let stored = env.store.get_run(&env.conn, run).await.unwrap().unwrap();
    assert_eq!(
        stored.outcome,
        RunOutcome::Complete,
        "the real outcome wins"
    );
    let findings = env.store.list_findings(&env.conn, 50).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "run-revived" && f.run_id == Some(run)),
        "{findings:?}"
    );
}

/// Issue #13.1: a run killed after a patient's searches were checkpointed as done, while it
/// was still reading what they referenced. The resumed run does not read those searches
/// again; it must still fetch every attachment they pointed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_resolving_references_resumes_them() {
    // Binary reads answer a huge, slowly consumed body: the kill lands while one is read.
    let env = start("reference", 1, 120, &["huge-binary:4096"]).await;
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 10\n[http]\nmax_binary_mb = 8192\n",
    );
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let mut o = options(clinical_types());
    o.use_everything = false;
    o.stale_run_after = std::time::Duration::from_millis(300);
    let s = Arc::new(syncer(&env, &p, auth.clone(), o.clone()));
    let pids = env.sim.patient_ids();
    let task = {
        let (s, pids) = (s.clone(), pids.clone());
        tokio::spawn(async move { s.sync_patients(&pids, SyncMode::Full).await })
    };
    let started = std::time::Instant::now();
    while env.sim.stats().bytes_streamed == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no Binary read began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    // the searches were all checkpointed as done before the references were read
    let cps = env
        .store
        .list_checkpoints(&env.conn, "sync/full/")
        .await
        .unwrap();
    assert!(
        cps.iter().any(|(k, _)| k.contains("/DocumentReference/")),
        "{cps:?}"
    );
    let binaries = |env: &Env| {
        let truth = env.sim.truth(&pids[0]).unwrap();
        truth["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resourceType"] == "Binary")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let wanted = binaries(&env);
    assert!(!wanted.is_empty(), "the record has attachments");
    env.sim.set_faults(vec![]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let s = syncer(&env, &p, auth, o);
    let r = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    assert!(
        r.notes.iter().any(|n| n.contains("resuming")),
        "it resumed: {:?}",
        r.notes
    );
    for id in &wanted {
        assert!(
            env.store
                .get_resource(&env.conn, "Binary", id)
                .await
                .unwrap()
                .is_some(),
            "Binary/{id} lost by the resume"
        );
    }
}
