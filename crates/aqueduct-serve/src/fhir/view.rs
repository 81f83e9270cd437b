//! The two views of a stored resource: `raw` (the bytes exactly as received) and `clean`
//! (ids and references rewritten to facade ids, `meta.source` naming the connection, the
//! normalized form beside the source's). The store is never rewritten: the clean view is
//! written per answer over the source's bytes ([`super::clean`]).

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
pub(super) fn rewrite_reference(r: &str, connection: &str, base: Option<&str>) -> Option<String> {
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

/// Marks what the clean view added to a resource, so a reader can tell it from the source's.
pub const NORMALIZED_CODING: &str =
    "https://aqueduct.dev/fhir/StructureDefinition/normalized-coding";
pub const NORMALIZED_STATUS: &str =
    "https://aqueduct.dev/fhir/StructureDefinition/normalized-status";
pub(super) const UCUM: &str = "http://unitsofmeasure.org";

/// The standard coding a rule inferred or a reviewer mapped, ready to be written.
pub(super) struct AddedCoding {
    pub system: String,
    pub code: String,
    /// The coding as JSON text, marked with [`NORMALIZED_CODING`].
    pub json: String,
}

impl AddedCoding {
    pub(super) fn new(system: &str, code: &str, display: Option<&str>, resolution: &str) -> Self {
        let mut coding = serde_json::json!({
            "extension": [{"url": NORMALIZED_CODING, "valueCode": resolution}],
            "system": system,
            "code": code,
            "userSelected": false,
        });
        if let Some(d) = display {
            coding["display"] = Value::String(d.to_string());
        }
        Self {
            system: system.to_string(),
            code: code.to_string(),
            json: coding.to_string(),
        }
    }
}

/// What the clean view adds beside what the source sent: the normalized coding, the UCUM code
/// of a quantity's unit and the normalized status (as the JSON text of its extension).
#[derive(Default)]
pub(super) struct Additions {
    pub coding: Option<AddedCoding>,
    pub ucum: Option<String>,
    pub status: Option<String>,
}

impl Additions {
    /// From the resource's normalized rows (its first row is the one that speaks for it).
    pub(super) fn of(rows: &[StoredNormalized]) -> Self {
        let Some(primary) = rows.iter().find(|r| r.record.ordinal == 0) else {
            return Self::default();
        };
        let rec = &primary.record;
        let coding = match (&rec.code_system, &rec.code, rec.resolution.as_str()) {
            (Some(system), Some(code), "inferred" | "mapped") => Some(AddedCoding::new(
                system,
                code,
                rec.display.as_deref(),
                &rec.resolution,
            )),
            _ => None,
        };
        // only two fields of the row are needed: read them without building the whole tree
        let data: RowData = serde_json::from_str(&rec.data).unwrap_or_default();
        // a detail of another shape (another kind of row) is simply not a quantity
        let ucum = data
            .detail
            .and_then(|d| serde_json::from_str::<RowDetail>(d.get()).ok())
            .and_then(|d| d.value)
            .and_then(|v| v.ucum);
        let status = data.status.map(|status| {
            serde_json::json!({"url": NORMALIZED_STATUS, "valueCode": status}).to_string()
        });
        Self {
            coding,
            ucum,
            status,
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

/// Appends the resource as the view shows it, as JSON text, to `out`; false (and nothing
/// appended) when it cannot be shown as JSON.
pub fn render_into(
    r: &StoredResource,
    view: View,
    base_url: Option<&str>,
    rows: &[StoredNormalized],
    out: &mut String,
) -> bool {
    let Ok(text) = std::str::from_utf8(&r.bytes) else {
        return false;
    };
    match view {
        View::Raw => {
            // served byte for byte; bytes that are not JSON cannot sit in a FHIR answer (the
            // fetcher judged them when they arrived; others are checked here)
            if !matches!(r.parse_status, aqueduct_core::ParseStatus::Ok)
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_err()
            {
                return false;
            }
            out.push_str(text);
            true
        }
        View::Clean => {
            let refs = super::clean::Refs {
                connection: &r.connection.connection,
                base: base_url,
            };
            super::clean::clean_into(
                text,
                &r.resource_type,
                &r.logical_id,
                &refs,
                &Additions::of(rows),
                out,
            )
        }
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
