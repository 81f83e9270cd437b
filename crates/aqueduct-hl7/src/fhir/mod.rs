//! From HL7 v2 messages to FHIR R4 resources and refresh events, following the HL7 v2-to-FHIR
//! mapping. This module maps only; [`crate::persist`] writes. ADT and ORU/OUL are mapped here,
//! the other kinds in one module each: orders and referrals (ServiceRequest, Specimen),
//! documents (DocumentReference), scheduling (Appointment), vaccination (Immunization),
//! pharmacy (MedicationRequest, MedicationDispense), financial (Account, ChargeItem,
//! Encounter, Coverage), problems (Condition), identity (merges and links as Linkage). A kind
//! not mapped is an error naming it: the listener keeps the message, marked unconverted.
//!
//! ADT (A01/A02/A03/A04/A08/A11/A13/A28/A31/A40 and the other A-events generically) becomes a
//! Patient and, when PV1 names a visit, an Encounter; A40 records the merge as links
//! (`replaces` on the survivor, `replaced-by` on the prior record, which is kept and marked
//! inactive). ORU^R01 becomes a Patient, Observations and DiagnosticReports. Logical ids are
//! deterministic: the MRN for Patient, the visit number for Encounter; an Observation is keyed
//! by its order (OBR-3 filler number, else OBR-2 placer number), OBX-3 code and OBX-4 sub-id,
//! and a DiagnosticReport by its order, so that a corrected or final result replaces the
//! preliminary one; without an order number, by the control id and the OBX (OBR) index.
//!
//! Everything is liberal: a bad date or number is left out (or kept as a string) with a
//! warning, never a failure of the whole message.

use std::borrow::Cow;

use aqueduct_core::RefreshRequest;
use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::Hl7Error;
use crate::message::{Message, Segment, decode_text};

mod documents;
mod financial;
mod identity;
mod orders;
mod pharmacy;
mod problems;
mod scheduling;
mod vaccination;

pub use identity::IdentityEvent;

/// One FHIR resource produced from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirResource {
    pub resource_type: &'static str,
    pub id: String,
    pub patient_id: Option<String>,
    pub json: Value,
}

/// A merge (ADT^A40): `prior` is now replaced by `surviving`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub surviving_id: String,
    pub prior_id: String,
    /// The prior record's identifier, for a stub when the store does not hold it yet.
    pub prior_identifier: Value,
}

/// What one message turns into.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// `hl7-{sending facility}`.
    pub connection: String,
    /// `mllp://{sender}/{control id}`.
    pub source_url: String,
    pub message_type: String,
    pub resources: Vec<FhirResource>,
    pub merges: Vec<Merge>,
    /// Merges, links and unlinks of patient records (ADT A18/A34/A40/A24/A37...), for patient
    /// matching; each is also a FHIR `Linkage` among the resources.
    pub identity_events: Vec<IdentityEvent>,
    pub refresh: Vec<RefreshRequest>,
    pub warnings: Vec<String>,
}

/// The sender key used for de-duplication: `{MSH-3.1}^{MSH-4.1}` (e.g. `LAB^HOSP`).
pub fn sender_of(m: &Message<'_>) -> String {
    format!(
        "{}^{}",
        m.get("MSH-3.1").unwrap_or_default(),
        m.get("MSH-4.1").unwrap_or_default()
    )
}

/// The connection a message's resources (and findings about it) are filed under:
/// `hl7-{MSH-4.1}`, or `hl7-{MSH-3.1}` without a facility.
pub fn connection_of(m: &Message<'_>) -> String {
    format!("hl7-{}", facility_of(m))
}

fn facility_of(m: &Message<'_>) -> String {
    m.get("MSH-4.1")
        .or_else(|| m.get("MSH-3.1"))
        .map(Cow::into_owned)
        .unwrap_or_else(|| "unknown".into())
}

/// A valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`) derived deterministically from `raw`: kept as
/// is when already valid, otherwise sanitized and suffixed with a hash so that distinct inputs
/// never collide.
pub fn fhir_id(raw: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if !raw.is_empty() && raw.len() <= 64 && raw.chars().all(valid) {
        return raw.to_string();
    }
    let clean: String = raw
        .chars()
        .map(|c| if valid(c) { c } else { '-' })
        .take(48)
        .collect();
    let hash = hex::encode(Sha256::digest(raw.as_bytes()));
    if clean.is_empty() {
        format!("h{}", &hash[..16])
    } else {
        format!("{clean}-{}", &hash[..12])
    }
}

/// HL7 TS/DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) to a FHIR dateTime, keeping the
/// precision (hours alone become `hh:00:00`, minutes `hh:mm:00`, as FHIR needs seconds) and the
/// offset when one is given. None when the value is not a valid date. (During conversion, a
/// time without offset takes the offset of MSH-7, the sender's zone, when MSH-7 has one.)
pub fn hl7_datetime(ts: &str) -> Option<String> {
    let ts = ts.trim();
    let (main, tz) = match ts.get(4..).and_then(|r| r.find(['+', '-'])) {
        Some(i) => (&ts[..i + 4], Some(&ts[i + 4..])),
        None => (ts, None),
    };
    let (digits, frac) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&digits.len())
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let year = num(0..4)? as i32;
    if year == 0 {
        return None;
    }
    if digits.len() == 4 {
        return Some(format!("{year:04}"));
    }
    let month = num(4..6)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if digits.len() == 6 {
        return Some(format!("{year:04}-{month:02}"));
    }
    let day = num(6..8)?;
    NaiveDate::from_ymd_opt(year, month, day)?;
    let date = format!("{year:04}-{month:02}-{day:02}");
    if digits.len() == 8 {
        return Some(date);
    }
    let hour = num(8..10)?;
    let minute = num(10..12).unwrap_or(0);
    let second = num(12..14).unwrap_or(0);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut out = format!("{date}T{hour:02}:{minute:02}:{second:02}");
    if let Some(f) = frac {
        if digits.len() != 14 || f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push('.');
        out.push_str(f);
    }
    if let Some(tz) = tz {
        let sign = &tz[..1];
        let z = &tz[1..];
        if z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m) = (&z[..2], &z[2..]);
        if h.parse::<u32>().ok()? > 14 || m.parse::<u32>().ok()? > 59 {
            return None;
        }
        out.push_str(&format!("{sign}{h}:{m}"));
    }
    Some(out)
}

/// HL7 DT (or the date part of a TS) to a FHIR date.
pub fn hl7_date(dt: &str) -> Option<String> {
    let dt = dt.trim();
    let digits: String = dt
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .take(8)
        .collect();
    if digits.len() < 4 {
        return None;
    }
    let full = hl7_datetime(&digits)?;
    Some(full)
}

/// A FHIR instant needs seconds and a zone: only such values are kept.
fn hl7_instant(ts: &str) -> Option<String> {
    let dt = hl7_datetime(ts)?;
    DateTime::parse_from_rfc3339(&dt).ok().map(|_| dt)
}

fn coding_system(sys: &str) -> Option<String> {
    let s = sys.trim();
    if s.is_empty() {
        return None;
    }
    let up = s.to_ascii_uppercase();
    Some(match up.as_str() {
        "LN" | "LOINC" => "http://loinc.org".into(),
        "SCT" | "SNM" | "SNM3" | "SNOMED" | "SNOMEDCT" => "http://snomed.info/sct".into(),
        "I10" | "I10C" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm".into(),
        "I9" | "I9C" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "UCUM" => "http://unitsofmeasure.org".into(),
        "RXN" | "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        "CPT" | "C4" => "http://www.ama-assn.org/go/cpt".into(),
        "CVX" => "http://hl7.org/fhir/sid/cvx".into(),
        "MVX" => "http://terminology.hl7.org/CodeSystem/MVX".into(),
        "NDC" => "http://hl7.org/fhir/sid/ndc".into(),
        _ if up.starts_with("HL7")
            && up[3..].bytes().all(|b| b.is_ascii_digit())
            && up.len() > 3 =>
        {
            format!("http://terminology.hl7.org/CodeSystem/v2-{}", &up[3..])
        }
        _ => format!("urn:aqueduct:hl7v2:{}", fhir_id(s)),
    })
}

/// CE/CWE/CNE (code^text^system^alt code^alt text^alt system^...^original text) to a
/// CodeableConcept; None when empty.
fn codeable_concept(seg: &Segment<'_, '_>, raw: &str) -> Option<Value> {
    let c = |n| seg.component_of_owned(raw, n);
    let mut codings = Vec::new();
    for base in [1usize, 4] {
        let code = c(base);
        let display = c(base + 1);
        if code.is_none() && display.is_none() {
            continue;
        }
        let mut coding = Map::new();
        if let Some(sys) = c(base + 2).and_then(|s| coding_system(&s)) {
            coding.insert("system".into(), json!(sys));
        }
        if let Some(code) = code {
            coding.insert("code".into(), json!(code));
        }
        if let Some(d) = display {
            coding.insert("display".into(), json!(d));
        }
        codings.push(Value::Object(coding));
    }
    let text = c(9).or_else(|| c(2));
    if codings.is_empty() && text.is_none() {
        return None;
    }
    let mut cc = Map::new();
    if !codings.is_empty() {
        cc.insert("coding".into(), Value::Array(codings));
    }
    if let Some(t) = text {
        cc.insert("text".into(), json!(t));
    }
    Some(Value::Object(cc))
}

impl<'m, 'a> Segment<'m, 'a> {
    fn component_of_owned(&self, raw: &'a str, n: usize) -> Option<String> {
        self.component_of(raw, n).map(Cow::into_owned)
    }
    fn field_str(&self, path: &str) -> Option<String> {
        self.get(path).map(Cow::into_owned)
    }
}

struct ReportDraft {
    json: Map<String, Value>,
    results: Vec<Value>,
    effective: Option<String>,
    patient_id: String,
}

/// OBX-6 / unit: (code, text, system).
type Unit = Option<(Option<String>, Option<String>, Option<String>)>;

struct PatientInfo {
    id: String,
    key: String,
    identifier: Value,
}

/// Picks the MRN (CX.5 = MR, else the first repetition) of a CX list field.
fn patient_identity(seg: &Segment<'_, '_>, field: usize, facility: &str) -> Option<PatientInfo> {
    let reps = seg.repetitions(field);
    let chosen = reps
        .iter()
        .find(|r| {
            seg.component_of(r, 5).as_deref() == Some("MR") && seg.component_of(r, 1).is_some()
        })
        .or_else(|| reps.iter().find(|r| seg.component_of(r, 1).is_some()))?;
    let value = seg.component_of_owned(chosen, 1)?;
    let (system, authority) = cx_system(seg, chosen, facility);
    Some(PatientInfo {
        id: fhir_id(&format!("{authority}-{value}")),
        key: format!("{system}|{value}"),
        identifier: cx_identifier(seg, chosen, facility)?,
    })
}

/// (system URI, authority label) of a CX.
fn cx_system(seg: &Segment<'_, '_>, rep: &str, facility: &str) -> (String, String) {
    let ns = seg.subcomponent_of(rep, 4, 1).map(Cow::into_owned);
    let uid = seg.subcomponent_of(rep, 4, 2).map(Cow::into_owned);
    let uid_type = seg.subcomponent_of(rep, 4, 3).map(Cow::into_owned);
    match (ns, uid, uid_type.as_deref()) {
        (ns, Some(uid), Some("ISO")) => (format!("urn:oid:{uid}"), ns.unwrap_or(uid)),
        (Some(ns), _, _) => (format!("urn:aqueduct:hl7v2:{}", fhir_id(&ns)), ns),
        (None, Some(uid), _) => (format!("urn:aqueduct:hl7v2:{}", fhir_id(&uid)), uid),
        (None, None, _) => (
            format!("urn:aqueduct:hl7v2:{}", fhir_id(facility)),
            facility.to_string(),
        ),
    }
}

fn cx_identifier(seg: &Segment<'_, '_>, rep: &str, facility: &str) -> Option<Value> {
    let value = seg.component_of_owned(rep, 1)?;
    let (system, _) = cx_system(seg, rep, facility);
    let mut id = json!({ "system": system, "value": value });
    if let Some(t) = seg.component_of_owned(rep, 5) {
        id["type"] = json!({ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] });
        if t == "MR" {
            id["use"] = json!("usual");
        }
    }
    Some(id)
}

/// What a per-kind mapping adds to: the resources, the patients named (for refresh requests),
/// and the message's header facts.
struct Out<'c, 'w> {
    ctx: &'c mut Ctx<'w>,
    resources: &'c mut Vec<FhirResource>,
    patients: &'c mut Vec<String>,
    /// `{MSH-3}-{MSH-10}`: the base of ids for things the message does not number itself.
    local: String,
    event: String,
}

impl Out<'_, '_> {
    /// A new resource with its type, id and `meta.source`.
    fn base(&self, resource_type: &str, id: &str) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("resourceType".into(), json!(resource_type));
        r.insert("id".into(), json!(id));
        r.insert("meta".into(), json!({ "source": self.ctx.source_url }));
        r
    }

    fn push(
        &mut self,
        resource_type: &'static str,
        patient: Option<&PatientInfo>,
        json: Map<String, Value>,
    ) {
        let id = json
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.resources.push(FhirResource {
            resource_type,
            id,
            patient_id: patient.map(|p| p.id.clone()),
            json: Value::Object(json),
        });
    }

    /// The Patient of the PID segment `pid` (added to the resources and the refresh list).
    fn patient(&mut self, pid: &Segment<'_, '_>) -> Result<PatientInfo, Hl7Error> {
        let facility = self.ctx.facility.clone();
        let info = patient_identity(pid, 3, &facility)
            .or_else(|| patient_identity(pid, 2, &facility))
            .ok_or_else(|| Hl7Error::Conversion("PID-3 holds no patient identifier".into()))?;
        let json = patient_resource(pid, &info, self.ctx);
        self.resources.push(FhirResource {
            resource_type: "Patient",
            id: info.id.clone(),
            patient_id: Some(info.id.clone()),
            json,
        });
        if !self.patients.contains(&info.key) {
            self.patients.push(info.key.clone());
        }
        Ok(info)
    }

    /// The Patient of the first PID; a message of this kind without one is not converted.
    fn first_patient(&mut self, m: &Message<'_>, kind: &str) -> Result<PatientInfo, Hl7Error> {
        let pid = m
            .segment("PID", 1)
            .ok_or_else(|| Hl7Error::Conversion(format!("{kind} without a PID segment")))?;
        self.patient(&pid)
    }

    /// An id from the message's own identifier `raw` (namespaced by `scope`), or from the
    /// control id and `n` when the message gives none.
    fn id_from(&self, scope: &str, raw: Option<String>, n: usize) -> String {
        match raw {
            Some(v) => fhir_id(&format!("{}-{scope}-{v}", self.ctx.facility)),
            None => fhir_id(&format!("{}-{scope}{n}", self.local)),
        }
    }
}

/// `{ "reference": "Type/id" }`.
fn reference(resource_type: &str, id: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}") })
}

/// A display-only reference to a person named in an XCN field (id^family^given...).
fn person_reference(seg: &Segment<'_, '_>, raw: &str) -> Option<Value> {
    let family = seg.subcomponent_of(raw, 2, 1);
    let given = seg.component_of(raw, 3);
    let display = match (family, given) {
        (Some(f), Some(g)) => format!("{f}, {g}"),
        (Some(f), None) => f.into_owned(),
        (None, Some(g)) => g.into_owned(),
        (None, None) => seg.component_of(raw, 1)?.into_owned(),
    };
    let mut r = json!({ "display": display });
    if let Some(id) = seg.component_of_owned(raw, 1) {
        r["identifier"] = json!({ "value": id });
    }
    Some(r)
}

/// A CE/CWE field of a segment as a CodeableConcept.
fn field_concept(seg: &Segment<'_, '_>, field: usize) -> Option<Value> {
    seg.raw_field(field)
        .filter(|r| !r.is_empty())
        .and_then(|r| codeable_concept(seg, r))
}

struct Ctx<'w> {
    facility: String,
    source_url: String,
    /// The sender's offset from MSH-7 (`+01:00`), applied to times that carry none: HL7 v2
    /// says such times are in the sender's local zone.
    default_offset: Option<String>,
    warnings: &'w mut Vec<String>,
}

/// The offset of a converted dateTime (`+01:00`, `-05:00`), if any.
fn offset_of(dt: &str) -> Option<String> {
    if dt.len() > 19 && (dt.ends_with(|c: char| c.is_ascii_digit())) {
        let tail = &dt[dt.len() - 6..];
        if (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':' {
            return Some(tail.to_string());
        }
    }
    None
}

impl Ctx<'_> {
    fn datetime(&mut self, what: &str, v: Option<String>) -> Option<String> {
        let v = v?;
        let r = hl7_datetime(&v).map(|dt| match (&self.default_offset, dt.len() >= 19) {
            (Some(off), true) if offset_of(&dt).is_none() => format!("{dt}{off}"),
            _ => dt,
        });
        if r.is_none() {
            self.warnings
                .push(format!("{what}: invalid date/time {v:?} left out"));
        }
        r
    }
    fn date(&mut self, what: &str, v: Option<String>) -> Option<String> {
        let v = v?;
        let r = hl7_date(&v);
        if r.is_none() {
            self.warnings
                .push(format!("{what}: invalid date {v:?} left out"));
        }
        r
    }
}

fn patient_resource(pid: &Segment<'_, '_>, info: &PatientInfo, ctx: &mut Ctx<'_>) -> Value {
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Patient"));
    p.insert("id".into(), json!(info.id));
    p.insert("meta".into(), json!({ "source": ctx.source_url }));
    let ids: Vec<Value> = pid
        .repetitions(3)
        .iter()
        .filter_map(|r| cx_identifier(pid, r, &ctx.facility))
        .collect();
    p.insert("identifier".into(), Value::Array(ids));
    p.insert("active".into(), json!(true));
    let names: Vec<Value> = pid
        .repetitions(5)
        .iter()
        .filter_map(|r| {
            let mut n = Map::new();
            if let Some(f) = pid.subcomponent_of(r, 1, 1) {
                n.insert("family".into(), json!(f));
            }
            let given: Vec<String> = [2, 3]
                .iter()
                .filter_map(|&c| pid.component_of_owned(r, c))
                .collect();
            if !given.is_empty() {
                n.insert("given".into(), json!(given));
            }
            if let Some(s) = pid.component_of_owned(r, 4) {
                n.insert("suffix".into(), json!([s]));
            }
            if let Some(s) = pid.component_of_owned(r, 5) {
                n.insert("prefix".into(), json!([s]));
            }
            if n.is_empty() {
                return None;
            }
            let use_ = match pid.component_of(r, 7).as_deref() {
                Some("L") => Some("official"),
                Some("D") => Some("usual"),
                Some("M") => Some("maiden"),
                Some("A") => Some("nickname"),
                _ => None,
            };
            if let Some(u) = use_ {
                n.insert("use".into(), json!(u));
            }
            Some(Value::Object(n))
        })
        .collect();
    if !names.is_empty() {
        p.insert("name".into(), Value::Array(names));
    }
    let mut telecom = Vec::new();
    for (field, use_) in [(13usize, "home"), (14, "work")] {
        for r in pid.repetitions(field) {
            let email = pid.component_of_owned(r, 4);
            let equip = pid.component_of(r, 3);
            if let Some(e) = email.filter(|_| {
                equip.as_deref() == Some("Internet") || pid.component_of(r, 1).is_none()
            }) {
                telecom.push(json!({ "system": "email", "value": e, "use": use_ }));
            } else if let Some(v) = pid.component_of_owned(r, 1) {
                telecom.push(json!({ "system": "phone", "value": v, "use": use_ }));
            }
        }
    }
    if !telecom.is_empty() {
        p.insert("telecom".into(), Value::Array(telecom));
    }
    if let Some(g) = pid.field_str("8") {
        let gender = match g.as_str() {
            "M" => "male",
            "F" => "female",
            "O" | "A" | "N" => "other",
            _ => "unknown",
        };
        p.insert("gender".into(), json!(gender));
    }
    if let Some(b) = ctx.date("PID-7", pid.field_str("7.1")) {
        p.insert("birthDate".into(), json!(b));
    }
    let addresses: Vec<Value> = pid
        .repetitions(11)
        .iter()
        .filter_map(|r| {
            let c = |n| pid.component_of_owned(r, n);
            let mut a = Map::new();
            let lines: Vec<String> = [c(1), c(2)].into_iter().flatten().collect();
            if !lines.is_empty() {
                a.insert("line".into(), json!(lines));
            }
            for (k, n) in [("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)] {
                if let Some(v) = c(n) {
                    a.insert(k.into(), json!(v));
                }
            }
            if a.is_empty() {
                None
            } else {
                Some(Value::Object(a))
            }
        })
        .collect();
    if !addresses.is_empty() {
        p.insert("address".into(), Value::Array(addresses));
    }
    if let Some(cc) = pid.raw_field(16).and_then(|r| codeable_concept(pid, r)) {
        p.insert("maritalStatus".into(), cc);
    }
    match (
        ctx.datetime("PID-29", pid.field_str("29.1")),
        pid.field_str("30"),
    ) {
        (Some(dt), _) => {
            p.insert("deceasedDateTime".into(), json!(dt));
        }
        (None, Some(flag)) if flag == "Y" || flag == "N" => {
            p.insert("deceasedBoolean".into(), json!(flag == "Y"));
        }
        _ => {}
    }
    Value::Object(p)
}

fn encounter_status(event: &str, has_discharge: bool) -> Option<&'static str> {
    Some(match event {
        "A01" | "A02" | "A06" | "A07" | "A12" | "A13" | "A15" | "A16" | "A21" | "A22" | "A26"
        | "A27" => "in-progress",
        "A03" => "finished",
        "A04" | "A10" => "arrived",
        "A05" | "A14" => "planned",
        "A11" | "A27X" | "A38" => "cancelled",
        "A08" | "A09" => {
            if has_discharge {
                "finished"
            } else {
                "in-progress"
            }
        }
        "A28" | "A29" | "A31" | "A40" | "A34" | "A39" | "A47" | "A24" | "A37" => return None,
        _ => "unknown",
    })
}

fn encounter_resource(
    pv1: &Segment<'_, '_>,
    event: &str,
    patient: &PatientInfo,
    ctx: &mut Ctx<'_>,
) -> Option<FhirResource> {
    let start = ctx.datetime("PV1-44", pv1.field_str("44.1"));
    let end = ctx.datetime("PV1-45", pv1.field_str("45.1"));
    let status = encounter_status(event, end.is_some())?;
    let visit = pv1.field_str("19.1");
    let id = match (&visit, &start) {
        (Some(v), _) => fhir_id(&format!("{}-{v}", ctx.facility)),
        (None, Some(s)) => fhir_id(&format!("{}-{s}", patient.id)),
        (None, None) => {
            ctx.warnings.push(
                "PV1 has neither a visit number (PV1-19) nor an admit time: no Encounter".into(),
            );
            return None;
        }
    };
    let mut e = Map::new();
    e.insert("resourceType".into(), json!("Encounter"));
    e.insert("id".into(), json!(id));
    e.insert("meta".into(), json!({ "source": ctx.source_url }));
    if let Some(v) = &visit {
        e.insert(
            "identifier".into(),
            json!([{ "use": "official", "system": format!("urn:aqueduct:hl7v2:{}:visit", fhir_id(&ctx.facility)), "value": v }]),
        );
    }
    e.insert("status".into(), json!(status));
    let class = pv1.field_str("2").unwrap_or_else(|| "U".into());
    let v3 = |code: &str, display: &str| json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display });
    let class_coding = match class.as_str() {
        "I" | "B" => v3("IMP", "inpatient encounter"),
        "O" | "R" => v3("AMB", "ambulatory"),
        "E" => v3("EMER", "emergency"),
        "P" => v3("PRENC", "pre-admission"),
        other => {
            json!({ "system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": other })
        }
    };
    e.insert("class".into(), class_coding);
    e.insert(
        "subject".into(),
        json!({ "reference": format!("Patient/{}", patient.id) }),
    );
    let mut period = Map::new();
    if let Some(s) = start {
        period.insert("start".into(), json!(s));
    }
    if let Some(s) = end {
        period.insert("end".into(), json!(s));
    }
    if !period.is_empty() {
        e.insert("period".into(), Value::Object(period));
    }
    if let Some(loc) = pv1.raw_field(3).filter(|r| !r.is_empty()) {
        let parts: Vec<String> = (1..=4)
            .filter_map(|n| pv1.component_of_owned(loc, n))
            .collect();
        if !parts.is_empty() {
            e.insert(
                "location".into(),
                json!([{ "location": { "display": parts.join(" ") } }]),
            );
        }
    }
    let mut participants = Vec::new();
    for (field, code) in [(7usize, "ATND"), (8, "REF"), (17, "ADM")] {
        for r in pv1.repetitions(field) {
            let family = pv1.subcomponent_of(r, 2, 1);
            let given = pv1.component_of(r, 3);
            let display = match (family, given) {
                (Some(f), Some(g)) => format!("{f}, {g}"),
                (Some(f), None) => f.into_owned(),
                (None, Some(g)) => g.into_owned(),
                (None, None) => match pv1.component_of(r, 1) {
                    Some(id) => id.into_owned(),
                    None => continue,
                },
            };
            let mut ind = json!({ "display": display });
            if let Some(id) = pv1.component_of_owned(r, 1) {
                ind["identifier"] = json!({ "value": id });
            }
            participants.push(json!({
                "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code }] }],
                "individual": ind,
            }));
        }
    }
    if !participants.is_empty() {
        e.insert("participant".into(), Value::Array(participants));
    }
    Some(FhirResource {
        resource_type: "Encounter",
        id,
        patient_id: Some(patient.id.clone()),
        json: Value::Object(e),
    })
}

fn parse_decimal(s: &str) -> Option<Value> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(json!(i));
    }
    serde_json::Number::from_f64(f).map(Value::Number)
}

fn quantity(value: Value, unit: &Unit) -> Map<String, Value> {
    let mut q = Map::new();
    q.insert("value".into(), value);
    if let Some((code, text, system)) = unit {
        if let Some(u) = text.clone().or_else(|| code.clone()) {
            q.insert("unit".into(), json!(u));
        }
        if let Some(c) = code {
            let ucum = matches!(system.as_deref(), Some("UCUM") | Some("ISO+") | None);
            if ucum {
                q.insert("system".into(), json!("http://unitsofmeasure.org"));
            } else if let Some(sys) = system.as_deref().and_then(coding_system) {
                q.insert("system".into(), json!(sys));
            }
            q.insert("code".into(), json!(c));
        }
    }
    q
}

/// Sets value[x] of an Observation from OBX-2/OBX-5/OBX-6.
fn observation_value(obx: &Segment<'_, '_>, obs: &mut Map<String, Value>, ctx: &mut Ctx<'_>) {
    let vt = obx.field_str("2").unwrap_or_default();
    let reps = obx.repetitions(5);
    let Some(&first) = reps.first() else {
        return;
    };
    let unit = obx.raw_field(6).filter(|r| !r.is_empty()).map(|r| {
        (
            obx.component_of_owned(r, 1),
            obx.component_of_owned(r, 2),
            obx.component_of_owned(r, 3),
        )
    });
    let whole = |obx: &Segment<'_, '_>, r: &str| -> String {
        crate::message::unescape(r, &obx_delims(obx)).into_owned()
    };
    let as_string = |obs: &mut Map<String, Value>| {
        let text: Vec<String> = reps.iter().map(|r| whole(obx, r)).collect();
        obs.insert("valueString".into(), json!(text.join("\n")));
    };
    match vt.as_str() {
        "NM" => match parse_decimal(&whole(obx, first)) {
            Some(v) => {
                obs.insert("valueQuantity".into(), Value::Object(quantity(v, &unit)));
            }
            None => {
                ctx.warnings.push(format!(
                    "OBX-5 {:?} is not a number (NM): kept as a string",
                    whole(obx, first)
                ));
                as_string(obs);
            }
        },
        "ST" | "TX" | "FT" | "" => as_string(obs),
        "CE" | "CWE" | "CNE" | "CF" => {
            if let Some(cc) = codeable_concept(obx, first) {
                obs.insert("valueCodeableConcept".into(), cc);
            }
        }
        "DT" | "TS" | "DTM" => {
            let raw = obx.component_of_owned(first, 1);
            let parsed = if vt == "DT" {
                ctx.date("OBX-5", raw)
            } else {
                ctx.datetime("OBX-5", raw)
            };
            if let Some(dt) = parsed {
                obs.insert("valueDateTime".into(), json!(dt));
            }
        }
        "TM" => {
            let t = whole(obx, first);
            let d: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
            if d.len() >= 4 {
                let ss = if d.len() >= 6 { &d[4..6] } else { "00" };
                obs.insert(
                    "valueTime".into(),
                    json!(format!("{}:{}:{ss}", &d[..2], &d[2..4])),
                );
            } else {
                as_string(obs);
            }
        }
        "SN" => {
            let c = |n| obx.component_of_owned(first, n);
            let comparator = c(1).unwrap_or_default();
            let n1 = c(2).as_deref().and_then(parse_decimal);
            let sep = c(3).unwrap_or_default();
            let n2 = c(4).as_deref().and_then(parse_decimal);
            match (sep.as_str(), n1, n2) {
                ("", Some(v), None)
                    if matches!(comparator.as_str(), "" | "=" | "<" | ">" | "<=" | ">=") =>
                {
                    let mut q = quantity(v, &unit);
                    if !matches!(comparator.as_str(), "" | "=") {
                        q.insert("comparator".into(), json!(comparator));
                    }
                    obs.insert("valueQuantity".into(), Value::Object(q));
                }
                ("-", Some(a), Some(b)) => {
                    obs.insert(
                        "valueRange".into(),
                        json!({ "low": quantity(a, &unit), "high": quantity(b, &unit) }),
                    );
                }
                (":" | "/", Some(a), Some(b)) => {
                    obs.insert(
                        "valueRatio".into(),
                        json!({ "numerator": { "value": a }, "denominator": { "value": b } }),
                    );
                }
                _ => {
                    let text = [c(1), c(2), c(3), c(4)]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("");
                    ctx.warnings
                        .push(format!("SN value {text:?} kept as a string"));
                    obs.insert("valueString".into(), json!(text));
                }
            }
        }
        other => {
            ctx.warnings.push(format!(
                "OBX value type {other:?} not mapped: kept as a string"
            ));
            as_string(obs);
        }
    }
}

fn obx_delims(seg: &Segment<'_, '_>) -> crate::message::Delimiters {
    seg.delimiters()
}

fn result_status(code: Option<&str>) -> &'static str {
    match code {
        Some("P") | Some("R") | Some("S") => "preliminary",
        Some("C") => "corrected",
        Some("X") => "cancelled",
        Some("D") | Some("W") => "entered-in-error",
        Some("I") | Some("O") => "registered",
        Some("A") => "amended",
        _ => "final",
    }
}

fn reference_range(text: &str, unit: &Unit) -> Value {
    let mut r = Map::new();
    if let Some((lo, hi)) = text.split_once('-').filter(|(a, _)| !a.trim().is_empty()) {
        if let (Some(l), Some(h)) = (parse_decimal(lo), parse_decimal(hi)) {
            r.insert("low".into(), Value::Object(quantity(l, unit)));
            r.insert("high".into(), Value::Object(quantity(h, unit)));
        }
    }
    r.insert("text".into(), json!(text));
    Value::Object(r)
}

/// Converts a parsed message. Unsupported message types are an error (recorded on the
/// message by the listener); oddities inside a supported message are warnings.
pub fn convert(m: &Message<'_>) -> Result<Converted, Hl7Error> {
    let facility = facility_of(m);
    let app = m.get("MSH-3.1").map(Cow::into_owned).unwrap_or_default();
    let control = m
        .control_id()
        .map(Cow::into_owned)
        .ok_or(Hl7Error::MissingField { field: "MSH-10" })?;
    let message_type = m
        .message_type()
        .ok_or(Hl7Error::MissingField { field: "MSH-9" })?;
    let kind = m.get("MSH-9.1").map(Cow::into_owned).unwrap_or_default();
    let event = m
        .get("MSH-9.2")
        .or_else(|| m.get("EVN-1"))
        .map(Cow::into_owned)
        .unwrap_or_default();
    let source_url = format!("mllp://{}/{}", sender_of(m), control);
    let connection = connection_of(m);
    let mut warnings = Vec::new();
    let default_offset = m
        .get("MSH-7.1")
        .and_then(|t| hl7_datetime(&t))
        .and_then(|t| offset_of(&t));
    let mut ctx = Ctx {
        facility: facility.clone(),
        source_url: source_url.clone(),
        default_offset,
        warnings: &mut warnings,
    };
    let mut resources = Vec::new();
    let mut merges = Vec::new();
    let mut identity_events = Vec::new();
    let mut patients: Vec<String> = Vec::new();
    let local = format!("{app}-{control}");

    match kind.as_str() {
        "ADT" => {
            let segs: Vec<Segment<'_, '_>> = m.all_segments().collect();
            let mut current: Option<PatientInfo> = None;
            for seg in &segs {
                match seg.name() {
                    "PID" => {
                        let info = patient_identity(seg, 3, &facility)
                            .or_else(|| patient_identity(seg, 2, &facility))
                            .ok_or_else(|| {
                                Hl7Error::Conversion("PID-3 holds no patient identifier".into())
                            })?;
                        let json = patient_resource(seg, &info, &mut ctx);
                        resources.push(FhirResource {
                            resource_type: "Patient",
                            id: info.id.clone(),
                            patient_id: Some(info.id.clone()),
                            json,
                        });
                        patients.push(info.key.clone());
                        current = Some(info);
                    }
                    "PV1" => {
                        if let Some(p) = &current {
                            if let Some(enc) = encounter_resource(seg, &event, p, &mut ctx) {
                                resources.push(enc);
                            }
                        }
                    }
                    "MRG" if identity::is_merge(&event) => {
                        let Some(p) = &current else {
                            return Err(Hl7Error::Conversion("MRG without a preceding PID".into()));
                        };
                        let prior = patient_identity(seg, 1, &facility).ok_or_else(|| {
                            Hl7Error::Conversion("MRG-1 holds no prior patient identifier".into())
                        })?;
                        if prior.id == p.id {
                            ctx.warnings
                                .push("MRG-1 names the surviving patient itself".into());
                            continue;
                        }
                        if let Some(Value::Object(surv)) = resources
                            .iter_mut()
                            .rev()
                            .find(|r| r.resource_type == "Patient" && r.id == p.id)
                            .map(|r| &mut r.json)
                        {
                            let links = surv.entry("link").or_insert_with(|| json!([]));
                            if let Value::Array(a) = links {
                                a.push(json!({ "other": { "reference": format!("Patient/{}", prior.id) }, "type": "replaces" }));
                            }
                        }
                        patients.push(prior.key.clone());
                        merges.push(Merge {
                            surviving_id: p.id.clone(),
                            prior_id: prior.id,
                            prior_identifier: prior.identifier,
                        });
                    }
                    _ => {}
                }
            }
            if current.is_none() {
                return Err(Hl7Error::Conversion(format!(
                    "{message_type} without a PID segment"
                )));
            }
            let mut out = Out {
                ctx: &mut ctx,
                resources: &mut resources,
                patients: &mut patients,
                local: local.clone(),
                event: event.clone(),
            };
            identity::record(&mut out, &merges, &mut identity_events);
            financial::coverages(m, &mut out)?;
        }
        "ORU" | "OUL" => {
            let pid = m
                .segment("PID", 1)
                .ok_or_else(|| Hl7Error::Conversion("ORU without a PID segment".into()))?;
            let info = patient_identity(&pid, 3, &facility)
                .or_else(|| patient_identity(&pid, 2, &facility))
                .ok_or_else(|| Hl7Error::Conversion("PID-3 holds no patient identifier".into()))?;
            let json = patient_resource(&pid, &info, &mut ctx);
            resources.push(FhirResource {
                resource_type: "Patient",
                id: info.id.clone(),
                patient_id: Some(info.id.clone()),
                json,
            });
            patients.push(info.key.clone());
            let mut info = info;
            let mut subject = json!({ "reference": format!("Patient/{}", info.id) });
            let mut report: Option<ReportDraft> = None;
            let mut reports = Vec::new();
            let mut obr_n = 0;
            let mut obx_n = 0;
            // the order (OBR-3 filler, else OBR-2 placer) of the current OBR, and how many times
            // each (code, sub-id) was seen under it
            let mut order: Option<String> = None;
            let mut seen_codes: std::collections::HashMap<String, usize> =
                std::collections::HashMap::new();
            let mut pid_n = 0;
            let mut specimens: Vec<(String, Value)> = Vec::new();
            for seg in m.all_segments() {
                match seg.name() {
                    "PID" => {
                        // a further PATIENT_RESULT group: results that follow are this patient's
                        pid_n += 1;
                        if pid_n == 1 {
                            continue;
                        }
                        let Some(next) = patient_identity(&seg, 3, &facility)
                            .or_else(|| patient_identity(&seg, 2, &facility))
                        else {
                            return Err(Hl7Error::Conversion(format!(
                                "PID #{pid_n} holds no patient identifier"
                            )));
                        };
                        if let Some(r) = report.take() {
                            reports.push(r);
                        }
                        order = None;
                        let json = patient_resource(&seg, &next, &mut ctx);
                        resources.push(FhirResource {
                            resource_type: "Patient",
                            id: next.id.clone(),
                            patient_id: Some(next.id.clone()),
                            json,
                        });
                        patients.push(next.key.clone());
                        subject = json!({ "reference": format!("Patient/{}", next.id) });
                        info = next;
                    }
                    "OBR" => {
                        if let Some(r) = report.take() {
                            reports.push(r);
                        }
                        obr_n += 1;
                        seen_codes.clear();
                        order = [3usize, 2].iter().find_map(|&f| {
                            let id = seg.field_str(&format!("{f}.1"))?;
                            Some(match seg.field_str(&format!("{f}.2")) {
                                Some(ns) => format!("{id}-{ns}"),
                                None => id,
                            })
                        });
                        let id = match &order {
                            Some(o) => fhir_id(o),
                            None => fhir_id(&format!("{app}-{control}-r{obr_n}")),
                        };
                        let mut d = Map::new();
                        d.insert("resourceType".into(), json!("DiagnosticReport"));
                        d.insert("id".into(), json!(id));
                        d.insert("meta".into(), json!({ "source": source_url }));
                        let mut ids = Vec::new();
                        for (f, t) in [(2, "PLAC"), (3, "FILL")] {
                            if let Some(v) = seg.field_str(&format!("{f}.1")) {
                                ids.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }, "value": v }));
                            }
                        }
                        if !ids.is_empty() {
                            d.insert("identifier".into(), Value::Array(ids));
                        }
                        d.insert(
                            "status".into(),
                            json!(result_status(seg.field_str("25").as_deref())),
                        );
                        if let Some(sect) = seg.field_str("24") {
                            d.insert("category".into(), json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": sect }] }]));
                        }
                        let code = seg
                            .raw_field(4)
                            .and_then(|r| codeable_concept(&seg, r))
                            .unwrap_or_else(|| json!({ "text": "unknown" }));
                        d.insert("code".into(), code);
                        d.insert("subject".into(), subject.clone());
                        let eff = ctx.datetime("OBR-7", seg.field_str("7.1"));
                        if let Some(e) = &eff {
                            d.insert("effectiveDateTime".into(), json!(e));
                        }
                        if let Some(i) = seg.field_str("22.1").and_then(|v| hl7_instant(&v)) {
                            d.insert("issued".into(), json!(i));
                        }
                        report = Some(ReportDraft {
                            json: d,
                            results: Vec::new(),
                            effective: eff,
                            patient_id: info.id.clone(),
                        });
                    }
                    "OBX" if matches!(seg.field_str("2").as_deref(), Some("ED") | Some("RP")) => {
                        // an embedded document: the report's presented form, not a value
                        obx_n += 1;
                        let Some(att) = documents::obx_attachment(&seg) else {
                            ctx.warnings
                                .push(format!("OBX {obx_n}: an empty ED value left out"));
                            continue;
                        };
                        match report.as_mut() {
                            Some(r) => {
                                if let Value::Array(a) =
                                    r.json.entry("presentedForm").or_insert_with(|| json!([]))
                                {
                                    a.push(att);
                                }
                            }
                            None => {
                                let id = fhir_id(&format!("{app}-{control}-doc{obx_n}"));
                                let mut d = Map::new();
                                d.insert("resourceType".into(), json!("DocumentReference"));
                                d.insert("id".into(), json!(id));
                                d.insert("meta".into(), json!({ "source": source_url }));
                                d.insert("status".into(), json!("current"));
                                if let Some(code) =
                                    seg.raw_field(3).and_then(|r| codeable_concept(&seg, r))
                                {
                                    d.insert("type".into(), code);
                                }
                                d.insert("subject".into(), subject.clone());
                                d.insert("content".into(), json!([{ "attachment": att }]));
                                resources.push(FhirResource {
                                    resource_type: "DocumentReference",
                                    id,
                                    patient_id: Some(info.id.clone()),
                                    json: Value::Object(d),
                                });
                            }
                        }
                    }
                    "SPM" => {
                        let id = match seg.field_str("2.1").or_else(|| seg.field_str("2.2.1")) {
                            Some(v) => fhir_id(&format!("{facility}-specimen-{v}")),
                            None => fhir_id(&format!("{app}-{control}-spm{}", specimens.len() + 1)),
                        };
                        let mut sp = Map::new();
                        sp.insert("resourceType".into(), json!("Specimen"));
                        sp.insert("id".into(), json!(id));
                        sp.insert("meta".into(), json!({ "source": source_url }));
                        if let Some(v) = seg.field_str("2.1") {
                            sp.insert("identifier".into(), json!([{ "value": v }]));
                        }
                        if let Some(t) = seg.raw_field(4).and_then(|r| codeable_concept(&seg, r)) {
                            sp.insert("type".into(), t);
                        }
                        sp.insert("subject".into(), subject.clone());
                        if let Some(at) = ctx.datetime("SPM-17", seg.field_str("17.1")) {
                            sp.insert("collection".into(), json!({ "collectedDateTime": at }));
                        }
                        specimens.push((
                            info.id.clone(),
                            json!({ "reference": format!("Specimen/{id}") }),
                        ));
                        resources.push(FhirResource {
                            resource_type: "Specimen",
                            id,
                            patient_id: Some(info.id.clone()),
                            json: Value::Object(sp),
                        });
                    }
                    "OBX" => {
                        obx_n += 1;
                        let id = match &order {
                            Some(o) => {
                                let mut key = format!(
                                    "{o}-{}",
                                    seg.field_str("3.1").unwrap_or_else(|| "obx".into())
                                );
                                if let Some(sub) = seg.field_str("4") {
                                    key.push('-');
                                    key.push_str(&sub);
                                }
                                let k = seen_codes.entry(key.clone()).or_insert(0);
                                *k += 1;
                                if *k > 1 {
                                    key.push_str(&format!("-{k}"));
                                }
                                fhir_id(&key)
                            }
                            None => fhir_id(&format!("{app}-{control}-{obx_n}")),
                        };
                        let mut o = Map::new();
                        o.insert("resourceType".into(), json!("Observation"));
                        o.insert("id".into(), json!(id));
                        o.insert("meta".into(), json!({ "source": source_url }));
                        o.insert(
                            "status".into(),
                            json!(match result_status(seg.field_str("11").as_deref()) {
                                "registered" => "registered",
                                s => s,
                            }),
                        );
                        o.insert(
                            "category".into(),
                            json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory" }] }]),
                        );
                        let code = seg
                            .raw_field(3)
                            .and_then(|r| codeable_concept(&seg, r))
                            .unwrap_or_else(|| json!({ "text": "unknown" }));
                        o.insert("code".into(), code);
                        o.insert("subject".into(), subject.clone());
                        let eff = ctx
                            .datetime("OBX-14", seg.field_str("14.1"))
                            .or_else(|| report.as_ref().and_then(|r| r.effective.clone()));
                        if let Some(e) = eff {
                            o.insert("effectiveDateTime".into(), json!(e));
                        }
                        observation_value(&seg, &mut o, &mut ctx);
                        let unit = seg.raw_field(6).filter(|r| !r.is_empty()).map(|r| {
                            (
                                seg.component_of_owned(r, 1),
                                seg.component_of_owned(r, 2),
                                seg.component_of_owned(r, 3),
                            )
                        });
                        if let Some(rr) = seg.field_str("7") {
                            o.insert(
                                "referenceRange".into(),
                                json!([reference_range(&rr, &unit)]),
                            );
                        }
                        let interp: Vec<Value> = seg
                            .repetitions(8)
                            .iter()
                            .filter_map(|r| seg.component_of_owned(r, 1))
                            .map(|c| json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": c }] }))
                            .collect();
                        if !interp.is_empty() {
                            o.insert("interpretation".into(), Value::Array(interp));
                        }
                        if let Some(r) = report.as_mut() {
                            r.results
                                .push(json!({ "reference": format!("Observation/{id}") }));
                        }
                        resources.push(FhirResource {
                            resource_type: "Observation",
                            id,
                            patient_id: Some(info.id.clone()),
                            json: Value::Object(o),
                        });
                    }
                    _ => {}
                }
            }
            if let Some(r) = report.take() {
                reports.push(r);
            }
            for ReportDraft {
                json: mut d,
                results: refs,
                patient_id,
                ..
            } in reports
            {
                if !refs.is_empty() {
                    d.insert("result".into(), Value::Array(refs));
                }
                let own: Vec<Value> = specimens
                    .iter()
                    .filter(|(p, _)| *p == patient_id)
                    .map(|(_, r)| r.clone())
                    .collect();
                if !own.is_empty() {
                    d.insert("specimen".into(), Value::Array(own));
                }
                let id = d
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                resources.push(FhirResource {
                    resource_type: "DiagnosticReport",
                    id,
                    patient_id: Some(patient_id),
                    json: Value::Object(d),
                });
            }
        }
        other => {
            let mut out = Out {
                ctx: &mut ctx,
                resources: &mut resources,
                patients: &mut patients,
                local: local.clone(),
                event: event.clone(),
            };
            match other {
                "ORM" | "OML" | "OMG" => orders::service_requests(m, &mut out)?,
                "REF" | "RRI" => orders::referral(m, &mut out)?,
                "MDM" => documents::document_references(m, &mut out)?,
                "SIU" => scheduling::appointments(m, &mut out)?,
                "VXU" => vaccination::immunizations(m, &mut out)?,
                "RDE" | "RDS" => pharmacy::medications(m, &kind, &mut out)?,
                "DFT" | "BAR" => financial::accounts(m, &kind, &mut out)?,
                "PPR" => problems::conditions(m, &mut out)?,
                _ => {
                    return Err(Hl7Error::Conversion(format!(
                        "message type {message_type} is not converted (ADT, ORU, OUL, ORM, OML, OMG, MDM, SIU, VXU, RDE, RDS, DFT, BAR, REF and PPR are)"
                    )));
                }
            }
        }
    }
    patients.dedup();
    let refresh = patients
        .into_iter()
        .map(|patient_key| RefreshRequest {
            patient_key: Some(patient_key),
            connection: None,
            reason: format!("hl7:{message_type}"),
            source: source_url.clone(),
        })
        .collect();
    Ok(Converted {
        connection,
        source_url,
        message_type,
        resources,
        merges,
        identity_events,
        refresh,
        warnings,
    })
}

/// Decodes, parses and converts message bytes (MSH-18 honoured, BOM skipped).
pub fn convert_bytes(bytes: &[u8]) -> Result<Converted, Hl7Error> {
    let text = decode_text(bytes)?;
    let m = Message::parse(&text)?;
    convert(&m)
}

pub use crate::persist::{Applied, apply, resources_to_write};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(hl7_datetime("2024").as_deref(), Some("2024"));
        assert_eq!(hl7_datetime("202402").as_deref(), Some("2024-02"));
        assert_eq!(hl7_datetime("20240229").as_deref(), Some("2024-02-29"));
        assert_eq!(hl7_datetime("20230229"), None);
        assert_eq!(
            hl7_datetime("202402011230").as_deref(),
            Some("2024-02-01T12:30:00")
        );
        assert_eq!(
            hl7_datetime("20240201123045.123-0500").as_deref(),
            Some("2024-02-01T12:30:45.123-05:00")
        );
        assert_eq!(
            hl7_datetime("20240201123045+0100").as_deref(),
            Some("2024-02-01T12:30:45+01:00")
        );
        assert_eq!(hl7_datetime("20241301"), None);
        assert_eq!(hl7_datetime("2024020125"), None);
        assert_eq!(hl7_datetime("yesterday"), None);
        assert_eq!(hl7_datetime(""), None);
        assert_eq!(hl7_date("19800101").as_deref(), Some("1980-01-01"));
        assert_eq!(hl7_date("198001011200").as_deref(), Some("1980-01-01"));
    }

    #[test]
    fn ids() {
        assert_eq!(fhir_id("HOSP-123"), "HOSP-123");
        let a = fhir_id("HOSP 123");
        let b = fhir_id("HOSP_123");
        assert_ne!(a, b);
        assert!(a.starts_with("HOSP-123-"));
        assert!(fhir_id(&"x".repeat(100)).len() <= 64);
        assert!(fhir_id("").starts_with('h'));
    }
}
