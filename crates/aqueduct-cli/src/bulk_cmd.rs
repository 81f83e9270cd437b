//! `aqueduct bulk export CONNECTION`: a FHIR Bulk Data `$export` of one configured connection
//! imported into the store (resumable: run it again after a crash and it continues the same
//! job), then normalization and the silent-failure checks, as after a sync.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_bulk::{BulkExporter, BulkOptions, BulkReport, Level};
use aqueduct_client::FhirClient;
use aqueduct_smart::SmartClient;
use clap::{Args, Subcommand};

use crate::Context;
use aqueduct_engine::{ResolvedConnection, vault_key};

#[derive(Subcommand)]
pub enum BulkCommand {
    /// Kick off (or resume) a `$export` and import its files; exits 0 when complete, 2 when
    /// partial, 1 when failed.
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// The connection, as ORGANIZATION/NAME or a unique NAME from aqueduct.toml.
    connection: String,
    /// Export one Group's patients (`Group/{id}/$export`).
    #[arg(long, conflicts_with = "patients")]
    group: Option<String>,
    /// Export all patients (`Patient/$export`); the default is the system level.
    #[arg(long = "patients")]
    patients: bool,
    /// `_type`, repeatable or comma-separated.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// `_since` (an instant).
    #[arg(long, conflicts_with = "incremental")]
    since: Option<String>,
    /// `_typeFilter` (e.g. `Observation?category=laboratory`), repeatable.
    #[arg(long = "type-filter")]
    type_filters: Vec<String>,
    /// `_outputFormat`.
    #[arg(long)]
    output_format: Option<String>,
    /// `_since` = the transactionTime of the last complete export of this level.
    #[arg(long)]
    incremental: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Delete the stored (interrupted) job at the server and forget it, instead of exporting.
    #[arg(long)]
    cancel: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, cmd: BulkCommand) -> anyhow::Result<ExitCode> {
    let BulkCommand::Export(args) = cmd;
    let config = ctx
        .config()?
        .context("aqueduct bulk needs a config file (aqueduct.toml)")?;
    let resolved = ResolvedConnection::from_config(&config, &args.connection)?;
    let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
    resolved.register(store.as_ref()).await?;
    let smart = match resolved.smart_connection()? {
        Some(_) => Some(Arc::new(SmartClient::new(
            store.clone(),
            vault_key(&config)?,
        )?)),
        None => None,
    };
    let auth = resolved.token_source(smart)?;
    let base = url::Url::parse(&resolved.base_url())?;
    let client = FhirClient::new(base, &resolved.profile, auth.clone())?;
    let level = match (&args.group, args.patients) {
        (Some(g), _) => Level::Group(g.clone()),
        (None, true) => Level::Patient,
        (None, false) => Level::System,
    };
    let options = BulkOptions {
        level,
        types: args.types.clone(),
        since: args.since.clone(),
        type_filters: args.type_filters.clone(),
        output_format: args.output_format.clone(),
        incremental: args.incremental,
        concurrency: args.concurrency.max(1),
        ..BulkOptions::default()
    };
    let exporter = BulkExporter::new(store.clone(), client, auth, resolved.conn.clone(), options);
    if args.cancel {
        let n = exporter.cancel().await?;
        println!(
            "{}: {n} stored Bulk job(s) deleted at the server and forgotten",
            resolved.conn
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = exporter.run().await?;
    let after =
        aqueduct_engine::after_sync(store.as_ref(), &resolved.conn, report.run_id, Some(&config))
            .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"report": report, "findings": after.findings, "normalized": after.normalized})
            )?
        );
    } else {
        print_report(&resolved.conn.to_string(), &report);
        crate::report::print_normalized(&after.normalized);
        crate::report::print_findings(&after.findings);
    }
    Ok(match report.outcome {
        aqueduct_store::RunOutcome::Complete => ExitCode::SUCCESS,
        aqueduct_store::RunOutcome::Partial => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    })
}

pub fn print_report(conn: &str, r: &BulkReport) {
    println!(
        "bulk export {conn} ({}): {} — run {}{}",
        r.level,
        r.outcome.as_str(),
        r.run_id,
        if r.resumed {
            ", resumed an interrupted job"
        } else {
            ""
        }
    );
    if let Some(s) = &r.since {
        println!("  since              {s}");
    }
    if let Some(t) = &r.transaction_time {
        println!("  transactionTime    {t}");
    }
    println!(
        "  files              {} of {} read whole, {} kick-off(s), {} requests ({} retries, {} throttled)",
        r.files_complete, r.files, r.jobs, r.requests, r.retries, r.throttled
    );
    println!(
        "  bytes              {:.1} MB received, {:.1} MB of NDJSON",
        r.bytes_received as f64 / 1e6,
        r.bytes_decoded as f64 / 1e6
    );
    for (t, c) in &r.by_type {
        println!(
            "  {t:<22} {:>8} lines: {} new, {} updated, {} unchanged, {} flagged, {} tombstoned",
            c.lines, c.inserted, c.updated, c.unchanged, c.invalid, c.tombstoned
        );
    }
    if r.malformed_lines > 0 {
        println!(
            "  malformed lines    {} (stored flagged; each a finding)",
            r.malformed_lines
        );
        for q in r.quarantined.iter().take(10) {
            println!("    {} line {}: {}", q.file, q.line, q.reason);
        }
    }
    if !r.rerequested_types.is_empty() {
        println!(
            "  expired files      asked for again by a new kick-off: {}",
            r.rerequested_types.join(", ")
        );
    }
    for p in &r.partial {
        println!(
            "  missing            {} ({}): {}",
            p.resource_type,
            p.reason.as_str(),
            p.detail
        );
    }
    for n in r.notes.iter().take(20) {
        println!("  note               {n}");
    }
    if let Some(e) = &r.error {
        println!("  error              {e}");
    }
}
