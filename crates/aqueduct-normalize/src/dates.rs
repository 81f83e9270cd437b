//! FHIR date / dateTime / instant parsing that keeps the original precision and never
//! invents a value silently.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::Serialize;

/// How precise the source value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    Fraction,
}

/// Where the UTC offset of the normalized instant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Zone {
    /// The value carried its own offset (or `Z`).
    Given,
    /// The value had a time but no offset; the connection's assumed offset was applied.
    Assumed,
    /// A date without time: the instant is the start of the period in UTC, for ordering only.
    DateOnly,
}

/// A normalized point in time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct When {
    /// The value exactly as received.
    pub original: String,
    /// RFC 3339 in UTC (`2023-04-05T10:00:00Z`), start of the period for partial dates;
    /// `None` when the value could not be read (invalid date).
    pub utc: Option<String>,
    pub precision: Option<Precision>,
    pub zone: Option<Zone>,
}

/// Why a date could not be read, or what was assumed: becomes a flag on the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateIssue {
    /// Not a date at all, or an impossible one ("2023-02-30").
    Invalid,
    /// A time without offset; the assumed offset was applied.
    TimezoneAssumed,
    /// A partial date (year or year-month): kept with its precision.
    Partial,
    /// Time without seconds or another lenient form FHIR does not allow.
    NonStandard,
}

impl DateIssue {
    pub fn code(self) -> &'static str {
        match self {
            DateIssue::Invalid => "invalid-date",
            DateIssue::TimezoneAssumed => "timezone-assumed",
            DateIssue::Partial => "partial-date",
            DateIssue::NonStandard => "non-standard-date",
        }
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a FHIR date, dateTime or instant. `assumed_offset_minutes` is applied to times
/// without an offset (and flagged). Returns the normalized value and the issues found;
/// never panics.
pub fn parse_fhir_datetime(input: &str, assumed_offset_minutes: i32) -> (When, Vec<DateIssue>) {
    let mut issues = Vec::new();
    let original = input.to_string();
    let invalid = |mut issues: Vec<DateIssue>| {
        issues.push(DateIssue::Invalid);
        (
            When {
                original: input.to_string(),
                utc: None,
                precision: None,
                zone: None,
            },
            issues,
        )
    };
    let s = input.trim();
    if s.len() > 64 {
        return invalid(issues);
    }
    let (date_part, time_part) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut it = date_part.split('-');
    let year = match it
        .next()
        .and_then(|y| if y.len() == 4 { digits(y) } else { None })
    {
        Some(y) if y >= 1 => y as i32,
        _ => return invalid(issues),
    };
    let month = match it.next() {
        None => None,
        Some(m) if m.len() == 2 => match digits(m) {
            Some(m) if (1..=12).contains(&m) => Some(m),
            _ => return invalid(issues),
        },
        Some(_) => return invalid(issues),
    };
    let day = match it.next() {
        None => None,
        Some(d) if d.len() == 2 => match digits(d) {
            Some(d) => Some(d),
            None => return invalid(issues),
        },
        Some(_) => return invalid(issues),
    };
    if it.next().is_some() {
        return invalid(issues);
    }
    let date = match NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1)) {
        Some(d) => d,
        None => return invalid(issues),
    };
    let Some(time_str) = time_part else {
        let precision = match (month, day) {
            (None, _) => Precision::Year,
            (Some(_), None) => Precision::Month,
            _ => Precision::Day,
        };
        if precision != Precision::Day {
            issues.push(DateIssue::Partial);
        }
        let utc = Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN));
        return (
            When {
                original,
                utc: Some(fmt_utc(utc)),
                precision: Some(precision),
                zone: Some(Zone::DateOnly),
            },
            issues,
        );
    };
    if day.is_none() {
        return invalid(issues);
    }
    // split the offset
    let (clock, offset) = if let Some(c) = time_str.strip_suffix(['Z', 'z']) {
        (c, Some(0i32))
    } else if let Some(i) = time_str.rfind(['+', '-']) {
        let (c, o) = time_str.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let o = &o[1..];
        if !o.is_ascii() {
            return invalid(issues);
        }
        let (h, m) = match o.split_once(':') {
            Some((h, m)) => (h, m),
            None if o.len() == 4 => (&o[..2], &o[2..]),
            None if o.len() == 2 => (o, "00"),
            None => return invalid(issues),
        };
        if h.len() != 2 || m.len() != 2 {
            return invalid(issues);
        }
        let (Some(hh), Some(mm)) = (digits(h), digits(m)) else {
            return invalid(issues);
        };
        if hh > 14 || mm >= 60 {
            return invalid(issues);
        }
        (c, Some(sign * (hh as i32 * 60 + mm as i32)))
    } else {
        (time_str, None)
    };
    let mut parts = clock.split(':');
    let hour = parts.next().filter(|h| h.len() == 2).and_then(digits);
    let minute = parts.next().filter(|m| m.len() == 2).and_then(digits);
    let sec_part = parts.next();
    if parts.next().is_some() {
        return invalid(issues);
    }
    let (Some(hour), Some(minute)) = (hour, minute) else {
        return invalid(issues);
    };
    let (second, nanos, precision) = match sec_part {
        None => {
            issues.push(DateIssue::NonStandard);
            (0, 0, Precision::Minute)
        }
        Some(sp) => {
            let (whole, frac) = match sp.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sp, None),
            };
            let Some(sec) = Some(whole).filter(|w| w.len() == 2).and_then(digits) else {
                return invalid(issues);
            };
            match frac {
                None => (sec, 0, Precision::Second),
                Some(f) if !f.is_empty() && f.len() <= 9 => {
                    let Some(n) = digits(f) else {
                        return invalid(issues);
                    };
                    let nanos = n * 10u32.pow(9 - f.len() as u32);
                    (sec, nanos, Precision::Fraction)
                }
                Some(_) => return invalid(issues),
            }
        }
    };
    // FHIR allows a leap second 60 in instants; chrono represents it via nanos >= 1e9.
    let time = if second == 60 {
        NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000 + nanos)
    } else {
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
    };
    let Some(time) = time else {
        return invalid(issues);
    };
    let naive = NaiveDateTime::new(date, time);
    let (offset_min, zone) = match offset {
        Some(o) => (o, Zone::Given),
        None => {
            issues.push(DateIssue::TimezoneAssumed);
            (assumed_offset_minutes, Zone::Assumed)
        }
    };
    let Some(tz) = FixedOffset::east_opt(offset_min * 60) else {
        return invalid(issues);
    };
    let utc = match tz.from_local_datetime(&naive).single() {
        Some(dt) => dt.with_timezone(&Utc),
        None => return invalid(issues),
    };
    (
        When {
            original,
            utc: Some(fmt_utc(utc)),
            precision: Some(precision),
            zone: Some(zone),
        },
        issues,
    )
}

fn fmt_utc(dt: DateTime<Utc>) -> String {
    if dt.timestamp_subsec_nanos() == 0 && (0..=9999).contains(&dt.year()) {
        use chrono::Timelike;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )
    } else {
        dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

/// Parses the UTC string produced by [`parse_fhir_datetime`] back.
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The year of a normalized instant, for quick checks.
pub fn year_of(s: &str) -> Option<i32> {
    parse_utc(s).map(|d| d.year())
}
