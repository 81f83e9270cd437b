//! Bulk Data `$export` (FHIR Bulk Data Access 2.0): async kick-off, status polling with
//! `Retry-After` / `X-Progress`, a manifest, NDJSON downloads that need the token, `_type`,
//! `_since`, and DELETE to cancel. Jobs complete after a personality-defined number of polls,
//! which keeps tests fast and deterministic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde_json::json;

use crate::auth::{Access, TokenInfo};
use crate::fhir::search::date_range;
use crate::generator::ms_to_instant;
use crate::reply::Reply;
use crate::server::SimState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
    Group,
}

struct File {
    rtype: String,
    lines: Vec<Arc<[u8]>>,
}

struct Job {
    level: Level,
    request: String,
    types: Vec<String>,
    since: Option<i64>,
    transaction_time: String,
    polls: u32,
    files: Option<Vec<File>>,
}

#[derive(Default)]
pub struct BulkJobs {
    jobs: Mutex<HashMap<String, Job>>,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
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
    let job = Job {
        level,
        request: format!(
            "{}/{path}{}{query}",
            st.base_url,
            if query.is_empty() { "" } else { "?" }
        ),
        types,
        since,
        transaction_time: ms_to_instant(chrono::Utc::now().timestamp_millis()),
        polls: 0,
        files: None,
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

fn build_files(st: &SimState, job: &Job) -> Vec<File> {
    let stale = st.stale();
    let mut by_type: Vec<(String, Vec<Arc<[u8]>>)> =
        job.types.iter().map(|t| (t.clone(), vec![])).collect();
    let mut add = |rtype: &str, json: &Arc<[u8]>| {
        if let Some((_, v)) = by_type.iter_mut().find(|(t, _)| t == rtype) {
            v.push(json.clone());
        }
    };
    for i in 0..st.store.patient_ids.len() {
        let rec = st.store.record(i);
        for r in &rec.resources {
            if let Some(v) = r.visible(stale).filter(|v| !v.deleted)
                && job.since.is_none_or(|s| v.last_updated_ms > s)
            {
                add(r.rtype, &v.json);
            }
        }
    }
    if job.level == Level::System {
        for r in st.store.shared() {
            if let Some(v) = r.visible(stale).filter(|v| !v.deleted)
                && job.since.is_none_or(|s| v.last_updated_ms > s)
            {
                add(r.rtype, &v.json);
            }
        }
    }
    let max = st.personality.bulk_file_max_resources.max(1);
    let mut files = Vec::new();
    for (rtype, lines) in by_type {
        for chunk in lines.chunks(max) {
            files.push(File {
                rtype: rtype.clone(),
                lines: chunk.to_vec(),
            });
        }
    }
    files
}

pub fn status(st: &SimState, job_id: &str) -> Reply {
    let mut jobs = st.bulk.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(job_id) else {
        return Reply::outcome(404, "not-found", "export job unknown or cancelled");
    };
    let needed = st.personality.bulk_polls_before_ready;
    if job.polls < needed {
        job.polls += 1;
        let pct = job.polls * 100 / (needed + 1);
        return Reply::bytes(202, "application/json", vec![])
            .header(
                "Retry-After",
                st.personality.bulk_retry_after_secs.to_string(),
            )
            .header("X-Progress", format!("in progress ({pct}%)"));
    }
    if job.files.is_none() {
        job.files = Some(build_files(st, job));
    }
    let files = job.files.as_deref().unwrap_or(&[]);
    let output: Vec<_> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.lines.is_empty())
        .map(|(n, f)| json!({"type": f.rtype, "url": format!("{}/bulkfiles/{job_id}/{n}.ndjson", st.base_url), "count": f.lines.len()}))
        .collect();
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
        "requiresAccessToken": true,
        "output": output,
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

pub fn file(st: &SimState, job_id: &str, file: &str) -> Reply {
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
    else {
        return Reply::outcome(404, "not-found", "export file not found");
    };
    let mut body = Vec::with_capacity(f.lines.iter().map(|l| l.len() + 1).sum());
    for l in &f.lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    let mut r = Reply::bytes(200, "application/fhir+ndjson", body);
    r.resources = f.lines.len();
    r
}
