//! Search parameters the facade supports, parsed from the query, and how a resource (as JSON)
//! is matched against them. Unknown parameters are refused under `Prefer: handling=strict`
//! and ignored (and left out of the self link) otherwise, as FHIR asks.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::problem::Outcome;

/// The search parameters of the CapabilityStatement, with their FHIR types.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("_id", "token"),
    ("patient", "reference"),
    ("subject", "reference"),
    ("_lastUpdated", "date"),
    ("date", "date"),
    ("code", "token"),
    ("category", "token"),
    ("status", "token"),
    ("identifier", "token"),
];

/// A parsed search.
#[derive(Debug, Default, Clone)]
pub struct Search {
    pub ids: Vec<String>,
    pub patient: Option<String>,
    pub last_updated: Vec<DateParam>,
    pub date: Vec<DateParam>,
    pub code: Vec<Vec<Token>>,
    pub category: Vec<Vec<Token>>,
    pub status: Vec<Vec<String>>,
    pub identifier: Vec<Vec<Token>>,
    pub count: Option<u32>,
    pub page: Option<String>,
    pub summary_count: bool,
    pub include: Vec<String>,
    pub revinclude: Vec<String>,
    /// What was understood, for the self link.
    pub used: Vec<(String, String)>,
    /// Since `_since` of `$everything`.
    pub since: Option<DateTime<Utc>>,
    pub types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// None: any system; Some(""): no system.
    pub system: Option<String>,
    /// None: any code of the system.
    pub code: Option<String>,
}

fn token(v: &str) -> Token {
    match v.split_once('|') {
        Some((s, c)) => Token {
            system: Some(s.to_string()),
            code: (!c.is_empty()).then(|| c.to_string()),
        },
        None => Token {
            system: None,
            code: Some(v.to_string()),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Debug, Clone, Copy)]
pub struct DateParam {
    pub prefix: Prefix,
    /// The range the value stands for: a day, a month, a year or an instant.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Search {
    /// Whether matching needs the resource's content (not only its type, id and patient).
    pub fn filters_content(&self) -> bool {
        !(self.last_updated.is_empty()
            && self.date.is_empty()
            && self.code.is_empty()
            && self.category.is_empty()
            && self.status.is_empty()
            && self.identifier.is_empty())
    }
}

/// The range `[start, end)` a FHIR date, dateTime or instant stands for.
pub fn date_range(s: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&Utc);
        return Some((t, t + chrono::Duration::seconds(1)));
    }
    // a dateTime without seconds or zone is not valid FHIR; read it as the day
    let day = s.get(..10).unwrap_or(s);
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match day.len() {
        4 => {
            let y: i32 = day.parse().ok()?;
            let a = midnight(NaiveDate::from_ymd_opt(y, 1, 1)?)?;
            let b = midnight(NaiveDate::from_ymd_opt(y + 1, 1, 1)?)?;
            Some((a, b))
        }
        7 => {
            let (y, m) = day.split_once('-')?;
            let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
            let a = midnight(NaiveDate::from_ymd_opt(y, m, 1)?)?;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let b = midnight(NaiveDate::from_ymd_opt(ny, nm, 1)?)?;
            Some((a, b))
        }
        10 => {
            let d = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
            let a = midnight(d)?;
            Some((a, a + chrono::Duration::days(1)))
        }
        _ => None,
    }
}

fn date_param(v: &str) -> Option<DateParam> {
    let (prefix, rest) = match v.get(..2) {
        Some("eq") => (Prefix::Eq, &v[2..]),
        Some("ne") => (Prefix::Ne, &v[2..]),
        Some("gt") => (Prefix::Gt, &v[2..]),
        Some("lt") => (Prefix::Lt, &v[2..]),
        Some("ge") => (Prefix::Ge, &v[2..]),
        Some("le") => (Prefix::Le, &v[2..]),
        _ => (Prefix::Eq, v),
    };
    let (start, end) = date_range(rest)?;
    Some(DateParam { prefix, start, end })
}

impl DateParam {
    /// Whether a resource's date range satisfies this parameter (FHIR's range semantics).
    pub fn matches(&self, (rs, re): (DateTime<Utc>, DateTime<Utc>)) -> bool {
        match self.prefix {
            Prefix::Eq => rs >= self.start && re <= self.end,
            Prefix::Ne => !(rs >= self.start && re <= self.end),
            Prefix::Gt => re > self.end,
            Prefix::Lt => rs < self.start,
            Prefix::Ge => re > self.start,
            Prefix::Le => rs < self.end,
        }
    }
}

/// Parses a search (or `$everything`) query. `strict` refuses what is not understood.
pub fn parse(
    pairs: &[(String, String)],
    strict: bool,
    everything: bool,
) -> Result<Search, Outcome> {
    let mut s = Search::default();
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    for (k, v) in pairs {
        if v.len() > 2048 {
            return Err(Outcome::invalid(format!("{k}: value too long")));
        }
        let bad = |what: &str| Outcome::invalid(format!("{k}={v:?}: {what}"));
        let mut used = true;
        match k.as_str() {
            "_id" if !everything => s.ids.extend(list(v)),
            "patient" | "subject" if !everything => {
                let p = v.strip_prefix("Patient/").unwrap_or(v);
                if s.patient.as_deref().is_some_and(|q| q != p) {
                    return Err(bad("one patient per search"));
                }
                s.patient = Some(p.to_string());
            }
            "_lastUpdated" if !everything => s
                .last_updated
                .push(date_param(v).ok_or_else(|| bad("not a date"))?),
            "date" if !everything => s.date.push(date_param(v).ok_or_else(|| bad("not a date"))?),
            "code" if !everything => s.code.push(list(v).iter().map(|t| token(t)).collect()),
            "category" if !everything => {
                s.category.push(list(v).iter().map(|t| token(t)).collect())
            }
            "status" if !everything => s.status.push(list(v)),
            "identifier" if !everything => s
                .identifier
                .push(list(v).iter().map(|t| token(t)).collect()),
            "_include" if !everything => s.include.push(v.clone()),
            "_revinclude" if !everything => s.revinclude.push(v.clone()),
            "_summary" if v == "count" && !everything => s.summary_count = true,
            "_count" => {
                s.count = Some(v.parse().map_err(|_| bad("not a number"))?);
            }
            "_page" => s.page = Some(v.clone()),
            "_since" if everything => {
                let (start, _) = date_range(v).ok_or_else(|| bad("not an instant"))?;
                s.since = Some(start);
            }
            "_type" if everything => s.types.extend(list(v)),
            // JSON is the only format; asking for it is fine
            "_format" if v.contains("json") => {}
            _ => {
                if strict {
                    return Err(Outcome::not_supported(format!(
                        "search parameter {k:?} is not supported here (Prefer: handling=strict)"
                    )));
                }
                used = false;
            }
        }
        if used && k != "_page" {
            s.used.push((k.clone(), v.clone()));
        }
    }
    for t in &s.types {
        if !super::ids::valid_type(t) {
            return Err(Outcome::invalid(format!(
                "_type: {t:?} is not a resource type"
            )));
        }
    }
    Ok(s)
}

fn codings(v: &Value) -> Vec<&Value> {
    let concepts: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => Vec::new(),
    };
    concepts
        .into_iter()
        .filter_map(|cc| cc["coding"].as_array())
        .flatten()
        .collect()
}

fn token_matches(t: &Token, system: Option<&str>, code: Option<&str>) -> bool {
    let sys_ok = match t.system.as_deref() {
        None => true,
        Some("") => system.is_none(),
        Some(s) => system == Some(s),
    };
    sys_ok && t.code.as_deref().is_none_or(|c| code == Some(c))
}

/// Any coding of the CodeableConcept(s) at `v` matches one of the tokens.
fn concept_matches(v: &Value, any_of: &[Token]) -> bool {
    codings(v).iter().any(|c| {
        any_of
            .iter()
            .any(|t| token_matches(t, c["system"].as_str(), c["code"].as_str()))
    })
}

/// Where a resource type keeps its coded concept searched by `code`.
pub(crate) fn code_paths(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationAdministration"
        | "MedicationDispense" => &["medicationCodeableConcept"],
        "Immunization" => &["vaccineCode"],
        "DocumentReference" | "Encounter" => &["type"],
        _ => &["code"],
    }
}

/// Where a resource type keeps its clinically relevant date, first present wins.
fn date_paths(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" | "DiagnosticReport" => &[
            "effectiveDateTime",
            "effectivePeriod.start",
            "effectiveInstant",
            "issued",
        ],
        "Condition" => &["onsetDateTime", "onsetPeriod.start", "recordedDate"],
        "Procedure" => &["performedDateTime", "performedPeriod.start"],
        "MedicationRequest" => &["authoredOn"],
        "Immunization" => &["occurrenceDateTime"],
        "AllergyIntolerance" => &["recordedDate", "onsetDateTime"],
        "Encounter" | "CarePlan" | "CareTeam" | "Coverage" => &["period.start"],
        "DocumentReference" | "Composition" => &["date"],
        "Patient" => &["birthDate"],
        _ => &["date", "effectiveDateTime", "period.start"],
    }
}

fn at_path<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// Whether the resource `v` (already known to be of `resource_type`) matches every filter.
pub fn matches(s: &Search, resource_type: &str, v: &Value) -> bool {
    let any_path = |paths: &[&str], any_of: &[Token]| {
        paths.iter().any(|p| concept_matches(at_path(v, p), any_of))
    };
    if !s
        .code
        .iter()
        .all(|t| any_path(code_paths(resource_type), t))
    {
        return false;
    }
    if !s
        .category
        .iter()
        .all(|t| concept_matches(&v["category"], t))
    {
        return false;
    }
    if !s.status.iter().all(|any| {
        v["status"]
            .as_str()
            .is_some_and(|st| any.iter().any(|a| a == st))
    }) {
        return false;
    }
    if !s.identifier.iter().all(|any| {
        v["identifier"].as_array().is_some_and(|ids| {
            ids.iter().any(|i| {
                any.iter()
                    .any(|t| token_matches(t, i["system"].as_str(), i["value"].as_str()))
            })
        })
    }) {
        return false;
    }
    if !s.date.is_empty() {
        let range = date_paths(resource_type)
            .iter()
            .find_map(|p| at_path(v, p).as_str())
            .and_then(date_range);
        match range {
            Some(r) if s.date.iter().all(|d| d.matches(r)) => {}
            _ => return false,
        }
    }
    if !s.last_updated.is_empty() {
        match v["meta"]["lastUpdated"].as_str().and_then(date_range) {
            Some(r) if s.last_updated.iter().all(|d| d.matches(r)) => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_match_as_fhir_reads_them() {
        let obs = json!({
            "resourceType": "Observation", "status": "final",
            "meta": {"lastUpdated": "2026-03-01T10:00:00Z"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "effectiveDateTime": "2026-02-15T08:30:00Z"
        });
        let yes = [
            vec![("code", "http://loinc.org|2345-7")],
            vec![("code", "2345-7")],
            vec![("code", "http://loinc.org|")],
            vec![("code", "x,2345-7")],
            vec![("category", "laboratory"), ("status", "final,amended")],
            vec![
                ("date", "2026-02"),
                ("date", "ge2026-02-15"),
                ("date", "lt2026-03"),
            ],
            vec![("_lastUpdated", "gt2026-02-28")],
        ];
        for p in yes {
            let s = parse(&q(&p), true, false).unwrap();
            assert!(matches(&s, "Observation", &obs), "{p:?}");
        }
        let no = [
            vec![("code", "|2345-7")],
            vec![("code", "http://snomed.info/sct|2345-7")],
            vec![("status", "preliminary")],
            vec![("date", "2025")],
            vec![("date", "gt2026-02-15")],
            vec![("_lastUpdated", "lt2026-01-01")],
        ];
        for p in no {
            let s = parse(&q(&p), true, false).unwrap();
            assert!(!matches(&s, "Observation", &obs), "{p:?}");
        }
    }

    #[test]
    fn strict_refuses_what_lenient_ignores() {
        let p = q(&[("_sort", "-date"), ("code", "x")]);
        assert!(parse(&p, true, false).is_err());
        let s = parse(&p, false, false).unwrap();
        assert_eq!(s.used, vec![("code".to_string(), "x".to_string())]);
        assert!(parse(&q(&[("date", "yesterday")]), false, false).is_err());
        assert!(parse(&q(&[("_count", "many")]), false, false).is_err());
    }
}
