//! Every way SMART auth can fail, each specific enough to act on. No variant ever carries a
//! token, secret, code or key: only names, URLs, OAuth error codes and server descriptions.

use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum SmartError {
    #[error("SMART discovery failed for {base_url}: {reason}")]
    Discovery { base_url: String, reason: String },

    #[error("the server at {base_url} does not support {what}")]
    Unsupported { base_url: String, what: String },

    #[error("HTTP request to {url} failed: {reason}")]
    Http { url: String, reason: String },

    #[error("invalid connection configuration: {0}")]
    Config(String),

    #[error("unknown or already used authorization state")]
    UnknownState,

    #[error("authorization state expired (older than {max_age_secs} s)")]
    StateExpired { max_age_secs: u64 },

    #[error(
        "authorization state was issued for {expected_connection} but the redirect arrived for {actual_connection}"
    )]
    StateMismatch {
        expected_connection: String,
        actual_connection: String,
    },

    #[error("invalid redirect: {0}")]
    InvalidRedirect(String),

    #[error("authorization denied by the server: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    AuthorizationDenied {
        error: String,
        description: Option<String>,
    },

    #[error("EHR launch from unknown issuer {iss} for organization {organization}")]
    UnknownIssuer { organization: String, iss: String },

    #[error("token endpoint {url} rejected the request (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenRejected {
        url: String,
        status: u16,
        error: String,
        description: Option<String>,
    },

    #[error("token endpoint {url} failed with HTTP {status}")]
    TokenServerError { url: String, status: u16 },

    #[error("invalid token response: {0}")]
    InvalidTokenResponse(String),

    #[error("token response lacks required field {0}")]
    MissingField(&'static str),

    #[error("could not fetch the JWKS at {url}: {reason}")]
    JwksFetch { url: String, reason: String },

    #[error("id_token invalid: {0}")]
    IdToken(IdTokenProblem),

    #[error("cryptographic operation failed: {0}")]
    Crypto(String),

    #[error("connection {connection} needs to be authorized again: {reason}")]
    ReauthorizationNeeded { connection: String, reason: String },

    #[error("connection {connection} has no stored tokens; authorize it first")]
    NotAuthorized { connection: String },

    #[error("vault key problem: {0}")]
    VaultKey(String),

    #[error("cannot decrypt secret {secret} of connection {connection}: {cause}")]
    VaultDecrypt {
        connection: String,
        secret: String,
        cause: DecryptCause,
    },

    #[error(
        "the authorization response came from issuer {received}, not from {expected} (RFC 9207 mix-up protection)"
    )]
    IssuerMismatch { expected: String, received: String },

    #[error(
        "the authorization server of {base_url} advertises RFC 9207 issuer identification but its response carried no iss"
    )]
    IssuerMissing { base_url: String },

    #[error(
        "SMART discovery for {base_url}: the {endpoint} {url} is not https (only loopback hosts may use plain http)"
    )]
    InsecureEndpoint {
        base_url: String,
        endpoint: String,
        url: String,
    },

    #[error("store error: {0}")]
    Store(String),

    #[error("redirect listener: {0}")]
    Listener(String),
}

/// Why a vault record did not open: specific enough to tell a wrong key from damage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecryptCause {
    #[error(
        "it was sealed with another vault key (key id {record_key_id}; the current key is {current_key_id}): restore that key, or authorize the connection again"
    )]
    WrongKey {
        record_key_id: String,
        current_key_id: String,
    },
    #[error(
        "it does not authenticate under the current key: the record was altered or copied from another organization, connection or name; authorize the connection again"
    )]
    Altered,
    #[error("it is not a vault record (truncated or unknown format version)")]
    Malformed,
    #[error("it decrypted but its content is not what this version of Aqueduct stores")]
    Unreadable,
}

/// Why an id_token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdTokenProblem {
    #[error("malformed ({0})")]
    Malformed(String),
    #[error("signature does not verify")]
    Signature,
    #[error("no key in the server's JWKS matches kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("algorithm {0} not accepted")]
    Algorithm(String),
    #[error("issuer mismatch")]
    Issuer,
    #[error("audience mismatch")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("nonce mismatch")]
    Nonce,
    #[error("missing when openid was requested")]
    Missing,
}

impl From<aqueduct_core::StoreError> for SmartError {
    fn from(e: aqueduct_core::StoreError) -> Self {
        SmartError::Store(e.to_string())
    }
}

impl SmartError {
    /// True for failures that may pass on their own (network, 5xx, discovery, store):
    /// retry later rather than asking a person to authorize again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SmartError::Http { .. }
                | SmartError::TokenServerError { .. }
                | SmartError::Discovery { .. }
                | SmartError::JwksFetch { .. }
                | SmartError::Store(_)
        )
    }

    /// True when a person (or administrator) must authorize the connection again.
    pub fn needs_reauthorization(&self) -> bool {
        matches!(
            self,
            SmartError::ReauthorizationNeeded { .. } | SmartError::NotAuthorized { .. }
        )
    }

    /// True when nothing in this run can succeed until a person acts (a vault that cannot
    /// open the stored tokens, a wrong vault key, an insecure or mixed-up authorization
    /// server): the run must fail rather than be reported partial.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SmartError::VaultDecrypt { .. }
                | SmartError::VaultKey(_)
                | SmartError::InsecureEndpoint { .. }
                | SmartError::IssuerMismatch { .. }
                | SmartError::IssuerMissing { .. }
        )
    }

    /// A short machine-readable cause, for the auth audit and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SmartError::Discovery { .. } => "discovery",
            SmartError::Unsupported { .. } => "unsupported",
            SmartError::Http { .. } => "http",
            SmartError::Config(_) => "config",
            SmartError::UnknownState => "unknown-state",
            SmartError::StateExpired { .. } => "state-expired",
            SmartError::StateMismatch { .. } => "state-mismatch",
            SmartError::InvalidRedirect(_) => "invalid-redirect",
            SmartError::AuthorizationDenied { .. } => "authorization-denied",
            SmartError::UnknownIssuer { .. } => "unknown-issuer",
            SmartError::TokenRejected { .. } => "token-rejected",
            SmartError::TokenServerError { .. } => "token-server-error",
            SmartError::InvalidTokenResponse(_) => "invalid-token-response",
            SmartError::MissingField(_) => "missing-field",
            SmartError::JwksFetch { .. } => "jwks-fetch",
            SmartError::IdToken(_) => "id-token",
            SmartError::Crypto(_) => "crypto",
            SmartError::ReauthorizationNeeded { .. } => "reauthorization-needed",
            SmartError::NotAuthorized { .. } => "not-authorized",
            SmartError::VaultKey(_) => "vault-key",
            SmartError::VaultDecrypt { .. } => "vault-decrypt",
            SmartError::IssuerMismatch { .. } => "issuer-mismatch",
            SmartError::IssuerMissing { .. } => "issuer-missing",
            SmartError::InsecureEndpoint { .. } => "insecure-endpoint",
            SmartError::Store(_) => "store",
            SmartError::Listener(_) => "listener",
        }
    }
}
