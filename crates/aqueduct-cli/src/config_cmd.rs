//! `aqueduct config ...`

use std::process::ExitCode;

use aqueduct_client::{ProfileError, VendorProfile};
use aqueduct_config::{AuthConfig, Config, ConfigError, ConnectionConfig};
use aqueduct_monitor::{AlertRules, MonitorConfig};
use clap::Subcommand;

use crate::Context;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: syntax, unknown keys, types, names, profiles and their
    /// overrides, [monitor] and [alerts], algorithms, and that every secret is readable now.
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { json } => {
            let path = aqueduct_config::resolve_path(ctx.config_path.as_deref());
            let config = aqueduct_config::load(&path)?;
            let problems = problems(&config);
            let connections: Vec<serde_json::Value> = config
                .organizations
                .iter()
                .flat_map(|(org, oc)| {
                    oc.connections.iter().map(move |(name, cc)| {
                        serde_json::json!({
                            "organization": org,
                            "connection": name,
                            "base_url": cc.base_url.as_str(),
                            "profile": cc.profile,
                            "auth": auth_name(&cc.auth),
                        })
                    })
                })
                .collect();
            if json {
                let listed: Vec<serde_json::Value> = problems.iter().map(problem_json).collect();
                let out = serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": problems.is_empty(),
                    "problems": listed,
                    "store": ctx.store_location(Some(&config)),
                    "connections": connections,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if problems.is_empty() {
                println!("{}: valid", path.display());
                println!("store: {}", ctx.store_location(Some(&config)));
                for c in &connections {
                    println!(
                        "  {}/{}  {}  profile={}  auth={}",
                        c["organization"].as_str().unwrap_or(""),
                        c["connection"].as_str().unwrap_or(""),
                        c["base_url"].as_str().unwrap_or(""),
                        c["profile"].as_str().unwrap_or(""),
                        c["auth"].as_str().unwrap_or("")
                    );
                }
            } else {
                for p in &problems {
                    eprintln!("error: {p}");
                }
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn problem_json(e: &ConfigError) -> serde_json::Value {
    match e {
        ConfigError::Invalid {
            line, key, message, ..
        } => serde_json::json!({"line": line, "key": key, "message": message}),
        other => serde_json::json!({"line": null, "key": null, "message": other.to_string()}),
    }
}

/// Everything a sync would trip over later, found now: each with its key path and line.
fn problems(config: &Config) -> Vec<ConfigError> {
    let mut out = config.check_environment();
    for (org, oc) in &config.organizations {
        for (name, cc) in &oc.connections {
            let at = |field: &[&str]| -> Vec<String> {
                ["organizations", org, "connections", name]
                    .iter()
                    .chain(field)
                    .map(|s| s.to_string())
                    .collect()
            };
            out.extend(profile_problems(config, &at(&[]), cc));
            if let AuthConfig::SmartBackend {
                private_key,
                algorithm,
                key_id,
                ..
            } = &cc.auth
                && let (Ok(pem), Ok(alg)) = (
                    private_key.resolve("private_key"),
                    algorithm.parse::<aqueduct_smart::KeyAlgorithm>(),
                )
                && let Err(e) =
                    aqueduct_smart::SigningKey::from_pkcs8_pem(alg, key_id.clone(), &pem)
            {
                out.push(problem(
                    config,
                    &at(&["auth", "private_key"]),
                    format!("not a usable {} private key: {e}", alg.as_str()),
                ));
            }
            if let AuthConfig::SmartBackend { retired_keys, .. } = &cc.auth {
                for r in retired_keys {
                    let usable = match (
                        r.private_key.resolve("retired_keys.private_key"),
                        r.algorithm.parse::<aqueduct_smart::KeyAlgorithm>(),
                    ) {
                        (Ok(pem), Ok(alg)) => {
                            aqueduct_smart::SigningKey::from_pkcs8_pem(alg, r.key_id.clone(), &pem)
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                        (Err(e), _) => Err(e.to_string()),
                        (_, Err(_)) => Err("algorithm must be RS384 or ES384".into()),
                    };
                    if let Err(e) = usable {
                        out.push(problem(
                            config,
                            &at(&["auth", "retired_keys"]),
                            format!("a retired key `/.well-known/jwks.json` cannot publish: {e}"),
                        ));
                    }
                }
            }
        }
    }
    if let Err(e) = config.typed_table::<MonitorConfig>(&["monitor"], &config.monitor) {
        out.push(e);
    }
    if let Err(e) = config.typed_table::<AlertRules>(&["alerts"], &config.alerts) {
        out.push(e);
    }
    match aqueduct_engine::EngineSettings::from_config(config) {
        Ok(_) => {}
        Err(aqueduct_engine::EngineError::Config(e)) => out.push(e),
        Err(e) => out.push(config.problem(&["engine"], e.to_string())),
    }
    match aqueduct_serve::ServeSettings::from_config(config) {
        Ok(_) => {}
        Err(aqueduct_serve::ServeError::Config(e)) => out.push(e),
        Err(e) => out.push(config.problem(&["serve"], e.to_string())),
    }
    out.extend(vault_problem(config));
    out
}

fn problem(config: &Config, path: &[String], message: String) -> ConfigError {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    config.problem(&path, message)
}

/// The connection's profile must exist, and its overrides must be keys of a profile with
/// values of the right type. A wrong type is located by resolving each override leaf alone.
fn profile_problems(config: &Config, conn: &[String], cc: &ConnectionConfig) -> Vec<ConfigError> {
    let at = |rest: &[&str]| -> Vec<String> {
        conn.iter()
            .cloned()
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    if let Err(e) = VendorProfile::resolve(&cc.profile, None) {
        return vec![problem(config, &at(&["profile"]), e.to_string())];
    }
    if cc.overrides.is_empty() {
        return Vec::new();
    }
    match VendorProfile::resolve(&cc.profile, Some(&cc.overrides)) {
        Ok(_) => Vec::new(),
        Err(ProfileError::UnknownKey { path, .. }) => {
            let mut key = at(&["overrides"]);
            key.extend(path.split('.').map(str::to_string));
            vec![problem(
                config,
                &key,
                format!("`{path}` is not a vendor profile key"),
            )]
        }
        Err(e) => {
            let mut leaves = Vec::new();
            leaf_paths(&cc.overrides, &mut Vec::new(), &mut leaves);
            for leaf in leaves {
                let alone = only(&cc.overrides, &leaf);
                if let Err(e) = VendorProfile::resolve(&cc.profile, Some(&alone)) {
                    let mut key = at(&["overrides"]);
                    key.extend(leaf);
                    return vec![problem(config, &key, e.to_string())];
                }
            }
            vec![problem(config, &at(&["overrides"]), e.to_string())]
        }
    }
}

/// The paths of the non-table values of a table.
fn leaf_paths(t: &toml::Table, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (k, v) in t {
        prefix.push(k.clone());
        match v {
            toml::Value::Table(inner) if !inner.is_empty() => leaf_paths(inner, prefix, out),
            _ => out.push(prefix.clone()),
        }
        prefix.pop();
    }
}

/// A copy of `t` holding only the value at `path`.
fn only(t: &toml::Table, path: &[String]) -> toml::Table {
    let mut out = toml::Table::new();
    if let Some((first, rest)) = path.split_first()
        && let Some(v) = t.get(first)
    {
        let v = match (v, rest.is_empty()) {
            (toml::Value::Table(inner), false) => toml::Value::Table(only(inner, rest)),
            _ => v.clone(),
        };
        out.insert(first.clone(), v);
    }
    out
}

/// SMART connections keep their tokens in the vault: its key must be configured and valid.
fn vault_problem(config: &Config) -> Option<ConfigError> {
    let needs_vault = config.organizations.values().any(|oc| {
        oc.connections
            .values()
            .any(|cc| !matches!(cc.auth, AuthConfig::None | AuthConfig::Bearer { .. }))
    });
    match &config.vault.key {
        // an unreadable reference is already reported by check_environment
        Some(r) => r.resolve("vault.key").ok().and_then(|text| {
            aqueduct_smart::VaultKey::from_base64(&text)
                .err()
                .map(|e| config.problem(&["vault", "key"], e.to_string()))
        }),
        None if needs_vault => match aqueduct_smart::VaultKey::from_env() {
            Ok(_) => None,
            Err(e) => Some(config.problem(
                &["vault"],
                format!(
                    "SMART connections need a vault key: set vault.key or {} ({e})",
                    aqueduct_smart::VAULT_KEY_ENV
                ),
            )),
        },
        None => None,
    }
}

pub fn auth_name(a: &aqueduct_config::AuthConfig) -> &'static str {
    use aqueduct_config::AuthConfig::*;
    match a {
        None => "none",
        Bearer { .. } => "bearer",
        SmartStandalone { .. } => "smart-standalone",
        SmartEhr { .. } => "smart-ehr",
        SmartBackend { .. } => "smart-backend",
        ClientCredentials { .. } => "client-credentials",
    }
}
