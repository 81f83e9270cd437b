//! Parsers for the throttling headers servers send: `Retry-After` (delta-seconds or HTTP-date)
//! and `X-RateLimit-Remaining` / `X-RateLimit-Reset` (seconds from now, or an epoch time).
//! All are total functions over outside input: any string in, never a panic.

use std::time::{Duration, SystemTime};

/// Longest pause honoured from a header: a server asking for more is capped (the request then
/// fails after its retries rather than blocking a sync for hours).
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Parses `Retry-After`: delta-seconds ("120", "1.5" tolerated) or an HTTP-date, relative to
/// `now`. A date in the past means zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_PAUSE));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(MAX_PAUSE.as_secs_f64())));
        }
        return None;
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_PAUSE),
    )
}

/// Parses `X-RateLimit-Reset`: small numbers are seconds from now, large ones (> 10^9) an epoch
/// time in seconds.
pub fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let n: f64 = v.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let d = if n > 1.0e9 {
        let epoch_now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        (n - epoch_now).max(0.0)
    } else {
        n
    };
    Some(Duration::from_secs_f64(d.min(MAX_PAUSE.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_PAUSE));
    }

    #[test]
    fn rate_limit_reset_relative_and_epoch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_rate_limit_reset("2", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_rate_limit_reset("1700000010", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_rate_limit_reset("x", now), None);
    }

    proptest! {
        #[test]
        fn header_parsers_never_panic(s in ".*", secs in 0u64..4_000_000_000) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let a = parse_retry_after(&s, now);
            let b = parse_rate_limit_reset(&s, now);
            prop_assert!(a.is_none_or(|d| d <= MAX_PAUSE));
            prop_assert!(b.is_none_or(|d| d <= MAX_PAUSE));
        }
    }
}
