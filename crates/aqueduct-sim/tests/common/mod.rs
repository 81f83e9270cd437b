#![allow(dead_code)]
//! Helpers shared by the integration tests: real HTTP on loopback, nothing mocked.

use aqueduct_sim::{SimConfig, SimServer, Simulator};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const PUBLIC: &str = "sim-public-app";
pub const CONFIDENTIAL: &str = "sim-confidential-app";
pub const SECRET: &str = "sim-confidential-secret";
pub const REDIRECT: &str = "http://127.0.0.1:9999/callback";

pub async fn start(config: SimConfig) -> SimServer {
    Simulator::start(config).await.expect("simulator starts")
}

pub fn small(personality: &str) -> SimConfig {
    SimConfig {
        personality: personality.into(),
        patients: 3,
        resources_per_patient: 60,
        ..SimConfig::default()
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

pub fn origin(sim: &SimServer) -> String {
    sim.base_url().trim_end_matches("/fhir/r4").to_string()
}

/// Extra headers a personality insists on (Epic's institution header).
pub fn vendor_headers(sim: &SimServer) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in &sim.personality().required_headers {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::try_from(name.as_str()),
            "test-client".parse(),
        ) {
            h.insert(k, v);
        }
    }
    h
}

/// Backend-style token for the confidential client (client_credentials, client_secret_basic).
pub async fn system_token(sim: &SimServer, scope: &str) -> String {
    let resp = http()
        .post(format!("{}/oauth2/token", origin(sim)))
        .basic_auth(CONFIDENTIAL, Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub fn pkce_pair(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Run GET /authorize and return the redirect Location.
pub async fn authorize(sim: &SimServer, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut q: Vec<(&str, String)> = vec![
        ("response_type", "code".into()),
        ("client_id", PUBLIC.into()),
        ("redirect_uri", REDIRECT.into()),
        (
            "scope",
            "openid fhirUser launch/patient offline_access patient/*.read".into(),
        ),
        ("state", "xyz-state".into()),
        ("aud", sim.base_url()),
        (
            "code_challenge",
            pkce_pair("verifier-0123456789-0123456789-0123456789-abc"),
        ),
        ("code_challenge_method", "S256".into()),
        ("nonce", "n-0S6_WzA2Mj".into()),
    ];
    for (k, v) in extra {
        q.retain(|(qk, _)| qk != k);
        if !v.is_empty() {
            q.push((k, v.to_string()));
        }
    }
    http()
        .get(format!("{}/oauth2/authorize", origin(sim)))
        .query(&q)
        .send()
        .await
        .expect("authorize")
}

pub fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

pub fn q<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Full standalone launch for the public client; returns the token response.
pub async fn patient_login(sim: &SimServer, scope: &str) -> Value {
    let verifier = "verifier-0123456789-0123456789-0123456789-abc";
    let resp = authorize(sim, &[("scope", scope)]).await;
    assert_eq!(resp.status(), 302);
    let loc = resp.headers()["location"]
        .to_str()
        .expect("loc")
        .to_string();
    let code = q(&query_of(&loc), "code")
        .expect("code in redirect")
        .to_string();
    let resp = http()
        .post(format!("{}/oauth2/token", origin(sim)))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

pub async fn get(sim: &SimServer, token: &str, url: &str) -> reqwest::Response {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}/{url}", sim.base_url())
    };
    http()
        .get(url)
        .bearer_auth(token)
        .headers(vendor_headers(sim))
        .send()
        .await
        .expect("GET")
}

pub async fn get_json(sim: &SimServer, token: &str, url: &str) -> (u16, Value) {
    let r = get(sim, token, url).await;
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// Follow next links to the end; returns the match entries' resources.
pub async fn fetch_all(sim: &SimServer, token: &str, first: &str) -> Vec<Value> {
    let mut url = first.to_string();
    let mut out = vec![];
    for _ in 0..10_000 {
        let (status, b) = get_json(sim, token, &url).await;
        assert_eq!(status, 200, "{url}: {b}");
        for e in b["entry"].as_array().cloned().unwrap_or_default() {
            if e["search"]["mode"] == "match" {
                out.push(e["resource"].clone());
            }
        }
        match next_link(&b) {
            Some(n) => url = n,
            None => return out,
        }
    }
    panic!("paging did not end");
}

pub fn ids(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}
