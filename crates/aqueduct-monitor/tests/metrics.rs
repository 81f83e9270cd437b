#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aqueduct_monitor::{escape_label_value, render_metrics};
use aqueduct_store::{AuthEvent, ConnectionRef, RunOutcome};
use chrono::Utc;
use common::*;
use proptest::prelude::*;

/// One parsed sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_name(s: &str) -> Result<(&str, &str), String> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad name in {s:?}"));
    }
    Ok((name, &s[end..]))
}

/// A strict parser of the text exposition format: every line must parse, every sample must
/// belong to a family declared by a TYPE line before it.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut out = Vec::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = parse_name(rest)?;
            if !helped.insert(name.to_string()) {
                return Err(format!("HELP twice for {name}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = parse_name(rest)?;
            let t = t.trim();
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                return Err(format!("bad type {t}"));
            }
            if types.insert(name.to_string(), t.to_string()).is_some() {
                return Err(format!("TYPE twice for {name}"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, mut rest) = parse_name(line)?;
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample {name} without TYPE"));
        }
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (lname, r) = parse_name(rest)?;
                let r = r
                    .strip_prefix("=\"")
                    .ok_or(format!("expected =\" in {line:?}"))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        },
                        Some((i, '"')) => break i,
                        Some((_, '\n')) => return Err("raw newline".into()),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("unterminated value in {line:?}")),
                    }
                };
                labels.insert(lname.to_string(), value);
                rest = &r[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                }
            }
        }
        let v = rest
            .strip_prefix(' ')
            .ok_or(format!("no space before value in {line:?}"))?;
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|e| format!("bad value {v:?}: {e}"))?,
        };
        out.push((name.to_string(), labels, value));
    }
    Ok(out)
}

fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[tokio::test]
async fn metrics_cover_requests_errors_latency_throttling_and_freshness() {
    let sim = Sim::new().await;
    sim.seed(3, TYPES, chrono::Duration::hours(1)).await;
    sim.run_with(
        "full:patients",
        3,
        TYPES,
        RunOutcome::Complete,
        clean_summary(),
        |l| {
            l[5].error_kind = Some("timeout".into());
            l[5].status = None;
        },
    )
    .await;
    sim.store
        .record_auth_event(
            &sim.conn,
            &AuthEvent {
                at: Utc::now(),
                event: "refresh".into(),
                outcome: "failure".into(),
                reason: None,
            },
        )
        .await
        .unwrap();
    let text = render_metrics(sim.store.as_ref(), "acme", Duration::from_secs(900))
        .await
        .unwrap();
    let s = parse(&text).unwrap();
    let base = [
        ("organization", "acme"),
        ("connection", "hospital"),
        ("host", "fhir.hospital.example"),
    ];
    let obs: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("resource_type", "Observation"), ("status", "200")])
        .collect();
    assert_eq!(find(&s, "aqueduct_requests", &obs)[0].2, 3.0);
    let throttled = find(&s, "aqueduct_request_errors", &[("error_kind", "http-429")]);
    assert_eq!(throttled[0].2, 1.0);
    assert_eq!(
        find(&s, "aqueduct_request_errors", &[("error_kind", "timeout")])[0].2,
        1.0
    );
    assert_eq!(
        find(&s, "aqueduct_requests", &[("status", "none")])[0].2,
        1.0
    );
    assert_eq!(
        find(
            &s,
            "aqueduct_throttled_requests",
            &[("resource_type", "Patient")]
        )[0]
        .2,
        1.0
    );
    assert_eq!(
        find(&s, "aqueduct_retries", &[("resource_type", "Patient")])[0].2,
        1.0
    );
    assert_eq!(
        find(
            &s,
            "aqueduct_resources_fetched",
            &[("resource_type", "Observation")]
        )[0]
        .2,
        120.0
    );
    // histogram: cumulative buckets ending at +Inf == count
    let buckets = find(
        &s,
        "aqueduct_request_duration_seconds_bucket",
        &[("resource_type", "Observation")],
    );
    assert!(buckets.windows(2).all(|w| w[0].2 <= w[1].2));
    let inf = buckets.iter().find(|b| b.1["le"] == "+Inf").unwrap().2;
    assert_eq!(
        inf,
        find(
            &s,
            "aqueduct_request_duration_seconds_count",
            &[("resource_type", "Observation")]
        )[0]
        .2
    );
    assert_eq!(inf, 3.0);
    let p95 = find(
        &s,
        "aqueduct_request_duration_quantile_seconds",
        &[("resource_type", "Observation"), ("quantile", "0.95")],
    );
    assert!(p95[0].2 > 0.05 && p95[0].2 < 1.0);
    assert_eq!(
        find(
            &s,
            "aqueduct_token_refresh_failures",
            &[("connection", "hospital")]
        )[0]
        .2,
        1.0
    );
    let age = find(
        &s,
        "aqueduct_data_freshness_age_seconds",
        &[("resource_type", "Observation")],
    )[0]
    .2;
    assert!((3500.0..3800.0).contains(&age), "{age}");
    assert!(text.contains("# TYPE aqueduct_request_duration_seconds histogram"));

    // another organization sees nothing of acme's
    let other = render_metrics(sim.store.as_ref(), "other-org", Duration::from_secs(900))
        .await
        .unwrap();
    assert!(!other.contains("hospital"));
    parse(&other).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn label_values_round_trip(v in any::<String>()) {
        let line = format!("# TYPE m gauge\nm{{a=\"{}\"}} 1\n", escape_label_value(&v));
        let s = parse(&line).unwrap();
        prop_assert_eq!(&s[0].1["a"], &v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn rendering_arbitrary_ledgers_always_parses(
        conn in "\\PC{0,12}|[\"\\\\\n{}=, ]{1,6}",
        rtype in any::<String>(),
        kind in "[a-z\"\\\\\n]{0,8}",
        host in "[a-z.\"\\\\]{0,10}",
        status in proptest::option::of(100u16..600),
        duration in proptest::num::f64::POSITIVE | proptest::num::f64::NEGATIVE | proptest::num::f64::ZERO,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap()).await.unwrap();
            let cr = ConnectionRef::new("acme", conn.clone());
            let run = store.begin_run(&cr, "full").await.unwrap();
            let mut e = entry("Observation", "p", 0, 3, 1);
            e.resource_type = Some(rtype.clone());
            e.url = format!("https://{host}/x");
            e.status = status;
            e.error_kind = Some(kind.clone());
            e.duration_ms = duration;
            store.record_requests(&cr, run, &[e]).await.unwrap();
            let text = render_metrics(store.as_ref(), "acme", Duration::from_secs(3600)).await.unwrap();
            let samples = parse(&text).unwrap();
            let errs = find(&samples, "aqueduct_request_errors", &[("connection", &conn), ("resource_type", &rtype), ("error_kind", &kind)]);
            assert_eq!(errs.len(), 1, "{text}");
        });
    }
}
