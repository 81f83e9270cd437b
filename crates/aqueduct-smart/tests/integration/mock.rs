//! Fault cases against a scripted authorization server: id_token problems, JWKS failure, token
//! endpoint errors, incomplete token responses, discovery fallback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aqueduct_smart::*;
use aqueduct_store::ConnectionRef;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::common::env;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const CLIENT: &str = "mock-client";

struct Behavior {
    smart_config: Option<Value>,
    metadata: Option<Value>,
    jwks_status: u16,
    jwks: Value,
    token_status: u16,
    token_body: String,
    token_calls: u32,
    /// A slow token endpoint.
    token_delay: std::time::Duration,
    /// A `WWW-Authenticate` header on token endpoint answers, and their content type.
    token_challenge: Option<String>,
    token_content_type: &'static str,
}

struct Mock {
    base: String,
    origin: String,
    b: Arc<Mutex<Behavior>>,
    key: SigningKey,
}

type Shared = Arc<Mutex<Behavior>>;

fn reply(status: u16, body: String) -> axum::response::Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

async fn smart_config(State(b): State<Shared>) -> axum::response::Response {
    match b.lock().unwrap().smart_config.clone() {
        Some(v) => reply(200, v.to_string()),
        None => reply(404, "{}".into()),
    }
}

async fn metadata(State(b): State<Shared>) -> axum::response::Response {
    match b.lock().unwrap().metadata.clone() {
        Some(v) => reply(200, v.to_string()),
        None => reply(404, "{}".into()),
    }
}

async fn jwks_route(State(b): State<Shared>) -> axum::response::Response {
    let b = b.lock().unwrap();
    reply(b.jwks_status, b.jwks.to_string())
}

async fn token_route(State(b): State<Shared>) -> axum::response::Response {
    let delay = {
        let mut b = b.lock().unwrap();
        b.token_calls += 1;
        b.token_delay
    };
    tokio::time::sleep(delay).await;
    let b = b.lock().unwrap();
    let mut r = (
        StatusCode::from_u16(b.token_status).unwrap(),
        [("content-type", b.token_content_type)],
        b.token_body.clone(),
    )
        .into_response();
    if let Some(c) = &b.token_challenge {
        r.headers_mut()
            .insert("www-authenticate", c.parse().unwrap());
    }
    r
}

async fn start_mock() -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let base = format!("{origin}/fhir");
    let key = generate_key(KeyAlgorithm::RS384).unwrap();
    let b = Arc::new(Mutex::new(Behavior {
        smart_config: Some(json!({
            "issuer": base,
            "jwks_uri": format!("{origin}/jwks"),
            "authorization_endpoint": format!("{origin}/authorize"),
            "token_endpoint": format!("{origin}/token"),
            "revocation_endpoint": format!("{origin}/revoke"),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "capabilities": ["launch-standalone", "client-public", "permission-v1"],
        })),
        metadata: None,
        jwks_status: 200,
        jwks: jwks(std::slice::from_ref(&key)),
        token_status: 200,
        token_body: "{}".into(),
        token_calls: 0,
        token_delay: std::time::Duration::ZERO,
        token_challenge: None,
        token_content_type: "application/json",
    }));
    let app = Router::new()
        .route("/fhir/.well-known/smart-configuration", get(smart_config))
        .route("/fhir/metadata", get(metadata))
        .route("/jwks", get(jwks_route))
        .route("/token", post(token_route))
        .route("/revoke", post(|| async { "{}" }))
        .with_state(b.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Mock {
        base,
        origin,
        b,
        key,
    }
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
    header.kid = Some(key.kid().to_string());
    let ek = jsonwebtoken::EncodingKey::from_rsa_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &ek).unwrap()
}

fn claims(m: &Mock, nonce: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": m.base, "aud": CLIENT, "sub": "p1", "exp": now + 300, "iat": now,
           "nonce": nonce, "fhirUser": format!("{}/Patient/p1", m.base)})
}

fn token_body(id_token: Option<String>) -> Value {
    let mut v = json!({"access_token": "AT-1", "token_type": "Bearer", "expires_in": 3600,
        "scope": "launch/patient openid fhirUser offline_access patient/Observation.read",
        "patient": "p1", "refresh_token": "RT-1"});
    if let Some(t) = id_token {
        v["id_token"] = json!(t);
    }
    v
}

fn mock_connection(m: &Mock) -> SmartConnection {
    let mut sc = SmartConnection::new(ConnectionRef::new("org-m", "mock"), m.base.clone(), CLIENT);
    sc.resource_types = vec!["Observation".into()];
    sc
}

/// Begins a launch, lets `setup` script the server knowing the nonce, completes it.
async fn attempt(
    client: &SmartClient,
    m: &Mock,
    sc: &SmartConnection,
    setup: impl FnOnce(&mut Behavior, &str),
) -> Result<Authorized, SmartError> {
    let req = client.begin_standalone(sc, REDIRECT).await?;
    let u = url::Url::parse(&req.url).unwrap();
    let nonce = u
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    assert!(u.query_pairs().any(|(k, v)| k == "aud" && v == m.base));
    assert!(
        u.query_pairs()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );
    setup(&mut m.b.lock().unwrap(), &nonce);
    let params = RedirectParams {
        code: Some("code-1".into()),
        state: Some(req.state),
        ..Default::default()
    };
    client.complete(sc, &params).await
}

fn set_token(b: &mut Behavior, status: u16, body: Value) {
    b.token_status = status;
    b.token_body = body.to_string();
}

#[tokio::test]
async fn token_and_id_token_faults_leave_credentials_intact() {
    let env = env().await;
    let m = start_mock().await;
    let sc = mock_connection(&m);
    let key = m.key.clone();

    // clock skew within the leeway is accepted
    let out = attempt(&env.client, &m, &sc, |b, n| {
        let mut c = claims(&m, n);
        c["exp"] = json!(chrono::Utc::now().timestamp() - 30);
        set_token(b, 200, token_body(Some(sign(&key, &c))));
    })
    .await
    .unwrap();
    assert_eq!(out.context.patient.as_deref(), Some("p1"));
    assert_eq!(
        out.id_token.unwrap().fhir_user.unwrap(),
        format!("{}/Patient/p1", m.base)
    );
    // v1 scopes: the mock does not advertise permission-v2
    assert!(
        out.requested_scopes
            .contains(&"patient/Observation.read".to_string())
    );
    let snapshot = env
        .store
        .get_secret(&sc.conn, "tokens")
        .await
        .unwrap()
        .unwrap();

    let other = generate_key(KeyAlgorithm::RS384).unwrap();
    type Setup<'a> = Box<dyn FnOnce(&mut Behavior, &str) + 'a>;
    type Case<'a> = (&'static str, Setup<'a>, fn(&SmartError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "wrong signature",
            Box::new(|b, n| {
                // same kid, other key
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS384);
                header.kid = Some(key.kid().to_string());
                let ek = jsonwebtoken::EncodingKey::from_rsa_pem(other.to_pkcs8_pem().as_bytes())
                    .unwrap();
                let t = jsonwebtoken::encode(&header, &claims(&m, n), &ek).unwrap();
                set_token(b, 200, token_body(Some(t)));
            }),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Signature)),
        ),
        (
            "unknown kid",
            Box::new(|b, n| set_token(b, 200, token_body(Some(sign(&other, &claims(&m, n)))))),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::UnknownKey(_))),
        ),
        (
            "wrong aud",
            Box::new(|b, n| {
                let mut c = claims(&m, n);
                c["aud"] = json!("someone-else");
                set_token(b, 200, token_body(Some(sign(&key, &c))));
            }),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Audience)),
        ),
        (
            "wrong iss",
            Box::new(|b, n| {
                let mut c = claims(&m, n);
                c["iss"] = json!("https://evil.example");
                set_token(b, 200, token_body(Some(sign(&key, &c))));
            }),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Issuer)),
        ),
        (
            "wrong nonce",
            Box::new(|b, _| set_token(b, 200, token_body(Some(sign(&key, &claims(&m, "other")))))),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Nonce)),
        ),
        (
            "expired",
            Box::new(|b, n| {
                let mut c = claims(&m, n);
                c["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
                set_token(b, 200, token_body(Some(sign(&key, &c))));
            }),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Expired)),
        ),
        (
            "garbage id_token",
            Box::new(|b, _| set_token(b, 200, token_body(Some("not.a.jwt".into())))),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Malformed(_))),
        ),
        (
            "no id_token",
            Box::new(|b, _| set_token(b, 200, token_body(None))),
            |e| matches!(e, SmartError::IdToken(IdTokenProblem::Missing)),
        ),
        (
            "jwks down",
            Box::new(|b, n| {
                b.jwks_status = 500;
                set_token(b, 200, token_body(Some(sign(&key, &claims(&m, n)))));
            }),
            |e| matches!(e, SmartError::JwksFetch { .. }),
        ),
        (
            "400 invalid_grant",
            Box::new(|b, _| {
                b.jwks_status = 200;
                set_token(
                    b,
                    400,
                    json!({"error": "invalid_grant", "error_description": "code used"}),
                );
            }),
            |e| matches!(e, SmartError::TokenRejected { status: 400, error, .. } if error == "invalid_grant"),
        ),
        (
            "400 bad PKCE",
            Box::new(|b, _| {
                set_token(
                    b,
                    400,
                    json!({"error": "invalid_grant", "error_description": "code_verifier does not match"}),
                )
            }),
            |e| matches!(e, SmartError::TokenRejected { description: Some(d), .. } if d.contains("code_verifier")),
        ),
        (
            "401 invalid_client",
            Box::new(|b, _| set_token(b, 401, json!({"error": "invalid_client"}))),
            |e| matches!(e, SmartError::TokenRejected { status: 401, error, .. } if error == "invalid_client"),
        ),
        (
            "500",
            Box::new(|b, _| set_token(b, 500, json!({"error": "server_error"}))),
            |e| matches!(e, SmartError::TokenServerError { status: 500, .. }),
        ),
        (
            "missing expires_in",
            Box::new(|b, n| {
                let mut v = token_body(Some(sign(&key, &claims(&m, n))));
                v.as_object_mut().unwrap().remove("expires_in");
                set_token(b, 200, v);
            }),
            |e| matches!(e, SmartError::MissingField("expires_in")),
        ),
        (
            "missing patient",
            Box::new(|b, n| {
                let mut v = token_body(Some(sign(&key, &claims(&m, n))));
                v.as_object_mut().unwrap().remove("patient");
                set_token(b, 200, v);
            }),
            |e| matches!(e, SmartError::MissingField("patient")),
        ),
        (
            "html instead of JSON",
            Box::new(|b, _| {
                b.token_status = 200;
                b.token_body = "<html>login</html>".into();
            }),
            |e| matches!(e, SmartError::InvalidTokenResponse(_)),
        ),
    ];
    for (name, setup, check) in cases {
        let err = attempt(&env.client, &m, &sc, setup).await.unwrap_err();
        assert!(check(&err), "{name}: got {err:?}");
        assert!(
            !err.to_string().contains("AT-1") && !err.to_string().contains("RT-1"),
            "{name}"
        );
        assert_eq!(
            env.store
                .get_secret(&sc.conn, "tokens")
                .await
                .unwrap()
                .unwrap(),
            snapshot,
            "{name}: stored tokens changed"
        );
    }
    let ev = env.store.list_auth_events(&sc.conn, 200).await.unwrap();
    assert!(ev.iter().filter(|e| e.outcome == "failure").count() >= 16);
    assert!(
        ev.iter()
            .all(|e| !e.reason.as_deref().unwrap_or("").contains("AT-1"))
    );
}

#[tokio::test]
async fn refresh_faults() {
    let env = env().await;
    let m = start_mock().await;
    let mut sc = mock_connection(&m);
    sc.openid = false;
    attempt(&env.client, &m, &sc, |b, _| {
        set_token(b, 200, token_body(None))
    })
    .await
    .unwrap();
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    assert_eq!(tm.access_token().await.unwrap(), "AT-1");

    // a transient server error is returned as such (retry later), and audited
    set_token(&mut m.b.lock().unwrap(), 503, json!({}));
    let err = tm.refresh_after_unauthorized("AT-1").await.unwrap_err();
    assert!(
        matches!(err, SmartError::TokenServerError { status: 503, .. }),
        "{err:?}"
    );
    // a refused refresh asks for re-authorization
    set_token(
        &mut m.b.lock().unwrap(),
        400,
        json!({"error": "invalid_grant"}),
    );
    let err = tm.refresh_after_unauthorized("AT-1").await.unwrap_err();
    assert!(
        matches!(err, SmartError::ReauthorizationNeeded { .. }),
        "{err:?}"
    );
    // ...and the refused refresh token is not presented again by this manager
    let calls = m.b.lock().unwrap().token_calls;
    set_token(
        &mut m.b.lock().unwrap(),
        200,
        json!({"access_token": "AT-2", "token_type": "Bearer", "expires_in": 3600}),
    );
    assert!(matches!(
        tm.refresh_after_unauthorized("AT-1").await,
        Err(SmartError::ReauthorizationNeeded { .. })
    ));
    assert_eq!(m.b.lock().unwrap().token_calls, calls);
    // a manager that starts afresh (reload: another run) asks again;
    // a refresh answer without patient or scope keeps the launch context and grants;
    // without a new refresh token the old one is kept
    tm.reload().await;
    assert_eq!(tm.refresh_after_unauthorized("AT-1").await.unwrap(), "AT-2");
    // the old token was already replaced: no second refresh
    let calls = m.b.lock().unwrap().token_calls;
    assert_eq!(tm.refresh_after_unauthorized("AT-1").await.unwrap(), "AT-2");
    assert_eq!(m.b.lock().unwrap().token_calls, calls);
    let set = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    assert_eq!(set.context.patient.as_deref(), Some("p1"));
    assert_eq!(set.refresh_token.unwrap().expose(), "RT-1");
    assert!(set.granted_scopes.covers("Observation"));
    let ev = env.store.list_auth_events(&sc.conn, 50).await.unwrap();
    let refresh: Vec<_> = ev.iter().filter(|e| e.event == "refresh").collect();
    assert_eq!(refresh.iter().filter(|e| e.outcome == "failure").count(), 2);
    assert_eq!(refresh.iter().filter(|e| e.outcome == "success").count(), 1);
    // the Debug of the token set is redacted
    let dbg = format!("{:?}", env.client.load_tokens(&sc.conn).await.unwrap());
    assert!(!dbg.contains("AT-2") && !dbg.contains("RT-1"), "{dbg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_keeps_its_lease_so_no_other_process_spends_the_token() {
    let env = env().await;
    let m = start_mock().await;
    let mut sc = mock_connection(&m);
    sc.openid = false;
    attempt(&env.client, &m, &sc, |b, _| {
        set_token(b, 200, token_body(None))
    })
    .await
    .unwrap();
    // the token endpoint takes five lease lifetimes to answer
    let ttl = std::time::Duration::from_millis(200);
    {
        let mut b = m.b.lock().unwrap();
        b.token_delay = ttl * 5;
        set_token(
            &mut b,
            200,
            json!({"access_token": "AT-2", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT-2"}),
        );
        b.token_calls = 0;
    }
    let other = Arc::new(crate::common::client_with(&env.store, &env.key_b64));
    let a = Arc::new(TokenManager::new(env.client.clone(), sc.clone()).with_lease_ttl(ttl));
    let b = Arc::new(TokenManager::new(other, sc.clone()).with_lease_ttl(ttl));
    assert_eq!(a.access_token().await.unwrap(), "AT-1");
    assert_eq!(b.access_token().await.unwrap(), "AT-1");
    let (ra, rb) = {
        let (a, b) = (a.clone(), b.clone());
        tokio::join!(
            tokio::spawn(async move { a.refresh_after_unauthorized("AT-1").await }),
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                b.refresh_after_unauthorized("AT-1").await
            })
        )
    };
    assert_eq!(ra.unwrap().unwrap(), "AT-2");
    assert_eq!(rb.unwrap().unwrap(), "AT-2");
    assert_eq!(
        m.b.lock().unwrap().token_calls,
        1,
        "the lease was renewed while the token endpoint was slow"
    );
}

#[tokio::test]
async fn discovery_fallback_and_capability_checks() {
    let m = start_mock().await;
    let http = reqwest::Client::new();
    // .well-known missing: CapabilityStatement security extension
    {
        let mut b = m.b.lock().unwrap();
        b.smart_config = None;
        b.metadata = Some(
            json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
            "security": {"extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": format!("{}/authorize", m.origin)},
                    {"url": "token", "valueUri": format!("{}/token", m.origin)},
                    {"url": "revoke", "valueUri": format!("{}/revoke", m.origin)}
                ]}]}}]}),
        );
    }
    let d = Discovery::new(http.clone(), Duration::from_secs(60));
    let cfg = d.get(&format!("{}/", m.base)).await.unwrap();
    assert!(cfg.from_capability_statement);
    assert_eq!(cfg.token_endpoint, format!("{}/token", m.origin));
    assert_eq!(
        cfg.revocation_endpoint,
        Some(format!("{}/revoke", m.origin))
    );
    // cached: still answers after the server loses both documents
    m.b.lock().unwrap().metadata = None;
    assert!(d.get(&m.base).await.is_ok());
    d.clear();
    assert!(matches!(
        d.get(&m.base).await,
        Err(SmartError::Discovery { .. })
    ));

    // a server that only offers plain PKCE is refused before the user is sent anywhere
    m.b.lock().unwrap().smart_config = Some(json!({
        "authorization_endpoint": format!("{}/authorize", m.origin),
        "token_endpoint": format!("{}/token", m.origin),
        "code_challenge_methods_supported": ["plain"],
    }));
    let env = env().await;
    let sc = mock_connection(&m);
    assert!(matches!(
        env.client.begin_standalone(&sc, REDIRECT).await,
        Err(SmartError::Unsupported { .. })
    ));
    // a confidential client whose methods the server does not offer
    let cfg = SmartConfiguration {
        token_endpoint: "https://x/token".into(),
        token_endpoint_auth_methods_supported: vec!["private_key_jwt".into()],
        ..Default::default()
    };
    let secret = ClientCredentials::Secret(SecretString::new("s"));
    assert!(matches!(
        choose_auth_method(&secret, None, &cfg),
        Err(SmartError::Unsupported { .. })
    ));
    let cfg = SmartConfiguration {
        token_endpoint_auth_methods_supported: vec!["client_secret_post".into()],
        ..cfg
    };
    assert_eq!(
        choose_auth_method(&secret, None, &cfg).unwrap(),
        TokenAuthMethod::ClientSecretPost
    );
    // the EHR-launch capability is respected
    m.b.lock().unwrap().smart_config = Some(json!({
        "authorization_endpoint": format!("{}/authorize", m.origin),
        "token_endpoint": format!("{}/token", m.origin),
        "capabilities": ["launch-standalone"],
    }));
    let env = crate::common::env().await;
    let err = env
        .client
        .begin_ehr_launch("org-m", std::slice::from_ref(&sc), &m.base, "L1", REDIRECT)
        .await
        .unwrap_err();
    assert!(matches!(err, SmartError::Unsupported { .. }), "{err:?}");
}

#[tokio::test]
async fn expiring_token_without_refresh_token_needs_reauthorization() {
    let env = env().await;
    let m = start_mock().await;
    let mut sc = mock_connection(&m);
    sc.openid = false;
    sc.offline_access = false;
    attempt(&env.client, &m, &sc, |b, _| {
        set_token(
            b,
            200,
            json!({"access_token": "AT-1", "token_type": "Bearer", "expires_in": 1, "patient": "p1"}),
        )
    })
    .await
    .unwrap();
    let calls = m.b.lock().unwrap().token_calls;
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    match tm.access_token().await {
        Err(SmartError::ReauthorizationNeeded { reason, .. }) => {
            assert!(reason.contains("no refresh token"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.b.lock().unwrap().token_calls,
        calls,
        "no call without a refresh token"
    );
    // granted scopes absent from the response = the requested ones (RFC 6749 5.1)
    assert!(tm.covers("Observation").await.unwrap());
}

/// Discovered endpoints must be https (loopback excepted): plain http to another host is
/// refused before the user is sent anywhere, with the endpoint named; endpoints on another
/// origin are allowed but reported so the caller can record a finding.
#[tokio::test]
async fn insecure_and_foreign_discovered_endpoints() {
    let m = start_mock().await;
    m.b.lock().unwrap().smart_config = Some(json!({
        "issuer": m.base,
        "authorization_endpoint": format!("{}/authorize", m.origin),
        "token_endpoint": "http://auth.example.org/oauth2/token",
        "capabilities": ["launch-standalone"],
    }));
    let env = env().await;
    let sc = mock_connection(&m);
    let err = env
        .client
        .begin_standalone(&sc, REDIRECT)
        .await
        .unwrap_err();
    match &err {
        SmartError::InsecureEndpoint { endpoint, url, .. } => {
            assert_eq!(endpoint, "token_endpoint");
            assert_eq!(url, "http://auth.example.org/oauth2/token");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not https"), "{err}");
    let ev = env.store.list_auth_events(&sc.conn, 10).await.unwrap();
    assert!(ev.iter().any(|e| {
        e.event == "authorize"
            && e.reason
                .as_deref()
                .unwrap_or("")
                .starts_with("insecure-endpoint")
    }));

    // https on another origin: accepted, reported
    m.b.lock().unwrap().smart_config = Some(json!({
        "issuer": m.base,
        "authorization_endpoint": "https://login.example.org/authorize",
        "token_endpoint": "https://login.example.org/token",
        "jwks_uri": format!("{}/jwks", m.origin),
        "capabilities": ["launch-standalone"],
    }));
    env.client.discovery().clear();
    let cfg = env.client.discovery().get(&m.base).await.unwrap();
    let mut flagged: Vec<&str> = cfg.notices.iter().map(|n| n.endpoint.as_str()).collect();
    flagged.sort();
    assert_eq!(flagged, ["authorization_endpoint", "token_endpoint"]);
    let n = &cfg.notices[0];
    assert_eq!(n.kind, OTHER_ORIGIN_NOTICE);
    assert!(
        n.detail.contains("login.example.org") && n.detail.contains(&m.origin),
        "{}",
        n.detail
    );
    let f = n.to_finding(chrono::Utc::now(), Some(7));
    assert_eq!((f.kind.as_str(), f.run_id), (OTHER_ORIGIN_NOTICE, Some(7)));
    assert!(env.client.begin_standalone(&sc, REDIRECT).await.is_ok());
}

/// A server advertising RFC 9207 issuer identification must send `iss`: a response without it
/// is refused; with the right one it completes.
#[tokio::test]
async fn advertised_issuer_identification_requires_iss() {
    let m = start_mock().await;
    m.b.lock().unwrap().smart_config.as_mut().unwrap()["authorization_response_iss_parameter_supported"] =
        json!(true);
    let env = env().await;
    let sc = mock_connection(&m);
    let err = attempt(&env.client, &m, &sc, |b, nonce| {
        let t = sign(&m.key, &claims(&m, nonce));
        set_token(b, 200, token_body(Some(t)));
    })
    .await
    .unwrap_err();
    assert!(matches!(err, SmartError::IssuerMissing { .. }), "{err:?}");
    assert_eq!(m.b.lock().unwrap().token_calls, 0, "no code was exchanged");

    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let nonce = url::Url::parse(&req.url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .unwrap()
        .1
        .to_string();
    {
        let mut b = m.b.lock().unwrap();
        let t = sign(&m.key, &claims(&m, &nonce));
        set_token(&mut b, 200, token_body(Some(t)));
    }
    let params = RedirectParams {
        code: Some("code-1".into()),
        state: Some(req.state),
        iss: Some(m.base.clone()),
        ..Default::default()
    };
    env.client.complete(&sc, &params).await.unwrap();
}

/// A token endpoint that refuses with 401 and no OAuth JSON body: the error carries the
/// server's own words, from its `WWW-Authenticate` challenge or from its error page.
#[tokio::test]
async fn token_endpoint_401s_carry_the_servers_own_text() {
    let m = start_mock().await;
    let env = env().await;
    let sc = mock_connection(&m);
    let err = attempt(&env.client, &m, &sc, |b, _| {
        b.token_status = 401;
        b.token_content_type = "text/plain";
        b.token_body = "Unauthorized".into();
        b.token_challenge = Some(
            r#"Bearer realm="ehr", error="invalid_client", error_description="client registration mock-client is suspended""#
                .into(),
        );
    })
    .await
    .unwrap_err();
    match &err {
        SmartError::TokenRejected {
            status: 401,
            error,
            description,
            ..
        } => {
            assert_eq!(error, "invalid_client");
            assert_eq!(
                description.as_deref(),
                Some("client registration mock-client is suspended")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("is suspended"), "{err}");

    let err = attempt(&env.client, &m, &sc, |b, _| {
        b.token_status = 401;
        b.token_content_type = "text/html";
        b.token_challenge = None;
        b.token_body =
            "<html>\n<body><h1>Access denied</h1>\n<p>IP 10.1.2.3 is not allow-listed</p></body></html>"
                .into();
    })
    .await
    .unwrap_err();
    match &err {
        SmartError::TokenRejected {
            status: 401,
            error,
            description,
            ..
        } => {
            assert_eq!(error, "http-401");
            let d = description.as_deref().unwrap();
            assert!(
                d.contains("IP 10.1.2.3 is not allow-listed") && !d.contains('\n'),
                "{d}"
            );
        }
        other => panic!("{other:?}"),
    }
    // the audit keeps the server's words too
    let ev = env.store.list_auth_events(&sc.conn, 10).await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.reason.as_deref().unwrap_or("").contains("is suspended"))
    );
}
