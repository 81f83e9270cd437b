//! The HTTP front: one axum fallback handler that routes by path, then the request pipeline
//! every FHIR call goes through (rate limit, required headers, injected faults, bearer token,
//! dispatch, body faults), and the counters behind `SimServer::stats`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::auth::AuthServer;
use crate::bulk::BulkJobs;
use crate::fault::{self, Fault};
use crate::fhir::{self, Cursors};
use crate::generator::GenContext;
use crate::personality::{Personality, RateSignal};
use crate::reply::{Reply, StreamKind, Streamed};
use crate::side::{SideHost, SideLog};
use crate::store::Store;
use crate::{SimConfig, SimError, SimStats};

pub const FHIR_PATH: &str = "/fhir/r4";

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct SimState {
    pub seed: u64,
    pub personality: Arc<Personality>,
    pub store: Store,
    pub base_url: String,
    /// Base of next links and document URLs (`link_base_path`, else `base_url`).
    pub link_base: String,
    /// Origin of the document host (same organization, another origin).
    pub docs_origin: String,
    /// Origin of the foreign listener that `redirect-cross-origin` sends clients to.
    pub foreign_origin: String,
    pub side_log: SideLog,
    /// Bytes sent by streamed (hostile) bodies so far.
    pub bytes_streamed: Arc<AtomicU64>,
    pub auth: AuthServer,
    pub bulk: BulkJobs,
    pub cursors: Mutex<Cursors>,
    faults: RwLock<Vec<Fault>>,
    fault_counts: Mutex<HashMap<&'static str, u64>>,
    stats: Mutex<SimStats>,
    rate: Option<f64>,
    bucket: Mutex<Bucket>,
}

/// The faults that fire for one request.
#[derive(Debug, Default)]
pub struct Fired(Vec<Fault>);

impl Fired {
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| f.name() == name)
    }
    fn get(&self, name: &str) -> Option<&Fault> {
        self.0.iter().find(|f| f.name() == name)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    pub fn stats(&self) -> SimStats {
        let mut s = lock(&self.stats).clone();
        let (issued, refreshed) = self.auth.counters();
        s.tokens_issued = issued;
        s.tokens_refreshed = refreshed;
        s.bytes_streamed = self
            .bytes_streamed
            .load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn has_fault(&self, name: &str) -> bool {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|f| f.name() == name)
    }

    pub fn link_base(&self) -> &str {
        &self.link_base
    }

    /// Fire one fault by name, counting only its own requests (for paths that do not go
    /// through the FHIR pipeline: `/metadata`, the document host).
    pub fn fire_named(&self, name: &str) -> Option<Fault> {
        let f = self
            .faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|f| f.name() == name)
            .cloned()?;
        let mut counts = lock(&self.fault_counts);
        let n = counts.entry(f.name()).or_insert(0);
        *n += 1;
        fault::fires(self.seed, f.name(), *n, f.rate()).then_some(f)
    }

    pub fn streamed(&self, kind: StreamKind) -> Box<Streamed> {
        Box::new(Streamed {
            kind,
            sent: self.bytes_streamed.clone(),
        })
    }

    pub fn stale(&self) -> bool {
        self.has_fault("stale-data")
    }

    pub fn lying(&self) -> bool {
        self.has_fault("lying-capability")
    }

    fn fire(&self) -> Fired {
        let faults = self
            .faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut counts = lock(&self.fault_counts);
        let fired = faults
            .into_iter()
            .filter(|f| {
                let n = counts.entry(f.name()).or_insert(0);
                *n += 1;
                fault::fires(self.seed, f.name(), *n, f.rate())
            })
            .collect();
        Fired(fired)
    }

    /// Token bucket holding one second of burst. `Err` means throttle; `Ok(Some(n))` is the
    /// remaining budget to advertise, `Ok(None)` means no limit.
    fn take_token(&self) -> Result<Option<u64>, ()> {
        let Some(rate) = self.rate else {
            return Ok(None);
        };
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate.max(1.0));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(Some(b.tokens.floor() as u64))
        } else {
            Err(())
        }
    }

    pub fn record(&self, status: u16, resources: usize) {
        let mut s = lock(&self.stats);
        s.requests += 1;
        *s.by_status.entry(status).or_insert(0) += 1;
        s.resources_served += resources as u64;
        if status == 429 {
            s.rate_limited += 1;
        }
    }
}

fn too_many(signal: RateSignal, limit: f64) -> Reply {
    let reset = chrono::Utc::now().timestamp() + 1;
    let r = Reply::outcome(429, "throttled", "rate limit exceeded");
    let r = if matches!(signal, RateSignal::RetryAfter | RateSignal::Both) {
        r.header("Retry-After", "1")
    } else {
        r
    };
    if matches!(signal, RateSignal::XRatelimit | RateSignal::Both) {
        r.header("X-RateLimit-Limit", format!("{}", limit.ceil() as u64))
            .header("X-RateLimit-Remaining", "0")
            .header("X-RateLimit-Reset", reset.to_string())
    } else {
        r
    }
}

pub struct Handle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Handle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    })
}

pub async fn start(addr: SocketAddr, config: SimConfig) -> Result<crate::SimServer, SimError> {
    let personality = Arc::new(crate::personality::load(&config.personality)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    let side_addr = SocketAddr::new(local.ip(), 0);
    let docs_listener = tokio::net::TcpListener::bind(side_addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: side_addr,
            source,
        })?;
    let foreign_listener = tokio::net::TcpListener::bind(side_addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: side_addr,
            source,
        })?;
    let docs_origin = format!("http://{}", docs_listener.local_addr()?);
    let foreign_origin = format!("http://{}", foreign_listener.local_addr()?);
    let origin = format!("http://{local}");
    let base_url = format!("{origin}{FHIR_PATH}");
    let link_base = format!(
        "{origin}{}",
        personality.link_base_path.as_deref().unwrap_or(FHIR_PATH)
    );
    let ctx = GenContext::new(
        config.seed,
        base_url.clone(),
        link_base.clone(),
        docs_origin.clone(),
        personality.clone(),
        config.resources_per_patient,
        config.patients,
        config.large_patients.clone(),
    );
    let store = Store::new(ctx);
    let login = store.patient_ids.first().cloned().unwrap_or_default();
    let lifetime = config
        .token_lifetime_secs
        .unwrap_or(personality.token_lifetime_secs);
    let rate = config
        .rate_limit_per_sec
        .or(personality.rate_limit_per_sec)
        .filter(|r| *r > 0.0);
    let state = Arc::new(SimState {
        seed: config.seed,
        auth: AuthServer::new(
            base_url.clone(),
            origin.clone(),
            personality.clone(),
            lifetime,
            config.auto_approve,
            login,
        ),
        personality,
        store,
        base_url,
        link_base,
        docs_origin,
        foreign_origin,
        side_log: SideLog::default(),
        bytes_streamed: Arc::new(AtomicU64::new(0)),
        bulk: BulkJobs::default(),
        cursors: Mutex::new(Cursors::default()),
        faults: RwLock::new(config.faults.clone()),
        fault_counts: Mutex::new(HashMap::new()),
        stats: Mutex::new(SimStats::default()),
        rate,
        bucket: Mutex::new(Bucket {
            tokens: rate.unwrap_or(0.0).max(1.0),
            last: Instant::now(),
        }),
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        serve(listener, app, stopped.clone()),
        serve(
            docs_listener,
            crate::side::router(state.clone(), SideHost::Documents),
            stopped.clone(),
        ),
        serve(
            foreign_listener,
            crate::side::router(state.clone(), SideHost::Foreign),
            stopped,
        ),
    ];
    Ok(crate::SimServer {
        state,
        handle: Handle {
            addr: local,
            stop,
            tasks,
        },
    })
}

enum Outcome {
    Reply(Reply),
    /// Close the connection without a usable response.
    Drop,
}

async fn handle(State(st): State<Arc<SimState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 32 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    match route(&st, &parts.method, &path, &query, &parts.headers, &body).await {
        Outcome::Reply(r) => {
            st.record(r.status, r.resources);
            r.into_response()
        }
        Outcome::Drop => {
            st.record(0, 0);
            // A body stream that fails makes hyper abort the connection mid-response.
            let stream = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("simulated dropped connection"))
            });
            Body::from_stream(stream).into_response()
        }
    }
}

pub fn megabytes(mb: f64) -> u64 {
    (mb.clamp(0.0, 1_048_576.0) * 1_048_576.0) as u64
}

/// Simulator-only endpoints: ground truth and what the side listeners received.
async fn admin(st: &Arc<SimState>, method: &Method, path: &str, query: &str) -> Option<Reply> {
    let rest = path.strip_prefix("/admin/")?;
    let not_found = || Reply::json(404, &serde_json::json!({"error": "not_found"}));
    let r = match (method, rest) {
        (&Method::GET, "truth") => {
            let st = st.clone();
            let v = tokio::task::spawn_blocking(move || crate::truth::population(&st))
                .await
                .unwrap_or_default();
            Reply::json(200, &v)
        }
        (&Method::GET, p) if p.starts_with("truth/patient/") => {
            let id = p.trim_start_matches("truth/patient/").to_string();
            let st = st.clone();
            let v = tokio::task::spawn_blocking(move || crate::truth::patient(&st, &id))
                .await
                .ok()
                .flatten();
            match v {
                Some(v) => Reply::json(200, &v),
                None => not_found(),
            }
        }
        (&Method::GET, "side-requests") => {
            let host = parse_query(query)
                .into_iter()
                .find(|(k, _)| k == "host")
                .map(|(_, v)| v);
            Reply::json(200, &st.side_log.to_json(host.as_deref()))
        }
        (&Method::DELETE, "side-requests") => {
            st.side_log.clear();
            Reply::bytes(204, "text/plain", vec![])
        }
        _ if rest.starts_with("backend-clients/") => return None,
        _ => not_found(),
    };
    Some(r)
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

async fn route(
    st: &Arc<SimState>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Outcome {
    // What an EHR's developer portal does: register a backend-services client by its public
    // JWKS. Simulator-only; real servers do this out of band.
    if let Some(client_id) = path.strip_prefix("/admin/backend-clients/") {
        if method != Method::POST || client_id.is_empty() || client_id.contains('/') {
            return Outcome::Reply(Reply::json(404, &serde_json::json!({"error": "not_found"})));
        }
        let jwks = std::str::from_utf8(body).unwrap_or("");
        return Outcome::Reply(match st.auth.register_backend_client(client_id, jwks) {
            Ok(()) => Reply::json(201, &serde_json::json!({"client_id": client_id})),
            Err(e) => Reply::json(
                400,
                &serde_json::json!({"error": "invalid_jwks", "error_description": e.to_string()}),
            ),
        });
    }
    if let Some(r) = admin(st, method, path, query).await {
        return Outcome::Reply(r);
    }
    if let Some(rest) = path.strip_prefix("/oauth2/") {
        let form = || parse_query(std::str::from_utf8(body).unwrap_or(""));
        let r = match (method, rest) {
            (&Method::GET, "authorize") => st.auth.authorize(&parse_query(query)),
            (&Method::POST, "authorize") => st.auth.authorize(&form()),
            (&Method::POST, "authorize/decision") => st.auth.decide(&form()),
            (&Method::POST, "token") => st.auth.token(headers, &form()),
            (&Method::POST, "revoke") => st.auth.revoke(&form()),
            (&Method::POST, "introspect") => st.auth.introspect(&form()),
            (&Method::GET, "jwks") => st.auth.jwks(),
            _ => Reply::json(404, &serde_json::json!({"error": "not_found"})),
        };
        return Outcome::Reply(r);
    }
    if method == Method::GET
        && let Some(r) = crate::bulk::open_file(st, path, headers)
    {
        return Outcome::Reply(r);
    }
    // The registered base, or the other spelling the personality's links use.
    let rest = path.strip_prefix(FHIR_PATH).or_else(|| {
        st.personality
            .link_base_path
            .as_deref()
            .and_then(|alt| path.strip_prefix(alt))
    });
    let Some(rest) = rest else {
        return Outcome::Reply(Reply::bytes(
            404,
            "text/plain",
            b"not found: the FHIR base is /fhir/r4".to_vec(),
        ));
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["metadata"] => {
            if st.fire_named("metadata-500").is_some() {
                return Outcome::Reply(Reply::outcome(500, "exception", "internal server error"));
            }
            if st.fire_named("metadata-404").is_some() {
                return Outcome::Reply(Reply::bytes(404, "text/plain", b"Not Found".to_vec()));
            }
            return Outcome::Reply(fhir::capability::statement(st));
        }
        [".well-known", "smart-configuration"] => {
            return Outcome::Reply(Reply::json(200, &st.auth.smart_configuration()));
        }
        _ => {}
    }
    let params = parse_query(query);

    let Ok(remaining) = st.take_token() else {
        return Outcome::Reply(too_many(
            st.personality.rate_limit_signal,
            st.rate.unwrap_or(1.0),
        ));
    };
    for h in &st.personality.required_headers {
        if !headers.contains_key(h.as_str()) {
            return Outcome::Reply(Reply::outcome(
                400,
                "required",
                &format!("missing required header {h}"),
            ));
        }
    }
    let fired = st.fire();
    if let Some(Fault::Timeout { secs, .. }) = fired.get("timeout") {
        tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 3600.0))).await;
    }
    if let Some(Fault::StallHeaders { secs, .. }) = fired.get("stall-headers") {
        tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 3600.0))).await;
        return Outcome::Drop;
    }
    if fired.has("drop-connection") {
        return Outcome::Drop;
    }
    if fired.has("rate-limit-429") {
        return Outcome::Reply(too_many(RateSignal::RetryAfter, 1.0));
    }
    if fired.has("rate-limit-headers") {
        return Outcome::Reply(too_many(RateSignal::XRatelimit, 1.0));
    }
    if fired.has("unavailable-503") {
        return Outcome::Reply(
            Reply::outcome(503, "transient", "service unavailable").header("Retry-After", "1"),
        );
    }
    if fired.has("server-error-500") {
        return Outcome::Reply(Reply::outcome(500, "exception", "internal server error"));
    }
    if fired.has("html-error-200") {
        let html = "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Service Temporarily Unavailable</h1><p>The server is down for maintenance. Please try again later.</p></body></html>";
        return Outcome::Reply(Reply::bytes(
            200,
            "text/html; charset=utf-8",
            html.as_bytes().to_vec(),
        ));
    }
    let expire_after = st
        .faults
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find_map(|f| match f {
            Fault::TokenExpiresMidSync { after_requests } => Some(*after_requests),
            _ => None,
        });
    let authz = headers.get("authorization").and_then(|v| v.to_str().ok());
    let token = match st.auth.validate_bearer(authz, expire_after) {
        Ok(t) => t,
        Err(r) => return Outcome::Reply(r),
    };
    let search = fhir::is_search_path(&segs);
    if fired.has("redirect-cross-origin") && search {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        return Outcome::Reply(Reply::redirect(&format!(
            "{}{FHIR_PATH}{rest}{q}",
            st.foreign_origin
        )));
    }
    let binary_read =
        method == Method::GET && matches!(segs.as_slice(), ["Binary" | "documents", _]);
    let huge_body = match fired.get("huge-body") {
        Some(Fault::HugeBody { mb, .. }) if search => Some(*mb),
        _ => None,
    };
    let huge_binary = match fired.get("huge-binary") {
        Some(Fault::HugeBinary { mb, .. }) if binary_read => Some(*mb),
        _ => None,
    };
    let stall = match fired.get("stall-page") {
        Some(Fault::StallPage { secs, .. }) if search => Some(*secs),
        _ => None,
    };
    if fired.has("error-mid-paging") && fhir::is_later_page(&params) {
        return Outcome::Reply(Reply::outcome(500, "exception", "error while reading page"));
    }
    let (truncate, invalid) = (fired.has("truncated-body"), fired.has("invalid-json"));
    // Searches can scan and generate many records: run them off the async workers so a slow
    // request never stalls the others, and so a bug becomes a 500 instead of a dead task.
    let (st2, method2, headers2, body2) =
        (st.clone(), method.clone(), headers.clone(), body.clone());
    let segs2: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
    let mut reply = tokio::task::spawn_blocking(move || {
        let segs: Vec<&str> = segs2.iter().map(String::as_str).collect();
        fhir::dispatch(
            &st2, &method2, &segs, params, &headers2, &body2, &token, &fired,
        )
    })
    .await
    .unwrap_or_else(|_| Reply::outcome(500, "exception", "internal simulator error"));
    if let Some(left) = remaining
        && matches!(
            st.personality.rate_limit_signal,
            RateSignal::XRatelimit | RateSignal::Both
        )
    {
        let limit = st.rate.unwrap_or(1.0).ceil() as u64;
        reply = reply
            .header("X-RateLimit-Limit", limit.to_string())
            .header("X-RateLimit-Remaining", left.to_string());
    }
    if reply.status == 200 {
        if let Some(mb) = huge_body {
            reply.stream = Some(st.streamed(StreamKind::HugeBundle {
                bytes: megabytes(mb),
            }));
        } else if let Some(mb) = huge_binary {
            reply.stream = Some(st.streamed(StreamKind::HugeRaw {
                bytes: megabytes(mb),
            }));
        } else if let Some(secs) = stall {
            reply.stream = Some(st.streamed(StreamKind::Trickle {
                body: std::mem::take(&mut reply.body),
                every: Duration::from_secs_f64(secs.clamp(0.001, 3600.0)),
            }));
        }
    }
    if reply.status == 200 && truncate {
        let half = reply.body.len() / 2;
        reply.body.truncate(half);
    } else if reply.status == 200 && invalid {
        reply.body = b"{\"resourceType\": \"Bundle\", \"type\": \"searchset\", \"entry\": [{\"resource\": {\"resourceType\": \"Observation\",, }".to_vec();
    }
    Outcome::Reply(reply)
}
