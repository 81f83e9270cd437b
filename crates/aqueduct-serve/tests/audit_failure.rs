//! A read that cannot be written to the access log is not answered: with the store's disk
//! full, a facade read gets a 503 problem and no patient data, and the store keeps the record.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_store::*;

#[tokio::test]
async fn a_read_the_audit_log_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = aqueduct_store::sqlite::SqliteStore::open(dir.path().join("s.db"))
        .await
        .unwrap();
    let conn = ConnectionRef::new("acme", "epic");
    let body = r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Secret"}]}"#;
    sqlite
        .write_resources(
            &conn,
            &[RawResource {
                resource_type: "Patient".into(),
                logical_id: "p1".into(),
                version_id: None,
                last_updated: None,
                source_url: "http://ehr/Patient/p1".into(),
                patient_id: Some("p1".into()),
                parse_status: ParseStatus::Ok,
                fetched_at: chrono::Utc::now(),
                bytes: body.as_bytes().to_vec(),
            }],
        )
        .await
        .unwrap();
    sqlite
        .upsert_connection(&ConnectionRecord {
            organization: "acme".into(),
            name: "epic".into(),
            base_url: "http://ehr/".into(),
            profile: "generic".into(),
        })
        .await
        .unwrap();
    let (record, key) = aqueduct_serve::generate_key("acme", ApiScope::Read, None).unwrap();
    sqlite.create_api_key(&record).await.unwrap();
    // the disk fills: the file may not grow, and the access log's free room is used up
    sqlite.set_max_pages(1).await.unwrap();
    let filler = AccessEvent {
        at: chrono::Utc::now(),
        organization: "acme".into(),
        principal: "filler".into(),
        action: "read".into(),
        route: "x".repeat(500),
        patient: None,
        resource_types: vec![],
        count: 0,
        client_addr: None,
    };
    // batches first, then the smallest event there is, until not even one more fits
    let tiny = AccessEvent {
        principal: String::new(),
        route: String::new(),
        organization: String::new(),
        action: String::new(),
        ..filler.clone()
    };
    let mut full = false;
    for (event, batch) in [(&filler, 20), (&tiny, 1)] {
        for _ in 0..5000 {
            if sqlite
                .record_access(&vec![event.clone(); batch])
                .await
                .is_err()
            {
                full = batch == 1;
                break;
            }
        }
    }
    assert!(full, "the store never filled");
    let store: Arc<dyn Store> = Arc::new(sqlite);

    let state = AppState::new(
        Arc::clone(&store),
        Arc::new(Default::default()),
        ServeSettings::default(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(aqueduct_serve::serve(l, state, std::future::pending()));
    let r = reqwest::Client::new()
        .get(format!("{base}/fhir/acme/raw/Patient/epic.p1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("Secret"),
        "unaudited patient data left the server: {text}"
    );
    assert!(text.contains("audit log"), "{text}");
    // what was stored is still there
    let kept = store
        .get_resource(&conn, "Patient", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.bytes, body.as_bytes());
}
