//! BMI derived for a patient from normalized weight and height rows: not the mapping of one
//! resource, but rows computed across several.

use chrono::{DateTime, Duration, Utc};

use super::RULES_VERSION;
use crate::dates::parse_utc;
use crate::model::*;
use crate::terminology::LOINC;

/// BMI rows for a patient's weights that have a height but no BMI the same day.
///
/// Inputs: the patient's normalized observation rows with lineage `(resource_type,
/// logical_id)`. A height is used if measured within `max_height_age_days` before (or on
/// the same day as) the weight; BMI = kg / m^2, rounded to one decimal.
pub fn derive_bmi(
    rows: &[(String, &NormalizedRow)],
    max_height_age_days: i64,
) -> Vec<NormalizedRow> {
    let vital = |r: &NormalizedRow, code: &str| -> Option<(DateTime<Utc>, f64)> {
        let c = r.code.as_ref()?;
        if c.system.as_deref() != Some(LOINC) || c.code.as_deref() != Some(code) {
            return None;
        }
        let Detail::Observation(d) = &r.detail else {
            return None;
        };
        let v = d.value.as_ref()?;
        let at = parse_utc(r.effective.as_ref()?.utc.as_deref()?)?;
        Some((at, v.canonical_value?))
    };
    let bmi_days: Vec<chrono::NaiveDate> = rows
        .iter()
        .filter_map(|(_, r)| vital(r, "39156-5").map(|(t, _)| t.date_naive()))
        .collect();
    let heights: Vec<(DateTime<Utc>, f64, &String)> = rows
        .iter()
        .filter_map(|(id, r)| vital(r, "8302-2").map(|(t, v)| (t, v, id)))
        .collect();
    let mut out = Vec::new();
    for (wid, r) in rows {
        let Some((wt, kg)) = vital(r, "29463-7") else {
            continue;
        };
        if bmi_days.contains(&wt.date_naive()) {
            continue;
        }
        let h = heights
            .iter()
            .filter(|(ht, _, _)| {
                *ht <= wt + Duration::days(1) && wt - *ht <= Duration::days(max_height_age_days)
            })
            .max_by_key(|(ht, _, _)| *ht);
        let Some((_, cm, hid)) = h else { continue };
        if *cm <= 0.0 || kg <= 0.0 {
            continue;
        }
        let m = cm / 100.0;
        let bmi = ((kg / (m * m)) * 10.0).round() / 10.0;
        let mut flags = vec![Flag::new(
            "derived",
            "value",
            "BMI computed from weight and height",
        )];
        if !(5.0..=150.0).contains(&bmi) {
            flags.push(Flag::new(
                "implausible-value",
                "value",
                format!("{bmi} kg/m2"),
            ));
        }
        out.push(NormalizedRow {
            ordinal: 0,
            kind: Kind::Observation,
            patient_id: r.patient_id.clone(),
            status: Some("final".into()),
            effective: r.effective.clone(),
            code: Some(ResolvedCode {
                resolution: Resolution::Standard,
                system: Some(LOINC.into()),
                code: Some("39156-5".into()),
                display: Some("Body mass index (BMI) [Ratio]".into()),
                source_system: None,
                source_code: None,
                source_text: None,
                rule: "derived-bmi",
                table_version: Some(RULES_VERSION.into()),
                confidence: None,
                candidate: None,
            }),
            detail: Detail::Observation(ObservationDetail {
                class: "vital-sign".into(),
                categories: vec!["vital-signs".into()],
                value: Some(ValueOut {
                    kind: "quantity",
                    value: Some(bmi),
                    ucum: Some("kg/m2".into()),
                    canonical_value: Some(bmi),
                    canonical_unit: Some("kg/m2".into()),
                    conversion: Some("identity"),
                    ..Default::default()
                }),
                reference_range: None,
                interpretation: Vec::new(),
                panel_code: None,
                derived_from: vec![wid.clone(), (*hid).clone()],
            }),
            flags,
        });
    }
    out
}
