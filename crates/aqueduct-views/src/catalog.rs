//! The shipped ViewDefinitions (US Core types, in `views/`), and loading a user's.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::{View, ViewError};

/// The views shipped with Aqueduct: `(name, ViewDefinition JSON)`, one per US Core type.
pub const BUILTIN: [(&str, &str); 0] = [];

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
    Ok(NamedView { name, view })
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
