//! `aqueduct serve` (the REST API and the FHIR facade, with the engine running the work they
//! raise), `aqueduct api-keys` and `aqueduct audit`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_store::ApiScope;
use clap::{Args, Subcommand};

use crate::Context;

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen (overrides `[serve] bind`; loopback by default).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Serve only: do not run the engine (schedules, refresh requests, syncs started from
    /// the API) in this process; run `aqueduct run` elsewhere.
    #[arg(long)]
    no_engine: bool,
}

pub async fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let config = Arc::new(config.unwrap_or_default());
    let mut settings = aqueduct_serve::ServeSettings::from_config(&config)?;
    if let Some(b) = args.bind {
        settings.bind = b;
        settings.check()?;
    }
    let with_engine = !args.no_engine && !config.organizations.is_empty();
    run_server(store, config, settings, with_engine, &[]).await
}

/// Serves the API, the facade and the dashboard on `settings.bind` (with the engine unless
/// `with_engine` is false) until SIGINT or SIGTERM; `banner` lines are printed after the URLs.
pub async fn run_server(
    store: Arc<dyn aqueduct_store::Store>,
    config: Arc<aqueduct_config::Config>,
    settings: aqueduct_serve::ServeSettings,
    with_engine: bool,
    banner: &[String],
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    let addr = listener.local_addr()?;
    let engine = if with_engine {
        Some(Arc::new(aqueduct_engine::Engine::new(
            Arc::clone(&config),
            Arc::clone(&store),
        )?))
    } else {
        None
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::run_cmd::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let engine_task = engine.as_ref().map(|e| {
        let e = Arc::clone(e);
        tokio::spawn(async move { e.run().await })
    });
    let scheme = if settings.is_tls() { "https" } else { "http" };
    let state = aqueduct_serve::AppState::new(store, config, settings);
    println!("aqueduct serve: listening on {scheme}://{addr}");
    println!("  dashboard    {scheme}://{addr}/dashboard/");
    println!("  API          {scheme}://{addr}/api/v1/connections");
    println!("  FHIR facade  {scheme}://{addr}/fhir/{{organization}}/metadata");
    if engine.is_none() {
        println!("  engine       not running here (--no-engine or no organizations configured)");
    }
    for line in banner {
        println!("{line}");
    }
    let mut shutdown_rx = stop_rx.clone();
    let shutdown = async move {
        let _ = shutdown_rx.wait_for(|s| *s).await;
    };
    aqueduct_serve::serve(listener, state, shutdown).await?;
    let _ = stop_rx.wait_for(|s| *s).await;
    if let (Some(e), Some(t)) = (engine, engine_task) {
        e.stop();
        let _ = t.await;
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key bound to one organization; the key is printed once (only its hash is kept).
    Create {
        #[arg(long)]
        org: String,
        /// read, write or admin.
        #[arg(long, default_value = "read", value_parser = parse_scope)]
        scope: ApiScope,
        #[arg(long)]
        label: Option<String>,
    },
    /// The organization's keys (ids, scopes, when created and revoked; never the secrets).
    List {
        #[arg(long)]
        org: String,
    },
    /// Revoke a key (takes effect on running servers within `[serve] key_cache_secs`).
    Revoke {
        #[arg(long)]
        org: String,
        id: String,
    },
}

fn parse_scope(s: &str) -> Result<ApiScope, String> {
    ApiScope::parse(s).ok_or_else(|| format!("{s:?}: use read, write or admin"))
}

pub async fn api_keys(ctx: &Context, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    match cmd {
        ApiKeysCommand::Create { org, scope, label } => {
            if let Some(c) = &config {
                if !c.organizations.is_empty() && !c.organizations.contains_key(&org) {
                    anyhow::bail!("no organization {org:?} in the configuration");
                }
            }
            let (record, key) = aqueduct_serve::generate_key(&org, scope, label)
                .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
            store.create_api_key(&record).await?;
            println!("{key}");
            eprintln!(
                "API key {} for {org} ({}): shown once, store it now; only its hash is kept",
                record.id,
                scope.as_str()
            );
        }
        ApiKeysCommand::List { org } => {
            for k in store.list_api_keys(&org).await? {
                println!(
                    "{}  {:<5}  created {}  {}{}",
                    k.id,
                    k.scope.as_str(),
                    k.created_at.format("%Y-%m-%d %H:%M"),
                    k.revoked_at
                        .map(|r| format!("REVOKED {}  ", r.format("%Y-%m-%d %H:%M")))
                        .unwrap_or_default(),
                    k.label.unwrap_or_default()
                );
            }
        }
        ApiKeysCommand::Revoke { org, id } => {
            if !store.revoke_api_key(&org, &id, chrono::Utc::now()).await? {
                anyhow::bail!("{org} has no live API key {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long)]
    org: String,
    /// Only reads of this patient (facade id, e.g. epic.12345).
    #[arg(long)]
    patient: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

/// Who read which patient's data through the API and the facade, newest first.
pub async fn audit(ctx: &Context, args: AuditArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let events = store
        .list_access(&args.org, args.patient.as_deref(), None, args.limit)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    for e in events {
        let ev = e.event;
        println!(
            "{}  {}  {:<10} {:<40} patient={} {} resource(s) [{}] from {}",
            ev.at.format("%Y-%m-%d %H:%M:%S"),
            ev.principal,
            ev.action,
            ev.route,
            ev.patient.as_deref().unwrap_or("-"),
            ev.count,
            ev.resource_types.join(","),
            ev.client_addr.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
