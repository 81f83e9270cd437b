//! Bearer JWTs from a configured issuer, verified against its JWKS served on loopback: a good
//! token reaches its one organization with its scope; a token with the wrong audience, issuer,
//! key or expiry, or without an organization or an Aqueduct scope, is refused; a rotated key
//! is picked up from the JWKS.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::{Arc, Mutex};

use aqueduct_serve::jwt::JwtIssuer;
use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_smart::{KeyAlgorithm, SigningKey, generate_key, jwks};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISS: &str = "https://idp.example";

fn token(key: &SigningKey, claims: Value) -> String {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(key.kid().to_string());
    let enc = EncodingKey::from_ec_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &enc).unwrap()
}

fn claims(org: &str, scope: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISS, "aud": "aqueduct", "sub": "app-1", "org": org, "scope": scope,
           "iat": now, "exp": now + exp_in})
}

#[tokio::test]
async fn jwts_of_a_configured_issuer_reach_their_one_organization() {
    // the issuer's JWKS, which the test rotates
    let k1 = generate_key(KeyAlgorithm::ES384).unwrap();
    let published = Arc::new(Mutex::new(jwks(std::slice::from_ref(&k1))));
    let p = Arc::clone(&published);
    let jwks_app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let p = Arc::clone(&p);
            async move { axum::Json(p.lock().unwrap().clone()) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, jwks_app).await });

    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let settings = ServeSettings {
        jwt_issuers: vec![JwtIssuer {
            issuer: ISS.into(),
            jwks_url: jwks_url.parse().unwrap(),
            audience: "aqueduct".into(),
            organization_claim: "org".into(),
            jwks_refetch_secs: 1,
        }],
        ..Default::default()
    };
    let state = AppState::new(store, Arc::new(Default::default()), settings);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(aqueduct_serve::serve(l, state, std::future::pending()));
    let http = reqwest::Client::new();
    let get = |t: String, path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };

    let good = token(&k1, claims("acme", "openid aqueduct/read", 300));
    let (status, org) = get(good.clone(), "/api/v1/organization").await;
    assert_eq!(status, 200);
    assert_eq!(org["name"], "acme", "the organization comes from the token");
    let (status, _) = get(good.clone(), "/fhir/globex/Patient/x.y").await;
    assert_eq!(
        status, 404,
        "another organization's facade does not exist for the token"
    );
    let r = http
        .post(format!("{base}/api/v1/connections/epic/sync"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a read token cannot start work");

    let refused = [
        (
            "expired",
            token(&k1, claims("acme", "aqueduct/read", -120)),
            401,
        ),
        (
            "wrong audience",
            token(&k1, {
                let mut c = claims("acme", "aqueduct/read", 300);
                c["aud"] = json!("someone-else");
                c
            }),
            401,
        ),
        (
            "wrong issuer",
            token(&k1, {
                let mut c = claims("acme", "aqueduct/read", 300);
                c["iss"] = json!("https://evil.example");
                c
            }),
            401,
        ),
        (
            "no organization",
            token(&k1, {
                let mut c = claims("acme", "aqueduct/read", 300);
                c.as_object_mut().unwrap().remove("org");
                c
            }),
            403,
        ),
        (
            "no aqueduct scope",
            token(&k1, claims("acme", "openid profile", 300)),
            403,
        ),
        ("not a JWT", "abc.def.ghi".to_string(), 401),
    ];
    for (why, t, want) in refused {
        let (status, body) = get(t, "/api/v1/organization").await;
        assert_eq!(status, want, "{why}: {body}");
    }
    // a key the issuer never published: refused (k2 is not in the JWKS yet)
    let k2 = generate_key(KeyAlgorithm::ES384).unwrap();
    let by_k2 = token(&k2, claims("acme", "aqueduct/admin", 300));
    let (status, _) = get(by_k2.clone(), "/api/v1/organization").await;
    assert_eq!(status, 401);
    // the issuer rotates to k2: after the refetch interval its tokens are accepted
    *published.lock().unwrap() = jwks(&[k1.clone(), k2.clone()]);
    let mut accepted = false;
    for _ in 0..30 {
        if get(by_k2.clone(), "/api/v1/api-keys").await.0 == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(accepted, "a rotated key is picked up from the JWKS");
}
