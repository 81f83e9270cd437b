//! Hostile or broken servers (issue #13): each simulator fault against the real sync engine.
//! Asserted every time: the outcome tells the truth, nothing stored is lost or tombstoned
//! wrongly, and time and traffic stay bounded.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aqueduct_store::RunOutcome;
use aqueduct_sync::{MissingReason, SyncMode, SyncReport};
use aqueduct_testkit::sim_env::*;

async fn run(env: &Env, p: &aqueduct_client::VendorProfile) -> SyncReport {
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(env, p, auth, options(clinical_types()));
    s.sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap()
}

async fn live(env: &Env) -> u64 {
    env.store
        .count_by_type(&env.conn)
        .await
        .unwrap()
        .iter()
        .map(|c| c.live)
        .sum()
}

fn small_pages() -> aqueduct_client::VendorProfile {
    profile("generic", "[paging]\nmax_page_size = 25\n")
}

/// A clean sync first, so that there is something a bad answer could destroy.
async fn synced_then_faulted(
    faults: &[&str],
    p: &aqueduct_client::VendorProfile,
) -> (Env, u64, SyncReport) {
    let env = start("reference", 2, 60, &[]).await;
    let first = run(&env, p).await;
    assert_eq!(first.outcome, RunOutcome::Complete, "{first:#?}");
    let before = live(&env).await;
    env.sim.set_faults(self::faults(faults));
    let r = run(&env, p).await;
    (env, before, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_outcome_inside_a_200_page_is_partial_and_tombstones_nothing() {
    let (env, before, r) = synced_then_faulted(&["error-outcome-in-bundle"], &small_pages()).await;
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .any(|p| p.reason == MissingReason::ErrorOutcome && p.detail.contains("truncated")),
        "{r:#?}"
    );
    let tombstoned: u64 = r.by_type.values().map(|c| c.tombstoned).sum();
    assert_eq!(tombstoned, 0, "{r:#?}");
    assert_eq!(live(&env).await, before, "nothing stored was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_refused_and_no_secret_follows_it() {
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 25\n[http.extra_headers]\nx-api-key = \"secret-key-123\"\n",
    );
    let (env, before, r) = synced_then_faulted(&["redirect-cross-origin"], &p).await;
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == MissingReason::RefusedResponse),
        "{r:#?}"
    );
    assert!(
        r.partial
            .iter()
            .any(|p| p.detail.contains("another origin")),
        "{r:#?}"
    );
    // Nothing from the other origin was stored, nothing was tombstoned.
    assert!(
        env.store
            .get_resource(&env.conn, "Observation", "forged-1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(live(&env).await, before);
    // The other origin never saw a request (so neither token nor API key).
    let side: Vec<_> = env
        .sim
        .side_requests()
        .into_iter()
        .filter(|r| r.host == "foreign")
        .collect();
    assert!(side.is_empty(), "{side:?}");
    // The ledger has the refused attempts.
    let entries = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.error_kind.as_deref() == Some("redirect-refused"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_its_cap_is_aborted_once_and_never_retried() {
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 25\n[http]\nmax_response_mb = 2\n",
    );
    let (env, before, r) = synced_then_faulted(&["huge-body:64"], &p).await;
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == MissingReason::RefusedResponse && p.detail.contains("cap")),
        "{r:#?}"
    );
    let entries = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    let too_large = entries
        .iter()
        .filter(|e| e.error_kind.as_deref() == Some("too-large"))
        .count();
    assert!(too_large > 0);
    // one attempt per search: an identical invalid body is never asked for again
    assert!(
        entries.iter().all(|e| e.attempt == 1),
        "a too-large body was retried"
    );
    assert_eq!(live(&env).await, before, "nothing stored was lost");
    // The server streamed far less than 64 MB per request: the client stopped reading.
    let streamed = env.sim.stats().bytes_streamed;
    assert!(
        streamed < too_large as u64 * 16 * 1024 * 1024,
        "{streamed} bytes streamed for {too_large} refused answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_or_repeating_pages_end_partial_quickly() {
    for fault in ["endless-empty-pages", "cursor-repeat"] {
        let (env, before, r) = synced_then_faulted(&[fault], &small_pages()).await;
        assert_eq!(r.outcome, RunOutcome::Partial, "{fault}: {r:#?}");
        assert!(
            r.partial
                .iter()
                .any(|p| p.detail.contains("added nothing new")),
            "{fault}: {r:#?}"
        );
        let tombstoned: u64 = r.by_type.values().map(|c| c.tombstoned).sum();
        assert_eq!(tombstoned, 0, "{fault}");
        assert_eq!(live(&env).await, before, "{fault}");
        // 2 patients × 13 types × a handful of pages, not thousands
        assert!(r.requests < 600, "{fault}: {} requests", r.requests);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_cap_from_the_profile_ends_a_search_partial() {
    let p = profile(
        "generic",
        "[paging]\nmax_page_size = 25\nmax_pages = 3\nmax_fruitless_pages = 100\n",
    );
    let (_env, _before, r) = synced_then_faulted(&["endless-empty-pages"], &p).await;
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .any(|p| p.detail.contains("paging.max_pages")),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_costs_bounded_time_not_a_timeout_per_retry() {
    for fault in ["stall-page:5", "stall-headers:30"] {
        let p = profile(
            "generic",
            "[paging]\nmax_page_size = 25\n[http]\ntimeout_secs = 1\n",
        );
        let env = start("reference", 1, 30, &[]).await;
        env.sim.set_faults(faults(&[fault]));
        let started = Instant::now();
        let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
        let mut o = options(vec![
            "Patient".into(),
            "Observation".into(),
            "Condition".into(),
        ]);
        o.type_concurrency = 1;
        let s = syncer(&env, &p, auth, o);
        let r = s
            .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
            .await
            .unwrap();
        let took = started.elapsed();
        // a stalled search costs one try and one retry of 1 s each (no page retry on top), and
        // after two stalled searches the run stops asking: not a timeout per search
        let entries = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
        // partial when the server answered something (headers of a trickled page, the
        // CapabilityStatement); failed when it answered nothing at all — its gaps named either way
        if entries.iter().any(|e| e.status.is_some()) {
            assert_eq!(r.outcome, RunOutcome::Partial, "{fault}: {r:#?}");
        } else {
            assert_eq!(r.outcome, RunOutcome::Failed, "{fault}: {r:#?}");
            assert!(
                r.error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("answered none"),
                "{fault}: {r:#?}"
            );
        }
        let timeouts = entries
            .iter()
            .filter(|e| e.error_kind.as_deref() == Some("timeout"))
            .count();
        // (the CapabilityStatement request, answered by the same stalled server, may add its
        // own try and retry)
        assert!(timeouts <= 3 * 2, "{fault}: {timeouts} timeouts");
        assert!(
            r.partial
                .iter()
                .any(|p| p.detail.contains("stopped answering")),
            "{fault}: {r:#?}"
        );
        assert!(took < Duration::from_secs(15), "{fault}: took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_names_what_it_did_not_fetch() {
    let env = start("reference", 4, 40, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let mut o = options(clinical_types());
    o.max_run_duration = Some(Duration::ZERO);
    o.patient_concurrency = 1;
    let s = syncer(&env, &small_pages(), auth, o);
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == MissingReason::DeadlineReached),
        "{r:#?}"
    );
    assert_eq!(r.patients_complete, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_population_that_cannot_be_listed_still_leaves_a_failed_run_with_its_ledger() {
    let env = start("reference", 2, 20, &["server-error-500"]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &small_pages(), auth, options(clinical_types()));
    let err = s.discover_patients().await.unwrap_err();
    let run = s
        .record_failed_start(
            SyncMode::Full,
            "listing the server's patients",
            &err.to_string(),
        )
        .await
        .unwrap();
    let stored = env.store.get_run(&env.conn, run).await.unwrap().unwrap();
    assert_eq!(stored.outcome, RunOutcome::Failed);
    assert!(
        stored
            .error
            .as_deref()
            .unwrap()
            .starts_with("listing the server's patients: "),
        "{stored:?}"
    );
    assert!(stored.error.as_deref().unwrap().contains("http-500"));
    // the failed attempts are in its ledger, and a finding says it
    let entries = env.store.run_requests(&env.conn, run).await.unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e.status == Some(500)));
    let findings = env.store.list_findings(&env.conn, 10).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "run-failed-to-start" && f.run_id == Some(run)),
        "{findings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_capability_statement_coverage_is_a_finding_and_the_sync_goes_on() {
    for fault in ["metadata-500", "metadata-404"] {
        let env = start("reference", 1, 30, &[fault]).await;
        let r = run(&env, &small_pages()).await;
        assert_eq!(r.outcome, RunOutcome::Complete, "{fault}: {r:#?}");
        let findings = env.store.list_findings(&env.conn, 20).await.unwrap();
        assert!(
            findings
                .iter()
                .any(|f| f.kind == "type-coverage-unverified" && f.run_id == Some(r.run_id)),
            "{fault}: {findings:?}"
        );
    }
}
