//! The HTTP front: one axum fallback handler that routes by path, then the request pipeline
//! every FHIR call goes through (rate limit, required headers, injected faults, bearer token,
//! dispatch, body faults), and the counters behind `SimServer::stats`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use crate::auth::AuthServer;
use crate::bulk::BulkJobs;
use crate::fault::{self, Fault};
use crate::fhir::{self, Cursors};
use crate::generator::GenContext;
use crate::personality::{Personality, RateSignal};
use crate::reply::Reply;
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

    fn record(&self, status: u16, resources: usize) {
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
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub async fn start(addr: SocketAddr, config: SimConfig) -> Result<crate::SimServer, SimError> {
    let personality = Arc::new(crate::personality::load(&config.personality)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    let origin = format!("http://{local}");
    let base_url = format!("{origin}{FHIR_PATH}");
    let ctx = GenContext::new(
        config.seed,
        base_url.clone(),
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
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(crate::SimServer {
        state,
        handle: Handle {
            addr: local,
            stop,
            task,
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
    let Some(rest) = path.strip_prefix(FHIR_PATH) else {
        return Outcome::Reply(Reply::bytes(
            404,
            "text/plain",
            b"not found: the FHIR base is /fhir/r4".to_vec(),
        ));
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["metadata"] => return Outcome::Reply(fhir::capability::statement(st)),
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
    if reply.status == 200 && truncate {
        let half = reply.body.len() / 2;
        reply.body.truncate(half);
    } else if reply.status == 200 && invalid {
        reply.body = b"{\"resourceType\": \"Bundle\", \"type\": \"searchset\", \"entry\": [{\"resource\": {\"resourceType\": \"Observation\",, }".to_vec();
    }
    Outcome::Reply(reply)
}
