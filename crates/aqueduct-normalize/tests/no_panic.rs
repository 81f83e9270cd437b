#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_normalize::*;
use proptest::prelude::*;

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|n| serde_json::json!(n)),
        ".{0,12}".prop_map(serde_json::Value::String),
        prop::sample::select(vec![
            "http://loinc.org",
            "2345-7",
            "8480-6",
            "85354-9",
            "mg/dL",
            "mmol/L",
            "[lb_av]",
            "Cel",
            "2023-02-30",
            "2023",
            "2024-01-01T10:00:00",
            "Patient/1",
            "active",
            "VR",
            "#med",
            "http://hl7.org/fhir/sid/ndc",
            "http://unitsofmeasure.org",
            "E11.9",
        ])
        .prop_map(|s| serde_json::Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "code",
            "coding",
            "system",
            "display",
            "text",
            "value",
            "unit",
            "valueQuantity",
            "component",
            "subject",
            "reference",
            "effectiveDateTime",
            "effectivePeriod",
            "start",
            "end",
            "category",
            "referenceRange",
            "low",
            "high",
            "interpretation",
            "name",
            "given",
            "family",
            "birthDate",
            "class",
            "type",
            "serviceType",
            "period",
            "medicationCodeableConcept",
            "medicationReference",
            "contained",
            "resourceType",
            "id",
            "authoredOn",
            "dispenseRequest",
            "validityPeriod",
            "reaction",
            "manifestation",
            "content",
            "attachment",
            "contentType",
            "size",
            "status",
            "clinicalStatus",
            "onsetDateTime",
            "vaccineCode",
            "presentedForm",
            "result",
            "telecom",
            "identifier",
            "address",
            "line",
            "gender",
            "valueString",
            "valueInteger",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..8).prop_map(|m| serde_json::Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json(), t in prop::sample::select(SUPPORTED_TYPES.to_vec())) {
        let ctx = NormalizeContext::new(Arc::new(Terminology::embedded()));
        let bytes = serde_json::to_vec(&v).unwrap();
        let n = normalize(t, &bytes, &ctx);
        // every row is serializable and its ordinal is its index
        for (i, r) in n.rows.iter().enumerate() {
            prop_assert_eq!(r.ordinal as usize, i);
            serde_json::to_string(r).unwrap();
            if let Some(c) = &r.code {
                // an applied code always says where it came from
                if c.resolution != Resolution::None && c.resolution != Resolution::Unmapped {
                    prop_assert!(c.code.is_some());
                    prop_assert!(c.table_version.is_some());
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..200), t in prop::sample::select(SUPPORTED_TYPES.to_vec())) {
        let ctx = NormalizeContext::new(Arc::new(Terminology::embedded()));
        let _ = normalize(t, &b, &ctx);
    }
}
