//! Resource builders: realistic, inconsistently coded clinical content. The variety is the
//! point (ICD-10 beside SNOMED, local lab codes, NDC-only drugs, telehealth coded three ways,
//! narrative-only reports, contained / relative / absolute references).

use base64::Engine;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::person::Person;
use super::{Binary, GenContext, SearchIndex, ms_to_instant};

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const NDC: &str = "http://hl7.org/fhir/sid/ndc";
const CVX: &str = "http://hl7.org/fhir/sid/cvx";
const CPT: &str = "http://www.ama-assn.org/go/cpt";
const UCUM: &str = "http://unitsofmeasure.org";
const OBS_CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

pub struct Built {
    pub value: Value,
    pub index: SearchIndex,
    pub binary: Option<Binary>,
}

/// Drugs: RxNorm, NDC, display.
const MEDS: &[(&str, &str, &str)] = &[
    ("860975", "00093-7214-01", "metformin 500 MG Oral Tablet"),
    ("314076", "00378-1805-01", "lisinopril 10 MG Oral Tablet"),
    ("617312", "00071-0156-23", "atorvastatin 20 MG Oral Tablet"),
    ("745679", "00173-0682-20", "albuterol 90 MCG/ACTUAT Inhaler"),
    (
        "313782",
        "00904-6729-61",
        "acetaminophen 325 MG Oral Tablet",
    ),
];

/// A 1x1 PNG: the patient photo a document host serves.
const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The photo Binary of patient `index` (`document_host`).
pub fn photo(ctx: &GenContext, index: usize) -> Binary {
    Binary {
        id: ctx.id("Binary", index, 900_000),
        content_type: "image/png",
        data: PNG_1X1.into(),
    }
}

pub struct Gen<'a> {
    ctx: &'a GenContext,
    index: usize,
    pid: String,
    person: &'a Person,
    encounters: Vec<String>,
    /// Cancelled / entered-in-error encounters (`cancelled_encounters`).
    cancelled: Vec<String>,
    cancelled_uses: usize,
    labs: Vec<String>,
    coverages: Vec<String>,
    binaries: u64,
}

fn date(ms: i64) -> String {
    ms_to_instant(ms)[..10].to_string()
}

fn pick<'t, T>(rng: &mut ChaCha8Rng, items: &'t [T]) -> &'t T {
    &items[rng.random_range(0..items.len())]
}

fn codes(idx: &mut SearchIndex, system: &str, code: &str) {
    idx.code.push(code.to_string());
    idx.code.push(format!("{system}|{code}"));
}

pub fn shared(
    ctx: &GenContext,
    rtype: &str,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> (Value, SearchIndex) {
    let idx = SearchIndex::default();
    let v = match rtype {
        "Practitioner" => json!({
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": format!("19{:08}", 10_000_000 + n * 7919 % 89_999_999)}],
            "name": [{"family": pick(rng, &["Chen", "Okonkwo", "Reyes", "Fischer", "Haddad", "Larsen"]), "given": [pick(rng, &["Ana", "Ben", "Chloe", "David", "Esther", "Farid"])], "prefix": ["Dr."]}],
            "active": true
        }),
        "PractitionerRole" => json!({
            "practitioner": {"reference": format!("Practitioner/{}", ctx.shared("Practitioner").get(n).map(String::as_str).unwrap_or(""))},
            "organization": {"reference": format!("Organization/{}", ctx.shared("Organization").get(n % 5).map(String::as_str).unwrap_or(""))},
            "code": [{"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207Q00000X", "display": "Family Medicine"}]}],
            "active": true
        }),
        "Organization" => json!({
            "name": format!("{} Health {}", pick(rng, &["Riverside", "Summit", "Lakeshore", "Pioneer", "Mercy"]), ["Clinic", "Hospital", "Partners", "Medical Group", "Center"][n % 5]),
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
            "active": true
        }),
        "Medication" => {
            let (rx, ndc, disp) = MEDS[n % MEDS.len()];
            json!({
                "code": {"coding": [{"system": RXNORM, "code": rx, "display": disp}, {"system": NDC, "code": ndc}], "text": disp},
                "status": "active"
            })
        }
        _ => json!({
            "name": format!("{} Campus", pick(rng, &["North", "South", "East", "West", "Central"])),
            "status": "active"
        }),
    };
    (v, idx)
}

impl<'a> Gen<'a> {
    pub fn new(ctx: &'a GenContext, index: usize, pid: &str, person: &'a Person) -> Self {
        Gen {
            ctx,
            index,
            pid: pid.to_string(),
            person,
            encounters: vec![],
            cancelled: vec![],
            cancelled_uses: 0,
            labs: vec![],
            coverages: vec![],
            binaries: 500_000,
        }
    }

    /// The Patient the next resources belong to (linked Patients hold a member's data).
    pub fn set_subject(&mut self, pid: &str) {
        self.pid = pid.to_string();
    }

    /// A cancelled encounter to reference, when the personality has them.
    fn cancelled_ref(&mut self, idx: &mut SearchIndex) -> Option<Value> {
        if !self.ctx.personality.cancelled_encounters || self.cancelled.is_empty() {
            return None;
        }
        let e = self.cancelled[self.cancelled_uses % self.cancelled.len()].clone();
        self.cancelled_uses += 1;
        idx.refs.push(("encounter", format!("Encounter/{e}")));
        Some(json!({"reference": format!("Encounter/{e}")}))
    }

    /// The drug as a reference to a shared Medication (`medication_references`), else None.
    fn medication_ref(&self, rng: &mut ChaCha8Rng, idx: &mut SearchIndex) -> Option<Value> {
        if !self.ctx.personality.medication_references {
            return None;
        }
        let meds = self.ctx.shared("Medication");
        if meds.is_empty() {
            return None;
        }
        let k = rng.random_range(0..meds.len());
        let (rx, _, _) = MEDS[k % MEDS.len()];
        codes(idx, RXNORM, rx);
        idx.refs
            .push(("medication", format!("Medication/{}", meds[k])));
        Some(json!({"reference": format!("Medication/{}", meds[k])}))
    }

    fn subject(&self) -> Value {
        json!({"reference": format!("Patient/{}", self.pid)})
    }

    /// Practitioner reference, relative most of the time, absolute sometimes.
    fn practitioner(
        &self,
        rng: &mut ChaCha8Rng,
        idx: &mut SearchIndex,
        param: &'static str,
    ) -> Value {
        let ids = self.ctx.shared("Practitioner");
        let id = pick(rng, ids).clone();
        idx.refs.push((param, format!("Practitioner/{id}")));
        if rng.random_bool(0.25) {
            json!({"reference": format!("{}/Practitioner/{id}", self.ctx.base_url)})
        } else {
            json!({"reference": format!("Practitioner/{id}"), "display": "Attending clinician"})
        }
    }

    fn org(&self, rng: &mut ChaCha8Rng) -> Value {
        json!({"reference": format!("Organization/{}", pick(rng, self.ctx.shared("Organization")))})
    }

    fn encounter_ref(&self, rng: &mut ChaCha8Rng, idx: &mut SearchIndex) -> Option<Value> {
        if self.encounters.is_empty() || rng.random_bool(0.3) {
            return None;
        }
        let e = pick(rng, &self.encounters).clone();
        idx.refs.push(("encounter", format!("Encounter/{e}")));
        Some(json!({"reference": format!("Encounter/{e}")}))
    }

    fn base_index(&self) -> SearchIndex {
        SearchIndex {
            refs: vec![
                ("patient", format!("Patient/{}", self.pid)),
                ("subject", format!("Patient/{}", self.pid)),
            ],
            ..Default::default()
        }
    }

    pub fn patient(&mut self, rng: &mut ChaCha8Rng) -> (Value, SearchIndex) {
        let p = self.person;
        let mrn = format!(
            "{}{:07}",
            self.ctx
                .personality
                .name
                .chars()
                .next()
                .unwrap_or('X')
                .to_ascii_uppercase(),
            1_000_000 + self.index * 37 + rng.random_range(0..10)
        );
        let mut idx = SearchIndex::default();
        codes(&mut idx, &self.ctx.personality.mrn_system, &mrn);
        idx.status = Some(p.gender.to_string());
        idx.date = Some(p.birth_date.clone());
        idx.names = vec![p.family.to_lowercase(), p.given.to_lowercase()];
        let mut given = vec![p.given.clone()];
        if let Some(m) = &p.middle {
            given.push(m.clone());
        }
        let gp = pick(rng, self.ctx.shared("Practitioner")).clone();
        let v = json!({
            "identifier": [{
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "MRN"},
                "system": self.ctx.personality.mrn_system, "value": mrn
            }],
            "active": true,
            "name": [{"use": "official", "family": p.family, "given": given}],
            "telecom": [{"system": "phone", "value": p.phone, "use": "home"}],
            "gender": p.gender,
            "birthDate": p.birth_date,
            "address": [{"use": "home", "line": [p.address.line], "city": p.address.city, "state": p.address.state, "postalCode": p.address.postal_code, "country": "US"}],
            "generalPractitioner": [{"reference": format!("Practitioner/{gp}")}],
            "managingOrganization": self.org(rng)
        });
        (v, idx)
    }

    pub fn build(&mut self, rtype: &str, id: &str, ms: i64, rng: &mut ChaCha8Rng) -> Built {
        let mut idx = self.base_index();
        let mut binary = None;
        let when = ms_to_instant(ms);
        idx.date = Some(when.clone());
        let value = match rtype {
            "Encounter" => {
                self.encounters.push(id.to_string());
                let kind = rng.random_range(0..6);
                let (class, ty): (Value, Value) = match kind {
                    0 => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"}),
                        json!([{"text": "Hospital admission"}]),
                    ),
                    1 => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"}),
                        json!([{"coding": [{"system": SNOMED, "code": "50849002", "display": "Emergency room admission"}]}]),
                    ),
                    2 => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"}),
                        json!([{"text": "Video visit"}]),
                    ),
                    3 => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"}),
                        json!([{"coding": [{"system": SNOMED, "code": "448337001", "display": "Telemedicine consultation with patient"}]}]),
                    ),
                    4 => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}),
                        json!([{"text": "Telehealth - phone"}]),
                    ),
                    _ => (
                        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"}),
                        json!([{"coding": [{"system": CPT, "code": "99213", "display": "Office visit, established patient"}]}]),
                    ),
                };
                if let Some(c) = class.get("code").and_then(Value::as_str) {
                    codes(
                        &mut idx,
                        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        c,
                    );
                }
                let mut status = "finished";
                if self.ctx.personality.cancelled_encounters && self.encounters.len() % 4 == 0 {
                    status = ["cancelled", "entered-in-error"][self.cancelled.len() % 2];
                    self.cancelled.push(id.to_string());
                }
                idx.status = Some(status.into());
                let end = ms
                    + rng.random_range(
                        1_800_000i64..(if kind == 0 { 86_400_000 * 4 } else { 7_200_000 }),
                    );
                json!({
                    "status": status, "class": class, "type": ty, "subject": self.subject(),
                    "participant": [{"individual": self.practitioner(rng, &mut idx, "practitioner")}],
                    "period": {"start": when, "end": ms_to_instant(end)},
                    "location": [{"location": {"reference": format!("Location/{}", pick(rng, self.ctx.shared("Location")))}}],
                    "serviceProvider": self.org(rng)
                })
            }
            "Condition" => {
                const C: &[(&str, &str, &str, &str)] = &[
                    ("E11.9", "44054006", "Type 2 diabetes mellitus", "Diabetes"),
                    (
                        "I10",
                        "38341003",
                        "Essential hypertension",
                        "High blood pressure",
                    ),
                    ("J45.909", "195967001", "Asthma", "Asthma"),
                    ("E78.5", "55822004", "Hyperlipidemia", "High cholesterol"),
                    ("M54.5", "279039007", "Low back pain", "Back pain"),
                    (
                        "F41.1",
                        "21897009",
                        "Generalized anxiety disorder",
                        "Anxiety",
                    ),
                    ("J06.9", "54150009", "Upper respiratory infection", "Cold"),
                ];
                let (icd, sct, disp, text) = *pick(rng, C);
                let style = rng.random_range(0..3);
                let mut coding = vec![];
                if style != 1 {
                    coding.push(json!({"system": ICD10, "code": icd, "display": disp}));
                    codes(&mut idx, ICD10, icd);
                }
                if style != 0 {
                    coding.push(json!({"system": SNOMED, "code": sct, "display": disp}));
                    codes(&mut idx, SNOMED, sct);
                }
                let problem = rng.random_bool(0.5);
                let cat = if problem {
                    "problem-list-item"
                } else {
                    "encounter-diagnosis"
                };
                idx.category.push(cat.into());
                let active = rng.random_bool(0.6);
                let cs = if active { "active" } else { "resolved" };
                idx.status = Some(cs.into());
                let mut v = json!({
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": cs}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": cat}]}],
                    "code": {"coding": coding, "text": text},
                    "subject": self.subject(), "onsetDateTime": when, "recordedDate": date(ms)
                });
                if !problem && let Some(e) = self.cancelled_ref(&mut idx) {
                    v["encounter"] = e;
                } else if !problem && let Some(e) = self.encounter_ref(rng, &mut idx) {
                    v["encounter"] = e;
                }
                if !active {
                    v["abatementDateTime"] = json!(ms_to_instant(ms + 86_400_000 * 20));
                }
                v
            }
            "Observation" => self.observation(id, &when, rng, &mut idx),
            "MedicationRequest" => {
                let (rx, ndc, disp) = *pick(rng, MEDS);
                let status = *pick(rng, &["active", "active", "completed", "stopped"]);
                let intent = if rng.random_bool(0.7) {
                    "order"
                } else {
                    "plan"
                };
                idx.status = Some(status.into());
                idx.intent = Some(intent.into());
                let mut v = json!({
                    "status": status, "intent": intent, "subject": self.subject(), "authoredOn": when,
                    "requester": self.practitioner(rng, &mut idx, "requester"),
                    "dosageInstruction": [{"text": "Take 1 tablet by mouth daily"}]
                });
                if rng.random_bool(0.2) {
                    codes(&mut idx, NDC, ndc);
                    v["contained"] = json!([{"resourceType": "Medication", "id": "med1", "code": {"coding": [{"system": NDC, "code": ndc}], "text": disp}}]);
                    v["medicationReference"] = json!({"reference": "#med1"});
                } else if let Some(m) = self.medication_ref(rng, &mut idx) {
                    v["medicationReference"] = m;
                } else {
                    codes(&mut idx, RXNORM, rx);
                    v["medicationCodeableConcept"] = json!({"coding": [{"system": RXNORM, "code": rx, "display": disp}], "text": disp});
                }
                if let Some(e) = self.encounter_ref(rng, &mut idx) {
                    v["encounter"] = e;
                }
                v
            }
            "AllergyIntolerance" => {
                let (sys, code, text) = *pick(
                    rng,
                    &[
                        (SNOMED, "91936005", "Penicillin allergy"),
                        (RXNORM, "7980", "Penicillin G"),
                        (SNOMED, "300913006", "Shellfish allergy"),
                        (SNOMED, "91935009", "Peanut allergy"),
                    ],
                );
                codes(&mut idx, sys, code);
                idx.status = Some("active".into());
                json!({
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
                    "code": {"coding": [{"system": sys, "code": code}], "text": text},
                    "patient": self.subject(), "recordedDate": when,
                    "reaction": [{"manifestation": [{"coding": [{"system": SNOMED, "code": "247472004", "display": "Hives"}]}]}]
                })
            }
            "Immunization" => {
                let (code, text) = *pick(
                    rng,
                    &[
                        ("08", "Hep B, adolescent or pediatric"),
                        ("140", "Influenza, seasonal, injectable"),
                        ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
                        ("115", "Tdap"),
                        ("03", "MMR"),
                    ],
                );
                codes(&mut idx, CVX, code);
                idx.status = Some("completed".into());
                json!({"status": "completed", "vaccineCode": {"coding": [{"system": CVX, "code": code, "display": text}]}, "patient": self.subject(), "occurrenceDateTime": when, "primarySource": true})
            }
            "Procedure" => {
                let (sys, code, text) = *pick(
                    rng,
                    &[
                        (CPT, "45378", "Colonoscopy"),
                        (SNOMED, "73761001", "Colonoscopy"),
                        (CPT, "93000", "Electrocardiogram"),
                        (SNOMED, "80146002", "Appendectomy"),
                        (CPT, "36415", "Venipuncture"),
                    ],
                );
                codes(&mut idx, sys, code);
                idx.status = Some("completed".into());
                let mut v = json!({"status": "completed", "code": {"coding": [{"system": sys, "code": code, "display": text}], "text": text}, "subject": self.subject(), "performedDateTime": when, "performer": [{"actor": self.practitioner(rng, &mut idx, "performer")}]});
                if let Some(e) = self.encounter_ref(rng, &mut idx) {
                    v["encounter"] = e;
                }
                v
            }
            "DiagnosticReport" => {
                idx.status = Some("final".into());
                if !self.labs.is_empty() && rng.random_bool(0.7) {
                    idx.category.push("LAB".into());
                    let (code, text) = *pick(
                        rng,
                        &[
                            ("24323-8", "Comprehensive metabolic panel"),
                            ("58410-2", "CBC panel"),
                            ("57698-3", "Lipid panel"),
                        ],
                    );
                    codes(&mut idx, LOINC, code);
                    let n = rng.random_range(1..4.min(self.labs.len() + 1));
                    let results: Vec<Value> = (0..n)
                        .map(|_| {
                            let o = pick(rng, &self.labs).clone();
                            idx.refs.push(("result", format!("Observation/{o}")));
                            json!({"reference": format!("Observation/{o}")})
                        })
                        .collect();
                    json!({"status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}], "code": {"coding": [{"system": LOINC, "code": code}], "text": text}, "subject": self.subject(), "effectiveDateTime": when, "issued": when, "result": results})
                } else {
                    idx.category.push("RAD".into());
                    codes(&mut idx, LOINC, "18748-4");
                    let html = format!(
                        "<html><body><h1>Chest X-ray</h1><p>Impression: no acute cardiopulmonary process. ({id})</p></body></html>"
                    );
                    json!({"status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}], "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]}, "subject": self.subject(), "effectiveDateTime": when, "conclusion": "No acute cardiopulmonary process.", "presentedForm": [{"contentType": "text/html", "data": base64::engine::general_purpose::STANDARD.encode(html)}]})
                }
            }
            "DocumentReference" => {
                let (code, text) = *pick(
                    rng,
                    &[
                        ("11506-3", "Progress note"),
                        ("18842-5", "Discharge summary"),
                        ("34133-9", "Summary of episode note"),
                    ],
                );
                codes(&mut idx, LOINC, code);
                idx.category.push("clinical-note".into());
                idx.status = Some("current".into());
                let kind = rng.random_range(0..3);
                let ct = ["text/html", "application/pdf", "text/rtf"][kind];
                self.binaries += 1;
                let bin_id = self.ctx.id("Binary", self.index, self.binaries);
                let data = binary_bytes(ct, text, id);
                let size = data.len();
                binary = Some(Binary {
                    id: bin_id.clone(),
                    content_type: ct,
                    data: data.into(),
                });
                let mut v = json!({
                    "status": "current",
                    "type": {"coding": [{"system": LOINC, "code": code, "display": text}]},
                    "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note"}]}],
                    "subject": self.subject(), "date": when,
                    "author": [self.practitioner(rng, &mut idx, "author")],
                    "content": [{"attachment": {"contentType": ct, "url": self.ctx.document_url(&bin_id), "size": size, "title": text}}]
                });
                if let Some(e) = self.cancelled_ref(&mut idx) {
                    v["context"] = json!({"encounter": [e]});
                }
                v
            }
            "CarePlan" => {
                let cats = &self.ctx.personality.careplan_categories;
                let cat: String = if !cats.is_empty() {
                    pick(rng, cats).clone()
                } else if rng.random_bool(0.7) {
                    "assess-plan".into()
                } else {
                    "longitudinal".into()
                };
                let system = if cat.bytes().all(|b| b.is_ascii_digit()) {
                    SNOMED
                } else {
                    "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
                };
                idx.category.push(cat.clone());
                idx.status = Some("active".into());
                json!({"status": "active", "intent": "plan", "category": [{"coding": [{"system": system, "code": cat}]}], "subject": self.subject(), "period": {"start": when}, "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Diet and exercise; follow up in 3 months.</div>"}})
            }
            "CareTeam" => {
                idx.status = Some("active".into());
                json!({"status": "active", "subject": self.subject(), "participant": [{"member": self.practitioner(rng, &mut idx, "participant")}, {"member": self.practitioner(rng, &mut idx, "participant")}]})
            }
            "Goal" => {
                idx.status = Some("active".into());
                json!({"lifecycleStatus": "active", "description": {"text": *pick(rng, &["Lose 5 kg", "HbA1c below 7%", "Walk 30 minutes daily"])}, "subject": self.subject(), "startDate": date(ms)})
            }
            "Coverage" => {
                self.coverages.push(id.to_string());
                idx.refs
                    .push(("beneficiary", format!("Patient/{}", self.pid)));
                idx.status = Some("active".into());
                json!({"status": "active", "subscriberId": format!("W{:09}", self.index * 7 + 100_000), "beneficiary": self.subject(), "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]}, "period": {"start": date(ms)}, "payor": [self.org(rng)], "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]}, "value": "PPO-GOLD"}]})
            }
            "ExplanationOfBenefit" => {
                let ty = *pick(rng, &["professional", "institutional", "pharmacy"]);
                codes(
                    &mut idx,
                    "http://terminology.hl7.org/CodeSystem/claim-type",
                    ty,
                );
                idx.status = Some("active".into());
                let cov = self.coverages.first().cloned().unwrap_or_default();
                let amount = rng.random_range(20..4000);
                json!({
                    "status": "active", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": ty}]},
                    "use": "claim", "patient": self.subject(), "created": when, "billablePeriod": {"start": date(ms)},
                    "insurer": self.org(rng), "provider": self.practitioner(rng, &mut idx, "provider"), "outcome": "complete",
                    "insurance": [{"focal": true, "coverage": {"reference": format!("Coverage/{cov}")}}],
                    "item": [{"sequence": 1, "productOrService": {"coding": [{"system": CPT, "code": "99214"}]}, "servicedDate": date(ms), "net": {"value": amount, "currency": "USD"}}],
                    "total": [{"category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted"}]}, "amount": {"value": amount, "currency": "USD"}}]
                })
            }
            "MedicationAdministration" => {
                let (rx, _, disp) = *pick(rng, MEDS);
                idx.status = Some("completed".into());
                let mut v = json!({"status": "completed", "subject": self.subject(), "effectiveDateTime": when,
                    "performer": [{"actor": self.practitioner(rng, &mut idx, "performer")}],
                    "dosage": {"text": "1 tablet by mouth", "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}}});
                if let Some(m) = self.medication_ref(rng, &mut idx) {
                    v["medicationReference"] = m;
                } else {
                    codes(&mut idx, RXNORM, rx);
                    v["medicationCodeableConcept"] = json!({"coding": [{"system": RXNORM, "code": rx, "display": disp}], "text": disp});
                }
                if let Some(e) = self.encounter_ref(rng, &mut idx) {
                    v["context"] = e;
                }
                v
            }
            "MedicationStatement" => {
                let (rx, _, disp) = *pick(rng, MEDS);
                let status = *pick(rng, &["active", "completed"]);
                idx.status = Some(status.into());
                let mut v = json!({"status": status, "subject": self.subject(), "effectiveDateTime": when, "dateAsserted": date(ms),
                    "informationSource": self.subject(), "dosage": [{"text": "Once daily"}]});
                if let Some(m) = self.medication_ref(rng, &mut idx) {
                    v["medicationReference"] = m;
                } else {
                    codes(&mut idx, RXNORM, rx);
                    v["medicationCodeableConcept"] = json!({"coding": [{"system": RXNORM, "code": rx, "display": disp}], "text": disp});
                }
                v
            }
            "ServiceRequest" => {
                let (sys, code, text) = *pick(
                    rng,
                    &[
                        (LOINC, "24323-8", "Comprehensive metabolic panel"),
                        (CPT, "93000", "Electrocardiogram"),
                        (SNOMED, "73761001", "Colonoscopy"),
                    ],
                );
                codes(&mut idx, sys, code);
                idx.status = Some("active".into());
                idx.intent = Some("order".into());
                idx.category.push("108252007".into());
                let mut v = json!({"status": "active", "intent": "order",
                    "category": [{"coding": [{"system": SNOMED, "code": "108252007", "display": "Laboratory procedure"}]}],
                    "code": {"coding": [{"system": sys, "code": code, "display": text}], "text": text},
                    "subject": self.subject(), "authoredOn": when,
                    "requester": self.practitioner(rng, &mut idx, "requester")});
                if let Some(e) = self.encounter_ref(rng, &mut idx) {
                    v["encounter"] = e;
                }
                v
            }
            "Provenance" => {
                let target = match self.encounters.last() {
                    Some(e) => {
                        idx.refs.push(("target", format!("Encounter/{e}")));
                        format!("Encounter/{e}")
                    }
                    None => format!("Patient/{}", self.pid),
                };
                json!({"target": [{"reference": target}, self.subject()], "recorded": when,
                    "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                               "who": self.practitioner(rng, &mut idx, "agent"), "onBehalfOf": self.org(rng)}]})
            }
            _ => json!({}),
        };
        Built {
            value,
            index: idx,
            binary,
        }
    }

    fn observation(
        &mut self,
        id: &str,
        when: &str,
        rng: &mut ChaCha8Rng,
        idx: &mut SearchIndex,
    ) -> Value {
        let roll: f64 = rng.random();
        let cat = if roll < 0.5 {
            "vital-signs"
        } else if roll < 0.9 {
            "laboratory"
        } else {
            "social-history"
        };
        idx.category.push(cat.into());
        idx.status = Some("final".into());
        let category = json!([{"coding": [{"system": OBS_CAT, "code": cat}]}]);
        let mut v = json!({"status": "final", "category": category, "subject": self.subject(), "effectiveDateTime": when});
        match cat {
            "vital-signs" => {
                let kind = rng.random_range(0..6);
                if kind == 0 {
                    codes(idx, LOINC, "85354-9");
                    v["code"] = json!({"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure"});
                    v["component"] = json!([
                        {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]}, "valueQuantity": {"value": rng.random_range(100..170), "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                        {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]}, "valueQuantity": {"value": rng.random_range(60..100), "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}
                    ]);
                } else {
                    let (code, text, unit, ucum, lo, hi) = [
                        ("8867-4", "Heart rate", "beats/minute", "/min", 50.0, 110.0),
                        ("29463-7", "Body weight", "kg", "kg", 45.0, 130.0),
                        ("8302-2", "Body height", "cm", "cm", 150.0, 195.0),
                        ("8310-5", "Body temperature", "Cel", "Cel", 36.0, 38.5),
                        ("39156-5", "Body mass index", "kg/m2", "kg/m2", 18.0, 38.0),
                    ][kind - 1];
                    codes(idx, LOINC, code);
                    let val = (rng.random_range(lo..hi) * 10.0_f64).round() / 10.0;
                    v["code"] = json!({"coding": [{"system": LOINC, "code": code, "display": text}], "text": text});
                    v["valueQuantity"] =
                        json!({"value": val, "unit": unit, "system": UCUM, "code": ucum});
                }
            }
            "laboratory" => {
                self.labs.push(id.to_string());
                let (code, text, unit, lo, hi) = *pick(
                    rng,
                    &[
                        (
                            "2345-7",
                            "Glucose [Mass/volume] in Serum or Plasma",
                            "mg/dL",
                            70.0,
                            99.0,
                        ),
                        (
                            "4548-4",
                            "Hemoglobin A1c/Hemoglobin.total in Blood",
                            "%",
                            4.0,
                            5.6,
                        ),
                        (
                            "2160-0",
                            "Creatinine [Mass/volume] in Serum or Plasma",
                            "mg/dL",
                            0.6,
                            1.3,
                        ),
                        (
                            "2823-3",
                            "Potassium [Moles/volume] in Serum or Plasma",
                            "mmol/L",
                            3.5,
                            5.1,
                        ),
                        (
                            "718-7",
                            "Hemoglobin [Mass/volume] in Blood",
                            "g/dL",
                            12.0,
                            17.5,
                        ),
                        (
                            "13457-7",
                            "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
                            "mg/dL",
                            0.0,
                            100.0,
                        ),
                    ],
                );
                let val = (rng.random_range(lo * 0.7..hi * 1.3) * 10.0_f64).round() / 10.0;
                let coding = rng.random_range(0..100);
                v["code"] = if coding < 80 {
                    codes(idx, LOINC, code);
                    json!({"coding": [{"system": LOINC, "code": code, "display": text}], "text": text})
                } else if coding < 88 && self.ctx.personality.mislabelled_loinc {
                    // A local number under the LOINC system: fails LOINC's mod-10 check digit.
                    let local = ["31337", "3953"][coding as usize % 2];
                    codes(idx, LOINC, local);
                    json!({"coding": [{"system": LOINC, "code": local, "display": "POC GLUCOSE"}], "text": "POC GLUCOSE"})
                } else if coding < 88 {
                    codes(
                        idx,
                        "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282",
                        "LAB-GLU-POC",
                    );
                    json!({"coding": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282", "code": "LAB-GLU-POC", "display": "POC GLUCOSE"}], "text": "POC GLUCOSE"})
                } else if coding < 94 {
                    json!({"text": text})
                } else {
                    json!({})
                };
                v["valueQuantity"] =
                    json!({"value": val, "unit": unit, "system": UCUM, "code": unit});
                v["referenceRange"] = json!([{"low": {"value": lo, "unit": unit, "system": UCUM, "code": unit}, "high": {"value": hi, "unit": unit, "system": UCUM, "code": unit}}]);
                let flag = if val < lo {
                    "L"
                } else if val > hi {
                    "H"
                } else {
                    "N"
                };
                v["interpretation"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]}]);
            }
            _ => {
                codes(idx, LOINC, "72166-2");
                let (code, text) = *pick(
                    rng,
                    &[
                        ("266919005", "Never smoker"),
                        ("8517006", "Former smoker"),
                        ("449868002", "Current every day smoker"),
                    ],
                );
                v["code"] = json!({"coding": [{"system": LOINC, "code": "72166-2", "display": "Tobacco smoking status"}]});
                v["valueCodeableConcept"] =
                    json!({"coding": [{"system": SNOMED, "code": code, "display": text}]});
            }
        }
        if let Some(e) = self.encounter_ref(rng, idx) {
            v["encounter"] = e;
        }
        v
    }
}

fn binary_bytes(content_type: &str, title: &str, doc_id: &str) -> Vec<u8> {
    match content_type {
        "text/html" => format!("<html><head><title>{title}</title></head><body><h1>{title}</h1><p>Patient seen for follow-up. Document {doc_id}.</p></body></html>").into_bytes(),
        "text/rtf" => format!("{{\\rtf1\\ansi{{\\fonttbl\\f0\\fswiss Helvetica;}}\\f0\\pard {title}\\par Document {doc_id}.\\par}}").into_bytes(),
        _ => format!("%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n% {title} {doc_id}\ntrailer<</Root 1 0 R>>\n%%EOF\n").into_bytes(),
    }
}

/// A Binary as a FHIR resource (for `Accept: application/fhir+json`).
pub fn binary_resource_json(b: &Binary) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "resourceType": "Binary", "id": b.id, "contentType": b.content_type,
        "data": base64::engine::general_purpose::STANDARD.encode(&b.data)
    }))
    .unwrap_or_default()
}
