//! `aqueduct doctor TARGET`: what a live endpoint really supports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_client::{AccessTokenSource, NoAuth, StaticBearer, VendorProfile};
use aqueduct_doctor::{ProbeOptions, probe};
use aqueduct_smart::SmartClient;
use clap::Args;

use crate::Context;
use aqueduct_engine::{ResolvedConnection, vault_key};

#[derive(Args)]
pub struct DoctorArgs {
    /// A configured connection (ORGANIZATION/NAME or NAME) or a FHIR base URL.
    target: String,
    /// For a bare URL: the environment variable holding a bearer token.
    #[arg(long)]
    bearer_env: Option<String>,
    /// For a bare URL: the vendor profile to assume for headers and pacing.
    #[arg(long, default_value = "generic")]
    profile: String,
    /// The patient to probe searches with (default: the first the server lists).
    #[arg(long)]
    patient: Option<String>,
    /// Only these resource types (repeatable; default: the profile's).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Write what was observed as an institution override (TOML) to this file.
    #[arg(long)]
    write_profile: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (base, profile, auth): (url::Url, VendorProfile, Arc<dyn AccessTokenSource>) =
        if args.target.starts_with("http://") || args.target.starts_with("https://") {
            let auth: Arc<dyn AccessTokenSource> = match &args.bearer_env {
                Some(var) => Arc::new(StaticBearer::new(
                    std::env::var(var)
                        .with_context(|| format!("environment variable {var} is not set"))?,
                )),
                None => Arc::new(NoAuth),
            };
            (
                url::Url::parse(&args.target)?,
                VendorProfile::resolve(&args.profile, None)?,
                auth,
            )
        } else {
            let config = ctx
                .config()?
                .context("a connection name needs a config file (aqueduct.toml)")?;
            let resolved = ResolvedConnection::from_config(&config, &args.target)?;
            let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
            let smart = match resolved.smart_connection()? {
                Some(_) => Some(Arc::new(SmartClient::new(store, vault_key(&config)?)?)),
                None => None,
            };
            let auth = resolved.token_source(smart)?;
            (
                url::Url::parse(&resolved.base_url())?,
                resolved.profile.clone(),
                auth,
            )
        };
    let report = probe(
        &base,
        &profile,
        auth,
        ProbeOptions {
            types: args.types.clone(),
            patient: args.patient.clone(),
            ..ProbeOptions::default()
        },
    )
    .await;
    let observed = toml::to_string(&report.observed_profile())?;
    if let Some(path) = &args.write_profile {
        let text = format!(
            "# Observed by `aqueduct doctor` at {} against {}.\n# Use as the connection's [overrides] table.\n{observed}",
            chrono::Utc::now().to_rfc3339(),
            report.base_url
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "report": report, "observed_profile": observed })
            )?
        );
    } else {
        print!("{}", report.render());
        if let Some(path) = &args.write_profile {
            println!("observed profile written to {}", path.display());
        } else if !observed.is_empty() {
            println!("observed profile (use as [overrides]):\n{observed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
