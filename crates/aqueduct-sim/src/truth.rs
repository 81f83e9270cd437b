//! Ground truth for differential tests: every resource that belongs to a patient's whole
//! record — its compartment, linked Patients, resources only `$everything` returns, ones
//! searches leave out (cancelled Encounters, suppressed categories), the shared resources the
//! record references (to closure) and the Binaries its attachments point to — each with the
//! SHA-256 of the exact bytes the server serves for it. Served by `/admin/truth...`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::generator::{Resource, Version, binary_resource_json};
use crate::server::SimState;

/// How a correct client reaches a resource of the record, and why a server may withhold it:
/// hints for differential tests, which expect a withheld resource to be reported missing
/// (partial), not found.
fn reachability(st: &SimState, r: &Resource, v: &Version) -> (&'static str, Option<&'static str>) {
    let p = &st.personality;
    let via = if p.everything_only_types.iter().any(|t| t == r.rtype) || p.search_disabled {
        "everything"
    } else if p.serves(r.rtype) {
        "search"
    } else {
        "reference"
    };
    let Some(rule) = p.types.get(r.rtype) else {
        return (via, None);
    };
    let withheld = if v
        .index
        .category
        .iter()
        .any(|c| rule.suppressed_categories.contains(c))
    {
        Some("suppressed-category")
    } else if rule.required_any.iter().all(|x| x == "category")
        && !rule.required_any.is_empty()
        && rule
            .allowed_categories
            .as_ref()
            .is_some_and(|allowed| !v.index.category.iter().any(|c| allowed.contains(c)))
    {
        Some("category-refused")
    } else if p.drop_scope_types.iter().any(|t| t == r.rtype) {
        Some("scope-never-granted")
    } else {
        None
    };
    let via = if rule
        .excluded_statuses
        .iter()
        .any(|s| v.index.status.as_deref() == Some(s.as_str()))
    {
        "reference"
    } else {
        via
    };
    (via, withheld)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `Type/id` of a literal reference in any form the generator writes: relative, absolute on
/// this server (either spelling of the base path), with or without `/_history/N`.
fn reference_target(s: &str) -> Option<(String, String)> {
    if s.starts_with('#') || s.starts_with("urn:") {
        return None;
    }
    let s = s.split(['?', '#']).next()?;
    let mut parts: Vec<&str> = s.split('/').filter(|x| !x.is_empty()).collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let id = parts.pop()?;
    let rtype = parts.pop()?;
    rtype
        .starts_with(|c: char| c.is_ascii_uppercase())
        .then(|| (rtype.to_string(), id.to_string()))
}

fn collect_references(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => out.extend(reference_target(s)),
                    _ => collect_references(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_references(x, out)),
        _ => {}
    }
}

/// The shared resources (Practitioner, Organization, Location, Medication, ...) these
/// resources reference, followed to closure, in first-seen order.
pub fn shared_closure(st: &SimState, resources: &[Arc<[u8]>]) -> Vec<(String, String)> {
    let ctx = &st.store.ctx;
    let stale = st.stale();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut queue: VecDeque<(String, String)> = VecDeque::new();
    for bytes in resources {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            let mut refs = vec![];
            collect_references(&v, &mut refs);
            queue.extend(refs);
        }
    }
    while let Some((t, id)) = queue.pop_front() {
        if !ctx.is_shared(&t) || !seen.insert((t.clone(), id.clone())) {
            continue;
        }
        let Some(found) = st.store.find(&t, &id) else {
            continue;
        };
        let Some(v) = found.resource().visible(stale).filter(|v| !v.deleted) else {
            continue;
        };
        if let Ok(value) = serde_json::from_slice::<Value>(&v.json) {
            let mut refs = vec![];
            collect_references(&value, &mut refs);
            queue.extend(refs);
        }
        out.push((t, id));
    }
    out
}

/// The whole record of one patient (any of its ids: population id, alias, linked Patient).
pub fn patient(st: &SimState, patient_id: &str) -> Option<Value> {
    let rec = st.store.record_of(patient_id)?;
    let stale = st.stale();
    let mut entries = Vec::new();
    let mut served = Vec::new();
    for r in &rec.resources {
        if let Some(v) = r.visible(stale).filter(|v| !v.deleted) {
            let (via, withheld) = reachability(st, r, v);
            let mut e = json!({"resourceType": r.rtype, "id": r.id, "sha256": sha256_hex(&v.json), "via": via});
            if let Some(w) = withheld {
                e["withheld"] = json!(w);
            }
            entries.push(e);
            served.push(v.json.clone());
        }
    }
    for (t, id) in shared_closure(st, &served) {
        if let Some(found) = st.store.find(&t, &id)
            && let Some(v) = found.resource().visible(stale)
        {
            entries.push(json!({"resourceType": t, "id": id, "sha256": sha256_hex(&v.json), "via": "reference"}));
        }
    }
    for b in &rec.binaries {
        entries.push(json!({
            "resourceType": "Binary", "id": b.id, "sha256": sha256_hex(&b.data), "via": "attachment",
            "contentType": b.content_type,
            "json_sha256": sha256_hex(&binary_resource_json(b)),
        }));
    }
    let key = |e: &Value| {
        (
            e["resourceType"].as_str().unwrap_or("").to_string(),
            e["id"].as_str().unwrap_or("").to_string(),
        )
    };
    entries.sort_by_key(key);
    let own = rec
        .resources
        .first()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let linked: Vec<&str> = rec
        .resources
        .iter()
        .skip(1)
        .filter(|r| r.rtype == "Patient")
        .map(|r| r.id.as_str())
        .collect();
    Some(json!({
        "patient": rec.patient_id,
        "patient_resource_id": own,
        "linked_patients": linked,
        "count": entries.len(),
        "resources": entries,
    }))
}

/// Every patient's whole record.
pub fn population(st: &SimState) -> Value {
    let patients: Vec<Value> = st
        .store
        .patient_ids
        .iter()
        .filter_map(|p| patient(st, p))
        .collect();
    let distinct: BTreeSet<(String, String)> = patients
        .iter()
        .flat_map(|p| p["resources"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["resourceType"].as_str().unwrap_or("").to_string(),
                e["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    json!({
        "patient_ids": st.store.patient_ids,
        "distinct_resources": distinct.len(),
        "patients": patients,
    })
}

#[cfg(test)]
mod tests {
    use super::reference_target;

    #[test]
    fn reference_forms() {
        let t = |s| reference_target(s).map(|(a, b)| format!("{a}/{b}"));
        assert_eq!(t("Practitioner/p1").as_deref(), Some("Practitioner/p1"));
        assert_eq!(
            t("http://h/fhir/R4/Location/l-1/_history/1").as_deref(),
            Some("Location/l-1")
        );
        assert_eq!(t("#med1"), None);
        assert_eq!(t("urn:uuid:abc"), None);
    }
}
