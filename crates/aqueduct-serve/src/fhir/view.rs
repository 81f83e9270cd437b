//! The two views of a stored resource: `raw` (the bytes exactly as received) and `clean`
//! (ids and references rewritten to facade ids, `meta.source` naming the connection). The
//! store is never rewritten: the clean view is computed per answer.

use aqueduct_core::{StoredNormalized, StoredResource};
use serde_json::Value;

use super::ids::facade_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Raw,
    Clean,
}

/// `meta.source` of the clean view: which connection of the organization it came from.
pub fn source_uri(connection: &str) -> String {
    format!("urn:aqueduct:connection:{connection}")
}

/// Rewrites a relative (`Type/id`, `Type/id/_history/n`) or same-server absolute reference
/// to the facade id; contained (`#x`), logical and foreign references stay as they are.
fn rewrite_reference(r: &str, connection: &str, base: Option<&str>) -> Option<String> {
    let rel = match base {
        Some(b) if r.starts_with(b) => r[b.len()..].trim_start_matches('/'),
        _ if r.contains("://") || r.starts_with('#') || r.starts_with("urn:") => return None,
        _ => r,
    };
    let mut parts = rel.splitn(3, '/');
    let (t, id) = (parts.next()?, parts.next()?);
    if !super::ids::valid_type(t) || id.is_empty() {
        return None;
    }
    Some(match parts.next() {
        Some(rest) => format!("{t}/{}/{rest}", facade_id(connection, id)),
        None => format!("{t}/{}", facade_id(connection, id)),
    })
}

fn rewrite(v: &mut Value, connection: &str, base: Option<&str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("reference") {
                if let Some(new) = rewrite_reference(r, connection, base) {
                    *r = new;
                }
            }
            for (_, child) in m.iter_mut() {
                rewrite(child, connection, base);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, connection, base)),
        _ => {}
    }
}

/// Marks what the clean view added to a resource, so a reader can tell it from the source's.
pub const NORMALIZED_CODING: &str =
    "https://aqueduct.dev/fhir/StructureDefinition/normalized-coding";
pub const NORMALIZED_STATUS: &str =
    "https://aqueduct.dev/fhir/StructureDefinition/normalized-status";
const UCUM: &str = "http://unitsofmeasure.org";

/// Adds the normalized form beside the source's: the standard coding a rule inferred or a
/// reviewer mapped (marked with [`NORMALIZED_CODING`]), the UCUM code of a quantity's unit, and
/// the normalized status ([`NORMALIZED_STATUS`]). Nothing the source sent is changed.
fn enrich(v: &mut Value, resource_type: &str, rows: &[StoredNormalized]) {
    let Some(primary) = rows.iter().find(|r| r.record.ordinal == 0) else {
        return;
    };
    let rec = &primary.record;
    if let (Some(system), Some(code), "inferred" | "mapped") =
        (&rec.code_system, &rec.code, rec.resolution.as_str())
    {
        if let Some(path) = super::params::code_paths(resource_type).first() {
            let cc = v
                .as_object_mut()
                .map(|o| o.entry(*path).or_insert_with(|| serde_json::json!({})));
            if let Some(Value::Object(cc)) = cc {
                let codings = cc
                    .entry("coding")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = codings {
                    let present = list.iter().any(|c| {
                        c["system"].as_str() == Some(system) && c["code"].as_str() == Some(code)
                    });
                    if !present {
                        let mut coding = serde_json::json!({
                            "extension": [{"url": NORMALIZED_CODING, "valueCode": rec.resolution}],
                            "system": system,
                            "code": code,
                            "userSelected": false,
                        });
                        if let Some(d) = &rec.display {
                            coding["display"] = Value::String(d.clone());
                        }
                        list.push(coding);
                    }
                }
            }
        }
    }
    // only two fields of the row are needed: read them without building the whole tree
    let data: RowData = serde_json::from_str(&rec.data).unwrap_or_default();
    // a detail of another shape (another kind of row) is simply not a quantity
    let ucum = data
        .detail
        .and_then(|d| serde_json::from_str::<RowDetail>(d.get()).ok())
        .and_then(|d| d.value)
        .and_then(|v| v.ucum);
    if let Some(ucum) = ucum {
        if let Some(Value::Object(q)) = v.get_mut("valueQuantity") {
            if !q.contains_key("system") && !q.contains_key("code") {
                q.insert("system".into(), Value::String(UCUM.into()));
                q.insert("code".into(), Value::String(ucum));
            }
        }
    }
    if let (Some(status), Some(obj)) = (data.status, v.as_object_mut()) {
        let ext = obj
            .entry("extension")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = ext {
            list.push(serde_json::json!({"url": NORMALIZED_STATUS, "valueCode": status}));
        }
    }
}

/// What the clean view reads of a normalized row's data.
#[derive(Default, serde::Deserialize)]
struct RowData<'a> {
    status: Option<String>,
    #[serde(borrow)]
    detail: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct RowDetail {
    value: Option<RowValue>,
}

#[derive(serde::Deserialize)]
struct RowValue {
    ucum: Option<String>,
}

/// The clean form of a stored resource; None when its bytes are not JSON.
pub fn clean(
    r: &StoredResource,
    base_url: Option<&str>,
    rows: &[StoredNormalized],
) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(&r.bytes).ok()?;
    enrich(&mut v, &r.resource_type, rows);
    let conn = r.connection.connection.as_str();
    rewrite(&mut v, conn, base_url);
    let obj = v.as_object_mut()?;
    obj.insert("id".into(), Value::String(facade_id(conn, &r.logical_id)));
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(m) = meta.as_object_mut() {
        m.insert("source".into(), Value::String(source_uri(conn)));
    }
    Some(v)
}

/// The resource as the view shows it, as JSON text; None when it cannot be shown as JSON.
pub fn render(
    r: &StoredResource,
    view: View,
    base_url: Option<&str>,
    rows: &[StoredNormalized],
) -> Option<String> {
    match view {
        View::Raw => {
            // served byte for byte; bytes that are not JSON cannot sit in a FHIR answer (the
            // fetcher judged them when they arrived; others are checked here)
            if !matches!(r.parse_status, aqueduct_core::ParseStatus::Ok) {
                serde_json::from_slice::<serde::de::IgnoredAny>(&r.bytes).ok()?;
            }
            std::str::from_utf8(&r.bytes).ok().map(str::to_string)
        }
        View::Clean => clean(r, base_url, rows).map(|v| v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_rewritten_only_when_they_point_at_the_source() {
        let b = Some("https://ehr.example/fhir/r4/");
        assert_eq!(
            rewrite_reference("Patient/p1", "epic", b).as_deref(),
            Some("Patient/epic.p1")
        );
        assert_eq!(
            rewrite_reference("https://ehr.example/fhir/r4/Practitioner/x", "epic", b).as_deref(),
            Some("Practitioner/epic.x")
        );
        assert_eq!(
            rewrite_reference("Patient/p1/_history/2", "epic", b).as_deref(),
            Some("Patient/epic.p1/_history/2")
        );
        for keep in [
            "#med1",
            "https://other.example/Patient/1",
            "urn:uuid:1",
            "p1",
        ] {
            assert_eq!(rewrite_reference(keep, "epic", b), None, "{keep}");
        }
    }
}
