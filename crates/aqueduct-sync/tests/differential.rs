//! Whole-record fidelity (issue #12): for every simulator personality, the store is compared
//! with the simulator's ground truth (`SimServer::truth`: every resource of each patient's
//! whole record, with the SHA-256 of the bytes served). Either everything was retrieved, byte
//! for byte, or the run is partial and names what is missing (its type, for that patient).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use aqueduct_store::RunOutcome;
use aqueduct_sync::{SyncMode, SyncOptions, SyncReport};
use aqueduct_testkit::sim_env::*;
use sha2::{Digest, Sha256};

/// What the store lacks, per patient: (type, id, how the truth says it is reached).
type Missing = BTreeMap<String, Vec<(String, String, String)>>;

async fn compare(env: &Env) -> (Missing, Vec<String>) {
    let mut missing: Missing = BTreeMap::new();
    let mut mismatched = Vec::new();
    for pid in env.sim.patient_ids() {
        let truth = env.sim.truth(&pid).unwrap();
        for r in truth["resources"].as_array().unwrap() {
            if r.get("withheld").is_some() {
                continue; // the server never hands it over: a partial run must say so
            }
            let (t, id) = (
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
            );
            let via = r["via"].as_str().unwrap_or("?").to_string();
            match env.store.get_resource(&env.conn, t, id).await.unwrap() {
                None => missing
                    .entry(pid.clone())
                    .or_default()
                    .push((t.into(), id.into(), via)),
                Some(s) if s.deleted_at.is_some() => missing
                    .entry(pid.clone())
                    .or_default()
                    .push((t.into(), id.into(), format!("{via}, tombstoned"))),
                Some(s) => {
                    let got = hex::encode(Sha256::digest(&s.bytes));
                    let want = [r["sha256"].as_str(), r["json_sha256"].as_str()];
                    if !want.contains(&Some(got.as_str())) {
                        mismatched.push(format!("{t}/{id}"));
                    }
                }
            }
        }
    }
    (missing, mismatched)
}

/// Syncs every patient of `personality` with `platform`'s profile and checks the rule.
async fn differential(personality: &str, platform: &str, types: Vec<String>) -> SyncReport {
    differential_with(personality, platform, "", types).await
}

async fn differential_with(
    personality: &str,
    platform: &str,
    institution: &str,
    types: Vec<String>,
) -> SyncReport {
    let env = start(personality, 3, 60, &[]).await;
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let options = SyncOptions {
        resource_types: types,
        ..Default::default()
    };
    // `{documents}` stands for the simulator's document host, known once it runs
    let institution = institution.replace("{documents}", &env.sim.documents_origin());
    let s = syncer(&env, &profile(platform, &institution), auth, options);
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    let (missing, mismatched) = compare(&env).await;
    assert!(
        mismatched.is_empty(),
        "{personality}: stored bytes differ from the served ones: {mismatched:?}"
    );
    let stored: usize = env
        .store
        .count_by_type(&env.conn)
        .await
        .unwrap()
        .iter()
        .map(|c| c.live as usize)
        .sum();
    let truth: usize = env
        .sim
        .patient_ids()
        .iter()
        .map(|p| env.sim.truth(p).unwrap()["count"].as_u64().unwrap() as usize)
        .sum();
    eprintln!(
        "{personality:>18} ({platform}): truth {truth} (per patient, shared counted each time), stored {stored}, \
         missing {}, requests {} ({:.1}/patient), outcome {}",
        missing.values().map(Vec::len).sum::<usize>(),
        r.requests,
        r.requests as f64 / r.patients.max(1) as f64,
        r.outcome.as_str()
    );
    if missing.is_empty() {
        return r;
    }
    assert_ne!(
        r.outcome,
        RunOutcome::Complete,
        "{personality}: complete, yet missing {missing:#?}"
    );
    for (pid, items) in &missing {
        let truth = env.sim.truth(pid).unwrap();
        let mut ids_of_record = vec![pid.clone()];
        ids_of_record.extend(truth["patient_resource_id"].as_str().map(str::to_string));
        for l in truth["linked_patients"].as_array().into_iter().flatten() {
            ids_of_record.extend(l.as_str().map(str::to_string));
        }
        for (t, id, via) in items {
            // A resource reached through a search must have its type named for the patient;
            // one reached through a reference or an attachment is missing because what
            // points at it is (a gap of the patient names that).
            let named = r.partial.iter().any(|p| {
                ids_of_record.contains(&p.patient_id)
                    && (p.resource_type == *t
                        || p.resource_type == "$everything"
                        || p.resource_type == "*"
                        || via.starts_with("reference")
                        || via.starts_with("attachment"))
            });
            assert!(
                named,
                "{personality}: {t}/{id} ({via}) of {pid} is missing and the report does not name it: {:#?}",
                r.partial
            );
        }
    }
    r
}

/// The hospital's documents live on another host of the same organization.
const DOCUMENT_HOST: &str = "[http]\ndocument_hosts = [\"{documents}\"]\n";

/// The institution header the Epic-like simulator requires.
const EPIC_HEADER: &str = "[http.extra_headers]\n\"Epic-Client-ID\" = \"acme-123\"\n";

fn with(extra: &[&str]) -> Vec<String> {
    let mut t = clinical_types();
    t.extend(extra.iter().map(|s| s.to_string()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server() {
    let r = differential("reference", "generic", clinical_types()).await;
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_like() {
    differential_with("epic", "epic", EPIC_HEADER, clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerner_like() {
    differential("cerner", "cerner", clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_like() {
    differential("athena", "athena", clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer() {
    differential("payer", "cms-payer", vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer_answering_only_everything_with_session_ids() {
    differential("payer-everything", "cms-payer", vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer_whose_member_links_the_records() {
    differential("payer-linked", "cms-payer", vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_with_suppressed_data_and_long_ids() {
    differential_with(
        "epic-suppressed",
        "epic",
        EPIC_HEADER,
        with(&["Medication"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextgen_with_other_case_links_and_document_paths() {
    differential("nextgen", "nextgen", clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_with_search_hidden_encounters() {
    differential("athena-records", "athena", clinical_types()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospital_with_documents_elsewhere_and_everything_only_provenance() {
    differential_with(
        "hospital",
        "generic",
        DOCUMENT_HOST,
        with(&[
            "MedicationAdministration",
            "MedicationStatement",
            "ServiceRequest",
        ]),
    )
    .await;
}

/// Every fault of a flaky network against two personalities, compared with the ground truth:
/// absorbed (everything stored, byte for byte) or partial with what is missing named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalities_times_faults() {
    let faults = [
        "server-error-500@0.1",
        "drop-connection@0.1",
        "truncated-body@0.1",
        "invalid-json@0.1",
        "html-error-200@0.1",
        "rate-limit-429@0.1",
        "error-mid-paging",
        "duplicate-entries",
        "outcome-in-bundle",
        "broken-next-link",
        "looping-next-link",
        "error-outcome-in-bundle",
        "cursor-repeat",
    ];
    // the payer (only $everything works) gets the faults that hit its one kind of request
    let payer_faults = [
        "server-error-500@0.1",
        "truncated-body@0.1",
        "error-mid-paging",
        "error-outcome-in-bundle",
    ];
    for (personality, faults) in [
        ("reference", &faults[..]),
        ("payer-everything", &payer_faults[..]),
    ] {
        for &fault in faults {
            let env = start(personality, 2, 40, &[fault]).await;
            let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
            let platform = if personality == "reference" {
                "generic"
            } else {
                "cms-payer"
            };
            let p = profile(platform, "[paging]\nmax_page_size = 15\n");
            let s = syncer(&env, &p, auth, SyncOptions::default());
            let r = s
                .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
                .await
                .unwrap();
            let (missing, mismatched) = compare(&env).await;
            assert!(
                mismatched.is_empty(),
                "{personality} × {fault}: {mismatched:?}"
            );
            if !missing.is_empty() {
                assert_eq!(
                    r.outcome,
                    RunOutcome::Partial,
                    "{personality} × {fault}: not partial, yet missing {missing:#?}"
                );
            }
            eprintln!(
                "{personality:>16} × {fault:<24} {} missing {}",
                r.outcome.as_str(),
                missing.values().map(Vec::len).sum::<usize>()
            );
        }
    }
}
