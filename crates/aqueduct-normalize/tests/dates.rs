#![allow(clippy::unwrap_used)]

use aqueduct_normalize::dates::{DateIssue, Precision, Zone, parse_fhir_datetime};
use proptest::prelude::*;

#[test]
fn precisions() {
    let (w, i) = parse_fhir_datetime("2023", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-01-01T00:00:00Z"));
    assert_eq!(w.precision, Some(Precision::Year));
    assert_eq!(i, vec![DateIssue::Partial]);
    let (w, _) = parse_fhir_datetime("2023-04", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-04-01T00:00:00Z"));
    assert_eq!(w.precision, Some(Precision::Month));
    let (w, i) = parse_fhir_datetime("2023-04-05", 0);
    assert_eq!(w.precision, Some(Precision::Day));
    assert_eq!(w.zone, Some(Zone::DateOnly));
    assert!(i.is_empty());
}

#[test]
fn offsets_to_utc() {
    let (w, i) = parse_fhir_datetime("2023-04-05T22:30:00-05:00", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-04-06T03:30:00Z"));
    assert_eq!(w.zone, Some(Zone::Given));
    assert!(i.is_empty());
    let (w, _) = parse_fhir_datetime("2023-04-05T10:00:00.123+02:00", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-04-05T08:00:00.123Z"));
    assert_eq!(w.precision, Some(Precision::Fraction));
    let (w, _) = parse_fhir_datetime("2023-04-05T10:00:00Z", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-04-05T10:00:00Z"));
    assert_eq!(w.original, "2023-04-05T10:00:00Z");
}

#[test]
fn timezone_less_is_flagged() {
    let (w, i) = parse_fhir_datetime("2023-04-05T10:00:00", 0);
    assert_eq!(w.utc.as_deref(), Some("2023-04-05T10:00:00Z"));
    assert_eq!(w.zone, Some(Zone::Assumed));
    assert_eq!(i, vec![DateIssue::TimezoneAssumed]);
    let (w, _) = parse_fhir_datetime("2023-04-05T10:00:00", -300);
    assert_eq!(w.utc.as_deref(), Some("2023-04-05T15:00:00Z"));
    let (w, i) = parse_fhir_datetime("2023-04-05T10:00Z", 0);
    assert_eq!(w.precision, Some(Precision::Minute));
    assert!(i.contains(&DateIssue::NonStandard));
}

#[test]
fn invalid_dates() {
    for bad in [
        "2023-02-30",
        "2023-13-01",
        "2023-00",
        "20230405",
        "2023-4-5",
        "",
        "yesterday",
        "2023-04-05T25:00:00Z",
        "2023-04-05T10:61:00Z",
        "2023-04-05T10:00:00+25:00",
        "2023-04T10:00:00Z",
        "0000",
        "2023-02-29",
        "2023-04-05T10:00:00.Z",
        "٢٠٢٣",
    ] {
        let (w, i) = parse_fhir_datetime(bad, 0);
        assert_eq!(w.utc, None, "{bad}");
        assert!(i.contains(&DateIssue::Invalid), "{bad}");
        assert_eq!(w.original, bad);
    }
    // leap year ok
    assert!(parse_fhir_datetime("2024-02-29", 0).0.utc.is_some());
}

proptest! {
    #[test]
    fn never_panics(s in ".{0,40}", off in -900i32..900) {
        let (w, _) = parse_fhir_datetime(&s, off);
        prop_assert_eq!(w.original, s);
    }

    #[test]
    fn valid_datetimes_round_trip(y in 1900i32..2100, mo in 1u32..=12, d in 1u32..=28, h in 0u32..24, mi in 0u32..60, s in 0u32..60, oh in -12i32..=14, om in prop::sample::select(vec![0i32, 30, 45])) {
        let sign = if oh < 0 { '-' } else { '+' };
        let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{om:02}", oh.abs());
        let (w, issues) = parse_fhir_datetime(&text, 0);
        prop_assert!(issues.is_empty(), "{text} {issues:?}");
        let utc = chrono::DateTime::parse_from_rfc3339(w.utc.as_deref().unwrap()).unwrap();
        let orig = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
        prop_assert_eq!(utc, orig);
    }
}

proptest! {
    #[test]
    fn odd_offsets_never_panic(tail in "[+-].{0,6}", head in prop::sample::select(vec!["2023-04-05T10:00:00", "2023-04-05T10:00", "2023-04-05T10:00:00.5"])) {
        let s = format!("{head}{tail}");
        let _ = parse_fhir_datetime(&s, 0);
    }
}

#[test]
fn multibyte_offset() {
    let (w, i) = parse_fhir_datetime("2023-04-05T10:00:00+aé1", 0);
    assert!(w.utc.is_none());
    assert!(i.contains(&DateIssue::Invalid));
}
