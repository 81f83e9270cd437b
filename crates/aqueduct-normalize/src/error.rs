//! Errors of loading tables and of rebuilding from the store.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NormalizeError {
    #[error("cannot load {file} (line {line}): {message}")]
    Load {
        file: String,
        line: u64,
        message: String,
    },
    #[error("store: {0}")]
    Store(#[from] aqueduct_core::StoreError),
    #[error("{0}")]
    Invalid(String),
}

impl NormalizeError {
    pub(crate) fn load(file: &str, line: u64, message: impl std::fmt::Display) -> Self {
        NormalizeError::Load {
            file: file.to_string(),
            line,
            message: message.to_string(),
        }
    }
}
