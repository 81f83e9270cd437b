//! Normalization throughput on a realistic in-memory mix of raw resources (one core).
//! Run: cargo bench -p aqueduct-normalize

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aqueduct_normalize::{
    LocalMapping, NormalizeContext, Resolution, Terminology, normalize, normalize_with_hash,
};

/// (resource type, weight in the mix, template with `{ID}` / `{V}` placeholders)
const TEMPLATES: &[(&str, u32, &str)] = &[
    (
        "Observation",
        20,
        r#"{"resourceType":"Observation","id":"{ID}","meta":{"versionId":"1","lastUpdated":"2024-03-01T10:00:00Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2345-7","display":"Glucose [Mass/volume] in Serum or Plasma"}],"text":"Glucose"},"subject":{"reference":"Patient/p{ID}","display":"Jane Doe"},"effectiveDateTime":"2024-03-01T08:15:00-05:00","issued":"2024-03-01T12:00:00Z","valueQuantity":{"value":{V},"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N"}]}],"referenceRange":[{"low":{"value":3.9,"unit":"mmol/L"},"high":{"value":5.6,"unit":"mmol/L"}}]}"#,
    ),
    (
        "Observation",
        10,
        r#"{"resourceType":"Observation","id":"{ID}","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood pressure panel"}],"text":"BP"},"subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2024-03-01T09:30:00Z","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":{V}1,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":8{V},"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}"#,
    ),
    (
        "Observation",
        10,
        r#"{"resourceType":"Observation","id":"{ID}","status":"final","category":[{"coding":[{"code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}],"text":"Weight"},"subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2024-03-01T09:30:00","valueQuantity":{"value":1{V}0,"unit":"lbs"}}"#,
    ),
    (
        "Observation",
        10,
        r#"{"resourceType":"Observation","id":"{ID}","status":"final","category":[{"coding":[{"code":"laboratory"}]}],"code":{"coding":[{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.2.768282","code":"LAB{V}"}],"text":"Hemoglobin A1c"},"subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2024-02-11","valueQuantity":{"value":"{V}.2","unit":"%"}}"#,
    ),
    (
        "Observation",
        4,
        r#"{"resourceType":"Observation","id":"{ID}","status":"final","code":{"coding":[{"system":"urn:oid:1.2.3","code":"ZZ{V}"}],"text":"Misc send-out test {V}"},"subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2023-02-30","valueString":"see report"}"#,
    ),
    (
        "Condition",
        12,
        r#"{"resourceType":"Condition","id":"{ID}","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"problem-list-item"}]}],"code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"E11.{V}","display":"Type 2 diabetes"},{"system":"http://snomed.info/sct","code":"44054006"}],"text":"Type 2 diabetes mellitus"},"subject":{"reference":"Patient/p{ID}"},"onsetDateTime":"2019-04","recordedDate":"2019-04-10T10:00:00Z"}"#,
    ),
    (
        "Condition",
        4,
        r#"{"resourceType":"Condition","id":"{ID}","category":[{"text":"Encounter Diagnosis"}],"code":{"text":"HTN"},"subject":{"reference":"Patient/p{ID}"},"recordedDate":"2020-01-01"}"#,
    ),
    (
        "MedicationRequest",
        10,
        r#"{"resourceType":"MedicationRequest","id":"{ID}","status":"active","intent":"order","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"860975","display":"metformin 500 MG"}],"text":"Metformin 500 mg tablet"},"subject":{"reference":"Patient/p{ID}"},"authoredOn":"2022-0{V}-10","dosageInstruction":[{"text":"1 tab PO BID"}],"dispenseRequest":{"numberOfRepeatsAllowed":0}}"#,
    ),
    (
        "MedicationRequest",
        3,
        r#"{"resourceType":"MedicationRequest","id":"{ID}","status":"active","intent":"order","medicationCodeableConcept":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"0000{V}-1234-01"}],"text":"Lisinopril 10mg"},"subject":{"reference":"Patient/p{ID}"},"authoredOn":"2025-01-10"}"#,
    ),
    (
        "Encounter",
        8,
        r#"{"resourceType":"Encounter","id":"{ID}","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"type":[{"coding":[{"system":"urn:oid:1.2.3","code":"{V}"}],"text":"Video Visit"}],"subject":{"reference":"Patient/p{ID}"},"period":{"start":"2024-01-01T10:00:00Z","end":"2024-01-01T10:20:00Z"}}"#,
    ),
    (
        "Patient",
        3,
        r#"{"resourceType":"Patient","id":"{ID}","identifier":[{"system":"urn:oid:1.2.3","value":"MRN{V}"}],"name":[{"use":"official","family":"Doe","given":["Jane","Q"]}],"gender":"female","birthDate":"1970-0{V}-01","telecom":[{"system":"phone","value":"555-0100"}],"address":[{"line":["1 Main St"],"city":"Springfield","state":"IL","postalCode":"62701"}]}"#,
    ),
    (
        "AllergyIntolerance",
        2,
        r#"{"resourceType":"AllergyIntolerance","id":"{ID}","clinicalStatus":{"coding":[{"code":"active"}]},"criticality":"high","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"723"}],"text":"Amoxicillin"},"patient":{"reference":"Patient/p{ID}"},"reaction":[{"manifestation":[{"text":"Hives"}],"severity":"moderate"}]}"#,
    ),
    (
        "Immunization",
        2,
        r#"{"resourceType":"Immunization","id":"{ID}","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"208"}]},"patient":{"reference":"Patient/p{ID}"},"occurrenceDateTime":"2021-0{V}-01"}"#,
    ),
    (
        "Observation",
        1,
        r#"{"resourceType":"Observation","id":"{ID}","status":"final","subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2024-02-11T10:00:00Z","valueQuantity":{"value":{V},"unit":"mg/dL"}}"#,
    ),
    (
        "DiagnosticReport",
        2,
        r#"{"resourceType":"DiagnosticReport","id":"{ID}","status":"final","category":[{"coding":[{"code":"LAB"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"24323-8"}],"text":"CMP"},"subject":{"reference":"Patient/p{ID}"},"effectiveDateTime":"2024-03-01T08:15:00Z","result":[{"reference":"Observation/1"},{"reference":"Observation/2"}]}"#,
    ),
];

fn main() {
    let n_total: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(300_000);
    let weight_sum: u32 = TEMPLATES.iter().map(|t| t.1).sum();
    let mut corpus: Vec<(&str, Vec<u8>)> = Vec::with_capacity(n_total);
    let mut i = 0usize;
    while corpus.len() < n_total {
        for (t, w, tpl) in TEMPLATES {
            for _ in 0..*w {
                if corpus.len() >= n_total {
                    break;
                }
                let v = (i % 9 + 1).to_string();
                let body = tpl.replace("{ID}", &i.to_string()).replace("{V}", &v);
                corpus.push((t, body.into_bytes()));
                i += 1;
            }
        }
    }
    let bytes: usize = corpus.iter().map(|c| c.1.len()).sum();
    // the connection's mapping table, as a user would maintain it (NDC and local lab codes)
    let mut mappings = Vec::new();
    for v in 1..=9 {
        mappings.push(LocalMapping {
            source_system: "http://hl7.org/fhir/sid/ndc".into(),
            source_code: format!("0000{v}-1234-01"),
            target_system: "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
            target_code: "314076".into(),
            target_display: Some("lisinopril 10 MG Oral Tablet".into()),
        });
    }
    for v in 1..=4 {
        mappings.push(LocalMapping {
            source_system: "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282".into(),
            source_code: format!("LAB{v}"),
            target_system: "http://loinc.org".into(),
            target_code: "4548-4".into(),
            target_display: None,
        });
    }
    let ctx = NormalizeContext::new(Arc::new(Terminology::embedded())).with_mappings(mappings);
    // warm-up
    for (t, b) in corpus.iter().take(10_000) {
        std::hint::black_box(normalize(t, b, &ctx));
    }
    let start = Instant::now();
    let mut rows = 0usize;
    let mut by_level: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut flags = 0usize;
    for (t, b) in &corpus {
        let n = normalize(t, b, &ctx);
        rows += n.rows.len();
        for r in &n.rows {
            flags += r.flags.len();
            if let Some(c) = &r.code {
                *by_level.entry(c.resolution.as_str()).or_default() += 1;
            }
        }
        std::hint::black_box(n);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "mix: {} templates, weights sum {weight_sum}",
        TEMPLATES.len()
    );
    println!(
        "normalized {} resources ({:.1} MB) -> {rows} rows, {flags} flags in {secs:.3} s",
        corpus.len(),
        bytes as f64 / 1e6
    );
    println!(
        "throughput: {:.0} resources/s, {:.1} MB/s (one core; target >= 100000 resources/s)",
        corpus.len() as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    // as in `rebuild`: the store already has the content hash, no SHA-256 per resource
    let hashes: Vec<String> = corpus
        .iter()
        .map(|(_, b)| aqueduct_store::content_hash(b))
        .collect();
    let start = Instant::now();
    for ((t, b), h) in corpus.iter().zip(&hashes) {
        std::hint::black_box(normalize_with_hash(t, b, h.clone(), &ctx));
    }
    let secs2 = start.elapsed().as_secs_f64();
    println!(
        "with the hash supplied (rebuild path): {:.0} resources/s",
        corpus.len() as f64 / secs2
    );
    let coded: usize = by_level.values().sum();
    println!("code resolution over {coded} coded rows:");
    for r in Resolution::ALL {
        let n = by_level.get(r.as_str()).copied().unwrap_or(0);
        println!(
            "  {:<11} {:>8}  {:>5.1} %",
            r.as_str(),
            n,
            100.0 * n as f64 / coded.max(1) as f64
        );
    }
}
