//! The FHIR R4 REST surface: dispatch by path, read / vread with ETags, Binary, batch.

mod bundle;
pub mod capability;
pub mod search;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::{Value, json};

pub use bundle::Cursors;

use crate::auth::{Access, TokenInfo};
use crate::generator;
use crate::reply::Reply;
use crate::server::{Fired, SimState, parse_query};

/// Is this request for page two or later of a search?
pub fn is_later_page(params: &[(String, String)]) -> bool {
    params
        .iter()
        .any(|(k, v)| (k == "_getpagesoffset" && v != "0") || k == "_cursor")
}

/// Is this path a search (type-level, or `$everything`)?
pub fn is_search_path(segs: &[&str]) -> bool {
    match segs {
        [t] => !t.starts_with('$') && !t.starts_with('_') && *t != "metadata",
        [_, "_search"] => true,
        ["Patient", _, "$everything"] => true,
        _ => false,
    }
}

fn http_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    st: &SimState,
    method: &Method,
    segs: &[&str],
    params: Vec<(String, String)>,
    headers: &HeaderMap,
    body: &Bytes,
    token: &TokenInfo,
    fired: &Fired,
) -> Reply {
    let get = method == Method::GET;
    let mut params = params;
    if get && is_search_path(segs) {
        let path = segs.join("/");
        if let Some((_, n)) = params.iter().find(|(k, _)| k == "_endless") {
            return bundle::endless_page(st, &path, n.parse().unwrap_or(0));
        }
        if fired.has("endless-empty-pages") {
            return bundle::endless_page(st, &path, 0);
        }
        if fired.has("cursor-repeat") && !params.iter().any(|(k, _)| k == "_repeat") {
            params.push(("_repeat".into(), "0".into()));
        }
    }
    match segs {
        [] if method == Method::POST => batch(st, body, token, fired),
        ["$export"] if get => {
            crate::bulk::kick_off(st, crate::bulk::Level::System, &params, headers, token)
        }
        ["Patient", "$export"] if get => {
            crate::bulk::kick_off(st, crate::bulk::Level::Patient, &params, headers, token)
        }
        ["Group", id, "$export"] if get => {
            if *id != st.store.group_id {
                return Reply::outcome(404, "not-found", &format!("Group/{id} not found"));
            }
            crate::bulk::kick_off(st, crate::bulk::Level::Group, &params, headers, token)
        }
        ["bulkstatus", job] if get => crate::bulk::status(st, job),
        ["bulkstatus", job] if method == Method::DELETE => crate::bulk::cancel(st, job),
        ["bulkfiles", job, file] if get => crate::bulk::file(st, job, file, headers),
        ["_paging", ..] => Reply::outcome(404, "not-found", "paging link not found"),
        ["Binary", id] if get => binary(st, id, headers, token),
        // Document URLs that are not Binary paths (`document_paths`): raw content.
        ["documents", id] if get => binary(st, id, &HeaderMap::new(), token),
        ["Group", id] if get => {
            if *id != st.store.group_id {
                return Reply::outcome(404, "not-found", &format!("Group/{id} not found"));
            }
            let mut r = Reply::fhir(200, generator::group_json(id, &st.store.patient_ids));
            r.resources = 1;
            r
        }
        [t] if get => match params.iter().find(|(k, _)| k == "_cursor") {
            Some((_, c)) => bundle::cursor_page(st, c, fired),
            None => search::search(st, t, params, token, fired),
        },
        [t, "_search"] if method == Method::POST => {
            let mut all = params;
            all.extend(parse_query(std::str::from_utf8(body).unwrap_or("")));
            search::search(st, t, all, token, fired)
        }
        ["Patient", id, "$everything"] if get => {
            match params.iter().find(|(k, _)| k == "_cursor") {
                Some((_, c)) => bundle::cursor_page(st, c, fired),
                None => search::everything(st, id, params, token, fired),
            }
        }
        [t, id] if get => read(st, t, id, None, headers, token),
        [t, id, "_history", vid] if get => read(st, t, id, Some(vid), headers, token),
        _ if !get && method != Method::POST && method != Method::DELETE => {
            Reply::outcome(405, "not-supported", "the simulator is read-only")
        }
        _ => Reply::outcome(404, "not-found", "unknown FHIR path"),
    }
}

fn read(
    st: &SimState,
    rtype: &str,
    id: &str,
    vid: Option<&str>,
    headers: &HeaderMap,
    token: &TokenInfo,
) -> Reply {
    let p = &st.personality;
    if !p.serves(rtype) && !st.store.ctx.is_shared(rtype) {
        if p.claimed_unsupported_types.iter().any(|t| t == rtype) {
            return Reply::outcome(
                400,
                "not-supported",
                &format!("{rtype} read is not supported"),
            );
        }
        return Reply::outcome(
            404,
            "not-supported",
            &format!("resource type {rtype} is not supported"),
        );
    }
    if p.referenced_read_errors.iter().any(|t| t == rtype) {
        return Reply::outcome(500, "exception", &format!("error reading {rtype}/{id}"));
    }
    let Some(found) = st.store.find(rtype, id) else {
        return Reply::outcome(404, "not-found", &format!("{rtype}/{id} not found"));
    };
    match token.access(rtype, false) {
        Access::Full => {}
        Access::Patient(pid) if found.patient_id().is_none_or(|x| x == pid) => {}
        _ => {
            return Reply::outcome(
                403,
                "forbidden",
                &format!("not authorized to read {rtype}/{id}"),
            );
        }
    }
    let r = found.resource();
    let stale = st.stale();
    let version = match vid {
        None => r.visible(stale),
        Some(v) => r
            .versions
            .iter()
            .find(|x| x.vid.to_string() == *v)
            .filter(|x| !stale || x.vid == 1 && r.born_step == 0),
    };
    let Some(v) = version else {
        return Reply::outcome(404, "not-found", &format!("{rtype}/{id} version not found"));
    };
    if v.deleted {
        return Reply::outcome(410, "deleted", &format!("{rtype}/{id} has been deleted"));
    }
    let etag = format!("W/\"{}\"", v.vid);
    let inm = headers.get("if-none-match").and_then(|h| h.to_str().ok());
    if vid.is_none()
        && inm.is_some_and(|h| {
            h.split(',')
                .any(|t| t.trim() == etag || t.trim() == format!("\"{}\"", v.vid))
        })
    {
        return Reply::bytes(304, "application/fhir+json", vec![]).header("ETag", etag);
    }
    let mut reply = Reply::fhir(200, v.json.to_vec())
        .header("ETag", etag)
        .header("Last-Modified", http_date(v.last_updated_ms));
    reply.resources = 1;
    reply
}

fn binary(st: &SimState, id: &str, headers: &HeaderMap, token: &TokenInfo) -> Reply {
    let Some((b, owner)) = st.store.binary(id) else {
        return Reply::outcome(404, "not-found", &format!("Binary/{id} not found"));
    };
    let allowed = ["Binary", "DocumentReference"]
        .iter()
        .any(|t| match token.access(t, false) {
            Access::Full => true,
            Access::Patient(p) => owner == p,
            Access::Denied => false,
        });
    if !allowed {
        return Reply::outcome(403, "forbidden", "not authorized to read this Binary");
    }
    let accept = headers
        .get("accept")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let mut reply = if accept.contains("fhir+json") {
        Reply::fhir(200, generator::binary_resource_json(&b))
    } else {
        Reply::bytes(200, b.content_type, b.data.to_vec())
    };
    reply.resources = 1;
    reply
}

/// POST of a batch (or transaction) Bundle carrying GET entries.
fn batch(st: &SimState, body: &Bytes, token: &TokenInfo, fired: &Fired) -> Reply {
    if !st.personality.batch {
        return Reply::outcome(400, "not-supported", "batch/transaction is not supported");
    }
    let Ok(bundle) = serde_json::from_slice::<Value>(body) else {
        return Reply::outcome(400, "structure", "body is not a JSON Bundle");
    };
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || !matches!(kind, "batch" | "transaction")
    {
        return Reply::outcome(
            400,
            "structure",
            "expected a Bundle of type batch or transaction",
        );
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Entries are spliced as raw bytes so each resource is byte-identical to its read.
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut served = 0;
    // Inside a Bundle every entry is FHIR JSON: a Binary comes back as a Binary resource.
    let mut entry_headers = HeaderMap::new();
    entry_headers.insert(
        "accept",
        axum::http::HeaderValue::from_static("application/fhir+json"),
    );
    for (n, e) in entries.iter().enumerate() {
        let method = e
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or("");
        let url = e
            .pointer("/request/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        if method != "GET" {
            out.push(serde_json::to_vec(&json!({"response": {"status": "405 Method Not Allowed", "outcome": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "only GET entries are supported"}]}}})).unwrap_or_default());
            continue;
        }
        let url = url
            .strip_prefix(&st.base_url)
            .or_else(|| url.strip_prefix(st.link_base()))
            .unwrap_or(url)
            .trim_start_matches('/');
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let r = dispatch(
            st,
            &Method::GET,
            &segs,
            parse_query(query),
            &entry_headers,
            &Bytes::new(),
            token,
            fired,
        );
        served += r.resources;
        let mut response = json!({"status": format!("{}", r.status)});
        if let Some(etag) = r
            .headers
            .iter()
            .find(|(k, _)| k == "ETag")
            .map(|(_, v)| v.clone())
        {
            response["etag"] = json!(etag);
        }
        let body_is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&r.body).is_ok();
        let raw: &[u8] = if body_is_json { &r.body } else { b"null" };
        // Batch responses identify their entries by urn:uuid, as servers do for results that
        // are not a single persisted resource.
        let full_url = format!("urn:uuid:{}", uuid::Uuid::from_u64_pair(st.seed, n as u64));
        let mut entry = Vec::with_capacity(raw.len() + 200);
        entry.extend_from_slice(b"{\"fullUrl\":");
        entry.extend_from_slice(
            serde_json::to_string(&full_url)
                .unwrap_or_default()
                .as_bytes(),
        );
        if r.status < 300 {
            entry.extend_from_slice(b",\"resource\":");
            entry.extend_from_slice(raw);
        } else {
            response["outcome"] = serde_json::from_slice(raw).unwrap_or(Value::Null);
        }
        entry.extend_from_slice(b",\"response\":");
        entry.extend_from_slice(&serde_json::to_vec(&response).unwrap_or_default());
        entry.push(b'}');
        out.push(entry);
    }
    let resp_type = if kind == "batch" {
        "batch-response"
    } else {
        "transaction-response"
    };
    let mut bytes =
        format!("{{\"resourceType\":\"Bundle\",\"type\":\"{resp_type}\",\"entry\":[").into_bytes();
    for (i, e) in out.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(e);
    }
    bytes.extend_from_slice(b"]}");
    let mut reply = Reply::fhir(200, bytes);
    reply.resources = served;
    reply
}
