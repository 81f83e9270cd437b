//! The one place that knows FHIR: a FHIR R4 Patient (as JSON) becomes a [`Record`], and its
//! `link` elements become forced links. Nothing here fails on odd content: a field of the wrong
//! shape is left out; only a document that is not a Patient object is an error.

use serde_json::Value;

use crate::error::MatchError;
use crate::record::{Address, Identifier, Record, Sex};

/// A `Patient.link` the source asserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientLink {
    /// The other Patient, as referenced (`Patient/123`).
    pub other: String,
    /// `replaced-by`, `replaces`, `refer` or `seealso`.
    pub kind: String,
}

impl PatientLink {
    /// True for the kinds that say "the same person" (`replaced-by`, `replaces`, `refer`);
    /// `seealso` only says "maybe".
    pub fn is_same_person(&self) -> bool {
        matches!(self.kind.as_str(), "replaced-by" | "replaces" | "refer")
    }
}

/// What the adapter takes from a Patient.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientFacts {
    pub record: Record,
    pub links: Vec<PatientLink>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The most official entry of a list by `use`: first one whose use is in `order`, else the
/// first entry at all.
fn pick<'a>(items: &'a [Value], order: &[&str]) -> Option<&'a Value> {
    let live: Vec<&Value> = items
        .iter()
        .filter(|i| i.is_object() && text(i, "use") != "old")
        .collect();
    for want in order {
        if let Some(i) = live.iter().find(|i| text(i, "use") == *want) {
            return Some(i);
        }
    }
    live.first().copied()
}

/// Reads a Patient resource. `source` names where it comes from; the record id is
/// `source/Patient/<id>`.
pub fn patient(source: &str, resource: &Value) -> Result<PatientFacts, MatchError> {
    if !resource.is_object() {
        return Err(MatchError::NotAPatient("not a JSON object".into()));
    }
    let rt = text(resource, "resourceType");
    if rt != "Patient" {
        return Err(MatchError::NotAPatient(format!("resourceType is {rt:?}")));
    }
    let id = text(resource, "id");
    if id.is_empty() {
        return Err(MatchError::NotAPatient("no id".into()));
    }
    let mut record = Record {
        id: format!("{source}/Patient/{id}"),
        source: source.to_string(),
        ..Record::default()
    };
    if let Some(name) = pick(array(resource, "name"), &["official", "usual"]) {
        record.given = strings(name, "given");
        record.family = text(name, "family");
        if record.given.is_empty() && record.family.is_empty() {
            // only `text`: last word as family name
            let t = text(name, "text");
            let mut words: Vec<&str> = t.split_whitespace().collect();
            if let Some(last) = words.pop() {
                record.family = last.to_string();
                record.given = words.iter().map(|w| w.to_string()).collect();
            }
        }
    }
    let birth = text(resource, "birthDate");
    record.birth_date = (!birth.is_empty()).then_some(birth);
    let gender = text(resource, "gender");
    record.sex = (!gender.is_empty()).then(|| Sex::parse(&gender));
    if let Some(a) = pick(array(resource, "address"), &["home"]) {
        record.address = Some(Address {
            lines: strings(a, "line"),
            city: text(a, "city"),
            state: text(a, "state"),
            postal_code: text(a, "postalCode"),
        });
    }
    let telecom = array(resource, "telecom");
    let by_system = |system: &str| -> Vec<Value> {
        telecom
            .iter()
            .filter(|t| text(t, "system") == system && !text(t, "value").is_empty())
            .cloned()
            .collect()
    };
    let phones = by_system("phone");
    record.phone = pick(&phones, &["mobile", "home"]).map(|t| text(t, "value"));
    let emails = by_system("email");
    record.email = pick(&emails, &["home"]).map(|t| text(t, "value"));
    record.identifiers = array(resource, "identifier")
        .iter()
        .filter(|i| text(i, "use") != "old")
        .map(|i| Identifier {
            system: text(i, "system"),
            value: text(i, "value"),
        })
        .filter(|i| !i.system.is_empty() && !i.value.is_empty())
        .collect();
    let links = array(resource, "link")
        .iter()
        .filter_map(|l| {
            let other = l
                .get("other")
                .map(|o| text(o, "reference"))
                .unwrap_or_default();
            let kind = text(l, "type");
            (!other.is_empty()).then_some(PatientLink { other, kind })
        })
        .collect();
    Ok(PatientFacts { record, links })
}

/// Reads a Patient from bytes (JSON).
pub fn patient_from_slice(source: &str, bytes: &[u8]) -> Result<PatientFacts, MatchError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let v: Value = serde_json::from_slice(bytes)?;
    patient(source, &v)
}

/// The record id a `Patient.link` reference points to, in the same source (`Patient/123` →
/// `source/Patient/123`); absolute URLs and other resource types are not resolved.
pub fn link_target(source: &str, reference: &str) -> Option<String> {
    let r = reference.trim();
    let id = r.strip_prefix("Patient/")?;
    (!id.is_empty() && !id.contains('/')).then(|| format!("{source}/Patient/{id}"))
}

/// Adds a Patient to an identity: matched like any record, and each same-person
/// `Patient.link` is a forced link.
pub fn upsert_patient<S: crate::identity::IdentityStore>(
    identity: &mut crate::identity::Identity<S>,
    source: &str,
    resource: &Value,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::identity::IdentityEvent>, MatchError> {
    let facts = patient(source, resource)?;
    let mut events = identity.upsert(&facts.record)?;
    for link in facts.links.iter().filter(|l| l.is_same_person()) {
        if let Some(other) = link_target(source, &link.other) {
            let why = format!("FHIR Patient.link {} from {}", link.kind, facts.record.id);
            events.extend(identity.force_link(&facts.record.id, &other, &why, at)?);
        }
    }
    Ok(events)
}
