//! Token endpoint: request building with the client authentication method, and parsing of the
//! token response, OAuth error bodies and redirect URLs (all outside data: never panics).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::SmartConfiguration;
use crate::error::SmartError;
use crate::keys::SigningKey;
use crate::secret::SecretString;

/// The launch context a token response (or id_token) carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fhir_user: Option<String>,
    pub need_patient_banner: Option<bool>,
    pub smart_style_url: Option<String>,
    pub intent: Option<String>,
    pub tenant: Option<String>,
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: SecretString,
    pub token_type: Option<String>,
    pub expires_in: i64,
    /// The granted scope string when the server sent one.
    pub scope: Option<String>,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub context: LaunchContext,
}

fn nonempty_str(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses a token endpoint success body. `access_token` and `expires_in` are required (SMART
/// App Launch 2 makes `expires_in` mandatory); `expires_in` may be a number or a numeric string.
pub fn parse_token_response(bytes: &[u8]) -> Result<TokenResponse, SmartError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| SmartError::InvalidTokenResponse(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(SmartError::InvalidTokenResponse("not a JSON object".into()));
    }
    let access_token =
        nonempty_str(&v, "access_token").ok_or(SmartError::MissingField("access_token"))?;
    let token_type = nonempty_str(&v, "token_type");
    if let Some(t) = &token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(SmartError::InvalidTokenResponse(format!(
            "token_type {t:?} is not Bearer"
        )));
    }
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or(SmartError::MissingField("expires_in"))?;
    if expires_in <= 0 {
        return Err(SmartError::InvalidTokenResponse(format!(
            "expires_in {expires_in} is not positive"
        )));
    }
    let need_patient_banner = match v.get("need_patient_banner") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => s.parse::<bool>().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token: SecretString::new(access_token),
        token_type,
        expires_in,
        scope: v.get("scope").and_then(Value::as_str).map(str::to_string),
        refresh_token: nonempty_str(&v, "refresh_token").map(SecretString::new),
        id_token: nonempty_str(&v, "id_token").map(SecretString::new),
        context: LaunchContext {
            patient: nonempty_str(&v, "patient"),
            encounter: nonempty_str(&v, "encounter"),
            fhir_user: nonempty_str(&v, "fhirUser"),
            need_patient_banner,
            smart_style_url: nonempty_str(&v, "smart_style_url"),
            intent: nonempty_str(&v, "intent"),
            tenant: nonempty_str(&v, "tenant"),
        },
    })
}

/// Reads an OAuth error body (`{"error": ..., "error_description": ...}`); None when the body
/// is not one.
pub fn parse_oauth_error(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let error = v.get("error")?.as_str()?.to_string();
    let description = v
        .get("error_description")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(300).collect());
    Some((error, description))
}

/// What came back on the redirect URI. `Debug` hides the code.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedirectParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207 issuer identifier, when the server sends it.
    pub iss: Option<String>,
}

impl std::fmt::Debug for RedirectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectParams")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("state", &self.state)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .field("iss", &self.iss)
            .finish()
    }
}

impl RedirectParams {
    /// From a query string (with or without a leading `?`).
    pub fn from_query(query: &str) -> RedirectParams {
        let mut p = RedirectParams::default();
        let q = query.strip_prefix('?').unwrap_or(query);
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut p.code,
                "state" => &mut p.state,
                "error" => &mut p.error,
                "error_description" => &mut p.error_description,
                "iss" => &mut p.iss,
                _ => continue,
            };
            // The first occurrence wins; duplicates are ignored.
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        p
    }

    /// From a full redirect URL: the query, else the fragment (`response_mode=fragment`).
    pub fn from_url(redirect: &str) -> Result<RedirectParams, SmartError> {
        let u = url::Url::parse(redirect)
            .map_err(|e| SmartError::InvalidRedirect(format!("not a URL: {e}")))?;
        let from_query = RedirectParams::from_query(u.query().unwrap_or_default());
        if from_query.code.is_some() || from_query.error.is_some() {
            return Ok(from_query);
        }
        Ok(RedirectParams::from_query(u.fragment().unwrap_or_default()))
    }

    /// The code and state, or the error the server sent.
    pub fn code_and_state(&self) -> Result<(&str, &str), SmartError> {
        if let Some(error) = &self.error {
            return Err(SmartError::AuthorizationDenied {
                error: error.chars().take(100).collect(),
                description: self
                    .error_description
                    .as_ref()
                    .map(|d| d.chars().take(300).collect()),
            });
        }
        let state = self
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SmartError::InvalidRedirect("no state".into()))?;
        let code = self
            .code
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SmartError::InvalidRedirect("no code".into()))?;
        Ok((code, state))
    }
}

/// How we authenticate to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenAuthMethod {
    /// Public client: client_id in the form only.
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::None => "none",
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Our client's credentials for one connection. `Debug` redacts the secret material.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// A public client (PKCE only).
    Public,
    /// A confidential symmetric client.
    Secret(SecretString),
    /// A confidential asymmetric client / backend service.
    PrivateKey(SigningKey),
}

/// Picks the authentication method: an explicit preference when the server allows it,
/// otherwise the best the credentials and the server's advertised list allow.
pub fn choose_auth_method(
    creds: &ClientCredentials,
    preferred: Option<TokenAuthMethod>,
    cfg: &SmartConfiguration,
) -> Result<TokenAuthMethod, SmartError> {
    let unsupported = |what: &str| SmartError::Unsupported {
        base_url: cfg.token_endpoint.clone(),
        what: what.to_string(),
    };
    let candidates: &[TokenAuthMethod] = match creds {
        ClientCredentials::Public => &[TokenAuthMethod::None],
        ClientCredentials::Secret(_) => &[
            TokenAuthMethod::ClientSecretBasic,
            TokenAuthMethod::ClientSecretPost,
        ],
        ClientCredentials::PrivateKey(_) => &[TokenAuthMethod::PrivateKeyJwt],
    };
    if let Some(p) = preferred {
        if !candidates.contains(&p) {
            return Err(SmartError::Config(format!(
                "auth method {} does not fit the configured credentials",
                p.as_str()
            )));
        }
        if !cfg.allows_auth_method(p.as_str()) {
            return Err(unsupported(&format!(
                "token endpoint auth method {}",
                p.as_str()
            )));
        }
        return Ok(p);
    }
    if matches!(creds, ClientCredentials::Public) {
        return Ok(TokenAuthMethod::None);
    }
    candidates
        .iter()
        .copied()
        .find(|m| cfg.allows_auth_method(m.as_str()))
        .ok_or_else(|| {
            unsupported(&format!(
                "any of the token endpoint auth methods {:?}",
                candidates.iter().map(|m| m.as_str()).collect::<Vec<_>>()
            ))
        })
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Who we are at the token endpoint and how we prove it.
pub(crate) struct ClientAuth<'a> {
    pub client_id: &'a str,
    pub creds: &'a ClientCredentials,
    pub method: TokenAuthMethod,
}

impl ClientAuth<'_> {
    /// Adds the client authentication to a request. `assertion_aud` is the token endpoint;
    /// `with_client_id` adds client_id to the form for private_key_jwt.
    fn apply(
        &self,
        mut req: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        assertion_aud: &str,
        with_client_id: bool,
    ) -> Result<reqwest::RequestBuilder, SmartError> {
        match (self.method, self.creds) {
            (TokenAuthMethod::None, _) => form.push(("client_id", self.client_id.to_string())),
            (TokenAuthMethod::ClientSecretBasic, ClientCredentials::Secret(s)) => {
                let raw = format!(
                    "{}:{}",
                    form_encode(self.client_id),
                    form_encode(s.expose())
                );
                req = req.header("Authorization", format!("Basic {}", STANDARD.encode(raw)));
            }
            (TokenAuthMethod::ClientSecretPost, ClientCredentials::Secret(s)) => {
                form.push(("client_id", self.client_id.to_string()));
                form.push(("client_secret", s.expose().to_string()));
            }
            (TokenAuthMethod::PrivateKeyJwt, ClientCredentials::PrivateKey(k)) => {
                if with_client_id {
                    form.push(("client_id", self.client_id.to_string()));
                }
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    k.client_assertion(self.client_id, assertion_aud, 240)?,
                ));
            }
            (m, _) => {
                return Err(SmartError::Config(format!(
                    "auth method {} does not fit the configured credentials",
                    m.as_str()
                )));
            }
        }
        Ok(req)
    }
}

fn http_error(url: &str, e: reqwest::Error) -> SmartError {
    SmartError::Http {
        url: url.to_string(),
        reason: e.without_url().to_string(),
    }
}

fn rejected(url: &str, status: u16, www_authenticate: Option<&str>, body: &[u8]) -> SmartError {
    if status >= 500 {
        return SmartError::TokenServerError {
            url: url.to_string(),
            status,
        };
    }
    let (error, description) = parse_oauth_error(body)
        .or_else(|| www_authenticate.and_then(parse_www_authenticate))
        .unwrap_or_else(|| (format!("http-{status}"), body_excerpt(body)));
    SmartError::TokenRejected {
        url: url.to_string(),
        status,
        error,
        description,
    }
}

/// The `error` and `error_description` of a `WWW-Authenticate` challenge (RFC 6750 3), as a
/// server that answers 401 without an OAuth JSON body sends them.
pub fn parse_www_authenticate(header: &str) -> Option<(String, Option<String>)> {
    let params = header.trim().split_once(char::is_whitespace)?.1;
    let mut error = None;
    let mut description = None;
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end.unwrap_or(quoted.len())..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "error" => error = Some(value.chars().take(100).collect::<String>()),
            "error_description" => description = Some(value.chars().take(300).collect()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    error.filter(|e| !e.is_empty()).map(|e| (e, description))
}

/// The start of a non-OAuth error body (an HTML or text page), as one line of printable text,
/// so that the server's own words reach the error message.
fn body_excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    (!flat.is_empty()).then_some(flat)
}

fn www_authenticate(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Posts a token request with client authentication and parses the answer.
pub(crate) async fn token_request(
    http: &reqwest::Client,
    cfg: &SmartConfiguration,
    auth: &ClientAuth<'_>,
    mut form: Vec<(&'static str, String)>,
) -> Result<TokenResponse, SmartError> {
    let url = cfg.token_endpoint.clone();
    let is_client_credentials = form
        .iter()
        .any(|(k, v)| *k == "grant_type" && v == "client_credentials");
    let req = http.post(&url).header("Accept", "application/json");
    let req = auth.apply(req, &mut form, &url, !is_client_credentials)?;
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| http_error(&url, e))?;
    let status = resp.status().as_u16();
    let challenge = www_authenticate(&resp);
    let body = resp.bytes().await.map_err(|e| http_error(&url, e))?;
    if (200..300).contains(&status) {
        return parse_token_response(&body);
    }
    Err(rejected(&url, status, challenge.as_deref(), &body))
}

/// RFC 7009 revocation of one token.
pub(crate) async fn revoke_request(
    http: &reqwest::Client,
    endpoint: &str,
    cfg: &SmartConfiguration,
    auth: &ClientAuth<'_>,
    token: &SecretString,
    hint: &'static str,
) -> Result<(), SmartError> {
    let mut form: Vec<(&'static str, String)> = vec![
        ("token", token.expose().to_string()),
        ("token_type_hint", hint.to_string()),
    ];
    let req = auth.apply(http.post(endpoint), &mut form, &cfg.token_endpoint, true)?;
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| http_error(endpoint, e))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let challenge = www_authenticate(&resp);
    let body = resp.bytes().await.unwrap_or_default();
    Err(rejected(endpoint, status, challenge.as_deref(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_responses() {
        let r = parse_token_response(
            br#"{"access_token":"a","token_type":"bearer","expires_in":"3600","scope":"x y","patient":"p1","need_patient_banner":"true"}"#,
        )
        .expect("ok");
        assert_eq!(r.expires_in, 3600);
        assert_eq!(r.context.patient.as_deref(), Some("p1"));
        assert_eq!(r.context.need_patient_banner, Some(true));
        assert!(!format!("{r:?}").contains("\"a\""));
        assert!(matches!(
            parse_token_response(br#"{"access_token":"a","token_type":"Bearer"}"#),
            Err(SmartError::MissingField("expires_in"))
        ));
        assert!(matches!(
            parse_token_response(br#"{"token_type":"Bearer","expires_in":3}"#),
            Err(SmartError::MissingField("access_token"))
        ));
        assert!(parse_token_response(b"[]").is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn parses_www_authenticate_challenges() {
        assert_eq!(
            parse_www_authenticate(
                r#"Bearer realm="ehr", error="invalid_client", error_description="client \"x\" is disabled, ask the admin""#
            ),
            Some((
                "invalid_client".into(),
                Some("client \"x\" is disabled, ask the admin".into())
            ))
        );
        assert_eq!(
            parse_www_authenticate("Basic error=invalid_client"),
            Some(("invalid_client".into(), None))
        );
        assert_eq!(parse_www_authenticate("Bearer realm=\"x\""), None);
        assert_eq!(parse_www_authenticate("Bearer"), None);
        assert_eq!(
            parse_www_authenticate("Bearer error=\"unterminated"),
            Some(("unterminated".into(), None))
        );
        assert_eq!(parse_www_authenticate("Bearer ,,=,"), None);
    }

    #[test]
    fn parses_redirects() {
        let p =
            RedirectParams::from_url("http://127.0.0.1:1/cb?code=c&state=s&code=d").expect("url");
        assert_eq!(p.code_and_state().expect("ok"), ("c", "s"));
        let p = RedirectParams::from_url("http://127.0.0.1:1/cb#code=c&state=s").expect("url");
        assert_eq!(p.code_and_state().expect("ok"), ("c", "s"));
        let p = RedirectParams::from_query("error=access_denied&state=s");
        assert!(matches!(
            p.code_and_state(),
            Err(SmartError::AuthorizationDenied { .. })
        ));
        assert!(
            RedirectParams::from_query("code=c")
                .code_and_state()
                .is_err()
        );
    }
}
