//! End to end over real HTTP against the simulator's authorization server (auto-approve).

use std::sync::Arc;
use std::time::Duration;

use aqueduct_sim::{ClientKind, SimConfig, SimServer, Simulator};
use aqueduct_smart::*;
use aqueduct_store::ConnectionRef;

use crate::common::{Env, client_with, env, follow_authorize};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn sim(personality: &str, lifetime: Option<u64>) -> SimServer {
    Simulator::start(SimConfig {
        personality: personality.into(),
        patients: 3,
        seed: 7,
        resources_per_patient: 20,
        auto_approve: true,
        token_lifetime_secs: lifetime,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn connection(sim: &SimServer, org: &str, name: &str, kind: ClientKind) -> SmartConnection {
    let reg = sim.clients().into_iter().find(|c| c.kind == kind).unwrap();
    let mut sc = SmartConnection::new(ConnectionRef::new(org, name), sim.base_url(), reg.client_id);
    if let Some(secret) = reg.client_secret {
        sc.credentials = ClientCredentials::Secret(SecretString::new(secret));
    }
    sc.resource_types = vec!["Patient".into(), "Observation".into(), "Condition".into()];
    sc
}

async fn standalone(env: &Env, sc: &SmartConnection) -> Result<Authorized, SmartError> {
    let req = env.client.begin_standalone(sc, REDIRECT).await?;
    let loc = follow_authorize(&req.url).await;
    env.client
        .complete(sc, &RedirectParams::from_url(&loc)?)
        .await
}

async fn events(env: &Env, sc: &SmartConnection) -> Vec<aqueduct_store::AuthEvent> {
    env.store.list_auth_events(&sc.conn, 100).await.unwrap()
}

#[tokio::test]
async fn standalone_launch_over_loopback_with_openid() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let patient = sim.patient_ids()[1].clone();
    sim.set_login_patient(&patient);
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let opts = LoopbackOptions {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let out = run_standalone_launch(&env.client, &sc, opts, |url| {
        let url = url.to_string();
        tokio::spawn(async move {
            let u = url::Url::parse(&url).unwrap();
            let redirect = u
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .unwrap()
                .1
                .to_string();
            // a stray request with another state is refused and ignored
            let stray = reqwest::get(format!("{redirect}?code=x&state=forged"))
                .await
                .unwrap();
            assert_eq!(stray.status().as_u16(), 400);
            let loc = follow_authorize(&url).await;
            assert!(loc.starts_with(&redirect));
            let ok = reqwest::get(loc).await.unwrap();
            assert!(ok.status().is_success());
        });
    })
    .await
    .unwrap();
    assert_eq!(out.context.patient.as_deref(), Some(patient.as_str()));
    assert_eq!(out.context.need_patient_banner, Some(true));
    let claims = out.id_token.expect("id_token verified");
    assert_eq!(claims.iss, sim.base_url());
    assert!(
        out.context
            .fhir_user
            .as_deref()
            .unwrap()
            .ends_with(&format!("Patient/{patient}"))
    );
    assert!(out.has_refresh_token);
    assert!(out.uncovered_types.is_empty());
    assert!(out.granted_scopes.covers("Observation"));
    // v2 scopes since the server advertises permission-v2
    assert!(
        out.requested_scopes
            .contains(&"patient/Observation.rs".to_string())
    );
    let stored = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    assert_eq!(stored.context.patient.as_deref(), Some(patient.as_str()));
    // at rest the token is not in clear
    let raw = env
        .store
        .get_secret(&sc.conn, "tokens")
        .await
        .unwrap()
        .unwrap();
    let at = stored.access_token.expose().as_bytes();
    assert!(!raw.windows(at.len()).any(|w| w == at));
    let ev = events(&env, &sc).await;
    assert!(
        ev.iter()
            .any(|e| e.event == "authorize" && e.outcome == "success")
    );
    assert!(
        ev.iter()
            .any(|e| e.event == "token-exchange" && e.outcome == "success")
    );
    for e in &ev {
        assert!(
            !e.reason
                .clone()
                .unwrap_or_default()
                .contains(stored.access_token.expose())
        );
    }
    // A TokenManager hands the token out without refreshing.
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    assert_eq!(
        tm.access_token().await.unwrap(),
        stored.access_token.expose()
    );
    assert!(tm.covers("Condition").await.unwrap());
    assert_eq!(tm.refresh_count(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn state_and_code_checks() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let other = connection(&sim, "org-b", "ref", ClientKind::Public);

    // forged state
    let forged = RedirectParams::from_query("code=abc&state=nope");
    assert!(matches!(
        env.client.complete(&sc, &forged).await,
        Err(SmartError::UnknownState)
    ));

    // state issued for org-a presented for org-b
    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    let params = RedirectParams::from_url(&loc).unwrap();
    assert!(matches!(
        env.client.complete(&other, &params).await,
        Err(SmartError::StateMismatch { .. })
    ));
    // ...and the state was consumed
    assert!(matches!(
        env.client.complete(&sc, &params).await,
        Err(SmartError::UnknownState)
    ));

    // a good exchange, then the same redirect again (state single use)
    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    let first = RedirectParams::from_url(&loc).unwrap();
    env.client.complete(&sc, &first).await.unwrap();
    let before = env.store.get_secret(&sc.conn, "tokens").await.unwrap();
    assert!(matches!(
        env.client.complete(&sc, &first).await,
        Err(SmartError::UnknownState)
    ));

    // the replayed code under a fresh state: the server refuses it (invalid_grant)
    let req2 = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let replay = RedirectParams {
        code: first.code.clone(),
        state: Some(req2.state.clone()),
        ..Default::default()
    };
    match env.client.complete(&sc, &replay).await {
        Err(SmartError::TokenRejected {
            status: 400, error, ..
        }) => assert_eq!(error, "invalid_grant"),
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    // stored credentials untouched by the failures
    assert_eq!(
        env.store.get_secret(&sc.conn, "tokens").await.unwrap(),
        before
    );
    let ev = events(&env, &sc).await;
    assert!(
        ev.iter().any(|e| e.outcome == "failure"
            && e.reason.as_deref().unwrap_or("").contains("token-rejected"))
    );

    // the server denies (epic wants aud exactly, we send a trailing slash)
    let epic = sim_epic().await;
    let mut e = connection(&epic, "org-a", "epic", ClientKind::Public);
    e.aud = AudienceParam::BaseUrlTrailingSlash;
    assert!(matches!(
        standalone(&env, &e).await,
        Err(SmartError::AuthorizationDenied { .. })
    ));
    e.aud = AudienceParam::Omit;
    assert!(matches!(
        standalone(&env, &e).await,
        Err(SmartError::AuthorizationDenied { .. })
    ));
    e.aud = AudienceParam::BaseUrl;
    standalone(&env, &e).await.unwrap();
    e.aud = AudienceParam::Custom(epic.base_url());
    standalone(&env, &e).await.unwrap();
    epic.shutdown().await;
    sim.shutdown().await;
}

async fn sim_epic() -> SimServer {
    sim("epic", None).await
}

#[tokio::test]
async fn ehr_launch_checks_issuer_and_captures_context() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let patient = sim.patient_ids()[2].clone();
    let launch = sim.create_ehr_launch(&patient, Some("enc-1"));
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let conns = vec![sc.clone()];

    // unknown issuer, and a known issuer configured only for another organization
    let err = env
        .client
        .begin_ehr_launch(
            "org-a",
            &conns,
            "https://evil.example/fhir",
            &launch,
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SmartError::UnknownIssuer { .. }));
    let err = env
        .client
        .begin_ehr_launch("org-b", &conns, &sim.base_url(), &launch, REDIRECT)
        .await
        .unwrap_err();
    assert!(matches!(err, SmartError::UnknownIssuer { .. }));

    let req = env
        .client
        .begin_ehr_launch(
            "org-a",
            &conns,
            &format!("{}/", sim.base_url()),
            &launch,
            REDIRECT,
        )
        .await
        .unwrap();
    assert!(req.url.contains("launch="));
    assert_eq!(
        env.client.pending_connection(&req.state),
        Some(sc.conn.clone())
    );
    let loc = follow_authorize(&req.url).await;
    let out = env
        .client
        .complete(&sc, &RedirectParams::from_url(&loc).unwrap())
        .await
        .unwrap();
    assert_eq!(out.flow, Flow::EhrLaunch);
    assert_eq!(out.context.patient.as_deref(), Some(patient.as_str()));
    assert_eq!(out.context.encounter.as_deref(), Some("enc-1"));
    assert!(out.requested_scopes.contains(&"launch".to_string()));
    assert!(out.id_token.is_some());
    let ev = events(&env, &sc).await;
    assert!(
        ev.iter()
            .any(|e| e.event == "ehr-launch" && e.outcome == "success")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn confidential_symmetric_basic_and_post() {
    let env = env().await;
    let sim = sim("payer", None).await;
    let mut sc = connection(&sim, "org-a", "payer", ClientKind::ConfidentialSymmetric);
    sc.aud = AudienceParam::Omit; // this payer ignores aud
    let out = standalone(&env, &sc).await.unwrap();
    assert!(out.has_refresh_token);
    sc.auth_method = Some(TokenAuthMethod::ClientSecretPost);
    standalone(&env, &sc).await.unwrap();
    // refresh with the secret
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    let t = tm.access_token().await.unwrap();
    let t2 = tm.refresh_after_unauthorized(&t).await.unwrap();
    assert_ne!(t, t2);
    // a wrong secret: 401 invalid_client, stored credentials intact
    let before = env.store.get_secret(&sc.conn, "tokens").await.unwrap();
    sc.credentials = ClientCredentials::Secret(SecretString::new("wrong"));
    sc.auth_method = None;
    match standalone(&env, &sc).await {
        Err(SmartError::TokenRejected {
            status: 401, error, ..
        }) => assert_eq!(error, "invalid_client"),
        other => panic!("expected invalid_client, got {other:?}"),
    }
    assert_eq!(
        env.store.get_secret(&sc.conn, "tokens").await.unwrap(),
        before
    );
    // the secret itself never shows in Debug or errors
    assert!(!format!("{sc:?}").contains("sim-confidential-secret"));
    sim.shutdown().await;
}

#[tokio::test]
async fn backend_services_es384_and_rs384() {
    let env = env().await;
    let sim = sim("reference", None).await;
    for (alg, name) in [
        (KeyAlgorithm::ES384, "bulk-es"),
        (KeyAlgorithm::RS384, "bulk-rs"),
    ] {
        let key = generate_key(alg).unwrap();
        let client_id = format!("backend-{name}");
        sim.register_backend_client(&client_id, &jwks(std::slice::from_ref(&key)).to_string())
            .unwrap();
        let conn = ConnectionRef::new("org-a", name);
        env.client
            .vault()
            .put_private_key(&conn, &key)
            .await
            .unwrap();
        let loaded = env
            .client
            .vault()
            .get_private_key(&conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.kid(), key.kid());
        let mut sc = SmartConnection::new(conn.clone(), sim.base_url(), client_id);
        sc.credentials = ClientCredentials::PrivateKey(loaded);
        sc.backend_services = true;
        sc.resource_types = vec!["Observation".into(), "Patient".into()];
        let tm = TokenManager::new(env.client.clone(), sc.clone());
        let t1 = tm.access_token().await.unwrap();
        let set = env.client.load_tokens(&conn).await.unwrap().unwrap();
        assert_eq!(set.flow, Flow::Backend);
        assert!(set.granted_scopes.covers("Observation"));
        assert!(
            set.requested_scopes
                .iter()
                .all(|s| s.starts_with("system/"))
        );
        // a 401 gets a fresh client_credentials token (new jti each time)
        let t2 = tm.refresh_after_unauthorized(&t1).await.unwrap();
        assert_ne!(t1, t2);
        let t3 = tm.refresh_after_unauthorized(&t2).await.unwrap();
        assert_ne!(t2, t3);
        assert_eq!(tm.refresh_count(), 2);
        let ev = events(&env, &sc).await;
        assert!(
            ev.iter()
                .filter(|e| e.event == "backend-token" && e.outcome == "success")
                .count()
                >= 3
        );
    }
    // an unregistered key is refused
    let key = generate_key(KeyAlgorithm::ES384).unwrap();
    let mut sc = SmartConnection::new(
        ConnectionRef::new("org-a", "rogue"),
        sim.base_url(),
        "backend-bulk-es",
    );
    sc.credentials = ClientCredentials::PrivateKey(key);
    sc.backend_services = true;
    sc.resource_types = vec!["Observation".into()];
    assert!(matches!(
        env.client.backend_token(&sc).await,
        Err(SmartError::TokenRejected { status: 401, .. })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_ahead_single_flight_rotation_and_revocation() {
    let env = env().await;
    let sim = sim("reference", Some(4)).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let first = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    let tm = Arc::new(TokenManager::new(env.client.clone(), sc.clone()));
    let t0 = tm.access_token().await.unwrap();
    assert_eq!(t0, first.access_token.expose());
    assert_eq!(sim.stats().tokens_refreshed, 0);

    // ahead of expiry: the 4-second token is refreshed once less than 2 s are left
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let t1 = tm.access_token().await.unwrap();
    assert_ne!(t0, t1);
    assert_eq!(sim.stats().tokens_refreshed, 1);
    let second = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    // rotation: a new refresh token was stored, context kept
    assert_ne!(
        first.refresh_token.as_ref().unwrap().expose(),
        second.refresh_token.as_ref().unwrap().expose()
    );
    assert_eq!(second.context.patient, first.context.patient);

    // after a 401: ten concurrent callers, one refresh at the server
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let tm = tm.clone();
        let rejected = t1.clone();
        tasks.push(tokio::spawn(async move {
            tm.refresh_after_unauthorized(&rejected).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    assert!(got.iter().all(|t| *t == got[0]));
    assert_ne!(got[0], t1);
    assert_eq!(sim.stats().tokens_refreshed, 2);
    assert_eq!(tm.refresh_count(), 2);

    // the rotated-away refresh token is dead at the server
    let err = env.client.refresh(&sc, &first).await.unwrap_err();
    assert!(
        matches!(err, SmartError::ReauthorizationNeeded { .. }),
        "{err:?}"
    );

    // revocation at the server, then local deletion
    assert!(tm.revoke().await.unwrap());
    assert!(env.client.load_tokens(&sc.conn).await.unwrap().is_none());
    assert!(matches!(
        tm.access_token().await,
        Err(SmartError::NotAuthorized { .. })
    ));
    let ev = events(&env, &sc).await;
    assert!(
        ev.iter()
            .any(|e| e.event == "revoke" && e.outcome == "success")
    );
    assert!(
        ev.iter()
            .any(|e| e.event == "refresh" && e.outcome == "failure")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn revoked_refresh_token_needs_reauthorization() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let set = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    // someone revokes the refresh token at the server (the user, in the portal)
    let cfg = env.client.discovery().get(&sim.base_url()).await.unwrap();
    let resp = reqwest::Client::new()
        .post(cfg.revocation_endpoint.clone().unwrap())
        .form(&[("token", set.refresh_token.as_ref().unwrap().expose())])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let before = env.store.get_secret(&sc.conn, "tokens").await.unwrap();
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    let err = tm
        .refresh_after_unauthorized(set.access_token.expose())
        .await
        .unwrap_err();
    match &err {
        SmartError::ReauthorizationNeeded { connection, reason } => {
            assert_eq!(connection, "org-a/ref");
            assert!(reason.contains("invalid_grant"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        env.store.get_secret(&sc.conn, "tokens").await.unwrap(),
        before
    );
    let ev = events(&env, &sc).await;
    let failure = ev
        .iter()
        .find(|e| e.event == "refresh" && e.outcome == "failure")
        .unwrap();
    assert!(failure.reason.as_deref().unwrap().contains("invalid_grant"));
    assert!(
        !failure
            .reason
            .as_deref()
            .unwrap()
            .contains(set.refresh_token.as_ref().unwrap().expose())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cerner_ten_minute_tokens() {
    let env = env().await;
    let sim = sim("cerner", None).await;
    let mut sc = connection(&sim, "org-a", "cerner", ClientKind::Public);
    sc.aud = AudienceParam::BaseUrlTrailingSlash;
    let out = standalone(&env, &sc).await.unwrap();
    let life = (out.expires_at - chrono::Utc::now()).num_seconds();
    assert!((590..=600).contains(&life), "{life}");
    let set = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    let now = chrono::Utc::now();
    assert!(!set.needs_refresh(now));
    assert!(!set.needs_refresh(now + chrono::Duration::seconds(500)));
    assert!(set.needs_refresh(now + chrono::Duration::seconds(545)));
    sim.shutdown().await;
}

#[tokio::test]
async fn narrowed_scopes_become_findings() {
    let env = env().await;
    let sim = sim("athena", None).await;
    let mut sc = connection(&sim, "org-a", "athena", ClientKind::Public);
    sc.resource_types = vec![
        "Patient".into(),
        "DocumentReference".into(),
        "Observation".into(),
    ];
    sc.scope_version = Some(ScopeVersion::V1);
    let out = standalone(&env, &sc).await.unwrap();
    assert!(
        out.requested_scopes
            .contains(&"patient/DocumentReference.read".to_string())
    );
    assert_eq!(out.uncovered_types, vec!["DocumentReference".to_string()]);
    assert!(!out.granted_scopes.covers("DocumentReference"));
    let tm = TokenManager::new(env.client.clone(), sc.clone());
    assert!(!tm.covers("DocumentReference").await.unwrap());
    assert!(tm.covers("Observation").await.unwrap());
    let findings = env.store.list_findings(&sc.conn, 10).await.unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].kind, "scope-narrowed");
    assert_eq!(findings[0].severity, "warning");
    assert_eq!(
        findings[0].resource_type.as_deref(),
        Some("DocumentReference")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn vault_wrong_key_and_rotation() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    env.client
        .vault()
        .put_client_secret(&sc.conn, "s3cret")
        .await
        .unwrap();
    let before = env.store.list_secrets("org-a").await.unwrap();

    let other_key = VaultKey::generate().unwrap();
    let wrong = client_with(&env.store, &other_key.to_base64());
    match wrong.load_tokens(&sc.conn).await {
        Err(SmartError::VaultDecrypt {
            connection,
            secret,
            cause,
        }) => {
            assert_eq!(connection, "org-a/ref");
            assert_eq!(secret, "tokens");
            assert!(matches!(cause, DecryptCause::WrongKey { .. }), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    // rotation with a wrong old key rewrites nothing
    let bogus = VaultKey::generate().unwrap();
    assert!(
        Vault::rotate(env.store.as_ref(), "org-a", &bogus, &other_key)
            .await
            .is_err()
    );
    assert_eq!(env.store.list_secrets("org-a").await.unwrap(), before);

    let old = VaultKey::from_base64(&env.key_b64).unwrap();
    let n = Vault::rotate(env.store.as_ref(), "org-a", &old, &other_key)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(wrong.load_tokens(&sc.conn).await.unwrap().is_some());
    assert_eq!(
        wrong
            .vault()
            .get_client_secret(&sc.conn)
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "s3cret"
    );
    assert!(env.client.load_tokens(&sc.conn).await.is_err());
    // re-running is harmless
    assert_eq!(
        Vault::rotate(env.store.as_ref(), "org-a", &old, &other_key)
            .await
            .unwrap(),
        0
    );
    // the same connection name in another organization cannot read org-a's record
    let foreign = ConnectionRef::new("org-b", "ref");
    let record = env
        .store
        .get_secret(&sc.conn, "tokens")
        .await
        .unwrap()
        .unwrap();
    env.store
        .put_secret(&foreign, "tokens", &record)
        .await
        .unwrap();
    assert!(matches!(
        wrong.load_tokens(&foreign).await,
        Err(SmartError::VaultDecrypt { .. })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn managers_sharing_a_store_do_not_refresh_twice() {
    // two processes (two clients, two managers) over one store
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let other_client = Arc::new(client_with(&env.store, &env.key_b64));
    let a = TokenManager::new(env.client.clone(), sc.clone());
    let b = TokenManager::new(other_client, sc.clone());
    let t0 = a.access_token().await.unwrap();
    assert_eq!(b.access_token().await.unwrap(), t0);
    // a refreshes after a 401 (rotating the refresh token)...
    let t1 = a.refresh_after_unauthorized(&t0).await.unwrap();
    assert_ne!(t0, t1);
    // ...b then gets a 401 with its old token: it adopts a's token instead of refreshing
    // with the rotated-away refresh token
    assert_eq!(b.refresh_after_unauthorized(&t0).await.unwrap(), t1);
    assert_eq!(b.refresh_count(), 0);
    assert_eq!(sim.stats().tokens_refreshed, 1);
    // and b can refresh later with the newest refresh token
    let t2 = b.refresh_after_unauthorized(&t1).await.unwrap();
    assert_ne!(t1, t2);
    assert_eq!(sim.stats().tokens_refreshed, 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_refreshing_at_the_same_instant_spend_the_refresh_token_once() {
    // two processes: two handles on one SQLite file, two clients, two managers
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let path = env._dir.path().join("store.db");
    let second_store = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    let other_client = Arc::new(client_with(&second_store, &env.key_b64));
    let a = Arc::new(TokenManager::new(env.client.clone(), sc.clone()));
    let b = Arc::new(TokenManager::new(other_client, sc.clone()));
    let t0 = a.access_token().await.unwrap();
    assert_eq!(b.access_token().await.unwrap(), t0);
    for round in 0..5 {
        // both get a 401 for the same token and refresh at once; the sim's refresh tokens
        // are single-use, so a second spend would need a re-authorization
        let rejected = a.access_token().await.unwrap();
        let (ra, rb) = {
            let (a, b) = (a.clone(), b.clone());
            let (r1, r2) = (rejected.clone(), rejected.clone());
            tokio::join!(
                tokio::spawn(async move { a.refresh_after_unauthorized(&r1).await }),
                tokio::spawn(async move { b.refresh_after_unauthorized(&r2).await })
            )
        };
        let (ta, tb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        assert_eq!(ta, tb, "round {round}: both use the one new token");
        assert_ne!(ta, rejected);
        assert_eq!(sim.stats().tokens_refreshed, round + 1, "round {round}");
    }
    assert_eq!(a.refresh_count() + b.refresh_count(), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn state_expires() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let mut client = client_with(&env.store, &env.key_b64);
    client.set_state_ttl(Duration::from_millis(50));
    let req = client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client
        .complete(&sc, &RedirectParams::from_url(&loc).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, SmartError::StateExpired { .. }), "{err:?}");
    assert!(client.load_tokens(&sc.conn).await.unwrap().is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn signing_key_is_created_once_and_published() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let conn = ConnectionRef::new("org-a", "bulk");
    let k1 = env
        .client
        .ensure_signing_key(&conn, KeyAlgorithm::ES384)
        .await
        .unwrap();
    let k2 = env
        .client
        .ensure_signing_key(&conn, KeyAlgorithm::ES384)
        .await
        .unwrap();
    assert_eq!(k1.kid(), k2.kid());
    let set = jwks(std::slice::from_ref(&k1));
    assert_eq!(set["keys"][0]["kty"], "EC");
    assert_eq!(set["keys"][0]["crv"], "P-384");
    assert!(
        set["keys"][0].get("d").is_none(),
        "no private part in the JWKS"
    );
    sim.register_backend_client("bulk-client", &set.to_string())
        .unwrap();
    let mut sc = SmartConnection::new(conn, sim.base_url(), "bulk-client");
    sc.credentials = ClientCredentials::PrivateKey(k2);
    sc.backend_services = true;
    sc.resource_types = vec!["Patient".into()];
    let out = env.client.backend_token(&sc).await.unwrap();
    assert!(out.granted_scopes.covers("Patient"));
    sim.shutdown().await;
}

#[tokio::test]
async fn adapter_feeds_the_fhir_client() {
    use aqueduct_core::{AccessTokenSource, AuthError};
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let src = SmartTokenSource(Arc::new(env.client.token_manager(sc.clone())));
    let t = src.token().await.unwrap().unwrap();
    let t2 = src.on_unauthorized(&t).await.unwrap().unwrap();
    assert_ne!(t, t2);
    env.client.forget(&sc.conn).await.unwrap();
    let fresh = SmartTokenSource(Arc::new(env.client.token_manager(sc.clone())));
    assert!(matches!(
        fresh.token().await,
        Err(AuthError::ReauthorizationNeeded(_))
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn another_process_can_complete_a_launch_once() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    let params = RedirectParams::from_url(&loc).unwrap();
    // the pending authorization is in the store, encrypted (no verifier in clear)
    let names: Vec<String> = env
        .store
        .list_secrets("org-a")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("pending-auth:")),
        "{names:?}"
    );
    let b = Arc::new(client_with(&env.store, &env.key_b64));
    let c = Arc::new(client_with(&env.store, &env.key_b64));
    let (rb, rc) = tokio::join!(b.complete(&sc, &params), c.complete(&sc, &params));
    let oks = [rb.is_ok(), rc.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(oks, 1, "exactly one completes: {rb:?} {rc:?}");
    let err = if let Err(e) = rb { e } else { rc.unwrap_err() };
    assert!(matches!(err, SmartError::UnknownState), "{err:?}");
    assert!(
        !env.store
            .list_secrets("org-a")
            .await
            .unwrap()
            .iter()
            .any(|(_, n, _)| n.starts_with("pending-auth:"))
    );
    sim.shutdown().await;
}

/// RFC 9207: a redirect naming another issuer is refused before its code is spent, audited,
/// and leaves nothing stored; the right issuer passes.
#[tokio::test]
async fn authorization_response_from_another_issuer_is_refused() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    let forged = format!("{loc}&iss=https%3A%2F%2Fattacker.example%2Ffhir");
    let err = env
        .client
        .complete(&sc, &RedirectParams::from_url(&forged).unwrap())
        .await
        .unwrap_err();
    match &err {
        SmartError::IssuerMismatch { expected, received } => {
            assert_eq!(expected, &sim.base_url());
            assert_eq!(received, "https://attacker.example/fhir");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("attacker.example"), "{err}");
    assert!(env.client.load_tokens(&sc.conn).await.unwrap().is_none());
    let ev = events(&env, &sc).await;
    let refused = ev
        .iter()
        .find(|e| e.event == "token-exchange" && e.outcome == "failure")
        .expect("the refusal is audited");
    let reason = refused.reason.as_deref().unwrap();
    assert!(reason.starts_with("issuer-mismatch"), "{reason}");
    assert!(reason.contains("attacker.example"), "{reason}");
    assert_eq!(sim.stats().tokens_issued, 0, "the code was never exchanged");

    // the server's own issuer is accepted
    let cfg = env.client.discovery().get(&sim.base_url()).await.unwrap();
    let req = env.client.begin_standalone(&sc, REDIRECT).await.unwrap();
    let loc = follow_authorize(&req.url).await;
    let mut u = url::Url::parse(&loc).unwrap();
    u.query_pairs_mut()
        .append_pair("iss", cfg.issuer.as_deref().unwrap());
    env.client
        .complete(&sc, &RedirectParams::from_url(u.as_str()).unwrap())
        .await
        .unwrap();
    assert!(env.client.load_tokens(&sc.conn).await.unwrap().is_some());
    sim.shutdown().await;
}

/// The simulator serves everything from its own loopback origin: discovery accepts plain
/// http there and has nothing to report.
#[tokio::test]
async fn loopback_discovery_is_accepted_without_notices() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let cfg = env.client.discovery().get(&sim.base_url()).await.unwrap();
    assert!(cfg.token_endpoint.starts_with("http://127.0.0.1:"));
    assert!(cfg.notices.is_empty(), "{:?}", cfg.notices);
    sim.shutdown().await;
}

/// Tokens sealed under another vault key: the error says so (not a generic failure), and the
/// FHIR client sees a run-stopping failure rather than one refusal per request.
#[tokio::test]
async fn undecryptable_stored_tokens_stop_the_run_with_a_clear_error() {
    use aqueduct_core::{AccessTokenSource, AuthError};
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let other = VaultKey::generate().unwrap();
    let wrong = Arc::new(client_with(&env.store, &other.to_base64()));
    let tm = Arc::new(wrong.token_manager(sc.clone()));
    let err = tm.access_token().await.unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("org-a/ref")
            && msg.contains("another vault key")
            && msg.contains(&other.id_hex()),
        "{msg}"
    );
    let src = SmartTokenSource(tm);
    match src.token().await {
        Err(AuthError::ReauthorizationNeeded(m)) => {
            assert!(m.contains("another vault key"), "{m}")
        }
        other => panic!("expected a run-stopping failure, got {other:?}"),
    }
    // a damaged record says it is damaged, not that the key is wrong
    let mut record = env
        .store
        .get_secret(&sc.conn, "tokens")
        .await
        .unwrap()
        .unwrap();
    let last = record.len() - 1;
    record[last] ^= 0x55;
    env.store
        .put_secret(&sc.conn, "tokens", &record)
        .await
        .unwrap();
    let err = env.client.load_tokens(&sc.conn).await.unwrap_err();
    assert!(
        matches!(
            err,
            SmartError::VaultDecrypt {
                cause: DecryptCause::Altered,
                ..
            }
        ),
        "{err:?}"
    );
    sim.shutdown().await;
}

/// The user denies at the consent page: the loopback page says "authorization denied" with the
/// server's error, and the launch ends with that error (audited), storing nothing.
#[tokio::test]
async fn a_denied_standalone_launch_says_so_in_the_browser() {
    let env = env().await;
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 2,
        seed: 7,
        resources_per_patient: 5,
        auto_approve: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    let opts = LoopbackOptions {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let (page_tx, page_rx) = tokio::sync::oneshot::channel::<(u16, String)>();
    let out = run_standalone_launch(&env.client, &sc, opts, |url| {
        let url = url.to_string();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            // the consent page, then "Deny"
            let consent = http.get(&url).send().await.unwrap().text().await.unwrap();
            let grab = |name: &str| {
                let at = consent.find(name).unwrap() + name.len();
                consent[at..].split('"').next().unwrap().to_string()
            };
            let action = grab("action=\"");
            let id = grab("name=\"request_id\" value=\"");
            let resp = http
                .post(&action)
                .form(&[("request_id", id.as_str()), ("decision", "deny")])
                .send()
                .await
                .unwrap();
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            assert!(loc.contains("error=access_denied"), "{loc}");
            let page = reqwest::get(loc).await.unwrap();
            let status = page.status().as_u16();
            let _ = page_tx.send((status, page.text().await.unwrap()));
        });
    })
    .await;
    match &out {
        Err(SmartError::AuthorizationDenied { error, .. }) => assert_eq!(error, "access_denied"),
        other => panic!("{other:?}"),
    }
    let (status, page) = page_rx.await.unwrap();
    assert_eq!(status, 403);
    assert!(
        page.to_lowercase().contains("authorization denied"),
        "{page}"
    );
    assert!(page.contains("access_denied"), "{page}");
    assert!(!page.contains("You can close"), "{page}");
    assert!(env.client.load_tokens(&sc.conn).await.unwrap().is_none());
    let ev = events(&env, &sc).await;
    assert!(ev.iter().any(|e| e.event == "token-exchange"
        && e.outcome == "failure"
        && e.reason.as_deref().unwrap_or("").contains("access_denied")));
    sim.shutdown().await;
}

/// A refresh the server refuses is asked once: N callers that hit a 401 together see one
/// refresh request at the simulator, and all get the refusal; later callers are not retried
/// against the dead grant; once authorized again, the manager adopts the new tokens from the
/// vault without a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_is_refused_once_for_all_waiters() {
    let env = env().await;
    let sim = sim("reference", None).await;
    let sc = connection(&sim, "org-a", "ref", ClientKind::Public);
    standalone(&env, &sc).await.unwrap();
    let set = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    let cfg = env.client.discovery().get(&sim.base_url()).await.unwrap();
    let revoked = reqwest::Client::new()
        .post(cfg.revocation_endpoint.clone().unwrap())
        .form(&[("token", set.refresh_token.as_ref().unwrap().expose())])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let refusals = |sim: &SimServer| sim.stats().by_status.get(&400).copied().unwrap_or(0);
    let before = refusals(&sim);
    let tm = Arc::new(TokenManager::new(env.client.clone(), sc.clone()));
    let access = set.access_token.expose().to_string();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (tm, access) = (tm.clone(), access.clone());
        tasks.push(tokio::spawn(async move {
            tm.refresh_after_unauthorized(&access).await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Err(SmartError::ReauthorizationNeeded { reason, .. }) => {
                assert!(reason.contains("invalid_grant"), "{reason}")
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
    }
    assert_eq!(
        refusals(&sim) - before,
        1,
        "one refresh request for all waiters"
    );
    // a caller that comes later with the same token is not retried against the dead grant
    assert!(matches!(
        tm.refresh_after_unauthorized(&access).await,
        Err(SmartError::ReauthorizationNeeded { .. })
    ));
    assert_eq!(refusals(&sim) - before, 1);
    let ev = events(&env, &sc).await;
    assert_eq!(
        ev.iter()
            .filter(|e| e.event == "refresh" && e.outcome == "failure")
            .count(),
        1
    );
    // authorized again (here, by this process; the manager sees the new tokens in the vault)
    standalone(&env, &sc).await.unwrap();
    let fresh = env.client.load_tokens(&sc.conn).await.unwrap().unwrap();
    let t = tm.refresh_after_unauthorized(&access).await.unwrap();
    assert_eq!(t, fresh.access_token.expose());
    sim.shutdown().await;
}
