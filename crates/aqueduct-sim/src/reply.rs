//! One response type for every endpoint, so faults can rewrite any answer before it is sent.
//! Hostile bodies (huge, trickling) are streams generated as they are sent, never buffered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Number of resources carried (for statistics).
    pub resources: usize,
    /// When set, the body is this stream instead of `body`.
    pub stream: Option<Box<Streamed>>,
}

/// A body produced while it is sent.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub kind: StreamKind,
    /// Bytes handed to the connection so far (shared with the server statistics).
    pub sent: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
pub enum StreamKind {
    /// A syntactically valid searchset Bundle padded with entries to about `bytes` long.
    HugeBundle { bytes: u64 },
    /// `bytes` raw bytes.
    HugeRaw { bytes: u64 },
    /// `body`, one byte every `every` (a slow-loris response).
    Trickle { body: Vec<u8>, every: Duration },
}

const CHUNK: usize = 1 << 20;
const BUNDLE_HEAD: &[u8] = b"{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[";
const BUNDLE_TAIL: &[u8] =
    b"{\"resource\":{\"resourceType\":\"Basic\",\"id\":\"pad-end\"},\"search\":{\"mode\":\"match\"}}]}";

/// One MiB of padding entries, each ending with a comma.
fn bundle_chunk() -> Bytes {
    static CHUNK_BYTES: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    CHUNK_BYTES
        .get_or_init(|| {
            let entry = format!(
                "{{\"resource\":{{\"resourceType\":\"Basic\",\"id\":\"pad\",\"code\":{{\"text\":\"{}\"}}}},\"search\":{{\"mode\":\"match\"}}}},",
                "x".repeat(900)
            );
            let mut out = Vec::with_capacity(CHUNK + entry.len());
            while out.len() + entry.len() <= CHUNK {
                out.extend_from_slice(entry.as_bytes());
            }
            Bytes::from(out)
        })
        .clone()
}

fn raw_chunk() -> Bytes {
    static RAW: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    RAW.get_or_init(|| Bytes::from(vec![b'%'; CHUNK])).clone()
}

impl Streamed {
    fn into_body(self) -> Body {
        let sent = self.sent;
        let count = move |b: Bytes| {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok::<Bytes, std::io::Error>(b)
        };
        match self.kind {
            StreamKind::HugeBundle { bytes } => {
                let chunk = bundle_chunk();
                let n = bytes.div_ceil(chunk.len().max(1) as u64);
                let head = futures_util::stream::iter([Bytes::from_static(BUNDLE_HEAD)]);
                let body = futures_util::stream::iter((0..n).map(move |_| chunk.clone()));
                let tail = futures_util::stream::iter([Bytes::from_static(BUNDLE_TAIL)]);
                use futures_util::StreamExt;
                Body::from_stream(head.chain(body).chain(tail).map(count))
            }
            StreamKind::HugeRaw { bytes } => {
                let chunk = raw_chunk();
                let full = bytes / CHUNK as u64;
                let rest = (bytes % CHUNK as u64) as usize;
                let tail = chunk.slice(..rest);
                use futures_util::StreamExt;
                let s = futures_util::stream::iter((0..full).map(move |_| chunk.clone())).chain(
                    futures_util::stream::iter([tail]).filter(|b| {
                        let keep = !b.is_empty();
                        async move { keep }
                    }),
                );
                Body::from_stream(s.map(count))
            }
            StreamKind::Trickle { body, every } => {
                let s =
                    futures_util::stream::unfold((body, 0usize), move |(body, pos)| async move {
                        if pos >= body.len() {
                            return None;
                        }
                        tokio::time::sleep(every).await;
                        let b = Bytes::copy_from_slice(&body[pos..pos + 1]);
                        Some((b, (body, pos + 1)))
                    });
                use futures_util::StreamExt;
                Body::from_stream(s.map(count))
            }
        }
    }
}

impl Reply {
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.to_string(),
            headers: vec![],
            body,
            resources: 0,
            stream: None,
        }
    }

    pub fn fhir(status: u16, body: Vec<u8>) -> Reply {
        Reply::bytes(status, FHIR_JSON, body)
    }

    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::bytes(
            status,
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        )
    }

    pub fn outcome(status: u16, code: &str, diagnostics: &str) -> Reply {
        let severity = if status >= 500 { "fatal" } else { "error" };
        Reply::fhir(status, outcome_json(severity, code, diagnostics))
    }

    pub fn redirect(location: &str) -> Reply {
        Reply::bytes(302, "text/plain", vec![]).header("Location", location)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match self.stream {
            Some(s) => s.into_body(),
            None => Body::from(self.body),
        };
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            h.insert(axum::http::header::CONTENT_TYPE, v);
        }
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
                h.append(k, v);
            }
        }
        resp
    }
}

pub fn outcome_json(severity: &str, code: &str, diagnostics: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    }))
    .unwrap_or_default()
}
