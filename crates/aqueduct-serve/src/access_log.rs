//! The audit log of reads: every read of patient data is committed to the store's access log
//! before its answer leaves the server. Writes are group-committed: whatever events arrived
//! while the previous batch was being written go in the next transaction, so the log costs
//! one transaction per batch, not per request, and a read never returns unlogged.

use std::sync::Arc;

use aqueduct_core::{AccessEvent, Store};
use tokio::sync::{mpsc, oneshot};

use crate::problem::Problem;

type Ack = oneshot::Sender<bool>;

/// A handle to the access-log writer.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<(AccessEvent, Ack)>,
}

/// Events written in one transaction at most.
const MAX_BATCH: usize = 1024;

impl AccessLog {
    /// Starts the writer on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AccessEvent, Ack)>(8 * MAX_BATCH);
        tokio::spawn(async move {
            let mut events = Vec::with_capacity(MAX_BATCH);
            let mut acks = Vec::with_capacity(MAX_BATCH);
            while let Some((ev, ack)) = rx.recv().await {
                events.push(ev);
                acks.push(ack);
                while events.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((ev, ack)) => {
                            events.push(ev);
                            acks.push(ack);
                        }
                        Err(_) => break,
                    }
                }
                let ok = match store.record_access(&events).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, events = events.len(), "the access log could not be written; the reads are refused");
                        false
                    }
                };
                for ack in acks.drain(..) {
                    let _ = ack.send(ok);
                }
                events.clear();
            }
        });
        Self { tx }
    }

    /// Records `event` and returns once it is committed. An error means the read must not be
    /// answered.
    pub async fn record(&self, event: AccessEvent) -> Result<(), Problem> {
        let (ack, done) = oneshot::channel();
        let unavailable = || {
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "the read could not be written to the audit log, so it is not answered",
            )
        };
        self.tx
            .send((event, ack))
            .await
            .map_err(|_| unavailable())?;
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }
}
