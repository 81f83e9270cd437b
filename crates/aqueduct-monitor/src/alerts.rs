//! Alert rules, their evaluation with de-duplication (an alert fires once, stays quiet while
//! firing, resolves once) and the sinks that are told about each transition.

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aqueduct_core::{Alert, ConnectionRef, Finding, RunOutcome, Store};
use async_trait::async_trait;
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::util::{pct, percentile};
use crate::{CRITICAL, MonitorError, WARNING};

/// Alert thresholds, the seed defaults out of the box. Deserializable from an `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    /// Share of failed requests above which "error-rate" fires (0.05 = 5 %). Requests
    /// throttled with 429 are not counted as failed (see the throttling metric).
    pub error_rate: f64,
    /// The window error rate and latency are measured over, in minutes.
    pub window_minutes: u64,
    /// Error rate and latency are judged only with at least this many requests in the window.
    pub min_requests: u64,
    /// P95 request latency above which "p95-latency" fires, in seconds.
    pub p95_latency_seconds: f64,
    /// Schedule interval per connection, in minutes: "refresh-late" fires when the last
    /// complete run is older than the interval plus `late_after_minutes`.
    pub schedules: BTreeMap<String, u64>,
    /// Schedule interval for connections not named in `schedules` (none: not checked).
    pub default_schedule_minutes: Option<u64>,
    /// How late a scheduled refresh may be before "refresh-late" fires, in minutes.
    pub late_after_minutes: u64,
    /// "token-refresh-failure" fires when the latest token refresh of a connection failed.
    pub token_refresh_failure: bool,
    /// "type-dropped-to-zero" fires while the latest run of a kind has that finding.
    pub type_dropped_to_zero: bool,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            window_minutes: 15,
            min_requests: 20,
            p95_latency_seconds: 10.0,
            schedules: BTreeMap::new(),
            default_schedule_minutes: None,
            late_after_minutes: 120,
            token_refresh_failure: true,
            type_dropped_to_zero: true,
        }
    }
}

/// Whether an alert started or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransitionKind {
    Fired,
    Resolved,
}

/// One change of an alert's state, as sinks receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTransition {
    pub organization: String,
    pub kind: TransitionKind,
    pub alert: Alert,
}

/// A condition that holds now.
struct Active {
    connection: String,
    rule: &'static str,
    subject: String,
    severity: &'static str,
    detail: String,
}

/// Evaluates the rules for every connection of `organization` at `now`, persists the alerts'
/// state with [`Store::upsert_alert`] and returns the transitions: an alert that starts firing
/// (or fires again after it resolved) and one that resolves. An alert that keeps firing gives
/// no transition. Sinks are told with [`notify_pending`].
pub fn evaluate_alerts<'a>(
    store: &'a dyn Store,
    organization: &'a str,
    rules: &'a AlertRules,
    now: DateTime<Utc>,
) -> BoxFuture<'a, Result<Vec<AlertTransition>, MonitorError>> {
    Box::pin(evaluate_alerts_unboxed(store, organization, rules, now))
}

async fn evaluate_alerts_unboxed(
    store: &dyn Store,
    organization: &str,
    rules: &AlertRules,
    now: DateTime<Utc>,
) -> Result<Vec<AlertTransition>, MonitorError> {
    let active = conditions(store, organization, rules, now).await?;
    let existing: BTreeMap<(String, String, String), Alert> = store
        .list_alerts(organization, false)
        .await?
        .into_iter()
        .map(|a| ((a.connection.clone(), a.rule.clone(), a.subject.clone()), a))
        .collect();
    let mut transitions = Vec::new();
    let mut seen = BTreeSet::new();
    for c in active {
        let key = (c.connection.clone(), c.rule.to_string(), c.subject.clone());
        if !seen.insert(key.clone()) {
            continue;
        }
        match existing.get(&key) {
            Some(a) if a.state == "firing" => {
                let mut a = a.clone();
                a.last_seen = now;
                a.detail = c.detail;
                a.severity = c.severity.into();
                store.upsert_alert(organization, &a).await?;
            }
            prev => {
                let a = Alert {
                    connection: c.connection,
                    rule: c.rule.into(),
                    subject: c.subject,
                    state: "firing".into(),
                    severity: c.severity.into(),
                    detail: c.detail,
                    first_seen: now,
                    last_seen: now,
                    resolved_at: None,
                    notified_state: prev.and_then(|p| p.notified_state.clone()),
                };
                store.upsert_alert(organization, &a).await?;
                transitions.push(AlertTransition {
                    organization: organization.into(),
                    kind: TransitionKind::Fired,
                    alert: a,
                });
            }
        }
    }
    for (key, a) in existing {
        if a.state == "firing" && !seen.contains(&key) {
            let mut a = a;
            a.state = "resolved".into();
            a.resolved_at = Some(now);
            a.detail = format!("resolved: {}", a.detail.trim_start_matches("resolved: "));
            store.upsert_alert(organization, &a).await?;
            transitions.push(AlertTransition {
                organization: organization.into(),
                kind: TransitionKind::Resolved,
                alert: a,
            });
        }
    }
    Ok(transitions)
}

async fn conditions(
    store: &dyn Store,
    org: &str,
    rules: &AlertRules,
    now: DateTime<Utc>,
) -> Result<Vec<Active>, MonitorError> {
    let mut out = Vec::new();
    let since = now - chrono::Duration::minutes(rules.window_minutes.min(1 << 30) as i64);
    let entries = store.requests_since(org, since, 1_000_000).await?;
    let mut connections: BTreeSet<String> = store
        .list_connections(org)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    // (requests, errors, durations) per connection
    let mut per: BTreeMap<String, (u64, u64, Vec<f64>)> = BTreeMap::new();
    for (c, e) in entries.iter().filter(|(_, e)| e.at <= now) {
        connections.insert(c.clone());
        let s = per.entry(c.clone()).or_default();
        s.0 += 1;
        // Throttling (429) is the source pacing us, not failing: it has its own metric.
        if e.error_kind.as_deref().is_some_and(|k| k != "http-429") {
            s.1 += 1;
        }
        s.2.push(e.duration_ms / 1000.0);
    }
    for (c, (n, errs, mut d)) in per {
        if n < rules.min_requests.max(1) {
            continue;
        }
        let rate = errs as f64 / n as f64;
        if rate > rules.error_rate {
            out.push(Active {
                connection: c.clone(),
                rule: "error-rate",
                subject: String::new(),
                severity: WARNING,
                detail: format!(
                    "{errs} of {n} requests failed in the last {} minutes ({}, limit {})",
                    rules.window_minutes,
                    pct(rate),
                    pct(rules.error_rate)
                ),
            });
        }
        d.sort_by(f64::total_cmp);
        let p95 = percentile(&d, 0.95);
        if p95 > rules.p95_latency_seconds {
            out.push(Active {
                connection: c.clone(),
                rule: "p95-latency",
                subject: String::new(),
                severity: WARNING,
                detail: format!(
                    "P95 latency {p95:.1} s over {n} requests in the last {} minutes (limit {} s)",
                    rules.window_minutes, rules.p95_latency_seconds
                ),
            });
        }
    }

    for c in &connections {
        let cr = ConnectionRef::new(org, c.clone());
        let schedule = rules
            .schedules
            .get(c)
            .copied()
            .or(rules.default_schedule_minutes);
        let runs = store.list_runs(&cr, 200).await?;
        if let Some(interval) = schedule {
            let last_complete = runs
                .iter()
                .filter(|r| r.outcome == RunOutcome::Complete)
                .filter_map(|r| r.finished_at)
                .max();
            let reference = last_complete.or_else(|| runs.iter().map(|r| r.started_at).min());
            if let Some(t) = reference {
                let due =
                    t + chrono::Duration::minutes((interval + rules.late_after_minutes) as i64);
                if now > due {
                    let late = (now - t - chrono::Duration::minutes(interval as i64)).num_minutes();
                    out.push(Active {
                        connection: c.clone(),
                        rule: "refresh-late",
                        subject: String::new(),
                        severity: WARNING,
                        detail: match last_complete {
                            Some(t) => format!(
                                "the last complete sync finished at {}; with a schedule of every {interval} minutes the next is {late} minutes late",
                                t.to_rfc3339()
                            ),
                            None => format!(
                                "no sync has completed since the first run at {}; the schedule is every {interval} minutes",
                                t.to_rfc3339()
                            ),
                        },
                    });
                }
            }
        }
        if rules.token_refresh_failure {
            let events = store.list_auth_events(&cr, 200).await?;
            if let Some(last) = events
                .iter()
                .filter(|e| e.event == "refresh" && e.at <= now)
                .max_by_key(|e| e.at)
                && last.outcome == "failure"
            {
                out.push(Active {
                    connection: c.clone(),
                    rule: "token-refresh-failure",
                    subject: String::new(),
                    severity: CRITICAL,
                    detail: format!(
                        "the token refresh at {} failed: {}; syncs cannot fetch data until it succeeds",
                        last.at.to_rfc3339(),
                        last.reason.as_deref().unwrap_or("no reason recorded")
                    ),
                });
            }
        }
        if rules.type_dropped_to_zero {
            // The latest finished run of each kind: its findings are the current state.
            let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
            for r in runs.iter().filter(|r| r.outcome != RunOutcome::Running) {
                latest.entry(r.kind.as_str()).or_insert(r.id);
            }
            let latest_ids: BTreeSet<i64> = latest.values().copied().collect();
            for f in store.list_findings(&cr, 1000).await? {
                if f.kind == "type-dropped-to-zero"
                    && f.run_id.is_some_and(|id| latest_ids.contains(&id))
                {
                    out.push(Active {
                        connection: c.clone(),
                        rule: "type-dropped-to-zero",
                        subject: f.resource_type.clone().unwrap_or_default(),
                        severity: CRITICAL,
                        detail: f.detail,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Somewhere alert transitions go.
#[async_trait]
pub trait AlertSink: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, transition: &AlertTransition) -> Result<(), MonitorError>;
}

/// Tells every sink about each alert whose state the sinks have not been told yet, then
/// records that they were (`notified_state`), so each transition is sent once. When a sink
/// fails, the alert stays pending and is sent again (to every sink) on the next call; the
/// first error is returned after the others were tried.
pub async fn notify_pending(
    store: &dyn Store,
    organization: &str,
    sinks: &[Arc<dyn AlertSink>],
) -> Result<Vec<AlertTransition>, MonitorError> {
    let mut sent = Vec::new();
    let mut first_err = None;
    for mut a in store.list_alerts(organization, false).await? {
        if a.notified_state.as_deref() == Some(a.state.as_str()) {
            continue;
        }
        // A resolved alert nobody was told fired needs no message.
        if a.state == "resolved" && a.notified_state.is_none() {
            a.notified_state = Some(a.state.clone());
            store.upsert_alert(organization, &a).await?;
            continue;
        }
        let t = AlertTransition {
            organization: organization.into(),
            kind: if a.state == "firing" {
                TransitionKind::Fired
            } else {
                TransitionKind::Resolved
            },
            alert: a.clone(),
        };
        let mut ok = true;
        for s in sinks {
            if let Err(e) = s.send(&t).await {
                tracing::warn!(sink = s.name(), error = %e, "alert sink failed; will retry");
                ok = false;
                first_err.get_or_insert(e);
            }
        }
        if ok {
            a.notified_state = Some(a.state.clone());
            store.upsert_alert(organization, &a).await?;
            sent.push(t);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

/// Logs each transition through `tracing`.
#[derive(Debug, Default, Clone)]
pub struct LogSink;

#[async_trait]
impl AlertSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }
    async fn send(&self, t: &AlertTransition) -> Result<(), MonitorError> {
        let a = &t.alert;
        match t.kind {
            TransitionKind::Fired => tracing::warn!(
                organization = %t.organization, connection = %a.connection, rule = %a.rule,
                subject = %a.subject, severity = %a.severity, "alert firing: {}", a.detail
            ),
            TransitionKind::Resolved => tracing::info!(
                organization = %t.organization, connection = %a.connection, rule = %a.rule,
                subject = %a.subject, "alert resolved: {}", a.detail
            ),
        }
        Ok(())
    }
}

/// Records each transition as a finding of the alert's connection ("alert-fired",
/// "alert-resolved"), so `aqueduct findings` lists it.
#[derive(Clone)]
pub struct FindingsSink {
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl AlertSink for FindingsSink {
    fn name(&self) -> &str {
        "findings"
    }
    async fn send(&self, t: &AlertTransition) -> Result<(), MonitorError> {
        let a = &t.alert;
        let conn = ConnectionRef::new(t.organization.clone(), a.connection.clone());
        let f = Finding {
            at: Utc::now(),
            run_id: None,
            kind: match t.kind {
                TransitionKind::Fired => "alert-fired".into(),
                TransitionKind::Resolved => "alert-resolved".into(),
            },
            severity: a.severity.clone(),
            resource_type: (!a.subject.is_empty()).then(|| a.subject.clone()),
            detail: format!("{}: {}", a.rule, a.detail),
        };
        self.store.record_finding(&conn, &f).await?;
        Ok(())
    }
}

/// POSTs each transition as JSON, signed with `X-Aqueduct-Signature: sha256=<hex HMAC-SHA256
/// of the body>` when a secret is set.
#[derive(Clone)]
pub struct WebhookSink {
    url: String,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl WebhookSink {
    /// A sink posting to `url`; with a `secret`, every body is signed.
    pub fn new(url: impl Into<String>, secret: Option<Vec<u8>>) -> Result<Self, MonitorError> {
        let url = url.into();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| MonitorError::Sink {
                sink: format!("webhook {url}"),
                cause: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            url,
            secret,
            client,
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Checks a `sha256=<hex>` signature in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).is_ok()
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }
    async fn send(&self, t: &AlertTransition) -> Result<(), MonitorError> {
        let body = serde_json::to_vec(t)?;
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.secret {
            req = req.header("X-Aqueduct-Signature", sign_body(secret, &body));
        }
        let err = |cause: String| MonitorError::Sink {
            sink: format!("webhook {}", self.url),
            cause,
        };
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("answered {}", resp.status())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let s = sign_body(b"k", b"body");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), 7 + 64);
        assert!(verify_signature(b"k", b"body", &s));
        assert!(!verify_signature(b"k", b"bodx", &s));
        assert!(!verify_signature(b"other", b"body", &s));
        assert!(!verify_signature(b"k", b"body", "sha256=zz"));
    }

    #[test]
    fn rules_deserialize_with_defaults_and_reject_unknown() {
        let r: AlertRules = serde_json::from_str(r#"{"error_rate":0.1}"#).unwrap_or_default();
        assert_eq!(r.error_rate, 0.1);
        assert_eq!(r.p95_latency_seconds, 10.0);
        assert!(serde_json::from_str::<AlertRules>(r#"{"eror_rate":0.1}"#).is_err());
    }
}
