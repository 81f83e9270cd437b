//! The SMART App Launch 2.x authorization server: authorization code + PKCE (S256 only),
//! standalone and EHR launch, refresh-token rotation, client_secret_basic / _post,
//! private_key_jwt, backend services (client_credentials), revocation and introspection.
//! Access tokens are opaque random strings looked up server-side.

mod jwt;
pub mod scope;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::personality::{AudienceCheck, Personality, ScopeStyle};
use crate::reply::Reply;
use crate::{ClientKind, ClientRegistration, SimError};
pub use scope::Access;

const CODE_LIFETIME_MS: i64 = 60_000;
pub const PUBLIC_CLIENT_ID: &str = "sim-public-app";
pub const CONFIDENTIAL_CLIENT_ID: &str = "sim-confidential-app";
const USER_SCOPES: &str = "openid fhirUser profile launch launch/patient launch/encounter offline_access online_access patient/*.read patient/*.rs user/*.read user/*.rs";

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub expires_at_ms: i64,
    pub uses: u64,
}

impl TokenInfo {
    pub fn access(&self, rtype: &str, search: bool) -> Access {
        scope::access(&self.scopes, self.patient.as_deref(), rtype, search)
    }
}

#[derive(Clone)]
struct Client {
    reg: ClientRegistration,
    jwks: Option<JwkSet>,
}

#[derive(Clone)]
struct Grant {
    client_id: String,
    scopes: Vec<String>,
    patient: Option<String>,
    encounter: Option<String>,
    nonce: Option<String>,
}

struct CodeGrant {
    grant: Grant,
    redirect_uri: String,
    challenge: String,
    created_ms: i64,
}

struct Pending {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    launch: Option<(String, Option<String>)>,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Client>,
    codes: HashMap<String, CodeGrant>,
    pending: HashMap<String, Pending>,
    access: HashMap<String, TokenInfo>,
    refresh: HashMap<String, Grant>,
    launches: HashMap<String, (String, Option<String>)>,
    jtis: HashSet<String>,
    login_patient: String,
    issued: u64,
    refreshed: u64,
}

pub struct AuthServer {
    inner: Mutex<Inner>,
    base_url: String,
    origin: String,
    personality: Arc<Personality>,
    lifetime_secs: u64,
    auto_approve: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
    .header("Cache-Control", "no-store")
}

fn is_loopback(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
    })
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

impl AuthServer {
    pub fn new(
        base_url: String,
        origin: String,
        personality: Arc<Personality>,
        lifetime_secs: u64,
        auto_approve: bool,
        login_patient: String,
    ) -> Self {
        let mut inner = Inner {
            login_patient,
            ..Default::default()
        };
        let public = ClientRegistration {
            client_id: PUBLIC_CLIENT_ID.into(),
            client_secret: None,
            kind: ClientKind::Public,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            scopes: USER_SCOPES.into(),
        };
        let confidential = ClientRegistration {
            client_id: CONFIDENTIAL_CLIENT_ID.into(),
            client_secret: Some("sim-confidential-secret".into()),
            kind: ClientKind::ConfidentialSymmetric,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            scopes: format!("{USER_SCOPES} system/*.read system/*.rs"),
        };
        for reg in [public, confidential] {
            inner
                .clients
                .insert(reg.client_id.clone(), Client { reg, jwks: None });
        }
        AuthServer {
            inner: Mutex::new(inner),
            base_url,
            origin,
            personality,
            lifetime_secs,
            auto_approve,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/oauth2/{name}", self.origin)
    }

    pub fn clients(&self) -> Vec<ClientRegistration> {
        let mut v: Vec<_> = self
            .lock()
            .clients
            .values()
            .map(|c| c.reg.clone())
            .collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    pub fn register_backend_client(
        &self,
        client_id: &str,
        jwks_json: &str,
    ) -> Result<(), SimError> {
        let jwks: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| SimError::InvalidJwks(e.to_string()))?;
        if jwks.keys.is_empty() {
            return Err(SimError::InvalidJwks("the JWKS has no keys".into()));
        }
        let reg = ClientRegistration {
            client_id: client_id.to_string(),
            client_secret: None,
            kind: ClientKind::ConfidentialAsymmetric,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            scopes: format!("{USER_SCOPES} system/*.read system/*.rs"),
        };
        self.lock().clients.insert(
            client_id.to_string(),
            Client {
                reg,
                jwks: Some(jwks),
            },
        );
        Ok(())
    }

    pub fn set_login_patient(&self, patient_id: &str) {
        self.lock().login_patient = patient_id.to_string();
    }

    pub fn create_ehr_launch(&self, patient_id: &str, encounter_id: Option<&str>) -> String {
        let launch = random_token();
        self.lock().launches.insert(
            launch.clone(),
            (patient_id.to_string(), encounter_id.map(str::to_string)),
        );
        launch
    }

    pub fn counters(&self) -> (u64, u64) {
        let i = self.lock();
        (i.issued, i.refreshed)
    }

    pub fn smart_configuration(&self) -> Value {
        let mut scopes = vec![
            "openid",
            "fhirUser",
            "profile",
            "launch",
            "launch/patient",
            "launch/encounter",
            "offline_access",
            "online_access",
        ];
        if self.personality.scope_style != ScopeStyle::V2 {
            scopes.extend(["patient/*.read", "user/*.read", "system/*.read"]);
        }
        if self.personality.scope_style != ScopeStyle::V1 {
            scopes.extend(["patient/*.rs", "user/*.rs", "system/*.rs"]);
        }
        let mut caps = vec![
            "launch-standalone",
            "launch-ehr",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "context-ehr-patient",
            "context-ehr-encounter",
            "sso-openid-connect",
            "permission-offline",
            "permission-online",
            "permission-patient",
            "permission-user",
        ];
        if self.personality.scope_style != ScopeStyle::V2 {
            caps.push("permission-v1");
        }
        if self.personality.scope_style != ScopeStyle::V1 {
            caps.push("permission-v2");
        }
        json!({
            "issuer": self.base_url,
            "jwks_uri": self.endpoint("jwks"),
            "authorization_endpoint": self.endpoint("authorize"),
            "token_endpoint": self.endpoint("token"),
            "revocation_endpoint": self.endpoint("revoke"),
            "introspection_endpoint": self.endpoint("introspect"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": scopes,
            "capabilities": caps,
        })
    }

    pub fn jwks(&self) -> Reply {
        Reply::bytes(
            200,
            "application/json",
            jwt::ID_TOKEN_JWKS.as_bytes().to_vec(),
        )
    }

    fn aud_ok(&self, aud: Option<&str>) -> bool {
        match (self.personality.aud, aud) {
            (AudienceCheck::Ignore, _) => true,
            (_, None) => false,
            (AudienceCheck::Exact, Some(a)) => a == self.base_url,
            (AudienceCheck::TrailingSlash, Some(a)) => a.trim_end_matches('/') == self.base_url,
        }
    }

    /// Requested scopes minus what the client may not have, what the personality never grants,
    /// and scope syntaxes it does not understand. Wildcards are expanded when types are dropped
    /// so the narrowing is visible in the `scope` the client receives.
    fn grantable(
        &self,
        client: &ClientRegistration,
        requested: &str,
        system_allowed: bool,
    ) -> Vec<String> {
        let allowed_ctx = |s: &str| {
            if s.starts_with("system/") {
                system_allowed && client.scopes.contains("system/")
            } else {
                true
            }
        };
        let mut out = Vec::new();
        for s in requested.split_whitespace() {
            match scope::parse(s) {
                None => {
                    if USER_SCOPES.split_whitespace().any(|u| u == s) {
                        out.push(s.to_string());
                    }
                }
                Some(rs) => {
                    if !allowed_ctx(s)
                        || (rs.v2 && self.personality.scope_style == ScopeStyle::V1)
                        || (!rs.v2 && self.personality.scope_style == ScopeStyle::V2)
                    {
                        continue;
                    }
                    let dropped = &self.personality.drop_scope_types;
                    if rs.rtype == "*" && !dropped.is_empty() {
                        let (ctx, perm) = s.split_once("/*").unwrap_or((s, ""));
                        for t in self
                            .personality
                            .types
                            .keys()
                            .filter(|t| !dropped.contains(t))
                        {
                            out.push(format!("{ctx}/{t}{perm}"));
                        }
                    } else if !dropped.contains(&rs.rtype) {
                        out.push(s.to_string());
                    }
                }
            }
        }
        out.dedup();
        out
    }

    /// GET (or POST) /oauth2/authorize.
    pub fn authorize(&self, params: &[(String, String)]) -> Reply {
        let client_id = param(params, "client_id").unwrap_or("");
        let redirect_uri = param(params, "redirect_uri").unwrap_or("");
        let client = match self.lock().clients.get(client_id) {
            Some(c) => c.reg.clone(),
            None => return Reply::bytes(400, "text/plain", b"unknown client_id".to_vec()),
        };
        if !(is_loopback(redirect_uri) || client.redirect_uris.iter().any(|r| r == redirect_uri)) {
            return Reply::bytes(
                400,
                "text/plain",
                b"redirect_uri not registered for this client".to_vec(),
            );
        }
        let state = param(params, "state");
        let fail = |error: &str, desc: &str| {
            let mut pairs = vec![("error", error), ("error_description", desc)];
            if let Some(s) = state {
                pairs.push(("state", s));
            }
            Reply::redirect(&with_query(redirect_uri, &pairs))
        };
        if param(params, "response_type") != Some("code") {
            return fail("unsupported_response_type", "response_type must be code");
        }
        let Some(challenge) = param(params, "code_challenge") else {
            return fail("invalid_request", "code_challenge (PKCE) is required");
        };
        if param(params, "code_challenge_method") != Some("S256") {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        if !self.aud_ok(param(params, "aud")) {
            return fail(
                "invalid_request",
                "aud does not match this server's FHIR base URL",
            );
        }
        let requested = param(params, "scope").unwrap_or("");
        let launch = match param(params, "launch") {
            Some(l) => match self.lock().launches.get(l) {
                Some(ctx) => Some(ctx.clone()),
                None => return fail("invalid_request", "unknown launch parameter"),
            },
            None => None,
        };
        let pending = Pending {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state: state.map(str::to_string),
            challenge: challenge.to_string(),
            scopes: self.grantable(&client, requested, false),
            nonce: param(params, "nonce").map(str::to_string),
            launch,
        };
        if self.auto_approve {
            return self.approve(pending);
        }
        let id = random_token();
        let scopes = pending.scopes.join(" ");
        self.lock().pending.insert(id.clone(), pending);
        let html = format!(
            "<!doctype html><html><body><h1>Aqueduct simulator: authorize {client_id}</h1>\
             <p>Requested access: {scopes}</p>\
             <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"request_id\" value=\"{id}\">\
             <button name=\"decision\" value=\"approve\">Approve</button>\
             <button name=\"decision\" value=\"deny\">Deny</button></form></body></html>",
            self.endpoint("authorize/decision")
        );
        Reply::bytes(200, "text/html; charset=utf-8", html.into_bytes())
    }

    /// POST /oauth2/authorize/decision from the consent page.
    pub fn decide(&self, form: &[(String, String)]) -> Reply {
        let id = param(form, "request_id").unwrap_or("");
        let Some(p) = self.lock().pending.remove(id) else {
            return Reply::bytes(
                400,
                "text/plain",
                b"unknown or used authorization request".to_vec(),
            );
        };
        if param(form, "decision") != Some("approve") {
            let mut pairs = vec![("error", "access_denied")];
            if let Some(s) = p.state.as_deref() {
                pairs.push(("state", s));
            }
            return Reply::redirect(&with_query(&p.redirect_uri, &pairs));
        }
        self.approve(p)
    }

    fn approve(&self, p: Pending) -> Reply {
        let code = random_token();
        let mut inner = self.lock();
        let wants_patient = p
            .scopes
            .iter()
            .any(|s| s.starts_with("patient/") || s == "launch/patient");
        let (patient, encounter) = match &p.launch {
            Some((pat, enc)) => (Some(pat.clone()), enc.clone()),
            None if wants_patient => (Some(inner.login_patient.clone()), None),
            None => (None, None),
        };
        let grant = Grant {
            client_id: p.client_id,
            scopes: p.scopes,
            patient,
            encounter,
            nonce: p.nonce,
        };
        inner.codes.insert(
            code.clone(),
            CodeGrant {
                grant,
                redirect_uri: p.redirect_uri.clone(),
                challenge: p.challenge,
                created_ms: now_ms(),
            },
        );
        drop(inner);
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = p.state.as_deref() {
            pairs.push(("state", s));
        }
        Reply::redirect(&with_query(&p.redirect_uri, &pairs))
    }

    /// Authenticate the client at the token endpoint. Returns the client or an RFC 6749 error.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Result<ClientRegistration, Reply> {
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            });
        let assertion = param(form, "client_assertion");
        let client_id = basic
            .as_ref()
            .map(|(id, _)| id.clone())
            .or_else(|| param(form, "client_id").map(str::to_string))
            .or_else(|| {
                assertion
                    .and_then(|a| jsonwebtoken::dangerous::insecure_decode::<Value>(a).ok())
                    .and_then(|d| {
                        d.claims
                            .get("iss")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
            })
            .unwrap_or_default();
        let unauthorized = |desc: &str| {
            let r = oauth_error(401, "invalid_client", desc);
            if basic.is_some() {
                r.header("WWW-Authenticate", "Basic realm=\"aqueduct-sim\"")
            } else {
                r
            }
        };
        let mut inner = self.lock();
        let Some(client) = inner.clients.get(&client_id).cloned() else {
            return Err(unauthorized("unknown client"));
        };
        match client.reg.kind {
            ClientKind::Public => Ok(client.reg),
            ClientKind::ConfidentialSymmetric => {
                let secret = basic
                    .as_ref()
                    .map(|(_, s)| s.as_str())
                    .or_else(|| param(form, "client_secret"));
                if secret.is_some() && secret == client.reg.client_secret.as_deref() {
                    Ok(client.reg)
                } else {
                    Err(unauthorized("client authentication failed"))
                }
            }
            ClientKind::ConfidentialAsymmetric => {
                if param(form, "client_assertion_type")
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                {
                    return Err(unauthorized("client_assertion_type must be jwt-bearer"));
                }
                let (Some(a), Some(jwks)) = (assertion, client.jwks.as_ref()) else {
                    return Err(unauthorized("client_assertion missing"));
                };
                let token_url = self.endpoint("token");
                jwt::verify_client_assertion(
                    jwks,
                    a,
                    &client_id,
                    &token_url,
                    &mut inner.jtis,
                    now_ms() / 1000,
                )
                .map_err(|e| unauthorized(&e))?;
                Ok(client.reg)
            }
        }
    }

    /// POST /oauth2/token.
    pub fn token(&self, headers: &HeaderMap, form: &[(String, String)]) -> Reply {
        let client = match self.authenticate(headers, form) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match param(form, "grant_type") {
            Some("authorization_code") => self.exchange_code(&client, form),
            Some("refresh_token") => self.refresh(&client, form),
            Some("client_credentials") => {
                if client.kind == ClientKind::Public {
                    return oauth_error(
                        400,
                        "unauthorized_client",
                        "public clients cannot use client_credentials",
                    );
                }
                let scopes: Vec<String> = self
                    .grantable(&client, param(form, "scope").unwrap_or(""), true)
                    .into_iter()
                    .filter(|s| s.starts_with("system/"))
                    .collect();
                if scopes.is_empty() {
                    return oauth_error(
                        400,
                        "invalid_scope",
                        "no grantable system/ scope requested",
                    );
                }
                let grant = Grant {
                    client_id: client.client_id,
                    scopes,
                    patient: None,
                    encounter: None,
                    nonce: None,
                };
                self.issue(grant, false, false)
            }
            _ => oauth_error(400, "unsupported_grant_type", "grant_type not supported"),
        }
    }

    fn exchange_code(&self, client: &ClientRegistration, form: &[(String, String)]) -> Reply {
        let code = param(form, "code").unwrap_or("");
        let Some(cg) = self.lock().codes.remove(code) else {
            return oauth_error(
                400,
                "invalid_grant",
                "authorization code unknown, expired or already used",
            );
        };
        if cg.grant.client_id != client.client_id {
            return oauth_error(400, "invalid_grant", "code was issued to another client");
        }
        if now_ms() - cg.created_ms > CODE_LIFETIME_MS {
            return oauth_error(400, "invalid_grant", "authorization code expired");
        }
        if param(form, "redirect_uri") != Some(cg.redirect_uri.as_str()) {
            return oauth_error(
                400,
                "invalid_grant",
                "redirect_uri does not match the authorization request",
            );
        }
        let Some(verifier) = param(form, "code_verifier") else {
            return oauth_error(400, "invalid_request", "code_verifier is required (PKCE)");
        };
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if computed != cg.challenge {
            return oauth_error(
                400,
                "invalid_grant",
                "code_verifier does not match code_challenge",
            );
        }
        self.issue(cg.grant, true, false)
    }

    fn refresh(&self, client: &ClientRegistration, form: &[(String, String)]) -> Reply {
        let rt = param(form, "refresh_token").unwrap_or("");
        let Some(mut grant) = self.lock().refresh.remove(rt) else {
            return oauth_error(
                400,
                "invalid_grant",
                "refresh token unknown, revoked or already used",
            );
        };
        if grant.client_id != client.client_id {
            return oauth_error(
                400,
                "invalid_grant",
                "refresh token was issued to another client",
            );
        }
        if let Some(narrow) = param(form, "scope") {
            let wanted: Vec<&str> = narrow.split_whitespace().collect();
            if wanted.iter().any(|w| !grant.scopes.iter().any(|g| g == w)) {
                return oauth_error(
                    400,
                    "invalid_scope",
                    "refresh may only narrow the granted scopes",
                );
            }
            grant.scopes = wanted.into_iter().map(str::to_string).collect();
        }
        self.issue(grant, false, true)
    }

    fn issue(&self, grant: Grant, with_id_token: bool, is_refresh: bool) -> Reply {
        let now = now_ms();
        let access_token = random_token();
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.lifetime_secs,
            "scope": grant.scopes.join(" "),
        });
        if let Some(p) = &grant.patient {
            body["patient"] = json!(p);
            body["need_patient_banner"] = json!(true);
        }
        if let Some(e) = &grant.encounter {
            body["encounter"] = json!(e);
        }
        if with_id_token && grant.scopes.iter().any(|s| s == "openid") {
            let sub = grant
                .patient
                .clone()
                .unwrap_or_else(|| grant.client_id.clone());
            let fhir_user = grant
                .scopes
                .iter()
                .any(|s| s == "fhirUser")
                .then(|| format!("{}/Patient/{sub}", self.base_url));
            let input = jwt::IdTokenInput {
                iss: &self.base_url,
                sub: &sub,
                client_id: &grant.client_id,
                nonce: grant.nonce.as_deref(),
                fhir_user: fhir_user.as_deref(),
                now: now / 1000,
                lifetime: self.lifetime_secs as i64,
            };
            match jwt::sign_id_token(&input) {
                Ok(t) => body["id_token"] = json!(t),
                Err(e) => {
                    return oauth_error(
                        500,
                        "server_error",
                        &format!("id_token signing failed: {e}"),
                    );
                }
            }
        }
        let mut inner = self.lock();
        if grant
            .scopes
            .iter()
            .any(|s| s == "offline_access" || s == "online_access")
        {
            let rt = random_token();
            body["refresh_token"] = json!(rt);
            inner.refresh.insert(rt, grant.clone());
        }
        inner.access.insert(
            access_token,
            TokenInfo {
                client_id: grant.client_id,
                scopes: grant.scopes,
                patient: grant.patient,
                encounter: grant.encounter,
                expires_at_ms: now + self.lifetime_secs as i64 * 1000,
                uses: 0,
            },
        );
        if is_refresh {
            inner.refreshed += 1;
        } else {
            inner.issued += 1;
        }
        Reply::json(200, &body)
            .header("Cache-Control", "no-store")
            .header("Pragma", "no-cache")
    }

    /// POST /oauth2/revoke (RFC 7009): always 200, the token stops working.
    pub fn revoke(&self, form: &[(String, String)]) -> Reply {
        if let Some(t) = param(form, "token") {
            let mut inner = self.lock();
            inner.access.remove(t);
            inner.refresh.remove(t);
        }
        Reply::bytes(200, "application/json", b"{}".to_vec())
    }

    /// POST /oauth2/introspect (RFC 7662).
    pub fn introspect(&self, form: &[(String, String)]) -> Reply {
        let t = param(form, "token").unwrap_or("");
        let inner = self.lock();
        let body = match inner.access.get(t) {
            Some(info) if info.expires_at_ms > now_ms() => json!({
                "active": true, "scope": info.scopes.join(" "), "client_id": info.client_id,
                "exp": info.expires_at_ms / 1000, "token_type": "Bearer", "patient": info.patient,
                "encounter": info.encounter,
            }),
            _ => json!({"active": inner.refresh.contains_key(t)}),
        };
        Reply::json(200, &body)
    }

    /// Check a bearer token for a FHIR request. `expire_after` simulates tokens that die after
    /// n requests (the token-expires-mid-sync fault).
    pub fn validate_bearer(
        &self,
        authorization: Option<&str>,
        expire_after: Option<u64>,
    ) -> Result<TokenInfo, Reply> {
        let challenge = |err: &str, desc: &str| {
            Reply::outcome(401, "login", desc).header(
                "WWW-Authenticate",
                format!(
                    "Bearer realm=\"aqueduct-sim\", error=\"{err}\", error_description=\"{desc}\""
                ),
            )
        };
        let Some(token) = authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        }) else {
            return Err(Reply::outcome(401, "login", "bearer token required")
                .header("WWW-Authenticate", "Bearer realm=\"aqueduct-sim\""));
        };
        let mut inner = self.lock();
        let Some(info) = inner.access.get_mut(token.trim()) else {
            return Err(challenge(
                "invalid_token",
                "unknown or revoked access token",
            ));
        };
        info.uses += 1;
        if info.expires_at_ms <= now_ms() || expire_after.is_some_and(|n| info.uses > n) {
            return Err(challenge("invalid_token", "access token expired"));
        }
        Ok(info.clone())
    }
}
