//! Planning: which searches fetch a patient's resources of one type, in order of preference.
//!
//! A type is fetched by the first *alternative* that the server accepts. An alternative is a
//! set of searches whose union is the type (one plain `patient=` search, or one search per
//! category when the server needs a category). A search the server rejects (400...) is
//! remembered for the connection, so later patients skip it.

use aqueduct_client::VendorProfile;

/// One search: its query parameters and a signature (the parameters without the patient's
/// value) used for probe memory and checkpoint keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub signature: String,
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub label: String,
    /// "plain" or "by-category", the same in full and incremental plans.
    pub kind: String,
    pub searches: Vec<Search>,
}

/// How to fetch one type for one patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePlan {
    pub resource_type: String,
    pub alternatives: Vec<Alternative>,
}

fn search(base: &[(String, String)], extra: &[(String, String)], patient_param: &str) -> Search {
    let mut params: Vec<(String, String)> = base.to_vec();
    params.extend(extra.iter().cloned());
    let mut sig_parts: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "_count")
        .map(|(k, v)| {
            if k == patient_param || k == "_lastUpdated" || k == "_since" {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    sig_parts.sort();
    Search {
        signature: sig_parts.join("&"),
        params,
    }
}

/// Plans the searches of one type. `since` adds `_lastUpdated=gt<since>` (incremental).
pub fn plan_type(
    profile: &VendorProfile,
    resource_type: &str,
    patient_id: &str,
    since: Option<&str>,
) -> TypePlan {
    let ts = profile.type_settings(resource_type);
    let pp = profile.patient_param(resource_type);
    let mut base: Vec<(String, String)> = vec![(pp.clone(), patient_id.to_string())];
    base.extend(ts.extra_params.iter().map(|(k, v)| (k.clone(), v.clone())));
    base.push(("_count".into(), profile.paging.max_page_size.to_string()));

    let plain = |base: &[(String, String)]| Alternative {
        label: "plain".into(),
        kind: "plain".into(),
        searches: vec![search(base, &[], &pp)],
    };
    let by_category = |base: &[(String, String)], cats: &[String]| Alternative {
        label: "by-category".into(),
        kind: "by-category".into(),
        searches: cats
            .iter()
            .map(|c| search(base, &[("category".to_string(), c.clone())], &pp))
            .collect(),
    };
    let for_base = |base: &[(String, String)]| -> Vec<Alternative> {
        let mut alts = Vec::new();
        if !ts.required_categories.is_empty() {
            alts.push(by_category(base, &ts.required_categories));
            alts.push(plain(base));
        } else {
            alts.push(plain(base));
            if !ts.known_categories.is_empty() {
                alts.push(by_category(base, &ts.known_categories));
            }
        }
        alts
    };
    let mut alternatives = Vec::new();
    if let Some(t) = since {
        let mut inc = base.clone();
        inc.push(("_lastUpdated".into(), format!("gt{t}")));
        for mut a in for_base(&inc) {
            a.label = format!("{} (incremental)", a.label);
            alternatives.push(a);
        }
    }
    alternatives.extend(for_base(&base));
    TypePlan {
        resource_type: resource_type.to_string(),
        alternatives,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_categories_come_first_then_plain() {
        let p = VendorProfile::resolve("epic", None).unwrap_or_default();
        let plan = plan_type(&p, "Observation", "p1", None);
        assert_eq!(plan.alternatives.len(), 2);
        assert_eq!(plan.alternatives[0].label, "by-category");
        assert!(plan.alternatives[0].searches.len() > 5);
        let first = &plan.alternatives[0].searches[0];
        assert!(first.params.contains(&("patient".into(), "p1".into())));
        assert!(first.params.contains(&("_count".into(), "1000".into())));
        assert_eq!(first.signature, "category=laboratory&patient");
        assert_eq!(plan.alternatives[1].label, "plain");
    }

    #[test]
    fn extra_params_and_patient_param_come_from_the_profile() {
        let p = VendorProfile::resolve("athena", None).unwrap_or_default();
        let plan = plan_type(&p, "MedicationRequest", "p1", None);
        let s = &plan.alternatives[0].searches[0];
        assert!(s.params.contains(&("intent".into(), "order,plan".into())));
        let plan = plan_type(&p, "Patient", "p1", None);
        assert!(
            plan.alternatives[0].searches[0]
                .params
                .contains(&("_id".into(), "p1".into()))
        );
    }

    #[test]
    fn incremental_plans_fall_back_to_full_searches() {
        let p = VendorProfile::resolve("generic", None).unwrap_or_default();
        let plan = plan_type(&p, "Condition", "p1", Some("2026-01-01T00:00:00Z"));
        assert_eq!(plan.alternatives.len(), 2);
        assert!(
            plan.alternatives[0].searches[0]
                .params
                .contains(&("_lastUpdated".into(), "gt2026-01-01T00:00:00Z".into()))
        );
        assert!(
            !plan.alternatives[1].searches[0]
                .params
                .iter()
                .any(|(k, _)| k == "_lastUpdated")
        );
    }
}
