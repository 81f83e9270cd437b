//! CLI pieces for `aqueduct normalize` and `aqueduct codes ...`: clap arguments and async
//! runners that return the text to print.

use std::sync::Arc;

use aqueduct_store::{CodeMapping, ConnectionRef, Store};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use aqueduct_normalize::rebuild::{RebuildOptions, RebuildReport, context_for, rebuild_with};
use aqueduct_normalize::terminology::Terminology;
use aqueduct_normalize::{MappingRequest, NormalizeError};

/// `aqueduct normalize [--connection C] [--type T]... [--json]`
#[derive(Debug, Clone, Args)]
pub struct NormalizeArgs {
    /// Only this connection (default: every connection of the organization).
    #[arg(long)]
    pub connection: Option<String>,
    /// Only these resource types (repeatable; default: every supported type).
    #[arg(long = "type", value_name = "RESOURCE_TYPE")]
    pub types: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A directory of official release files (Loinc.csv, RXNCONSO.RRF, RXNSAT.RRF, SNOMED
    /// RF2 snapshots, icd10cm_order_*.txt, cvx.txt) loaded on top of the embedded tables
    /// (default: `[terminology] dir` of aqueduct.toml).
    #[arg(long, env = "AQUEDUCT_TERMINOLOGY_DIR")]
    pub terminology_dir: Option<std::path::PathBuf>,
    /// Only resources fetched since then: an RFC 3339 time, a date (2026-11-01, midnight
    /// UTC) or an age (36h, 7d, 90m).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only sources whose raw content, rules, tables or mappings changed since their rows
    /// were written (what runs after every sync).
    #[arg(long)]
    pub changed: bool,
}

/// `--since`: an RFC 3339 instant, a date, or an age back from now.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(dt.and_utc());
    }
    let unit = t.chars().last().unwrap_or(' ');
    let n: Option<i64> = t
        .get(..t.len().saturating_sub(1))
        .and_then(|n| n.parse().ok());
    let age = match (n, unit) {
        (Some(n), 'm') if n >= 0 => chrono::Duration::try_minutes(n),
        (Some(n), 'h') if n >= 0 => chrono::Duration::try_hours(n),
        (Some(n), 'd') if n >= 0 => chrono::Duration::try_days(n),
        _ => None,
    };
    age.and_then(|a| Utc::now().checked_sub_signed(a))
        .ok_or_else(|| {
            format!(
                "--since {s:?}: expected an RFC 3339 time (2026-11-01T08:00:00Z), a date \
             (2026-11-01) or an age (36h, 7d, 90m)"
            )
        })
}

/// `aqueduct codes <unmapped|map>`
#[derive(Debug, Clone, Args)]
pub struct CodesArgs {
    #[command(subcommand)]
    pub command: CodesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CodesCommand {
    /// List codes no rule could resolve (the review queue), most frequent first.
    Unmapped(UnmappedArgs),
    /// Map a local code to a standard one for a connection; re-run `aqueduct normalize` after.
    Map(MapArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UnmappedArgs {
    #[arg(long)]
    pub connection: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct MapArgs {
    #[arg(long)]
    pub connection: String,
    /// The local code system as the source sends it (use "" for codes without a system).
    #[arg(long)]
    pub system: String,
    #[arg(long)]
    pub code: String,
    /// Target system: a standard one (`http://loinc.org`, `http://snomed.info/sct`, ...).
    #[arg(long = "to-system")]
    pub to_system: String,
    #[arg(long = "to-code")]
    pub to_code: String,
    #[arg(long)]
    pub display: Option<String>,
}

/// Runs `aqueduct normalize`: rebuilds normalized data from raw for one or all connections.
pub async fn run_normalize(
    store: Arc<dyn Store>,
    organization: &str,
    args: &NormalizeArgs,
    terminology: Arc<Terminology>,
) -> Result<String, NormalizeError> {
    let connections: Vec<String> = match &args.connection {
        Some(c) => vec![c.clone()],
        None => store
            .list_connections(organization)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect(),
    };
    if connections.is_empty() {
        return Err(NormalizeError::Invalid(format!(
            "organization {organization} has no connections to normalize"
        )));
    }
    // `terminology` already holds the release files of `args.terminology_dir`: the caller
    // loads them once (they can be hundreds of megabytes)
    let options = RebuildOptions {
        types: args.types.clone(),
        incremental: args.changed,
        since: args.since,
    };
    let mut reports: Vec<RebuildReport> = Vec::new();
    for c in connections {
        let conn = ConnectionRef::new(organization, c);
        let ctx = context_for(store.as_ref(), &conn, terminology.clone()).await?;
        reports.push(rebuild_with(store.as_ref(), &conn, &ctx, &options).await?);
    }
    if args.json {
        Ok(serde_json::to_string_pretty(&reports)
            .map_err(|e| NormalizeError::Invalid(e.to_string()))?)
    } else {
        Ok(reports
            .iter()
            .map(RebuildReport::render)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Runs `aqueduct codes unmapped|map`.
pub async fn run_codes(
    store: Arc<dyn Store>,
    organization: &str,
    args: &CodesArgs,
) -> Result<String, NormalizeError> {
    match &args.command {
        CodesCommand::Unmapped(a) => {
            let rows = store
                .unmapped_codes(organization, a.connection.as_deref(), a.limit)
                .await?;
            if a.json {
                return serde_json::to_string_pretty(&rows)
                    .map_err(|e| NormalizeError::Invalid(e.to_string()));
            }
            if rows.is_empty() {
                return Ok("no unmapped codes\n".to_string());
            }
            let mut s = format!(
                "{:<14} {:<12} {:>7}  {:<40} {:<16} text\n",
                "connection", "kind", "count", "system", "code"
            );
            for r in rows {
                s.push_str(&format!(
                    "{:<14} {:<12} {:>7}  {:<40} {:<16} {}\n",
                    r.connection,
                    r.kind,
                    r.count,
                    r.source_system.as_deref().unwrap_or("-"),
                    r.source_code.as_deref().unwrap_or("-"),
                    r.source_text.as_deref().unwrap_or("")
                ));
            }
            s.push_str("map one with: aqueduct codes map --connection C --system S --code X --to-system T --to-code Y\n");
            Ok(s)
        }
        CodesCommand::Map(a) => {
            let m = validate_mapping(a)?;
            let conn = ConnectionRef::new(organization, a.connection.clone());
            store.put_code_mapping(&conn, &m).await?;
            Ok(format!(
                "mapped {}|{} -> {}|{} for {conn}; run `aqueduct normalize --connection {}` to apply it to stored data\n",
                m.source_system, m.source_code, m.target_system, m.target_code, a.connection
            ))
        }
    }
}

/// The mapping the arguments ask for, checked before it is stored.
pub fn validate_mapping(a: &MapArgs) -> Result<CodeMapping, NormalizeError> {
    aqueduct_normalize::validate_mapping(&MappingRequest {
        source_system: a.system.clone(),
        source_code: a.code.clone(),
        target_system: a.to_system.clone(),
        target_code: a.to_code.clone(),
        display: a.display.clone(),
    })
}
