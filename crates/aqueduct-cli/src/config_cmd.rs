//! `aqueduct config ...`

use std::process::ExitCode;

use clap::Subcommand;

use crate::Context;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: syntax, unknown keys, types, names, secret references.
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
                let out = serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": true,
                    "store": ctx.store_location(Some(&config)),
                    "connections": connections,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
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
            }
            Ok(ExitCode::SUCCESS)
        }
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
