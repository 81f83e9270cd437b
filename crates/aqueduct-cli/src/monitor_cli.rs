//! The pieces of `aqueduct findings` (list, acknowledge), `aqueduct metrics` and `aqueduct alerts`: clap
//! arguments and async runners writing to any output (the binary passes stdout).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_store::{Acknowledgement, ConnectionRef, FindingRecord, Store};
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
    /// Only the findings nobody has acknowledged yet.
    #[arg(long)]
    pub open: bool,
    /// Acknowledge finding ID of `--connection` (the first acknowledgement stands), then print it.
    #[arg(long, value_name = "ID", requires = "connection")]
    pub ack: Option<i64>,
    /// Why, with `--ack`.
    #[arg(long, requires = "ack")]
    pub note: Option<String>,
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
    finding: &'a FindingRecord,
}

/// Who acknowledges from the command line: the operating-system user.
fn cli_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn run_findings(
    store: Arc<dyn Store>,
    organization: &str,
    args: &FindingsArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    if let (Some(id), Some(c)) = (args.ack, &args.connection) {
        let cr = ConnectionRef::new(organization, c.clone());
        let ack = Acknowledgement {
            by: cli_user(),
            at: Utc::now(),
            note: args.note.clone(),
        };
        let Some(record) = store.acknowledge_finding(&cr, id, &ack).await? else {
            return Err(MonitorError::UnknownFinding {
                connection: c.clone(),
                id,
            });
        };
        return print_findings(&[(c.clone(), record)], args.json, out);
    }
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
        let open = args.open.then_some(false);
        for f in store.list_finding_records(&cr, open, args.limit).await? {
            all.push((c.clone(), f));
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.1.finding.at));
    print_findings(&all, args.json, out)
}

fn print_findings(
    all: &[(String, FindingRecord)],
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), MonitorError> {
    if json {
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
    for (c, rec) in all {
        let f = &rec.finding;
        writeln!(
            out,
            "#{:<5} {}  {:<8}  {}  {}{}{}",
            rec.id,
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
        if let Some(a) = &rec.acknowledged {
            writeln!(
                out,
                "    acknowledged by {} at {}{}",
                a.by,
                a.at.format("%Y-%m-%d %H:%M:%S"),
                a.note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            )?;
        }
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
