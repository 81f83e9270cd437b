//! The Aqueduct EHR simulator: an independent FHIR R4 server that stands in for Epic-,
//! Cerner-, athena-like EHRs, payer Patient Access APIs and a plain reference server. It owns a
//! seeded synthetic population (generated lazily per patient), the FHIR REST surface (read,
//! vread, search with vendor-style paging, `$everything`, batch, CapabilityStatement), a SMART
//! App Launch 2.x authorization server, Bulk Data `$export`, vendor personalities declared as
//! TOML data, and injected faults that reproduce the silent and noisy failures real sources
//! show, including hostile ones (cross-origin redirects, huge and stalling bodies, endless
//! paging). Beside the FHIR server it runs a document host and a foreign origin that record
//! the headers they receive, and it serves the ground truth of every patient's whole record
//! (`/admin/truth...`, with the SHA-256 of the bytes served) for differential tests. It must
//! not know anything about Aqueduct's client, sync engine or store: it depends on no other
//! aqueduct crate and implements the specifications, not a client's expectations, so tests
//! against it find real disagreements.

mod auth;
mod bulk;
mod fault;
mod fhir;
mod generator;
pub mod personality;
mod reply;
mod server;
mod side;
mod store;
mod truth;

use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use fault::Fault;
pub use personality::{Personality, built_in_names};
pub use side::SideRequest;

/// Errors from starting or configuring the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "unknown personality `{0}` (built in: reference, epic, cerner, athena, payer, payer-everything, payer-linked, epic-suppressed, nextgen, athena-records, hospital)"
    )]
    UnknownPersonality(String),
    #[error("invalid personality file: {0}")]
    Personality(String),
    #[error("cannot read personality file {path}: {source}")]
    PersonalityFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid fault `{0}`: expected name[:param][@rate], e.g. server-error-500@0.1")]
    InvalidFault(String),
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// How to build a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// A built-in personality name ("reference", "epic", "cerner", "athena", "payer") or the
    /// path of a personality TOML file.
    pub personality: String,
    pub patients: usize,
    pub seed: u64,
    /// Mean history size; each patient varies deterministically between 0.5x and 1.5x.
    pub resources_per_patient: usize,
    /// Extra patients appended with about this many resources each.
    pub large_patients: Vec<usize>,
    pub faults: Vec<Fault>,
    /// Test switch: the consent step is approved without a browser.
    pub auto_approve: bool,
    pub token_lifetime_secs: Option<u64>,
    pub rate_limit_per_sec: Option<f64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            personality: "reference".into(),
            patients: 10,
            seed: 1,
            resources_per_patient: 300,
            large_patients: vec![],
            faults: vec![],
            auto_approve: true,
            token_lifetime_secs: None,
            rate_limit_per_sec: None,
        }
    }
}

impl SimConfig {
    /// Use a personality TOML file from disk (same format as `personalities/*.toml`). The file
    /// is checked now and read again at start; `personality` then holds its path, which is
    /// also accepted directly wherever a personality name is.
    pub fn personality_file(mut self, path: impl AsRef<Path>) -> Result<Self, SimError> {
        let path = path.as_ref();
        personality::load(&path.display().to_string())?;
        self.personality = path.display().to_string();
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Browser/native app: no secret, PKCE only.
    Public,
    /// client_secret_basic or client_secret_post.
    ConfidentialSymmetric,
    /// private_key_jwt with a registered JWKS (also backend services).
    ConfidentialAsymmetric,
}

/// A client the authorization server knows. Any loopback redirect URI
/// (`http://127.0.0.1:<port>/...`, `http://localhost:<port>/...`) is accepted for every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
}

/// What the server has done so far.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Resources sent in FHIR responses (entries, reads, NDJSON lines).
    pub resources_served: u64,
    /// 429 responses (personality rate limit and injected).
    pub rate_limited: u64,
    pub tokens_issued: u64,
    pub tokens_refreshed: u64,
    /// Bytes sent so far by streamed hostile bodies (`huge-body`, `huge-binary`,
    /// `stall-page`): what left the server, not what a fault announced.
    pub bytes_streamed: u64,
}

pub struct Simulator;

impl Simulator {
    /// Start on 127.0.0.1 with an ephemeral port.
    pub fn start(config: SimConfig) -> BoxFuture<'static, Result<SimServer, SimError>> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config)
    }

    /// Boxed so that the server's whole async tree is compiled here, once, not again in every
    /// crate and test binary that starts a simulator.
    pub fn start_on(
        addr: SocketAddr,
        config: SimConfig,
    ) -> BoxFuture<'static, Result<SimServer, SimError>> {
        Box::pin(server::start(addr, config))
    }
}

/// A running simulator. Dropping it without `shutdown` leaves the server task running until
/// the runtime stops.
pub struct SimServer {
    state: Arc<server::SimState>,
    handle: server::Handle,
}

impl SimServer {
    /// The FHIR base, e.g. `http://127.0.0.1:PORT/fhir/r4` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// The document host's origin (same organization, another port), e.g.
    /// `http://127.0.0.1:PORT`; documents live at `{origin}/content/{id}`.
    pub fn documents_origin(&self) -> String {
        self.state.docs_origin.clone()
    }

    /// The foreign origin `redirect-cross-origin` redirects to.
    pub fn foreign_origin(&self) -> String {
        self.state.foreign_origin.clone()
    }

    /// Requests the document host and the foreign origin received, oldest first.
    pub fn side_requests(&self) -> Vec<SideRequest> {
        self.state.side_log.all()
    }

    /// The ground truth of one patient's whole record (the JSON `/admin/truth/patient/{id}`
    /// serves).
    pub fn truth(&self, patient_id: &str) -> Option<serde_json::Value> {
        truth::patient(&self.state, patient_id)
    }

    /// The ground truth of every patient (the JSON `/admin/truth` serves).
    pub fn population_truth(&self) -> serde_json::Value {
        truth::population(&self.state)
    }

    pub fn personality(&self) -> &Personality {
        &self.state.personality
    }

    pub fn patient_ids(&self) -> Vec<String> {
        self.state.store.patient_ids.clone()
    }

    /// The id of the Group holding every patient (for group-level Bulk export).
    pub fn group_id(&self) -> String {
        self.state.store.group_id.clone()
    }

    /// Live resources in the patient's compartment, the Patient included (Binary excluded:
    /// it is reached through DocumentReference attachments, not by search).
    pub fn expected_resource_count(&self, patient_id: &str) -> usize {
        self.state
            .store
            .record_of(patient_id)
            .map(|r| {
                let stale = self.state.stale();
                r.resources
                    .iter()
                    .filter(|x| x.visible(stale).is_some_and(|v| !v.deleted))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Live resources of one type in the patient's compartment.
    pub fn expected_count_of_type(&self, patient_id: &str, rtype: &str) -> usize {
        self.state
            .store
            .record_of(patient_id)
            .map(|r| {
                let stale = self.state.stale();
                r.resources
                    .iter()
                    .filter(|x| x.rtype == rtype && x.visible(stale).is_some_and(|v| !v.deleted))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn clients(&self) -> Vec<ClientRegistration> {
        self.state.auth.clients()
    }

    pub fn register_backend_client(
        &self,
        client_id: &str,
        jwks_json: &str,
    ) -> Result<(), SimError> {
        self.state
            .auth
            .register_backend_client(client_id, jwks_json)
    }

    pub fn set_login_patient(&self, patient_id: &str) {
        self.state.auth.set_login_patient(patient_id)
    }

    pub fn create_ehr_launch(&self, patient_id: &str, encounter_id: Option<&str>) -> String {
        self.state.auth.create_ehr_launch(patient_id, encounter_id)
    }

    /// Deterministically change the data: some resources updated (new versionId and
    /// lastUpdated = now), some deleted, some created.
    pub fn evolve(&self, step: u64) {
        self.state.store.evolve(step)
    }

    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.state.set_faults(faults)
    }

    pub async fn shutdown(self) {
        self.handle.shutdown().await
    }
}
