//! References inside a resource, by search parameter: what `_include` follows and
//! `_revinclude` looks back along.

use serde_json::Value;

/// Where a reference search parameter points, per FHIR's definitions of the US Core ones.
pub fn paths(param: &str) -> &'static [&'static str] {
    match param {
        "patient" => &["subject", "patient", "beneficiary"],
        "subject" => &["subject"],
        "encounter" => &["encounter", "context.encounter"],
        "medication" => &["medicationReference"],
        "performer" => &["performer", "performer.actor"],
        "requester" => &["requester"],
        "practitioner" => &["participant.individual", "practitioner"],
        "author" => &["author"],
        "organization" => &["managingOrganization", "organization", "payor"],
        "location" => &["location.location", "location"],
        "general-practitioner" => &["generalPractitioner"],
        "target" => &["target"],
        "result" => &["result"],
        "specimen" => &["specimen"],
        "based-on" => &["basedOn"],
        "recorder" => &["recorder"],
        "asserter" => &["asserter"],
        _ => &[],
    }
}

fn collect<'a>(v: &'a Value, keys: &[&str], out: &mut Vec<&'a str>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| collect(x, keys, out)),
        Value::Object(m) => match keys.split_first() {
            None => {
                if let Some(r) = m.get("reference").and_then(Value::as_str) {
                    out.push(r);
                }
            }
            Some((k, rest)) => {
                if let Some(child) = m.get(*k) {
                    collect(child, rest, out);
                }
            }
        },
        _ => {}
    }
}

/// The reference strings of `v` at the paths of `param`.
pub fn references<'a>(v: &'a Value, param: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for p in paths(param) {
        let keys: Vec<&str> = p.split('.').collect();
        collect(v, &keys, &mut out);
    }
    out
}

/// `(type, id)` of a relative or same-server reference (`base` ends with '/').
pub fn target<'a>(r: &'a str, base: Option<&str>) -> Option<(&'a str, &'a str)> {
    let rel = match base {
        Some(b) if r.starts_with(b) => &r[b.len()..],
        _ if r.contains("://") || r.starts_with('#') => return None,
        _ => r,
    };
    let mut it = rel.split('/');
    let (t, id) = (it.next()?, it.next()?);
    (super::ids::valid_type(t) && !id.is_empty()).then_some((t, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_through_arrays() {
        let v = json!({"participant": [{"individual": {"reference": "Practitioner/a"}},
                                       {"individual": {"reference": "Practitioner/b"}}],
                       "subject": {"reference": "Patient/p"}});
        assert_eq!(
            references(&v, "practitioner"),
            vec!["Practitioner/a", "Practitioner/b"]
        );
        assert_eq!(references(&v, "patient"), vec!["Patient/p"]);
        assert_eq!(target("Patient/p", None), Some(("Patient", "p")));
        assert_eq!(
            target("http://x/fhir/Patient/p", Some("http://x/fhir/")),
            Some(("Patient", "p"))
        );
        assert_eq!(target("http://y/Patient/p", Some("http://x/fhir/")), None);
    }
}
