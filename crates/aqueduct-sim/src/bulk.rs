//! Bulk Data `$export` (FHIR Bulk Data Access 2.0): async kick-off at the system, `Patient`
//! and `Group/{id}` levels with `_type`, `_since`, `_typeFilter` and `_outputFormat`; status
//! polling with `Retry-After` (seconds or an HTTP date) and `X-Progress`; a manifest with
//! several files per type, `requiresAccessToken` true (files under the FHIR base, token
//! required) or false (files at `{origin}/bulk-open/...`, no token taken), `deleted` entries
//! for `_since` exports and an `error` array; gzip `Content-Encoding` for clients that accept
//! it, `Range: bytes=N-` answered with 206, and DELETE to cancel. Jobs complete after a
//! personality-defined number of polls, which keeps tests fast and deterministic.
//!
//! Faults (see [`crate::fault`]): `bulk-status-5xx`, `bulk-429`, `bulk-expired-files`,
//! `bulk-truncated-file`, `bulk-invalid-lines`, `bulk-job-fails`.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::HeaderMap;
use serde_json::json;

use crate::auth::{Access, TokenInfo};
use crate::fhir::search::date_range;
use crate::generator::{Version, ms_to_instant};
use crate::reply::Reply;
use crate::server::SimState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,
    Deleted,
}

struct File {
    rtype: String,
    kind: Kind,
    lines: Vec<Arc<[u8]>>,
    /// Lines written into the body that are not resources (`bulk-invalid-lines`).
    junk: bool,
    /// The body ends in the middle of its last line (`bulk-truncated-file`).
    cut: bool,
    /// Answers 410 Gone (`bulk-expired-files`).
    expired: bool,
    gz: OnceLock<Arc<Vec<u8>>>,
}

impl File {
    fn body(&self) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum::<usize>() + 64);
        for (n, l) in self.lines.iter().enumerate() {
            body.extend_from_slice(l);
            body.push(b'\n');
            if self.junk && n == 0 {
                body.extend_from_slice(b"{\"resourceType\": \"Observation\",, \"id\": }\n\n");
                body.extend_from_slice(b"{\"id\": \"no-type\", \"status\": \"final\"}\n");
            }
        }
        if self.cut && !body.is_empty() {
            // drop the final newline and half of the last line
            let last_start = body[..body.len() - 1]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|p| p + 1)
                .unwrap_or(0);
            let keep = last_start + (body.len() - 1 - last_start) / 2;
            body.truncate(keep.max(last_start + 1));
        }
        body
    }

    fn gzipped(&self) -> Arc<Vec<u8>> {
        self.gz
            .get_or_init(|| {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.lines.len() * 256),
                    flate2::Compression::fast(),
                );
                let _ = enc.write_all(&self.body());
                Arc::new(enc.finish().unwrap_or_default())
            })
            .clone()
    }
}

struct Job {
    level: Level,
    request: String,
    types: Vec<String>,
    since: Option<i64>,
    /// (type, parameter, values) from `_typeFilter`.
    filters: Vec<(String, String, Vec<String>)>,
    transaction_time: String,
    polls: u32,
    files: Option<Arc<Vec<Arc<File>>>>,
    fails: bool,
    expire_first_type: bool,
}

#[derive(Default)]
pub struct BulkJobs {
    jobs: Mutex<HashMap<String, Job>>,
    /// `bulk-expired-files` hits only the first job.
    expired_once: AtomicBool,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `_typeFilter=Observation?category=laboratory,Condition?code=x` (repeatable): the
/// parameters this server filters on are `category`, `code` and `status`.
fn type_filters(params: &[(String, String)]) -> Result<Vec<(String, String, Vec<String>)>, String> {
    let mut out = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "_typeFilter") {
        for one in split_filters(v) {
            let Some((rtype, query)) = one.split_once('?') else {
                return Err(format!("_typeFilter {one} is not Type?query"));
            };
            for (k, val) in url::form_urlencoded::parse(query.as_bytes()) {
                if !matches!(k.as_ref(), "category" | "code" | "status") {
                    return Err(format!("_typeFilter parameter {k} is not supported"));
                }
                out.push((
                    rtype.to_string(),
                    k.to_string(),
                    val.split(',').map(str::to_string).collect(),
                ));
            }
        }
    }
    Ok(out)
}

/// Splits a `_typeFilter` value at the commas that start a new `Type?` query (commas also
/// separate values inside one query).
fn split_filters(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in v.split(',') {
        let starts_query = part
            .split_once('?')
            .is_some_and(|(t, _)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()));
        match out.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

fn passes(filters: &[(String, String, Vec<String>)], rtype: &str, v: &Version) -> bool {
    let mine: Vec<_> = filters.iter().filter(|(t, _, _)| t == rtype).collect();
    if mine.is_empty() {
        return true;
    }
    let ix = &v.index;
    mine.iter().all(|(_, k, vals)| {
        vals.iter().any(|val| {
            let code = val.rsplit('|').next().unwrap_or(val);
            match k.as_str() {
                "category" => ix.category.iter().any(|c| c == code),
                "code" => ix.code.iter().any(|c| c == val || c == code),
                "status" => ix.status.as_deref() == Some(val.as_str()),
                _ => false,
            }
        })
    })
}

pub fn kick_off(
    st: &SimState,
    level: Level,
    params: &[(String, String)],
    headers: &HeaderMap,
    token: &TokenInfo,
) -> Reply {
    if !st.personality.bulk_export {
        return Reply::outcome(404, "not-supported", "Bulk Data export is not supported");
    }
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !prefer.contains("respond-async") {
        return Reply::outcome(400, "invalid", "Prefer: respond-async is required");
    }
    if let Some(f) = param(params, "_outputFormat")
        && !matches!(
            f,
            "application/fhir+ndjson" | "application/ndjson" | "ndjson"
        )
    {
        return Reply::outcome(
            400,
            "not-supported",
            &format!("_outputFormat {f} not supported"),
        );
    }
    let since = match param(params, "_since") {
        Some(v) => match date_range(v) {
            Some((a, _)) => Some(a),
            None => return Reply::outcome(400, "invalid", "cannot parse _since"),
        },
        None => None,
    };
    let filters = match type_filters(params) {
        Ok(f) => f,
        Err(e) => return Reply::outcome(400, "not-supported", &e),
    };
    let mut all: Vec<String> = st.personality.types.keys().cloned().collect();
    if level == Level::System {
        all.extend(st.store.ctx.shared_types().iter().map(|s| s.to_string()));
    }
    let requested: Vec<String> = match param(params, "_type") {
        Some(t) => t
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| all.contains(s))
            .collect(),
        None => all,
    };
    let types: Vec<String> = requested
        .into_iter()
        .filter(|t| token.access(t, true) == Access::Full)
        .collect();
    if types.is_empty() {
        return Reply::outcome(
            403,
            "forbidden",
            "export needs system/ (or user/) scopes for the requested types",
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let path = match level {
        Level::System => "$export".to_string(),
        Level::Patient => "Patient/$export".to_string(),
        Level::Group => format!("Group/{}/$export", st.store.group_id),
    };
    let expire_first_type =
        st.has_fault("bulk-expired-files") && !st.bulk.expired_once.swap(true, Ordering::SeqCst);
    let job = Job {
        level,
        request: format!(
            "{}/{path}{}{query}",
            st.base_url,
            if query.is_empty() { "" } else { "?" }
        ),
        types,
        since,
        filters,
        transaction_time: ms_to_instant(chrono::Utc::now().timestamp_millis()),
        polls: 0,
        files: None,
        fails: st.has_fault("bulk-job-fails"),
        expire_first_type,
    };
    st.bulk
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), job);
    Reply::bytes(202, "application/json", vec![]).header(
        "Content-Location",
        format!("{}/bulkstatus/{id}", st.base_url),
    )
}

fn deleted_bundle(rtype: &str, id: &str) -> Arc<[u8]> {
    let v = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": format!("{rtype}/{id}")}}],
    });
    Arc::from(serde_json::to_vec(&v).unwrap_or_default())
}

fn build_files(st: &SimState, job: &Job) -> Vec<Arc<File>> {
    let stale = st.stale();
    let mut by_type: Vec<(String, Vec<Arc<[u8]>>)> =
        job.types.iter().map(|t| (t.clone(), vec![])).collect();
    let mut deleted: Vec<(String, Vec<Arc<[u8]>>)> =
        job.types.iter().map(|t| (t.clone(), vec![])).collect();
    let mut add = |r: &crate::generator::Resource, v: &Version| {
        if job.since.is_some_and(|s| v.last_updated_ms <= s) {
            return;
        }
        if v.deleted {
            // deleted entries are reported for `_since` exports only (Bulk Data 2.0)
            if job.since.is_some()
                && let Some((_, d)) = deleted.iter_mut().find(|(t, _)| t == r.rtype)
            {
                d.push(deleted_bundle(r.rtype, &r.id));
            }
            return;
        }
        if !passes(&job.filters, r.rtype, v) {
            return;
        }
        if let Some((_, l)) = by_type.iter_mut().find(|(t, _)| t == r.rtype) {
            l.push(v.json.clone());
        }
    };
    for i in 0..st.store.patient_ids.len() {
        let rec = st.store.record(i);
        for r in &rec.resources {
            if let Some(v) = r.visible(stale) {
                add(r, v);
            }
        }
    }
    if job.level == Level::System {
        for r in st.store.shared() {
            if let Some(v) = r.visible(stale) {
                add(r, v);
            }
        }
    }
    let max = st.personality.bulk_file_max_resources.max(1);
    let expired_type = job
        .expire_first_type
        .then(|| {
            by_type
                .iter()
                .find(|(_, l)| !l.is_empty())
                .map(|(t, _)| t.clone())
        })
        .flatten();
    let (junk, cut) = (
        st.has_fault("bulk-invalid-lines"),
        st.has_fault("bulk-truncated-file"),
    );
    let mut files = Vec::new();
    for (kind, groups) in [(Kind::Output, by_type), (Kind::Deleted, deleted)] {
        for (rtype, lines) in groups {
            for chunk in lines.chunks(max) {
                let first = kind == Kind::Output && files.is_empty();
                files.push(Arc::new(File {
                    expired: kind == Kind::Output && expired_type.as_deref() == Some(&rtype),
                    rtype: rtype.clone(),
                    kind,
                    lines: chunk.to_vec(),
                    junk: first && junk,
                    cut: first && cut,
                    gz: OnceLock::new(),
                }));
            }
        }
    }
    files
}

/// `scheme://host:port` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn retry_after(st: &SimState) -> String {
    let secs = st.personality.bulk_retry_after_secs;
    if st.personality.bulk_retry_after_http_date {
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
    } else {
        secs.to_string()
    }
}

pub fn status(st: &SimState, job_id: &str) -> Reply {
    if st.fire_named("bulk-429").is_some() {
        return Reply::outcome(429, "throttled", "too many status requests")
            .header("Retry-After", "1");
    }
    if st.fire_named("bulk-status-5xx").is_some() {
        return Reply::outcome(
            500,
            "transient",
            "status temporarily unavailable; try again",
        );
    }
    let mut jobs = st.bulk.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(job_id) else {
        return Reply::outcome(404, "not-found", "export job unknown or cancelled");
    };
    let needed = st.personality.bulk_polls_before_ready;
    if job.polls < needed {
        job.polls += 1;
        let pct = job.polls * 100 / (needed + 1);
        return Reply::bytes(202, "application/json", vec![])
            .header("Retry-After", retry_after(st))
            .header("X-Progress", format!("in progress ({pct}%)"));
    }
    if job.fails {
        return Reply::outcome(
            500,
            "exception",
            "export failed: the export worker ran out of disk space",
        );
    }
    if job.files.is_none() {
        job.files = Some(Arc::new(build_files(st, job)));
    }
    let files = job.files.clone().unwrap_or_default();
    let open = !st.personality.bulk_requires_token;
    let file_url = |n: usize| {
        if open {
            format!("{}/bulk-open/{job_id}/{n}.ndjson", origin(&st.base_url))
        } else {
            format!("{}/bulkfiles/{job_id}/{n}.ndjson", st.base_url)
        }
    };
    let listed = |kind: Kind| -> Vec<serde_json::Value> {
        files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == kind && !f.lines.is_empty())
            .map(|(n, f)| json!({"type": f.rtype, "url": file_url(n), "count": f.lines.len()}))
            .collect()
    };
    // Under the outcome-in-bundle fault the export also reports a partial failure, as servers
    // do in the manifest's error array.
    let errors: Vec<_> = if st.has_fault("outcome-in-bundle") {
        vec![
            json!({"type": "OperationOutcome", "url": format!("{}/bulkfiles/{job_id}/error.ndjson", st.base_url)}),
        ]
    } else {
        vec![]
    };
    let manifest = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": !open,
        "output": listed(Kind::Output),
        "deleted": listed(Kind::Deleted),
        "error": errors,
    });
    Reply::json(200, &manifest).header("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")
}

pub fn cancel(st: &SimState, job_id: &str) -> Reply {
    match st
        .bulk
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(job_id)
    {
        Some(_) => Reply::outcome(202, "informational", "export job cancelled"),
        None => Reply::outcome(404, "not-found", "export job unknown or already cancelled"),
    }
}

/// `{origin}/bulk-open/{job}/{file}`: the files of a `requiresAccessToken: false` export. A
/// request carrying a token is refused: the manifest said none is needed, so sending one
/// leaks it.
pub fn open_file(st: &SimState, path: &str, headers: &HeaderMap) -> Option<Reply> {
    let rest = path.strip_prefix("/bulk-open/")?;
    let (job, file) = rest.split_once('/')?;
    if headers.contains_key("authorization") {
        return Some(Reply::outcome(
            400,
            "security",
            "this file needs no access token, and one was sent",
        ));
    }
    Some(serve_file(st, job, file, headers))
}

pub fn file(st: &SimState, job_id: &str, file: &str, headers: &HeaderMap) -> Reply {
    if !st.personality.bulk_requires_token && file != "error.ndjson" {
        return Reply::outcome(404, "not-found", "export file not found");
    }
    serve_file(st, job_id, file, headers)
}

fn serve_file(st: &SimState, job_id: &str, file: &str, headers: &HeaderMap) -> Reply {
    if st.fire_named("bulk-429").is_some() {
        return Reply::outcome(429, "throttled", "too many downloads").header("Retry-After", "1");
    }
    let f = {
        let jobs = st.bulk.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if file == "error.ndjson" && jobs.contains_key(job_id) {
            let mut line = crate::reply::outcome_json(
                "error",
                "processing",
                "some Observation resources could not be exported",
            );
            line.push(b'\n');
            return Reply::bytes(200, "application/fhir+ndjson", line);
        }
        let n: Option<usize> = file.strip_suffix(".ndjson").and_then(|n| n.parse().ok());
        let Some(f) = jobs
            .get(job_id)
            .and_then(|j| j.files.as_ref())
            .and_then(|fs| n.and_then(|n| fs.get(n)))
            .cloned()
        else {
            return Reply::outcome(404, "not-found", "export file not found");
        };
        f
    };
    if f.expired {
        return Reply::outcome(410, "not-found", "export file expired");
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let range_from = header("range")
        .filter(|_| st.personality.bulk_ranges)
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let gzip = st.personality.bulk_gzip
        && range_from.is_none()
        && header("accept-encoding").is_some_and(|a| a.contains("gzip"));
    let mut r = if let Some(from) = range_from {
        let body = f.body();
        let len = body.len();
        if from >= len && len > 0 {
            return Reply::bytes(416, "text/plain", vec![])
                .header("Content-Range", format!("bytes */{len}"));
        }
        let part = body[from.min(len)..].to_vec();
        Reply::bytes(206, "application/fhir+ndjson", part).header(
            "Content-Range",
            format!("bytes {from}-{}/{len}", len.saturating_sub(1)),
        )
    } else if gzip {
        Reply::bytes(200, "application/fhir+ndjson", f.gzipped().to_vec())
            .header("Content-Encoding", "gzip")
    } else {
        Reply::bytes(200, "application/fhir+ndjson", f.body())
    };
    if st.personality.bulk_ranges {
        r = r.header("Accept-Ranges", "bytes");
    }
    r.resources = f.lines.len();
    r
}

#[cfg(test)]
mod tests {
    use super::split_filters;

    #[test]
    fn type_filter_values_split_at_queries_only() {
        assert_eq!(
            split_filters("Observation?category=laboratory,vital-signs,Condition?code=x"),
            vec![
                "Observation?category=laboratory,vital-signs".to_string(),
                "Condition?code=x".to_string()
            ]
        );
    }
}
