//! The second use case: consume refresh requests. A request (from an HL7 message, a schedule,
//! a Subscription notification, the API) is claimed under a lease that a heartbeat renews, so
//! one process works on it while it lives and another takes it over if that process dies; the
//! pending requests for the same patient and connection are claimed with it and served by the
//! same sync. Its outcome — complete, partial, failed, or unmatched when no connection holds
//! the patient — is recorded with the runs it caused. Errors are retried with backoff up to
//! `max_attempts`; a connection another process is syncing waits without using an attempt; a
//! sync stopped by a shutdown goes back to the queue and its next run resumes it.

use std::time::Duration;

use aqueduct_core::{
    ClaimedRefresh, RefreshOutcome, RefreshRequest, RefreshResult, RunId, RunOutcome,
};
use aqueduct_sync::SyncMode;
use serde::Serialize;

use crate::sync_job::{SyncRequest, error_chain};
use crate::{Engine, EngineError};

/// The system the HL7 layer gives an MRN whose assigning authority has no OID:
/// `urn:aqueduct:hl7v2:<namespace>`.
const HL7_LOCAL_SYSTEM: &str = "urn:aqueduct:hl7v2:";

/// What a refresh request asks to sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RefreshTarget {
    /// Every patient of the connection.
    Connection { connection: String },
    /// One patient of the connection, by its id there.
    Patient {
        connection: String,
        patient_id: String,
    },
}

/// What one claim of the queue came to.
#[derive(Debug, Clone, Serialize)]
pub struct WorkDone {
    pub organization: String,
    /// The requests served (coalesced ones included).
    pub ids: Vec<i64>,
    pub request: RefreshRequest,
    /// Closed with this result; None when the requests went back to the queue.
    pub result: Option<RefreshResult>,
    /// Why they went back to the queue, and when they may be claimed again.
    pub requeued: Option<(String, Duration)>,
}

/// How the syncs of a claim ended.
enum Verdict {
    Done(RefreshResult),
    Retry {
        why: String,
        retry_in: Duration,
        failed_attempt: bool,
    },
}

/// Renews a claim while its work runs; stops when dropped.
struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    /// Takes the next claimable request of any configured organization, if there is one.
    pub(crate) async fn claim_next(&self) -> Result<Option<(String, ClaimedRefresh)>, EngineError> {
        for org in self.config.organizations.keys() {
            if let Some(c) = self
                .store
                .claim_refresh(org, &self.holder, self.settings.claim_ttl)
                .await?
            {
                return Ok(Some((org.clone(), c)));
            }
        }
        Ok(None)
    }

    /// Claims and handles one refresh request: None when the queue holds nothing to do now.
    pub async fn work_once(&self) -> Result<Option<WorkDone>, EngineError> {
        match self.claim_next().await? {
            Some((org, claim)) => Ok(Some(self.handle(&org, claim).await?)),
            None => Ok(None),
        }
    }

    /// Works a claimed request to its end and records the result (or gives it back).
    pub(crate) async fn handle(
        &self,
        org: &str,
        claim: ClaimedRefresh,
    ) -> Result<WorkDone, EngineError> {
        let _renewal = {
            let (store, org, ids, holder, ttl) = (
                self.store.clone(),
                org.to_string(),
                claim.ids.clone(),
                self.holder.clone(),
                self.settings.claim_ttl,
            );
            Renewal(tokio::spawn(async move {
                let mut tick = tokio::time::interval(ttl / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match store.renew_refresh_claim(&org, &ids, &holder, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(requests = ?ids, "refresh claim lost (its lease expired); another process may run it");
                        }
                        Err(e) => tracing::warn!(error = %e, "refresh claim not renewed"),
                    }
                }
            }))
        };
        let verdict = match self.targets(org, &claim.request).await? {
            Err(result) => {
                // nothing to sync (an HL7 patient no connection holds, say): what the event
                // wrote still joins the organization's identity, as a sync's Patients do
                if let Err(e) = crate::identity::update_identity(self.store.as_ref(), org).await {
                    tracing::warn!(error = ?e, "patient identity not updated");
                }
                Verdict::Done(result)
            }
            Ok(targets) => self.execute(org, &claim, &targets).await,
        };
        let mut done = WorkDone {
            organization: org.to_string(),
            ids: claim.ids.clone(),
            request: claim.request.clone(),
            result: None,
            requeued: None,
        };
        match verdict {
            Verdict::Done(result) => {
                if !self
                    .store
                    .finish_refresh(org, &claim.ids, &self.holder, &result)
                    .await?
                {
                    tracing::warn!(requests = ?claim.ids, "refresh requests were taken over before they finished; their result is left to the new holder");
                }
                tracing::info!(requests = ?claim.ids, outcome = result.outcome.as_str(), "refresh request handled");
                done.result = Some(result);
            }
            Verdict::Retry {
                why,
                retry_in,
                failed_attempt,
            } => {
                self.store
                    .release_refresh_claim(org, &claim.ids, &self.holder, retry_in, failed_attempt)
                    .await?;
                tracing::info!(requests = ?claim.ids, retry_in = ?retry_in, "refresh request back in the queue: {why}");
                done.requeued = Some((why, retry_in));
            }
        }
        Ok(done)
    }

    /// The syncs a request asks for, or the result it ends with when there are none.
    pub async fn targets(
        &self,
        org: &str,
        request: &RefreshRequest,
    ) -> Result<Result<Vec<RefreshTarget>, RefreshResult>, EngineError> {
        let configured: Vec<&String> = self
            .config
            .organizations
            .get(org)
            .map(|o| o.connections.keys().collect())
            .unwrap_or_default();
        let unusable = |detail: String| {
            Err(RefreshResult {
                outcome: RefreshOutcome::Failed,
                detail,
                run_ids: Vec::new(),
            })
        };
        if let Some(c) = &request.connection
            && !configured.contains(&c)
        {
            return Ok(unusable(format!(
                "connection {org}/{c} is not configured here"
            )));
        }
        let Some(key) = &request.patient_key else {
            return Ok(match &request.connection {
                Some(c) => Ok(vec![RefreshTarget::Connection {
                    connection: c.clone(),
                }]),
                None => unusable("a request without a patient must name its connection".into()),
            });
        };
        if let Some(id) = key.strip_prefix("Patient/") {
            return Ok(match &request.connection {
                Some(c) => Ok(vec![RefreshTarget::Patient {
                    connection: c.clone(),
                    patient_id: id.to_string(),
                }]),
                None => unusable(format!(
                    "{key} is an id at one source: the request must name its connection"
                )),
            });
        }
        let Some((system, value)) = key.split_once('|') else {
            return Ok(unusable(format!(
                "patient key {key:?} is neither system|value nor Patient/<id>"
            )));
        };
        let named = |c: &String| request.connection.as_ref().is_none_or(|n| n == c);
        let mut targets: Vec<RefreshTarget> = self
            .store
            .find_by_identifier(org, "Patient", system, value)
            .await?
            .into_iter()
            .filter(|f| configured.contains(&&f.connection) && named(&f.connection))
            .map(|f| RefreshTarget::Patient {
                connection: f.connection,
                patient_id: f.logical_id,
            })
            .collect();
        // A local MRN (an assigning authority without an OID): the connections that say which
        // identifier system that authority's MRNs have there.
        if let Some(authority) = system.strip_prefix(HL7_LOCAL_SYSTEM) {
            for c in configured.iter().filter(|c| named(c)) {
                let Some(local) = self.hl7_system_at(org, c, authority) else {
                    continue;
                };
                for f in self
                    .store
                    .find_by_identifier(org, "Patient", &local, value)
                    .await?
                    .into_iter()
                    .filter(|f| f.connection == **c)
                {
                    let t = RefreshTarget::Patient {
                        connection: f.connection,
                        patient_id: f.logical_id,
                    };
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
        }
        if targets.is_empty() {
            return Ok(Err(RefreshResult {
                outcome: RefreshOutcome::Unmatched,
                detail: format!(
                    "no connection of {org}{} holds a Patient with identifier {system}|{value} \
                     (as of its last sync); nothing was refreshed",
                    request
                        .connection
                        .as_ref()
                        .map(|c| format!(" named {c}"))
                        .unwrap_or_default()
                ),
                run_ids: Vec::new(),
            }));
        }
        Ok(Ok(targets))
    }

    /// The identifier system the connection's config gives HL7 MRNs of `authority` (as the
    /// HL7 layer names it: the CX.4 namespace).
    fn hl7_system_at(&self, org: &str, connection: &str, authority: &str) -> Option<String> {
        let c = self
            .config
            .organizations
            .get(org)?
            .connections
            .get(connection)?;
        c.hl7_assigning_authorities
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(authority))
            .map(|(_, v)| v.clone())
    }

    async fn execute(
        &self,
        org: &str,
        claim: &ClaimedRefresh,
        targets: &[RefreshTarget],
    ) -> Verdict {
        let mut run_ids: Vec<RunId> = Vec::new();
        let mut lines = Vec::new();
        let mut worst = RefreshOutcome::Complete;
        for t in targets {
            let (connection, patients, what) = match t {
                RefreshTarget::Connection { connection } => {
                    (connection, Vec::new(), format!("{org}/{connection}"))
                }
                RefreshTarget::Patient {
                    connection,
                    patient_id,
                } => (
                    connection,
                    vec![patient_id.clone()],
                    format!("Patient/{patient_id} at {org}/{connection}"),
                ),
            };
            let request = SyncRequest {
                connection: format!("{org}/{connection}"),
                patients,
                mode: SyncMode::Full,
                patient_concurrency: None,
            };
            match self.sync_connection(&request).await {
                Ok(job) => {
                    run_ids.push(job.report.run_id);
                    let outcome = job.report.outcome;
                    if outcome == RunOutcome::Failed && self.stopping() {
                        return Verdict::Retry {
                            why: format!(
                                "stopped while syncing {what} (run {} resumes next)",
                                job.report.run_id
                            ),
                            retry_in: Duration::ZERO,
                            failed_attempt: false,
                        };
                    }
                    lines.push(format!(
                        "synced {what}: {} (run {})",
                        outcome.as_str(),
                        job.report.run_id
                    ));
                    worst = match (worst, outcome) {
                        (_, RunOutcome::Failed | RunOutcome::Running) => RefreshOutcome::Failed,
                        (RefreshOutcome::Complete, RunOutcome::Partial) => RefreshOutcome::Partial,
                        (w, _) => w,
                    };
                }
                Err(e) if e.is_busy() => {
                    return Verdict::Retry {
                        why: format!("another process is syncing {org}/{connection}"),
                        retry_in: self.settings.busy_retry,
                        failed_attempt: false,
                    };
                }
                Err(e) => {
                    worst = RefreshOutcome::Failed;
                    lines.push(format!("could not sync {what}: {}", error_chain(&e)));
                }
            }
        }
        let detail = lines.join("; ");
        if worst == RefreshOutcome::Failed && claim.attempts + 1 < self.settings.max_attempts {
            return Verdict::Retry {
                retry_in: self.settings.backoff(claim.attempts),
                why: format!("attempt {} failed: {detail}", claim.attempts + 1),
                failed_attempt: true,
            };
        }
        let detail = if worst == RefreshOutcome::Failed && claim.attempts > 0 {
            format!(
                "failed after {} attempts; last: {detail}",
                claim.attempts + 1
            )
        } else {
            detail
        };
        Verdict::Done(RefreshResult {
            outcome: worst,
            detail,
            run_ids,
        })
    }
}
