//! `aqueduct run`: the engine in the foreground — every connection's schedule and every
//! refresh request (from HL7 messages, the API, schedules) until stopped. SIGTERM or Ctrl-C:
//! the syncs in flight checkpoint and close as interrupted (the next run resumes them), their
//! requests go back to the queue, and the process exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use aqueduct_store::RefreshOutcome;
use clap::Args;

use crate::Context;

#[derive(Args)]
pub struct RunArgs {
    /// Stop once nothing is due and the queue is empty (for cron jobs and scripts); then exit
    /// 1 if a request failed or the engine hit an error, 2 if one was partial, else 0.
    #[arg(long)]
    until_idle: bool,
    /// Print what was done as JSON when stopping.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = ctx
        .config()?
        .context("aqueduct run needs a config file (aqueduct.toml)")?;
    let store = aqueduct_store::open(&ctx.store_location(Some(&config))).await?;
    let engine = Arc::new(aqueduct_engine::Engine::new(Arc::new(config), store)?);
    let stopper = engine.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing or checkpointing the work in flight");
        let _ = stopper.send(true);
    });
    let summary = if args.until_idle {
        engine.run_until(|_| true).await
    } else {
        engine.run().await
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "aqueduct run: {} schedule slot(s) fired, {} refresh request claim(s) handled, {} given back to the queue, {} error(s)",
            summary.schedules_fired,
            summary.handled.len(),
            summary.requeued,
            summary.errors.len()
        );
        for w in &summary.handled {
            if let Some(r) = &w.result {
                println!(
                    "  {} #{}: {} — {}",
                    w.organization,
                    w.ids
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", #"),
                    r.outcome.as_str(),
                    r.detail
                );
            }
        }
        for e in &summary.errors {
            println!("  error: {e}");
        }
    }
    if !args.until_idle {
        // a service stopped on request: what it did is in the store and `status`
        return Ok(ExitCode::SUCCESS);
    }
    // a cron job or script must be able to tell that the work it ran did not all succeed
    let outcome = |o: RefreshOutcome| {
        summary
            .handled
            .iter()
            .any(|w| w.result.as_ref().is_some_and(|r| r.outcome == o))
    };
    Ok(
        if !summary.errors.is_empty() || outcome(RefreshOutcome::Failed) {
            ExitCode::FAILURE
        } else if outcome(RefreshOutcome::Partial) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
