//! `aqueduct sync CONNECTION`: one configured connection, against any FHIR R4 base URL with
//! auth none, a static bearer token or a SMART flow.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aqueduct_engine::SyncRequest;
use aqueduct_store::Store;
use aqueduct_sync::SyncMode;
use clap::Args;

use crate::Context;

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
    let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
    let engine = aqueduct_engine::Engine::new(Arc::new(config), store.clone())?;
    let resolved =
        aqueduct_engine::ResolvedConnection::from_config(engine.config(), &args.connection)?;
    let request = SyncRequest {
        connection: args.connection.clone(),
        patients: args.patients.clone(),
        mode: if args.incremental {
            SyncMode::Incremental
        } else {
            SyncMode::Full
        },
        patient_concurrency: Some(args.concurrency.max(1)),
    };
    let progress = (!args.json).then(|| spinner(store.clone(), resolved.conn.clone()));
    let job = engine.sync_connection(&request).await;
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let job = job?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        crate::report::print_sync_report(&job.connection, &job.base_url, &job.report);
        crate::report::print_normalized(&job.after.normalized);
        crate::report::print_findings(&job.after.findings);
    }
    Ok(match job.report.outcome {
        aqueduct_store::RunOutcome::Complete => ExitCode::SUCCESS,
        // Partial is not success: scripts must be able to tell.
        aqueduct_store::RunOutcome::Partial => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    })
}

fn spinner(
    store: Arc<dyn Store>,
    conn: aqueduct_store::ConnectionRef,
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
                b.set_message(format!("syncing {conn}: {n} resources stored"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (bar, task)
}
