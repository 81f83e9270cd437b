//! `aqueduct connect CONNECTION`: a SMART standalone launch from the terminal.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aqueduct_smart::{LoopbackOptions, SmartClient, run_standalone_launch};
use clap::Args;

use crate::Context;
use aqueduct_engine::{ResolvedConnection, vault_key};

#[derive(Args)]
pub struct ConnectArgs {
    /// The connection, as ORGANIZATION/NAME or a unique NAME from aqueduct.toml.
    connection: String,
    /// Loopback port for the redirect URI (0 = the config's redirect_port, else any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long to wait for the browser to come back.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let config = ctx
        .config()?
        .context("aqueduct connect needs a config file (aqueduct.toml)")?;
    let resolved = ResolvedConnection::from_config(&config, &args.connection)?;
    let sc = resolved.smart_connection()?.with_context(|| {
        format!(
            "connection {} uses auth method {}; `connect` needs a SMART method (smart-standalone, smart-backend or client-credentials)",
            resolved.conn,
            crate::config_cmd::auth_name(&resolved.config.auth)
        )
    })?;
    let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
    resolved.register(store.as_ref()).await?;
    let smart = Arc::new(SmartClient::new(store.clone(), vault_key(&config)?)?);
    let json = args.json;
    let authorized = match &resolved.config.auth {
        aqueduct_config::AuthConfig::SmartStandalone { redirect_port, .. } => {
            let options = LoopbackOptions {
                port: if args.port != 0 {
                    args.port
                } else {
                    *redirect_port
                },
                path: "/callback".into(),
                timeout: Duration::from_secs(args.timeout_secs),
            };
            run_standalone_launch(&smart, &sc, options, |url| {
                if json {
                    eprintln!("authorize at: {url}");
                } else {
                    println!(
                        "Open this URL in a browser to authorize {}:\n\n  {url}\n",
                        resolved.conn
                    );
                    println!("Waiting for the redirect...");
                }
            })
            .await?
        }
        // Backend services and confidential client_credentials need no person: one token request.
        aqueduct_config::AuthConfig::SmartBackend { .. }
        | aqueduct_config::AuthConfig::ClientCredentials { .. } => smart.backend_token(&sc).await?,
        other => anyhow::bail!(
            "connection {} uses auth method {}; the EHR starts that flow (EHR launch), not `connect`",
            resolved.conn,
            crate::config_cmd::auth_name(other)
        ),
    };
    let granted = authorized.granted_scopes.to_scope_string();
    if json {
        let out = serde_json::json!({
            "connection": resolved.conn.to_string(),
            "patient": authorized.context.patient,
            "encounter": authorized.context.encounter,
            "granted_scopes": granted,
            "requested_scopes": authorized.requested_scopes,
            "uncovered_types": authorized.uncovered_types,
            "expires_at": authorized.expires_at,
            "refresh_token": authorized.has_refresh_token,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Authorized {}.", resolved.conn);
        if let Some(p) = &authorized.context.patient {
            println!("  patient:        {p}");
        }
        println!("  granted scopes: {granted}");
        println!(
            "  token expires:  {}",
            authorized.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        println!(
            "  refresh token:  {}",
            if authorized.has_refresh_token {
                "yes"
            } else {
                "no"
            }
        );
        if !authorized.uncovered_types.is_empty() {
            println!(
                "  WARNING: scopes granted narrower than asked; not covered: {} (recorded as a finding; these types will be reported as not granted, not as empty)",
                authorized.uncovered_types.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
