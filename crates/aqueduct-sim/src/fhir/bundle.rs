//! Searchset paging and rendering. Pages are assembled from pre-serialized resource bytes.
//! Offset paging is stateless (`_getpagesoffset` in the next link); cursor paging keeps the
//! result list server-side behind an opaque `_cursor`, like Epic's session ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::generator::SearchIndex;
use crate::personality::PagingStyle;
use crate::reply::{Reply, outcome_json};
use crate::server::{Fired, SimState};

const CURSOR_TTL: Duration = Duration::from_secs(600);
const MAX_CURSORS: usize = 2000;

#[derive(Clone, Debug)]
pub struct Hit {
    pub rtype: &'static str,
    pub id: String,
    pub json: Arc<[u8]>,
    pub index: Arc<SearchIndex>,
    /// Owning patient record, None for shared resources.
    pub owner: Option<usize>,
}

/// What a searchset page needs besides the matches.
#[derive(Clone, Debug, Default)]
pub struct PageSpec {
    /// Path under the base, e.g. `Observation` or `Patient/x/$everything`.
    pub path: String,
    /// Non-paging parameters, echoed in links.
    pub params: Vec<(String, String)>,
    pub count: usize,
    pub offset: usize,
    pub include: Vec<(String, String)>,
    pub revinclude: Vec<(String, String)>,
    pub total: bool,
    /// OperationOutcome resources (serialized) added as search.mode = outcome entries to the
    /// first page (`suppressed` categories).
    pub outcomes: Vec<Vec<u8>>,
    /// `cursor-repeat`: the n-th repetition of the first page, each with a fresh next link.
    pub repeat: Option<u64>,
}

/// Hostile paging ends here at the latest, so nothing runs forever.
pub const HOSTILE_PAGE_LIMIT: u64 = 100_000;

const INFORMATIONAL: &str = "This response includes information available to the authorized user at the time of the request";

/// `endless-empty-pages`: page n of an endless empty result, with a fresh next cursor.
pub fn endless_page(st: &SimState, path: &str, n: u64) -> Reply {
    let base = st.link_base();
    let this = link(base, path, &[("_endless".into(), n.to_string())]);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"link\":[{\"relation\":\"self\",\"url\":");
    out.extend_from_slice(serde_json::to_string(&this).unwrap_or_default().as_bytes());
    out.push(b'}');
    if n.saturating_add(1) < HOSTILE_PAGE_LIMIT {
        let next = link(
            base,
            path,
            &[
                ("_endless".into(), (n + 1).to_string()),
                ("_nonce".into(), uuid::Uuid::new_v4().simple().to_string()),
            ],
        );
        out.extend_from_slice(b",{\"relation\":\"next\",\"url\":");
        out.extend_from_slice(serde_json::to_string(&next).unwrap_or_default().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"entry\":[]}");
    Reply::fhir(200, out)
}

struct Session {
    hits: Arc<Vec<Hit>>,
    spec: PageSpec,
    created: Instant,
}

#[derive(Default)]
pub struct Cursors {
    sessions: HashMap<String, Session>,
}

fn link(base: &str, path: &str, params: &[(String, String)]) -> String {
    let mut s = format!("{base}/{path}");
    if !params.is_empty() {
        s.push('?');
        s.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish(),
        );
    }
    s
}

pub fn encode_cursor(key: &str, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{key}:{offset}"))
}

fn decode_cursor(c: &str) -> Option<(String, usize)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (k, o) = raw.split_once(':')?;
    Some((k.to_string(), o.parse().ok()?))
}

/// Serve the page the cursor points to.
pub fn cursor_page(st: &SimState, cursor: &str, fired: &Fired) -> Reply {
    let found = decode_cursor(cursor).and_then(|(key, offset)| {
        let mut c = st.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let s = c.sessions.get(&key)?;
        if s.created.elapsed() > CURSOR_TTL {
            c.sessions.remove(&key);
            return None;
        }
        Some((key, offset, s.hits.clone(), s.spec.clone()))
    });
    let Some((key, offset, hits, mut spec)) = found else {
        return Reply::outcome(404, "not-found", "paging session expired or unknown");
    };
    spec.offset = offset;
    render(st, &hits, &spec, Some(&key), fired)
}

/// First page of a result; stores a cursor session when the personality pages that way.
pub fn first_page(st: &SimState, hits: Vec<Hit>, spec: PageSpec, fired: &Fired) -> Reply {
    if st.personality.paging == PagingStyle::Cursor
        && spec.repeat.is_none()
        && spec.count > 0
        && spec.offset.saturating_add(spec.count) < hits.len()
    {
        let key = uuid::Uuid::new_v4().simple().to_string();
        let hits = Arc::new(hits);
        {
            let mut c = st.cursors.lock().unwrap_or_else(|e| e.into_inner());
            if c.sessions.len() >= MAX_CURSORS {
                c.sessions.retain(|_, s| s.created.elapsed() < CURSOR_TTL);
                if c.sessions.len() >= MAX_CURSORS {
                    let oldest = c
                        .sessions
                        .iter()
                        .min_by_key(|(_, s)| s.created)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        c.sessions.remove(&k);
                    }
                }
            }
            c.sessions.insert(
                key.clone(),
                Session {
                    hits: hits.clone(),
                    spec: spec.clone(),
                    created: Instant::now(),
                },
            );
        }
        return render(st, &hits, &spec, Some(&key), fired);
    }
    render(st, &hits, &spec, None, fired)
}

fn strip_id(json: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(json) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Err(_) => json.to_vec(),
    }
}

fn push_entry(
    out: &mut Vec<u8>,
    first: &mut bool,
    full_url: Option<&str>,
    resource: &[u8],
    mode: &str,
) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(b"{");
    if let Some(u) = full_url {
        out.extend_from_slice(b"\"fullUrl\":");
        out.extend_from_slice(serde_json::to_string(u).unwrap_or_default().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"resource\":");
    out.extend_from_slice(resource);
    out.extend_from_slice(b",\"search\":{\"mode\":\"");
    out.extend_from_slice(mode.as_bytes());
    out.extend_from_slice(b"\"}}");
}

fn render(
    st: &SimState,
    hits: &[Hit],
    spec: &PageSpec,
    cursor_key: Option<&str>,
    fired: &Fired,
) -> Reply {
    let base = &st.base_url;
    // Next links may use another spelling of the base path (`link_base_path`).
    let next_base = st.link_base();
    let count = spec.count;
    let offset = if spec.repeat.is_some() {
        0
    } else {
        spec.offset
    };
    let mut start = offset.min(hits.len());
    let mut end = offset.saturating_add(count).min(hits.len());
    if fired.has("duplicate-entries") && start > 0 {
        start = start.saturating_sub(2);
    }
    let truncated = fired.has("error-outcome-in-bundle");
    if truncated {
        end = end.min(start + 1);
    }
    let empty = fired.has("empty-bundle");
    let page: &[Hit] = if empty || count == 0 {
        &[]
    } else {
        &hits[start..end]
    };
    let has_more = end < hits.len() && !empty && count > 0 && !truncated;

    let mut self_params = spec.params.clone();
    let (self_url, next_url) = match cursor_key {
        Some(key) => {
            let this = if spec.offset == 0 {
                let mut p = self_params.clone();
                p.push(("_count".into(), count.to_string()));
                link(base, &spec.path, &p)
            } else {
                link(
                    base,
                    &spec.path,
                    &[("_cursor".into(), encode_cursor(key, spec.offset))],
                )
            };
            let next = has_more.then(|| {
                link(
                    next_base,
                    &spec.path,
                    &[("_cursor".into(), encode_cursor(key, end))],
                )
            });
            (this, next)
        }
        None => {
            self_params.push(("_count".into(), count.to_string()));
            let mut this = self_params.clone();
            if spec.offset > 0 {
                this.push(("_getpagesoffset".into(), spec.offset.to_string()));
            }
            let next = has_more.then(|| {
                let mut p = self_params.clone();
                p.push(("_getpagesoffset".into(), end.to_string()));
                link(next_base, &spec.path, &p)
            });
            (link(base, &spec.path, &this), next)
        }
    };
    let next_url = match next_url {
        Some(_) if fired.has("looping-next-link") => Some(self_url.clone()),
        Some(_) if fired.has("broken-next-link") => {
            Some(format!("{base}/_paging/{}", uuid::Uuid::new_v4().simple()))
        }
        other => other,
    };
    // cursor-repeat: the same first page again and again behind ever new cursors.
    let next_url = match spec.repeat {
        Some(n) if n.saturating_add(1) < HOSTILE_PAGE_LIMIT && !empty && count > 0 => {
            let mut p = spec.params.clone();
            p.push(("_count".into(), count.to_string()));
            p.push(("_repeat".into(), (n + 1).to_string()));
            p.push(("_nonce".into(), uuid::Uuid::new_v4().simple().to_string()));
            Some(link(next_base, &spec.path, &p))
        }
        Some(_) => None,
        None => next_url,
    };

    let missing_ids = fired.has("missing-ids");
    let mut out = Vec::with_capacity(page.iter().map(|h| h.json.len() + 120).sum::<usize>() + 512);
    out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"type\":\"searchset\"");
    if spec.total || count == 0 {
        let total = if empty { 0 } else { hits.len() };
        out.extend_from_slice(format!(",\"total\":{total}").as_bytes());
    }
    out.extend_from_slice(b",\"link\":[{\"relation\":\"self\",\"url\":");
    out.extend_from_slice(
        serde_json::to_string(&self_url)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.push(b'}');
    if let Some(n) = &next_url {
        out.extend_from_slice(b",{\"relation\":\"next\",\"url\":");
        out.extend_from_slice(serde_json::to_string(n).unwrap_or_default().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"entry\":[");
    let mut first = true;
    let mut served = 0;
    for h in page {
        if missing_ids {
            push_entry(&mut out, &mut first, None, &strip_id(&h.json), "match");
        } else {
            let url = format!("{base}/{}/{}", h.rtype, h.id);
            push_entry(&mut out, &mut first, Some(&url), &h.json, "match");
        }
        served += 1;
    }
    for h in super::search::includes(st, page, &spec.include, &spec.revinclude) {
        let url = format!("{base}/{}/{}", h.rtype, h.id);
        push_entry(&mut out, &mut first, Some(&url), &h.json, "include");
        served += 1;
    }
    if spec.offset == 0 && spec.repeat.is_none_or(|n| n == 0) {
        for o in &spec.outcomes {
            push_entry(&mut out, &mut first, None, o, "outcome");
        }
    }
    if st.personality.informational_outcome {
        push_entry(
            &mut out,
            &mut first,
            None,
            &outcome_json("information", "informational", INFORMATIONAL),
            "outcome",
        );
    }
    if truncated {
        push_entry(
            &mut out,
            &mut first,
            None,
            &outcome_json("error", "incomplete", "results truncated"),
            "outcome",
        );
    }
    if fired.has("outcome-in-bundle") {
        push_entry(
            &mut out,
            &mut first,
            None,
            &outcome_json(
                "warning",
                "incomplete",
                "some results could not be returned",
            ),
            "outcome",
        );
    }
    out.extend_from_slice(b"]}");
    let mut r = Reply::fhir(200, out);
    r.resources = served;
    r
}
