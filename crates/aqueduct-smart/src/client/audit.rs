//! The auth audit: every flow, refresh, revocation and key generation is recorded as an auth
//! event of the connection; a success of a flow records the flow, the granted scopes and the
//! uncovered types (never a token). A store failure here is logged, not raised.

use aqueduct_core::{AuthEvent, ConnectionRef};
use chrono::Utc;

use super::{Authorized, SmartClient};
use crate::error::SmartError;

impl SmartClient {
    /// Records an auth event; a store failure here is logged, not raised.
    pub async fn audit(&self, conn: &ConnectionRef, event: &str, result: &Result<(), &SmartError>) {
        let (outcome, reason) = match result {
            Ok(()) => ("success", None),
            Err(e) => ("failure", Some(format!("{}: {}", e.kind(), e))),
        };
        self.audit_raw(conn, event, outcome, reason).await;
    }

    pub(super) async fn audit_raw(
        &self,
        conn: &ConnectionRef,
        event: &str,
        outcome: &str,
        reason: Option<String>,
    ) {
        let ev = AuthEvent {
            at: Utc::now(),
            event: event.to_string(),
            outcome: outcome.to_string(),
            reason,
        };
        if let Err(e) = self.store().record_auth_event(conn, &ev).await {
            tracing::warn!(connection = %conn, event, error = %e, "could not record auth event");
        }
    }

    pub(super) async fn audited<T>(
        &self,
        conn: &ConnectionRef,
        event: &str,
        r: Result<T, SmartError>,
    ) -> Result<T, SmartError> {
        match &r {
            Ok(_) => self.audit(conn, event, &Ok(())).await,
            Err(e) => self.audit(conn, event, &Err(e)).await,
        }
        r
    }

    /// Audits a flow outcome; a success records the flow, granted scopes and uncovered types
    /// (never a token).
    pub(super) async fn audited_auth(
        &self,
        conn: &ConnectionRef,
        event: &str,
        r: Result<Authorized, SmartError>,
    ) -> Result<Authorized, SmartError> {
        match &r {
            Ok(a) => {
                let mut reason = format!(
                    "{}; granted: {}",
                    a.flow.as_str(),
                    a.granted_scopes.to_scope_string()
                );
                if !a.uncovered_types.is_empty() {
                    reason.push_str(&format!("; not covered: {}", a.uncovered_types.join(", ")));
                }
                self.audit_raw(conn, event, "success", Some(reason)).await;
            }
            Err(e) => self.audit(conn, event, &Err(e)).await,
        }
        r
    }
}
