//! The completion manifest (Bulk Data Access 2.0 §"Response - Complete Status"), read
//! leniently: a file entry without a usable URL is reported, not fatal; a manifest that is not
//! a JSON object, or has no `output` array, is an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

/// Which array of the manifest a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// Resources.
    Output,
    /// Bundles of DELETE entries (resources deleted since `_since`).
    Deleted,
    /// OperationOutcomes about what could not be exported.
    Error,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Output => "output",
            FileKind::Deleted => "deleted",
            FileKind::Error => "error",
        }
    }
}

/// One file to download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub kind: FileKind,
    pub resource_type: String,
    pub url: String,
    /// The number of resources the server says the file holds, when it says.
    pub count: Option<u64>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The server's time the export reflects (`_since` of the next incremental export).
    pub transaction_time: Option<String>,
    pub request: Option<String>,
    pub requires_access_token: bool,
    pub files: Vec<ManifestFile>,
    /// Entries that could not be used (no URL, not http(s)...), said why.
    pub unusable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not JSON: {0}")]
    NotJson(String),
    #[error("the manifest is not a JSON object")]
    NotObject,
    #[error("the manifest has no `output` array")]
    NoOutput,
}

/// Parses a manifest; file URLs are resolved against `base` (the status URL) when relative.
pub fn parse_manifest(bytes: &[u8], base: &Url) -> Result<Manifest, ManifestError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(ManifestError::NotObject)?;
    let output = obj
        .get("output")
        .and_then(Value::as_array)
        .ok_or(ManifestError::NoOutput)?;
    let mut files = Vec::new();
    let mut unusable = Vec::new();
    let empty = Vec::new();
    for (kind, list) in [
        (FileKind::Output, output),
        (
            FileKind::Deleted,
            obj.get("deleted")
                .and_then(Value::as_array)
                .unwrap_or(&empty),
        ),
        (
            FileKind::Error,
            obj.get("error").and_then(Value::as_array).unwrap_or(&empty),
        ),
    ] {
        for (n, e) in list.iter().enumerate() {
            let rtype = e
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()));
            let url = e
                .get("url")
                .and_then(Value::as_str)
                .and_then(|u| base.join(u).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            let (Some(url), Some(rtype)) = (
                url,
                rtype.or(match kind {
                    FileKind::Error => Some("OperationOutcome"),
                    FileKind::Deleted => Some("Bundle"),
                    FileKind::Output => None,
                }),
            ) else {
                unusable.push(format!(
                    "{}[{n}]: no usable type and http(s) url",
                    kind.as_str()
                ));
                continue;
            };
            files.push(ManifestFile {
                kind,
                resource_type: rtype.to_string(),
                url: url.to_string(),
                count: e.get("count").and_then(Value::as_u64),
            });
        }
    }
    Ok(Manifest {
        transaction_time: obj
            .get("transactionTime")
            .and_then(Value::as_str)
            .map(str::to_string),
        request: obj
            .get("request")
            .and_then(Value::as_str)
            .map(str::to_string),
        requires_access_token: obj
            .get("requiresAccessToken")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        files,
        unusable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://ehr.example/fhir/bulkstatus/1").unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn reads_output_deleted_error() {
        let m = parse_manifest(
            br#"{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":true,
            "output":[{"type":"Patient","url":"https://ehr.example/f/1.ndjson","count":3},{"type":"Observation","url":"f/2.ndjson"}],
            "deleted":[{"type":"Bundle","url":"https://ehr.example/f/d.ndjson"}],
            "error":[{"type":"OperationOutcome","url":"https://ehr.example/f/e.ndjson"}]}"#,
            &base(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.requires_access_token);
        assert_eq!(m.files.len(), 4);
        assert_eq!(m.files[0].count, Some(3));
        assert_eq!(
            m.files[1].url,
            "https://ehr.example/fhir/bulkstatus/f/2.ndjson"
        );
        assert_eq!(m.files[2].kind, FileKind::Deleted);
        assert_eq!(m.files[3].kind, FileKind::Error);
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        assert!(parse_manifest(b"[]", &base()).is_err());
        assert!(parse_manifest(b"{}", &base()).is_err());
        assert!(parse_manifest(b"<html>", &base()).is_err());
        let m = parse_manifest(
            br#"{"output":[{"type":"Patient"},{"url":"ftp://x/y"},{"type":"Patient","url":"file:///etc/passwd"}]}"#,
            &base(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.files.is_empty());
        assert_eq!(m.unusable.len(), 3);
    }
}
