//! Checkpoints: where a killed run resumes, and nothing more.
//!
//! A checkpoint belongs to one *epoch*: a run and the runs that resumed it. A run resumes only
//! the previous run of the same kind when that run was interrupted (its process died) or
//! stopped for re-authorization, and only within [`SyncOptions::resume_within`]; any other run
//! starts a fresh epoch, so a finished run's "done" marks are never reused (a later full sync
//! asks the server again). Every value names its epoch; a value of another epoch is ignored.
//!
//! Keys, per mode and patient (`sync/{mode}/{patient}/...`):
//! - `{type}/{search}`: the next page to read, or that the search was read to its end;
//! - `~refs/{type}/{search}/{page}`: the references and attachment URLs found on a page, saved
//!   before the page's checkpoint, so a resumed run still resolves the references of pages it
//!   does not read again;
//! - `~patient`: the patient is done in this epoch, with the gaps it ended with.
//!
//! [`SyncOptions::resume_within`]: crate::SyncOptions::resume_within

use aqueduct_core::{ConnectionRef, RunId, Store};
use serde::{Deserialize, Serialize};

use crate::SyncMode;
use crate::refs::Found;
use crate::report::{MissingReason, PartialType, SyncError};

/// Where a search stands in this epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Not started in this epoch.
    Fresh,
    /// Continue at this URL.
    Next(String),
    /// Read to its end, with the gap its pages carried.
    Done(Option<(MissingReason, String)>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub(crate) enum Checkpoint {
    /// The search continues at `next`.
    Next { epoch: RunId, next: String },
    /// The search was read to its last page, with the gap its pages carried, if any (an
    /// error outcome, suppressed data...), so a resumed run does not forget it.
    Done {
        epoch: RunId,
        #[serde(default)]
        gap: Option<(MissingReason, String)>,
    },
    /// What one page referenced.
    Refs {
        epoch: RunId,
        references: Vec<String>,
        attachments: Vec<String>,
        #[serde(default)]
        attachment_sizes: Vec<(String, u64)>,
    },
    /// The patient is finished in this epoch.
    Patient {
        epoch: RunId,
        gaps: Vec<PartialType>,
    },
}

impl Checkpoint {
    fn epoch(&self) -> RunId {
        match self {
            Checkpoint::Next { epoch, .. }
            | Checkpoint::Done { epoch, .. }
            | Checkpoint::Refs { epoch, .. }
            | Checkpoint::Patient { epoch, .. } => *epoch,
        }
    }

    fn encode(&self) -> String {
        // serializing a plain enum of strings and numbers cannot fail
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The checkpoints of one run, scoped to its epoch.
pub(crate) struct Checkpoints<'a> {
    pub store: &'a dyn Store,
    pub conn: &'a ConnectionRef,
    pub mode: SyncMode,
    pub epoch: RunId,
}

pub(crate) fn search_key(mode: SyncMode, patient: &str, rtype: &str, sig: &str) -> String {
    format!("sync/{}/{patient}/{rtype}/{sig}", mode.as_str())
}

fn patient_prefix(mode: SyncMode, patient: &str) -> String {
    format!("sync/{}/{patient}/", mode.as_str())
}

fn refs_prefix(search_key: &str) -> Option<String> {
    // sync/{mode}/{patient}/{type}/{sig} -> sync/{mode}/{patient}/~refs/{type}/{sig}/
    let mut parts = search_key.splitn(4, '/');
    let (sync, mode, patient, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{sync}/{mode}/{patient}/~refs/{rest}/"))
}

/// The key of the run's epoch record.
fn epoch_key(run: RunId) -> String {
    format!("run-epoch/{run}")
}

impl Checkpoints<'_> {
    async fn load(&self, key: &str) -> Result<Option<Checkpoint>, SyncError> {
        let Some(v) = self.store.load_checkpoint(self.conn, key).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_str::<Checkpoint>(&v)
            .ok()
            .filter(|c| c.epoch() == self.epoch))
    }

    async fn save(&self, key: &str, cp: &Checkpoint) -> Result<(), SyncError> {
        self.store
            .save_checkpoint(self.conn, key, &cp.encode())
            .await?;
        Ok(())
    }

    /// Where a search stands in this epoch.
    pub async fn search(&self, key: &str) -> Result<Resume, SyncError> {
        Ok(match self.load(key).await? {
            Some(Checkpoint::Done { gap, .. }) => Resume::Done(gap),
            Some(Checkpoint::Next { next, .. }) => Resume::Next(next),
            _ => Resume::Fresh,
        })
    }

    pub async fn save_next(&self, key: &str, next: &str) -> Result<(), SyncError> {
        let cp = Checkpoint::Next {
            epoch: self.epoch,
            next: next.to_string(),
        };
        self.save(key, &cp).await
    }

    pub async fn save_done(
        &self,
        key: &str,
        gap: Option<(MissingReason, String)>,
    ) -> Result<(), SyncError> {
        let cp = Checkpoint::Done {
            epoch: self.epoch,
            gap,
        };
        self.save(key, &cp).await
    }

    /// Saves what page `page` of a search referenced (nothing when it referenced nothing).
    pub async fn save_refs(&self, key: &str, page: u32, found: &Found) -> Result<(), SyncError> {
        if found.references.is_empty() && found.attachments.is_empty() {
            return Ok(());
        }
        let Some(prefix) = refs_prefix(key) else {
            return Ok(());
        };
        let cp = Checkpoint::Refs {
            epoch: self.epoch,
            references: found.references.clone(),
            attachments: found.attachments.clone(),
            attachment_sizes: found.attachment_sizes.clone(),
        };
        self.save(&format!("{prefix}{page:08}"), &cp).await
    }

    /// Everything the saved pages of a search referenced, in this epoch.
    pub async fn refs(&self, key: &str) -> Result<Found, SyncError> {
        let mut found = Found::default();
        let Some(prefix) = refs_prefix(key) else {
            return Ok(found);
        };
        for (_, v) in self.store.list_checkpoints(self.conn, &prefix).await? {
            if let Ok(Checkpoint::Refs {
                epoch,
                references,
                attachments,
                attachment_sizes,
            }) = serde_json::from_str::<Checkpoint>(&v)
                && epoch == self.epoch
            {
                found.references.extend(references);
                found.attachments.extend(attachments);
                found.attachment_sizes.extend(attachment_sizes);
            }
        }
        Ok(found)
    }

    /// The gaps a patient finished with in this epoch, if it did.
    pub async fn patient_done(&self, patient: &str) -> Result<Option<Vec<PartialType>>, SyncError> {
        let key = format!("{}~patient", patient_prefix(self.mode, patient));
        Ok(match self.load(&key).await? {
            Some(Checkpoint::Patient { gaps, .. }) => Some(gaps),
            _ => None,
        })
    }

    /// The patient is finished: its search checkpoints go, a mark with its gaps stays (for a
    /// run that resumes this epoch).
    pub async fn finish_patient(
        &self,
        patient: &str,
        gaps: Vec<PartialType>,
    ) -> Result<(), SyncError> {
        let prefix = patient_prefix(self.mode, patient);
        self.store.clear_checkpoints(self.conn, &prefix).await?;
        let cp = Checkpoint::Patient {
            epoch: self.epoch,
            gaps,
        };
        self.save(&format!("{prefix}~patient"), &cp).await
    }
}

/// Records the epoch of `run` (its own id, or that of the run it resumes).
pub(crate) async fn record_epoch(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    epoch: RunId,
) -> Result<(), SyncError> {
    store
        .save_checkpoint(conn, &epoch_key(run), &epoch.to_string())
        .await?;
    Ok(())
}

/// The epoch a run resumes: that of the previous run of the same kind when it stopped
/// unfinished (interrupted, or for re-authorization) and started after `not_before`.
pub(crate) async fn resumable_epoch(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    kind: &str,
    not_before: chrono::DateTime<chrono::Utc>,
) -> Result<Option<RunId>, SyncError> {
    let runs = store.list_runs(conn, 50).await?;
    let Some(prev) = runs.iter().find(|r| r.id < run && r.kind == kind) else {
        return Ok(None);
    };
    if !resumable(prev.outcome, prev.error.as_deref()) || prev.started_at < not_before {
        return Ok(None);
    }
    let epoch = store
        .load_checkpoint(conn, &epoch_key(prev.id))
        .await?
        .and_then(|v| v.parse::<RunId>().ok())
        .unwrap_or(prev.id);
    Ok(Some(epoch))
}

/// Whether a run that ended this way left work to resume.
pub(crate) fn resumable(outcome: aqueduct_core::RunOutcome, error: Option<&str>) -> bool {
    outcome == aqueduct_core::RunOutcome::Failed
        && error.is_some_and(|e| {
            e.starts_with("interrupted") || e.starts_with(crate::report::REAUTH_PREFIX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_live_under_the_patient_so_finishing_the_patient_clears_them() {
        let key = search_key(SyncMode::Full, "p1", "Observation", "category=lab&patient");
        let refs = refs_prefix(&key).unwrap_or_default();
        assert_eq!(refs, "sync/full/p1/~refs/Observation/category=lab&patient/");
        assert!(refs.starts_with(&patient_prefix(SyncMode::Full, "p1")));
        assert!(!refs.starts_with(&patient_prefix(SyncMode::Full, "p")));
    }

    #[test]
    fn only_unfinished_runs_are_resumed() {
        use aqueduct_core::RunOutcome::*;
        assert!(resumable(Failed, Some(crate::syncer::INTERRUPTED)));
        assert!(resumable(Failed, Some("re-authorization needed: 401")));
        assert!(!resumable(
            Failed,
            Some("store error during sync: disk full")
        ));
        assert!(!resumable(Partial, None));
        assert!(!resumable(Complete, None));
        assert!(!resumable(Running, None));
    }

    #[test]
    fn values_of_old_formats_or_other_epochs_do_not_parse_as_this_epochs() {
        let old = r#"{"done":true,"complete":true}"#;
        assert!(serde_json::from_str::<Checkpoint>(old).is_err());
        let cp = Checkpoint::Done {
            epoch: 4,
            gap: Some((MissingReason::ErrorOutcome, "results truncated".into())),
        };
        let back: Checkpoint = serde_json::from_str(&cp.encode()).unwrap_or(Checkpoint::Done {
            epoch: 0,
            gap: None,
        });
        assert_eq!(back.epoch(), 4);
        assert!(matches!(back, Checkpoint::Done { gap: Some(_), .. }));
    }
}
