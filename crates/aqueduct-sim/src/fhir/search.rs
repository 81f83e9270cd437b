//! Search: parameter validation per personality, filters, compartment restriction,
//! `_include` / `_revinclude`.

use std::collections::HashSet;

use chrono::{NaiveDate, NaiveDateTime};

use super::bundle::{Hit, PageSpec, first_page};
use crate::auth::{Access, TokenInfo};
use crate::generator::{Resource, Version};
use crate::personality::{UnauthorizedType, UnknownParams};
use crate::reply::{Reply, outcome_json};
use crate::server::{Fired, SimState};

/// Parameters about the result shape, not the matching; accepted by every personality.
const CONTROL: &[&str] = &[
    "_count",
    "_include",
    "_revinclude",
    "_total",
    "_format",
    "_getpagesoffset",
    "_cursor",
    "_pretty",
    "_summary",
    "_elements",
    "_sort",
    "_repeat",
    "_nonce",
    "_endless",
];
const ALWAYS: &[&str] = &["_id", "_lastUpdated"];
/// Parameters the lying CapabilityStatement advertises and the server then rejects.
pub const LYING_PARAMS: &[&str] = &["value-quantity", "_text", "combo-code", "_has"];

#[derive(Debug)]
enum Filter {
    Patient(Vec<String>),
    Id(Vec<String>),
    Category(Vec<String>),
    Code(Vec<String>),
    Status(Vec<String>),
    Intent(Vec<String>),
    Date(Vec<(String, i64, i64)>),
    LastUpdated(Vec<(String, i64, i64)>),
    Name(Vec<String>),
}

fn split(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn ref_id(v: &str) -> String {
    v.rsplit_once("Patient/")
        .map(|(_, id)| id)
        .unwrap_or(v)
        .trim_end_matches('/')
        .to_string()
}

/// A FHIR date/dateTime/instant as the [start, end) range it denotes, in epoch ms.
pub fn date_range(v: &str) -> Option<(i64, i64)> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(v) {
        let ms = dt.timestamp_millis();
        let precise = v.contains('.');
        return Some((ms, ms + if precise { 1 } else { 1000 }));
    }
    if let Ok(n) = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S") {
        let ms = n.and_utc().timestamp_millis();
        return Some((ms, ms + 1000));
    }
    let day = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|x| x.and_utc().timestamp_millis())
    };
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let s = day(d)?;
        return Some((s, s + 86_400_000));
    }
    let parts: Vec<&str> = v.split('-').collect();
    let y: i32 = parts.first()?.parse().ok()?;
    match parts.len() {
        1 => Some((
            day(NaiveDate::from_ymd_opt(y, 1, 1)?)?,
            day(NaiveDate::from_ymd_opt(y.checked_add(1)?, 1, 1)?)?,
        )),
        2 => {
            let m: u32 = parts[1].parse().ok()?;
            let (ny, nm) = if m == 12 {
                (y.checked_add(1)?, 1)
            } else {
                (y, m + 1)
            };
            Some((
                day(NaiveDate::from_ymd_opt(y, m, 1)?)?,
                day(NaiveDate::from_ymd_opt(ny, nm, 1)?)?,
            ))
        }
        _ => None,
    }
}

fn parse_dates(v: &str) -> Option<Vec<(String, i64, i64)>> {
    split(v)
        .into_iter()
        .map(|s| {
            let (prefix, rest) = match s.get(..2) {
                Some(p @ ("eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap")) => {
                    (p.to_string(), &s[2..])
                }
                _ => ("eq".to_string(), s.as_str()),
            };
            let (a, b) = date_range(rest)?;
            Some((prefix, a, b))
        })
        .collect()
}

fn date_matches(conds: &[(String, i64, i64)], v: i64) -> bool {
    conds.iter().any(|(p, a, b)| match p.as_str() {
        "gt" | "sa" => v >= *b,
        "ge" => v >= *a,
        "lt" | "eb" => v < *a,
        "le" => v < *b,
        "ne" => !(v >= *a && v < *b),
        _ => v >= *a && v < *b,
    })
}

fn any_in(values: &[String], have: &[String]) -> bool {
    values.iter().any(|v| {
        let v = v.strip_prefix('|').unwrap_or(v);
        have.iter().any(|h| h == v)
    })
}

fn matches(filters: &[Filter], r: &Resource, v: &Version) -> bool {
    let ix = &v.index;
    filters.iter().all(|f| match f {
        Filter::Patient(_) => true,
        Filter::Id(ids) => ids.contains(&r.id),
        Filter::Category(c) => c.iter().any(|c| {
            let code = c.rsplit('|').next().unwrap_or(c);
            ix.category.iter().any(|x| x == code)
        }),
        Filter::Code(c) => any_in(c, &ix.code),
        Filter::Status(s) => s.iter().any(|s| ix.status.as_deref() == Some(s.as_str())),
        Filter::Intent(s) => s.iter().any(|s| ix.intent.as_deref() == Some(s.as_str())),
        Filter::Date(d) => ix
            .date
            .as_deref()
            .and_then(date_range)
            .is_some_and(|(a, _)| date_matches(d, a)),
        Filter::LastUpdated(d) => date_matches(d, v.last_updated_ms),
        Filter::Name(n) => n.iter().any(|n| {
            let n = n.to_lowercase();
            ix.names.iter().any(|x| x.starts_with(&n))
        }),
    })
}

/// Does this resource belong to one of the Patients named in a `patient`/`subject` search?
/// Records can hold several Patients (linked ones), so the record alone does not say.
fn of_patients(r: &Resource, v: &Version, ids: &[String]) -> bool {
    r.rtype == "Patient"
        || v.index.refs.iter().any(|(name, target)| {
            matches!(*name, "patient" | "subject" | "beneficiary")
                && target
                    .strip_prefix("Patient/")
                    .is_some_and(|t| ids.iter().any(|i| i == t))
        })
}

fn repeat_param(params: &[(String, String)]) -> Option<u64> {
    params
        .iter()
        .find(|(k, _)| k == "_repeat")
        .and_then(|(_, v)| v.parse().ok())
}

pub fn hit(r: &Resource, v: &Version, owner: Option<usize>) -> Hit {
    Hit {
        rtype: r.rtype,
        id: r.id.clone(),
        json: v.json.clone(),
        index: v.index.clone(),
        owner,
    }
}

pub fn count_param(st: &SimState, params: &[(String, String)]) -> usize {
    let p = &st.personality;
    if params.iter().any(|(k, v)| k == "_summary" && v == "count") {
        return 0;
    }
    params
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(p.default_page_size)
        .min(p.max_page_size)
}

fn offset_param(params: &[(String, String)]) -> usize {
    params
        .iter()
        .find(|(k, _)| k == "_getpagesoffset")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn list_param(params: &[(String, String)], name: &str) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .filter_map(|(_, v)| {
            let mut it = v.split(':');
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

pub fn empty_bundle(st: &SimState, path: &str) -> Reply {
    let spec = PageSpec {
        path: path.to_string(),
        count: st.personality.default_page_size,
        total: true,
        ..Default::default()
    };
    first_page(st, vec![], spec, &Fired::default())
}

/// Type-level search.
pub fn search(
    st: &SimState,
    rtype: &str,
    params: Vec<(String, String)>,
    token: &TokenInfo,
    fired: &Fired,
) -> Reply {
    let p = &st.personality;
    if p.search_disabled {
        return Reply::outcome(
            400,
            "not-supported",
            &format!("{rtype} search is not supported; use Patient/[id]/$everything"),
        );
    }
    let shared = st.store.ctx.is_shared(rtype);
    if p.referenced_read_errors.iter().any(|t| t == rtype) && params.iter().any(|(k, _)| k == "_id")
    {
        return Reply::outcome(500, "exception", &format!("error reading {rtype}"));
    }
    let Some(rule) = p
        .types
        .get(rtype)
        .cloned()
        .or_else(|| shared.then(Default::default))
    else {
        if p.claimed_unsupported_types.iter().any(|t| t == rtype) {
            return Reply::outcome(
                400,
                "not-supported",
                &format!("{rtype} search is not supported by this server"),
            );
        }
        return Reply::outcome(
            404,
            "not-supported",
            &format!("resource type {rtype} is not supported"),
        );
    };
    let restrict = match token.access(rtype, true) {
        Access::Full => None,
        Access::Patient(pid) => Some(pid),
        Access::Denied => {
            return match p.unauthorized_type {
                UnauthorizedType::Forbidden => Reply::outcome(
                    403,
                    "forbidden",
                    &format!("granted scopes do not cover {rtype}"),
                ),
                UnauthorizedType::Empty => empty_bundle(st, rtype),
            };
        }
    };

    let mut filters = Vec::new();
    let mut echoed = Vec::new();
    let mut seen = HashSet::new();
    for (k, v) in &params {
        if CONTROL.contains(&k.as_str()) {
            if matches!(k.as_str(), "_include" | "_revinclude") {
                echoed.push((k.clone(), v.clone()));
            }
            continue;
        }
        if st.lying() && LYING_PARAMS.contains(&k.as_str()) {
            return Reply::outcome(
                400,
                "not-supported",
                &format!("search parameter {k} is not supported"),
            );
        }
        let name = k.as_str();
        if !ALWAYS.contains(&name) && !rule.search.iter().any(|s| s == name) && !shared {
            match p.unknown_params {
                UnknownParams::Reject => {
                    return Reply::outcome(
                        400,
                        "not-supported",
                        &format!("unknown search parameter {k} for {rtype}"),
                    );
                }
                UnknownParams::Ignore => continue,
            }
        }
        seen.insert(name.to_string());
        echoed.push((k.clone(), v.clone()));
        let bad_date = || Reply::outcome(400, "invalid", &format!("cannot parse date in {k}={v}"));
        filters.push(match name {
            "patient" | "subject" | "beneficiary" => {
                Filter::Patient(split(v).iter().map(|s| ref_id(s)).collect())
            }
            "_id" => Filter::Id(split(v)),
            "category" => Filter::Category(split(v)),
            "code" | "type" | "class" | "identifier" => Filter::Code(split(v)),
            "status" | "clinical-status" | "lifecycle-status" | "gender" => {
                Filter::Status(split(v))
            }
            "intent" => Filter::Intent(split(v)),
            "date" | "created" | "birthdate" => match parse_dates(v) {
                Some(d) => Filter::Date(d),
                None => return bad_date(),
            },
            "_lastUpdated" => match parse_dates(v) {
                Some(d) => Filter::LastUpdated(d),
                None => return bad_date(),
            },
            "name" | "family" | "given" => Filter::Name(split(v)),
            _ => continue,
        });
    }
    if !rule.required_any.is_empty() && !rule.required_any.iter().any(|r| seen.contains(r)) {
        return Reply::outcome(
            400,
            "required",
            &format!(
                "{rtype} search requires one of: {}",
                rule.required_any.join(", ")
            ),
        );
    }
    if let Some(allowed) = &rule.allowed_categories {
        for f in &filters {
            if let Filter::Category(cs) = f
                && let Some(bad) = cs.iter().find(|c| {
                    !allowed
                        .iter()
                        .any(|a| a == c.rsplit('|').next().unwrap_or(c))
                })
            {
                return Reply::outcome(
                    400,
                    rule.category_refusal_code
                        .as_deref()
                        .unwrap_or("not-supported"),
                    &format!("category {bad} is not supported for {rtype}"),
                );
            }
        }
    }
    if let Some((k, v)) = &rule.default_filter
        && !seen.contains(k)
        && k == "intent"
    {
        filters.push(Filter::Intent(split(v)));
    }

    let mut patients: Option<Vec<String>> = filters.iter().find_map(|f| match f {
        Filter::Patient(ids) => Some(ids.clone()),
        _ => None,
    });
    if rtype == "Patient" && patients.is_none() {
        patients = filters.iter().find_map(|f| match f {
            Filter::Id(ids) => Some(ids.clone()),
            _ => None,
        });
    }
    let explicit_patients = filters.iter().find_map(|f| match f {
        Filter::Patient(ids) => Some(ids.clone()),
        _ => None,
    });
    if let Some(pid) = &restrict {
        let own = st.store.patient_index(pid);
        match &patients {
            Some(ps)
                if ps
                    .iter()
                    .any(|x| st.store.patient_index(x) != own || own.is_none()) =>
            {
                return Reply::outcome(
                    403,
                    "forbidden",
                    "token is limited to another patient's compartment",
                );
            }
            _ => patients = Some(vec![pid.clone()]),
        }
    }

    // Categories the client may not see: left out, and said so in outcome entries.
    let asked_categories: Option<Vec<String>> = filters.iter().find_map(|f| match f {
        Filter::Category(cs) => Some(
            cs.iter()
                .map(|c| c.rsplit('|').next().unwrap_or(c).to_string())
                .collect(),
        ),
        _ => None,
    });
    let outcomes: Vec<Vec<u8>> = rule
        .suppressed_categories
        .iter()
        .filter(|c| asked_categories.as_ref().is_none_or(|a| a.contains(c)))
        .map(|c| {
            outcome_json(
                "warning",
                "suppressed",
                &format!("Client not authorized for {rtype} - {c}. Search results of this type have not been included."),
            )
        })
        .collect();
    let hidden = |v: &Version| {
        v.index
            .category
            .iter()
            .any(|c| rule.suppressed_categories.contains(c))
            || v.index
                .status
                .as_ref()
                .is_some_and(|s| rule.excluded_statuses.contains(s))
    };

    let stale = st.stale();
    let mut hits = Vec::new();
    if shared {
        for r in st.store.shared().iter().filter(|r| r.rtype == rtype) {
            if let Some(v) = r.visible(stale).filter(|v| !v.deleted)
                && matches(&filters, r, v)
            {
                hits.push(hit(r, v, None));
            }
        }
    } else {
        let indexes: Vec<usize> = match &patients {
            Some(ids) => ids
                .iter()
                .filter_map(|i| st.store.patient_index(i))
                .collect(),
            None => (0..st.store.patient_ids.len()).collect(),
        };
        for i in indexes {
            let rec = st.store.record(i);
            for r in rec.resources.iter().filter(|r| r.rtype == rtype) {
                if let Some(v) = r.visible(stale).filter(|v| !v.deleted)
                    && matches(&filters, r, v)
                    && !hidden(v)
                    && explicit_patients
                        .as_ref()
                        .is_none_or(|ids| of_patients(r, v, ids))
                {
                    hits.push(hit(r, v, Some(i)));
                }
            }
        }
    }
    let spec = PageSpec {
        path: rtype.to_string(),
        params: echoed,
        count: count_param(st, &params),
        offset: offset_param(&params),
        include: list_param(&params, "_include"),
        revinclude: list_param(&params, "_revinclude"),
        total: p.include_total || params.iter().any(|(k, v)| k == "_total" && v == "accurate"),
        outcomes,
        repeat: repeat_param(&params),
    };
    first_page(st, hits, spec, fired)
}

/// `Patient/{id}/$everything`, paged like a search.
pub fn everything(
    st: &SimState,
    pid: &str,
    params: Vec<(String, String)>,
    token: &TokenInfo,
    fired: &Fired,
) -> Reply {
    if !st.personality.everything {
        return Reply::outcome(
            400,
            "not-supported",
            "operation $everything is not supported",
        );
    }
    match token.access("Patient", false) {
        Access::Full => {}
        Access::Patient(p)
            if st.store.patient_index(&p).is_some()
                && st.store.patient_index(&p) == st.store.patient_index(pid) => {}
        _ => return Reply::outcome(403, "forbidden", "not authorized for this patient"),
    }
    let Some(rec) = st.store.record_of(pid) else {
        return Reply::outcome(404, "not-found", &format!("Patient/{pid} not found"));
    };
    // The Patient the id names: the population id and an alias both name the record's own
    // Patient; a linked Patient names itself. Its compartment is what references it.
    let target = if pid == rec.patient_id {
        rec.resources
            .first()
            .map(|r| r.id.clone())
            .unwrap_or_default()
    } else {
        pid.to_string()
    };
    let in_compartment = |r: &Resource, v: &Version| {
        if r.rtype == "Patient" {
            r.id == target
        } else {
            of_patients(r, v, std::slice::from_ref(&target))
        }
    };
    let types: Option<Vec<String>> = params
        .iter()
        .find(|(k, _)| k == "_type")
        .map(|(_, v)| split(v));
    let since = match params.iter().find(|(k, _)| k == "_since") {
        Some((_, v)) => match date_range(v) {
            Some((a, _)) => Some(a),
            None => return Reply::outcome(400, "invalid", "cannot parse _since"),
        },
        None => None,
    };
    let stale = st.stale();
    let mut hits: Vec<Hit> = rec
        .resources
        .iter()
        .filter(|r| {
            types
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| x == r.rtype))
        })
        .filter(|r| token.access(r.rtype, true) != Access::Denied)
        .filter_map(|r| {
            let v = r.visible(stale).filter(|v| !v.deleted)?;
            if since.is_some_and(|s| v.last_updated_ms < s) || !in_compartment(r, v) {
                return None;
            }
            Some(hit(r, v, Some(rec.index)))
        })
        .collect();
    if st.personality.everything_includes_references {
        let json: Vec<std::sync::Arc<[u8]>> = hits.iter().map(|h| h.json.clone()).collect();
        for (t, id) in crate::truth::shared_closure(st, &json) {
            if types.as_ref().is_some_and(|ts| !ts.contains(&t)) {
                continue;
            }
            if let Some(found) = st.store.find(&t, &id)
                && let Some(v) = found.resource().visible(stale).filter(|v| !v.deleted)
            {
                hits.push(hit(found.resource(), v, None));
            }
        }
    }
    let echoed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k == "_type" || k == "_since")
        .cloned()
        .collect();
    let spec = PageSpec {
        path: format!("Patient/{pid}/$everything"),
        params: echoed,
        count: count_param(st, &params),
        offset: offset_param(&params),
        total: st.personality.include_total,
        repeat: repeat_param(&params),
        ..Default::default()
    };
    first_page(st, hits, spec, fired)
}

/// Resources pulled in by `_include` and `_revinclude` for the matches of one page.
pub fn includes(
    st: &SimState,
    page: &[Hit],
    include: &[(String, String)],
    revinclude: &[(String, String)],
) -> Vec<Hit> {
    if include.is_empty() && revinclude.is_empty() {
        return vec![];
    }
    let stale = st.stale();
    let mut seen: HashSet<String> = page
        .iter()
        .map(|h| format!("{}/{}", h.rtype, h.id))
        .collect();
    let mut out = Vec::new();
    for h in page {
        for (src, param) in include {
            if src != h.rtype && src != "*" {
                continue;
            }
            for (name, target) in h.index.refs.iter() {
                if (*name != param.as_str() && param != "*") || seen.contains(target) {
                    continue;
                }
                let Some((t, id)) = target.split_once('/') else {
                    continue;
                };
                if let Some(found) = st.store.find(t, id) {
                    let r = found.resource();
                    if let Some(v) = r.visible(stale).filter(|v| !v.deleted) {
                        seen.insert(target.clone());
                        out.push(hit(r, v, None));
                    }
                }
            }
        }
        if revinclude.is_empty() {
            continue;
        }
        let Some(owner) = h.owner else { continue };
        let rec = st.store.record(owner);
        let target = format!("{}/{}", h.rtype, h.id);
        for (src, param) in revinclude {
            for r in rec.resources.iter().filter(|r| r.rtype == src.as_str()) {
                let key = format!("{}/{}", r.rtype, r.id);
                if seen.contains(&key) {
                    continue;
                }
                if let Some(v) = r.visible(stale).filter(|v| !v.deleted)
                    && v.index
                        .refs
                        .iter()
                        .any(|(n, t)| *n == param.as_str() && *t == target)
                {
                    seen.insert(key);
                    out.push(hit(r, v, Some(owner)));
                }
            }
        }
    }
    out
}
