//! `aqueduct keys ...`: key pairs for SMART backend services (private_key_jwt).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use aqueduct_smart::{KeyAlgorithm, SigningKey, generate_key, jwks};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key pair (PKCS#8 PEM, readable only by its owner) and print its key id.
    Generate {
        /// RS384 or ES384.
        #[arg(long, default_value = "ES384")]
        alg: KeyAlgorithm,
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-encrypt every stored secret (tokens, client secrets, keys) with a new vault key, in
    /// one pass per organization; the old key is the one the config file names.
    RotateVault {
        /// Only this organization (default: every organization of the config file).
        #[arg(long)]
        org: Option<String>,
        /// Environment variable holding the new key (32 bytes, base64).
        #[arg(long)]
        new_key_env: String,
    },
    /// Print the public JWKS of one or more private key files (what the EHR registers, or what
    /// `aqueduct serve` publishes).
    Jwks {
        /// PEM private key files written by `keys generate`.
        #[arg(required = true)]
        keys: Vec<PathBuf>,
        /// Algorithm of keys whose PEM does not say (RS384 or ES384).
        #[arg(long, default_value = "ES384")]
        alg: KeyAlgorithm,
    },
}

pub async fn run(ctx: &crate::Context, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::RotateVault { org, new_key_env } => {
            let config = ctx
                .config()?
                .context("rotation needs the config file (its vault key is the old key)")?;
            let old = aqueduct_engine::vault_key(&config)?;
            let new = aqueduct_smart::VaultKey::from_base64(
                &std::env::var(&new_key_env)
                    .with_context(|| format!("environment variable {new_key_env} is not set"))?,
            )?;
            let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
            let orgs: Vec<String> = match org {
                Some(o) => vec![o],
                None => config.organizations.keys().cloned().collect(),
            };
            for o in orgs {
                let n =
                    aqueduct_smart::vault::Vault::rotate(store.as_ref(), &o, &old, &new).await?;
                println!("organization {o}: {n} secret(s) re-encrypted with the new key");
            }
            println!("now point vault.key at the new key (the old one no longer opens anything)");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Generate { alg, out } => {
            let key = generate_key(alg)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_private()
                .open(&out)
                .with_context(|| format!("cannot create key file {}", out.display()))?;
            file.write_all(key.to_pkcs8_pem().as_bytes())
                .with_context(|| format!("cannot write key file {}", out.display()))?;
            println!("wrote {} private key to {}", alg.as_str(), out.display());
            println!("kid: {}", key.kid());
            println!(
                "reference it in aqueduct.toml as: private_key = {{ file = \"{}\" }}",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Jwks { keys, alg } => {
            let mut loaded = Vec::new();
            for path in keys {
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read key file {}", path.display()))?;
                let key = load_key(&pem, alg)
                    .with_context(|| format!("{} is not a usable private key", path.display()))?;
                loaded.push(key);
            }
            println!("{}", serde_json::to_string_pretty(&jwks(&loaded))?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// RSA and EC PKCS#8 keys look alike in PEM; try the requested algorithm, then the other.
fn load_key(pem: &str, alg: KeyAlgorithm) -> anyhow::Result<SigningKey> {
    let other = match alg {
        KeyAlgorithm::RS384 => KeyAlgorithm::ES384,
        KeyAlgorithm::ES384 => KeyAlgorithm::RS384,
    };
    SigningKey::from_pkcs8_pem(alg, None, pem)
        .or_else(|_| SigningKey::from_pkcs8_pem(other, None, pem))
        .map_err(Into::into)
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::OpenOptions {
    #[cfg(unix)]
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
    #[cfg(not(unix))]
    fn mode_private(&mut self) -> &mut Self {
        self
    }
}
