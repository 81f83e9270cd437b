//! CLI pieces for `aqueduct normalize` and `aqueduct codes ...`: clap arguments and async
//! runners that return the text to print.

use std::sync::Arc;

use aqueduct_store::{CodeMapping, ConnectionRef, Store};
use clap::{Args, Subcommand};

use crate::error::NormalizeError;
use crate::rebuild::{RebuildReport, context_for, rebuild};
use crate::terminology::{Terminology, recognise_system};

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
    /// RF2 snapshots, icd10cm_order_*.txt, cvx.txt) loaded on top of the embedded tables.
    #[arg(long, env = "AQUEDUCT_TERMINOLOGY_DIR")]
    pub terminology_dir: Option<std::path::PathBuf>,
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
    let terminology = match &args.terminology_dir {
        Some(dir) => {
            let (t, loaded) = Terminology::embedded_with_dir(dir)?;
            for (file, n) in &loaded {
                tracing::info!(file = %file, entries = n, "terminology loaded");
            }
            Arc::new(t)
        }
        None => terminology,
    };
    let mut reports: Vec<RebuildReport> = Vec::new();
    for c in connections {
        let conn = ConnectionRef::new(organization, c);
        let ctx = context_for(store.as_ref(), &conn, terminology.clone()).await?;
        reports.push(rebuild(store.as_ref(), &conn, &ctx, &args.types).await?);
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

/// Checks a mapping before it is stored: the target must be a recognised standard system
/// (stored under its canonical URI) and the code must have that system's shape.
pub fn validate_mapping(a: &MapArgs) -> Result<CodeMapping, NormalizeError> {
    let code = a.code.trim();
    if code.is_empty() {
        return Err(NormalizeError::Invalid("--code is empty".into()));
    }
    if a.to_system.trim() == crate::normalize::ACT_CODE {
        let c = a.to_code.trim().to_ascii_uppercase();
        if crate::normalize::act_code_class(&c) == "other"
            && c != "HH"
            && c != "OBSENC"
            && c != "PRENC"
            && c != "SS"
            && c != "FLD"
        {
            return Err(NormalizeError::Invalid(format!(
                "--to-code {c} is not a v3 ActCode encounter class (AMB, IMP, ACUTE, NONAC, EMER, VR, HH, OBSENC, PRENC, SS, FLD)"
            )));
        }
        return Ok(CodeMapping {
            source_system: a.system.trim().to_string(),
            source_code: code.to_string(),
            target_system: crate::normalize::ACT_CODE.to_string(),
            target_code: c,
            target_display: a.display.clone(),
        });
    }
    let Some((sys, _)) = recognise_system(&a.to_system) else {
        return Err(NormalizeError::Invalid(format!(
            "--to-system {} is not a standard system (LOINC, SNOMED CT, ICD-10-CM, RxNorm, CVX, CPT)",
            a.to_system
        )));
    };
    let to_code = a.to_code.trim();
    if !sys.valid_code(to_code) {
        return Err(NormalizeError::Invalid(format!(
            "--to-code {to_code} is not a valid {} code",
            sys.uri()
        )));
    }
    Ok(CodeMapping {
        source_system: a.system.trim().to_string(),
        source_code: code.to_string(),
        target_system: sys.uri().to_string(),
        target_code: to_code.to_string(),
        target_display: a.display.clone(),
    })
}
