//! The pieces of `aqueduct findings`, `aqueduct metrics` and `aqueduct alerts`: clap
//! arguments and async runners writing to any output (the binary passes stdout).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_store::{ConnectionRef, Finding, Store};
use chrono::Utc;
use serde::Serialize;

use aqueduct_monitor::{AlertRules, AlertSink, evaluate_alerts, notify_pending};
use aqueduct_monitor::{MonitorError, parse_duration, render_metrics};

/// `aqueduct findings`: what monitoring found, most recent first.
#[derive(Debug, Clone, clap::Args)]
pub struct FindingsArgs {
    /// Only this connection (default: every connection of the organization).
    #[arg(long)]
    pub connection: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// At most this many findings per connection.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `aqueduct metrics`: the metrics in the Prometheus text format.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// The window the request figures cover (e.g. 15m, 1h, 1d).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub window: Duration,
}

/// `aqueduct alerts`: evaluate the alert rules, notify the sinks, list the alerts.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List resolved alerts too.
    #[arg(long)]
    pub all: bool,
}

#[derive(Serialize)]
struct FindingRow<'a> {
    connection: &'a str,
    #[serde(flatten)]
    finding: &'a Finding,
}

pub async fn run_findings(
    store: Arc<dyn Store>,
    organization: &str,
    args: &FindingsArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    let connections: Vec<String> = match &args.connection {
        Some(c) => vec![c.clone()],
        None => store
            .list_connections(organization)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect(),
    };
    let mut all = Vec::new();
    for c in &connections {
        let cr = ConnectionRef::new(organization, c.clone());
        for f in store.list_findings(&cr, args.limit).await? {
            all.push((c.clone(), f));
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.1.at));
    if args.json {
        let rows: Vec<FindingRow<'_>> = all
            .iter()
            .map(|(c, f)| FindingRow {
                connection: c,
                finding: f,
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if all.is_empty() {
        writeln!(out, "No findings.")?;
        return Ok(());
    }
    for (c, f) in &all {
        writeln!(
            out,
            "{}  {:<8}  {}  {}{}{}",
            f.at.format("%Y-%m-%d %H:%M:%S"),
            f.severity,
            c,
            f.kind,
            f.resource_type
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default(),
            f.run_id.map(|r| format!(" run {r}")).unwrap_or_default(),
        )?;
        writeln!(out, "    {}", f.detail)?;
    }
    Ok(())
}

pub async fn run_metrics(
    store: Arc<dyn Store>,
    organization: &str,
    args: &MetricsArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    let text = render_metrics(store.as_ref(), organization, args.window).await?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run_alerts(
    store: Arc<dyn Store>,
    organization: &str,
    rules: &AlertRules,
    sinks: &[Arc<dyn AlertSink>],
    args: &AlertsArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    evaluate_alerts(store.as_ref(), organization, rules, Utc::now()).await?;
    let notified = notify_pending(store.as_ref(), organization, sinks).await;
    let alerts = store.list_alerts(organization, !args.all).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &alerts)?;
        writeln!(out)?;
    } else if alerts.is_empty() {
        writeln!(out, "No alerts firing.")?;
    } else {
        for a in &alerts {
            writeln!(
                out,
                "{:<8}  {:<8}  {}  {}{}  since {}",
                a.state,
                a.severity,
                a.connection,
                a.rule,
                if a.subject.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", a.subject)
                },
                a.first_seen.format("%Y-%m-%d %H:%M:%S"),
            )?;
            writeln!(out, "    {}", a.detail)?;
        }
    }
    notified.map(|_| ())
}
