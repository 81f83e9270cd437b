//! The SMART endpoints of `aqueduct serve` over real HTTP on loopback, against the simulator's
//! authorization server, with a real SQLite store and vault: an EHR launch (`iss` + `launch`)
//! ends with tokens stored and the launch context recorded; an unknown `iss` is refused
//! before any request leaves Aqueduct; a replayed or forged redirect is refused; the JWKS
//! publishes the backend-services key and a retired key only until its `published_until`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_core::{ConnectionRef, Store};
use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_sim::{ClientKind, SimConfig, SimServer, Simulator};
use aqueduct_smart::{KeyAlgorithm, SmartClient, SmartConnection, TokenManager, VaultKey};

const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Server {
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn sim() -> SimServer {
    Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 3,
        seed: 7,
        resources_per_patient: 5,
        auto_approve: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn server(config_toml: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let config = aqueduct_config::parse(config_toml, "test.toml").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = ServeSettings {
        public_url: Some(base.parse().unwrap()),
        ..Default::default()
    };
    let state = AppState::new(store.clone(), Arc::new(config), settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aqueduct_serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        _dir: dir,
        _stop: stop,
    }
}

fn ehr_config(sim: &SimServer, client_id: &str) -> String {
    format!(
        r#"allow_inline_secrets = true
[vault]
key = {{ value = "{VAULT_KEY}" }}
[organizations.acme.connections.ehr]
base_url = "{}"
profile = "generic"
auth = {{ method = "smart-ehr", client_id = "{client_id}" }}
"#,
        sim.base_url()
    )
}

fn public_client(sim: &SimServer) -> String {
    sim.clients()
        .into_iter()
        .find(|c| c.kind == ClientKind::Public)
        .unwrap()
        .client_id
}

#[tokio::test]
async fn an_ehr_launch_ends_with_tokens_and_the_launch_context_stored() {
    let sim = sim().await;
    let client_id = public_client(&sim);
    let s = server(&ehr_config(&sim, &client_id)).await;
    let patient = sim.patient_ids()[1].clone();
    let launch = sim.create_ehr_launch(&patient, Some("enc-7"));

    // the EHR opens /smart/launch in the user's browser
    let r = s
        .http
        .get(format!("{}/smart/launch", s.base))
        .query(&[
            ("iss", sim.base_url().as_str()),
            ("launch", launch.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.contains("launch="), "{authorize}");
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );

    // the authorization server approves and sends the browser back to our callback
    let r = s.http.get(&authorize).send().await.unwrap();
    assert!(
        r.status().is_redirection(),
        "authorize answered {}",
        r.status()
    );
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{}/smart/callback?", s.base)),
        "{callback}"
    );
    let r = s.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("acme/ehr"), "{page}");

    // tokens and the launch context are in the vault, readable by the engine's client
    let smart = Arc::new(
        SmartClient::new(s.store.clone(), VaultKey::from_base64(VAULT_KEY).unwrap()).unwrap(),
    );
    let sc = SmartConnection::new(
        ConnectionRef::new("acme", "ehr"),
        sim.base_url(),
        &client_id,
    );
    let context = TokenManager::new(smart, sc).context().await.unwrap();
    assert_eq!(context.patient.as_deref(), Some(patient.as_str()));
    assert_eq!(context.encounter.as_deref(), Some("enc-7"));

    // the same redirect again is refused: a state is good for one attempt
    let r = s.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // a forged state too
    let r = s
        .http
        .get(format!("{}/smart/callback?code=x&state=forged", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_iss_is_refused_before_any_request_leaves() {
    let sim = sim().await;
    let s = server(&ehr_config(&sim, &public_client(&sim))).await;
    let before = sim.stats().requests;
    for iss in [
        "https://evil.example/fhir",
        // the right host with another path is another endpoint
        &format!("{}/other", sim.base_url()),
    ] {
        let r = s
            .http
            .get(format!("{}/smart/launch", s.base))
            .query(&[("iss", iss), ("launch", "L1")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{iss}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body.to_string().contains("unknown-issuer"), "{body}");
    }
    // a launch without `launch` is a bad request too
    let r = s
        .http
        .get(format!("{}/smart/launch", s.base))
        .query(&[("iss", sim.base_url().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        sim.stats().requests,
        before,
        "nothing was sent to any server"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_jwks_publishes_current_keys_and_retired_ones_until_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut kids = Vec::new();
    for (name, alg) in [
        ("cur.pem", KeyAlgorithm::ES384),
        ("old.pem", KeyAlgorithm::RS384),
        ("gone.pem", KeyAlgorithm::ES384),
    ] {
        let key = aqueduct_smart::generate_key(alg).unwrap();
        std::fs::write(dir.path().join(name), key.to_pkcs8_pem()).unwrap();
        kids.push(key.kid().to_string());
    }
    let p = |n: &str| dir.path().join(n).display().to_string();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let config = format!(
        r#"[organizations.acme.connections.payer]
base_url = "https://payer.example/fhir"
profile = "generic"
[organizations.acme.connections.payer.auth]
method = "smart-backend"
client_id = "aq"
private_key = {{ file = "{}" }}
algorithm = "ES384"
key_id = "{}"
retired_keys = [
  {{ private_key = {{ file = "{}" }}, algorithm = "RS384", key_id = "{}", published_until = "{future}" }},
  {{ private_key = {{ file = "{}" }}, algorithm = "ES384", key_id = "{}", published_until = "{past}" }},
]
"#,
        p("cur.pem"),
        kids[0],
        p("old.pem"),
        kids[1],
        p("gone.pem"),
        kids[2],
    );
    let s = server(&config).await;
    let r = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: serde_json::Value = r.json().await.unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(published, vec![kids[0].as_str(), kids[1].as_str()]);
    for k in jwks["keys"].as_array().unwrap() {
        // public halves only
        assert!(k.get("d").is_none() && k.get("p").is_none(), "{k}");
    }
}
