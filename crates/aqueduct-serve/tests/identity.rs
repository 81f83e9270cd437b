//! Persons and the match review queue over real HTTP on loopback, on a real SQLite store whose
//! identity a real round of the engine built: a person's record across sources, decisions
//! recorded with who and when (write scope only), evidence of a pair, and nothing of another
//! organization.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_store::*;
use chrono::Utc;
use serde_json::{Value, json};

struct Server {
    base: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    read: String,
    write: String,
    other: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn patient(id: &str, given: &str, family: &str, birth: &str, street: &str, phone: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth, "gender": "male",
        "address": [{"line": [street], "city": "Springfield", "state": "IL", "postalCode": "62704"}],
        "telecom": [{"system": "phone", "value": phone}],
    })
}

fn raw(v: &Value, patient: &str) -> RawResource {
    RawResource {
        resource_type: v["resourceType"].as_str().unwrap().to_string(),
        logical_id: v["id"].as_str().unwrap().to_string(),
        version_id: None,
        last_updated: None,
        source_url: "https://ehr.example/x".into(),
        patient_id: Some(patient.to_string()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: serde_json::to_vec(v).unwrap(),
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(&dir.path().join("s.db").display().to_string())
        .await
        .unwrap();
    let ehr = ConnectionRef::new("acme", "ehr");
    let payer = ConnectionRef::new("acme", "payer");
    let glucose = json!({
        "resourceType": "Observation", "id": "o1", "status": "final",
        "subject": {"reference": "Patient/1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "valueQuantity": {"value": 95, "unit": "mg/dL"}
    });
    store
        .write_resources(
            &ehr,
            &[
                raw(
                    &patient(
                        "1",
                        "Robert",
                        "Smith",
                        "1970-05-05",
                        "12 Main Street",
                        "2175550101",
                    ),
                    "1",
                ),
                raw(&glucose, "1"),
            ],
        )
        .await
        .unwrap();
    store
        .write_resources(
            &payer,
            &[raw(
                &patient(
                    "x",
                    "Bob",
                    "Smith",
                    "1970-05-05",
                    "12 Main St",
                    "217-555-0101",
                ),
                "x",
            )],
        )
        .await
        .unwrap();
    // another organization holds a Patient with the same ids
    store
        .write_resources(
            &ConnectionRef::new("globex", "ehr"),
            &[raw(
                &patient(
                    "1",
                    "Robert",
                    "Smith",
                    "1970-05-05",
                    "12 Main Street",
                    "2175550101",
                ),
                "1",
            )],
        )
        .await
        .unwrap();
    aqueduct_engine::update_identity(store.as_ref(), "acme")
        .await
        .unwrap();
    aqueduct_engine::update_identity(store.as_ref(), "globex")
        .await
        .unwrap();
    let mut keys = Vec::new();
    for (org, scope) in [
        ("acme", ApiScope::Read),
        ("acme", ApiScope::Write),
        ("globex", ApiScope::Admin),
    ] {
        let (rec, k) = aqueduct_serve::generate_key(org, scope, None).unwrap();
        store.create_api_key(&rec).await.unwrap();
        keys.push(k);
    }
    let state = AppState::new(
        store.clone(),
        Arc::new(Default::default()),
        ServeSettings::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aqueduct_serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        store,
        http: reqwest::Client::new(),
        read: keys[0].clone(),
        write: keys[1].clone(),
        other: keys[2].clone(),
        _dir: dir,
        _stop: stop,
    }
}

impl Server {
    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_person_is_served_across_sources_each_resource_with_its_source() {
    let s = server().await;
    let (status, page) = s.get(&s.read, "/api/v1/persons").await;
    assert_eq!(status, 200, "{page}");
    let persons = page["persons"].as_array().unwrap();
    assert_eq!(persons.len(), 1, "{page}");
    assert_eq!(persons[0]["records"], json!(["ehr.1", "payer.x"]));
    assert_eq!(persons[0]["sources"], json!(["ehr", "payer"]));
    let id = persons[0]["id"].as_i64().unwrap();

    let (status, person) = s.get(&s.read, &format!("/api/v1/persons/{id}")).await;
    assert_eq!(status, 200, "{person}");
    let sources = person["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["connection"], "ehr");
    assert_eq!(sources[0]["patient"]["name"], "Robert Smith");
    let ehr: Vec<(&str, &str)> = sources[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["facade_id"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ehr, vec![("ehr.o1", "ehr"), ("ehr.1", "ehr")]);
    assert_eq!(
        sources[0]["resources"][0]["resource"]["valueQuantity"]["value"],
        95
    );
    assert_eq!(sources[1]["patient"]["name"], "Bob Smith");

    // the read is in the access log, naming the person
    let log = s.store.list_access("acme", None, None, 10).await.unwrap();
    assert!(
        log.iter().any(|e| e.event.route == "/api/v1/persons/{id}"
            && e.event.patient.as_deref() == Some(format!("person-{id:06}").as_str())),
        "{log:?}"
    );

    // another organization: its own person only, acme's id unknown to it
    let (_, theirs) = s.get(&s.other, "/api/v1/persons").await;
    assert_eq!(theirs["persons"][0]["records"], json!(["ehr.1"]));
    // person ids are per organization: the same number at globex is globex's person
    let (status, p) = s.get(&s.other, &format!("/api/v1/persons/{id}")).await;
    if status == 200 {
        assert_eq!(p["sources"].as_array().unwrap().len(), 1, "{p}");
    } else {
        assert_eq!(status, 404);
    }
    let (status, problem) = s.get(&s.read, "/api/v1/persons/9999").await;
    assert_eq!(status, 404, "{problem}");
}

#[tokio::test]
async fn explain_shows_the_evidence_and_a_decision_needs_write_and_is_recorded() {
    let s = server().await;
    let (status, e) = s
        .get(&s.read, "/api/v1/match/explain?a=ehr.1&b=payer.x")
        .await;
    assert_eq!(status, 200, "{e}");
    assert!(e["terms"].as_array().unwrap().len() >= 5, "{e}");
    assert!(e["total"].as_f64().unwrap() > e["thresholds"]["link"].as_f64().unwrap());
    assert_eq!(e["decision"], "Link");
    let (status, _) = s
        .get(&s.read, "/api/v1/match/explain?a=ehr.1&b=nowhere.7")
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .get(&s.read, "/api/v1/match/explain?a=ehr/1&b=payer.x")
        .await;
    assert_eq!(status, 404, "not a facade id: no such record");
    let (status, _) = s.get(&s.read, "/api/v1/match/explain?a=ehr.1").await;
    assert_eq!(status, 400, "b is required");
    // globex cannot explain acme's records
    let (status, _) = s
        .get(&s.other, "/api/v1/match/explain?a=ehr.1&b=payer.x")
        .await;
    assert_eq!(status, 404);

    let (status, queue) = s.get(&s.read, "/api/v1/match/review").await;
    assert_eq!(status, 200);
    assert!(queue["pairs"].as_array().unwrap().is_empty(), "{queue}");

    // a read key may not decide
    let path = "/api/v1/match/review/ehr.1~payer.x/decide";
    let (status, _) = s.post(&s.read, path, json!({"verdict": "unlink"})).await;
    assert_eq!(status, 403);
    let (status, _) = s.post(&s.write, path, json!({"verdict": "maybe"})).await;
    assert_eq!(status, 422);
    assert!(
        s.store
            .match_decisions("acme", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let (status, d) = s
        .post(
            &s.write,
            path,
            json!({"verdict": "unlink", "note": "twins"}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_ne!(d["person_a"], d["person_b"], "{d}");
    let audit = s.store.match_decisions("acme", 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert!(audit[0].reviewer.starts_with("api-key:"), "{:?}", audit[0]);
    assert_eq!(audit[0].note.as_deref(), Some("twins"));
    let (_, page) = s.get(&s.read, "/api/v1/persons").await;
    assert_eq!(page["persons"].as_array().unwrap().len(), 2, "{page}");

    // and the next round of matching keeps them apart
    aqueduct_engine::update_identity(s.store.as_ref(), "acme")
        .await
        .unwrap();
    let (_, page) = s.get(&s.read, "/api/v1/persons").await;
    assert_eq!(page["persons"].as_array().unwrap().len(), 2, "{page}");
}
