//! From a configured connection to the running parts: its resolved vendor profile, its SMART
//! settings and the token source the FHIR client will use. The glue between crates that do not
//! know each other (config, client, smart) lives here.

use std::sync::Arc;

use aqueduct_client::VendorProfile;
use aqueduct_config::{AuthConfig, Config, ConnectionConfig};
use aqueduct_core::{
    AccessTokenSource, ConnectionRecord, ConnectionRef, NoAuth, StaticBearer, Store,
};
use aqueduct_smart::{
    AudienceParam, ClientCredentials, KeyAlgorithm, SecretString, SigningKey, SmartClient,
    SmartConnection, SmartTokenSource, TokenManager, VaultKey,
};

use crate::EngineError;

/// A connection from the config file, with its profile resolved.
pub struct ResolvedConnection {
    pub conn: ConnectionRef,
    pub config: ConnectionConfig,
    pub profile: VendorProfile,
}

impl ResolvedConnection {
    pub fn from_config(config: &Config, spec: &str) -> Result<Self, EngineError> {
        let found = config.find_connection(spec)?;
        let overrides = (!found.config.overrides.is_empty()).then_some(&found.config.overrides);
        let profile = VendorProfile::resolve(&found.config.profile, overrides).map_err(|e| {
            EngineError::Profile {
                connection: format!("{}/{}", found.organization, found.name),
                profile: found.config.profile.clone(),
                source: e,
            }
        })?;
        Ok(Self {
            conn: ConnectionRef::new(found.organization, found.name),
            config: found.config.clone(),
            profile,
        })
    }

    pub fn base_url(&self) -> String {
        self.config
            .base_url
            .as_str()
            .trim_end_matches('/')
            .to_string()
    }

    /// The resource types this connection must retrieve: configured, else the profile's.
    pub fn resource_types(&self) -> Vec<String> {
        if self.config.resource_types.is_empty() {
            self.profile.default_types.clone()
        } else {
            self.config.resource_types.clone()
        }
    }

    /// The types the connection's scopes must cover: what it retrieves plus what its records
    /// point to (reference resolution reads those too).
    pub fn scope_types(&self) -> Vec<String> {
        let mut types = self.resource_types();
        for t in aqueduct_sync::refs::REFERENCE_TARGET_TYPES {
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
        types
    }

    /// Registers the connection in the store so `status` and the ledger can name it.
    pub async fn register(&self, store: &dyn Store) -> Result<(), EngineError> {
        store
            .upsert_connection(&ConnectionRecord {
                organization: self.conn.organization.clone(),
                name: self.conn.connection.clone(),
                base_url: self.base_url(),
                profile: self.profile.name.clone(),
            })
            .await?;
        Ok(())
    }

    /// The SMART settings, or None for connections without SMART (none, static bearer).
    pub fn smart_connection(&self) -> Result<Option<SmartConnection>, EngineError> {
        let what = |field: &str| format!("{} of connection {}", field, self.conn);
        let setting = |what: String| EngineError::Setting {
            connection: self.conn.to_string(),
            what,
        };
        let sc = |client_id: &str| {
            let mut sc = SmartConnection::new(self.conn.clone(), self.base_url(), client_id);
            sc.resource_types = self.scope_types();
            sc.aud = match self.profile.aud_for(&self.base_url()) {
                Some(v) => AudienceParam::Custom(v),
                None => AudienceParam::Omit,
            };
            sc
        };
        let scopes = |s: &Option<String>| {
            s.as_ref()
                .map(|s| s.split_whitespace().map(str::to_string).collect())
        };
        let secret = |s: &aqueduct_config::SecretRef| -> Result<ClientCredentials, EngineError> {
            Ok(ClientCredentials::Secret(SecretString::new(
                s.resolve(&what("client_secret"))?,
            )))
        };
        Ok(Some(match &self.config.auth {
            AuthConfig::None | AuthConfig::Bearer { .. } => return Ok(None),
            AuthConfig::SmartStandalone {
                client_id,
                client_secret,
                scopes: s,
                ..
            }
            | AuthConfig::SmartEhr {
                client_id,
                client_secret,
                scopes: s,
            } => {
                let mut c = sc(client_id);
                if let Some(cs) = client_secret {
                    c.credentials = secret(cs)?;
                }
                c.scope_override = scopes(s);
                c
            }
            AuthConfig::SmartBackend {
                client_id,
                private_key,
                algorithm,
                key_id,
                scopes: s,
                ..
            } => {
                let alg: KeyAlgorithm = algorithm
                    .parse()
                    .map_err(|_| setting("auth: algorithm must be RS384 or ES384".into()))?;
                let pem = private_key.resolve(&what("private_key"))?;
                let key = SigningKey::from_pkcs8_pem(alg, key_id.clone(), &pem)
                    .map_err(|e| setting(format!("private_key: {e}")))?;
                let mut c = sc(client_id);
                c.credentials = ClientCredentials::PrivateKey(key);
                c.backend_services = true;
                c.openid = false;
                c.offline_access = false;
                c.require_patient = false;
                c.scope_override = scopes(s);
                c
            }
            AuthConfig::ClientCredentials {
                client_id,
                client_secret,
                scopes: s,
            } => {
                let mut c = sc(client_id);
                c.credentials = secret(client_secret)?;
                c.backend_services = true;
                c.openid = false;
                c.offline_access = false;
                c.require_patient = false;
                c.scope_override = scopes(s);
                c
            }
        }))
    }
}

/// The vault key: the config's `vault.key`, else `AQUEDUCT_VAULT_KEY`.
pub fn vault_key(config: &Config) -> Result<VaultKey, EngineError> {
    match &config.vault.key {
        Some(r) => VaultKey::from_base64(&r.resolve("vault.key")?).map_err(EngineError::Smart),
        None => VaultKey::from_env().map_err(EngineError::NoVaultKey),
    }
}

impl ResolvedConnection {
    /// The token source the FHIR client uses for this connection; `smart` is asked for the
    /// SMART client only when the connection uses SMART.
    pub fn token_source(
        &self,
        smart: Option<Arc<SmartClient>>,
    ) -> Result<Arc<dyn AccessTokenSource>, EngineError> {
        match &self.config.auth {
            AuthConfig::None => Ok(Arc::new(NoAuth)),
            AuthConfig::Bearer { token } => Ok(Arc::new(StaticBearer::new(
                token.resolve(&format!("bearer token of {}", self.conn))?,
            ))),
            _ => {
                let (Some(smart), Some(sc)) = (smart, self.smart_connection()?) else {
                    return Err(EngineError::Setting {
                        connection: self.conn.to_string(),
                        what: "SMART settings missing".into(),
                    });
                };
                Ok(Arc::new(SmartTokenSource(Arc::new(TokenManager::new(
                    smart, sc,
                )))))
            }
        }
    }
}
