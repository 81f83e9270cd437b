#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_normalize::*;
use aqueduct_normalize::{dates, units};
use chrono::TimeZone;

fn ctx() -> NormalizeContext {
    NormalizeContext::new(Arc::new(Terminology::embedded()))
        .with_now(chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
}

fn obs(n: &Normalized, i: usize) -> &ObservationDetail {
    match &n.rows[i].detail {
        Detail::Observation(d) => d,
        other => panic!("not an observation: {other:?}"),
    }
}

fn has_flag(flags: &[Flag], code: &str) -> bool {
    flags.iter().any(|f| f.code == code)
}

#[test]
fn bp_panel_splits_into_two_rows() {
    let raw = br#"{"resourceType":"Observation","id":"bp1","status":"final",
      "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
      "code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
      "subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-03-01T09:30:00-05:00",
      "component":[
        {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":128,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
        {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":"82","unit":"mm Hg"}}]}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(n.rows.len(), 2);
    assert_eq!(n.lineage.logical_id.as_deref(), Some("bp1"));
    assert_eq!(n.lineage.content_hash.len(), 64);
    let r0 = &n.rows[0];
    assert_eq!(r0.ordinal, 0);
    assert_eq!(r0.code.as_ref().unwrap().code.as_deref(), Some("8480-6"));
    assert_eq!(r0.code.as_ref().unwrap().resolution, Resolution::Standard);
    assert_eq!(r0.patient_id.as_deref(), Some("p1"));
    assert_eq!(
        r0.effective.as_ref().unwrap().utc.as_deref(),
        Some("2024-03-01T14:30:00Z")
    );
    assert_eq!(
        obs(&n, 0).value.as_ref().unwrap().canonical_value,
        Some(128.0)
    );
    assert_eq!(obs(&n, 0).class, "vital-sign");
    assert_eq!(obs(&n, 0).panel_code.as_deref(), Some("85354-9"));
    let r1 = &n.rows[1];
    assert_eq!(r1.ordinal, 1);
    assert_eq!(r1.code.as_ref().unwrap().code.as_deref(), Some("8462-4"));
    assert_eq!(
        obs(&n, 1).value.as_ref().unwrap().canonical_value,
        Some(82.0)
    );
    assert!(has_flag(&r1.flags, "number-as-string"));
    assert!(has_flag(&r1.flags, "unit-from-text"));
}

#[test]
fn glucose_mmol_converted_to_mgdl() {
    let raw = br#"{"resourceType":"Observation","id":"g1","status":"final",
      "code":{"coding":[{"system":"http://loinc.org","code":"2345-7","display":"Glucose"}]},
      "subject":{"reference":"https://ehr.example/fhir/Patient/p9"},"effectiveDateTime":"2024-03-01",
      "valueQuantity":{"value":5.5,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},
      "referenceRange":[{"low":{"value":3.9,"unit":"mmol/L"},"high":{"value":5.6,"unit":"mmol/L"}}],
      "interpretation":[{"coding":[{"code":"N"}]}]}"#;
    let n = normalize("Observation", raw, &ctx());
    let d = obs(&n, 0);
    let v = d.value.as_ref().unwrap();
    assert_eq!(v.value, Some(5.5));
    assert_eq!(v.ucum.as_deref(), Some("mmol/L"));
    assert_eq!(v.canonical_unit.as_deref(), Some("mg/dL"));
    assert!((v.canonical_value.unwrap() - 5.5 * 18.016).abs() < 1e-9);
    assert_eq!(v.conversion, Some("molar-mass"));
    let rr = d.reference_range.as_ref().unwrap();
    assert!((rr.canonical_low.unwrap() - 3.9 * 18.016).abs() < 1e-9);
    assert!((rr.canonical_high.unwrap() - 5.6 * 18.016).abs() < 1e-9);
    assert_eq!(d.interpretation, vec!["N"]);
    assert_eq!(n.rows[0].patient_id.as_deref(), Some("p9"));
    assert_eq!(d.class, "laboratory");
}

#[test]
fn weight_in_pounds_and_temperature_in_f() {
    let raw = br#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
      "effectiveDateTime":"2024-01-01T10:00:00Z","valueQuantity":{"value":150,"unit":"lbs"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let v = obs(&n, 0).value.clone().unwrap();
    assert!((v.canonical_value.unwrap() - 68.0388555).abs() < 1e-6);
    assert_eq!(v.canonical_unit.as_deref(), Some("kg"));
    let raw = br#"{"resourceType":"Observation","id":"t","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
      "effectiveDateTime":"2024-01-01T10:00:00Z","valueQuantity":{"value":98.6,"unit":"[degF]","system":"http://unitsofmeasure.org","code":"[degF]"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let v = obs(&n, 0).value.clone().unwrap();
    assert!((v.canonical_value.unwrap() - 37.0).abs() < 1e-9);
    assert!(n.rows[0].flags.is_empty(), "{:?}", n.rows[0].flags);
}

#[test]
fn unconvertible_and_missing_units_are_flagged_not_guessed() {
    let raw = br#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":70,"unit":"cm"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let v = obs(&n, 0).value.clone().unwrap();
    assert_eq!(v.canonical_value, None);
    assert_eq!(v.value, Some(70.0));
    assert!(has_flag(&n.rows[0].flags, "unit-not-convertible"));
    let raw = br#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":70}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(obs(&n, 0).value.as_ref().unwrap().canonical_value, None);
    assert!(has_flag(&n.rows[0].flags, "missing-unit"));
    let raw = br#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":"seventy","unit":"kg"}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(obs(&n, 0).value.as_ref().unwrap().value, None);
    assert!(has_flag(&n.rows[0].flags, "not-a-number"));
    // implausible: 700 kg entered with unit kg but meant lb? flagged, not altered
    let raw = br#"{"resourceType":"Observation","id":"w","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":98.6,"unit":"Cel"}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(
        obs(&n, 0).value.as_ref().unwrap().canonical_value,
        Some(98.6)
    );
    assert!(has_flag(&n.rows[0].flags, "implausible-value"));
}

#[test]
fn terminology_strategy_levels() {
    let c = ctx().with_mappings(vec![LocalMapping {
        source_system: "urn:oid:1.2.3.4.5".into(),
        source_code: "GLU-S".into(),
        target_system: "http://loinc.org".into(),
        target_code: "2345-7".into(),
        target_display: Some("Glucose SerPl".into()),
    }]);
    // mapped
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"urn:oid:1.2.3.4.5","code":"GLU-S"}],"text":"Glucose"},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":100,"unit":"mg/dL"}}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mapped);
    assert_eq!(code.rule, "local-mapping");
    assert_eq!(code.code.as_deref(), Some("2345-7"));
    assert_eq!(code.source_code.as_deref(), Some("GLU-S"));
    assert_eq!(
        obs(&n, 0).value.as_ref().unwrap().canonical_value,
        Some(100.0)
    );
    // inferred from text
    let raw = br#"{"resourceType":"Observation","id":"b","code":{"coding":[{"system":"urn:oid:9.9","code":"X1"}],"text":"Hemoglobin A1c"},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":7.1,"unit":"%"}}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Inferred);
    assert_eq!(code.code.as_deref(), Some("4548-4"));
    assert!(code.confidence.unwrap() >= 0.9);
    assert_eq!(code.source_code.as_deref(), Some("X1"));
    // unmapped: text that matches nothing well
    let raw = br#"{"resourceType":"Observation","id":"c","code":{"coding":[{"system":"urn:oid:9.9","code":"X2"}],"text":"Hemoglobin electrophoresis interpretation"},
      "effectiveDateTime":"2024-01-01","valueString":"normal pattern"}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Unmapped);
    assert!(code.code.is_none());
    assert!(has_flag(&n.rows[0].flags, "code-unmapped"));
    // local code, no text: unmapped
    let raw = br#"{"resourceType":"Observation","id":"d","code":{"coding":[{"system":"urn:oid:9.9","code":"X3"}]},"effectiveDateTime":"2024-01-01"}"#;
    let n = normalize("Observation", raw, &c);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Unmapped
    );
    assert_eq!(n.rows[0].code.as_ref().unwrap().rule, "unmapped-code");
    // nothing
    let raw = br#"{"resourceType":"Observation","id":"e","effectiveDateTime":"2024-01-01","valueQuantity":{"value":1}}"#;
    let n = normalize("Observation", raw, &c);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::None
    );
    assert!(has_flag(&n.rows[0].flags, "no-code"));
}

#[test]
fn wrong_systems_and_invalid_codes() {
    // bare "LOINC" system accepted as alias, flagged
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"LOINC","code":"2345-7"}]},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":90,"unit":"mg/dL"}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Standard
    );
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().system.as_deref(),
        Some("http://loinc.org")
    );
    assert!(has_flag(&n.rows[0].flags, "system-alias"));
    // wrong check digit: not used as standard
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"http://loinc.org","code":"2345-8"}],"text":"Glucose"},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":90,"unit":"mg/dL"}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert!(has_flag(&n.rows[0].flags, "code-mislabelled"));
    assert_ne!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Standard
    );
}

#[test]
fn condition_groups_and_statuses() {
    let raw = br#"{"resourceType":"Condition","id":"c1",
      "clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},
      "verificationStatus":{"coding":[{"code":"confirmed"}]},
      "category":[{"coding":[{"code":"problem-list-item"}]}],
      "code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"E11.9"},{"system":"http://snomed.info/sct","code":"44054006"}],"text":"Type 2 diabetes"},
      "subject":{"reference":"Patient/p1"},"onsetDateTime":"2019-04"}"#;
    let n = normalize("Condition", raw, &ctx());
    let r = &n.rows[0];
    assert_eq!(r.code.as_ref().unwrap().code.as_deref(), Some("E11.9"));
    let Detail::Condition(d) = &r.detail else {
        panic!()
    };
    assert_eq!(d.groups, vec!["diabetes"]);
    assert_eq!(d.clinical_status.as_deref(), Some("active"));
    assert_eq!(d.category.as_deref(), Some("problem-list-item"));
    assert_eq!(
        d.onset.as_ref().unwrap().precision,
        Some(dates::Precision::Month)
    );
    assert!(has_flag(&r.flags, "partial-date"));
    // encounter diagnosis by vendor text, SNOMED only, hypertension
    let raw = br#"{"resourceType":"Condition","id":"c2","category":[{"text":"Encounter Diagnosis"}],
      "code":{"coding":[{"system":"http://snomed.info/sct","code":"59621000"}]},"onsetDateTime":"2023-02-30"}"#;
    let n = normalize("Condition", raw, &ctx());
    let Detail::Condition(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.groups, vec!["hypertension"]);
    assert_eq!(d.category.as_deref(), Some("encounter-diagnosis"));
    assert!(d.onset.as_ref().unwrap().utc.is_none());
    assert!(has_flag(&n.rows[0].flags, "invalid-date"));
    assert!(has_flag(&n.rows[0].flags, "no-clinical-status"));
    // I50 range
    let raw = br#"{"resourceType":"Condition","id":"c3","code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"I50.22"}]}}"#;
    let Detail::Condition(d) = &normalize("Condition", raw, &ctx()).rows[0].detail else {
        panic!()
    };
    assert_eq!(d.groups, vec!["heart-failure"]);
    let chapter = d.chapter.as_ref().unwrap();
    assert_eq!(chapter.number, "9");
    assert_eq!(chapter.title, "Diseases of the circulatory system");
}

#[test]
fn medication_stale_and_ndc() {
    let raw = br#"{"resourceType":"MedicationRequest","id":"m1","status":"active","intent":"order",
      "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"860975"}]},
      "subject":{"reference":"Patient/p1"},"authoredOn":"2022-01-10"}"#;
    let n = normalize("MedicationRequest", raw, &ctx());
    let r = &n.rows[0];
    let Detail::Medication(d) = &r.detail else {
        panic!()
    };
    assert!(d.probably_stale);
    assert_eq!(d.ingredient_rxcui.as_deref(), Some("6809"));
    assert!(has_flag(&r.flags, "probably-stale"));
    // recent: not stale
    let raw = br#"{"resourceType":"MedicationRequest","id":"m2","status":"active","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"6809"}]},"authoredOn":"2026-06-01"}"#;
    let Detail::Medication(d) = &normalize("MedicationRequest", raw, &ctx()).rows[0].detail else {
        panic!()
    };
    assert!(!d.probably_stale);
    // old but validity period reaching the future: not stale
    let raw = br#"{"resourceType":"MedicationRequest","id":"m3","status":"active","medicationCodeableConcept":{"text":"metformin"},"authoredOn":"2022-01-01",
      "dispenseRequest":{"validityPeriod":{"start":"2022-01-01","end":"2027-01-01"},"numberOfRepeatsAllowed":3}}"#;
    let n = normalize("MedicationRequest", raw, &ctx());
    let Detail::Medication(d) = &n.rows[0].detail else {
        panic!()
    };
    assert!(!d.probably_stale);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Inferred
    );
    // NDC with a user mapping -> mapped; contained medication
    let c = ctx().with_mappings(vec![LocalMapping {
        source_system: "http://hl7.org/fhir/sid/ndc".into(),
        source_code: "99999-0123-01".into(),
        target_system: "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        target_code: "860975".into(),
        target_display: None,
    }]);
    let raw = br##"{"resourceType":"MedicationRequest","id":"m4","status":"completed",
      "contained":[{"resourceType":"Medication","id":"med","code":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"99999-0123-01"}]}}],
      "medicationReference":{"reference":"#med"},"authoredOn":"2020-01-01"}"##;
    let n = normalize("MedicationRequest", raw, &c);
    let Detail::Medication(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.medication_source, "contained");
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Mapped
    );
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().code.as_deref(),
        Some("860975")
    );
    assert!(!d.probably_stale);
}

#[test]
fn ndc_through_starter_map_then_replaced_by_a_release() {
    // 4-4-2 NDC as printed on the package: normalised to 00093-1113-10
    let raw = br#"{"resourceType":"MedicationRequest","id":"m","status":"active","authoredOn":"2026-10-01","medicationCodeableConcept":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"0093-1113-10"}]}}"#;
    let n = normalize("MedicationRequest", raw, &ctx());
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mapped);
    assert_eq!(code.rule, "ndc-rxnorm-table");
    assert_eq!(code.code.as_deref(), Some("314076"));
    assert_eq!(code.table_version.as_deref(), Some("aqueduct-ndc-2026.2"));
    let Detail::Medication(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.ingredient_rxcui.as_deref(), Some("29046"));
    // a loaded release replaces the starter map: a pair it does not carry is not kept
    let mut t = Terminology::embedded();
    t.load_rxnsat(
        std::io::Cursor::new("860975|||1|AUI|860975|AT1||NDC|RXNORM|99999012301|N|4096|\n"),
        "rxnorm-2026-11",
    )
    .unwrap();
    let n = normalize(
        "MedicationRequest",
        raw,
        &NormalizeContext::new(Arc::new(t)),
    );
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Unmapped, "{code:?}");
}

#[test]
fn ndc_through_loaded_rxnsat() {
    let mut t = Terminology::embedded();
    t.load_rxnsat(
        std::io::Cursor::new("860975|||1|AUI|860975|AT1||NDC|RXNORM|99999012301|N|4096|\n"),
        "test",
    )
    .unwrap();
    let c = NormalizeContext::new(Arc::new(t));
    let raw = br#"{"resourceType":"MedicationRequest","id":"m","status":"stopped","medicationCodeableConcept":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"99999-0123-01"}]}}"#;
    let n = normalize("MedicationRequest", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mapped);
    assert_eq!(code.rule, "ndc-rxnorm-table");
    assert_eq!(code.table_version.as_deref(), Some("test"));
}

#[test]
fn encounter_classes() {
    let cases: &[(&str, &str)] = &[
        (
            r#""class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"VR"}"#,
            "telehealth",
        ),
        (r#""class":{"code":"virtual"}"#, "telehealth"),
        (
            r#""class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"type":[{"text":"Video Visit"}]"#,
            "telehealth",
        ),
        (
            r#""class":{"code":"AMB"},"serviceType":{"text":"Telehealth"}"#,
            "telehealth",
        ),
        (
            r#""class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"IMP"}"#,
            "inpatient",
        ),
        (
            r#""class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"EMER"}"#,
            "emergency",
        ),
        (r#""class":[{"coding":[{"code":"AMB"}]}]"#, "outpatient"),
        (r#""class":{"code":"HH"}"#, "other"),
        (r#""type":[{"text":"Office Visit"}]"#, "outpatient"),
        (
            r#""class":{"code":"AMB"},"type":[{"text":"Virtual colonoscopy"}]"#,
            "outpatient",
        ),
    ];
    for (body, expected) in cases {
        let raw = format!(
            r#"{{"resourceType":"Encounter","id":"e","status":"finished",{body},"period":{{"start":"2024-01-01T10:00:00Z"}}}}"#
        );
        let n = normalize("Encounter", raw.as_bytes(), &ctx());
        let Detail::Encounter(d) = &n.rows[0].detail else {
            panic!()
        };
        assert_eq!(d.class, *expected, "{body}");
    }
}

#[test]
fn patient_demographics() {
    let raw = br#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:oid:1.2.3","value":"MRN1"},{"value":"nosys"}],
      "name":[{"use":"nickname","given":["Bob"]},{"use":"official","family":"Smith","given":["Robert","J"]}],
      "gender":"M","birthDate":"1970-05","telecom":[{"system":"phone","value":"555-0100"}],
      "address":[{"line":["1 Main St"],"city":"Springfield","state":"IL","postalCode":"62701"}]}"#;
    let n = normalize("Patient", raw, &ctx());
    let r = &n.rows[0];
    assert_eq!(r.patient_id.as_deref(), Some("p1"));
    assert!(r.code.is_none());
    let Detail::Patient(d) = &r.detail else {
        panic!()
    };
    assert_eq!(d.names[0].family.as_deref(), Some("Smith"));
    assert_eq!(d.gender.as_deref(), Some("male"));
    assert_eq!(
        d.birth_date.as_ref().unwrap().precision,
        Some(dates::Precision::Month)
    );
    assert_eq!(d.identifiers.len(), 2);
    assert!(has_flag(&r.flags, "identifier-without-system"));
    assert!(has_flag(&r.flags, "gender-normalized"));
    assert_eq!(d.addresses[0].city.as_deref(), Some("Springfield"));
}

#[test]
fn other_kinds() {
    let c = ctx();
    let raw = br#"{"resourceType":"Immunization","id":"i","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"208"}]},"patient":{"reference":"Patient/p"},"occurrenceDateTime":"2021-04-01"}"#;
    let n = normalize("Immunization", raw, &c);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Standard
    );
    assert!(
        n.rows[0]
            .code
            .as_ref()
            .unwrap()
            .display
            .as_deref()
            .unwrap()
            .contains("Pfizer")
    );
    let raw = br#"{"resourceType":"AllergyIntolerance","id":"a","criticality":"HIGH","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"723"}]},
      "patient":{"reference":"Patient/p"},"reaction":[{"manifestation":[{"text":"Hives"}],"severity":"moderate"}]}"#;
    let n = normalize("AllergyIntolerance", raw, &c);
    let Detail::Allergy(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.criticality.as_deref(), Some("high"));
    assert_eq!(d.reactions[0].manifestations, vec!["Hives"]);
    let raw = br#"{"resourceType":"DiagnosticReport","id":"d","status":"final","code":{"text":"CT head"},"presentedForm":[{"contentType":"application/pdf","size":1234}]}"#;
    let n = normalize("DiagnosticReport", raw, &c);
    let Detail::DiagnosticReport(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.form, "narrative-only");
    assert!(has_flag(&n.rows[0].flags, "narrative-only"));
    let raw = br#"{"resourceType":"DocumentReference","id":"x","status":"current","type":{"coding":[{"system":"http://loinc.org","code":"34133-9"}]},
      "content":[{"attachment":{"contentType":"application/pdf","size":2048,"url":"Binary/1"}},{"attachment":{"contentType":"text/xml","data":"PD94"}}]}"#;
    let n = normalize("DocumentReference", raw, &c);
    let Detail::Document(d) = &n.rows[0].detail else {
        panic!()
    };
    assert!(d.machine_readable);
    assert_eq!(d.contents[0].format_class, "binary");
    assert_eq!(d.contents[0].size, Some(2048));
    assert_eq!(d.contents[1].format_class, "structured");
    let raw = br#"{"resourceType":"Procedure","id":"pr","status":"completed","code":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"99213"}]},"performedPeriod":{"start":"2024-01-01T10:00:00Z","end":"2024-01-01T11:00:00Z"}}"#;
    let n = normalize("Procedure", raw, &c);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Standard
    );
}

#[test]
fn bad_input_is_flagged_not_fatal() {
    let c = ctx();
    let n = normalize("Observation", b"not json", &c);
    assert!(n.rows.is_empty());
    assert!(has_flag(&n.flags, "unparseable"));
    let n = normalize("Observation", b"{}", &c);
    assert_eq!(n.rows.len(), 1);
    assert!(has_flag(&n.flags, "missing-id"));
    let n = normalize(
        "Observation",
        br#"{"resourceType":"Condition","id":"x"}"#,
        &c,
    );
    assert!(has_flag(&n.flags, "resource-type-mismatch"));
    let n = normalize("Basic", br#"{"resourceType":"Basic","id":"x"}"#, &c);
    assert!(has_flag(&n.flags, "unsupported-type"));
    // wrong shapes everywhere
    let raw = br#"{"resourceType":"Observation","id":"x","code":"2345-7","category":{"text":"lab"},"subject":[1,2],
      "effectiveDateTime":20240101,"valueQuantity":{"value":{"x":1}},"component":"nope","interpretation":7}"#;
    let n = normalize("Observation", raw, &c);
    assert_eq!(n.rows.len(), 1);
    assert!(has_flag(&n.rows[0].flags, "malformed-field"));
    assert!(has_flag(&n.rows[0].flags, "invalid-date"));
    assert!(has_flag(&n.rows[0].flags, "not-a-number"));
    // escapes in strings are decoded
    let raw = br#"{"resourceType":"Patient","id":"p\u0031","name":[{"family":"Fran\u00e7ois"}]}"#;
    let n = normalize("Patient", raw, &c);
    assert_eq!(n.lineage.logical_id.as_deref(), Some("p1"));
    let Detail::Patient(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.names[0].family.as_deref(), Some("François"));
}

#[test]
fn bmi_derived_when_absent() {
    let c = ctx();
    let w = normalize("Observation", br#"{"resourceType":"Observation","id":"w","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"effectiveDateTime":"2024-01-02T10:00:00Z","valueQuantity":{"value":80,"unit":"kg"}}"#, &c);
    let h = normalize("Observation", br#"{"resourceType":"Observation","id":"h","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"effectiveDateTime":"2023-12-01T10:00:00Z","valueQuantity":{"value":70,"unit":"[in_i]"}}"#, &c);
    let rows = vec![
        ("Observation/w".to_string(), &w.rows[0]),
        ("Observation/h".to_string(), &h.rows[0]),
    ];
    let bmi = derive_bmi(&rows, 365);
    assert_eq!(bmi.len(), 1);
    let Detail::Observation(d) = &bmi[0].detail else {
        panic!()
    };
    // 80 / 1.778^2 = 25.3
    assert_eq!(d.value.as_ref().unwrap().canonical_value, Some(25.3));
    assert_eq!(d.derived_from, vec!["Observation/w", "Observation/h"]);
    assert_eq!(bmi[0].code.as_ref().unwrap().rule, "derived-bmi");
    // a BMI already present that day: nothing derived
    let b = normalize("Observation", br#"{"resourceType":"Observation","id":"b","code":{"coding":[{"system":"http://loinc.org","code":"39156-5"}]},"effectiveDateTime":"2024-01-02T11:00:00Z","valueQuantity":{"value":25.3,"unit":"kg/m2"}}"#, &c);
    let rows = vec![
        ("Observation/w".to_string(), &w.rows[0]),
        ("Observation/h".to_string(), &h.rows[0]),
        ("Observation/b".to_string(), &b.rows[0]),
    ];
    assert!(derive_bmi(&rows, 365).is_empty());
}

#[test]
fn rows_serialize_to_json() {
    let raw = br#"{"resourceType":"Observation","id":"g1","code":{"coding":[{"system":"http://loinc.org","code":"2345-7"}]},"effectiveDateTime":"2024-03-01","valueQuantity":{"value":5.5,"unit":"mmol/L"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let s = serde_json::to_string(&n.rows[0]).unwrap();
    assert!(s.contains("\"canonical_unit\":\"mg/dL\""), "{s}");
    assert!(s.contains("\"resolution\":\"standard\""));
}

#[test]
fn encounter_local_mapping_and_unrecognised() {
    let raw = br#"{"resourceType":"Encounter","id":"e","class":{"system":"urn:oid:1.2.3","code":"TELE-V"},"period":{"start":"2024-01-01T10:00:00Z"}}"#;
    let n = normalize("Encounter", raw, &ctx());
    let Detail::Encounter(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.class, "other");
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Unmapped
    );
    let c = ctx().with_mappings(vec![LocalMapping {
        source_system: "urn:oid:1.2.3".into(),
        source_code: "TELE-V".into(),
        target_system: ACT_CODE.into(),
        target_code: "VR".into(),
        target_display: None,
    }]);
    let n = normalize("Encounter", raw, &c);
    let Detail::Encounter(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.class, "telehealth");
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Mapped
    );
    // bare string class
    let raw = br#"{"resourceType":"Encounter","id":"e","class":"EMER"}"#;
    let n = normalize("Encounter", raw, &ctx());
    let Detail::Encounter(d) = &n.rows[0].detail else {
        panic!()
    };
    assert_eq!(d.class, "emergency");
    assert!(has_flag(&n.rows[0].flags, "malformed-field"));
}

#[test]
fn value_with_components_is_flagged() {
    let raw = br#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"effectiveDateTime":"2024-01-01T00:00:00Z",
      "valueQuantity":{"value":70,"unit":"/min"},"component":[{"code":{"text":"rhythm"},"valueString":"regular"}]}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(n.rows.len(), 1);
    assert!(has_flag(&n.rows[0].flags, "components-not-split"));
}

#[test]
fn unknown_unit_is_not_converted() {
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}]},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":53,"unit":"mmol/mol"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let v = obs(&n, 0).value.clone().unwrap();
    assert_eq!(v.canonical_value, None);
    // IFCC mmol/mol is not NGSP % by a factor (NGSP = 0.0915 IFCC + 2.15): UCUM would
    // say 5.3 %, the patient's A1c is 7.0 %
    assert_eq!(v.conversion, Some("not-convertible"));
    assert!(has_flag(&n.rows[0].flags, "unit-not-convertible"));
    // INR without unit: dimensionless, fine
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"http://loinc.org","code":"6301-6"}]},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":1.1}}"#;
    let n = normalize("Observation", raw, &ctx());
    assert_eq!(
        obs(&n, 0).value.as_ref().unwrap().canonical_value,
        Some(1.1)
    );
    // HbA1c (canonical %) without a unit: 48 may be IFCC mmol/mol; never assumed to be %
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}]},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":48}}"#;
    let n = normalize("Observation", raw, &ctx());
    let v = obs(&n, 0).value.clone().unwrap();
    assert_eq!(v.canonical_value, None);
    assert_eq!(v.conversion, Some("missing-unit"));
    assert!(has_flag(&n.rows[0].flags, "missing-unit"));
    // creatinine umol/L -> mg/dL through its molar mass (88.4 umol/L per mg/dL)
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[{"system":"http://loinc.org","code":"2160-0"}]},"effectiveDateTime":"2024-01-01","valueQuantity":{"value":88.4,"unit":"umol/L"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let cv = obs(&n, 0).value.as_ref().unwrap().canonical_value.unwrap();
    assert!((cv - 1.0).abs() < 0.001, "{cv}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn weight_canonical_kg_matches_conversion(x in 0.1f64..1000.0, u in prop::sample::select(vec!["kg", "[lb_av]", "g", "[oz_av]", "lbs", "lb"])) {
            let raw = format!(r#"{{"resourceType":"Observation","id":"w","code":{{"coding":[{{"system":"http://loinc.org","code":"29463-7"}}]}},"effectiveDateTime":"2024-01-01","valueQuantity":{{"value":{x},"unit":"{u}"}}}}"#);
            let n = normalize("Observation", raw.as_bytes(), &ctx());
            let v = obs(&n, 0).value.clone().unwrap();
            let ucum = units::to_ucum(u).unwrap();
            let ucum = ucum.as_str();
            let expected = units::convert(x, ucum, "kg").unwrap();
            let got = v.canonical_value.unwrap();
            prop_assert!((got - expected).abs() <= 1e-9 * expected.abs().max(1.0));
            // and back to the original unit
            let back = units::convert(got, "kg", ucum).unwrap();
            prop_assert!((back - x).abs() <= 1e-9 * x.abs().max(1.0));
        }

        #[test]
        fn glucose_either_unit_agrees(mgdl in 10.0f64..1000.0) {
            let mmol = mgdl / 18.016;
            let a = format!(r#"{{"resourceType":"Observation","id":"a","code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7"}}]}},"effectiveDateTime":"2024-01-01","valueQuantity":{{"value":{mgdl},"unit":"mg/dL"}}}}"#);
            let b = format!(r#"{{"resourceType":"Observation","id":"b","code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7"}}]}},"effectiveDateTime":"2024-01-01","valueQuantity":{{"value":{mmol},"unit":"mmol/L"}}}}"#);
            let va = obs(&normalize("Observation", a.as_bytes(), &ctx()), 0).value.clone().unwrap().canonical_value.unwrap();
            let vb = obs(&normalize("Observation", b.as_bytes(), &ctx()), 0).value.clone().unwrap().canonical_value.unwrap();
            prop_assert!((va - vb).abs() <= 1e-9 * va);
        }

        #[test]
        fn effective_dates_in_resources(y in 1990i32..2030, m in 1u32..=12, d in 1u32..=31) {
            let date = format!("{y:04}-{m:02}-{d:02}");
            let raw = format!(r#"{{"resourceType":"Condition","id":"c","onsetDateTime":"{date}"}}"#);
            let n = normalize("Condition", raw.as_bytes(), &ctx());
            let Detail::Condition(c) = &n.rows[0].detail else { panic!() };
            let onset = c.onset.as_ref().unwrap();
            let valid = chrono::NaiveDate::from_ymd_opt(y, m, d).is_some();
            prop_assert_eq!(onset.utc.is_some(), valid);
            prop_assert_eq!(n.rows[0].flags.iter().any(|f| f.code == "invalid-date"), !valid);
        }
    }
}

#[test]
fn medication_reference_resolved_with_fetched_medication() {
    let raw = br#"{"resourceType":"MedicationRequest","id":"m","status":"active","medicationReference":{"reference":"https://ehr.example/fhir/Medication/abc","display":"Lisinopril"},"authoredOn":"2026-10-01"}"#;
    assert_eq!(medication_reference(raw).as_deref(), Some("abc"));
    let med = br#"{"resourceType":"Medication","id":"abc","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"314076"}]}}"#;
    let n = normalize_with_refs("MedicationRequest", raw, "h".into(), &ctx(), Some(med));
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Standard);
    assert_eq!(code.code.as_deref(), Some("314076"));
    // without it: flagged, text from the display
    let n = normalize("MedicationRequest", raw, &ctx());
    assert!(has_flag(&n.rows[0].flags, "medication-by-reference"));
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Inferred
    );
    assert_eq!(
        medication_reference(br##"{"medicationReference":{"reference":"#x"}}"##),
        None
    );
}

fn flag_detail<'a>(flags: &'a [Flag], code: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.detail.as_str())
}

#[test]
fn loinc_labelled_local_code_is_mislabelled_and_resolved_by_text() {
    // athenahealth sends local numbers under the LOINC system URI
    let raw = br#"{"resourceType":"Observation","id":"a1c","status":"final",
      "code":{"coding":[{"system":"http://loinc.org","code":"31337"}],"text":"Hemoglobin A1c"},
      "subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-02-11",
      "valueQuantity":{"value":7.2,"unit":"%"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let row = &n.rows[0];
    let code = row.code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mislabelled, "{code:?}");
    assert_eq!(code.rule, "text-match");
    assert_eq!(code.system.as_deref(), Some("http://loinc.org"));
    assert_eq!(code.code.as_deref(), Some("4548-4"));
    assert!(code.confidence.unwrap() >= 0.9);
    // the source code is kept as received
    assert_eq!(code.source_system.as_deref(), Some("http://loinc.org"));
    assert_eq!(code.source_code.as_deref(), Some("31337"));
    assert_eq!(code.source_text.as_deref(), Some("Hemoglobin A1c"));
    let why = flag_detail(&row.flags, "code-mislabelled").unwrap();
    assert!(
        why.contains("31337") && why.contains("check digit"),
        "{why}"
    );
    // the resolved LOINC drives the rest: a lab, its unit checked against 4548-4's
    assert_eq!(obs(&n, 0).class, "laboratory");
    assert_eq!(
        obs(&n, 0).value.as_ref().unwrap().canonical_value,
        Some(7.2)
    );
    // the stored JSON names the kind
    let json = serde_json::to_string(row).unwrap();
    assert!(json.contains(r#""resolution":"mislabelled""#), "{json}");
}

#[test]
fn mislabelled_codes_in_every_system_fall_back_like_local_codes() {
    let c = ctx();
    // no text: unmapped (the review queue), the mislabelled code as the source
    let raw = br#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://loinc.org","code":"3953"}]},"effectiveDateTime":"2024-01-01"}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Unmapped);
    assert_eq!(code.rule, "unmapped-code");
    assert_eq!(code.source_code.as_deref(), Some("3953"));
    assert!(has_flag(&n.rows[0].flags, "code-mislabelled"));
    // beside a local coding, the mislabelled one is the source code (what was meant)
    let raw = br#"{"resourceType":"Observation","id":"z","code":{"coding":[{"system":"urn:oid:1.2.3","code":"L-77"},{"system":"http://loinc.org","code":"3953"}]},"effectiveDateTime":"2024-01-01"}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.source_code.as_deref(), Some("3953"));
    assert_eq!(code.source_system.as_deref(), Some("http://loinc.org"));
    // text that matches nothing well: unmapped too, never a guess
    let raw = br#"{"resourceType":"Observation","id":"y","code":{"coding":[{"system":"http://loinc.org","code":"31337"}],"text":"Send-out misc 4"},"effectiveDateTime":"2024-01-01"}"#;
    let n = normalize("Observation", raw, &c);
    assert_eq!(
        n.rows[0].code.as_ref().unwrap().resolution,
        Resolution::Unmapped
    );
    // SNOMED CT with a wrong Verhoeff digit (38341003 is hypertensive disorder)
    let raw = br#"{"resourceType":"Condition","id":"c","code":{"coding":[{"system":"http://snomed.info/sct","code":"38341004"}],"text":"Hypertension"}}"#;
    let n = normalize("Condition", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mislabelled, "{code:?}");
    assert_eq!(code.source_code.as_deref(), Some("38341004"));
    assert_ne!(code.code.as_deref(), Some("38341004"));
    assert!(
        flag_detail(&n.rows[0].flags, "code-mislabelled")
            .unwrap()
            .contains("38341004")
    );
    // a SNOMED CT description id is not a concept
    let raw = br#"{"resourceType":"Condition","id":"d","code":{"coding":[{"system":"http://snomed.info/sct","code":"197761014"}]}}"#;
    let n = normalize("Condition", raw, &c);
    assert!(
        flag_detail(&n.rows[0].flags, "code-mislabelled")
            .unwrap()
            .contains("partition")
    );
    // ICD-10-CM, RxNorm and CVX labels on codes of the wrong shape
    for (rt, body) in [
        (
            "Condition",
            r#"{"resourceType":"Condition","id":"i","code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"250.00"}]}}"#,
        ),
        (
            "MedicationRequest",
            r#"{"resourceType":"MedicationRequest","id":"m","status":"active","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"RX-860975"}]},"authoredOn":"2026-01-01"}"#,
        ),
        (
            "Immunization",
            r#"{"resourceType":"Immunization","id":"v","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"2080"}]}}"#,
        ),
        (
            "MedicationRequest",
            r#"{"resourceType":"MedicationRequest","id":"n","status":"active","medicationCodeableConcept":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"71-0155-23"}]},"authoredOn":"2026-01-01"}"#,
        ),
    ] {
        let n = normalize(rt, body.as_bytes(), &c);
        assert!(has_flag(&n.rows[0].flags, "code-mislabelled"), "{body}");
        assert_eq!(
            n.rows[0].code.as_ref().unwrap().resolution,
            Resolution::Unmapped,
            "{body}"
        );
    }
}

#[test]
fn a_valid_coding_beside_a_mislabelled_one_is_standard() {
    let raw = br#"{"resourceType":"Observation","id":"a","code":{"coding":[
        {"system":"http://loinc.org","code":"31337"},
        {"system":"http://loinc.org","code":"4548-4"}],"text":"HbA1c"},
      "effectiveDateTime":"2024-01-01","valueQuantity":{"value":6.1,"unit":"%"}}"#;
    let n = normalize("Observation", raw, &ctx());
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Standard);
    assert_eq!(code.code.as_deref(), Some("4548-4"));
    assert!(
        has_flag(&n.rows[0].flags, "code-mislabelled"),
        "still reported"
    );
}

#[test]
fn a_mislabelled_code_can_be_mapped_by_the_user() {
    let c = ctx().with_mappings([LocalMapping {
        source_system: "http://loinc.org".into(),
        source_code: "3953".into(),
        target_system: "http://loinc.org".into(),
        target_code: "2345-7".into(),
        target_display: None,
    }]);
    let raw = br#"{"resourceType":"Observation","id":"x","code":{"coding":[{"system":"http://loinc.org","code":"3953"}]},"effectiveDateTime":"2024-01-01"}"#;
    let n = normalize("Observation", raw, &c);
    let code = n.rows[0].code.as_ref().unwrap();
    assert_eq!(code.resolution, Resolution::Mapped);
    assert_eq!(code.code.as_deref(), Some("2345-7"));
    assert!(has_flag(&n.rows[0].flags, "code-mislabelled"));
}

#[test]
fn ndc_forms_and_npi_identifiers() {
    let c = ctx();
    // the 4-4-2 form and both 11-digit forms reach the NDC table alike (lisinopril 10 mg,
    // 00093111310 -> RxCUI 314076 in RxNorm's own RXNSAT)
    for code in ["0093-1113-10", "00093-1113-10", "00093111310"] {
        let body = format!(
            r#"{{"resourceType":"MedicationRequest","id":"m","status":"active","medicationCodeableConcept":{{"coding":[{{"system":"http://hl7.org/fhir/sid/ndc","code":"{code}"}}]}},"authoredOn":"2026-01-01"}}"#
        );
        let n = normalize("MedicationRequest", body.as_bytes(), &c);
        let got = n.rows[0].code.as_ref().unwrap();
        assert_eq!(got.resolution, Resolution::Mapped, "{code}");
        assert_eq!(got.code.as_deref(), Some("314076"), "{code}");
    }
    // ten bare digits: a real NDC shape whose segments are unknown, not a mislabel
    let body = br#"{"resourceType":"MedicationRequest","id":"m","status":"active","medicationCodeableConcept":{"coding":[{"system":"http://hl7.org/fhir/sid/ndc","code":"0071015523"}],"text":"zzz unknown drug"},"authoredOn":"2026-01-01"}"#;
    let n = normalize("MedicationRequest", body, &c);
    assert!(has_flag(&n.rows[0].flags, "ndc-ambiguous"));
    assert!(!has_flag(&n.rows[0].flags, "code-mislabelled"));
    // NPIs are checked with the 80840 prefix
    let body = br#"{"resourceType":"Patient","id":"p","identifier":[
        {"system":"http://hl7.org/fhir/sid/us-npi","value":"1234567893"},
        {"system":"http://hl7.org/fhir/sid/us-npi","value":"1234567890"}]}"#;
    let n = normalize("Patient", body, &c);
    let bad: Vec<&Flag> = n.rows[0]
        .flags
        .iter()
        .filter(|f| f.code == "invalid-npi")
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", n.rows[0].flags);
    assert!(bad[0].detail.starts_with("1234567890"));
}
