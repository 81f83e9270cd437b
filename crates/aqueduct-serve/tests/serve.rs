//! `aqueduct serve` against a real store filled by a real sync of the simulator, over real
//! HTTP on loopback: the facade gives back what the store holds, no route reaches another
//! organization's data, every read is audited, bad input gets a clear 4xx and changes nothing.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_store::*;
use aqueduct_sync::SyncMode;
use aqueduct_testkit::sim_env::{self, CountingGrant, Env};
use serde_json::{Value, json};

struct Server {
    base: String,
    env: Env,
    http: reqwest::Client,
    acme_read: String,
    acme_write: String,
    acme_admin: String,
    globex_admin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A simulator's 3 patients synced into acme/epic, 2 into globex/epic (the same connection
/// name and overlapping source ids: isolation must come from the organization), and a server.
async fn server(settings: ServeSettings) -> Server {
    let env = sim_env::start("epic", 3, 40, &[]).await;
    let types = sim_env::clinical_types();
    let auth = Arc::new(CountingGrant::new(&env.sim.base_url()));
    let profile = sim_env::profile(
        "epic",
        "[http.extra_headers]\n\"Epic-Client-ID\" = \"acme-123\"\n",
    );
    let s = sim_env::syncer(
        &env,
        &profile,
        auth.clone(),
        sim_env::options(types.clone()),
    );
    let r = s
        .sync_patients(&env.sim.patient_ids(), SyncMode::Full)
        .await
        .unwrap();
    assert_eq!(r.outcome, RunOutcome::Complete, "{r:?}");
    let globex = ConnectionRef::new("globex", "epic");
    env.store
        .upsert_connection(&ConnectionRecord {
            organization: "globex".into(),
            name: "epic".into(),
            base_url: env.sim.base_url(),
            profile: "epic".into(),
        })
        .await
        .unwrap();
    let g = aqueduct_sync::Syncer::new(
        env.store.clone(),
        sim_env::client(&env, &profile, auth),
        globex,
        profile.clone(),
        sim_env::options(types),
    );
    g.sync_patients(&env.sim.patient_ids()[..2], SyncMode::Full)
        .await
        .unwrap();

    let key = |org: &str, scope| {
        let (rec, k) = aqueduct_serve::generate_key(org, scope, None).unwrap();
        (rec, k)
    };
    let mut keys = Vec::new();
    for (org, scope) in [
        ("acme", ApiScope::Read),
        ("acme", ApiScope::Write),
        ("acme", ApiScope::Admin),
        ("globex", ApiScope::Admin),
    ] {
        let (rec, k) = key(org, scope);
        env.store.create_api_key(&rec).await.unwrap();
        keys.push(k);
    }
    let state = AppState::new(env.store.clone(), Arc::new(Default::default()), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aqueduct_serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        env,
        http: reqwest::Client::new(),
        acme_read: keys[0].clone(),
        acme_write: keys[1].clone(),
        acme_admin: keys[2].clone(),
        globex_admin: keys[3].clone(),
        _stop: stop,
    }
}

impl Server {
    async fn get(&self, key: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self.http.get(url).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    }

    async fn json(&self, key: &str, path: &str) -> Value {
        let (status, _, body) = self.get(key, path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Every entry of a searchset, following `next` links.
    async fn all_pages(&self, key: &str, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        let mut pages = 0;
        while let Some(p) = next {
            let b = self.json(key, &p).await;
            assert_eq!(b["resourceType"], "Bundle");
            out.extend(b["entry"].as_array().cloned().unwrap_or_default());
            next = b["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
            pages += 1;
            assert!(pages < 200, "paging does not end");
        }
        out
    }

    fn acme(&self) -> ConnectionRef {
        ConnectionRef::new("acme", "epic")
    }
}

#[tokio::test]
async fn the_facade_gives_back_exactly_what_the_store_holds_and_audits_every_read() {
    let s = server(ServeSettings::default()).await;
    let store = &s.env.store;
    let pid = s.env.sim.patient_ids()[0].clone();
    let fid = format!("epic.{pid}");

    // raw read: byte for byte
    let stored = store
        .get_resource(&s.acme(), "Patient", &pid)
        .await
        .unwrap()
        .unwrap();
    let (status, headers, body) = s
        .get(&s.acme_read, &format!("/fhir/acme/raw/Patient/{fid}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, stored.bytes, "the raw view is the bytes as received");
    assert_eq!(headers["content-type"], "application/fhir+json");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");

    // clean read: facade id, meta.source
    let clean = s
        .json(&s.acme_read, &format!("/fhir/acme/Patient/{fid}"))
        .await;
    assert_eq!(clean["id"], fid.as_str());
    assert_eq!(clean["meta"]["source"], "urn:aqueduct:connection:epic");

    // search by patient, paged small: every stored Observation exactly once, bytes intact
    let held = store
        .list_patient_resources(&s.acme(), &pid, Some("Observation"))
        .await
        .unwrap();
    assert!(
        held.len() > 5,
        "the simulator gave this patient observations"
    );
    let raw_entries = s
        .all_pages(
            &s.acme_read,
            &format!("/fhir/acme/raw/Observation?patient={fid}&_count=4"),
        )
        .await;
    assert_eq!(raw_entries.len(), held.len());
    let by_id: BTreeMap<String, &StoredResource> =
        held.iter().map(|r| (r.logical_id.clone(), r)).collect();
    let mut seen = BTreeSet::new();
    for e in &raw_entries {
        let id = e["resource"]["id"].as_str().unwrap().to_string();
        let original: Value = serde_json::from_slice(&by_id[&id].bytes).unwrap();
        assert_eq!(
            e["resource"], original,
            "raw entry {id} is what the source sent"
        );
        assert!(
            e["fullUrl"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/Observation/epic.{id}"))
        );
        assert!(seen.insert(id), "stable paging: no entry twice");
    }
    let clean_entries = s
        .all_pages(
            &s.acme_read,
            &format!("/fhir/acme/Observation?subject=Patient/{fid}&_count=50"),
        )
        .await;
    assert_eq!(clean_entries.len(), held.len());
    for e in &clean_entries {
        assert_eq!(
            e["resource"]["subject"]["reference"],
            format!("Patient/{fid}")
        );
    }

    // a filter: one code of this patient's observations
    let first: Value = serde_json::from_slice(&held[0].bytes).unwrap();
    let coding = &first["code"]["coding"][0];
    let token = format!(
        "{}|{}",
        coding["system"].as_str().unwrap(),
        coding["code"].as_str().unwrap()
    );
    let with_code = held
        .iter()
        .filter(|r| {
            let v: Value = serde_json::from_slice(&r.bytes).unwrap();
            v["code"]["coding"].as_array().unwrap().iter().any(|c| {
                format!(
                    "{}|{}",
                    c["system"].as_str().unwrap_or(""),
                    c["code"].as_str().unwrap_or("")
                ) == token
            })
        })
        .count();
    let url = format!(
        "/fhir/acme/Observation?patient={fid}&code={}",
        url_escape(&token)
    );
    let b = s.json(&s.acme_read, &url).await;
    assert_eq!(b["total"], with_code as u64);

    // $everything: the whole record, Patient first
    let all_held = store
        .list_patient_resources(&s.acme(), &pid, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| aqueduct_serve::fhir::TYPES.contains(&r.resource_type.as_str()))
        .count();
    let every = s
        .all_pages(
            &s.acme_read,
            &format!("/fhir/acme/Patient/{fid}/$everything?_count=25"),
        )
        .await;
    assert_eq!(every[0]["resource"]["resourceType"], "Patient");
    let expected = if store
        .list_patient_resources(&s.acme(), &pid, Some("Patient"))
        .await
        .unwrap()
        .is_empty()
    {
        all_held + 1
    } else {
        all_held
    };
    assert_eq!(every.len(), expected);

    // freshness travels with the Bundle
    let b = s
        .json(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&_count=1"),
        )
        .await;
    let fresh = &b["meta"]["extension"][0];
    assert_eq!(
        fresh["url"],
        "https://aqueduct.dev/fhir/StructureDefinition/source-freshness"
    );
    assert!(fresh["extension"].to_string().contains("lastCompleteSync"));

    // every read is in the audit log, with who, whom and how many
    let audit = s
        .json(
            &s.acme_admin,
            &format!("/api/v1/audit?patient={fid}&limit=1000"),
        )
        .await;
    let events = audit.as_array().unwrap();
    assert!(events.len() >= 5, "{events:?}");
    let everything_read: u64 = events
        .iter()
        .filter(|e| e["action"] == "everything")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        everything_read, expected as u64,
        "each page of $everything is logged with its count"
    );
    assert!(
        events
            .iter()
            .all(|e| e["principal"].as_str().unwrap().starts_with("api-key:"))
    );
    assert!(events.iter().all(|e| e["client_addr"] == "127.0.0.1"));
    // a read key may not read the audit log
    let (status, _, _) = s.get(&s.acme_read, "/api/v1/audit").await;
    assert_eq!(status, 403);
    // the same log as FHIR AuditEvent, for admins, paged
    let audit_events = s
        .all_pages(
            &s.acme_admin,
            &format!("/fhir/acme/AuditEvent?patient={fid}&_count=3"),
        )
        .await;
    assert_eq!(audit_events.len(), events.len());
    for e in &audit_events {
        let r = &e["resource"];
        assert_eq!(r["resourceType"], "AuditEvent");
        assert_eq!(
            r["entity"][0]["what"]["reference"],
            format!("Patient/{fid}")
        );
        assert!(
            r["agent"][0]["who"]["display"]
                .as_str()
                .unwrap()
                .starts_with("api-key:")
        );
        assert_eq!(r["agent"][0]["network"]["address"], "127.0.0.1");
    }
    let (status, _, _) = s.get(&s.acme_read, "/fhir/acme/AuditEvent").await;
    assert_eq!(status, 403);
    let (status, _, _) = s.get(&s.globex_admin, "/fhir/acme/AuditEvent").await;
    assert_eq!(
        status, 404,
        "another organization's audit log does not exist for globex"
    );
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn no_route_reaches_another_organizations_data() {
    let s = server(ServeSettings::default()).await;
    let pid = s.env.sim.patient_ids()[0].clone();
    let fid = format!("epic.{pid}");
    let run = s
        .env
        .store
        .list_runs(&s.acme(), 1)
        .await
        .unwrap()
        .remove(0)
        .id;
    let routes = [
        "/api/v1/connections/epic".to_string(),
        format!("/api/v1/connections/epic/runs/{run}"),
        format!("/api/v1/connections/epic/runs/{run}/requests"),
        format!("/api/v1/connections/epic/patients/{pid}"),
        format!("/fhir/acme/Patient/{fid}"),
        format!("/fhir/acme/raw/Patient/{fid}"),
        format!("/fhir/acme/Observation?patient={fid}"),
        format!("/fhir/acme/Patient/{fid}/$everything"),
    ];
    // globex has a connection named epic too, with the same source ids: its key sees only
    // globex's runs under that name
    let globex_runs = s
        .json(&s.globex_admin, "/api/v1/connections/epic/runs")
        .await;
    assert!(!globex_runs.as_array().unwrap().is_empty());
    for r in globex_runs.as_array().unwrap() {
        assert_eq!(r["connection"]["organization"], "globex");
    }
    for route in &routes {
        if route.starts_with("/fhir/acme") {
            let (status, headers, body) = s.get(&s.globex_admin, route).await;
            assert_eq!(
                status,
                404,
                "{route} with globex's key: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(headers["content-type"], "application/fhir+json");
            let oo: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(oo["resourceType"], "OperationOutcome");
        }
        // no credentials, a made-up key, a malformed one
        for key in [
            "",
            "aqk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "nope",
        ] {
            let (status, _, _) = s.get(key, route).await;
            assert_eq!(status, 401, "{route} with {key:?}");
        }
    }
    // a run id of acme asked through globex's connection of the same name
    let (status, _, _) = s
        .get(
            &s.globex_admin,
            &format!("/api/v1/connections/epic/runs/{run}"),
        )
        .await;
    let globex_has_it = s
        .env
        .store
        .get_run(&ConnectionRef::new("globex", "epic"), run)
        .await
        .unwrap()
        .is_some();
    assert_eq!(status, if globex_has_it { 200 } else { 404 });
    // acme's reads of a patient only globex... both hold epic patients; the third patient is
    // acme's alone
    let third = format!("epic.{}", s.env.sim.patient_ids()[2]);
    let (status, _, _) = s
        .get(&s.globex_admin, &format!("/fhir/globex/Patient/{third}"))
        .await;
    assert_eq!(status, 404, "globex does not hold acme's third patient");
    let (status, _, _) = s
        .get(&s.acme_read, &format!("/fhir/acme/Patient/{third}"))
        .await;
    assert_eq!(status, 200);
    // searches without a patient see only the caller's organization
    let acme_patients = s
        .all_pages(&s.acme_read, "/fhir/acme/Patient?_count=2")
        .await;
    let globex_patients = s.all_pages(&s.globex_admin, "/fhir/globex/Patient").await;
    assert_eq!(acme_patients.len(), 3);
    assert_eq!(globex_patients.len(), 2);
    // a revoked key stops working
    let keys = s.json(&s.acme_admin, "/api/v1/api-keys").await;
    let read_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scope"] == "read")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        keys.to_string().find("secret_hash").is_none(),
        "hashes are never served"
    );
    let (status, _, _) = s.get(&s.globex_admin, "/api/v1/api-keys").await;
    assert_eq!(status, 200);
    let r = s
        .http
        .delete(format!("{}/api/v1/api-keys/{read_id}", s.base))
        .bearer_auth(&s.globex_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "globex cannot revoke acme's key");
    let r = s
        .http
        .delete(format!("{}/api/v1/api-keys/{read_id}", s.base))
        .bearer_auth(&s.acme_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, _, _) = s.get(&s.acme_read, "/api/v1/connections").await;
    assert_eq!(
        status, 401,
        "a revoked key is refused at once by the server that revoked it"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let s = server(ServeSettings {
        max_body_bytes: 4096,
        max_page_size: 20,
        ..Default::default()
    })
    .await;
    let before = s.env.store.count_by_type(&s.acme()).await.unwrap();
    let fid = format!("epic.{}", s.env.sim.patient_ids()[0]);

    // huge _count is lowered to the maximum
    let b = s
        .json(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&_count=100000000"),
        )
        .await;
    assert!(b["entry"].as_array().unwrap().len() <= 20);
    // path traversal and junk ids
    for path in [
        "/fhir/acme/Patient/..%2F..%2Fetc%2Fpasswd",
        "/fhir/acme/Patient/epic.%2E%2E",
        "/fhir/acme/Patient/nodot",
        "/fhir/acme/NotAType/epic.x",
        "/fhir/acme/Patient/epic.x/$delete",
    ] {
        let (status, headers, _) = s.get(&s.acme_read, path).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert_eq!(headers["content-type"], "application/fhir+json", "{path}");
    }
    // SQL-looking values are values
    let b = s
        .json(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&code=%27%20OR%201%3D1%20--"),
        )
        .await;
    assert_eq!(b["total"], 0);
    // unknown parameters: ignored when lenient, refused when strict
    let b = s
        .json(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&_sort=-date&_count=1"),
        )
        .await;
    let self_link = b["link"][0]["url"].as_str().unwrap();
    assert!(
        !self_link.contains("_sort"),
        "an ignored parameter is left out of the self link"
    );
    let r = s
        .http
        .get(format!(
            "{}/fhir/acme/Observation?patient={fid}&_sort=-date",
            s.base
        ))
        .bearer_auth(&s.acme_read)
        .header("Prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["issue"][0]["code"], "not-supported");
    // bad dates are refused, not ignored
    let (status, _, _) = s
        .get(&s.acme_read, "/fhir/acme/Observation?date=yesterday")
        .await;
    assert_eq!(status, 400);
    // deep include chains are not followed
    let (status, _, _) = s
        .get(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&_include:iterate=Observation:patient"),
        )
        .await;
    assert_eq!(status, 200);

    // API: malformed JSON, unknown fields, oversized bodies, unknown query parameters
    let post = |body: Vec<u8>, key: String| {
        let http = s.http.clone();
        let url = format!("{}/api/v1/refresh-requests", s.base);
        async move {
            http.post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for body in [
        b"{not json".to_vec(),
        br#"{"patient": "x", "surprise": 1}"#.to_vec(),
        br#"{"patient": "no-system-or-value"}"#.to_vec(),
        vec![b' '; 10_000],
    ] {
        let r = post(body, s.acme_write.clone()).await;
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{status}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status);
        assert!(p["detail"].as_str().is_some());
    }
    let r = post(
        br#"{"patient": "urn:mrn|123"}"#.to_vec(),
        s.acme_read.clone(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 403, "a read key cannot raise work");
    let (status, headers, _) = s
        .get(&s.acme_read, "/api/v1/connections/epic/runs?bogus=1")
        .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, _, _) = s.get(&s.acme_read, "/api/v1/nothing-here").await;
    assert_eq!(status, 404);

    assert_eq!(
        s.env.store.count_by_type(&s.acme()).await.unwrap(),
        before,
        "nothing stored changed"
    );
    assert!(
        s.env
            .store
            .recent_refreshes("acme", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_api_shows_connections_runs_and_their_ledger_and_actions_queue_work() {
    let s = server(ServeSettings {
        cors_origins: vec!["https://app.example".into()],
        // overviews as they are now: the findings count is checked before and after
        overview_cache_ms: 0,
        ..Default::default()
    })
    .await;
    let conns = s.json(&s.acme_read, "/api/v1/connections").await;
    let epic = &conns.as_array().unwrap()[0];
    assert_eq!(epic["name"], "epic");
    assert_eq!(epic["state"], "complete");
    assert!(epic["last_complete_at"].is_string());
    let held: u64 = s
        .env
        .store
        .count_by_type(&s.acme())
        .await
        .unwrap()
        .iter()
        .map(|t| t.live)
        .sum();
    let shown: u64 = epic["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["live"].as_u64().unwrap())
        .sum();
    assert_eq!(shown, held);

    let runs = s
        .json(
            &s.acme_read,
            "/api/v1/connections/epic/runs?status=complete",
        )
        .await;
    let run = runs[0]["id"].as_i64().unwrap();
    let detail = s
        .json(
            &s.acme_read,
            &format!("/api/v1/connections/epic/runs/{run}"),
        )
        .await;
    assert!(detail["stats"]["requests"].as_u64().unwrap() > 0);
    let page = s
        .json(
            &s.acme_read,
            &format!("/api/v1/connections/epic/runs/{run}/requests?limit=5&type=Observation"),
        )
        .await;
    assert_eq!(
        page["requests"].as_array().unwrap().len().min(5),
        page["requests"].as_array().unwrap().len()
    );
    assert!(
        page["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["resource_type"] == "Observation")
    );

    let patients = s
        .json(&s.acme_read, "/api/v1/connections/epic/patients")
        .await;
    assert_eq!(patients["patients"].as_array().unwrap().len(), 3);
    let pid = patients["patients"][0]["id"].as_str().unwrap().to_string();
    let record = s
        .json(
            &s.acme_read,
            &format!("/api/v1/connections/epic/patients/{pid}"),
        )
        .await;
    assert!(record["counts"]["Observation"].as_u64().unwrap() > 0);

    // start a sync: 202, a refresh request to poll, visible in the queue
    let r = s
        .http
        .post(format!("{}/api/v1/connections/epic/sync", s.base))
        .bearer_auth(&s.acme_write)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["status_url"], location.as_str());
    let polled = s.json(&s.acme_read, &location).await;
    assert_eq!(polled["state"], "pending");
    assert_eq!(polled["request"]["connection"], "epic");
    let (status, _, _) = s.get(&s.globex_admin, &location).await;
    assert_eq!(
        status, 404,
        "another organization's request does not exist for globex"
    );
    let r = s
        .http
        .post(format!("{}/api/v1/connections/epic/sync", s.base))
        .bearer_auth(&s.acme_read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // a finding is acknowledged by a writer, once, and stays listed
    s.env
        .store
        .record_finding(
            &s.acme(),
            &Finding {
                at: chrono::Utc::now(),
                run_id: Some(run),
                kind: "empty-type".into(),
                severity: "warning".into(),
                resource_type: Some("Immunization".into()),
                detail: "no Immunization for any patient".into(),
            },
        )
        .await
        .unwrap();
    let open_before = s.json(&s.acme_read, "/api/v1/connections/epic").await["findings"]
        .as_u64()
        .unwrap();
    let listed = s
        .json(
            &s.acme_read,
            "/api/v1/connections/epic/findings?acknowledged=false",
        )
        .await;
    let finding = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "empty-type")
        .unwrap()
        .clone();
    assert!(finding["acknowledged"].is_null());
    let ack_url = format!(
        "{}/api/v1/connections/epic/findings/{}/acknowledge",
        s.base, finding["id"]
    );
    let post = |key: &str, body: Value| s.http.post(&ack_url).bearer_auth(key).json(&body).send();
    assert_eq!(
        post(&s.acme_read, json!({}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        post(&s.globex_admin, json!({}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404,
        "globex's connection of the same name does not hold acme's finding"
    );
    assert_eq!(
        post(&s.acme_write, json!({"note": "x".repeat(1001)}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let r = post(
        &s.acme_write,
        json!({"note": "Immunizations are not offered by this site"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let acked: Value = r.json().await.unwrap();
    assert_eq!(acked["kind"], "empty-type");
    assert!(
        acked["acknowledged"]["by"]
            .as_str()
            .unwrap()
            .starts_with("api-key:")
    );
    let first_by = acked["acknowledged"].clone();
    let again: Value = post(&s.acme_admin, json!({"note": "again"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["acknowledged"], first_by,
        "the first acknowledgement stands"
    );
    let open = s
        .json(
            &s.acme_read,
            "/api/v1/connections/epic/findings?acknowledged=false",
        )
        .await;
    assert!(
        open.as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != finding["id"])
    );
    let all = s
        .json(&s.acme_read, "/api/v1/connections/epic/findings")
        .await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == finding["id"])
    );
    let open_after = s.json(&s.acme_read, "/api/v1/connections/epic").await["findings"]
        .as_u64()
        .unwrap();
    assert_eq!(
        open_after + 1,
        open_before,
        "the connection counts open findings"
    );

    // CORS only for the configured origin
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let r = s
            .http
            .get(format!("{}/api/v1/organization", s.base))
            .bearer_auth(&s.acme_read)
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn the_capability_statement_lists_what_the_facade_serves() {
    let s = server(ServeSettings::default()).await;
    let cs = s.json("", "/fhir/acme/metadata").await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(&types[..types.len() - 1], aqueduct_serve::fhir::TYPES);
    assert_eq!(types.last(), Some(&"AuditEvent"));
    // liveness and readiness need no key and name no data
    let (status, _, body) = s.get("", "/healthz").await;
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    let ready = s.json("", "/readyz").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["schema_version"], aqueduct_store::SCHEMA_VERSION);
    // a type it does not list is not served
    let (status, _, _) = s.get(&s.acme_read, "/fhir/acme/Basic?patient=epic.x").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_clean_view_adds_the_normalized_form_beside_what_the_source_sent() {
    let s = server(ServeSettings::default()).await;
    let store = &s.env.store;
    let acme = s.acme();
    let terms = std::sync::Arc::new(aqueduct_normalize::Terminology::embedded());
    let ctx = aqueduct_normalize::context_for(store.as_ref(), &acme, terms)
        .await
        .unwrap();
    aqueduct_normalize::rebuild(store.as_ref(), &acme, &ctx, &[])
        .await
        .unwrap();
    let pid = s.env.sim.patient_ids()[0].clone();
    let fid = format!("epic.{pid}");
    let clean = s
        .all_pages(
            &s.acme_read,
            &format!("/fhir/acme/Observation?patient={fid}&_count=100"),
        )
        .await;
    let raw = s
        .all_pages(
            &s.acme_read,
            &format!("/fhir/acme/raw/Observation?patient={fid}&_count=100"),
        )
        .await;
    assert_eq!(clean.len(), raw.len());
    let mut ucum_added = 0;
    for (c, r) in clean.iter().zip(&raw) {
        let (c, r) = (&c["resource"], &r["resource"]);
        // the normalized status travels as an extension; the source's status is untouched
        assert_eq!(c["status"], r["status"]);
        assert!(
            c["extension"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["url"] == aqueduct_serve::fhir::view::NORMALIZED_STATUS),
            "{c}"
        );
        // every coding the source sent is still there, in its order
        let rc = r["code"]["coding"].as_array().unwrap();
        let cc = c["code"]["coding"].as_array().unwrap();
        assert_eq!(&cc[..rc.len()], &rc[..]);
        for added in &cc[rc.len()..] {
            assert_eq!(
                added["extension"][0]["url"],
                aqueduct_serve::fhir::view::NORMALIZED_CODING
            );
        }
        if r["valueQuantity"].is_object() && r["valueQuantity"]["system"].is_null() {
            if c["valueQuantity"]["system"] == "http://unitsofmeasure.org" {
                ucum_added += 1;
            }
            assert_eq!(
                c["valueQuantity"]["value"], r["valueQuantity"]["value"],
                "values are not converted"
            );
        }
    }
    let without_system = raw
        .iter()
        .filter(|r| {
            r["resource"]["valueQuantity"].is_object()
                && r["resource"]["valueQuantity"]["system"].is_null()
        })
        .count();
    assert!(
        without_system == 0 || ucum_added > 0,
        "quantities without a UCUM code get one where normalization found it"
    );
    // the stored bytes are never rewritten
    let stored = store
        .list_patient_resources(&acme, &pid, Some("Observation"))
        .await
        .unwrap();
    for r in &stored {
        let v: Value = serde_json::from_slice(&r.bytes).unwrap();
        assert!(
            v.get("extension")
                .is_none_or(|e| !e.to_string().contains("aqueduct.dev"))
        );
    }

    // the clean view is written over the source's bytes: its order, its number text and its
    // escapes stay; an absolute reference to the source (known from the store's connection
    // record, not the configuration) becomes a facade reference
    let base = s.env.sim.base_url();
    let base = base.trim_end_matches('/');
    let bytes = format!(
        r#"{{"resourceType":"Observation","status":"final","valueQuantity":{{"value":7.10,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}},"id":"spliced","subject":{{"reference":"{base}/Patient/{pid}"}},"note":[{{"text":"caf\u00e9 \"ok\""}}],"performer":[{{"reference":"https://elsewhere.example/Practitioner/9"}}]}}"#
    );
    store
        .write_resources(
            &acme,
            &[RawResource {
                resource_type: "Observation".into(),
                logical_id: "spliced".into(),
                version_id: None,
                last_updated: None,
                source_url: format!("{base}/Observation/spliced"),
                patient_id: Some(pid.clone()),
                parse_status: ParseStatus::Ok,
                fetched_at: chrono::Utc::now(),
                bytes: bytes.clone().into_bytes(),
            }],
        )
        .await
        .unwrap();
    let (status, _, body) = s
        .get(&s.acme_read, "/fhir/acme/Observation/epic.spliced")
        .await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"resourceType":"Observation","status":"final","valueQuantity":{{"value":7.10,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}},"id":"epic.spliced","subject":{{"reference":"Patient/epic.{pid}"}},"note":[{{"text":"caf\u00e9 \"ok\""}}],"performer":[{{"reference":"https://elsewhere.example/Practitioner/9"}}],"meta":{{"source":"urn:aqueduct:connection:epic"}}}}"#
        )
    );
    let (_, _, raw_body) = s
        .get(&s.acme_read, "/fhir/acme/raw/Observation/epic.spliced")
        .await;
    assert_eq!(
        raw_body,
        bytes.into_bytes(),
        "the raw view is the bytes as stored"
    );
}
