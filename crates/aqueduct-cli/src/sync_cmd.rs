//! `aqueduct sync CONNECTION`: one configured connection, against any FHIR R4 base URL with
//! auth none, a static bearer token or a SMART flow.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aqueduct_client::FhirClient;
use aqueduct_smart::SmartClient;
use aqueduct_store::Store;
use aqueduct_sync::{SyncMode, SyncOptions, Syncer};
use clap::Args;

use crate::Context;
use crate::wiring::{ResolvedConnection, token_source, vault_key};

#[derive(Args)]
pub struct SyncArgs {
    /// The connection, as ORGANIZATION/NAME or a unique NAME from aqueduct.toml.
    connection: String,
    /// Sync only this patient (repeatable). Default: the patient of a standalone launch, or the
    /// population the server lists for backend and open connections.
    #[arg(long = "patient")]
    patients: Vec<String>,
    /// Fetch everything and tombstone what disappeared (the default).
    #[arg(long, conflicts_with = "incremental")]
    full: bool,
    /// Ask only for what changed since the last complete sync (the server's clock).
    #[arg(long)]
    incremental: bool,
    /// Patients synced at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: SyncArgs) -> anyhow::Result<ExitCode> {
    let config = ctx
        .config()?
        .context("aqueduct sync needs a config file (aqueduct.toml)")?;
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
    let mode = if args.incremental {
        SyncMode::Incremental
    } else {
        SyncMode::Full
    };
    let auth = match token_source(&resolved, smart.as_ref()).await {
        Ok(a) => a,
        Err(e) => {
            // a run that cannot get a token is still a failed run, with a finding
            aqueduct_sync::record_failed_start(
                store.as_ref(),
                &resolved.conn,
                mode,
                "getting a token",
                &format!("{e:#}"),
            )
            .await?;
            return Err(e);
        }
    };
    let base = url::Url::parse(&resolved.base_url())?;
    let client = FhirClient::new(base, &resolved.profile, auth)?;
    let options = SyncOptions {
        resource_types: resolved.resource_types(),
        patient_concurrency: args.concurrency.max(1),
        ..SyncOptions::default()
    };
    let syncer = Syncer::new(
        store.clone(),
        client,
        resolved.conn.clone(),
        resolved.profile.clone(),
        options,
    );
    let mut patients = args.patients.clone();
    if patients.is_empty() {
        patients = match (&resolved.config.auth, &smart) {
            (aqueduct_config::AuthConfig::SmartStandalone { .. }, Some(s)) => {
                let loaded = match s.load_tokens(&resolved.conn).await {
                    Ok(t) => t,
                    Err(e) => {
                        syncer
                            .record_failed_start(mode, "reading the stored tokens", &e.to_string())
                            .await?;
                        return Err(e.into());
                    }
                };
                let tokens = loaded.with_context(|| {
                    format!(
                        "no tokens for {}: run `aqueduct connect {}` first",
                        resolved.conn, args.connection
                    )
                })?;
                vec![
                    tokens
                        .context
                        .patient
                        .context("the launch gave no patient context; pass --patient ID")?,
                ]
            }
            _ => match syncer.discover_patients().await {
                Ok(p) => p,
                Err(e) => {
                    syncer
                        .record_failed_start(mode, "listing the server's patients", &e.to_string())
                        .await?;
                    return Err(anyhow::Error::new(e).context("listing the server's patients"));
                }
            },
        };
    }

    let progress =
        (!args.json).then(|| spinner(store.clone(), resolved.conn.clone(), patients.len()));
    let report = syncer.sync_patients(&patients, mode).await;
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let report = report?;
    // What discovery noticed about the authorization endpoints (another origin than the FHIR
    // server) is a finding of this run.
    if let (Some(s), Some(_)) = (&smart, resolved.smart_connection()?) {
        if let Ok(cfg) = s.discovery().get(resolved.base_url().as_str()).await {
            for n in &cfg.notices {
                store
                    .record_finding(
                        &resolved.conn,
                        &n.to_finding(chrono::Utc::now(), Some(report.run_id)),
                    )
                    .await?;
            }
        }
    }
    let after =
        crate::after_sync::after_sync(store.as_ref(), &resolved.conn, report.run_id, Some(&config))
            .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"report": report, "findings": after.findings, "normalized": after.normalized})
            )?
        );
    } else {
        crate::report::print_sync_report(
            &resolved.conn.to_string(),
            resolved.base_url().as_str(),
            &report,
        );
        crate::report::print_normalized(&after.normalized);
        crate::report::print_findings(&after.findings);
    }
    Ok(match report.outcome {
        aqueduct_store::RunOutcome::Complete => ExitCode::SUCCESS,
        // Partial is not success: scripts must be able to tell.
        aqueduct_store::RunOutcome::Partial => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    })
}

fn spinner(
    store: Arc<dyn Store>,
    conn: aqueduct_store::ConnectionRef,
    patients: usize,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let b = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(counts) = store.count_by_type(&conn).await {
                let n: u64 = counts.iter().map(|c| c.live).sum();
                b.set_message(format!(
                    "syncing {patients} patient(s) from {conn}: {n} resources stored"
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (bar, task)
}
