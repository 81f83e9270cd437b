//! Charts as SVG written by the server: a line chart over time (latency percentiles, error
//! rate, findings) and a horizontal bar chart (resources per type). No script; labels are
//! escaped like every other text.

use std::fmt::Write as _;

use aqueduct_core::LedgerEntry;
use chrono::{DateTime, Utc};

use super::html::esc;

/// Line colours, in series order.
const COLOURS: [&str; 6] = [
    "#1f6feb", "#d29922", "#cf222e", "#2da44e", "#8250df", "#57606a",
];

/// One line: a name and its points (time, value), oldest first.
pub struct Series {
    pub name: String,
    pub points: Vec<(DateTime<Utc>, f64)>,
}

const W: f64 = 560.0;
const H: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;

/// A line chart of `series` over time; `unit` follows the axis values ("ms", "%").
pub fn line_chart(title: &str, unit: &str, series: &[Series]) -> String {
    let all: Vec<&(DateTime<Utc>, f64)> = series.iter().flat_map(|s| &s.points).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption>",
        esc(title)
    );
    if all.is_empty() {
        out.push_str("<p class=\"muted\">No data yet.</p></figure>");
        return out;
    }
    let t0 = all.iter().map(|p| p.0).min().unwrap_or_default();
    let t1 = all.iter().map(|p| p.0).max().unwrap_or_default();
    let span = ((t1 - t0).num_milliseconds() as f64).max(1.0);
    let vmax = nice_max(all.iter().map(|p| p.1).fold(0.0, f64::max));
    let x = |t: DateTime<Utc>| {
        if t1 == t0 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (t - t0).num_milliseconds() as f64 / span * (W - LEFT - RIGHT)
        }
    };
    let y = |v: f64| TOP + (1.0 - v / vmax) * (H - TOP - BOTTOM);
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    // axes and the grid: 0, half and the top value
    for frac in [0.0, 0.5, 1.0] {
        let v = vmax * frac;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\" stroke-width=\"1\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            y(v) + 3.0,
            esc(&format!("{} {unit}", short(v))),
            y = y(v),
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\" fill=\"#57606a\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
        H - BOTTOM + 14.0,
        esc(&t0.format("%m-%d %H:%M:%S").to_string()),
        W - RIGHT,
        H - BOTTOM + 14.0,
        esc(&t1.format("%m-%d %H:%M:%S").to_string()),
    );
    let mut legend_x = LEFT;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        if pts.len() > 1 {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
        for (t, v) in &s.points {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{}</title></circle>",
                x(*t),
                y(*v),
                esc(&format!(
                    "{} {}: {} {unit}",
                    s.name,
                    t.format("%H:%M:%S"),
                    short(*v)
                ))
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{legend_x:.1}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#24292f\">{}</text>",
            H - 14.0,
            legend_x + 14.0,
            H - 5.0,
            esc(&s.name)
        );
        legend_x += 24.0 + 7.0 * s.name.chars().count() as f64;
    }
    out.push_str("</svg></figure>");
    out
}

/// Horizontal bars, one per (label, value), in the order given.
pub fn bar_chart(title: &str, bars: &[(String, u64)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption>",
        esc(title)
    );
    if bars.is_empty() {
        out.push_str("<p class=\"muted\">No data yet.</p></figure>");
        return out;
    }
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let row = 18.0;
    let label_w = 150.0;
    let h = row * bars.len() as f64 + 8.0;
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let w = (*v as f64 / max * (W - label_w - 70.0)).max(1.0);
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#24292f\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#1f6feb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#24292f\">{v}</text>",
            label_w - 6.0,
            y + 12.0,
            esc(label),
            row - 4.0,
            label_w + w + 4.0,
            y + 12.0,
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn short(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The time buckets of `at` values: `n` equal slices of their span (at least a second).
fn bucket_of(t0: DateTime<Utc>, t1: DateTime<Utc>, n: usize) -> impl Fn(DateTime<Utc>) -> usize {
    let span = (t1 - t0).num_milliseconds().max(1000) as f64;
    move |t| (((t - t0).num_milliseconds() as f64 / span * n as f64) as usize).min(n - 1)
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency P50, P95 and P99 (ms) and the error rate (% of requests) of one source's ledger
/// entries, in `n` time buckets; a bucket without requests has no point.
pub fn latency_and_errors(entries: &[&LedgerEntry], n: usize) -> (Vec<Series>, Vec<Series>) {
    let mut lat = vec![
        Series {
            name: "P50".into(),
            points: vec![],
        },
        Series {
            name: "P95".into(),
            points: vec![],
        },
        Series {
            name: "P99".into(),
            points: vec![],
        },
    ];
    let mut err = vec![Series {
        name: "error rate".into(),
        points: vec![],
    }];
    let (Some(t0), Some(t1)) = (
        entries.iter().map(|e| e.at).min(),
        entries.iter().map(|e| e.at).max(),
    ) else {
        return (lat, err);
    };
    let n = n.max(1);
    let which = bucket_of(t0, t1, n);
    let mut buckets: Vec<Vec<&LedgerEntry>> = vec![Vec::new(); n];
    for e in entries {
        buckets[which(e.at)].push(e);
    }
    for b in buckets.iter().filter(|b| !b.is_empty()) {
        // a bucket's point sits at its newest request
        let at = b.iter().map(|e| e.at).max().unwrap_or(t1);
        let mut d: Vec<f64> = b
            .iter()
            .map(|e| aqueduct_core::finite(e.duration_ms))
            .collect();
        d.sort_by(f64::total_cmp);
        for (s, q) in lat.iter_mut().zip([0.50, 0.95, 0.99]) {
            s.points.push((at, quantile(&d, q)));
        }
        let failed = b.iter().filter(|e| e.error_kind.is_some()).count();
        err[0]
            .points
            .push((at, 100.0 * failed as f64 / b.len() as f64));
    }
    (lat, err)
}

/// How many of `times` fall in each of `n` time buckets, as one series.
pub fn counts_over_time(name: &str, times: &[DateTime<Utc>], n: usize) -> Series {
    let mut s = Series {
        name: name.into(),
        points: vec![],
    };
    let (Some(t0), Some(t1)) = (times.iter().min(), times.iter().max()) else {
        return s;
    };
    let n = n.max(1);
    let which = bucket_of(*t0, *t1, n);
    let mut counts = vec![(0u64, *t0); n];
    for t in times {
        let c = &mut counts[which(*t)];
        c.0 += 1;
        c.1 = c.1.max(*t);
    }
    s.points = counts
        .into_iter()
        .filter(|c| c.0 > 0)
        .map(|(c, at)| (at, c as f64))
        .collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms_after: i64, duration: f64, failed: bool) -> LedgerEntry {
        LedgerEntry {
            at: DateTime::from_timestamp_millis(1_700_000_000_000 + ms_after).unwrap(),
            method: "GET".into(),
            url_template: "/Patient".into(),
            url: "http://x/Patient".into(),
            resource_type: None,
            patient_id: None,
            status: Some(if failed { 500 } else { 200 }),
            duration_ms: duration,
            bytes: 0,
            resources: 0,
            error_kind: failed.then(|| "server-error".into()),
            page_complete: !failed,
            attempt: 1,
        }
    }

    #[test]
    fn percentiles_and_error_rate_per_bucket() {
        // bucket 1: 100 requests of 1..=100 ms, 10 failed; bucket 2 (10 s later): one of 7 ms
        let mut es: Vec<LedgerEntry> = (1..=100).map(|i| entry(i, i as f64, i % 10 == 0)).collect();
        es.push(entry(10_000, 7.0, false));
        let refs: Vec<&LedgerEntry> = es.iter().collect();
        let (lat, err) = latency_and_errors(&refs, 2);
        let vals = |s: &Series| s.points.iter().map(|p| p.1).collect::<Vec<_>>();
        assert_eq!(vals(&lat[0]), vec![50.0, 7.0]);
        assert_eq!(vals(&lat[1]), vec![95.0, 7.0]);
        assert_eq!(vals(&lat[2]), vec![99.0, 7.0]);
        assert_eq!(vals(&err[0]), vec![10.0, 0.0]);
    }

    #[test]
    fn charts_escape_their_labels_and_draw_every_series() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let svg = line_chart(
            "<b>x</b>",
            "ms",
            &[Series {
                name: "<script>".into(),
                points: vec![(t, 1.0), (t + chrono::Duration::seconds(5), 3.0)],
            }],
        );
        assert!(svg.contains("<polyline"));
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
        let bars = bar_chart("types", &[("Observation".into(), 40), ("<i>".into(), 1)]);
        assert_eq!(bars.matches("<rect").count(), 2);
        assert!(bars.contains("&lt;i&gt;"));
        assert!(line_chart("empty", "ms", &[]).contains("No data"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(73.0), 100.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(4.5), 5.0);
    }
}
