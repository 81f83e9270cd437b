use std::sync::Arc;
use std::time::Duration;

use aqueduct_smart::{SmartClient, Vault, VaultKey};
use aqueduct_store::Store;

pub struct Env {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub key_b64: String,
    pub client: Arc<SmartClient>,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    let key = VaultKey::generate().unwrap();
    let key_b64 = key.to_base64().to_string();
    let client = Arc::new(client_with(&store, &key_b64));
    Env {
        _dir: dir,
        store,
        key_b64,
        client,
    }
}

pub fn client_with(store: &Arc<dyn Store>, key_b64: &str) -> SmartClient {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    SmartClient::with_parts(
        http,
        Vault::new(store.clone(), VaultKey::from_base64(key_b64).unwrap()),
        Duration::from_secs(60),
    )
}

/// Plays the browser with an auto-approving server: GET the authorization URL, return the
/// redirect Location.
pub async fn follow_authorize(url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(url).send().await.unwrap();
    assert!(
        resp.status().is_redirection(),
        "authorize answered {}",
        resp.status()
    );
    resp.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}
