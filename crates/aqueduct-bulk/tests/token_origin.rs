//! The access token goes to a file URL only when the manifest says `requiresAccessToken` and
//! only to the FHIR server's origin or a configured `http.document_hosts` origin: a minimal
//! Bulk server on one loopback port lists files on its own origin and on another port, and
//! both record the Authorization header they receive.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use aqueduct_bulk::{BulkExporter, BulkOptions, Level};
use aqueduct_client::{
    AccessTokenSource, FhirClient, LimiterRegistry, StaticBearer, VendorProfile,
};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization, RunOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serves `answer(method, path)` on a fresh port, one request per connection, recording
/// (path, Authorization) of every request.
async fn serve(
    answer: impl Fn(&str, &str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync + 'static,
) -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let (seen2, answer) = (seen.clone(), Arc::new(answer));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (seen, answer) = (seen2.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.lines();
                let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
                let (method, path) = (
                    first[0].to_string(),
                    first.get(1).unwrap_or(&"").to_string(),
                );
                let auth = lines.take_while(|l| !l.is_empty()).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().to_string())
                });
                seen.lock().unwrap().push((path.clone(), auth));
                let (status, headers, body) = answer(&method, &path);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (origin, seen)
}

fn ndjson(id: &str) -> Vec<u8> {
    format!("{{\"resourceType\":\"Observation\",\"id\":\"{id}\"}}\n").into_bytes()
}

async fn export_with(document_hosts: &str) -> (Seen, Seen) {
    let (other, other_seen) = serve(|_, _| (200, vec![], ndjson("o2"))).await;
    let slot: Arc<Mutex<String>> = Arc::default();
    let (slot2, other2) = (slot.clone(), other.clone());
    let (origin, seen) = serve(move |method, path| {
        let me = slot2.lock().unwrap().clone();
        match (method, path) {
            ("GET", p) if p.starts_with("/fhir/$export") => (
                202,
                vec![("content-location".into(), format!("{me}/fhir/status/1"))],
                vec![],
            ),
            ("GET", "/fhir/status/1") => {
                let manifest = serde_json::json!({
                    "transactionTime": "2026-01-01T00:00:00Z",
                    "requiresAccessToken": true,
                    "output": [
                        {"type": "Observation", "url": format!("{me}/files/1.ndjson")},
                        {"type": "Observation", "url": format!("{other2}/files/2.ndjson")},
                    ],
                });
                (200, vec![], serde_json::to_vec(&manifest).unwrap())
            }
            ("DELETE", _) => (202, vec![], vec![]),
            ("GET", "/files/1.ndjson") => (200, vec![], ndjson("o1")),
            _ => (404, vec![], vec![]),
        }
    })
    .await;
    *slot.lock().unwrap() = origin.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let conn = ConnectionRef::new("org", "c");
    store
        .upsert_organization(&Organization {
            name: "org".into(),
            display_name: None,
        })
        .await
        .unwrap();
    store
        .upsert_connection(&ConnectionRecord {
            organization: "org".into(),
            name: "c".into(),
            base_url: format!("{origin}/fhir"),
            profile: "generic".into(),
        })
        .await
        .unwrap();
    let hosts = document_hosts.replace("OTHER", &other);
    let profile = VendorProfile::resolve_with_toml(
        "generic",
        &format!("[http]\ndocument_hosts = [{hosts}]\n"),
    )
    .unwrap();
    let auth: Arc<dyn AccessTokenSource> = Arc::new(StaticBearer::new("secret-token"));
    let client = FhirClient::builder(
        url::Url::parse(&format!("{origin}/fhir")).unwrap(),
        &profile,
    )
    .auth(auth.clone())
    .limiter_registry(Arc::new(LimiterRegistry::new()))
    .build()
    .unwrap();
    let report = BulkExporter::new(
        store,
        client,
        auth,
        conn,
        BulkOptions {
            level: Level::System,
            ..Default::default()
        },
    )
    .run()
    .await
    .unwrap();
    assert_eq!(report.outcome, RunOutcome::Complete, "{report:#?}");
    (seen, other_seen)
}

#[tokio::test]
async fn the_token_stays_on_the_servers_origin() {
    let (seen, other) = export_with("").await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(_, a)| a.as_deref() == Some("Bearer secret-token")),
        "{seen:?}"
    );
    let other = other.lock().unwrap().clone();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].1, None, "the token left the FHIR server's origin");
}

#[tokio::test]
async fn a_configured_document_host_receives_it() {
    let (_, other) = export_with("\"OTHER\"").await;
    let other = other.lock().unwrap().clone();
    assert_eq!(other[0].1.as_deref(), Some("Bearer secret-token"));
}
