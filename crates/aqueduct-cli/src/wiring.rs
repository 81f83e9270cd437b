//! From a configured connection to the running parts: its resolved vendor profile, its SMART
//! settings and the token source the FHIR client will use. The glue between crates that do not
//! know each other (config, client, smart) lives here, in the binary.

use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_client::{AccessTokenSource, NoAuth, StaticBearer, VendorProfile};
use aqueduct_config::{AuthConfig, Config, ConnectionConfig};
use aqueduct_smart::{
    AudRule, ClientCredentials, KeyAlgorithm, SecretString, SigningKey, SmartClient,
    SmartConnection, SmartTokenSource, TokenManager, VaultKey,
};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Store};

/// A connection from the config file, with its profile resolved.
pub struct ResolvedConnection {
    pub conn: ConnectionRef,
    pub config: ConnectionConfig,
    pub profile: VendorProfile,
}

impl ResolvedConnection {
    pub fn from_config(config: &Config, spec: &str) -> anyhow::Result<Self> {
        let found = config.find_connection(spec)?;
        let overrides = (!found.config.overrides.is_empty()).then_some(&found.config.overrides);
        let profile =
            VendorProfile::resolve(&found.config.profile, overrides).with_context(|| {
                format!(
                    "connection {}/{}: profile {:?}",
                    found.organization, found.name, found.config.profile
                )
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
    pub async fn register(&self, store: &dyn Store) -> anyhow::Result<()> {
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
    pub fn smart_connection(&self) -> anyhow::Result<Option<SmartConnection>> {
        let what = |field: &str| format!("{} of connection {}", field, self.conn);
        let sc = |client_id: &str| {
            let mut sc = SmartConnection::new(self.conn.clone(), self.base_url(), client_id);
            sc.resource_types = self.scope_types();
            sc.aud = match self.profile.aud_for(&self.base_url()) {
                Some(v) => AudRule::Custom(v),
                None => AudRule::Omit,
            };
            sc
        };
        let scopes = |s: &Option<String>| {
            s.as_ref()
                .map(|s| s.split_whitespace().map(str::to_string).collect())
        };
        let secret = |s: &aqueduct_config::SecretRef| -> anyhow::Result<ClientCredentials> {
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
            } => {
                let alg: KeyAlgorithm = algorithm.parse().map_err(|_| {
                    anyhow::anyhow!("{}: algorithm must be RS384 or ES384", what("auth"))
                })?;
                let pem = private_key.resolve(&what("private_key"))?;
                let key = SigningKey::from_pkcs8_pem(alg, key_id.clone(), &pem)
                    .with_context(|| what("private_key"))?;
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
pub fn vault_key(config: &Config) -> anyhow::Result<VaultKey> {
    match &config.vault.key {
        Some(r) => Ok(VaultKey::from_base64(&r.resolve("vault.key")?)?),
        None => VaultKey::from_env().context(
            "no vault key: set vault.key in aqueduct.toml or AQUEDUCT_VAULT_KEY (32 random bytes, base64)",
        ),
    }
}

/// The token source the FHIR client uses for this connection.
pub async fn token_source(
    resolved: &ResolvedConnection,
    smart: Option<&Arc<SmartClient>>,
) -> anyhow::Result<Arc<dyn AccessTokenSource>> {
    match &resolved.config.auth {
        AuthConfig::None => Ok(Arc::new(NoAuth)),
        AuthConfig::Bearer { token } => Ok(Arc::new(StaticBearer::new(
            token.resolve(&format!("bearer token of {}", resolved.conn))?,
        ))),
        _ => {
            let smart = smart.context("SMART connections need the vault (vault key)")?;
            let sc = resolved
                .smart_connection()?
                .context("SMART settings missing")?;
            Ok(Arc::new(SmartTokenSource(Arc::new(TokenManager::new(
                smart.clone(),
                sc,
            )))))
        }
    }
}
