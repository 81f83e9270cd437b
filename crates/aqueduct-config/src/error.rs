use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: String },
    #[error("{origin}{}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!(": key `{k}`")).unwrap_or_default())]
    Invalid {
        origin: String,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    #[error("secret {what}: environment variable {var} is not set")]
    SecretEnvMissing { what: String, var: String },
    #[error("secret {what}: cannot read file {path}: {cause}")]
    SecretFile {
        what: String,
        path: String,
        cause: String,
    },
    #[error(
        "unknown connection {0:?}: give ORGANIZATION/CONNECTION or a connection name that is unique"
    )]
    UnknownConnection(String),
}
