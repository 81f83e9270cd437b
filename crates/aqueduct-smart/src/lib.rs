//! SMART on FHIR client authorization for Aqueduct: this crate owns discovery
//! (`.well-known/smart-configuration` with the CapabilityStatement fallback, cached briefly), the
//! three launch flows (standalone patient launch with PKCE S256, state and nonce; EHR launch with
//! issuer checking; backend services with a `private_key_jwt` assertion signed RS384/ES384),
//! confidential clients, minimum-necessary scopes and the detection of narrower grants, the token
//! lifecycle (refresh ahead of expiry and after a 401 with a single flight — a mutex within the
//! process, a store lease across processes — rotation, revocation), the credential vault (AES-256-GCM bound to organization, connection and secret
//! name) and the auth audit. It holds the authorization server to account: discovered endpoints
//! must be https (loopback excepted) and those on another origin are returned as notices for the
//! caller to record, an RFC 9207 `iss` on a redirect must name the server, and a vault record that
//! does not open says why (wrong key, altered, malformed). It does not know vendors by name — quirks arrive as parameters (the
//! `aud` rule, scopes, the client authentication method) — and knows nothing of sync or of HTTP
//! paging.

mod adapter;
mod client;
mod discovery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod idtoken;
mod keys;
mod loopback;
mod manager;
mod scopes;
mod secret;
mod token;
pub mod vault;

pub use adapter::{SmartTokenSource, to_auth_error};
pub use client::{
    AudienceParam, AuthorizationRequest, Authorized, PENDING_PREFIX, SmartClient, SmartConnection,
    TokenSet, pkce_challenge, same_base,
};
pub use discovery::{Discovery, DiscoveryNotice, OTHER_ORIGIN_NOTICE, SmartConfiguration};
pub use error::{DecryptCause, IdTokenProblem, SmartError};
pub use idtoken::{DEFAULT_LEEWAY_SECS, IdTokenClaims, Jwks, verify_id_token};
pub use keys::{KeyAlgorithm, SigningKey, generate_key, jwks};
pub use loopback::{LoopbackOptions, run_standalone_launch};
pub use manager::TokenManager;
pub use scopes::{Flow, GrantedScopes, ScopeContext, ScopeVersion, compute_scopes};
pub use secret::SecretString;
pub use token::{
    ClientCredentials, LaunchContext, RedirectParams, TokenAuthMethod, TokenResponse,
    choose_auth_method, parse_oauth_error, parse_token_response, parse_www_authenticate,
};
pub use vault::{VAULT_KEY_ENV, Vault, VaultKey};
