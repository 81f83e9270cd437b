//! Small helpers: durations, timestamps, hosts, percentiles.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

/// Parses a duration such as `15m`, `2h`, `30s`, `1d`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 30s, 15m, 2h, 1d)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" | "min" | "mins" => n.saturating_mul(60),
        "h" | "hour" | "hours" => n.saturating_mul(3600),
        "d" | "day" | "days" => n.saturating_mul(86_400),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use s, m, h, d)"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Parses a FHIR `instant`/`dateTime`/`date` as the source gave it.
pub(crate) fn parse_fhir_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let date = s.get(..10).unwrap_or(s);
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// The host (with port) of a URL, "" when there is none.
pub(crate) fn host_of(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => return "",
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); 0 for an empty slice.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted values; 0 for none.
pub(crate) fn median(values: &[u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

pub(crate) fn pct(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://fhir.example.org/r4/Patient?x=1"),
            "fhir.example.org"
        );
        assert_eq!(host_of("http://u:p@h:8080"), "h:8080");
        assert_eq!(host_of("not a url"), "");
    }

    #[test]
    fn stats() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(median(&[]), 0);
    }

    #[test]
    fn fhir_times() {
        assert!(parse_fhir_time("2026-01-02T03:04:05+02:00").is_some());
        assert!(parse_fhir_time("2026-01-02").is_some());
        assert!(parse_fhir_time("yesterday").is_none());
    }
}
