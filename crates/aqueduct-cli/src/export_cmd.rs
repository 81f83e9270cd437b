//! `aqueduct export parquet|csv --org ORG --out DIR`: the store's resources through SQL on
//! FHIR views (the shipped US Core ones, or the user's with `--views DIR`) into one file per
//! view, organization and source; only partitions whose resources changed are rewritten.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use aqueduct_engine::export::{self, ExportOptions, ExportReport, Form, Format};
use aqueduct_serve::fhir::view::{View as FacadeView, render_into};
use aqueduct_views::catalog;
use clap::{Args, ValueEnum};

use crate::Context;

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Parquet (Snappy); needs a build with `--features parquet`.
    Parquet,
    /// CSV (RFC 4180, header line, nulls empty, lists as JSON arrays).
    Csv,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The file format.
    #[arg(value_enum)]
    format: FormatArg,
    /// The organization whose sources are exported.
    #[arg(long = "org")]
    organization: String,
    /// Only these views (repeatable or comma-separated); default: all.
    #[arg(long = "view", value_delimiter = ',')]
    views: Vec<String>,
    /// Read the ViewDefinitions (`*.json`) of this directory instead of the shipped ones.
    #[arg(long = "views")]
    views_dir: Option<PathBuf>,
    /// Read the clean form (facade ids, normalized codes and units) instead of the raw bytes.
    #[arg(long)]
    clean: bool,
    /// The output directory (its `aqueduct-export.json` remembers what was written).
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The facade's clean renderer, handed to the engine.
fn render_clean(
    r: &aqueduct_core::StoredResource,
    base: Option<&str>,
    rows: &[aqueduct_core::StoredNormalized],
    out: &mut String,
) -> bool {
    render_into(r, FacadeView::Clean, base, rows, out)
}

pub async fn run(ctx: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let views = match &args.views_dir {
        Some(dir) => catalog::load_dir(dir)?,
        None => catalog::builtin()?,
    };
    let views = catalog::select(views, &args.views)?;
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref()))
        .await
        .context("opening the store")?;
    let opts = ExportOptions {
        organization: args.organization.clone(),
        format: match args.format {
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Csv => Format::Csv,
        },
        form: if args.clean { Form::Clean } else { Form::Raw },
        out: args.out.clone(),
        clean: Some(&render_clean),
    };
    let report = export::export(store.as_ref(), &views, &opts).await?;
    print_report(&report, args.json);
    let failed: u64 = report.partitions.iter().map(|p| p.state.failed).sum();
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn print_report(report: &ExportReport, json: bool) {
    if json {
        let parts: Vec<serde_json::Value> = report
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "view": p.view, "source": p.connection, "path": p.path,
                    "written": p.written, "rows": p.state.rows, "resources": p.state.resources,
                    "failed": p.state.failed, "bytes": p.state.bytes, "failures": p.failures,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"partitions": parts, "seconds": report.seconds})
        );
        return;
    }
    println!(
        "{:<24} {:<16} {:>8} {:>10} {:>10} {:>7}  file",
        "view", "source", "state", "resources", "rows", "failed"
    );
    for p in &report.partitions {
        println!(
            "{:<24} {:<16} {:>8} {:>10} {:>10} {:>7}  {}",
            p.view,
            p.connection,
            if p.written { "written" } else { "kept" },
            p.state.resources,
            p.state.rows,
            p.state.failed,
            p.path.display()
        );
        for f in &p.failures {
            println!("    failed: {f}");
        }
    }
    let written = report.partitions.iter().filter(|p| p.written).count();
    println!(
        "{written} of {} partitions written ({} rows) in {:.2} s; the others had not changed",
        report.partitions.len(),
        report.rows_written(),
        report.seconds
    );
}
