//! Merges and links of patient records (ADT A18/A34/A35/A39/A40 merge, A24 link, A37 unlink),
//! recorded as identity events for patient matching: each becomes a FHIR `Linkage` (merge: the
//! surviving record is the source, the prior one historical; link: both are sources, unlink:
//! the same Linkage inactive) besides the Patient.link entries a merge writes.

use serde_json::{Value, json};

use super::{Merge, Out, fhir_id, reference};

/// One merge, link or unlink of patient records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    /// `merge`, `link` or `unlink`.
    pub kind: &'static str,
    /// The ADT event (`A40`, `A24`...).
    pub event: String,
    /// Patient ids: for a merge the surviving record first, then the prior one.
    pub patients: Vec<String>,
}

/// ADT events whose MRG segment names a prior record merged into the PID's.
pub(super) fn is_merge(event: &str) -> bool {
    matches!(event, "A18" | "A34" | "A35" | "A36" | "A39" | "A40" | "A41")
}

/// Adds the identity events of an ADT message (its merges, or a link between its two PIDs).
pub(super) fn record(out: &mut Out<'_, '_>, merges: &[Merge], events: &mut Vec<IdentityEvent>) {
    for m in merges {
        let id = fhir_id(&format!("merge-{}-{}", m.prior_id, m.surviving_id));
        let mut l = out.base("Linkage", &id);
        l.insert("active".into(), json!(true));
        l.insert(
            "item".into(),
            json!([
                { "type": "source", "resource": reference("Patient", &m.surviving_id) },
                { "type": "historical", "resource": reference("Patient", &m.prior_id) },
            ]),
        );
        out.push("Linkage", None, l);
        events.push(IdentityEvent {
            kind: "merge",
            event: out.event.clone(),
            patients: vec![m.surviving_id.clone(), m.prior_id.clone()],
        });
    }
    let (kind, active) = match out.event.as_str() {
        "A24" => ("link", true),
        "A37" => ("unlink", false),
        _ => return,
    };
    let mut ids: Vec<String> = out
        .resources
        .iter()
        .filter(|r| r.resource_type == "Patient")
        .map(|r| r.id.clone())
        .collect();
    ids.dedup();
    if ids.len() < 2 {
        out.ctx.warnings.push(format!(
            "ADT^{} names fewer than two patients: no link",
            out.event
        ));
        return;
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    // one Linkage per pair, whatever the order: A37 deactivates what A24 made
    let (lo, hi) = if a <= b { (&a, &b) } else { (&b, &a) };
    let id = fhir_id(&format!("link-{lo}-{hi}"));
    let mut l = out.base("Linkage", &id);
    l.insert("active".into(), json!(active));
    l.insert(
        "item".into(),
        Value::Array(
            [&a, &b]
                .iter()
                .map(|p| json!({ "type": "source", "resource": reference("Patient", p) }))
                .collect(),
        ),
    );
    out.push("Linkage", None, l);
    events.push(IdentityEvent {
        kind,
        event: out.event.clone(),
        patients: vec![a, b],
    });
}
