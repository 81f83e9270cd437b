//! `aqueduct run`: schedules and refresh requests until stopped. Each pass fires the due
//! schedules, then claims work up to `concurrency` and runs it; with nothing to do it waits
//! `poll_interval` (or until stopped). When stopped it claims nothing more, lets the syncs in
//! flight checkpoint and close as interrupted, gives their requests back, and returns.

use aqueduct_core::BoxFuture;
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::refresh::WorkDone;
use crate::{Engine, EngineError};

/// What a run of the engine did, for the caller to report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Refresh requests queued by schedules this process fired.
    pub schedules_fired: usize,
    /// Claims closed with a result (each may serve several coalesced requests).
    pub handled: Vec<WorkDone>,
    /// Claims given back to the queue (retries, busy connections, the stop).
    pub requeued: usize,
    /// Errors that ended a claim's handling early (a store failure); the claim's lease
    /// expires and the work is taken again.
    pub errors: Vec<String>,
}

/// When [`Engine::run_until`] stops: asked after each pass with what ran so far.
type DoneWhen = dyn Fn(&RunSummary) -> bool + Send + Sync;

impl Engine {
    /// Runs until [`Engine::stop`] (or the sender of [`Engine::stopper`]) is called.
    pub fn run(self: &Arc<Self>) -> BoxFuture<'_, RunSummary> {
        self.run_until(|_| false)
    }

    /// Runs until stopped or `done(summary)` says so after a pass (tests: "until the queue is
    /// drained").
    pub fn run_until(
        self: &Arc<Self>,
        done: impl Fn(&RunSummary) -> bool + Send + Sync + 'static,
    ) -> BoxFuture<'_, RunSummary> {
        Box::pin(self.run_until_unboxed(Box::new(done)))
    }

    async fn run_until_unboxed(self: &Arc<Self>, done: Box<DoneWhen>) -> RunSummary {
        let mut summary = RunSummary::default();
        let mut in_flight: JoinSet<Result<WorkDone, EngineError>> = JoinSet::new();
        let mut stop = self.stop.clone();
        loop {
            if self.stopping() {
                break;
            }
            match self.fire_due_schedules().await {
                Ok(ids) => summary.schedules_fired += ids.len(),
                Err(e) => record_error(&mut summary, &e),
            }
            let mut claimed_any = false;
            while in_flight.len() < self.settings.concurrency && !self.stopping() {
                match self.claim_next().await {
                    Ok(Some((org, claim))) => {
                        claimed_any = true;
                        let engine = Arc::clone(self);
                        in_flight.spawn(async move { engine.handle(&org, claim).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        record_error(&mut summary, &e);
                        break;
                    }
                }
            }
            if in_flight.is_empty() && !claimed_any && done(&summary) {
                break;
            }
            tokio::select! {
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    collect(&mut summary, joined);
                }
                () = tokio::time::sleep(self.settings.poll_interval), if in_flight.len() >= self.settings.concurrency || !claimed_any => {}
                _ = stop.changed() => {}
                else => {}
            }
        }
        // stopping: the syncs in flight see the same signal, checkpoint and give back
        while let Some(joined) = in_flight.join_next().await {
            collect(&mut summary, joined);
        }
        summary
    }
}

fn collect(
    summary: &mut RunSummary,
    joined: Result<Result<WorkDone, EngineError>, tokio::task::JoinError>,
) {
    match joined {
        Ok(Ok(w)) if w.result.is_some() => summary.handled.push(w),
        Ok(Ok(_)) => summary.requeued += 1,
        Ok(Err(e)) => record_error(summary, &e),
        Err(e) => summary
            .errors
            .push(format!("a refresh task ended abnormally: {e}")),
    }
}

fn record_error(summary: &mut RunSummary, e: &EngineError) {
    let line = crate::sync_job::error_chain(e);
    tracing::warn!("engine: {line}");
    summary.errors.push(line);
}
