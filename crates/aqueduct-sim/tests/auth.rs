//! SMART App Launch 2.x flows over real HTTP.

mod common;

use aqueduct_sim::{ClientKind, SimConfig};
use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const VERIFIER: &str = "verifier-0123456789-0123456789-0123456789-abc";

async fn exchange(
    sim: &aqueduct_sim::SimServer,
    code: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", PUBLIC),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    http()
        .post(format!("{}/oauth2/token", origin(sim)))
        .form(&form)
        .send()
        .await
        .expect("token")
}

async fn code_for(sim: &aqueduct_sim::SimServer, extra: &[(&str, &str)]) -> String {
    let r = authorize(sim, extra).await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    let pairs = query_of(&loc);
    assert_eq!(q(&pairs, "state"), Some("xyz-state"), "state echoed");
    q(&pairs, "code")
        .unwrap_or_else(|| panic!("no code in {loc}"))
        .to_string()
}

#[tokio::test]
async fn standalone_launch_with_pkce_returns_patient_and_a_verifiable_id_token() {
    let sim = start(small("reference")).await;
    sim.set_login_patient(&sim.patient_ids()[2]);
    let code = code_for(&sim, &[]).await;
    let r = exchange(&sim, &code, Some(VERIFIER)).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.expect("json");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["patient"], sim.patient_ids()[2].as_str());
    assert!(t["refresh_token"].is_string());
    assert!(
        t["scope"]
            .as_str()
            .expect("scope")
            .contains("patient/*.read")
    );
    let id_token = t["id_token"].as_str().expect("id_token");
    let jwks: JwkSet = http()
        .get(format!("{}/oauth2/jwks", origin(&sim)))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let header = jsonwebtoken::decode_header(id_token).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("key");
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[PUBLIC]);
    v.set_issuer(&[sim.base_url()]);
    let claims =
        jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).expect("dk"), &v)
            .expect("valid id_token")
            .claims;
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(
        claims["fhirUser"],
        format!("{}/Patient/{}", sim.base_url(), sim.patient_ids()[2])
    );
    // The code is single-use.
    let again = exchange(&sim, &code, Some(VERIFIER)).await;
    assert_eq!(again.status(), 400);
    let e: Value = again.json().await.expect("json");
    assert_eq!(e["error"], "invalid_grant");
}

#[tokio::test]
async fn pkce_plain_missing_and_wrong_verifiers_are_rejected() {
    let sim = start(small("reference")).await;
    let r = authorize(
        &sim,
        &[
            ("code_challenge_method", "plain"),
            ("code_challenge", VERIFIER),
        ],
    )
    .await;
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert_eq!(q(&query_of(&loc), "error"), Some("invalid_request"));
    let r = authorize(
        &sim,
        &[("code_challenge", ""), ("code_challenge_method", "")],
    )
    .await;
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert_eq!(q(&query_of(&loc), "error"), Some("invalid_request"));

    let code = code_for(&sim, &[]).await;
    let r = exchange(
        &sim,
        &code,
        Some("the-wrong-verifier-0123456789-0123456789-xyz"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    let code = code_for(&sim, &[]).await;
    let r = exchange(&sim, &code, None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn aud_rules_follow_the_personality() {
    let epic = start(small("epic")).await;
    let r = authorize(&epic, &[("aud", &format!("{}/", epic.base_url()))]).await;
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert_eq!(
        q(&query_of(&loc), "error"),
        Some("invalid_request"),
        "epic wants aud exactly"
    );
    let reference = start(small("reference")).await;
    let _ = code_for(
        &reference,
        &[("aud", &format!("{}/", reference.base_url()))],
    )
    .await;
    let payer = start(small("payer")).await;
    let _ = code_for(&payer, &[("aud", "")]).await;
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let sim = start(small("reference")).await;
    let t = patient_login(
        &sim,
        "openid fhirUser launch/patient offline_access patient/*.read",
    )
    .await;
    let rt1 = t["refresh_token"].as_str().expect("rt");
    let refresh = |rt: String| {
        let url = format!("{}/oauth2/token", origin(&sim));
        async move {
            http()
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", PUBLIC),
                ])
                .send()
                .await
                .expect("refresh")
        }
    };
    let r = refresh(rt1.to_string()).await;
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.expect("json");
    let rt2 = t2["refresh_token"].as_str().expect("rotated");
    assert_ne!(rt1, rt2);
    let (s, _) = get_json(
        &sim,
        t2["access_token"].as_str().expect("at"),
        "Observation",
    )
    .await;
    assert_eq!(s, 200);
    let reuse = refresh(rt1.to_string()).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(
        reuse.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    assert_eq!(sim.stats().tokens_refreshed, 1);
}

#[tokio::test]
async fn confidential_client_secret_basic_and_post() {
    let sim = start(small("payer")).await;
    let conf = sim
        .clients()
        .into_iter()
        .find(|c| c.kind == ClientKind::ConfidentialSymmetric)
        .expect("conf");
    let secret = conf.client_secret.clone().expect("secret");
    let url = format!("{}/oauth2/token", origin(&sim));
    let r = http()
        .post(&url)
        .basic_auth(&conf.client_id, Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .expect("basic");
    assert_eq!(r.status(), 200);
    let r = http()
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
            ("client_id", &conf.client_id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let r = http()
        .post(&url)
        .basic_auth(&conf.client_id, Some("wrong"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
}

fn assertion(
    alg: Algorithm,
    pem: &[u8],
    kid: &str,
    client_id: &str,
    aud: &str,
    jti: &str,
) -> String {
    let key = match alg {
        Algorithm::ES384 => EncodingKey::from_ec_pem(pem).expect("ec key"),
        _ => EncodingKey::from_rsa_pem(pem).expect("rsa key"),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &h,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240, "jti": jti}),
        &key,
    )
    .expect("sign")
}

async fn backend_token(sim: &aqueduct_sim::SimServer, jwt: &str) -> reqwest::Response {
    http()
        .post(format!("{}/oauth2/token", origin(sim)))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.rs system/Observation.rs"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt),
        ])
        .send()
        .await
        .expect("token")
}

#[tokio::test]
async fn backend_services_with_es384_and_rs384_private_key_jwt() {
    let sim = start(small("epic")).await;
    let token_url = format!("{}/oauth2/token", origin(&sim));
    sim.register_backend_client(
        "backend-es",
        include_str!("fixtures/client_ec384_jwks.json"),
    )
    .expect("register");
    sim.register_backend_client("backend-rs", include_str!("fixtures/client_rsa_jwks.json"))
        .expect("register");

    let es = assertion(
        Algorithm::ES384,
        include_bytes!("fixtures/client_ec384.pem"),
        "client-es384",
        "backend-es",
        &token_url,
        "j1",
    );
    let r = backend_token(&sim, &es).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.expect("json");
    assert!(t.get("refresh_token").is_none());
    let at = t["access_token"].as_str().expect("at");
    let (s, _) = get_json(&sim, at, "Observation?category=laboratory").await;
    assert_eq!(s, 200);
    let (s, _) = get_json(&sim, at, "Condition").await;
    assert_eq!(s, 403, "Condition outside the granted system scopes");

    let replay = backend_token(&sim, &es).await;
    assert_eq!(replay.status(), 401, "jti replay");

    let rs = assertion(
        Algorithm::RS384,
        include_bytes!("fixtures/client_rsa.pem"),
        "client-rs384",
        "backend-rs",
        &token_url,
        "j2",
    );
    assert_eq!(backend_token(&sim, &rs).await.status(), 200);

    let wrong_aud = assertion(
        Algorithm::RS384,
        include_bytes!("fixtures/client_rsa.pem"),
        "client-rs384",
        "backend-rs",
        "https://elsewhere/token",
        "j3",
    );
    assert_eq!(backend_token(&sim, &wrong_aud).await.status(), 401);
    let wrong_key = assertion(
        Algorithm::RS384,
        include_bytes!("fixtures/client_rsa.pem"),
        "client-rs384",
        "backend-es",
        &token_url,
        "j4",
    );
    assert_eq!(backend_token(&sim, &wrong_key).await.status(), 401);
}

#[tokio::test]
async fn ehr_launch_carries_patient_and_encounter() {
    let sim = start(small("reference")).await;
    let pid = sim.patient_ids()[1].clone();
    let launch = sim.create_ehr_launch(&pid, Some("enc-1-1"));
    let code = code_for(
        &sim,
        &[
            ("launch", &launch),
            ("scope", "launch openid fhirUser patient/*.read"),
        ],
    )
    .await;
    let t: Value = exchange(&sim, &code, Some(VERIFIER))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(t["patient"], pid.as_str());
    assert_eq!(t["encounter"], "enc-1-1");
    let r = authorize(&sim, &[("launch", "forged")]).await;
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert!(q(&query_of(&loc), "error").is_some());
}

#[tokio::test]
async fn consent_page_when_not_auto_approved() {
    let sim = start(SimConfig {
        auto_approve: false,
        ..small("reference")
    })
    .await;
    let r = authorize(&sim, &[]).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    let id = html
        .split("name=\"request_id\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("request id");
    let r = http()
        .post(format!("{}/oauth2/authorize/decision", origin(&sim)))
        .form(&[("request_id", id), ("decision", "approve")])
        .send()
        .await
        .expect("decide");
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert!(q(&query_of(&loc), "code").is_some());
}

#[tokio::test]
async fn revoked_and_expired_tokens_get_401() {
    let sim = start(SimConfig {
        token_lifetime_secs: Some(1),
        ..small("reference")
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let r = http()
        .post(format!("{}/oauth2/introspect", origin(&sim)))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("i");
    assert_eq!(r.json::<Value>().await.expect("json")["active"], true);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _) = get_json(&sim, &token, "Patient").await;
    assert_eq!(s, 401);
    let token = system_token(&sim, "system/*.read").await;
    let r = http()
        .post(format!("{}/oauth2/revoke", origin(&sim)))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let (s, _) = get_json(&sim, &token, "Patient").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn v2_scopes_are_understood() {
    let sim = start(small("reference")).await;
    let t = patient_login(
        &sim,
        "launch/patient patient/Observation.rs patient/Condition.r",
    )
    .await;
    let at = t["access_token"].as_str().expect("at");
    let (s, _) = get_json(&sim, at, "Observation").await;
    assert_eq!(s, 200);
    let (s, _) = get_json(&sim, at, "Condition").await;
    assert_eq!(s, 403, "read without search permission");
}

#[tokio::test]
async fn asymmetric_client_uses_private_key_jwt_in_the_authorization_code_flow() {
    let sim = start(small("epic")).await;
    sim.register_backend_client("app-es", include_str!("fixtures/client_ec384_jwks.json"))
        .expect("register");
    let r = authorize(&sim, &[("client_id", "app-es")]).await;
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    let code = q(&query_of(&loc), "code").expect("code").to_string();
    let token_url = format!("{}/oauth2/token", origin(&sim));
    let jwt = assertion(
        Algorithm::ES384,
        include_bytes!("fixtures/client_ec384.pem"),
        "client-es384",
        "app-es",
        &token_url,
        "ac-1",
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", jwt.as_str()),
    ];
    let r = http()
        .post(&token_url)
        .form(&form)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.expect("json");
    assert_eq!(t["patient"], sim.patient_ids()[0].as_str());
}
