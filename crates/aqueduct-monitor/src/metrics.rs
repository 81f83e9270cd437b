//! Metrics in the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Every value covers the requested window (the ledger is the source of truth, nothing is kept
//! in memory between scrapes), so request figures are exported as gauges ("in the window"),
//! not as monotonic counters.

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use aqueduct_core::{ConnectionRef, Store};
use chrono::Utc;

use crate::MonitorError;
use crate::util::{host_of, parse_fhir_time, percentile};

/// Latency histogram bucket bounds, in seconds.
pub(crate) const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Most ledger entries read for one rendering.
const MAX_ENTRIES: u32 = 1_000_000;

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label_value(v));
    }
    s.push('}');
    s
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Writes families one at a time: HELP and TYPE once, then the samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: f64) {
        let _ = writeln!(self.text, "{name}{labels} {}", num(v));
    }
}

#[derive(Default)]
struct Series {
    durations: Vec<f64>,
    sum: f64,
    resources: u64,
    throttled: u64,
    retries: u64,
}

/// Renders the organization's metrics over the last `window` from the ledger, the auth audit
/// log and the store's freshness figures.
pub fn render_metrics<'a>(
    store: &'a dyn Store,
    organization: &'a str,
    window: Duration,
) -> BoxFuture<'a, Result<String, MonitorError>> {
    Box::pin(render_metrics_unboxed(store, organization, window))
}

async fn render_metrics_unboxed(
    store: &dyn Store,
    organization: &str,
    window: Duration,
) -> Result<String, MonitorError> {
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(3650));
    let entries = store
        .requests_since(organization, since, MAX_ENTRIES)
        .await?;

    // key: (connection, host, resource type)
    type Key = (String, String, String);
    let mut requests: BTreeMap<(Key, String), u64> = BTreeMap::new();
    let mut errors: BTreeMap<(Key, String), u64> = BTreeMap::new();
    let mut series: BTreeMap<Key, Series> = BTreeMap::new();
    let mut connections: BTreeSet<String> = store
        .list_connections(organization)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    for (conn, e) in &entries {
        connections.insert(conn.clone());
        let key = (
            conn.clone(),
            host_of(&e.url).to_string(),
            e.resource_type.clone().unwrap_or_default(),
        );
        let status = e.status.map_or("none".to_string(), |s| s.to_string());
        *requests.entry((key.clone(), status)).or_default() += 1;
        if let Some(k) = &e.error_kind {
            *errors.entry((key.clone(), k.clone())).or_default() += 1;
        }
        let s = series.entry(key).or_default();
        let secs = e.duration_ms.max(0.0) / 1000.0;
        s.durations.push(secs);
        s.sum += secs;
        s.resources += e.resources;
        if matches!(e.status, Some(429 | 503)) {
            s.throttled += 1;
        }
        if e.attempt > 1 {
            s.retries += 1;
        }
    }
    for s in series.values_mut() {
        s.durations.sort_by(f64::total_cmp);
    }

    let org = organization;
    let mut o = Out {
        text: String::new(),
    };
    o.family(
        "aqueduct_metrics_window_seconds",
        "gauge",
        "The window the request figures cover, in seconds.",
    );
    o.sample(
        "aqueduct_metrics_window_seconds",
        &labels(&[("organization", org)]),
        window.as_secs_f64(),
    );

    o.family(
        "aqueduct_requests",
        "gauge",
        "HTTP requests (attempts) made to sources in the window, by status (\"none\" when no response came).",
    );
    for (((c, h, t), status), n) in &requests {
        let l = labels(&[
            ("organization", org),
            ("connection", c),
            ("host", h),
            ("resource_type", t),
            ("status", status),
        ]);
        o.sample("aqueduct_requests", &l, *n as f64);
    }

    o.family(
        "aqueduct_request_errors",
        "gauge",
        "Requests that did not succeed in the window, by error kind.",
    );
    for (((c, h, t), kind), n) in &errors {
        let l = labels(&[
            ("organization", org),
            ("connection", c),
            ("host", h),
            ("resource_type", t),
            ("error_kind", kind),
        ]);
        o.sample("aqueduct_request_errors", &l, *n as f64);
    }

    o.family(
        "aqueduct_request_duration_seconds",
        "histogram",
        "Request latency in the window.",
    );
    for ((c, h, t), s) in &series {
        let base = [
            ("organization", org),
            ("connection", c.as_str()),
            ("host", h.as_str()),
            ("resource_type", t.as_str()),
        ];
        for b in BUCKETS.iter().copied().chain([f64::INFINITY]) {
            let count = s.durations.partition_point(|d| *d <= b);
            let le = num(b);
            let mut l = base.to_vec();
            l.push(("le", le.as_str()));
            o.sample(
                "aqueduct_request_duration_seconds_bucket",
                &labels(&l),
                count as f64,
            );
        }
        o.sample(
            "aqueduct_request_duration_seconds_sum",
            &labels(&base),
            s.sum,
        );
        o.sample(
            "aqueduct_request_duration_seconds_count",
            &labels(&base),
            s.durations.len() as f64,
        );
    }

    o.family(
        "aqueduct_request_duration_quantile_seconds",
        "gauge",
        "Request latency percentiles (P50, P95, P99) in the window.",
    );
    for ((c, h, t), s) in &series {
        for (q, qs) in [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")] {
            let l = labels(&[
                ("organization", org),
                ("connection", c),
                ("host", h),
                ("resource_type", t),
                ("quantile", qs),
            ]);
            o.sample(
                "aqueduct_request_duration_quantile_seconds",
                &l,
                percentile(&s.durations, q),
            );
        }
    }

    for (name, help, get) in [
        (
            "aqueduct_throttled_requests",
            "Requests answered 429 or 503 (throttling) in the window.",
            (|s: &Series| s.throttled) as fn(&Series) -> u64,
        ),
        (
            "aqueduct_retries",
            "Requests that were retries (attempt > 1) in the window.",
            |s: &Series| s.retries,
        ),
        (
            "aqueduct_resources_fetched",
            "Resources received from sources in the window.",
            |s: &Series| s.resources,
        ),
    ] {
        o.family(name, "gauge", help);
        for ((c, h, t), s) in &series {
            let l = labels(&[
                ("organization", org),
                ("connection", c),
                ("host", h),
                ("resource_type", t),
            ]);
            o.sample(name, &l, get(s) as f64);
        }
    }

    let mut refresh_failures = Vec::new();
    let mut fresh = Vec::new();
    for c in &connections {
        let cr = ConnectionRef::new(organization, c.clone());
        let failures = store
            .list_auth_events(&cr, 10_000)
            .await?
            .iter()
            .filter(|e| e.at >= since && e.event == "refresh" && e.outcome == "failure")
            .count();
        refresh_failures.push((c, failures));
        for f in store.freshness(&cr).await? {
            if let Some(t) = f.newest_last_updated.as_deref().and_then(parse_fhir_time) {
                let age = (now - t).num_milliseconds() as f64 / 1000.0;
                fresh.push((c, f.resource_type, age));
            }
        }
    }
    o.family(
        "aqueduct_token_refresh_failures",
        "gauge",
        "Token refresh failures in the window.",
    );
    for (c, n) in &refresh_failures {
        let l = labels(&[("organization", org), ("connection", c)]);
        o.sample("aqueduct_token_refresh_failures", &l, *n as f64);
    }
    o.family(
        "aqueduct_data_freshness_age_seconds",
        "gauge",
        "Age of the newest meta.lastUpdated held per resource type, in seconds.",
    );
    for (c, t, age) in &fresh {
        let l = labels(&[
            ("organization", org),
            ("connection", c),
            ("resource_type", t),
        ]);
        o.sample("aqueduct_data_freshness_age_seconds", &l, *age);
    }
    o.family(
        "aqueduct_alerts_firing",
        "gauge",
        "Alerts currently firing, by rule and severity (as of the last alert evaluation).",
    );
    let mut firing: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for a in store.list_alerts(organization, true).await? {
        *firing
            .entry((a.connection, a.rule, a.severity))
            .or_default() += 1;
    }
    for ((c, rule, sev), n) in &firing {
        let l = labels(&[
            ("organization", org),
            ("connection", c),
            ("rule", rule),
            ("severity", sev),
        ]);
        o.sample("aqueduct_alerts_firing", &l, *n as f64);
    }
    Ok(o.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(labels(&[("a", "x"), ("b", "y")]), "{a=\"x\",b=\"y\"}");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(3.0), "3");
    }
}
