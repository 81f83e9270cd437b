//! `aqueduct findings | metrics | alerts`: what monitoring saw.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_monitor::{AlertRules, AlertSink, FindingsSink, LogSink, WebhookSink};
use aqueduct_store::Store;
use clap::{Args, Subcommand};

use crate::Context;

#[derive(Args)]
pub struct OrgArg {
    /// The organization (default: the only one in the config file or the store).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// Findings: data that looks fine but is not (drops, in-band errors, stale data...).
    Findings {
        #[command(flatten)]
        org: OrgArg,
        #[command(flatten)]
        args: crate::monitor_cli::FindingsArgs,
    },
    /// Metrics in the Prometheus text format, from the sync ledger.
    Metrics {
        #[command(flatten)]
        org: OrgArg,
        #[command(flatten)]
        args: crate::monitor_cli::MetricsArgs,
    },
    /// Evaluate the alert rules, notify the sinks of what fired or resolved, list alerts.
    Alerts {
        #[command(flatten)]
        org: OrgArg,
        #[command(flatten)]
        args: crate::monitor_cli::AlertsArgs,
    },
}

pub async fn run(ctx: &Context, cmd: MonitorCommand) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let mut out = std::io::stdout();
    match cmd {
        MonitorCommand::Findings { org, args } => {
            let org = organization(store.as_ref(), config.as_ref(), org.org).await?;
            crate::monitor_cli::run_findings(store, &org, &args, &mut out).await?;
        }
        MonitorCommand::Metrics { org, args } => {
            let org = organization(store.as_ref(), config.as_ref(), org.org).await?;
            crate::monitor_cli::run_metrics(store, &org, &args, &mut out).await?;
        }
        MonitorCommand::Alerts { org, args } => {
            let org = organization(store.as_ref(), config.as_ref(), org.org).await?;
            let rules = alert_rules(config.as_ref())?;
            let sinks = sinks(store.clone(), config.as_ref())?;
            crate::monitor_cli::run_alerts(store, &org, &rules, &sinks, &args, &mut out).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--org`, else the only organization there is.
pub async fn organization(
    store: &dyn Store,
    config: Option<&aqueduct_config::Config>,
    flag: Option<String>,
) -> anyhow::Result<String> {
    if let Some(o) = flag {
        return Ok(o);
    }
    let mut names: Vec<String> = config
        .map(|c| c.organizations.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        names = store
            .list_organizations()
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no organization yet: run `aqueduct demo` or configure one"),
        many => anyhow::bail!("several organizations ({}): pass --org", many.join(", ")),
    }
}

pub fn alert_rules(config: Option<&aqueduct_config::Config>) -> anyhow::Result<AlertRules> {
    let table = config.map(|c| c.alerts.clone()).unwrap_or_default();
    toml::Value::Table(table)
        .try_into()
        .context("aqueduct.toml [alerts]")
}

fn sinks(
    store: Arc<dyn Store>,
    config: Option<&aqueduct_config::Config>,
) -> anyhow::Result<Vec<Arc<dyn AlertSink>>> {
    let mut sinks: Vec<Arc<dyn AlertSink>> =
        vec![Arc::new(LogSink), Arc::new(FindingsSink { store })];
    if let Some(w) = config.and_then(|c| c.alert_webhook.as_ref()) {
        let secret = match &w.secret {
            Some(s) => Some(s.resolve("alert_webhook.secret")?.into_bytes()),
            None => None,
        };
        sinks.push(Arc::new(WebhookSink::new(w.url.as_str(), secret)?));
    }
    Ok(sinks)
}
