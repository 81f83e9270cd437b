#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_cli::normalize_cli::{
    CodesArgs, CodesCommand, MapArgs, NormalizeArgs, UnmappedArgs, run_codes, run_normalize,
};
use aqueduct_normalize::*;
use aqueduct_store::{
    ConnectionRecord, ConnectionRef, Organization, ParseStatus, RawResource, Store,
};
use chrono::Utc;

fn res(rtype: &str, id: &str, body: &str) -> RawResource {
    RawResource {
        resource_type: rtype.to_string(),
        logical_id: id.to_string(),
        version_id: Some("1".into()),
        last_updated: None,
        source_url: format!("https://ehr.example/fhir/{rtype}/{id}"),
        patient_id: Some("p1".into()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: body.as_bytes().to_vec(),
    }
}

async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, ConnectionRef) {
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .upsert_organization(&Organization {
            name: "acme".into(),
            display_name: None,
        })
        .await
        .unwrap();
    store
        .upsert_connection(&ConnectionRecord {
            organization: "acme".into(),
            name: "epic".into(),
            base_url: "https://ehr.example/fhir".into(),
            profile: "epic".into(),
        })
        .await
        .unwrap();
    let conn = ConnectionRef::new("acme", "epic");
    let mut batch = vec![
        res(
            "Observation",
            "bp",
            r#"{"resourceType":"Observation","id":"bp","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"effectiveDateTime":"2024-03-01T09:30:00Z","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120,"unit":"mmHg"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"unit":"mmHg"}}]}"#,
        ),
        res(
            "Observation",
            "w",
            r#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"effectiveDateTime":"2024-03-01T09:30:00Z","valueQuantity":{"value":80,"unit":"kg"}}"#,
        ),
        res(
            "Observation",
            "h",
            r#"{"resourceType":"Observation","id":"h","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"effectiveDateTime":"2024-03-01T09:31:00Z","valueQuantity":{"value":180,"unit":"cm"}}"#,
        ),
        res(
            "Observation",
            "loc",
            r#"{"resourceType":"Observation","id":"loc","code":{"coding":[{"system":"urn:oid:1.2.3","code":"K-SER"}],"text":"Kalium serum xyz"},"effectiveDateTime":"2024-03-01","valueQuantity":{"value":4.1,"unit":"mmol/L"}}"#,
        ),
        res("Observation", "junk", "this is not json"),
        res(
            "Medication",
            "med1",
            r#"{"resourceType":"Medication","id":"med1","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"314076"}]}}"#,
        ),
        res(
            "MedicationRequest",
            "mr1",
            r#"{"resourceType":"MedicationRequest","id":"mr1","status":"active","medicationReference":{"reference":"Medication/med1"},"authoredOn":"2026-01-01"}"#,
        ),
        res(
            "Condition",
            "c1",
            r#"{"resourceType":"Condition","id":"c1","code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"I10"}]},"clinicalStatus":{"coding":[{"code":"active"}]}}"#,
        ),
    ];
    // more than one page of observations
    for i in 0..(aqueduct_normalize::rebuild::PAGE_SIZE as usize + 20) {
        batch.push(res("Observation", &format!("g{i:04}"), &format!(r#"{{"resourceType":"Observation","id":"g{i:04}","code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7"}}]}},"effectiveDateTime":"2024-03-01","valueQuantity":{{"value":{},"unit":"mg/dL"}}}}"#, 80 + i % 50)));
    }
    store.write_resources(&conn, &batch).await.unwrap();
    (dir, store, conn)
}

#[tokio::test]
async fn rebuild_writes_rows_and_reports() {
    let (_dir, store, conn) = setup().await;
    let ctx = context_for(store.as_ref(), &conn, Arc::new(Terminology::embedded()))
        .await
        .unwrap();
    let report = rebuild(
        store.as_ref(),
        &conn,
        &ctx,
        &["Observation".to_string(), "Condition".to_string()],
    )
    .await
    .unwrap();
    let obs = &report.types[0];
    assert_eq!(obs.resources, 525);
    assert_eq!(obs.unparseable, 1);
    assert_eq!(obs.rows, 525); // bp gives 2, junk gives 0
    assert_eq!(report.derived_bmi, 1);
    assert_eq!(report.resolution.get("unmapped"), Some(&1));
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 525 + 1);
    let bmi: Vec<_> = rows
        .iter()
        .filter(|r| r.record.code.as_deref() == Some("39156-5"))
        .collect();
    assert_eq!(bmi.len(), 1);
    assert_eq!(bmi[0].logical_id, "w");
    assert!(
        bmi[0].record.data.contains("24.7"),
        "{}",
        bmi[0].record.data
    );
    let bp: Vec<_> = rows.iter().filter(|r| r.logical_id == "bp").collect();
    assert_eq!(bp.len(), 2);
    assert_eq!(bp[0].rules_version, ctx.fingerprint());
    assert!(bp[0].rules_version.starts_with(RULES_VERSION));
    assert_eq!(
        bp[0].record.patient_id.as_deref(),
        Some("p1"),
        "patient from the store when the body has none"
    );
    let conds = store
        .list_normalized(&conn, "condition", None, 10)
        .await
        .unwrap();
    assert!(conds[0].record.data.contains("hypertension"));
    let r = rebuild(
        store.as_ref(),
        &conn,
        &ctx,
        &["MedicationRequest".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(r.resolution.get("standard"), Some(&1));
    let meds = store
        .list_normalized(&conn, "medication", None, 10)
        .await
        .unwrap();
    assert_eq!(meds[0].record.code.as_deref(), Some("314076"));
    assert!(
        meds[0]
            .record
            .data
            .contains("\"medication_source\":\"referenced\""),
        "{}",
        meds[0].record.data
    );
    // the review queue, then a mapping, then a rebuild resolves it
    let out = run_codes(
        store.clone(),
        "acme",
        &CodesArgs {
            command: CodesCommand::Unmapped(UnmappedArgs {
                connection: None,
                json: false,
                limit: 10,
            }),
        },
    )
    .await
    .unwrap();
    assert!(out.contains("K-SER"), "{out}");
    let bad = run_codes(
        store.clone(),
        "acme",
        &CodesArgs {
            command: CodesCommand::Map(MapArgs {
                connection: "epic".into(),
                system: "urn:oid:1.2.3".into(),
                code: "K-SER".into(),
                to_system: "http://loinc.org".into(),
                to_code: "2823-4".into(),
                display: None,
            }),
        },
    )
    .await;
    assert!(bad.is_err(), "bad LOINC check digit refused");
    run_codes(
        store.clone(),
        "acme",
        &CodesArgs {
            command: CodesCommand::Map(MapArgs {
                connection: "epic".into(),
                system: "urn:oid:1.2.3".into(),
                code: "K-SER".into(),
                to_system: "LOINC".into(),
                to_code: "2823-3".into(),
                display: Some("Potassium".into()),
            }),
        },
    )
    .await
    .unwrap();
    let text = run_normalize(
        store.clone(),
        "acme",
        &NormalizeArgs {
            connection: Some("epic".into()),
            types: vec!["Observation".into()],
            json: false,
            terminology_dir: None,
            since: None,
            changed: false,
        },
        Arc::new(Terminology::embedded()),
    )
    .await
    .unwrap();
    assert!(text.contains("mapped"), "{text}");
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 525 + 1, "a rebuild replaces, never duplicates");
    let k = rows.iter().find(|r| r.logical_id == "loc").unwrap();
    assert_eq!(k.record.resolution, "mapped");
    assert_eq!(k.record.code.as_deref(), Some("2823-3"));
    assert!(
        k.record.data.contains("mappings-1-"),
        "mapping table version recorded"
    );
    let out = run_codes(
        store.clone(),
        "acme",
        &CodesArgs {
            command: CodesCommand::Unmapped(UnmappedArgs {
                connection: Some("epic".into()),
                json: true,
                limit: 10,
            }),
        },
    )
    .await
    .unwrap();
    assert!(!out.contains("K-SER"), "{out}");
    // tombstones remove rows
    store
        .tombstone(&conn, "Condition", &["c1".to_string()], Utc::now())
        .await
        .unwrap();
    let r = rebuild(store.as_ref(), &conn, &ctx, &["Condition".to_string()])
        .await
        .unwrap();
    assert_eq!(r.types[0].deleted, 1);
    assert!(
        store
            .list_normalized(&conn, "condition", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        rebuild(store.as_ref(), &conn, &ctx, &["Basic".to_string()])
            .await
            .is_err()
    );
}

fn obs_ids(rows: &[aqueduct_store::StoredNormalized]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r.logical_id.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn refresh_rederives_only_what_changed() {
    let (_dir, store, conn) = setup().await;
    let terms = Arc::new(Terminology::embedded());
    let ctx = context_for(store.as_ref(), &conn, terms.clone())
        .await
        .unwrap();
    let first = refresh(store.as_ref(), &conn, &ctx, &[]).await.unwrap();
    assert!(first.incremental);
    assert_eq!(first.types[1].resource_type, "Observation");
    assert_eq!(
        first.types[1].resources, 525,
        "nothing stored yet: all derived"
    );
    assert_eq!(first.derived_bmi, 1);
    let before = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();

    // nothing changed: nothing re-derived, nothing lost (the derived BMI survives)
    let again = refresh(store.as_ref(), &conn, &ctx, &[]).await.unwrap();
    let obs = &again.types[1];
    assert_eq!(
        (obs.resources, obs.unchanged),
        (1, 524),
        "only the unparseable one"
    );
    assert_eq!(again.derived_bmi, 0);
    assert!(
        again
            .types
            .iter()
            .filter(|t| t.resource_type == "Condition")
            .all(|t| t.unchanged == 1 && t.resources == 0)
    );
    assert_eq!(
        again
            .types
            .iter()
            .find(|t| t.resource_type == "MedicationRequest")
            .unwrap()
            .resources,
        1,
        "a request naming a separate Medication is always re-derived"
    );
    let after = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    assert_eq!(after, before);

    // a new height: that observation is derived, and the patient's BMI with it
    let height = res(
        "Observation",
        "h",
        r#"{"resourceType":"Observation","id":"h","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"effectiveDateTime":"2024-03-01T09:31:00Z","valueQuantity":{"value":160,"unit":"cm"}}"#,
    );
    store.write_resources(&conn, &[height]).await.unwrap();
    let r = refresh(store.as_ref(), &conn, &ctx, &["Observation".into()])
        .await
        .unwrap();
    assert_eq!((r.types[0].resources, r.types[0].unchanged), (2, 523));
    assert_eq!(r.derived_bmi, 1);
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    let bmi = rows
        .iter()
        .find(|r| r.record.code.as_deref() == Some("39156-5"))
        .unwrap();
    assert!(
        bmi.record.data.contains("31.2"),
        "80 kg / 1.60 m^2: {}",
        bmi.record.data
    );
    assert_eq!(obs_ids(&rows), obs_ids(&before));

    // a new mapping changes the fingerprint: everything is derived again
    store
        .put_code_mapping(
            &conn,
            &aqueduct_store::CodeMapping {
                source_system: "urn:oid:1.2.3".into(),
                source_code: "K-SER".into(),
                target_system: "http://loinc.org".into(),
                target_code: "2823-3".into(),
                target_display: None,
            },
        )
        .await
        .unwrap();
    let ctx2 = context_for(store.as_ref(), &conn, terms.clone())
        .await
        .unwrap();
    assert_ne!(ctx2.fingerprint(), ctx.fingerprint());
    let r = refresh(store.as_ref(), &conn, &ctx2, &["Observation".into()])
        .await
        .unwrap();
    assert_eq!((r.types[0].resources, r.types[0].unchanged), (525, 0));
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .find(|r| r.logical_id == "loc")
            .unwrap()
            .record
            .resolution,
        "mapped"
    );
    assert!(rows.iter().all(|r| r.rules_version == ctx2.fingerprint()));

    // staleness is judged against today: a new day re-derives medication requests and
    // statements, nothing else
    let tomorrow = context_for(store.as_ref(), &conn, terms)
        .await
        .unwrap()
        .with_now(Utc::now() + chrono::Duration::days(1));
    assert_eq!(tomorrow.fingerprint(), ctx2.fingerprint());
    assert_ne!(
        tomorrow.fingerprint_for("MedicationRequest"),
        ctx2.fingerprint_for("MedicationRequest")
    );
    let inline = res(
        "MedicationRequest",
        "mr2",
        r#"{"resourceType":"MedicationRequest","id":"mr2","status":"active","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"6809"}]},"authoredOn":"2020-01-01"}"#,
    );
    store.write_resources(&conn, &[inline]).await.unwrap();
    refresh(store.as_ref(), &conn, &ctx2, &[]).await.unwrap();
    let same_day = refresh(store.as_ref(), &conn, &ctx2, &[]).await.unwrap();
    let mr = same_day
        .types
        .iter()
        .find(|x| x.resource_type == "MedicationRequest")
        .unwrap();
    assert_eq!(
        (mr.resources, mr.unchanged),
        (1, 1),
        "mr2 unchanged the same day"
    );
    let next_day = refresh(store.as_ref(), &conn, &tomorrow, &[])
        .await
        .unwrap();
    let by_type = |t: &str| {
        next_day
            .types
            .iter()
            .find(|x| x.resource_type == t)
            .unwrap()
    };
    assert_eq!(
        by_type("Observation").resources,
        1,
        "only the unparseable one"
    );
    assert_eq!(by_type("Condition").resources, 0);
    assert_eq!(
        by_type("MedicationRequest").resources,
        2,
        "mr2 is judged against the new day"
    );

    // a tombstone removes the rows once; the next refresh has nothing to remove
    store
        .tombstone(&conn, "Condition", &["c1".to_string()], Utc::now())
        .await
        .unwrap();
    let r = refresh(store.as_ref(), &conn, &ctx2, &["Condition".into()])
        .await
        .unwrap();
    assert_eq!(r.types[0].deleted, 1);
    let r = refresh(store.as_ref(), &conn, &ctx2, &["Condition".into()])
        .await
        .unwrap();
    assert_eq!((r.types[0].deleted, r.types[0].resources), (0, 0));
    assert!(
        store
            .list_normalized(&conn, "condition", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn since_limits_the_rebuild_to_recent_resources() {
    let (_dir, store, conn) = setup().await;
    let ctx = context_for(store.as_ref(), &conn, Arc::new(Terminology::embedded()))
        .await
        .unwrap();
    rebuild(store.as_ref(), &conn, &ctx, &[]).await.unwrap();
    let cut = Utc::now();
    let mut late = res(
        "Observation",
        "late",
        r#"{"resourceType":"Observation","id":"late","code":{"coding":[{"system":"http://loinc.org","code":"2345-7"}]},"effectiveDateTime":"2024-03-02","valueQuantity":{"value":99,"unit":"mg/dL"}}"#,
    );
    late.fetched_at = cut + chrono::Duration::seconds(1);
    store.write_resources(&conn, &[late]).await.unwrap();
    let r = rebuild_with(
        store.as_ref(),
        &conn,
        &ctx,
        &RebuildOptions {
            types: vec!["Observation".into()],
            incremental: false,
            since: Some(cut),
        },
    )
    .await
    .unwrap();
    assert_eq!((r.types[0].resources, r.types[0].unchanged), (1, 525));
    assert_eq!(
        r.derived_bmi, 1,
        "the patient has a new observation: its BMI is derived again, from older inputs"
    );
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        525 + 1 + 1,
        "older rows and the derived BMI kept"
    );
    // --since parses instants, dates and ages, and says what it wants otherwise
    use aqueduct_cli::normalize_cli::parse_since;
    assert!(parse_since("2026-11-01T08:00:00Z").is_ok());
    assert_eq!(
        parse_since("2026-11-01").unwrap().to_rfc3339(),
        "2026-11-01T00:00:00+00:00"
    );
    let d = Utc::now() - parse_since("36h").unwrap();
    assert!((d.num_minutes() - 36 * 60).abs() <= 1);
    let e = parse_since("yesterday").unwrap_err();
    assert!(e.contains("RFC 3339") && e.contains("36h"), "{e}");
    assert!(parse_since("-5d").is_err());
    assert!(parse_since("99999999999999d").is_err());
}

async fn bmi_rows(store: &Arc<dyn Store>, conn: &ConnectionRef) -> Vec<(String, bool)> {
    let rows = store
        .list_normalized(conn, "observation", None, 10_000)
        .await
        .unwrap();
    rows.iter()
        .filter(|r| r.record.code.as_deref() == Some("39156-5"))
        .map(|r| {
            (
                r.logical_id.clone(),
                r.record.data.contains("derived_from\":[\""),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_derived_bmi_follows_its_inputs_through_refreshes() {
    let (_dir, store, conn) = setup().await;
    let ctx = context_for(store.as_ref(), &conn, Arc::new(Terminology::embedded()))
        .await
        .unwrap();
    let obs = vec!["Observation".to_string()];
    refresh(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert_eq!(bmi_rows(&store, &conn).await, vec![("w".to_string(), true)]);

    // the height is withdrawn: the BMI computed from it goes too
    store
        .tombstone(&conn, "Observation", &["h".to_string()], Utc::now())
        .await
        .unwrap();
    refresh(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert!(bmi_rows(&store, &conn).await.is_empty());

    // it comes back: so does the BMI
    let height = res(
        "Observation",
        "h",
        r#"{"resourceType":"Observation","id":"h","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"effectiveDateTime":"2024-03-01T09:31:00Z","valueQuantity":{"value":180,"unit":"cm"}}"#,
    );
    store.write_resources(&conn, &[height]).await.unwrap();
    refresh(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert_eq!(bmi_rows(&store, &conn).await, vec![("w".to_string(), true)]);

    // a measured BMI the same day replaces the derived one (never two BMIs)
    let measured = res(
        "Observation",
        "bmi",
        r#"{"resourceType":"Observation","id":"bmi","code":{"coding":[{"system":"http://loinc.org","code":"39156-5"}]},"effectiveDateTime":"2024-03-01T09:35:00Z","valueQuantity":{"value":24.6,"unit":"kg/m2"}}"#,
    );
    store.write_resources(&conn, &[measured]).await.unwrap();
    refresh(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert_eq!(
        bmi_rows(&store, &conn).await,
        vec![("bmi".to_string(), false)]
    );

    // the height turns out to be another patient's: this patient's BMI must not use it
    store
        .tombstone(&conn, "Observation", &["bmi".to_string()], Utc::now())
        .await
        .unwrap();
    let mut moved = res(
        "Observation",
        "h",
        r#"{"resourceType":"Observation","id":"h","subject":{"reference":"Patient/p2"},"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"effectiveDateTime":"2024-03-01T09:31:00Z","valueQuantity":{"value":181,"unit":"cm"}}"#,
    );
    moved.patient_id = Some("p2".into());
    store.write_resources(&conn, &[moved]).await.unwrap();
    refresh(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert!(bmi_rows(&store, &conn).await.is_empty());
    // and a full rebuild agrees with the refreshes
    rebuild(store.as_ref(), &conn, &ctx, &obs).await.unwrap();
    assert!(bmi_rows(&store, &conn).await.is_empty());
}

#[tokio::test]
async fn mislabelled_codes_are_counted_stored_and_queued() {
    let (_dir, store, conn) = setup().await;
    let a1c = r#"{"resourceType":"Observation","id":"a1c","code":{"coding":[{"system":"http://loinc.org","code":"31337"}],"text":"Hemoglobin A1c"},"effectiveDateTime":"2024-02-11","valueQuantity":{"value":7.2,"unit":"%"}}"#;
    store
        .write_resources(
            &conn,
            &[
                res("Observation", "a1c", a1c),
                res(
                    "Observation",
                    "x3953",
                    r#"{"resourceType":"Observation","id":"x3953","code":{"coding":[{"system":"http://loinc.org","code":"3953"}]},"effectiveDateTime":"2024-02-11"}"#,
                ),
            ],
        )
        .await
        .unwrap();
    let args = |json| NormalizeArgs {
        connection: Some("epic".into()),
        types: vec!["Observation".into()],
        json,
        terminology_dir: None,
        since: None,
        changed: false,
    };
    let text = run_normalize(
        store.clone(),
        "acme",
        &args(false),
        Arc::new(Terminology::embedded()),
    )
    .await
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("mislabelled"))
        .unwrap_or_else(|| panic!("no mislabelled line in {text}"));
    assert_eq!(line.split_whitespace().nth(1), Some("1"), "{text}");
    let json = run_normalize(
        store.clone(),
        "acme",
        &args(true),
        Arc::new(Terminology::embedded()),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let res_map = &v[0]["resolution"];
    assert_eq!(res_map["mislabelled"], 1, "{res_map}");
    // every kind is named, at 0 when unused
    assert_eq!(res_map["none"], 0, "{res_map}");
    let report = RebuildReport {
        resolution: [("mislabelled".to_string(), 1), ("standard".to_string(), 3)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    assert!(report.resolution_shares().contains(&("mislabelled", 0.25)));
    // the row: resolved by text, the source code kept; raw untouched
    let rows = store
        .list_normalized(&conn, "observation", None, 10_000)
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.logical_id == "a1c").unwrap();
    assert_eq!(row.record.resolution, "mislabelled");
    assert_eq!(row.record.code.as_deref(), Some("4548-4"));
    assert_eq!(row.record.source_code.as_deref(), Some("31337"));
    assert_eq!(
        row.record.source_system.as_deref(),
        Some("http://loinc.org")
    );
    assert!(row.record.data.contains("code-mislabelled"));
    let raw = store
        .get_resource(&conn, "Observation", "a1c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.bytes, a1c.as_bytes());
    // a mislabelled code nothing resolved waits for review like any local code
    let queue = store
        .unmapped_codes("acme", Some("epic"), 10)
        .await
        .unwrap();
    assert!(
        queue
            .iter()
            .any(|q| q.source_code.as_deref() == Some("3953")),
        "{queue:?}"
    );
}
