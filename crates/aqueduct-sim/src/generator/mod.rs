//! The synthetic population. Generation is lazy and per patient: a patient's record is built
//! on first access from (seed, patient index, personality) and then kept, so start-up with
//! thousands of patients costs only the patient ids. Resources are serialized once, at
//! generation or update time, so serving a page is copying bytes.

mod clinical;
pub mod person;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::personality::{IdStyle, Personality};
pub use clinical::binary_resource_json;

/// Types that live outside any patient compartment and are shared by all patients.
pub const SHARED_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
];
/// Medication exists only for personalities with `medication_references`.
const SHARED_COUNTS: &[usize] = &[20, 20, 5, 5, 8];

/// Start of the simulated clinical history (2019-01-01) and of "now" in generated data
/// (2025-06-01), in epoch milliseconds. Generated data never depends on the wall clock.
pub const HISTORY_START_MS: i64 = 1_546_300_800_000;
pub const HISTORY_END_MS: i64 = 1_748_736_000_000;

pub fn mix(parts: &[u64]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.to_le_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn str_hash(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |a, b| {
        (a ^ b as u64).wrapping_mul(1099511628211)
    })
}

/// What a search can filter on, extracted once when a version is written.
#[derive(Debug, Default, Clone)]
pub struct SearchIndex {
    pub category: Vec<String>,
    /// Both `code` and `system|code` forms (also identifiers for Patient, class for Encounter).
    pub code: Vec<String>,
    pub status: Option<String>,
    pub intent: Option<String>,
    /// Clinically relevant date (YYYY-MM-DD...) for `date`/`created`/`birthdate`.
    pub date: Option<String>,
    /// Lowercase names, Patient only.
    pub names: Vec<String>,
    /// Outgoing references by search parameter name, as `Type/id`.
    pub refs: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
pub struct Version {
    pub vid: u32,
    pub last_updated_ms: i64,
    pub deleted: bool,
    pub json: Arc<[u8]>,
    pub index: Arc<SearchIndex>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub rtype: &'static str,
    pub id: String,
    pub versions: Vec<Version>,
    /// The evolve step that created it; 0 for the initial population.
    pub born_step: u64,
}

impl Resource {
    /// The version a client sees; with `stale` the world is frozen at the initial population.
    pub fn visible(&self, stale: bool) -> Option<&Version> {
        if stale {
            if self.born_step > 0 {
                return None;
            }
            return self.versions.first();
        }
        self.versions.last()
    }
}

#[derive(Debug, Clone)]
pub struct Binary {
    pub id: String,
    pub content_type: &'static str,
    pub data: Arc<[u8]>,
}

/// One patient's compartment: `resources[0]` is the Patient.
#[derive(Debug, Clone)]
pub struct PatientRecord {
    pub index: usize,
    pub patient_id: String,
    pub resources: Vec<Resource>,
    pub binaries: Vec<Binary>,
    next_n: u64,
}

/// Everything generation needs to know about the server it generates for.
pub struct GenContext {
    pub seed: u64,
    pub base_url: String,
    /// Base of next links and document URLs (the personality's `link_base_path` on the same
    /// origin; `base_url` when unset).
    pub link_base: String,
    /// Origin of the second listener that serves documents (`document_host`).
    pub docs_origin: String,
    pub personality: Arc<Personality>,
    pub mean_resources: usize,
    pub patients: usize,
    pub large_patients: Vec<usize>,
    pub shared_ids: Vec<(&'static str, Vec<String>)>,
}

impl GenContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seed: u64,
        base_url: String,
        link_base: String,
        docs_origin: String,
        personality: Arc<Personality>,
        mean_resources: usize,
        patients: usize,
        large_patients: Vec<usize>,
    ) -> Self {
        let shared_ids = SHARED_TYPES
            .iter()
            .zip(SHARED_COUNTS)
            .map(|(t, c)| {
                let abbr = abbr(t);
                let c = if *t == "Medication" && !personality.medication_references {
                    0
                } else {
                    *c
                };
                (
                    *t,
                    (0..c)
                        .map(|n| {
                            let id =
                                resource_id(personality.id_style, seed, abbr, usize::MAX, n as u64);
                            long_id(&personality, seed, t, id, n as u64)
                        })
                        .collect(),
                )
            })
            .collect();
        GenContext {
            seed,
            base_url,
            link_base,
            docs_origin,
            personality,
            mean_resources,
            patients,
            large_patients,
            shared_ids,
        }
    }

    /// Is this a shared (non-compartment) type with instances on this server?
    pub fn is_shared(&self, rtype: &str) -> bool {
        !self.shared(rtype).is_empty()
    }

    /// Shared types with instances on this server.
    pub fn shared_types(&self) -> Vec<&'static str> {
        self.shared_ids
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(t, _)| *t)
            .collect()
    }

    /// The id of the n-th resource of a type in patient `index`'s record.
    pub fn id(&self, rtype: &str, index: usize, n: u64) -> String {
        let id = resource_id(self.personality.id_style, self.seed, abbr(rtype), index, n);
        long_id(&self.personality, self.seed, rtype, id, n)
    }

    /// The id the server's own Patient resource has for patient `index`: the population id,
    /// or an alias only this server uses (`patient_alias`).
    pub fn patient_resource_id(&self, index: usize) -> String {
        let pid = patient_id(self.personality.id_style, self.seed, index);
        if self.personality.patient_alias {
            format!("m{:016x}", mix(&[self.seed, index as u64, 0xa11a5]))
        } else {
            pid
        }
    }

    /// The Patients a member Patient links to (`linked_patients`).
    pub fn linked_ids(&self, index: usize) -> Vec<String> {
        (0..self.personality.linked_patients)
            .map(|k| self.id("Patient", index, 700_000 + k as u64))
            .collect()
    }

    /// Every id under which a Patient of record `index` is found.
    pub fn patient_keys(&self, index: usize) -> Vec<String> {
        let mut keys = vec![patient_id(self.personality.id_style, self.seed, index)];
        let own = self.patient_resource_id(index);
        if !keys.contains(&own) {
            keys.push(own);
        }
        keys.extend(self.linked_ids(index));
        keys
    }

    /// Where a document's content is served from.
    pub fn document_url(&self, binary_id: &str) -> String {
        let p = &self.personality;
        if p.document_host {
            format!("{}/content/{binary_id}", self.docs_origin)
        } else if p.document_paths {
            format!("{}/documents/{binary_id}", self.link_base)
        } else {
            format!("{}/Binary/{binary_id}", self.link_base)
        }
    }

    pub fn total_patients(&self) -> usize {
        self.patients + self.large_patients.len()
    }

    pub fn shared(&self, rtype: &str) -> &[String] {
        self.shared_ids
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    fn history_size(&self, index: usize) -> usize {
        if index >= self.patients {
            return self
                .large_patients
                .get(index - self.patients)
                .copied()
                .unwrap_or(0);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, index as u64, 0x5153]));
        let f: f64 = rng.random_range(0.5..1.5);
        ((self.mean_resources as f64) * f).round() as usize
    }
}

pub fn abbr(rtype: &str) -> &'static str {
    match rtype {
        "Patient" => "pat",
        "Encounter" => "enc",
        "Condition" => "cond",
        "Observation" => "obs",
        "MedicationRequest" => "medrx",
        "AllergyIntolerance" => "alg",
        "Immunization" => "imm",
        "Procedure" => "proc",
        "DiagnosticReport" => "dr",
        "DocumentReference" => "doc",
        "CarePlan" => "cp",
        "CareTeam" => "ct",
        "Goal" => "goal",
        "Coverage" => "cov",
        "ExplanationOfBenefit" => "eob",
        "Binary" => "bin",
        "Practitioner" => "prac",
        "PractitionerRole" => "role",
        "Organization" => "org",
        "Location" => "loc",
        "Group" => "grp",
        "Medication" => "med",
        "MedicationAdministration" => "mad",
        "MedicationStatement" => "mst",
        "ServiceRequest" => "sr",
        "Provenance" => "prv",
        _ => "res",
    }
}

const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

pub fn resource_id(style: IdStyle, seed: u64, abbr: &str, index: usize, n: u64) -> String {
    let shared = index == usize::MAX;
    match style {
        IdStyle::Readable if shared => format!("{abbr}-{n:03}"),
        IdStyle::Readable => format!("{abbr}-{index}-{n}"),
        IdStyle::Numeric if shared => format!("{}", 900_000 + n),
        IdStyle::Numeric => format!("{}", (index as u64 + 1) * 1_000_000 + n),
        IdStyle::Prefixed if shared => format!("a-1.{}-{n}", abbr.to_uppercase()),
        IdStyle::Prefixed => format!("a-1.{}-{index}x{n}", abbr.to_uppercase()),
        IdStyle::Opaque => {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(abbr.as_bytes());
            h.update((index as u64).to_le_bytes());
            h.update(n.to_le_bytes());
            let d = h.finalize();
            let mut s = String::from("e");
            s.extend(d.iter().take(21).map(|b| B32[(*b & 31) as usize] as char));
            s
        }
    }
}

/// Pad an id to 70+ characters (every tenth to 200) for types in `long_ids`.
fn long_id(p: &Personality, seed: u64, rtype: &str, id: String, n: u64) -> String {
    if !p.has_long_ids(rtype) {
        return id;
    }
    let want = if n % 10 == 0 {
        200
    } else {
        70 + (mix(&[seed, n, 0x1d]) % 24) as usize
    };
    let mut out = id;
    out.push('-');
    let mut k = 0u64;
    while out.len() < want {
        out.push_str(&format!("{:016x}", mix(&[seed, n, str_hash(rtype), k])));
        k += 1;
    }
    out.truncate(want);
    out
}

/// Append `/_history/1` to every literal reference (`versioned_references`).
fn version_references(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    let literal = !s.starts_with('#') && !s.starts_with("urn:");
                    if literal && !s.contains("/_history/") && s.matches('/').count() >= 1 {
                        s.push_str("/_history/1");
                    }
                } else {
                    version_references(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(version_references),
        _ => {}
    }
}

/// Personality-wide touches applied to every generated resource before it is serialized.
fn finish(ctx: &GenContext, mut v: Value) -> Value {
    if ctx.personality.versioned_references {
        version_references(&mut v);
    }
    v
}

pub fn patient_id(style: IdStyle, seed: u64, index: usize) -> String {
    match style {
        IdStyle::Readable => format!("pat-{index:05}"),
        IdStyle::Numeric => format!("{}", 12_724_066 + index as u64),
        IdStyle::Prefixed => format!("a-1.E-{}", 10_000 + index),
        IdStyle::Opaque => resource_id(style, seed, "pat", index, 0),
    }
}

pub fn ms_to_instant(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Stamp meta and serialize: the bytes served from now on.
fn write_version(
    mut value: Value,
    rtype: &str,
    id: &str,
    vid: u32,
    ms: i64,
    index: SearchIndex,
) -> Version {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("resourceType".into(), Value::String(rtype.into()));
        obj.insert("id".into(), Value::String(id.into()));
        obj.insert(
            "meta".into(),
            json!({"versionId": vid.to_string(), "lastUpdated": ms_to_instant(ms)}),
        );
    }
    let json: Arc<[u8]> = serde_json::to_vec(&value).unwrap_or_default().into();
    Version {
        vid,
        last_updated_ms: ms,
        deleted: false,
        json,
        index: Arc::new(index),
    }
}

/// The shared, non-compartment resources (practitioners, organizations, locations).
pub fn shared_resources(ctx: &GenContext) -> Vec<Resource> {
    let mut out = Vec::new();
    for (rtype, ids) in &ctx.shared_ids {
        for (n, id) in ids.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(&[ctx.seed, n as u64, str_hash(rtype)]));
            let (value, index) = clinical::shared(ctx, rtype, n, &mut rng);
            let value = finish(ctx, value);
            let ms = HISTORY_START_MS + rng.random_range(0..86_400_000i64 * 30);
            out.push(Resource {
                rtype,
                id: id.clone(),
                versions: vec![write_version(value, rtype, id, 1, ms, index)],
                born_step: 0,
            });
        }
    }
    out
}

/// Relative weights of the compartment types in a history.
const WEIGHTS: &[(&str, u32)] = &[
    ("Encounter", 8),
    ("Condition", 5),
    ("Observation", 50),
    ("MedicationRequest", 8),
    ("AllergyIntolerance", 1),
    ("Immunization", 3),
    ("Procedure", 5),
    ("DiagnosticReport", 6),
    ("DocumentReference", 5),
    ("CarePlan", 1),
    ("CareTeam", 1),
    ("Goal", 1),
    ("Coverage", 1),
    ("ExplanationOfBenefit", 12),
    ("MedicationAdministration", 4),
    ("MedicationStatement", 3),
    ("ServiceRequest", 3),
    ("Provenance", 4),
];

/// Build patient `index`'s record as this personality holds it, then replay evolve steps.
pub fn generate_patient(ctx: &GenContext, index: usize, steps: &[(u64, i64)]) -> PatientRecord {
    let p = &ctx.personality;
    let style = p.id_style;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[ctx.seed, index as u64, 0xc11c]));
    let patient_id = patient_id(style, ctx.seed, index);
    let own_id = ctx.patient_resource_id(index);
    let linked = ctx.linked_ids(index);
    let person = person::Person::identity(ctx.seed, index).as_recorded_by(&p.name, ctx.seed, index);
    let mut g = clinical::Gen::new(ctx, index, &own_id, &person);

    let (mut pv, pidx) = g.patient(&mut rng);
    let first_ms = HISTORY_START_MS + rng.random_range(0..86_400_000i64 * 400);
    let mut binaries = Vec::new();
    if p.document_host {
        let photo = clinical::photo(ctx, index);
        pv["photo"] = json!([{"contentType": photo.content_type, "url": ctx.document_url(&photo.id), "title": "Patient photo"}]);
        binaries.push(photo);
    }
    let mut linked_values = Vec::new();
    if !linked.is_empty() {
        pv["link"] = json!(
            linked
                .iter()
                .map(|l| json!({"other": {"reference": format!("Patient/{l}")}, "type": "seealso"}))
                .collect::<Vec<_>>()
        );
        for (k, l) in linked.iter().enumerate() {
            let mut v = pv.clone();
            v["link"] =
                json!([{"other": {"reference": format!("Patient/{own_id}")}, "type": "seealso"}]);
            if let Some(ident) = v.pointer_mut("/identifier/0/value")
                && let Some(s) = ident.as_str()
            {
                *ident = json!(format!("{s}-{}", k + 1));
            }
            // Each linked Patient is found by its own identifier, not the member's.
            let mut idx = pidx.clone();
            idx.code = idx.code.iter().map(|c| format!("{c}-{}", k + 1)).collect();
            linked_values.push((l.clone(), v, idx));
        }
    }
    let mut resources = vec![Resource {
        rtype: "Patient",
        id: own_id.clone(),
        versions: vec![write_version(
            finish(ctx, pv),
            "Patient",
            &own_id,
            1,
            first_ms,
            pidx.clone(),
        )],
        born_step: 0,
    }];
    for (l, v, idx) in linked_values {
        resources.push(Resource {
            rtype: "Patient",
            id: l.clone(),
            versions: vec![write_version(
                finish(ctx, v),
                "Patient",
                &l,
                1,
                first_ms,
                idx,
            )],
            born_step: 0,
        });
    }

    let total = ctx.history_size(index);
    let served: Vec<(&'static str, u32)> = WEIGHTS
        .iter()
        .filter(|(t, _)| p.generates(t))
        .filter(|(t, _)| p.payer_data || !matches!(*t, "Coverage" | "ExplanationOfBenefit"))
        .copied()
        .collect();
    let wsum: u32 = served.iter().map(|(_, w)| w).sum::<u32>().max(1);
    let mut n: u64 = 1;
    for (rtype, w) in served {
        let count = if rtype == "Coverage" {
            1 + (index % 2)
        } else {
            let c = (total as f64 * w as f64 / wsum as f64).round() as usize;
            if total >= 20 { c.max(1) } else { c }
        };
        for _ in 0..count {
            let id = ctx.id(rtype, index, n);
            if !linked.is_empty() {
                // The member Patient holds nothing: the data sits on the linked Patients.
                g.set_subject(&linked[(n as usize) % linked.len()]);
            }
            n += 1;
            let ms = rng.random_range(first_ms..HISTORY_END_MS);
            let built = g.build(rtype, &id, ms, &mut rng);
            if let Some(b) = built.binary {
                binaries.push(b);
            }
            let lu = ms + rng.random_range(0..86_400_000i64 * 3);
            resources.push(Resource {
                rtype,
                id: id.clone(),
                versions: vec![write_version(
                    finish(ctx, built.value),
                    rtype,
                    &id,
                    1,
                    lu,
                    built.index,
                )],
                born_step: 0,
            });
        }
    }
    let mut rec = PatientRecord {
        index,
        patient_id,
        resources,
        binaries,
        next_n: n,
    };
    for (step, ms) in steps {
        evolve_patient(ctx, &mut rec, *step, *ms);
    }
    rec
}

/// Deterministic change between runs: about 3 % of resources updated, 1 % deleted, 2 % new
/// (at least one of each for non-trivial records). Timestamps are the step's wall-clock time
/// so that a client's `_lastUpdated=gt<last sync>` sees them.
pub fn evolve_patient(ctx: &GenContext, rec: &mut PatientRecord, step: u64, now_ms: i64) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[ctx.seed, rec.index as u64, step, 0xe701]));
    let live: Vec<usize> = (1..rec.resources.len())
        .filter(|i| {
            rec.resources[*i]
                .versions
                .last()
                .is_some_and(|v| !v.deleted)
        })
        .collect();
    if live.is_empty() {
        return;
    }
    let forced_update = live[rng.random_range(0..live.len())];
    let forced_delete = live[rng.random_range(0..live.len())];
    for &i in &live {
        let roll: f64 = rng.random();
        let res = &mut rec.resources[i];
        let Some(cur) = res.versions.last().cloned() else {
            continue;
        };
        let vid = cur.vid + 1;
        if (roll < 0.01 || i == forced_delete) && i != forced_update {
            res.versions.push(Version {
                vid,
                last_updated_ms: now_ms,
                deleted: true,
                json: Arc::from(&b""[..]),
                index: cur.index.clone(),
            });
        } else if roll < 0.04 || i == forced_update {
            let mut v: Value = serde_json::from_slice(&cur.json).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "text".into(),
                    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Amended at step {step}</div>")}),
                );
            }
            let id = res.id.clone();
            let rtype = res.rtype;
            res.versions.push(write_version(
                v,
                rtype,
                &id,
                vid,
                now_ms,
                (*cur.index).clone(),
            ));
        }
    }
    // People move and change phone numbers: a fifth of the patients get a new Patient version.
    if rng.random_bool(0.2)
        && let Some(patient) = rec.resources.first_mut()
        && let Some(cur) = patient.versions.last().cloned()
    {
        let mut v: Value = serde_json::from_slice(&cur.json).unwrap_or(Value::Null);
        v["telecom"] = json!([{"system": "phone", "value": format!("555-{:03}-{:04}", rng.random_range(200..999), rng.random_range(0..10000)), "use": "mobile"}]);
        let id = patient.id.clone();
        patient.versions.push(write_version(
            v,
            "Patient",
            &id,
            cur.vid + 1,
            now_ms,
            (*cur.index).clone(),
        ));
    }
    let creates = (live.len() / 50).max(1);
    let person = person::Person::identity(ctx.seed, rec.index).as_recorded_by(
        &ctx.personality.name,
        ctx.seed,
        rec.index,
    );
    let data_pid = ctx
        .linked_ids(rec.index)
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.patient_resource_id(rec.index));
    let mut g = clinical::Gen::new(ctx, rec.index, &data_pid, &person);
    for _ in 0..creates {
        let rtype = if ctx.personality.serves("Observation") {
            "Observation"
        } else {
            "Condition"
        };
        if !ctx.personality.serves(rtype) {
            break;
        }
        let id = ctx.id(rtype, rec.index, rec.next_n);
        rec.next_n += 1;
        let built = g.build(rtype, &id, now_ms, &mut rng);
        rec.resources.push(Resource {
            rtype,
            id: id.clone(),
            versions: vec![write_version(
                finish(ctx, built.value),
                rtype,
                &id,
                1,
                now_ms,
                built.index,
            )],
            born_step: step.max(1),
        });
    }
}

/// The Group resource used for group-level Bulk export: every patient.
pub fn group_json(id: &str, patient_ids: &[String]) -> Vec<u8> {
    let members: Vec<Value> = patient_ids
        .iter()
        .map(|p| json!({"entity": {"reference": format!("Patient/{p}")}}))
        .collect();
    let v = json!({
        "resourceType": "Group", "id": id, "type": "person", "actual": true,
        "name": "All simulated patients", "quantity": patient_ids.len(), "member": members,
        "meta": {"versionId": "1", "lastUpdated": ms_to_instant(HISTORY_START_MS)}
    });
    serde_json::to_vec(&v).unwrap_or_default()
}
