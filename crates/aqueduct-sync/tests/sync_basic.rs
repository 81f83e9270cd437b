#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_store::RunOutcome;
use aqueduct_sync::SyncMode;
use aqueduct_testkit::sim_env::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_per_type_stores_every_resource_once() {
    let env = start("reference", 3, 120, &[]).await;
    let types = clinical_types();
    let p = profile("generic", "[paging]\nmax_page_size = 20\n");
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &p, auth, options(types.clone()));
    let pids = env.sim.patient_ids();
    let report = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_all_patients_match(&env, &types).await;
    assert!(report.requests > 0);
    assert!(
        report.referenced_fetched > 0,
        "shared Practitioners/Organizations are referenced"
    );
    // Every request is in the ledger.
    let stats = env
        .store
        .run_request_stats(&env.conn, report.run_id)
        .await
        .unwrap();
    assert_eq!(stats.requests, report.requests);
    let run = env
        .store
        .get_run(&env.conn, report.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Complete);
    // A second full sync changes nothing and tombstones nothing.
    let again = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(again.outcome, RunOutcome::Complete);
    let inserted: u64 = again.by_type.values().map(|c| c.inserted).sum();
    let tomb: u64 = again.by_type.values().map(|c| c.tombstoned).sum();
    assert_eq!((inserted, tomb), (0, 0), "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_used_when_the_profile_says_so() {
    let env = start("reference", 2, 150, &[]).await;
    let types = clinical_types();
    let p = profile("hapi", "[paging]\nmax_page_size = 40\n");
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &p, auth, options(types.clone()));
    let report = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_all_patients_match(&env, &types).await;
    let reqs = env
        .store
        .run_requests(&env.conn, report.run_id)
        .await
        .unwrap();
    assert!(reqs.iter().any(|r| r.url.contains("$everything")));
    assert!(!reqs.iter().any(|r| r.url.contains("/Observation?")));
    // Incremental $everything asks with _since (server clock) and gets only the changes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    env.sim.evolve(1);
    let inc = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Incremental)
        .await
        .unwrap();
    assert_eq!(inc.outcome, RunOutcome::Complete, "{inc:#?}");
    let reqs = env.store.run_requests(&env.conn, inc.run_id).await.unwrap();
    assert!(
        reqs.iter()
            .any(|r| r.url.contains("$everything") && r.url.contains("_since="))
    );
    assert!(inc.resources() < report.resources());
    let full = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(full.outcome, RunOutcome::Complete, "{full:#?}");
    assert_all_patients_match(&env, &types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_fetches_changes_and_full_sync_tombstones_deletions() {
    let env = start("reference", 2, 100, &[]).await;
    let types = clinical_types();
    let p = profile("generic", "");
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &p, auth, options(types.clone()));
    let pids = env.sim.patient_ids();
    let first = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Complete);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    env.sim.evolve(1);
    let inc = s.sync_patients(&pids, SyncMode::Incremental).await.unwrap();
    assert_eq!(inc.outcome, RunOutcome::Complete, "{inc:#?}");
    assert!(
        inc.resources() < first.resources(),
        "incremental fetched {} of {}",
        inc.resources(),
        first.resources()
    );
    let changed: u64 = inc.by_type.values().map(|c| c.inserted + c.updated).sum();
    assert!(changed > 0, "{inc:#?}");
    // Deletions are invisible to an incremental search; the full sync tombstones them.
    let full = s.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(full.outcome, RunOutcome::Complete, "{full:#?}");
    assert_all_patients_match(&env, &types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_like_server_needs_the_institution_header_and_categories() {
    let env = start("epic", 2, 100, &[]).await;
    let types = clinical_types();
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    // Without the header the institution requires, nothing works: reported, not silent.
    let bare = syncer(
        &env,
        &profile("epic", ""),
        auth.clone(),
        options(types.clone()),
    );
    let r = bare
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_ne!(r.outcome, RunOutcome::Complete);
    let p = profile(
        "epic",
        "[http.extra_headers]\n\"Epic-Client-ID\" = \"acme-123\"\n",
    );
    let s = syncer(&env, &p, auth, options(types.clone()));
    let report = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    assert_all_patients_match(&env, &types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_patients_lists_the_population() {
    let env = start("reference", 7, 20, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(
        &env,
        &profile("generic", "[paging]\nmax_page_size = 3\n"),
        auth,
        options(clinical_types()),
    );
    let mut ids = s.discover_patients().await.unwrap();
    ids.sort();
    let mut expected = env.sim.patient_ids();
    expected.sort();
    assert_eq!(ids, expected);
    let group = s
        .discover_group_patients(&env.sim.group_id())
        .await
        .unwrap();
    assert_eq!(group, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_like_server_narrowed_scope_is_reported_not_silent() {
    let env = start("athena", 2, 80, &[]).await;
    let types = clinical_types();
    let base = env.sim.base_url();
    let auth = aqueduct_client::ClientSecretGrant::discover(
        &base,
        CLIENT_ID,
        CLIENT_SECRET,
        "system/*.read",
    )
    .await
    .unwrap();
    let s = syncer(
        &env,
        &profile("athena", ""),
        Arc::new(auth),
        options(types.clone()),
    );
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    // DocumentReference is outside the narrowed scopes, and so are the practitioners,
    // locations and organizations the record points at: each is a gap, never silent.
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == aqueduct_sync::MissingReason::ScopeNotGranted),
        "{r:#?}"
    );
    assert!(
        r.partial
            .iter()
            .any(|p| p.resource_type == "DocumentReference"),
        "{r:#?}"
    );
    assert!(
        r.partial
            .iter()
            .any(|p| p.resource_type == "Practitioner"
                && p.detail.contains("referenced by the record")),
        "{r:#?}"
    );
    // Everything else is complete, MedicationRequest included (the profile adds intent=order,plan).
    for pid in env.sim.patient_ids() {
        for t in types.iter().filter(|t| *t != "DocumentReference") {
            let stored = env
                .store
                .patient_resource_ids(&env.conn, &pid, t)
                .await
                .unwrap()
                .len();
            assert_eq!(stored, env.sim.expected_count_of_type(&pid, t), "{pid} {t}");
        }
    }
    let reqs = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    assert!(
        reqs.iter()
            .any(|q| q.url.contains("intent=order%2Cplan") || q.url.contains("intent=order,plan"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerner_like_server_rejections_are_partial_not_supported() {
    let env = start("cerner", 2, 80, &[]).await;
    let types = clinical_types();
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let s = syncer(&env, &profile("cerner", ""), auth, options(types.clone()));
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Partial, "{r:#?}");
    let mut missing: Vec<&str> = r.partial.iter().map(|p| p.resource_type.as_str()).collect();
    missing.sort();
    missing.dedup();
    assert_eq!(missing, vec!["CarePlan", "CareTeam", "Goal"], "{r:#?}");
    assert!(
        r.partial
            .iter()
            .all(|p| p.reason == aqueduct_sync::MissingReason::NotSupported)
    );
    // Rejections are remembered: the second patient does not probe again.
    let reqs = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    let goal_probes = reqs.iter().filter(|q| q.url.contains("/Goal?")).count();
    assert_eq!(goal_probes, 1, "probing once and remembering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_read_in_batches_where_the_server_takes_them() {
    let env = start("reference", 3, 120, &[]).await;
    let types = clinical_types();
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let pids = env.sim.patient_ids();
    // One read per Binary where batch is off...
    let one_by_one = syncer(
        &env,
        &profile("generic", "[capabilities]\nbatch = false\n"),
        auth.clone(),
        options(types.clone()),
    );
    let a = one_by_one
        .sync_patients(&pids, SyncMode::Full)
        .await
        .unwrap();
    let binaries = env
        .store
        .count_by_type(&env.conn)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.resource_type == "Binary")
        .unwrap()
        .live;
    assert!(binaries > 3, "the population has attachments");
    // ...and batches of reads where it is on: same data, far fewer requests.
    let batched = syncer(
        &env,
        &profile("generic", "[capabilities]\nbatch = true\n"),
        auth,
        options(types),
    );
    let b = batched.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(b.outcome, RunOutcome::Complete, "{b:#?}");
    assert_eq!(b.by_type["Binary"].fetched, binaries, "{b:#?}");
    assert_eq!(
        b.by_type["Binary"].inserted, 0,
        "the same bytes, not rewritten"
    );
    assert!(
        b.requests + binaries - 3 <= a.requests,
        "batched {} vs one by one {}",
        b.requests,
        a.requests
    );
    let ledger = env.store.run_requests(&env.conn, b.run_id).await.unwrap();
    assert!(
        ledger
            .iter()
            .any(|e| e.method == "POST" && e.url_template.contains("batch")),
        "batches are in the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_batch_gets_its_reads_one_by_one() {
    // The Oracle-like simulator answers batch Bundles with 400 although the profile says yes.
    let env = start("cerner", 3, 120, &[]).await;
    let types: Vec<String> = clinical_types()
        .into_iter()
        .filter(|t| !["CarePlan", "Goal", "CareTeam"].contains(&t.as_str()))
        .collect();
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let pids = env.sim.patient_ids();
    let promised = syncer(
        &env,
        &profile("generic", "[capabilities]\nbatch = true\n"),
        auth.clone(),
        options(types.clone()),
    );
    let r = promised.sync_patients(&pids, SyncMode::Full).await.unwrap();
    // The CapabilityStatement lists CarePlan, Goal and CareTeam, so they join the record
    // although not configured, and the server refuses them: those gaps and no other.
    assert!(
        r.partial.iter().all(|p| ["CarePlan", "Goal", "CareTeam"]
            .contains(&p.resource_type.as_str())
            && p.reason == aqueduct_sync::MissingReason::NotSupported),
        "{r:#?}"
    );
    let ledger = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    let posts = ledger.iter().filter(|e| e.method == "POST").count();
    assert_eq!(posts, 1, "one refused batch, then no more tries this run");
    assert!(
        r.notes.iter().any(|n| n.contains("rejected a batch")),
        "{:?}",
        r.notes
    );
    let binaries = r.by_type["Binary"].fetched;
    assert!(binaries > 3, "{r:#?}");
    // Reading them one by one from the start finds nothing the fallback missed.
    let plain = syncer(
        &env,
        &profile("generic", "[capabilities]\nbatch = false\n"),
        auth,
        options(types),
    );
    let again = plain.sync_patients(&pids, SyncMode::Full).await.unwrap();
    assert_eq!(again.by_type["Binary"].fetched, binaries);
    assert_eq!(again.by_type["Binary"].inserted, 0);
}

/// Issue #12: the whole record is more than the configured types — every Patient-compartment
/// type the server lists and holds data of joins it, planned with one server-wide count each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_the_server_lists_join_the_record_even_when_not_configured() {
    let env = start("reference", 2, 60, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let mut o = options(vec!["Patient".into(), "Condition".into()]);
    o.use_everything = false;
    let s = syncer(&env, &profile("generic", ""), auth, o);
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
    for t in ["Observation", "Encounter", "Procedure"] {
        assert!(
            r.by_type.get(t).is_some_and(|c| c.fetched > 0),
            "{t} not fetched: {r:#?}"
        );
    }
    for pid in env.sim.patient_ids() {
        assert_eq!(
            env.store
                .patient_resource_ids(&env.conn, &pid, "Observation")
                .await
                .unwrap()
                .len(),
            env.sim.expected_count_of_type(&pid, "Observation")
        );
    }
    let entries = env.store.run_requests(&env.conn, r.run_id).await.unwrap();
    let counts = entries
        .iter()
        .filter(|e| e.url.contains("_summary=count"))
        .count();
    assert!(counts > 0, "planned with server-wide counts");
    assert!(counts <= 60, "one count per listed type and run: {counts}");
}

/// Issue #12.3/#12.5: a server that refuses to search its Patients still reads one; it
/// answers under another id (a per-session alias), which is kept and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_the_server_will_not_search_is_read_and_its_alias_reported() {
    let env = start("payer-everything", 1, 20, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let mut o = options(vec!["Patient".into()]);
    o.use_everything = false;
    o.reference_depth = 0;
    let s = syncer(&env, &profile("cms-payer", ""), auth, o);
    let pid = env.sim.patient_ids()[0].clone();
    let r = s
        .sync_patients(std::slice::from_ref(&pid), SyncMode::Full)
        .await
        .unwrap();
    let truth = env.sim.truth(&pid).unwrap();
    let alias = truth["patient_resource_id"].as_str().unwrap();
    assert_ne!(alias, pid, "the personality answers under an alias");
    assert!(
        env.store
            .get_resource(&env.conn, "Patient", alias)
            .await
            .unwrap()
            .is_some(),
        "{r:#?}"
    );
    assert!(
        r.notes.iter().any(|n| n.contains("read Patient/")),
        "{:?}",
        r.notes
    );
    let findings = env.store.list_findings(&env.conn, 20).await.unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.kind == "patient-alias" && f.detail.contains(alias)),
        "{findings:?}"
    );
    assert!(
        !r.partial.iter().any(|p| p.resource_type == "Patient"),
        "{r:#?}"
    );
}
