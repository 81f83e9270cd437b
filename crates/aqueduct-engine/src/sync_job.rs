//! The first use case: sync a configured connection end to end — token, sync, the findings
//! discovery noticed, normalization of what changed, the silent-failure checks. A run that
//! cannot start (no token, the population cannot be listed) is still a failed run in the
//! ledger, with a finding, so `status` never says "never synced" about a failing connection.

use aqueduct_client::FhirClient;
use aqueduct_config::AuthConfig;
use aqueduct_core::BoxFuture;
use aqueduct_sync::{SyncMode, SyncOptions, SyncReport, Syncer};
use serde::Serialize;

use crate::after_sync::{AfterSync, after_sync};
use crate::connection::ResolvedConnection;
use crate::{Engine, EngineError};

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// `ORGANIZATION/NAME`, or a connection name that is unique in the config.
    pub connection: String,
    /// These patients; empty = the patient of a standalone launch, or the population the
    /// server lists for backend and open connections.
    pub patients: Vec<String>,
    pub mode: SyncMode,
    /// Patients synced at once; None = the engine's setting.
    pub patient_concurrency: Option<usize>,
}

/// A finished sync and what ran after it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncJob {
    pub connection: String,
    pub base_url: String,
    pub report: SyncReport,
    #[serde(flatten)]
    pub after: AfterSync,
}

impl Engine {
    /// Syncs one connection end to end. Errors only when no run could be recorded at all or
    /// the store failed; a server that misbehaves gives a partial or failed report instead.
    pub fn sync_connection<'a>(
        &'a self,
        request: &'a SyncRequest,
    ) -> BoxFuture<'a, Result<SyncJob, EngineError>> {
        Box::pin(self.sync_connection_unboxed(request))
    }

    async fn sync_connection_unboxed(&self, request: &SyncRequest) -> Result<SyncJob, EngineError> {
        let resolved = ResolvedConnection::from_config(&self.config, &request.connection)?;
        resolved.register(self.store.as_ref()).await?;
        let conn = resolved.conn.clone();
        let mode = request.mode;
        let uses_smart = resolved.smart_connection()?.is_some();
        let smart = if uses_smart {
            Some(self.smart().await?)
        } else {
            None
        };
        let auth = match resolved.token_source(smart.clone()) {
            Ok(a) => a,
            Err(e) => {
                // a run that cannot get a token is still a failed run, with a finding
                aqueduct_sync::record_failed_start(
                    self.store.as_ref(),
                    &conn,
                    mode,
                    "getting a token",
                    &error_chain(&e),
                )
                .await?;
                return Err(e);
            }
        };
        let base = url::Url::parse(&resolved.base_url()).map_err(|e| EngineError::Setting {
            connection: conn.to_string(),
            what: format!("base_url: {e}"),
        })?;
        let client =
            FhirClient::new(base, &resolved.profile, auth).map_err(|e| EngineError::Client {
                connection: conn.to_string(),
                source: Box::new(e),
            })?;
        let options = SyncOptions {
            resource_types: resolved.resource_types(),
            patient_concurrency: request
                .patient_concurrency
                .unwrap_or(self.settings.patient_concurrency)
                .max(1),
            stale_run_after: self.settings.stale_run_after,
            ..SyncOptions::default()
        };
        let syncer = Syncer::new(
            self.store.clone(),
            client,
            conn.clone(),
            resolved.profile.clone(),
            options,
        )
        .with_stop(self.stop.clone());
        let patients = if request.patients.is_empty() {
            self.population(&resolved, smart.as_ref(), &syncer, mode)
                .await?
        } else {
            request.patients.clone()
        };
        let report = syncer.sync_patients(&patients, mode).await?;
        // What discovery noticed about the authorization endpoints (another origin than the
        // FHIR server) is a finding of this run.
        if let Some(s) = &smart
            && let Ok(cfg) = s.discovery().get(resolved.base_url().as_str()).await
        {
            for n in &cfg.notices {
                self.store
                    .record_finding(
                        &conn,
                        &n.to_finding(chrono::Utc::now(), Some(report.run_id)),
                    )
                    .await?;
            }
        }
        let after = after_sync(
            self.store.as_ref(),
            &conn,
            report.run_id,
            Some(&self.config),
        )
        .await?;
        Ok(SyncJob {
            connection: conn.to_string(),
            base_url: resolved.base_url(),
            report,
            after,
        })
    }

    /// The patients a sync without named patients covers.
    async fn population(
        &self,
        resolved: &ResolvedConnection,
        smart: Option<&std::sync::Arc<aqueduct_smart::SmartClient>>,
        syncer: &Syncer,
        mode: SyncMode,
    ) -> Result<Vec<String>, EngineError> {
        let conn = &resolved.conn;
        if let (AuthConfig::SmartStandalone { .. }, Some(s)) = (&resolved.config.auth, smart) {
            let loaded = match s.load_tokens(conn).await {
                Ok(t) => t,
                Err(e) => {
                    syncer
                        .record_failed_start(mode, "reading the stored tokens", &e.to_string())
                        .await?;
                    return Err(EngineError::Smart(e));
                }
            };
            let tokens = loaded.ok_or_else(|| EngineError::NotConnected {
                connection: conn.to_string(),
            })?;
            return Ok(vec![tokens.context.patient.ok_or_else(|| {
                EngineError::NoPatientContext {
                    connection: conn.to_string(),
                }
            })?]);
        }
        match syncer.discover_patients().await {
            Ok(p) => Ok(p),
            Err(e) => {
                syncer
                    .record_failed_start(mode, "listing the server's patients", &e.to_string())
                    .await?;
                Err(EngineError::Start {
                    connection: conn.to_string(),
                    stage: "listing the server's patients",
                    source: Box::new(e),
                })
            }
        }
    }
}

/// An error and its causes on one line, for the ledger.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    parts.join(": ")
}
