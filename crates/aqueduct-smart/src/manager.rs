//! Per-connection token lifecycle: refresh ahead of expiry, refresh once after a 401 with a
//! single flight (an async mutex within the process, a store lease across processes), backend
//! services re-issue. A failed refresh is the answer of every caller that waited for it, and a
//! refused one stays the answer until the connection is authorized again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Mutex;

use crate::client::{SmartClient, SmartConnection, TokenSet};
use crate::error::SmartError;
use crate::scopes::GrantedScopes;
use crate::token::LaunchContext;

/// The store lease held while a connection's tokens are refreshed.
pub const REFRESH_LEASE: &str = "token-refresh";
/// A refresh lease lapses this long after its last renewal: a holder that dies blocks the
/// others this long at most. A live holder renews it every third of that, however long
/// discovery and the token endpoint take.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long a process waits for another's refresh before giving up (a refresh is bounded by
/// its HTTP timeouts: discovery and the token request, 30 s each).
const LEASE_WAIT: Duration = Duration::from_secs(120);
/// How often a process waiting for another's refresh looks at the vault again.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Hands out a valid access token for one connection. Every refresh happens under one async
/// mutex, so concurrent callers wait for a single refresh; across processes sharing the store,
/// a lease does the same, so a rotating refresh token is never spent twice (a server that
/// sees a refresh token reused may revoke the whole grant, and then a human must
/// re-authorize).
pub struct TokenManager {
    client: Arc<SmartClient>,
    connection: SmartConnection,
    current: Mutex<Option<TokenSet>>,
    refreshes: AtomicU64,
    /// Refresh attempts started (successful or not); a caller notes it before waiting for
    /// the lock, so it can tell a failure that happened while it waited.
    attempts: AtomicU64,
    /// The last failed refresh, only read and written under `current`.
    last_failure: std::sync::Mutex<Option<Failure>>,
    /// This manager's name as a lease holder (unique per process and manager).
    holder: String,
    lease_ttl: Duration,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("connection", &self.connection.conn)
            .field("refreshes", &self.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub fn new(client: Arc<SmartClient>, connection: SmartConnection) -> TokenManager {
        TokenManager {
            client,
            connection,
            current: Mutex::new(None),
            refreshes: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_failure: std::sync::Mutex::new(None),
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4()),
            lease_ttl: LEASE_TTL,
        }
    }

    /// A shorter (or longer) refresh lease than the default 30 s; tests use it to see
    /// renewal at work without waiting.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> TokenManager {
        self.lease_ttl = ttl;
        self
    }

    pub fn connection(&self) -> &SmartConnection {
        &self.connection
    }

    /// How many refreshes (or backend re-issues) this manager performed.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Loads the stored tokens when not in memory; for a backend-services connection without
    /// tokens, obtains the first one.
    async fn ensure_loaded(&self, slot: &mut Option<TokenSet>) -> Result<(), SmartError> {
        if slot.is_some() {
            return Ok(());
        }
        if let Some(set) = self.client.load_tokens(&self.connection.conn).await? {
            *slot = Some(set);
            return Ok(());
        }
        if self.connection.backend_services {
            self.client.backend_token(&self.connection).await?;
            *slot = self.client.load_tokens(&self.connection.conn).await?;
            if slot.is_some() {
                return Ok(());
            }
        }
        Err(SmartError::NotAuthorized {
            connection: self.connection.conn.to_string(),
        })
    }

    /// Refreshes at most once for every caller that was waiting: a failure that happened
    /// while this caller waited for the lock (an attempt newer than `seen`) is its answer too,
    /// and a refusal by the server stays the answer for the tokens it refused until the vault
    /// holds others: a refused refresh token is never presented again (servers may read a
    /// replayed refresh token as theft and revoke the whole grant), and the requests that got
    /// a 401 together, however staggered, cause one refresh request. A failure that may pass
    /// (a down token endpoint) is retried by the next caller. Called under `current`.
    async fn refresh_once(
        &self,
        slot: &mut Option<TokenSet>,
        rejected: Option<&str>,
        seen: u64,
    ) -> Result<(), SmartError> {
        let mine = slot.as_ref().map(|s| s.access_token.expose().to_string());
        let last = self.last_failure.lock().ok().and_then(|f| f.clone());
        if let Some(f) = last {
            if f.refusal && f.for_token.is_some() && f.for_token == mine {
                match self.client.load_tokens(&self.connection.conn).await? {
                    None => {
                        *slot = None;
                        return Err(SmartError::NotAuthorized {
                            connection: self.connection.conn.to_string(),
                        });
                    }
                    Some(stored) if Some(stored.access_token.expose()) != mine.as_deref() => {
                        // authorized again meanwhile (another process, `aqueduct connect`)
                        self.set_failure(None);
                        let adopt = usable(&stored, rejected);
                        *slot = Some(stored);
                        if adopt {
                            return Ok(());
                        }
                    }
                    Some(_) => return Err(f.error),
                }
            } else if f.attempt > seen {
                return Err(f.error);
            }
        }
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let for_token = slot.as_ref().map(|s| s.access_token.expose().to_string());
        match self.refresh_locked(slot, rejected).await {
            Ok(()) => {
                self.set_failure(None);
                Ok(())
            }
            Err(e) => {
                self.set_failure(Some(Failure {
                    attempt,
                    refusal: matches!(e, SmartError::ReauthorizationNeeded { .. }),
                    for_token,
                    error: e.clone(),
                }));
                Err(e)
            }
        }
    }

    fn set_failure(&self, f: Option<Failure>) {
        if let Ok(mut last) = self.last_failure.lock() {
            *last = f;
        }
    }

    /// Refreshes under the lock and the store lease. While another process holds the lease,
    /// waits for its tokens to land in the vault and adopts them.
    async fn refresh_locked(
        &self,
        slot: &mut Option<TokenSet>,
        rejected: Option<&str>,
    ) -> Result<(), SmartError> {
        let conn = &self.connection.conn;
        let store = self.client.store().clone();
        let store_err = |e: aqueduct_core::StoreError| SmartError::Store(e.to_string());
        let give_up = Instant::now() + LEASE_WAIT;
        loop {
            if store
                .acquire_lease(conn, REFRESH_LEASE, &self.holder, self.lease_ttl)
                .await
                .map_err(store_err)?
            {
                break;
            }
            if let (Some(mine), Some(stored)) =
                (slot.as_ref(), self.client.load_tokens(conn).await?)
                && stored.access_token != mine.access_token
                && usable(&stored, rejected)
            {
                *slot = Some(stored);
                return Ok(());
            }
            if Instant::now() > give_up {
                return Err(SmartError::Store(format!(
                    "another process has been refreshing the tokens of {conn} for over {} s",
                    LEASE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
        let renew = {
            let (store, conn, holder) = (store.clone(), conn.clone(), self.holder.clone());
            let ttl = self.lease_ttl;
            RenewWhileHeld(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store
                        .acquire_lease(&conn, REFRESH_LEASE, &holder, ttl)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(connection = %conn, "token refresh lease lost");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(connection = %conn, error = %e, "lease not renewed");
                        }
                    }
                }
            }))
        };
        let result = self.refresh_holding_lease(slot, rejected).await;
        drop(renew);
        if let Err(e) = store.release_lease(conn, REFRESH_LEASE, &self.holder).await {
            // it lapses by itself after LEASE_TTL
            tracing::warn!(connection = %conn, error = %e, "token refresh lease not released");
        }
        result
    }

    /// First re-reads the vault: another process sharing the store may already have
    /// refreshed (and rotated the refresh token); its tokens are adopted when usable, and
    /// otherwise its newer refresh token is the one used.
    async fn refresh_holding_lease(
        &self,
        slot: &mut Option<TokenSet>,
        rejected: Option<&str>,
    ) -> Result<(), SmartError> {
        let Some(mut current) = slot.clone() else {
            return Err(SmartError::NotAuthorized {
                connection: self.connection.conn.to_string(),
            });
        };
        match self.client.load_tokens(&self.connection.conn).await? {
            None => {
                // revoked or forgotten meanwhile: do not resurrect it
                *slot = None;
                return Err(SmartError::NotAuthorized {
                    connection: self.connection.conn.to_string(),
                });
            }
            Some(stored) if stored.access_token != current.access_token => {
                if usable(&stored, rejected) {
                    *slot = Some(stored);
                    return Ok(());
                }
                current = stored;
            }
            Some(_) => {}
        }
        let new = self.client.refresh(&self.connection, &current).await?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        *slot = Some(new);
        Ok(())
    }

    /// A valid access token, refreshed first when less than max(60 s, 10 %) of its lifetime
    /// is left. A failed refresh is audited and returned (`ReauthorizationNeeded` when the
    /// server refused it), never swallowed.
    pub async fn access_token(&self) -> Result<String, SmartError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slot = self.current.lock().await;
        self.ensure_loaded(&mut slot).await?;
        if slot.as_ref().is_some_and(|s| s.needs_refresh(Utc::now())) {
            self.refresh_once(&mut slot, None, seen).await?;
        }
        slot.as_ref()
            .map(|s| s.access_token.expose().to_string())
            .ok_or_else(|| SmartError::NotAuthorized {
                connection: self.connection.conn.to_string(),
            })
    }

    /// After a 401 with `rejected_token`: if the token already changed (another caller
    /// refreshed), returns the new one; otherwise refreshes once and returns the result.
    pub async fn refresh_after_unauthorized(
        &self,
        rejected_token: &str,
    ) -> Result<String, SmartError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut slot = self.current.lock().await;
        self.ensure_loaded(&mut slot).await?;
        if let Some(s) = slot.as_ref()
            && s.access_token.expose() != rejected_token
        {
            return Ok(s.access_token.expose().to_string());
        }
        self.refresh_once(&mut slot, Some(rejected_token), seen)
            .await?;
        slot.as_ref()
            .map(|s| s.access_token.expose().to_string())
            .ok_or_else(|| SmartError::NotAuthorized {
                connection: self.connection.conn.to_string(),
            })
    }

    /// The scopes the current token was granted.
    pub async fn granted_scopes(&self) -> Result<GrantedScopes, SmartError> {
        let mut slot = self.current.lock().await;
        self.ensure_loaded(&mut slot).await?;
        Ok(slot
            .as_ref()
            .map(|s| s.granted_scopes.clone())
            .unwrap_or_default())
    }

    /// Whether the granted scopes allow reading `resource_type` (false = "scope not granted").
    pub async fn covers(&self, resource_type: &str) -> Result<bool, SmartError> {
        Ok(self.granted_scopes().await?.covers(resource_type))
    }

    /// The launch context (patient, encounter, fhirUser...) of the current authorization.
    pub async fn context(&self) -> Result<LaunchContext, SmartError> {
        let mut slot = self.current.lock().await;
        self.ensure_loaded(&mut slot).await?;
        Ok(slot.as_ref().map(|s| s.context.clone()).unwrap_or_default())
    }

    /// Drops the in-memory copy (and any remembered refusal) so the next call reloads from
    /// the vault.
    pub async fn reload(&self) {
        let mut slot = self.current.lock().await;
        *slot = None;
        self.set_failure(None);
    }

    /// Revokes at the server and deletes the stored tokens.
    pub async fn revoke(&self) -> Result<bool, SmartError> {
        let mut slot = self.current.lock().await;
        let r = self.client.revoke(&self.connection).await;
        if r.is_ok() {
            *slot = None;
        }
        r
    }
}

/// A failed refresh, kept so that the callers who waited for it get its answer.
#[derive(Clone)]
struct Failure {
    attempt: u64,
    /// The server refused the grant (re-authorization needed), as opposed to a failure that
    /// may pass.
    refusal: bool,
    /// The access token the refresh was meant to replace.
    for_token: Option<String>,
    error: SmartError,
}

/// Whether tokens another process stored can be used instead of refreshing: not the token
/// the server just rejected, and not about to expire.
fn usable(stored: &TokenSet, rejected: Option<&str>) -> bool {
    rejected.is_none_or(|r| stored.access_token.expose() != r) && !stored.needs_refresh(Utc::now())
}

/// Stops renewing the lease when dropped: when the refresh ends, or its caller gives up on
/// it (the lease then lapses after `LEASE_TTL`).
struct RenewWhileHeld(tokio::task::JoinHandle<()>);

impl Drop for RenewWhileHeld {
    fn drop(&mut self) {
        self.0.abort();
    }
}
