//! The behaviour both backends must share, run against a real SQLite file and the real local
//! PostgreSQL. Each test is written once and instantiated per backend.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use aqueduct_store::*;
use chrono::Utc;
use common::*;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::TestStore::sqlite().await).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::TestStore::postgres().await).await; })*
        }
    };
}

both_backends!(
    stored_bytes_come_back_identical,
    unchanged_resources_are_not_rewritten,
    changed_resource_keeps_previous_version_in_history,
    tombstone_keeps_bytes_and_a_returning_resource_is_revived,
    duplicate_keys_in_one_batch_keep_the_last_copy,
    invalid_resources_are_stored_and_flagged,
    organizations_cannot_see_each_other,
    ledger_records_runs_requests_and_outcomes,
    checkpoints_are_scoped_by_exact_prefix,
    secrets_round_trip_per_connection,
    auth_events_and_findings_are_listed_newest_first,
    store_from_a_newer_version_is_refused_and_left_intact,
    listing_pages_through_a_type_in_id_order,
    patient_resource_ids_cover_live_resources_of_the_patient,
    inbound_messages_are_stored_once_and_duplicates_reported,
    refresh_requests_queue_until_handled,
    schedule_slots_fire_once,
    identifiers_of_normalized_resources_find_them,
    normalized_rows_replace_per_source_and_feed_the_review_queue,
    code_mappings_are_per_connection,
    run_totals_and_freshness_come_from_ledger_and_resources,
    alerts_are_keyed_and_can_resolve,
    concurrent_writers_of_the_same_new_keys_both_succeed,
    runs_whose_heartbeat_stopped_are_closed_as_failed,
    a_lease_has_one_holder_until_released_or_expired,
    converted_messages_and_their_refreshes_complete_together,
    converted_messages_complete_with_their_resources,
    a_reused_control_id_with_other_content_is_a_new_message_and_a_finding,
    messages_stored_before_the_content_key_match_resends_by_bytes,
    a_patients_record_is_read_in_one_query,
    api_keys_are_bound_to_one_organization_and_can_be_revoked,
    access_events_are_listed_per_organization_newest_first,
    findings_are_acknowledged_once_and_kept,
    identity_rounds_are_kept_per_organization,
    a_person_id_handed_out_twice_fails_the_whole_round,
    decisions_take_pairs_out_of_the_review_queue,
);

async fn stored_bytes_come_back_identical(t: TestStore) {
    let c = conn("acme", "epic");
    // Odd spacing and key order must survive: raw is truth, never re-serialized.
    let body =
        "{ \"resourceType\" : \"Patient\",\n  \"id\":\"p1\", \"name\":[{\"family\":\"Ñúñez\"}] }";
    let s = t
        .store
        .write_resources(&c, &[resource("Patient", "p1", body)])
        .await
        .unwrap();
    assert_eq!(
        s,
        WriteSummary {
            inserted: 1,
            updated: 0,
            unchanged: 0
        }
    );
    let got = t
        .store
        .get_resource(&c, "Patient", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, body.as_bytes());
    assert_eq!(got.content_hash, content_hash(body.as_bytes()));
    assert_eq!(got.version_id.as_deref(), Some("1"));
    assert_eq!(got.last_updated.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(got.patient_id.as_deref(), Some("p1"));
    assert_eq!(got.version_seq, 1);
    assert!(got.deleted_at.is_none());
    assert!(
        t.store
            .get_resource(&c, "Patient", "nope")
            .await
            .unwrap()
            .is_none()
    );
}

async fn unchanged_resources_are_not_rewritten(t: TestStore) {
    let c = conn("acme", "epic");
    let batch: Vec<_> = (0..50)
        .map(|i| observation(&format!("o{i}"), i as f64))
        .collect();
    t.store.write_resources(&c, &batch).await.unwrap();
    let first = t
        .store
        .get_resource(&c, "Observation", "o7")
        .await
        .unwrap()
        .unwrap();
    let s = t.store.write_resources(&c, &batch).await.unwrap();
    assert_eq!(
        s,
        WriteSummary {
            inserted: 0,
            updated: 0,
            unchanged: 50
        }
    );
    let again = t
        .store
        .get_resource(&c, "Observation", "o7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.fetched_at, first.fetched_at,
        "an unchanged resource is not rewritten"
    );
    assert!(
        t.store
            .resource_history(&c, "Observation", "o7")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn changed_resource_keeps_previous_version_in_history(t: TestStore) {
    let c = conn("acme", "epic");
    t.store
        .write_resources(&c, &[observation("o1", 1.0)])
        .await
        .unwrap();
    let mut v2 = observation("o1", 2.0);
    v2.version_id = Some("2".into());
    let s = t.store.write_resources(&c, &[v2.clone()]).await.unwrap();
    assert_eq!(s.updated, 1);
    let cur = t
        .store
        .get_resource(&c, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.bytes, v2.bytes);
    assert_eq!(cur.version_seq, 2);
    let hist = t
        .store
        .resource_history(&c, "Observation", "o1")
        .await
        .unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].bytes, observation("o1", 1.0).bytes);
    assert_eq!(hist[0].version_seq, 1);
}

async fn tombstone_keeps_bytes_and_a_returning_resource_is_revived(t: TestStore) {
    let c = conn("acme", "epic");
    t.store
        .write_resources(&c, &[observation("o1", 1.0), observation("o2", 2.0)])
        .await
        .unwrap();
    let n = t
        .store
        .tombstone(
            &c,
            "Observation",
            &["o1".into(), "missing".into()],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let dead = t
        .store
        .get_resource(&c, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert!(dead.deleted_at.is_some());
    assert_eq!(
        dead.bytes,
        observation("o1", 1.0).bytes,
        "a tombstone keeps the raw bytes"
    );
    let counts = t.store.count_by_type(&c).await.unwrap();
    assert_eq!(
        counts,
        vec![TypeCount {
            resource_type: "Observation".into(),
            live: 1,
            deleted: 1,
            invalid: 0
        }]
    );
    // Tombstoning twice does not count twice.
    assert_eq!(
        t.store
            .tombstone(&c, "Observation", &["o1".into()], Utc::now())
            .await
            .unwrap(),
        0
    );
    let s = t
        .store
        .write_resources(&c, &[observation("o1", 1.0)])
        .await
        .unwrap();
    assert_eq!(s.updated, 1);
    assert!(
        t.store
            .get_resource(&c, "Observation", "o1")
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_none()
    );
}

async fn duplicate_keys_in_one_batch_keep_the_last_copy(t: TestStore) {
    let c = conn("acme", "epic");
    let batch = vec![
        observation("o1", 1.0),
        observation("o2", 5.0),
        observation("o1", 1.0),
        observation("o1", 3.0),
    ];
    let s = t.store.write_resources(&c, &batch).await.unwrap();
    assert_eq!(
        s,
        WriteSummary {
            inserted: 2,
            updated: 1,
            unchanged: 1
        }
    );
    let cur = t
        .store
        .get_resource(&c, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.bytes, observation("o1", 3.0).bytes);
    assert_eq!(
        t.store
            .resource_history(&c, "Observation", "o1")
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn invalid_resources_are_stored_and_flagged(t: TestStore) {
    let c = conn("acme", "epic");
    let mut broken = resource(
        "Observation",
        "bad1",
        "{\"resourceType\":\"Observation\",\"id\":",
    );
    broken.parse_status = ParseStatus::InvalidJson("EOF while parsing at line 1 column 35".into());
    let mut odd = resource("Observation", "odd1", "{\"id\":\"odd1\",\"status\":42}");
    odd.parse_status = ParseStatus::InvalidFhir("missing resourceType".into());
    t.store
        .write_resources(&c, &[broken.clone(), odd])
        .await
        .unwrap();
    let got = t
        .store
        .get_resource(&c, "Observation", "bad1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, broken.bytes);
    assert_eq!(got.parse_status, broken.parse_status);
    let counts = t.store.count_by_type(&c).await.unwrap();
    assert_eq!(counts[0].invalid, 2);
    assert_eq!(counts[0].live, 2);
}

async fn organizations_cannot_see_each_other(t: TestStore) {
    let a = conn("org-a", "epic");
    let b = conn("org-b", "epic");
    t.store
        .write_resources(&a, &[observation("o1", 1.0)])
        .await
        .unwrap();
    t.store
        .put_secret(&a, "refresh_token", b"ciphertext-a")
        .await
        .unwrap();
    t.store
        .save_checkpoint(&a, "patient/p1/Observation", "next")
        .await
        .unwrap();
    assert!(
        t.store
            .get_resource(&b, "Observation", "o1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(t.store.count_by_type(&b).await.unwrap().is_empty());
    assert!(
        t.store
            .get_secret(&b, "refresh_token")
            .await
            .unwrap()
            .is_none()
    );
    assert!(t.store.list_secrets("org-b").await.unwrap().is_empty());
    assert!(
        t.store
            .load_checkpoint(&b, "patient/p1/Observation")
            .await
            .unwrap()
            .is_none()
    );
    // A run of org-a cannot receive ledger rows through org-b's name.
    let run = t.store.begin_run(&a, "full").await.unwrap();
    t.store
        .record_requests(&b, run, &[entry(200, None, 1)])
        .await
        .unwrap();
    assert!(t.store.run_requests(&a, run).await.unwrap().is_empty());
    assert!(t.store.get_run(&b, run).await.unwrap().is_none());
    t.store
        .upsert_connection(&ConnectionRecord {
            organization: "org-a".into(),
            name: "epic".into(),
            base_url: "https://a".into(),
            profile: "epic".into(),
        })
        .await
        .unwrap();
    assert!(t.store.list_connections("org-b").await.unwrap().is_empty());
    assert_eq!(t.store.list_connections("org-a").await.unwrap().len(), 1);
}

fn entry(status: u16, error: Option<&str>, attempt: u32) -> LedgerEntry {
    LedgerEntry {
        at: Utc::now(),
        method: "GET".into(),
        url_template: "Observation?patient={patient}".into(),
        url: "https://ehr.example/fhir/Observation?patient=p1".into(),
        resource_type: Some("Observation".into()),
        patient_id: Some("p1".into()),
        status: Some(status),
        duration_ms: 12.5,
        bytes: 2048,
        resources: if error.is_none() { 10 } else { 0 },
        error_kind: error.map(str::to_string),
        page_complete: error.is_none(),
        attempt,
    }
}

async fn ledger_records_runs_requests_and_outcomes(t: TestStore) {
    let c = conn("acme", "epic");
    t.store
        .upsert_connection(&ConnectionRecord {
            organization: "acme".into(),
            name: "epic".into(),
            base_url: "https://ehr.example/fhir".into(),
            profile: "epic".into(),
        })
        .await
        .unwrap();
    let run = t.store.begin_run(&c, "full").await.unwrap();
    assert_eq!(
        t.store.get_run(&c, run).await.unwrap().unwrap().outcome,
        RunOutcome::Running
    );
    let entries = vec![
        entry(429, Some("http-429"), 1),
        entry(200, None, 2),
        entry(200, None, 1),
    ];
    t.store.record_requests(&c, run, &entries).await.unwrap();
    t.store
        .write_resources(&c, &[observation("o1", 1.0)])
        .await
        .unwrap();
    t.store
        .finish_run(
            &c,
            run,
            RunOutcome::Partial,
            Some("{\"missing\":[\"CarePlan\"]}"),
            None,
        )
        .await
        .unwrap();
    let got = t.store.get_run(&c, run).await.unwrap().unwrap();
    assert_eq!(got.outcome, RunOutcome::Partial);
    assert!(got.finished_at.is_some());
    assert_eq!(got.summary.as_deref(), Some("{\"missing\":[\"CarePlan\"]}"));
    let stored = t.store.run_requests(&c, run).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].status, Some(429));
    assert_eq!(stored[0].error_kind.as_deref(), Some("http-429"));
    assert!(!stored[0].page_complete);
    let stats = t.store.run_request_stats(&c, run).await.unwrap();
    assert_eq!(
        stats,
        RunRequestStats {
            requests: 3,
            errors: 1,
            throttled: 1,
            retries: 1,
            bytes: 6144,
            resources: 20
        }
    );
    let status = t.store.status("acme").await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].last_run.as_ref().unwrap().id, run);
    assert_eq!(status[0].error_count, 1);
    assert_eq!(status[0].types[0].live, 1);
    assert_eq!(
        status[0].base_url.as_deref(),
        Some("https://ehr.example/fhir")
    );
    let run2 = t.store.begin_run(&c, "incremental").await.unwrap();
    let runs = t.store.list_runs(&c, 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run2, run]
    );
}

async fn checkpoints_are_scoped_by_exact_prefix(t: TestStore) {
    let c = conn("acme", "epic");
    t.store
        .save_checkpoint(&c, "patient/p_1/Observation", "url1")
        .await
        .unwrap();
    t.store
        .save_checkpoint(&c, "patient/p_1/Condition", "url2")
        .await
        .unwrap();
    t.store
        .save_checkpoint(&c, "patient/pX1/Condition", "other")
        .await
        .unwrap();
    t.store
        .save_checkpoint(&c, "patient/p_1/Observation", "url3")
        .await
        .unwrap();
    assert_eq!(
        t.store
            .load_checkpoint(&c, "patient/p_1/Observation")
            .await
            .unwrap()
            .as_deref(),
        Some("url3")
    );
    let listed = t.store.list_checkpoints(&c, "patient/p_1/").await.unwrap();
    assert_eq!(
        listed,
        vec![
            ("patient/p_1/Condition".into(), "url2".into()),
            ("patient/p_1/Observation".into(), "url3".into())
        ]
    );
    assert_eq!(
        t.store.clear_checkpoints(&c, "patient/p_1/").await.unwrap(),
        2
    );
    assert_eq!(
        t.store.list_checkpoints(&c, "").await.unwrap().len(),
        1,
        "'_' is not a wildcard"
    );
}

async fn secrets_round_trip_per_connection(t: TestStore) {
    let c1 = conn("acme", "epic");
    let c2 = conn("acme", "payer");
    t.store
        .put_secret(&c1, "refresh_token", &[0, 1, 2, 255])
        .await
        .unwrap();
    t.store
        .put_secret(&c2, "refresh_token", b"other")
        .await
        .unwrap();
    t.store
        .put_secret(&c1, "refresh_token", &[9, 9])
        .await
        .unwrap();
    assert_eq!(
        t.store.get_secret(&c1, "refresh_token").await.unwrap(),
        Some(vec![9, 9])
    );
    assert_eq!(t.store.list_secrets("acme").await.unwrap().len(), 2);
    assert!(t.store.delete_secret(&c1, "refresh_token").await.unwrap());
    assert!(!t.store.delete_secret(&c1, "refresh_token").await.unwrap());
    assert_eq!(
        t.store.get_secret(&c2, "refresh_token").await.unwrap(),
        Some(b"other".to_vec())
    );
}

async fn auth_events_and_findings_are_listed_newest_first(t: TestStore) {
    let c = conn("acme", "epic");
    for (i, outcome) in ["success", "failure"].iter().enumerate() {
        t.store
            .record_auth_event(
                &c,
                &AuthEvent {
                    at: Utc::now(),
                    event: "refresh".into(),
                    outcome: outcome.to_string(),
                    reason: Some(format!("r{i}")),
                },
            )
            .await
            .unwrap();
    }
    let ev = t.store.list_auth_events(&c, 10).await.unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].outcome, "failure");
    t.store
        .record_finding(
            &c,
            &Finding {
                at: Utc::now(),
                run_id: None,
                kind: "scope-narrowed".into(),
                severity: "warning".into(),
                resource_type: Some("Observation".into()),
                detail: "granted fewer scopes".into(),
            },
        )
        .await
        .unwrap();
    let f = t.store.list_findings(&c, 10).await.unwrap();
    assert_eq!(f[0].kind, "scope-narrowed");
    assert_eq!(
        t.store.status("acme").await.unwrap().len(),
        0,
        "status lists registered or synced connections only"
    );
}

async fn store_from_a_newer_version_is_refused_and_left_intact(t: TestStore) {
    let c = conn("acme", "epic");
    t.store
        .write_resources(&c, &[observation("o1", 1.0)])
        .await
        .unwrap();
    assert_eq!(t.store.schema_version().await.unwrap(), SCHEMA_VERSION);
    t.raw_sql("INSERT INTO aqueduct_schema (version, applied_at) VALUES (999, CURRENT_TIMESTAMP)")
        .await;
    let err = t
        .reopen()
        .await
        .err()
        .expect("a newer store must be refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer Aqueduct"), "{err}");
    // Still readable by the handle that was open, untouched.
    let got = t
        .store
        .get_resource(&c, "Observation", "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, observation("o1", 1.0).bytes);
}

async fn listing_pages_through_a_type_in_id_order(t: TestStore) {
    let c = conn("acme", "epic");
    let batch: Vec<_> = (0..25)
        .map(|i| observation(&format!("o{i:02}"), i as f64))
        .collect();
    t.store.write_resources(&c, &batch).await.unwrap();
    t.store
        .tombstone(&c, "Observation", &["o03".into()], Utc::now())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = t
            .store
            .list_resources(&c, "Observation", after.as_deref(), 10, false)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.logical_id.clone());
        seen.extend(page.into_iter().map(|r| r.logical_id));
    }
    assert_eq!(seen.len(), 24);
    assert!(!seen.contains(&"o03".to_string()));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(
        t.store
            .list_resources(&c, "Observation", None, 100, true)
            .await
            .unwrap()
            .len(),
        25
    );
}

async fn patient_resource_ids_cover_live_resources_of_the_patient(t: TestStore) {
    let c = conn("acme", "epic");
    let mut other = observation("o9", 9.0);
    other.patient_id = Some("p2".into());
    t.store
        .write_resources(&c, &[observation("o1", 1.0), observation("o2", 2.0), other])
        .await
        .unwrap();
    t.store
        .tombstone(&c, "Observation", &["o2".into()], Utc::now())
        .await
        .unwrap();
    assert_eq!(
        t.store
            .patient_resource_ids(&c, "p1", "Observation")
            .await
            .unwrap(),
        vec!["o1".to_string()]
    );
}

fn inbound(control: &str) -> InboundMessage {
    inbound_with(control, "ADT^A08", "")
}

/// A message from LAB^HOSP with `control` and a body that differs with `extra`.
fn inbound_with(control: &str, message_type: &str, extra: &str) -> InboundMessage {
    let bytes = format!(
        "MSH|^~\\&|LAB|HOSP|AQ|AQ|20260101||{message_type}|{control}|P|2.5\rPID|1||{extra}\r"
    )
    .into_bytes();
    InboundMessage {
        sender: "LAB^HOSP".into(),
        control_id: control.into(),
        content_hash: content_hash(&bytes),
        connection: "hl7-HOSP".into(),
        message_type: message_type.into(),
        received_at: Utc::now(),
        bytes,
    }
}

async fn a_reused_control_id_with_other_content_is_a_new_message_and_a_finding(t: TestStore) {
    let first = inbound_with("MSG00001", "ADT^A01", "123");
    let other = inbound_with("MSG00001", "ORU^R01", "456");
    let third = inbound_with("MSG00001", "ADT^A08", "789");
    let r = t
        .store
        .store_inbound_messages("acme", &[first.clone(), other.clone(), first.clone()])
        .await
        .unwrap();
    assert!(!r[0].duplicate && r[0].reuses_control_id_of.is_none());
    assert!(
        !r[1].duplicate,
        "same control id, other content: a new message"
    );
    assert_eq!(r[1].reuses_control_id_of, Some(r[0].id));
    assert!(r[2].duplicate && r[2].id == r[0].id, "a true resend");
    // a resend of the second one, later, and a third distinct message
    let r2 = t
        .store
        .store_inbound_messages("acme", &[other.clone(), third.clone()])
        .await
        .unwrap();
    assert!(r2[0].duplicate && r2[0].id == r[1].id);
    assert_eq!(r2[1].reuses_control_id_of, Some(r[1].id));
    let listed = t.store.list_inbound_messages("acme", 0, 10).await.unwrap();
    assert_eq!(listed.len(), 3, "every distinct message is kept");
    assert_eq!(listed[1].bytes, other.bytes);
    assert_eq!(
        listed[1].content_hash.as_deref(),
        Some(other.content_hash.as_str())
    );
    let findings = t
        .store
        .list_findings(&conn("acme", "hl7-HOSP"), 10)
        .await
        .unwrap();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        findings
            .iter()
            .all(|f| f.kind == FINDING_CONTROL_ID_REUSED && f.severity == "warning")
    );
    let newest = &findings[0].detail;
    assert!(newest.contains("MSG00001"), "{newest}");
    assert!(
        newest.contains(&format!("message {}", r2[1].id)),
        "{newest}"
    );
    assert!(newest.contains(&format!("message {}", r[1].id)), "{newest}");
    let counts = t.store.inbound_counts("acme").await.unwrap();
    assert_eq!(
        counts,
        InboundCounts {
            total: 3,
            pending: 3,
            converted: 0,
            unconverted: 0
        }
    );
    t.store
        .complete_inbound(
            "acme",
            &[
                InboundOutcome {
                    id: listed[0].id,
                    error: None,
                    refresh: Vec::new(),
                },
                InboundOutcome {
                    id: listed[1].id,
                    error: Some("ORU without OBR".into()),
                    refresh: Vec::new(),
                },
            ],
        )
        .await
        .unwrap();
    let counts = t.store.inbound_counts("acme").await.unwrap();
    assert_eq!(
        (counts.pending, counts.converted, counts.unconverted),
        (1, 1, 1)
    );
    assert_eq!(t.store.inbound_counts("other").await.unwrap().total, 0);
}

async fn messages_stored_before_the_content_key_match_resends_by_bytes(t: TestStore) {
    let legacy = inbound_with("7", "ADT^A08", "legacy");
    let r = t
        .store
        .store_inbound_messages("acme", std::slice::from_ref(&legacy))
        .await
        .unwrap();
    // what a store of schema 8 left: no hash
    t.raw_sql(&format!(
        "UPDATE inbound_messages SET content_hash = NULL WHERE id = {}",
        r[0].id
    ))
    .await;
    let again = t
        .store
        .store_inbound_messages(
            "acme",
            &[
                InboundMessage {
                    content_hash: "a-hash-computed-another-way".into(),
                    ..legacy.clone()
                },
                inbound_with("7", "ADT^A08", "different"),
            ],
        )
        .await
        .unwrap();
    assert!(again[0].duplicate && again[0].id == r[0].id);
    assert!(!again[1].duplicate);
    assert_eq!(again[1].reuses_control_id_of, Some(r[0].id));
    assert_eq!(t.store.inbound_counts("acme").await.unwrap().total, 2);
}

async fn inbound_messages_are_stored_once_and_duplicates_reported(t: TestStore) {
    let r = t
        .store
        .store_inbound_messages("acme", &[inbound("1"), inbound("2"), inbound("1")])
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|x| x.duplicate).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(r[0].id, r[2].id);
    let again = t
        .store
        .store_inbound_messages("acme", &[inbound("2")])
        .await
        .unwrap();
    assert!(again[0].duplicate);
    // Another organization has its own namespace of control ids.
    assert!(
        !t.store
            .store_inbound_messages("other", &[inbound("1")])
            .await
            .unwrap()[0]
            .duplicate
    );
    let listed = t.store.list_inbound_messages("acme", 0, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].bytes, inbound("1").bytes);
    assert!(listed[0].processed_at.is_none());
    t.store
        .mark_inbound_processed("acme", listed[1].id, Some("no PID segment"))
        .await
        .unwrap();
    let listed = t
        .store
        .list_inbound_messages("acme", listed[0].id, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].process_error.as_deref(), Some("no PID segment"));
    assert!(listed[0].processed_at.is_some());
}

async fn refresh_requests_queue_until_handled(t: TestStore) {
    use std::time::Duration;
    let req = RefreshRequest {
        patient_key: Some("urn:mrn|123".into()),
        connection: None,
        reason: "hl7:ADT^A08".into(),
        source: "mllp://LAB^HOSP/1".into(),
    };
    let a = t.store.enqueue_refresh("acme", &req).await.unwrap();
    let b = t
        .store
        .enqueue_refresh(
            "acme",
            &RefreshRequest {
                connection: Some("epic".into()),
                ..req.clone()
            },
        )
        .await
        .unwrap();
    // the same patient and connection as `a`, raised by a later message: coalesces with it
    let a2 = t
        .store
        .enqueue_refresh(
            "acme",
            &RefreshRequest {
                reason: "hl7:ORU^R01".into(),
                ..req.clone()
            },
        )
        .await
        .unwrap();
    let pending = t.store.list_refresh_requests("acme", 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![a, b, a2]
    );
    assert_eq!(pending[0].1, req);
    let ttl = Duration::from_secs(60);
    // another tenant sees none of it
    assert!(
        t.store
            .claim_refresh("other", "w1", ttl)
            .await
            .unwrap()
            .is_none()
    );
    let c1 = t
        .store
        .claim_refresh("acme", "w1", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c1.ids,
        vec![a, a2],
        "coalesced: same patient, same connection"
    );
    assert_eq!(c1.request, req);
    let c2 = t
        .store
        .claim_refresh("acme", "w2", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.ids, vec![b], "a claimed request is not handed out twice");
    assert!(
        t.store
            .claim_refresh("acme", "w3", ttl)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        t.store
            .renew_refresh_claim("acme", &c1.ids, "w1", ttl)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .renew_refresh_claim("acme", &c1.ids, "w2", ttl)
            .await
            .unwrap()
    );
    let done = RefreshResult {
        outcome: RefreshOutcome::Complete,
        detail: "synced".into(),
        run_ids: vec![7, 8],
    };
    // only the holder closes; the wrong tenant or holder closes nothing
    assert!(
        !t.store
            .finish_refresh("acme", &c1.ids, "w2", &done)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .finish_refresh("other", &c1.ids, "w1", &done)
            .await
            .unwrap()
    );
    assert!(
        t.store
            .finish_refresh("acme", &c1.ids, "w1", &done)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .finish_refresh("acme", &c1.ids, "w1", &done)
            .await
            .unwrap(),
        "closed once"
    );
    // w2 gives its request back after an error: not claimable until the retry time
    t.store
        .release_refresh_claim("acme", &c2.ids, "w2", Duration::from_millis(300), true)
        .await
        .unwrap();
    assert!(
        t.store
            .claim_refresh("acme", "w3", ttl)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c3 = t
        .store
        .claim_refresh("acme", "w3", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c3.ids.clone(), c3.attempts), (vec![b], 1));
    // a holder that dies: its lease expires and another holder reclaims the work
    t.store
        .release_refresh_claim("acme", &c3.ids, "w3", Duration::ZERO, false)
        .await
        .unwrap();
    let dying = t
        .store
        .claim_refresh("acme", "dead", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.store
            .claim_refresh("acme", "w4", ttl)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c4 = t
        .store
        .claim_refresh("acme", "w4", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c4.ids, dying.ids);
    assert!(
        !t.store
            .finish_refresh("acme", &dying.ids, "dead", &done)
            .await
            .unwrap(),
        "the expired holder can no longer close it"
    );
    let pending = t.store.list_refresh_requests("acme", 10).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.0).collect::<Vec<_>>(), vec![b]);
    let recent = t.store.recent_refreshes("acme", 10).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a2, b, a]
    );
    assert_eq!(recent[0].state, "done");
    assert_eq!(recent[0].coalesced_into, Some(a));
    assert_eq!(recent[2].outcome, Some(RefreshOutcome::Complete));
    assert_eq!(recent[2].run_ids, vec![7, 8]);
    assert_eq!(recent[1].state, "claimed");
    assert_eq!(recent[1].claimed_by.as_deref(), Some("w4"));
    assert!(
        t.store
            .recent_refreshes("other", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // one request by id, as the API polls it: the same record, and none for another organization
    assert_eq!(
        t.store.get_refresh("acme", a).await.unwrap().as_ref(),
        recent.iter().find(|r| r.id == a)
    );
    assert_eq!(t.store.get_refresh("other", a).await.unwrap(), None);
    assert_eq!(t.store.get_refresh("acme", a2 + 1000).await.unwrap(), None);
    // a whole-connection request (a schedule) has no patient key
    let whole = RefreshRequest {
        patient_key: None,
        connection: Some("epic".into()),
        reason: "schedule:every 6h".into(),
        source: "schedule".into(),
    };
    t.store.enqueue_refresh("acme", &whole).await.unwrap();
    let c5 = t
        .store
        .claim_refresh("acme", "w5", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c5.request, whole);
}

async fn schedule_slots_fire_once(t: TestStore) {
    let c = conn("acme", "epic");
    assert_eq!(t.store.schedule_last_due(&c).await.unwrap(), None);
    let slot1 = chrono::DateTime::parse_from_rfc3339("2026-12-01T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let slot2 = slot1 + chrono::Duration::hours(6);
    let req = RefreshRequest {
        patient_key: None,
        connection: Some("epic".into()),
        reason: "schedule:every 6h".into(),
        source: "schedule".into(),
    };
    let first = t.store.fire_schedule(&c, None, slot1, &req).await.unwrap();
    assert!(first.is_some());
    assert_eq!(
        t.store.fire_schedule(&c, None, slot1, &req).await.unwrap(),
        None,
        "a second process racing for the first slot loses"
    );
    assert_eq!(t.store.schedule_last_due(&c).await.unwrap(), Some(slot1));
    assert!(
        t.store
            .fire_schedule(&c, Some(slot1), slot2, &req)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        t.store
            .fire_schedule(&c, Some(slot1), slot2, &req)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(t.store.schedule_last_due(&c).await.unwrap(), Some(slot2));
    // each slot fired queued exactly one whole-connection request
    let pending = t.store.list_refresh_requests("acme", 10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].0, first.unwrap());
    assert!(pending.iter().all(|p| p.1 == req));
    assert_eq!(
        t.store
            .schedule_last_due(&conn("other", "epic"))
            .await
            .unwrap(),
        None
    );
}

async fn identifiers_of_normalized_resources_find_them(t: TestStore) {
    let (epic, payer) = (conn("acme", "epic"), conn("acme", "payer"));
    let source = |id: &str, idents: Vec<(&str, &str)>| NormalizedSource {
        resource_type: "Patient".into(),
        logical_id: id.into(),
        content_hash: "h".into(),
        records: Vec::new(),
        identifiers: idents
            .into_iter()
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .collect(),
    };
    t.store
        .write_normalized(
            &epic,
            &[source("e1", vec![("urn:mrn", "42"), ("urn:ssn", "9")])],
            "r1",
        )
        .await
        .unwrap();
    t.store
        .write_normalized(&payer, &[source("m7", vec![("urn:mrn", "42")])], "r1")
        .await
        .unwrap();
    t.store
        .write_normalized(
            &conn("other", "epic"),
            &[source("x", vec![("urn:mrn", "42")])],
            "r1",
        )
        .await
        .unwrap();
    let found = t
        .store
        .find_by_identifier("acme", "Patient", "urn:mrn", "42")
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![
            IdentifiedResource {
                connection: "epic".into(),
                logical_id: "e1".into()
            },
            IdentifiedResource {
                connection: "payer".into(),
                logical_id: "m7".into()
            },
        ]
    );
    // re-derived without the identifier: no longer found by it
    t.store
        .write_normalized(&epic, &[source("e1", vec![("urn:ssn", "9")])], "r2")
        .await
        .unwrap();
    let found = t
        .store
        .find_by_identifier("acme", "Patient", "urn:mrn", "42")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].connection, "payer");
    assert!(
        t.store
            .find_by_identifier("acme", "Observation", "urn:ssn", "9")
            .await
            .unwrap()
            .is_empty()
    );
}

fn row(
    ordinal: u32,
    kind: &str,
    resolution: &str,
    code: Option<&str>,
    effective: &str,
) -> NormalizedRecord {
    NormalizedRecord {
        ordinal,
        kind: kind.into(),
        patient_id: Some("p1".into()),
        effective: Some(effective.into()),
        code_system: code.map(|_| "http://loinc.org".to_string()),
        code: code.map(str::to_string),
        display: None,
        resolution: resolution.into(),
        source_system: Some("urn:local".into()),
        source_code: Some("GLU-LOCAL".into()),
        source_text: Some("Glucose".into()),
        data: "{\"value\":5.4}".into(),
    }
}

async fn normalized_rows_replace_per_source_and_feed_the_review_queue(t: TestStore) {
    let c = conn("acme", "epic");
    let bp = NormalizedSource {
        identifiers: Vec::new(),
        resource_type: "Observation".into(),
        logical_id: "bp1".into(),
        content_hash: "h1".into(),
        records: vec![
            row(
                0,
                "observation",
                "standard",
                Some("8480-6"),
                "2026-01-02T00:00:00Z",
            ),
            row(
                1,
                "observation",
                "standard",
                Some("8462-4"),
                "2026-01-02T00:00:00Z",
            ),
        ],
    };
    let lab = NormalizedSource {
        identifiers: Vec::new(),
        resource_type: "Observation".into(),
        logical_id: "lab1".into(),
        content_hash: "h2".into(),
        records: vec![row(
            0,
            "observation",
            "unmapped",
            None,
            "2026-01-01T00:00:00Z",
        )],
    };
    t.store
        .write_normalized(&c, &[bp.clone(), lab.clone()], "rules-1")
        .await
        .unwrap();
    let rows = t
        .store
        .list_normalized(&c, "observation", Some("p1"), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].logical_id, "lab1", "ordered by effective time");
    assert_eq!(rows[1].record.code.as_deref(), Some("8480-6"));
    assert_eq!(rows[1].rules_version, "rules-1");
    // the rows of given sources, by source then ordinal
    let of = t
        .store
        .normalized_of(&c, "Observation", &["bp1".into(), "nope".into()])
        .await
        .unwrap();
    let got: Vec<_> = of
        .iter()
        .map(|r| {
            (
                r.logical_id.as_str(),
                r.record.ordinal,
                r.content_hash.as_str(),
            )
        })
        .collect();
    assert_eq!(got, vec![("bp1", 0, "h1"), ("bp1", 1, "h1")]);
    assert!(
        t.store
            .normalized_of(&conn("other", "epic"), "Observation", &["bp1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let queue = t.store.unmapped_codes("acme", None, 10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].source_code.as_deref(), Some("GLU-LOCAL"));
    assert_eq!(queue[0].count, 1);
    // Re-normalizing a source replaces its rows: the panel now gives one row, the lab is mapped.
    let bp2 = NormalizedSource {
        records: vec![row(
            0,
            "observation",
            "standard",
            Some("85354-9"),
            "2026-01-02T00:00:00Z",
        )],
        ..bp
    };
    let lab2 = NormalizedSource {
        records: vec![row(
            0,
            "observation",
            "mapped",
            Some("2345-7"),
            "2026-01-01T00:00:00Z",
        )],
        ..lab
    };
    t.store
        .write_normalized(&c, &[bp2, lab2], "rules-2")
        .await
        .unwrap();
    let rows = t
        .store
        .list_normalized(&c, "observation", None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.rules_version == "rules-2"));
    // stamps say what each source was derived from; unknown ids are simply absent
    let ids: Vec<String> = ["bp1", "lab1", "nope"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let stamps = t
        .store
        .normalized_stamps(&c, "Observation", &ids)
        .await
        .unwrap();
    assert_eq!(stamps.len(), 2);
    assert_eq!(stamps["lab1"].content_hash, "h2");
    assert_eq!(stamps["lab1"].rules_version, "rules-2");
    assert_eq!(stamps["lab1"].patient_id.as_deref(), Some("p1"));
    assert!(
        t.store
            .normalized_stamps(&c, "Condition", &ids)
            .await
            .unwrap()
            .is_empty()
    );
    let many: Vec<String> = (0..600).map(|i| format!("id{i}")).chain(ids).collect();
    assert_eq!(
        t.store
            .normalized_stamps(&c, "Observation", &many)
            .await
            .unwrap()
            .len(),
        2,
        "lists longer than one chunk"
    );
    assert!(
        t.store
            .unmapped_codes("acme", Some("epic"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        t.store
            .list_normalized(&conn("other", "epic"), "observation", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn code_mappings_are_per_connection(t: TestStore) {
    let a = conn("acme", "epic");
    let m = CodeMapping {
        source_system: "urn:local".into(),
        source_code: "GLU".into(),
        target_system: "http://loinc.org".into(),
        target_code: "2345-7".into(),
        target_display: Some("Glucose".into()),
    };
    t.store.put_code_mapping(&a, &m).await.unwrap();
    t.store
        .put_code_mapping(
            &a,
            &CodeMapping {
                target_code: "2339-0".into(),
                ..m.clone()
            },
        )
        .await
        .unwrap();
    let got = t.store.list_code_mappings(&a).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target_code, "2339-0");
    assert!(
        t.store
            .list_code_mappings(&conn("acme", "payer"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn run_totals_and_freshness_come_from_ledger_and_resources(t: TestStore) {
    let c = conn("acme", "epic");
    let run = t.store.begin_run(&c, "full").await.unwrap();
    let mut cond = entry(200, None, 1);
    cond.resource_type = Some("Condition".into());
    cond.patient_id = Some("p2".into());
    t.store
        .record_requests(
            &c,
            run,
            &[entry(200, None, 1), entry(500, Some("http-500"), 1), cond],
        )
        .await
        .unwrap();
    let totals = t.store.run_type_totals(&c, run).await.unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(
        totals[1],
        RunTypeTotals {
            resource_type: "Observation".into(),
            requests: 2,
            resources: 10,
            errors: 1,
            incomplete_pages: 1
        }
    );
    let per_patient = t.store.run_patient_totals(&c, run).await.unwrap();
    assert_eq!(
        per_patient,
        vec![("p1".to_string(), 10), ("p2".to_string(), 10)]
    );
    let since = t
        .store
        .requests_since("acme", Utc::now() - chrono::Duration::minutes(5), 100)
        .await
        .unwrap();
    assert_eq!(since.len(), 3);
    assert_eq!(since[0].0, "epic");
    assert!(
        t.store
            .requests_since("other", Utc::now() - chrono::Duration::minutes(5), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let mut newer = observation("o2", 2.0);
    newer.last_updated = Some("2026-05-01T00:00:00Z".into());
    t.store
        .write_resources(&c, &[observation("o1", 1.0), newer])
        .await
        .unwrap();
    let f = t.store.freshness(&c).await.unwrap();
    assert_eq!(f[0].resource_type, "Observation");
    assert_eq!(
        f[0].newest_last_updated.as_deref(),
        Some("2026-05-01T00:00:00Z")
    );
    assert!(f[0].newest_fetched_at.is_some());
}

async fn alerts_are_keyed_and_can_resolve(t: TestStore) {
    let now = Utc::now();
    let a = Alert {
        connection: "epic".into(),
        rule: "error-rate".into(),
        subject: "".into(),
        state: "firing".into(),
        severity: "critical".into(),
        detail: "12% of 200 requests failed in 15 min".into(),
        first_seen: now,
        last_seen: now,
        resolved_at: None,
        notified_state: Some("firing".into()),
    };
    t.store.upsert_alert("acme", &a).await.unwrap();
    t.store
        .upsert_alert(
            "acme",
            &Alert {
                rule: "p95-latency".into(),
                ..a.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.store.list_alerts("acme", true).await.unwrap().len(), 2);
    t.store
        .upsert_alert(
            "acme",
            &Alert {
                state: "resolved".into(),
                resolved_at: Some(now),
                ..a.clone()
            },
        )
        .await
        .unwrap();
    let firing = t.store.list_alerts("acme", true).await.unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].rule, "p95-latency");
    let all = t.store.list_alerts("acme", false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .any(|x| x.state == "resolved" && x.resolved_at.is_some())
    );
    assert!(
        t.store
            .list_alerts("other", false)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_writers_of_the_same_new_keys_both_succeed(t: TestStore) {
    // Two workers fetching overlapping data: both see the keys as new, one loses the race.
    let c = conn("acme", "epic");
    for round in 0..5 {
        let batch: Vec<_> = (0..200)
            .map(|i| observation(&format!("r{round}-{i}"), i as f64))
            .collect();
        let (a, b) = tokio::join!(
            t.store.write_resources(&c, &batch),
            t.store.write_resources(&c, &batch)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.inserted + b.inserted, 200, "{a:?} {b:?}");
        assert_eq!(a.unchanged + b.unchanged, 200, "{a:?} {b:?}");
    }
    let counts = t.store.count_by_type(&c).await.unwrap();
    assert_eq!(counts[0].live, 1000);
    assert!(
        t.store
            .resource_history(&c, "Observation", "r0-1")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn runs_whose_heartbeat_stopped_are_closed_as_failed(t: TestStore) {
    let c = conn("acme", "epic");
    let other = conn("acme", "payer");
    let dead = t.store.begin_run(&c, "full").await.unwrap();
    let finished = t.store.begin_run(&c, "full").await.unwrap();
    t.store
        .finish_run(&c, finished, RunOutcome::Complete, None, None)
        .await
        .unwrap();
    let elsewhere = t.store.begin_run(&other, "full").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let alive = t.store.begin_run(&c, "full").await.unwrap();
    // a heartbeat after the cutoff keeps an older run alive
    let beating = t.store.begin_run(&c, "incremental").await.unwrap();
    t.store.heartbeat_run(&c, beating).await.unwrap();
    let b = t.store.get_run(&c, beating).await.unwrap().unwrap();
    let beat = b.heartbeat_at.expect("heartbeat recorded");
    assert!(beat >= b.started_at);
    assert!(b.silent_for(chrono::Utc::now()).unwrap() < chrono::Duration::seconds(5));
    let d = t.store.get_run(&c, dead).await.unwrap().unwrap();
    assert_eq!(d.heartbeat_at, None);
    assert!(d.silent_for(chrono::Utc::now()).unwrap() > chrono::Duration::milliseconds(30));
    let closed = t
        .store
        .close_stale_runs(&c, cutoff, "interrupted: no heartbeat")
        .await
        .unwrap();
    assert_eq!(closed, vec![dead]);
    let got = t.store.get_run(&c, dead).await.unwrap().unwrap();
    assert_eq!(got.outcome, RunOutcome::Failed);
    assert!(got.finished_at.is_some());
    assert_eq!(got.error.as_deref(), Some("interrupted: no heartbeat"));
    assert_eq!(
        got.silent_for(chrono::Utc::now()),
        None,
        "finished runs are not silent"
    );
    for (cr, id, outcome) in [
        (&c, finished, RunOutcome::Complete),
        (&c, alive, RunOutcome::Running),
        (&c, beating, RunOutcome::Running),
        (&other, elsewhere, RunOutcome::Running),
    ] {
        assert_eq!(
            t.store.get_run(cr, id).await.unwrap().unwrap().outcome,
            outcome
        );
    }
    // a heartbeat never revives a finished run
    t.store.heartbeat_run(&c, dead).await.unwrap();
    assert_eq!(
        t.store.get_run(&c, dead).await.unwrap().unwrap().outcome,
        RunOutcome::Failed
    );
    // closing again finds nothing more
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let closed = t.store.close_stale_runs(&c, later, "x").await.unwrap();
    assert_eq!(closed, vec![alive, beating]);
    assert!(
        t.store
            .close_stale_runs(&c, later, "x")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_lease_has_one_holder_until_released_or_expired(t: TestStore) {
    let c = conn("acme", "epic");
    let long = std::time::Duration::from_secs(60);
    let name = "token-refresh";
    assert!(
        t.store
            .acquire_lease(&c, name, "proc-a", long)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .acquire_lease(&c, name, "proc-b", long)
            .await
            .unwrap()
    );
    // the holder renews; other names and connections are independent
    assert!(
        t.store
            .acquire_lease(&c, name, "proc-a", long)
            .await
            .unwrap()
    );
    assert!(
        t.store
            .acquire_lease(&c, "other", "proc-b", long)
            .await
            .unwrap()
    );
    assert!(
        t.store
            .acquire_lease(&conn("acme", "payer"), name, "proc-b", long)
            .await
            .unwrap()
    );
    // releasing someone else's lease does nothing; the holder's release frees it
    t.store.release_lease(&c, name, "proc-b").await.unwrap();
    assert!(
        !t.store
            .acquire_lease(&c, name, "proc-b", long)
            .await
            .unwrap()
    );
    t.store.release_lease(&c, name, "proc-a").await.unwrap();
    assert!(
        t.store
            .acquire_lease(&c, name, "proc-b", long)
            .await
            .unwrap()
    );
    // a holder that died stops blocking others once its lease lapses
    let short = std::time::Duration::from_millis(200);
    assert!(
        t.store
            .acquire_lease(&c, "short", "dead", short)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .acquire_lease(&c, "short", "proc-b", long)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        t.store
            .acquire_lease(&c, "short", "proc-b", long)
            .await
            .unwrap()
    );
    // contended: of many concurrent takers exactly one wins
    let takers = (0..8).map(|i| {
        let store = t.store.clone();
        let c = c.clone();
        tokio::spawn(async move {
            store
                .acquire_lease(&c, "race", &format!("p{i}"), long)
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for h in takers {
        won += usize::from(h.await.unwrap());
    }
    assert_eq!(won, 1);
}

async fn converted_messages_and_their_refreshes_complete_together(t: TestStore) {
    let stored = t
        .store
        .store_inbound_messages("acme", &[inbound("10"), inbound("11"), inbound("12")])
        .await
        .unwrap();
    let req = |key: &str| RefreshRequest {
        patient_key: Some(key.into()),
        connection: Some("epic".into()),
        reason: "hl7:ADT^A08".into(),
        source: "mllp://LAB^HOSP/10".into(),
    };
    let outcomes = vec![
        InboundOutcome {
            id: stored[0].id,
            error: None,
            refresh: vec![req("urn:mrn|1"), req("urn:mrn|2")],
        },
        InboundOutcome {
            id: stored[1].id,
            error: Some("no PID segment".into()),
            refresh: Vec::new(),
        },
        InboundOutcome {
            id: stored[2].id,
            error: None,
            refresh: vec![RefreshRequest {
                connection: None,
                ..req("urn:mrn|3")
            }],
        },
    ];
    t.store.complete_inbound("acme", &outcomes).await.unwrap();
    t.store.complete_inbound("acme", &[]).await.unwrap();
    // converted again (a restart before the queue drained): nothing is queued twice
    t.store.complete_inbound("acme", &outcomes).await.unwrap();
    let pending = t.store.list_refresh_requests("acme", 10).await.unwrap();
    let keys: Vec<&str> = pending
        .iter()
        .filter_map(|p| p.1.patient_key.as_deref())
        .collect();
    assert_eq!(
        keys,
        vec!["urn:mrn|1", "urn:mrn|2", "urn:mrn|3"],
        "in conversion order"
    );
    assert_eq!(pending[2].1.connection, None);
    let listed = t.store.list_inbound_messages("acme", 0, 10).await.unwrap();
    assert!(listed.iter().all(|m| m.processed_at.is_some()));
    assert_eq!(listed[1].process_error.as_deref(), Some("no PID segment"));
    assert_eq!(listed[0].process_error, None);
    // another tenant's ids are not touched
    let theirs = t
        .store
        .store_inbound_messages("other", &[inbound("10")])
        .await
        .unwrap();
    t.store
        .complete_inbound(
            "acme",
            &[InboundOutcome {
                id: theirs[0].id,
                error: Some("x".into()),
                refresh: Vec::new(),
            }],
        )
        .await
        .unwrap();
    assert!(
        t.store.list_inbound_messages("other", 0, 10).await.unwrap()[0]
            .processed_at
            .is_none()
    );
}

async fn converted_messages_complete_with_their_resources(t: TestStore) {
    let stored = t
        .store
        .store_inbound_messages("acme", &[inbound("20"), inbound("21"), inbound("22")])
        .await
        .unwrap();
    let req = |key: &str| RefreshRequest {
        patient_key: Some(key.into()),
        connection: None,
        reason: "hl7:ORU^R01".into(),
        source: "mllp://LAB^HOSP/20".into(),
    };
    let conversion = |id: i64, connection: &str, resources: Vec<RawResource>| InboundConversion {
        outcome: InboundOutcome {
            id,
            error: None,
            refresh: Vec::new(),
        },
        connection: connection.into(),
        resources,
    };
    let mut first = conversion(
        stored[0].id,
        "hl7-HOSP",
        vec![observation("o1", 1.0), observation("o2", 2.0)],
    );
    first.outcome.refresh = vec![req("urn:mrn|1")];
    let mut failed = conversion(stored[1].id, "hl7-HOSP", Vec::new());
    failed.outcome.error = Some("no PID segment".into());
    // a later message of the same batch changes o1 again: both versions are kept, in order
    let later = conversion(stored[2].id, "hl7-HOSP", vec![observation("o1", 1.5)]);
    // the same message once more in the batch: its first entry completed it, this one is
    // left alone (nothing written under hl7-CLINIC, nothing queued)
    let mut twice = conversion(stored[2].id, "hl7-CLINIC", vec![observation("o9", 9.0)]);
    twice.outcome.refresh = vec![req("urn:mrn|2")];
    let batch = vec![first, failed, later, twice];

    let s = t.store.complete_conversions("acme", &batch).await.unwrap();
    assert_eq!((s.inserted, s.updated, s.unchanged), (2, 1, 0), "{s:?}");
    let hosp = conn("acme", "hl7-HOSP");
    let clinic = conn("acme", "hl7-CLINIC");
    let o1 = t
        .store
        .get_resource(&hosp, "Observation", "o1")
        .await
        .unwrap();
    assert_eq!(o1.unwrap().bytes, observation("o1", 1.5).bytes);
    let history = t
        .store
        .resource_history(&hosp, "Observation", "o1")
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].bytes, observation("o1", 1.0).bytes);
    let o9 = t
        .store
        .get_resource(&clinic, "Observation", "o9")
        .await
        .unwrap();
    assert!(o9.is_none());
    let listed = t.store.list_inbound_messages("acme", 0, 10).await.unwrap();
    assert!(listed.iter().all(|m| m.processed_at.is_some()));
    assert_eq!(listed[1].process_error.as_deref(), Some("no PID segment"));
    assert_eq!(listed[2].process_error, None);
    let keys = |p: Vec<(i64, RefreshRequest, chrono::DateTime<Utc>)>| -> Vec<String> {
        p.into_iter().filter_map(|p| p.1.patient_key).collect()
    };
    assert_eq!(
        keys(t.store.list_refresh_requests("acme", 10).await.unwrap()),
        vec!["urn:mrn|1"]
    );

    // converted again (a restart before the queue drained): nothing written or queued twice
    let s = t.store.complete_conversions("acme", &batch).await.unwrap();
    assert_eq!(s, WriteSummary::default());
    let history = t
        .store
        .resource_history(&hosp, "Observation", "o1")
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        t.store
            .list_refresh_requests("acme", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // another organization's message is not touched, nor are resources written for it
    let theirs = t
        .store
        .store_inbound_messages("other", &[inbound("30")])
        .await
        .unwrap();
    let foreign = conversion(theirs[0].id, "hl7-HOSP", vec![observation("o7", 7.0)]);
    t.store
        .complete_conversions("acme", &[foreign])
        .await
        .unwrap();
    let other = t.store.list_inbound_messages("other", 0, 10).await.unwrap();
    assert!(other[0].processed_at.is_none());
    let o7 = t
        .store
        .get_resource(&hosp, "Observation", "o7")
        .await
        .unwrap();
    assert!(o7.is_none());
    let none = t.store.complete_conversions("acme", &[]).await.unwrap();
    assert_eq!(none, WriteSummary::default());
}

async fn a_patients_record_is_read_in_one_query(t: TestStore) {
    let c = conn("acme", "epic");
    let mut other = observation("o9", 9.0);
    other.patient_id = Some("p2".into());
    let mut patient = resource("Patient", "p1", r#"{"resourceType":"Patient","id":"p1"}"#);
    patient.patient_id = Some("p1".into());
    t.store
        .write_resources(
            &c,
            &[
                observation("o2", 2.0),
                observation("o1", 1.0),
                other,
                patient,
            ],
        )
        .await
        .unwrap();
    t.store
        .tombstone(&c, "Observation", &["o2".into()], Utc::now())
        .await
        .unwrap();
    let all = t
        .store
        .list_patient_resources(&c, "p1", None)
        .await
        .unwrap();
    let keys: Vec<_> = all
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.logical_id))
        .collect();
    assert_eq!(keys, vec!["Observation/o1", "Patient/p1"]);
    assert_eq!(
        all[1].bytes,
        br#"{"resourceType":"Patient","id":"p1"}"#.to_vec()
    );
    let obs = t
        .store
        .list_patient_resources(&c, "p1", Some("Observation"))
        .await
        .unwrap();
    assert_eq!(obs.len(), 1);
    // paged: in id order, with the total
    let mut batch: Vec<_> = (0..7)
        .map(|i| observation(&format!("q{i}"), i as f64))
        .collect();
    batch.push(observation("o2", 2.0));
    t.store.write_resources(&c, &batch).await.unwrap();
    let (first, total) = t
        .store
        .patient_resources_page(&c, "p1", "Observation", None, 3)
        .await
        .unwrap();
    assert_eq!(total, 9);
    let ids: Vec<_> = first.iter().map(|r| r.logical_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["o1", "o2", "q0"],
        "o2 came back to life with its new copy"
    );
    let (rest, _) = t
        .store
        .patient_resources_page(&c, "p1", "Observation", Some("q0"), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 6);
    // the page with its normalized rows in one trip: the same page, and the rows of exactly
    // its resources
    t.store
        .write_normalized(
            &c,
            &[
                NormalizedSource {
                    identifiers: Vec::new(),
                    resource_type: "Observation".into(),
                    logical_id: "o1".into(),
                    content_hash: "h-o1".into(),
                    records: vec![row(
                        0,
                        "observation",
                        "standard",
                        Some("8480-6"),
                        "2026-01-02T00:00:00Z",
                    )],
                },
                NormalizedSource {
                    identifiers: Vec::new(),
                    resource_type: "Observation".into(),
                    logical_id: "q5".into(),
                    content_hash: "h-q5".into(),
                    records: vec![row(
                        0,
                        "observation",
                        "standard",
                        Some("8462-4"),
                        "2026-01-02T00:00:00Z",
                    )],
                },
            ],
            "rules-1",
        )
        .await
        .unwrap();
    let (page, total, rows) = t
        .store
        .patient_page_with_normalized(&c, "p1", "Observation", None, 3)
        .await
        .unwrap();
    assert_eq!((page, total), (first, 9));
    assert_eq!(
        rows.iter()
            .map(|r| r.logical_id.as_str())
            .collect::<Vec<_>>(),
        vec!["o1"]
    );
    let (_, _, none) = t
        .store
        .patient_page_with_normalized(&conn("other", "epic"), "p1", "Observation", None, 3)
        .await
        .unwrap();
    assert!(none.is_empty());
    // another organization's connection of the same name sees nothing
    assert!(
        t.store
            .list_patient_resources(&conn("other", "epic"), "p1", None)
            .await
            .unwrap()
            .is_empty()
    );
}

fn api_key(id: &str, org: &str, scope: ApiScope, at: chrono::DateTime<Utc>) -> ApiKey {
    ApiKey {
        id: id.into(),
        organization: org.into(),
        scope,
        label: Some(format!("{id} label")),
        secret_hash: content_hash(id.as_bytes()),
        created_at: at,
        revoked_at: None,
    }
}

async fn api_keys_are_bound_to_one_organization_and_can_be_revoked(t: TestStore) {
    let t0 = Utc::now() - chrono::Duration::seconds(10);
    let a = api_key("k1", "acme", ApiScope::Read, t0);
    let b = api_key(
        "k2",
        "acme",
        ApiScope::Admin,
        t0 + chrono::Duration::seconds(1),
    );
    let other = api_key("k3", "globex", ApiScope::Write, t0);
    for k in [&a, &b, &other] {
        t.store.create_api_key(k).await.unwrap();
    }
    // an id is never overwritten
    assert!(
        t.store
            .create_api_key(&api_key("k1", "globex", ApiScope::Admin, t0))
            .await
            .is_err()
    );
    let got = t.store.get_api_key("k1").await.unwrap().unwrap();
    assert_eq!(got.organization, "acme");
    assert_eq!(got.scope, ApiScope::Read);
    assert_eq!(got.secret_hash, a.secret_hash);
    let ids: Vec<_> = t
        .store
        .list_api_keys("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec!["k2", "k1"], "newest first, own organization only");
    // another organization cannot revoke it
    assert!(
        !t.store
            .revoke_api_key("globex", "k1", Utc::now())
            .await
            .unwrap()
    );
    assert!(
        t.store
            .revoke_api_key("acme", "k1", Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .revoke_api_key("acme", "k1", Utc::now())
            .await
            .unwrap(),
        "once"
    );
    assert!(
        t.store
            .get_api_key("k1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(t.store.get_api_key("nope").await.unwrap().is_none());
}

async fn access_events_are_listed_per_organization_newest_first(t: TestStore) {
    let event = |org: &str, patient: Option<&str>, n: u64| AccessEvent {
        at: Utc::now(),
        organization: org.into(),
        principal: "api-key:k1".into(),
        action: "search".into(),
        route: "/fhir/{org}/{type}".into(),
        patient: patient.map(str::to_string),
        resource_types: vec!["Observation".into(), "Patient".into()],
        count: n,
        client_addr: Some("127.0.0.1".into()),
    };
    t.store
        .record_access(&[
            event("acme", Some("epic.p1"), 1),
            event("acme", Some("epic.p2"), 2),
            event("globex", Some("epic.p1"), 3),
            event("acme", None, 4),
        ])
        .await
        .unwrap();
    t.store.record_access(&[]).await.unwrap();
    let all = t.store.list_access("acme", None, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.event.count).collect::<Vec<_>>(),
        vec![4, 2, 1]
    );
    assert_eq!(all[2].event.resource_types, vec!["Observation", "Patient"]);
    assert_eq!(all[2].event.client_addr.as_deref(), Some("127.0.0.1"));
    let p1 = t
        .store
        .list_access("acme", Some("epic.p1"), None, 10)
        .await
        .unwrap();
    assert_eq!(p1.len(), 1);
    assert_eq!(p1[0].event.count, 1);
    let older = t
        .store
        .list_access("acme", None, Some(all[0].id), 1)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(
        older[0].event.count, 2,
        "paging goes on from before the given id"
    );
}

async fn findings_are_acknowledged_once_and_kept(t: TestStore) {
    let c = conn("acme", "epic");
    let finding = |kind: &str| Finding {
        at: Utc::now(),
        run_id: Some(3),
        kind: kind.into(),
        severity: "warning".into(),
        resource_type: None,
        detail: format!("{kind} seen"),
    };
    for k in ["empty-type", "scope-narrowed"] {
        t.store.record_finding(&c, &finding(k)).await.unwrap();
    }
    // a run makes the connection show in status, with its open findings counted
    t.store.begin_run(&c, "full").await.unwrap();
    let open = |t: &TestStore| {
        let s = t.store.clone();
        async move { s.status("acme").await.unwrap()[0].findings }
    };
    assert_eq!(open(&t).await, 2);
    let all = t.store.list_finding_records(&c, None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].finding.kind, "scope-narrowed", "newest first");
    assert!(all.iter().all(|f| f.acknowledged.is_none()));
    let id = all[1].id;

    let first = Acknowledgement {
        by: "api-key:k1".into(),
        at: Utc::now(),
        note: Some("the source has no such data".into()),
    };
    let acked = t
        .store
        .acknowledge_finding(&c, id, &first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        acked.finding, all[1].finding,
        "the finding itself is unchanged"
    );
    let got = acked.acknowledged.unwrap();
    assert_eq!(
        (got.by.as_str(), got.note.as_deref()),
        ("api-key:k1", Some("the source has no such data"))
    );
    // a second acknowledgement does not overwrite the first
    let again = Acknowledgement {
        by: "api-key:k2".into(),
        at: Utc::now(),
        note: None,
    };
    let kept = t
        .store
        .acknowledge_finding(&c, id, &again)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.acknowledged.unwrap().by, "api-key:k1");
    // another connection's or organization's id is not found, and changes nothing
    for other in [conn("acme", "cerner"), conn("other", "epic")] {
        assert_eq!(
            t.store
                .acknowledge_finding(&other, id, &again)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        t.store
            .acknowledge_finding(&c, id + 1000, &again)
            .await
            .unwrap(),
        None
    );

    let open_ones = t
        .store
        .list_finding_records(&c, Some(false), 10)
        .await
        .unwrap();
    assert_eq!(
        open_ones
            .iter()
            .map(|f| f.finding.kind.as_str())
            .collect::<Vec<_>>(),
        vec!["scope-narrowed"]
    );
    let acked_ones = t
        .store
        .list_finding_records(&c, Some(true), 10)
        .await
        .unwrap();
    assert_eq!(
        acked_ones.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(
        t.store.list_findings(&c, 10).await.unwrap().len(),
        2,
        "acknowledged findings stay"
    );
    assert_eq!(open(&t).await, 1, "status counts the open findings");
}

fn event(kind: &str, persons: &[i64], records: &[&str]) -> IdentityEventRecord {
    IdentityEventRecord {
        at: Utc::now(),
        kind: kind.into(),
        persons: persons.to_vec(),
        records: records.iter().map(|r| r.to_string()).collect(),
        detail: format!(r#"{{"kind":"{kind}"}}"#),
    }
}

fn id_record(record: &str, person: i64) -> IdentityRecord {
    IdentityRecord {
        record: record.into(),
        person,
        content_hash: format!("hash-{record}"),
    }
}

fn review(a: &str, b: &str, weight: f64) -> ReviewPair {
    ReviewPair {
        a: a.into(),
        b: b.into(),
        weight,
        evidence: format!(r#"{{"total":{weight}}}"#),
        queued_at: Utc::now(),
    }
}

async fn identity_rounds_are_kept_per_organization(t: TestStore) {
    // where identity reads its records: every connection holding Patients, registered or not
    let patient = |id: &str| {
        resource(
            "Patient",
            id,
            &format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#),
        )
    };
    t.store
        .write_resources(&conn("acme", "hl7-lab"), &[patient("h1")])
        .await
        .unwrap();
    t.store
        .write_resources(
            &conn("acme", "epic"),
            &[patient("e1"), observation("o1", 1.0)],
        )
        .await
        .unwrap();
    t.store
        .write_resources(&conn("acme", "labs"), &[observation("o2", 1.0)])
        .await
        .unwrap();
    t.store
        .write_resources(&conn("other", "payer"), &[patient("x1")])
        .await
        .unwrap();
    assert_eq!(
        t.store.patient_sources("acme").await.unwrap(),
        vec!["epic", "hl7-lab"]
    );
    assert!(t.store.patient_sources("nobody").await.unwrap().is_empty());

    let empty = t.store.identity_state("acme").await.unwrap();
    assert_eq!(empty.next_person, 1);
    assert!(empty.records.is_empty() && empty.model.is_none());

    let link = ForcedMatch {
        a: "epic/Patient/1".into(),
        b: "epic/Patient/9".into(),
        source: "FHIR Patient.link replaced-by".into(),
        at: Utc::now(),
    };
    let round = IdentityUpdate {
        new_persons: vec![1, 2],
        records: vec![
            id_record("epic/Patient/1", 1),
            id_record("payer/Patient/x", 1),
            id_record("epic/Patient/2", 2),
        ],
        events: vec![
            event("created", &[1], &["epic/Patient/1"]),
            event("joined", &[1], &["payer/Patient/x"]),
            event("created", &[2], &["epic/Patient/2"]),
        ],
        // the same link read twice (two syncs of the same Patient) is kept once
        forced: vec![link.clone(), link.clone()],
        review: vec![review("payer/Patient/x", "epic/Patient/2", 4.5)],
        model: Some(StoredMatchModel {
            model: r#"{"prior":0.001}"#.into(),
            records: 3,
            trained_at: Utc::now(),
        }),
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &round).await.unwrap();

    let state = t.store.identity_state("acme").await.unwrap();
    assert_eq!(state.next_person, 3, "ids are handed out after the highest");
    assert_eq!(
        state
            .records
            .iter()
            .map(|r| (r.record.as_str(), r.person))
            .collect::<Vec<_>>(),
        vec![
            ("epic/Patient/1", 1),
            ("epic/Patient/2", 2),
            ("payer/Patient/x", 1)
        ]
    );
    assert_eq!(state.records[0].content_hash, "hash-epic/Patient/1");
    assert_eq!(state.forced.len(), 1);
    assert_eq!(state.forced[0].source, link.source);
    assert_eq!(state.model.as_ref().unwrap().records, 3);

    let p1 = t.store.person("acme", 1).await.unwrap().unwrap();
    assert_eq!(p1.records, vec!["epic/Patient/1", "payer/Patient/x"]);
    assert_eq!(t.store.person("acme", 99).await.unwrap(), None);
    assert_eq!(
        t.store
            .person_of_record("acme", "payer/Patient/x")
            .await
            .unwrap(),
        Some(1)
    );
    let all = t.store.list_persons("acme", None, 10).await.unwrap();
    assert_eq!(all.iter().map(|p| p.person).collect::<Vec<_>>(), vec![1, 2]);
    let after = t.store.list_persons("acme", Some(1), 10).await.unwrap();
    assert_eq!(
        after,
        vec![PersonSummary {
            person: 2,
            records: vec!["epic/Patient/2".into()]
        }]
    );

    // a record moves to another person (a merge): the absorbed person has no records left
    let merge = IdentityUpdate {
        records: vec![id_record("epic/Patient/2", 1)],
        events: vec![event("merged", &[1, 2], &["epic/Patient/2"])],
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &merge).await.unwrap();
    assert_eq!(t.store.person("acme", 2).await.unwrap(), None);
    assert_eq!(
        t.store.list_persons("acme", None, 10).await.unwrap().len(),
        1
    );
    assert_eq!(t.store.identity_state("acme").await.unwrap().next_person, 3);

    let of_two = t
        .store
        .identity_events("acme", Some(2), None, 10)
        .await
        .unwrap();
    assert_eq!(
        of_two
            .iter()
            .map(|e| e.event.kind.as_str())
            .collect::<Vec<_>>(),
        vec!["merged", "created"],
        "newest first, only the events naming person 2"
    );
    assert_eq!(of_two[0].event.persons, vec![1, 2]);
    assert_eq!(of_two[0].event.records, vec!["epic/Patient/2"]);
    assert_eq!(of_two[0].event.detail, r#"{"kind":"merged"}"#);
    let older = t
        .store
        .identity_events("acme", None, Some(of_two[0].id), 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 3);

    // the review pair is kept in record order, whatever order it came in
    let queue = t.store.review_queue("acme", 10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        (queue[0].a.as_str(), queue[0].b.as_str()),
        ("epic/Patient/2", "payer/Patient/x")
    );
    assert_eq!(queue[0].weight, 4.5);

    // another organization sees none of it
    let other = t.store.identity_state("other").await.unwrap();
    assert_eq!(
        other,
        IdentityState {
            next_person: 1,
            ..IdentityState::default()
        }
    );
    assert_eq!(t.store.person("other", 1).await.unwrap(), None);
    assert!(t.store.review_queue("other", 10).await.unwrap().is_empty());
    assert!(
        t.store
            .identity_events("other", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.store
            .person_of_record("other", "epic/Patient/1")
            .await
            .unwrap(),
        None
    );
}

async fn a_person_id_handed_out_twice_fails_the_whole_round(t: TestStore) {
    let first = IdentityUpdate {
        new_persons: vec![1],
        records: vec![id_record("epic/Patient/1", 1)],
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &first).await.unwrap();
    // a second process loaded the state before the first committed and handed out 1 again
    let racing = IdentityUpdate {
        new_persons: vec![1],
        records: vec![id_record("cerner/Patient/7", 1)],
        events: vec![event("created", &[1], &["cerner/Patient/7"])],
        review: vec![review("cerner/Patient/7", "epic/Patient/1", 3.0)],
        ..IdentityUpdate::default()
    };
    assert!(t.store.apply_identity("acme", &racing).await.is_err());
    let state = t.store.identity_state("acme").await.unwrap();
    assert_eq!(
        state.records.len(),
        1,
        "nothing of the failed round was written"
    );
    assert!(
        t.store
            .identity_events("acme", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.store.review_queue("acme", 10).await.unwrap().is_empty());
    // the same ids are free in another organization
    t.store.apply_identity("other", &racing).await.unwrap();
}

async fn decisions_take_pairs_out_of_the_review_queue(t: TestStore) {
    let round = IdentityUpdate {
        new_persons: vec![1, 2, 3],
        records: vec![
            id_record("a/Patient/1", 1),
            id_record("b/Patient/1", 2),
            id_record("c/Patient/1", 3),
        ],
        review: vec![
            review("a/Patient/1", "b/Patient/1", 5.0),
            review("b/Patient/1", "c/Patient/1", 7.0),
            review("a/Patient/1", "c/Patient/1", 2.0),
        ],
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &round).await.unwrap();
    let queue = t.store.review_queue("acme", 10).await.unwrap();
    assert_eq!(
        queue.iter().map(|p| p.weight).collect::<Vec<_>>(),
        vec![7.0, 5.0, 2.0],
        "strongest first"
    );
    assert_eq!(t.store.review_queue("acme", 1).await.unwrap().len(), 1);

    // a reviewer decides one pair (named in either order)
    let decision = MatchDecision {
        a: "c/Patient/1".into(),
        b: "b/Patient/1".into(),
        verdict: MatchVerdict::Unlink,
        reviewer: "api-key:k1".into(),
        at: Utc::now(),
        note: Some("different mothers' names".into()),
    };
    let decided = IdentityUpdate {
        decisions: vec![decision.clone()],
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &decided).await.unwrap();
    let queue = t.store.review_queue("acme", 10).await.unwrap();
    assert_eq!(
        queue.iter().map(|p| p.weight).collect::<Vec<_>>(),
        vec![5.0, 2.0]
    );
    let audit = t.store.match_decisions("acme", 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].reviewer, "api-key:k1");
    assert_eq!(audit[0].verdict, MatchVerdict::Unlink);
    assert_eq!(audit[0].note.as_deref(), Some("different mothers' names"));
    assert_eq!(
        t.store.identity_state("acme").await.unwrap().decisions,
        audit
    );
    assert!(
        t.store
            .match_decisions("other", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // a record matched again leaves the queue with all its pairs, then its new ones come in
    let rematched = IdentityUpdate {
        review_cleared_for: vec!["a/Patient/1".into()],
        review: vec![review("c/Patient/1", "a/Patient/1", 3.0)],
        ..IdentityUpdate::default()
    };
    t.store.apply_identity("acme", &rematched).await.unwrap();
    let queue = t.store.review_queue("acme", 10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].weight, 3.0);
    assert_eq!(queue[0].a, "a/Patient/1");
}
