//! The read-only FHIR R4 facade: `/fhir/{org}/` (the clean view) and `/fhir/{org}/raw/`
//! (each resource byte for byte as received), with `read`, `search` and
//! `Patient/{id}/$everything` over every connection of the organization. Ids are facade ids
//! ([`ids`]); every answer that carries patient data is in the access log before it leaves.

mod audit_event;
mod capability;
mod clean;
pub mod ids;
pub mod params;
pub mod refs;
pub mod view;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use aqueduct_core::{ConnectionRef, ParseStatus, RunOutcome, StoredNormalized, StoredResource};
use axum::Router;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::AppState;
use crate::api::extract::Caller;
use crate::problem::Outcome;
use params::Search;
use view::View;

/// Resource types the facade serves (and its CapabilityStatement lists).
pub const TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Binary",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "ExplanationOfBenefit",
    "Goal",
    "Immunization",
    "Location",
    "Medication",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "ServiceRequest",
    "Specimen",
];

/// The normalized rows of each resource of an answer, in the answer's order.
type Normalized = Vec<Vec<StoredNormalized>>;

/// Rows scanned at most by one search page that names no patient and no id.
const SCAN_BUDGET: usize = 20_000;

pub fn routes(state: Arc<AppState>) -> Router {
    let authed = Router::new()
        .route("/fhir/{org}/AuditEvent", get(audit_event::search))
        .route("/fhir/{org}/{rtype}", get(search_clean))
        .route("/fhir/{org}/{rtype}/{id}", get(read_clean))
        .route("/fhir/{org}/{rtype}/{id}/{op}", get(operation_clean))
        .route("/fhir/{org}/raw/{rtype}", get(search_raw))
        .route("/fhir/{org}/raw/{rtype}/{id}", get(read_raw))
        .route("/fhir/{org}/raw/{rtype}/{id}/{op}", get(operation_raw))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    Router::new()
        .route("/fhir/{org}/metadata", get(capability::metadata))
        .route("/fhir/{org}/raw/metadata", get(capability::metadata))
        .merge(authed)
        .with_state(state)
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match state.auth.authenticate(req.headers()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(problem) => Outcome::from(problem).into_response(),
    }
}

/// Path segments, with an OperationOutcome when they cannot be read.
struct Seg<T>(T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Seg<T> {
    type Rejection = Outcome;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Outcome> {
        Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| Seg(p.0))
            .map_err(|e| Outcome::not_found(format!("path: {}", e.body_text())))
    }
}

/// What every facade handler needs about its request.
struct Ctx {
    state: Arc<AppState>,
    caller: Caller,
    org: String,
    view: View,
    /// The facade's base URL as the client reached it (for fullUrl and links).
    base: String,
    strict: bool,
    /// Each connection's source base as this request found it (config, else the store's
    /// record): one answer renders every resource of a connection the same way.
    bases: std::sync::Mutex<HashMap<String, Option<String>>>,
    /// Normalized rows read together with a page (connection, type, rows), so that
    /// [`Self::normalized`] need not read them again.
    prefetched: std::sync::Mutex<Option<(ConnectionRef, String, Vec<StoredNormalized>)>>,
}

impl Ctx {
    fn new(
        state: Arc<AppState>,
        caller: Caller,
        org: String,
        view: View,
        headers: &HeaderMap,
    ) -> Result<Self, Outcome> {
        // another organization's facade does not exist for this caller
        if org != caller.org() {
            return Err(Outcome::not_found(format!("no organization {org:?}")));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        // links and fullUrls are followed by clients: under TLS they must stay on https
        let scheme = if state.settings.is_tls() {
            "https"
        } else {
            "http"
        };
        let base = match view {
            View::Clean => format!("{scheme}://{host}/fhir/{org}"),
            View::Raw => format!("{scheme}://{host}/fhir/{org}/raw"),
        };
        let strict = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split([',', ';']).any(|p| p.trim() == "handling=strict"));
        Ok(Self {
            state,
            caller,
            org,
            view,
            base,
            strict,
            bases: Default::default(),
            prefetched: Default::default(),
        })
    }

    fn remember_base(&self, conn: &str, base: Option<String>) {
        let mut bases = self.bases.lock().unwrap_or_else(|p| p.into_inner());
        bases.insert(conn.to_string(), base);
    }

    /// The organization's connection `name`, or 404.
    async fn connection(&self, name: &str) -> Result<ConnectionRef, Outcome> {
        let conn = crate::api::connection(&self.state, &self.caller, name)
            .await
            .map_err(Outcome::from)?;
        let base = match self.configured_base(name) {
            Some(b) => Some(b),
            None => crate::api::store_connections(&self.state, &self.org)
                .await
                .map_err(Outcome::from)?
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.clone()),
        };
        self.remember_base(name, base);
        Ok(conn)
    }

    async fn connections(&self) -> Result<Vec<ConnectionRef>, Outcome> {
        let mut names: BTreeSet<String> = self
            .state
            .config
            .organizations
            .get(&self.org)
            .map(|o| o.connections.keys().cloned().collect())
            .unwrap_or_default();
        for c in self
            .state
            .store
            .list_connections(&self.org)
            .await
            .map_err(store_outcome)?
        {
            let base = self.configured_base(&c.name).or(Some(c.base_url));
            self.remember_base(&c.name, base);
            names.insert(c.name);
        }
        for n in &names {
            let known = self
                .bases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(n);
            if !known {
                self.remember_base(n, self.configured_base(n));
            }
        }
        Ok(names
            .into_iter()
            .map(|n| ConnectionRef::new(&self.org, n))
            .collect())
    }

    fn configured_base(&self, conn: &str) -> Option<String> {
        self.state
            .config
            .organizations
            .get(&self.org)
            .and_then(|o| o.connections.get(conn))
            .map(|c| c.base_url.to_string())
    }

    /// The source's FHIR base (ending in '/'), to recognise absolute references to it: from
    /// the configuration, else as the store registered the connection, as this request's
    /// connection checks found it.
    fn source_base(&self, conn: &str) -> Option<String> {
        let remembered = self
            .bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(conn)
            .cloned();
        let base = match remembered {
            Some(b) => b,
            None => self.configured_base(conn),
        }
        .filter(|b| !b.is_empty())?;
        Some(if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        })
    }

    /// Appends `r` as the view shows it to `out`; false (and nothing appended) when it
    /// cannot be shown as JSON. `base` is the source's base ([`Self::source_base`]).
    fn render_into(
        &self,
        r: &StoredResource,
        rows: &[StoredNormalized],
        base: Option<&str>,
        out: &mut String,
    ) -> bool {
        view::render_into(r, self.view, base, rows, out)
    }

    /// The normalized rows derived from the current version of each resource, for the clean
    /// view (the raw view needs none), in the order of `rs`: one query per connection and type.
    async fn normalized(&self, rs: &[&StoredResource]) -> Result<Normalized, Outcome> {
        let mut out: Normalized = vec![Vec::new(); rs.len()];
        if self.view == View::Raw {
            return Ok(out);
        }
        // (connection, type) → logical id → position in `rs`
        let mut groups: HashMap<(&ConnectionRef, &str), HashMap<&str, usize>> = HashMap::new();
        for (i, r) in rs.iter().enumerate() {
            groups
                .entry((&r.connection, r.resource_type.as_str()))
                .or_default()
                .insert(r.logical_id.as_str(), i);
        }
        let mut prefetched = self
            .prefetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for ((conn, rtype), at) in groups {
            let rows = match prefetched.take() {
                Some((c, t, rows)) if &c == conn && t == rtype => rows,
                other => {
                    prefetched = other;
                    let ids: Vec<String> = at.keys().map(|id| id.to_string()).collect();
                    self.state
                        .store
                        .normalized_of(conn, rtype, &ids)
                        .await
                        .map_err(store_outcome)?
                }
            };
            for row in rows {
                let Some(&i) = at.get(row.logical_id.as_str()) else {
                    continue;
                };
                // rows of an older version of the resource are not its normalized form
                if rs[i].content_hash == row.content_hash {
                    out[i].push(row);
                }
            }
        }
        Ok(out)
    }

    async fn log(
        &self,
        action: &str,
        route: &str,
        patient: Option<String>,
        types: Vec<String>,
        count: u64,
    ) -> Result<(), Outcome> {
        crate::api::records_log(
            &self.state,
            &self.caller,
            action,
            route,
            patient,
            types,
            count,
        )
        .await
        .map_err(Outcome::from)
    }
}

fn store_outcome(e: aqueduct_core::StoreError) -> Outcome {
    Outcome::from(crate::problem::Problem::store(e))
}

fn fhir_json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    r
}

fn check_type(rtype: &str) -> Result<(), Outcome> {
    if TYPES.contains(&rtype) {
        Ok(())
    } else {
        Err(Outcome::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("resource type {rtype:?} is not served (see the CapabilityStatement)"),
        ))
    }
}

async fn read_clean(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype, id)): Seg<(String, String, String)>,
) -> Result<Response, Outcome> {
    read(Ctx::new(s, caller, org, View::Clean, &headers)?, rtype, id).await
}

async fn read_raw(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype, id)): Seg<(String, String, String)>,
) -> Result<Response, Outcome> {
    read(Ctx::new(s, caller, org, View::Raw, &headers)?, rtype, id).await
}

async fn read(ctx: Ctx, rtype: String, fid: String) -> Result<Response, Outcome> {
    check_type(&rtype)?;
    let missing = || Outcome::not_found(format!("{rtype}/{fid} is not known"));
    let (conn, id) = ids::split(&fid).ok_or_else(missing)?;
    let conn = ctx.connection(conn).await.map_err(|_| missing())?;
    let r = ctx
        .state
        .store
        .get_resource(&conn, &rtype, id)
        .await
        .map_err(store_outcome)?
        .ok_or_else(missing)?;
    if r.deleted_at.is_some() {
        return Err(Outcome::new(
            StatusCode::GONE,
            "deleted",
            format!("{rtype}/{fid} was deleted at the source"),
        ));
    }
    let rows = ctx.normalized(&[&r]).await?;
    let mut body = String::with_capacity(r.bytes.len() + 256);
    let base = ctx.source_base(&r.connection.connection);
    if !ctx.render_into(&r, &rows[0], base.as_deref(), &mut body) {
        return Err(unreadable(&rtype, &fid));
    }
    ctx.log(
        "read",
        "/fhir/{org}/{type}/{id}",
        r.patient_id
            .as_deref()
            .map(|p| ids::facade_id(&conn.connection, p)),
        vec![rtype],
        1,
    )
    .await?;
    let mut resp = fhir_json(StatusCode::OK, body);
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", r.version_seq)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

fn unreadable(rtype: &str, fid: &str) -> Outcome {
    Outcome::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "processing",
        format!(
            "{rtype}/{fid} is held, but the source sent bytes that are not JSON; the raw bytes are in the store"
        ),
    )
}

async fn search_clean(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype)): Seg<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, Outcome> {
    search(Ctx::new(s, caller, org, View::Clean, &headers)?, rtype, q).await
}

async fn search_raw(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype)): Seg<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, Outcome> {
    search(Ctx::new(s, caller, org, View::Raw, &headers)?, rtype, q).await
}

fn pairs(q: Option<String>) -> Result<Vec<(String, String)>, Outcome> {
    let q = q.unwrap_or_default();
    if q.len() > 16 * 1024 {
        return Err(Outcome::invalid("the query is too long"));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.len() > 64 {
        return Err(Outcome::invalid("too many search parameters"));
    }
    Ok(pairs)
}

/// One resource in an answer.
struct Entry {
    r: StoredResource,
    mode: &'static str,
}

async fn search(ctx: Ctx, rtype: String, q: Option<String>) -> Result<Response, Outcome> {
    check_type(&rtype)?;
    let s = params::parse(&pairs(q)?, ctx.strict, false)?;
    let count = ctx.state.page_size(s.count) as usize;
    let store = &ctx.state.store;
    let mut unreadable_held = 0usize;
    let mut keep = |r: &StoredResource, s: &Search| -> bool {
        if r.deleted_at.is_some() {
            return false;
        }
        if matches!(r.parse_status, ParseStatus::InvalidJson(_)) {
            unreadable_held += 1;
            return false;
        }
        // without a filter on content, the bytes need not be parsed to match
        if !s.filters_content() {
            return true;
        }
        match serde_json::from_slice::<Value>(&r.bytes) {
            Ok(v) => params::matches(s, &rtype, &v),
            Err(_) => false,
        }
    };
    let mut patient_scope: Option<(ConnectionRef, String)> = None;
    let (matches, total, next_page): (Vec<StoredResource>, Option<usize>, Option<String>) =
        if let Some((conn, pid)) = match (&s.patient, s.ids.is_empty(), s.filters_content()) {
            // the common case, paged by the store: one type of one patient, no content filter
            (Some(p), true, false) if rtype != "Patient" => match ids::split(p) {
                Some((c, pid)) => match ctx.connection(c).await {
                    Ok(conn) => Some((conn, pid.to_string())),
                    Err(_) => None,
                },
                None => None,
            },
            _ => None,
        } {
            let after = match s.page.as_deref() {
                None => None,
                Some(p) => Some(
                    p.strip_prefix('a')
                        .ok_or_else(|| Outcome::invalid("_page: not a page of this search"))?
                        .to_string(),
                ),
            };
            let (page, total) = if ctx.view == View::Clean {
                // the page and its normalized rows in one trip to the store
                let (page, total, rows) = store
                    .patient_page_with_normalized(
                        &conn,
                        &pid,
                        &rtype,
                        after.as_deref(),
                        count as u32,
                    )
                    .await
                    .map_err(store_outcome)?;
                *ctx.prefetched.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((conn.clone(), rtype.clone(), rows));
                (page, total)
            } else {
                store
                    .patient_resources_page(&conn, &pid, &rtype, after.as_deref(), count as u32)
                    .await
                    .map_err(store_outcome)?
            };
            let mut page: Vec<StoredResource> = page;
            let full = page.len() == count;
            let next = page
                .last()
                .filter(|_| full)
                .map(|r| format!("a{}", r.logical_id));
            page.retain(|r| keep(r, &s));
            patient_scope = Some((conn, pid));
            (page, Some(total as usize), next)
        } else if s.patient.is_some() || !s.ids.is_empty() {
            let mut found = Vec::new();
            if let Some(p) = &s.patient {
                // a patient that is not a facade id of this organization holds nothing
                if let Some((c, pid)) = ids::split(p) {
                    if let Ok(conn) = ctx.connection(c).await {
                        let held = if rtype == "Patient" {
                            store
                                .get_resource(&conn, "Patient", pid)
                                .await
                                .map_err(store_outcome)?
                                .into_iter()
                                .collect()
                        } else {
                            store
                                .list_patient_resources(&conn, pid, Some(&rtype))
                                .await
                                .map_err(store_outcome)?
                        };
                        found.extend(held);
                        patient_scope = Some((conn, pid.to_string()));
                    }
                }
            }
            if !s.ids.is_empty() {
                let mut by_id = Vec::new();
                for fid in &s.ids {
                    let Some((c, id)) = ids::split(fid) else {
                        continue;
                    };
                    let Ok(conn) = ctx.connection(c).await else {
                        continue;
                    };
                    if let Some(r) = store
                        .get_resource(&conn, &rtype, id)
                        .await
                        .map_err(store_outcome)?
                    {
                        by_id.push(r);
                    }
                }
                if s.patient.is_some() {
                    let wanted: HashSet<(String, String)> = by_id
                        .iter()
                        .map(|r| (r.connection.connection.clone(), r.logical_id.clone()))
                        .collect();
                    found.retain(|r| {
                        wanted.contains(&(r.connection.connection.clone(), r.logical_id.clone()))
                    });
                } else {
                    found = by_id;
                }
            }
            found.retain(|r| keep(r, &s));
            found.sort_by(|a, b| {
                (&a.connection.connection, &a.logical_id)
                    .cmp(&(&b.connection.connection, &b.logical_id))
            });
            found.dedup_by(|a, b| a.connection == b.connection && a.logical_id == b.logical_id);
            let total = found.len();
            let offset = match s.page.as_deref() {
                None => 0,
                Some(p) => p
                    .strip_prefix('o')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| Outcome::invalid("_page: not a page of this search"))?,
            };
            let page: Vec<_> = found.into_iter().skip(offset).take(count).collect();
            let next = (offset + page.len() < total).then(|| format!("o{}", offset + page.len()));
            (page, Some(total), next)
        } else if !s.identifier.is_empty() && rtype == "Patient" {
            // the identifier index: Patients by business identifier across connections
            let mut found = Vec::new();
            for t in s.identifier.iter().flatten() {
                let (Some(system), Some(value)) = (t.system.as_deref(), t.code.as_deref()) else {
                    continue;
                };
                for hit in store
                    .find_by_identifier(&ctx.org, "Patient", system, value)
                    .await
                    .map_err(store_outcome)?
                {
                    // the identifier index is the organization's; the check also finds
                    // the connection's source base for the clean view
                    let Ok(conn) = ctx.connection(&hit.connection).await else {
                        continue;
                    };
                    if let Some(r) = store
                        .get_resource(&conn, "Patient", &hit.logical_id)
                        .await
                        .map_err(store_outcome)?
                    {
                        found.push(r);
                    }
                }
            }
            found.retain(|r| keep(r, &s));
            found.dedup_by(|a, b| a.connection == b.connection && a.logical_id == b.logical_id);
            let total = found.len();
            found.truncate(count);
            (found, Some(total), None)
        } else {
            // a scan of every connection in id order, resumable at (connection, id)
            let (mut at_conn, mut after) = match s.page.as_deref() {
                None => (None, None),
                Some(p) => {
                    let (c, id) = p
                        .strip_prefix('s')
                        .and_then(|p| p.split_once(':'))
                        .ok_or_else(|| Outcome::invalid("_page: not a page of this search"))?;
                    (
                        Some(c.to_string()),
                        (!id.is_empty()).then(|| id.to_string()),
                    )
                }
            };
            let mut page = Vec::new();
            let mut scanned = 0usize;
            let mut next = None;
            let conns = ctx.connections().await?;
            let want = if s.summary_count { usize::MAX } else { count };
            'conns: for conn in conns {
                if let Some(c) = &at_conn {
                    if conn.connection < *c {
                        continue;
                    }
                    if conn.connection > *c {
                        after = None;
                    }
                }
                at_conn = None;
                loop {
                    let chunk = store
                        .list_resources(&conn, &rtype, after.as_deref(), 500, false)
                        .await
                        .map_err(store_outcome)?;
                    let n = chunk.len();
                    for r in chunk {
                        scanned += 1;
                        after = Some(r.logical_id.clone());
                        if keep(&r, &s) {
                            page.push(r);
                        }
                        let budget_spent = scanned >= SCAN_BUDGET && !s.summary_count;
                        if page.len() >= want || budget_spent {
                            next = Some(format!(
                                "s{}:{}",
                                conn.connection,
                                after.as_deref().unwrap_or("")
                            ));
                            break 'conns;
                        }
                    }
                    if n < 500 {
                        after = None;
                        break;
                    }
                }
            }
            let total =
                (s.summary_count || (next.is_none() && s.page.is_none())).then_some(page.len());
            (page, total, next)
        };

    if s.summary_count {
        ctx.log("search", "/fhir/{org}/{type}", s.patient.clone(), vec![], 0)
            .await?;
        let body = serde_json::json!({
            "resourceType": "Bundle", "type": "searchset", "total": total.unwrap_or(matches.len()),
        });
        return Ok(fhir_json(StatusCode::OK, body.to_string()));
    }

    let mut entries: Vec<Entry> = matches
        .into_iter()
        .map(|r| Entry { r, mode: "match" })
        .collect();
    includes(&ctx, &s, &rtype, &mut entries, patient_scope.as_ref()).await?;

    let self_link = link(&ctx.base, &rtype, &s.used, None);
    let next_link = next_page.map(|p| link(&ctx.base, &rtype, &s.used, Some(&p)));
    let types: BTreeSet<String> = entries.iter().map(|e| e.r.resource_type.clone()).collect();
    ctx.log(
        "search",
        "/fhir/{org}/{type}",
        s.patient.clone(),
        types.into_iter().collect(),
        entries.len() as u64,
    )
    .await?;
    let body = bundle(
        &ctx,
        total,
        &self_link,
        next_link.as_deref(),
        &entries,
        unreadable_held,
    )
    .await?;
    Ok(fhir_json(StatusCode::OK, body))
}

/// Adds `_include`d and `_revinclude`d resources (mode `include`), once each.
async fn includes(
    ctx: &Ctx,
    s: &Search,
    rtype: &str,
    entries: &mut Vec<Entry>,
    patient_scope: Option<&(ConnectionRef, String)>,
) -> Result<(), Outcome> {
    let store = &ctx.state.store;
    let mut seen: HashSet<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e.r.connection.connection.clone(),
                e.r.resource_type.clone(),
                e.r.logical_id.clone(),
            )
        })
        .collect();
    let mut added = Vec::new();
    for spec in &s.include {
        let Some((from, param)) = spec.split_once(':') else {
            return Err(Outcome::invalid(format!(
                "_include={spec:?}: use Type:param"
            )));
        };
        // `:iterate` and `*` chains are not followed: an include is one hop
        if from != rtype || refs::paths(param).is_empty() || param.contains(':') {
            if ctx.strict {
                return Err(Outcome::not_supported(format!(
                    "_include={spec:?} is not supported"
                )));
            }
            continue;
        }
        for e in entries.iter() {
            let Ok(v) = serde_json::from_slice::<Value>(&e.r.bytes) else {
                continue;
            };
            let base = ctx.source_base(&e.r.connection.connection);
            for r in refs::references(&v, param) {
                let Some((t, id)) = refs::target(r, base.as_deref()) else {
                    continue;
                };
                let key = (
                    e.r.connection.connection.clone(),
                    t.to_string(),
                    id.to_string(),
                );
                if !TYPES.contains(&t) || seen.contains(&key) {
                    continue;
                }
                if let Some(found) = store
                    .get_resource(&e.r.connection, t, id)
                    .await
                    .map_err(store_outcome)?
                    .filter(|x| x.deleted_at.is_none())
                {
                    seen.insert(key);
                    added.push(Entry {
                        r: found,
                        mode: "include",
                    });
                }
            }
        }
    }
    for spec in &s.revinclude {
        let Some((from, param)) = spec.split_once(':') else {
            return Err(Outcome::invalid(format!(
                "_revinclude={spec:?}: use Type:param"
            )));
        };
        let supported = TYPES.contains(&from) && !refs::paths(param).is_empty();
        let Some((conn, pid)) = patient_scope.filter(|_| supported) else {
            if ctx.strict {
                return Err(Outcome::not_supported(format!(
                    "_revinclude={spec:?} is supported for searches by patient only"
                )));
            }
            continue;
        };
        let base = ctx.source_base(&conn.connection);
        let targets: HashSet<(String, String)> = entries
            .iter()
            .map(|e| (e.r.resource_type.clone(), e.r.logical_id.clone()))
            .collect();
        for cand in store
            .list_patient_resources(conn, pid, Some(from))
            .await
            .map_err(store_outcome)?
        {
            let Ok(v) = serde_json::from_slice::<Value>(&cand.bytes) else {
                continue;
            };
            let points = refs::references(&v, param).into_iter().any(|r| {
                refs::target(r, base.as_deref())
                    .is_some_and(|(t, id)| targets.contains(&(t.to_string(), id.to_string())))
            });
            let key = (
                cand.connection.connection.clone(),
                cand.resource_type.clone(),
                cand.logical_id.clone(),
            );
            if points && seen.insert(key) {
                added.push(Entry {
                    r: cand,
                    mode: "include",
                });
            }
        }
    }
    entries.extend(added);
    Ok(())
}

fn link(base: &str, path: &str, used: &[(String, String)], page: Option<&str>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in used {
        q.append_pair(k, v);
    }
    if let Some(p) = page {
        q.append_pair("_page", p);
    }
    let q = q.finish();
    if q.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{q}")
    }
}

/// A searchset Bundle, written as text so the raw view's bytes go out exactly as received.
/// `meta` carries each involved source's freshness: when its last complete sync finished and
/// whether its latest run was partial.
async fn bundle(
    ctx: &Ctx,
    total: Option<usize>,
    self_link: &str,
    next_link: Option<&str>,
    entries: &[Entry],
    unreadable_held: usize,
) -> Result<String, Outcome> {
    let mut conns: BTreeSet<&str> = BTreeSet::new();
    for e in entries {
        conns.insert(&e.r.connection.connection);
    }
    let mut freshness = Vec::new();
    for name in conns {
        let conn = ConnectionRef::new(&ctx.org, name);
        if let Some(f) = ctx.state.freshness.get(&conn) {
            freshness.push(f);
            continue;
        }
        let runs = ctx
            .state
            .store
            .list_runs(&conn, 20)
            .await
            .map_err(store_outcome)?;
        let last_complete = runs
            .iter()
            .find(|r| r.outcome == RunOutcome::Complete)
            .and_then(|r| r.finished_at);
        let latest = runs.first().map(|r| r.outcome);
        let mut ext =
            vec![serde_json::json!({"url": "connection", "valueString": conn.connection})];
        if let Some(t) = last_complete {
            ext.push(serde_json::json!({"url": "lastCompleteSync", "valueInstant": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
        }
        ext.push(serde_json::json!({"url": "partial", "valueBoolean": latest != Some(RunOutcome::Complete)}));
        let f = serde_json::json!({
            "url": "https://aqueduct.dev/fhir/StructureDefinition/source-freshness",
            "extension": ext,
        });
        ctx.state.freshness.put(conn, f.clone());
        freshness.push(f);
    }
    let mut out =
        String::with_capacity(entries.iter().map(|e| e.r.bytes.len() + 200).sum::<usize>() + 512);
    out.push_str(r#"{"resourceType":"Bundle","type":"searchset""#);
    if !freshness.is_empty() {
        out.push_str(r#","meta":{"extension":"#);
        out.push_str(&Value::Array(freshness).to_string());
        out.push('}');
    }
    if let Some(t) = total {
        out.push_str(&format!(r#","total":{t}"#));
    }
    out.push_str(r#","link":[{"relation":"self","url":"#);
    out.push_str(&Value::String(self_link.to_string()).to_string());
    out.push('}');
    if let Some(n) = next_link {
        out.push_str(r#",{"relation":"next","url":"#);
        out.push_str(&Value::String(n.to_string()).to_string());
        out.push('}');
    }
    out.push_str(r#"],"entry":["#);
    let mut first = true;
    let rows = ctx
        .normalized(&entries.iter().map(|e| &e.r).collect::<Vec<_>>())
        .await?;
    // one source base per connection of the answer, not per resource
    let bases: HashMap<&str, Option<String>> = entries
        .iter()
        .map(|e| e.r.connection.connection.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|c| (c, ctx.source_base(c)))
        .collect();
    for (e, rows) in entries.iter().zip(&rows) {
        let mark = out.len();
        if !first {
            out.push(',');
        }
        let full = format!(
            "{}/{}/{}",
            ctx.base,
            e.r.resource_type,
            ids::facade_id(&e.r.connection.connection, &e.r.logical_id)
        );
        out.push_str(r#"{"fullUrl":"#);
        out.push_str(&Value::String(full).to_string());
        out.push_str(r#","resource":"#);
        let base = bases
            .get(e.r.connection.connection.as_str())
            .and_then(|b| b.as_deref());
        if !ctx.render_into(&e.r, rows, base, &mut out) {
            // not JSON: left out, as the store's check at arrival would have
            out.truncate(mark);
            continue;
        }
        first = false;
        out.push_str(r#","search":{"mode":""#);
        out.push_str(e.mode);
        out.push_str(r#""}}"#);
    }
    if unreadable_held > 0 {
        if !first {
            out.push(',');
        }
        let oo = serde_json::json!({
            "resource": {"resourceType": "OperationOutcome", "issue": [{
                "severity": "warning", "code": "processing",
                "diagnostics": format!("{unreadable_held} matching resource(s) are held as the source sent them but are not JSON; they are left out")
            }]},
            "search": {"mode": "outcome"}
        });
        out.push_str(&oo.to_string());
    }
    out.push_str("]}");
    Ok(out)
}

async fn operation_clean(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype, id, op)): Seg<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, Outcome> {
    operation(
        Ctx::new(s, caller, org, View::Clean, &headers)?,
        rtype,
        id,
        op,
        q,
    )
    .await
}

async fn operation_raw(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg((org, rtype, id, op)): Seg<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, Outcome> {
    operation(
        Ctx::new(s, caller, org, View::Raw, &headers)?,
        rtype,
        id,
        op,
        q,
    )
    .await
}

/// `Patient/{id}/$everything` (with `_since`, `_type`, `_count`): the patient's whole record
/// at its source, paged.
async fn operation(
    ctx: Ctx,
    rtype: String,
    fid: String,
    op: String,
    q: Option<String>,
) -> Result<Response, Outcome> {
    if rtype != "Patient" || op != "$everything" {
        return Err(Outcome::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("{rtype}/{{id}}/{op} is not supported; Patient/{{id}}/$everything is"),
        ));
    }
    let s = params::parse(&pairs(q)?, ctx.strict, true)?;
    let missing = || Outcome::not_found(format!("Patient/{fid} is not known"));
    let (conn, pid) = ids::split(&fid).ok_or_else(missing)?;
    let conn = ctx.connection(conn).await.map_err(|_| missing())?;
    let store = &ctx.state.store;
    let patient = store
        .get_resource(&conn, "Patient", pid)
        .await
        .map_err(store_outcome)?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(missing)?;
    let mut all = store
        .list_patient_resources(&conn, pid, None)
        .await
        .map_err(store_outcome)?;
    if !all
        .iter()
        .any(|r| r.resource_type == "Patient" && r.logical_id == pid)
    {
        all.insert(0, patient);
    } else {
        // the Patient first, as clients expect
        all.sort_by_key(|r| !(r.resource_type == "Patient" && r.logical_id == pid));
    }
    let mut unreadable_held = 0;
    all.retain(|r| {
        if matches!(r.parse_status, ParseStatus::InvalidJson(_)) {
            unreadable_held += 1;
            return false;
        }
        (s.types.is_empty() || s.types.contains(&r.resource_type))
            && TYPES.contains(&r.resource_type.as_str())
            && s.since.is_none_or(|since| {
                r.last_updated
                    .as_deref()
                    .and_then(params::date_range)
                    .map(|(a, _)| a)
                    .unwrap_or(r.fetched_at)
                    >= since
            })
    });
    let count = ctx.state.page_size(s.count) as usize;
    let total = all.len();
    let offset = match s.page.as_deref() {
        None => 0,
        Some(p) => p
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Outcome::invalid("_page: not a page of this operation"))?,
    };
    let entries: Vec<Entry> = all
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|r| Entry { r, mode: "match" })
        .collect();
    let path = format!("Patient/{fid}/$everything");
    let self_link = link(&ctx.base, &path, &s.used, None);
    let next = (offset + entries.len() < total).then(|| {
        link(
            &ctx.base,
            &path,
            &s.used,
            Some(&format!("o{}", offset + entries.len())),
        )
    });
    let types: BTreeSet<String> = entries.iter().map(|e| e.r.resource_type.clone()).collect();
    ctx.log(
        "everything",
        "/fhir/{org}/Patient/{id}/$everything",
        Some(fid.clone()),
        types.into_iter().collect(),
        entries.len() as u64,
    )
    .await?;
    let body = bundle(
        &ctx,
        Some(total),
        &self_link,
        next.as_deref(),
        &entries,
        unreadable_held,
    )
    .await?;
    Ok(fhir_json(StatusCode::OK, body))
}
