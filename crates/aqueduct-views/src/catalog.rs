//! The shipped ViewDefinitions (US Core types, in `views/`), and loading a user's.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::{View, ViewError};

/// The views shipped with Aqueduct: `(name, ViewDefinition JSON)`, one per US Core type
/// (and `observation_component`). The files are in the crate's `views/`; copy one to start
/// a view of your own.
pub const BUILTIN: [(&str, &str); 11] = [
    (
        "allergy_intolerance",
        include_str!("../views/allergy_intolerance.json"),
    ),
    ("condition", include_str!("../views/condition.json")),
    (
        "diagnostic_report",
        include_str!("../views/diagnostic_report.json"),
    ),
    (
        "document_reference",
        include_str!("../views/document_reference.json"),
    ),
    ("encounter", include_str!("../views/encounter.json")),
    ("immunization", include_str!("../views/immunization.json")),
    (
        "medication_request",
        include_str!("../views/medication_request.json"),
    ),
    ("observation", include_str!("../views/observation.json")),
    (
        "observation_component",
        include_str!("../views/observation_component.json"),
    ),
    ("patient", include_str!("../views/patient.json")),
    ("procedure", include_str!("../views/procedure.json")),
];

/// Why views could not be loaded.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("{}: cannot be read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}")]
    View {
        origin: String,
        #[source]
        source: ViewError,
    },
    #[error("{origin}: a ViewDefinition needs a `name` (it names the table)")]
    Unnamed { origin: String },
    #[error("two views are named `{name}`")]
    Duplicate { name: String },
    #[error("no view is named `{name}` (known: {known})")]
    Unknown { name: String, known: String },
}

/// A compiled view with the name its table takes.
#[derive(Debug)]
pub struct NamedView {
    pub name: String,
    pub view: View,
    /// The definition as loaded (an export's fingerprint includes it).
    pub definition: Value,
}

fn named(origin: &str, definition: &Value) -> Result<NamedView, CatalogError> {
    let view = View::compile(definition).map_err(|source| CatalogError::View {
        origin: origin.to_string(),
        source,
    })?;
    let Some(name) = view.name().map(str::to_string) else {
        return Err(CatalogError::Unnamed {
            origin: origin.to_string(),
        });
    };
    Ok(NamedView {
        name,
        view,
        definition: definition.clone(),
    })
}

/// Every shipped view, compiled.
pub fn builtin() -> Result<Vec<NamedView>, CatalogError> {
    let mut out = Vec::new();
    for (file, text) in BUILTIN {
        let definition: Value =
            serde_json::from_str(text).map_err(|source| CatalogError::Json {
                path: PathBuf::from(file),
                source,
            })?;
        out.push(named(file, &definition)?);
    }
    Ok(out)
}

/// One ViewDefinition from a JSON file.
pub fn load_file(path: &Path) -> Result<NamedView, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let definition: Value = serde_json::from_str(&text).map_err(|source| CatalogError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    named(&path.display().to_string(), &definition)
}

/// Every `*.json` ViewDefinition in a directory, in file-name order; two of one name are an
/// error.
pub fn load_dir(dir: &Path) -> Result<Vec<NamedView>, CatalogError> {
    let read = |source| CatalogError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out: Vec<NamedView> = Vec::new();
    for f in files {
        let v = load_file(&f)?;
        if out.iter().any(|o| o.name == v.name) {
            return Err(CatalogError::Duplicate { name: v.name });
        }
        out.push(v);
    }
    Ok(out)
}

/// The views named `names` among `views` (all of them when `names` is empty).
pub fn select(views: Vec<NamedView>, names: &[String]) -> Result<Vec<NamedView>, CatalogError> {
    if names.is_empty() {
        return Ok(views);
    }
    let known = views
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut pool: Vec<Option<NamedView>> = views.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for n in names {
        let Some(slot) = pool
            .iter_mut()
            .find(|v| v.as_ref().is_some_and(|v| &v.name == n))
        else {
            return Err(CatalogError::Unknown {
                name: n.clone(),
                known,
            });
        };
        if let Some(v) = slot.take() {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shipped_view_compiles_and_is_named_after_its_file() {
        let views = builtin().unwrap();
        assert_eq!(views.len(), BUILTIN.len());
        for (v, (file, _)) in views.iter().zip(BUILTIN) {
            assert_eq!(v.name, file);
        }
        let types: Vec<&str> = views.iter().map(|v| v.view.resource()).collect();
        for t in [
            "Patient",
            "Observation",
            "Condition",
            "Encounter",
            "MedicationRequest",
            "Immunization",
            "Procedure",
            "AllergyIntolerance",
            "DiagnosticReport",
            "DocumentReference",
        ] {
            assert!(types.contains(&t), "no view of {t}");
        }
    }

    #[test]
    fn the_observation_views_flatten_a_blood_pressure() {
        let views = select(
            builtin().unwrap(),
            &["observation".into(), "observation_component".into()],
        )
        .unwrap();
        let bp = json!({
            "resourceType": "Observation", "id": "bp1", "status": "final",
            "subject": {"reference": "Patient/p1"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80.5, "unit": "mmHg", "code": "mm[Hg]"}}
            ]
        });
        let obs = views[0].view.rows(&bp).unwrap();
        assert_eq!(obs.len(), 1);
        let cols = views[0].view.columns();
        let cell = |name: &str| {
            let i = cols.iter().position(|c| c.name == name).unwrap();
            obs[0][i].clone()
        };
        assert_eq!(cell("patient_id"), crate::Cell::Str("p1".into()));
        assert_eq!(cell("category"), crate::Cell::Str("vital-signs".into()));
        assert_eq!(cell("component_count"), crate::Cell::Int(2));
        let comps = views[1].view.rows(&bp).unwrap();
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[1][3], crate::Cell::Int(1));
        assert_eq!(comps[1][5], crate::Cell::Str("8462-4".into()));
        assert_eq!(comps[1][7], crate::Cell::Dec(80.5));
    }

    #[test]
    fn unknown_view_names_are_refused_with_the_known_ones() {
        let err = select(builtin().unwrap(), &["patients".into()]).unwrap_err();
        assert!(err.to_string().contains("patient, "), "{err}");
    }
}
