//! The pages. Each reads the store for the session's organization only (through the same
//! connection check as the API), escapes every value, and logs reads of patient data to the
//! access log before answering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use aqueduct_core::{ConnectionRef, ConnectionStatus, LedgerEntry, RunId, RunOutcome};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;

use super::chart;
use super::html::{badge, esc, opt_time, seg, time};
use super::{Dash, DashError, Signed};
use crate::api::extract::P;
use crate::problem::Problem;

type R = Result<Response, DashError>;

/// The windows the charts look back over, longest first: the first that holds at most
/// [`CHART_REQUESTS`] requests is drawn (the store answers oldest first, so a window that
/// holds more would end in the past).
const CHART_WINDOWS: &[(i64, &str)] = &[
    (7 * 24 * 3600, "the last 7 days"),
    (24 * 3600, "the last 24 hours"),
    (3600, "the last hour"),
];
/// Ledger entries read for the charts at most.
const CHART_REQUESTS: u32 = 50_000;
/// Time buckets of a chart.
const BUCKETS: usize = 24;

fn store_err(e: aqueduct_core::StoreError) -> DashError {
    Problem::store(e).into()
}

/// The organization's connections: the configured ones and any the store knows (HL7 feeds).
async fn names(dash: &Dash, org: &str) -> Result<Vec<String>, DashError> {
    let mut names: Vec<String> = dash
        .app
        .config
        .organizations
        .get(org)
        .map(|o| o.connections.keys().cloned().collect())
        .unwrap_or_default();
    for (c, _) in crate::api::store_connections(&dash.app, org).await?.iter() {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    names.sort();
    Ok(names)
}

async fn last_complete(
    dash: &Dash,
    conn: &ConnectionRef,
) -> Result<Option<chrono::DateTime<Utc>>, DashError> {
    Ok(dash
        .app
        .store
        .list_runs(conn, 50)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|r| r.outcome == RunOutcome::Complete)
        .and_then(|r| r.finished_at))
}

/// The organization's recent ledger by connection, and the window it covers.
async fn recent_requests(
    dash: &Dash,
    org: &str,
) -> Result<(BTreeMap<String, Vec<LedgerEntry>>, &'static str), DashError> {
    let now = Utc::now();
    let mut by: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
    let mut window = CHART_WINDOWS[0].1;
    for (i, (secs, name)) in CHART_WINDOWS.iter().enumerate() {
        let got = dash
            .app
            .store
            .requests_since(org, now - chrono::Duration::seconds(*secs), CHART_REQUESTS)
            .await
            .map_err(store_err)?;
        window = name;
        if got.len() < CHART_REQUESTS as usize || i + 1 == CHART_WINDOWS.len() {
            by.clear();
            for (c, e) in got {
                by.entry(c).or_default().push(e);
            }
            break;
        }
    }
    Ok((by, window))
}

fn source_charts(name: &str, entries: &[LedgerEntry]) -> String {
    let refs: Vec<&LedgerEntry> = entries.iter().collect();
    let (lat, err) = chart::latency_and_errors(&refs, BUCKETS);
    format!(
        "<div class=\"charts\">{}{}</div>",
        chart::line_chart(&format!("{name}: latency"), "ms", &lat),
        chart::line_chart(&format!("{name}: error rate"), "%", &err)
    )
}

fn type_bars(types: &[aqueduct_core::TypeCount]) -> Vec<(String, u64)> {
    let mut bars: Vec<(String, u64)> = types
        .iter()
        .filter(|t| t.live > 0)
        .map(|t| (t.resource_type.clone(), t.live))
        .collect();
    bars.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    bars
}

/// The organization: its connections with status, freshness and completeness, and charts.
pub async fn overview(State(dash): State<Arc<Dash>>, who: Signed) -> R {
    let org = who.caller.org();
    let statuses: Vec<ConnectionStatus> = dash.app.store.status(org).await.map_err(store_err)?;
    let mut body = String::from(
        "<section><h2>Connections</h2><table id=\"connections\"><thead><tr><th>Connection</th>\
         <th>State</th><th>Last complete sync</th><th>Resources</th><th>Failed requests</th>\
         <th>Open findings</th><th>Source</th></tr></thead><tbody>",
    );
    let mut all_types: BTreeMap<String, u64> = BTreeMap::new();
    for name in names(&dash, org).await? {
        let conn = ConnectionRef::new(org, &name);
        let st = statuses.iter().find(|s| s.connection.connection == name);
        let state = st
            .and_then(|s| s.last_run.as_ref())
            .map(|r| r.outcome.as_str())
            .unwrap_or("never-synced");
        let held: u64 = st
            .map(|s| s.types.iter().map(|t| t.live).sum())
            .unwrap_or(0);
        for t in st.map(|s| s.types.as_slice()).unwrap_or_default() {
            *all_types.entry(t.resource_type.clone()).or_default() += t.live;
        }
        let base = dash
            .app
            .config
            .organizations
            .get(org)
            .and_then(|o| o.connections.get(&name))
            .map(|c| c.base_url.to_string())
            .or_else(|| st.and_then(|s| s.base_url.clone()))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/connections/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{held}</td><td>{}</td><td>{}</td><td class=\"url\">{}</td></tr>",
            seg(&name),
            esc(&name),
            badge(state),
            esc(&opt_time(last_complete(&dash, &conn).await?.as_ref())),
            st.map(|s| s.error_count).unwrap_or(0),
            st.map(|s| s.findings).unwrap_or(0),
            esc(&base),
        );
    }
    body.push_str("</tbody></table></section>");
    let mut bars: Vec<(String, u64)> = all_types.into_iter().filter(|t| t.1 > 0).collect();
    bars.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let _ = write!(
        body,
        "<section><h2>Resources per type</h2>{}</section>",
        chart::bar_chart("Resources held, all sources", &bars)
    );
    let (by, window) = recent_requests(&dash, org).await?;
    let _ = write!(
        body,
        "<section><h2>Latency and errors per source, {window}</h2>"
    );
    if by.is_empty() {
        let _ = write!(body, "<p class=\"muted\">No requests in {window}.</p>");
    }
    for (name, entries) in &by {
        body.push_str(&source_charts(name, entries));
    }
    body.push_str("</section>");
    Ok(who
        .page(format!("Organization {org}"), body)
        .into_response())
}

/// One connection: status, the sync button, charts, runs, findings.
pub async fn connection(State(dash): State<Arc<Dash>>, who: Signed, P(name): P<String>) -> R {
    let conn = crate::api::connection(&dash.app, &who.caller, &name).await?;
    let org = who.caller.org();
    let store = &dash.app.store;
    let st = store
        .status(org)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|s| s.connection.connection == name);
    let runs = store.list_runs(&conn, 20).await.map_err(store_err)?;
    let freshness = store.freshness(&conn).await.map_err(store_err)?;
    let mut body = String::new();
    let state = st
        .as_ref()
        .and_then(|s| s.last_run.as_ref())
        .map(|r| r.outcome.as_str())
        .unwrap_or("never-synced");
    let _ = write!(
        body,
        "<section class=\"summary\"><dl>\
         <dt>State</dt><dd id=\"state\">{}</dd>\
         <dt>Last complete sync</dt><dd>{}</dd>\
         <dt>Resources held</dt><dd>{}</dd>\
         <dt>Failed requests</dt><dd>{}</dd>\
         <dt>Open findings</dt><dd>{}</dd></dl>\
         <form method=\"post\" action=\"/dashboard/connections/{}/sync\">{}\
         <button type=\"submit\" id=\"sync\">Sync now</button></form>\
         <p><a href=\"/dashboard/connections/{}/patients\">Patients</a></p></section>",
        badge(state),
        esc(&opt_time(
            runs.iter()
                .find(|r| r.outcome == RunOutcome::Complete)
                .and_then(|r| r.finished_at.as_ref())
        )),
        st.as_ref()
            .map(|s| s.types.iter().map(|t| t.live).sum::<u64>())
            .unwrap_or(0),
        st.as_ref().map(|s| s.error_count).unwrap_or(0),
        st.as_ref().map(|s| s.findings).unwrap_or(0),
        seg(&name),
        who.csrf(),
        seg(&name),
    );
    // completeness and freshness per type
    body.push_str(
        "<section><h2>Completeness and freshness by type</h2><table><thead><tr><th>Type</th>\
         <th>Held</th><th>Deleted</th><th>Invalid</th><th>Newest at the source</th>\
         <th>Last received</th></tr></thead><tbody>",
    );
    for t in st.as_ref().map(|s| s.types.as_slice()).unwrap_or_default() {
        let f = freshness
            .iter()
            .find(|f| f.resource_type == t.resource_type);
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.resource_type),
            t.live,
            t.deleted,
            t.invalid,
            esc(f
                .and_then(|f| f.newest_last_updated.as_deref())
                .unwrap_or("")),
            esc(&opt_time(f.and_then(|f| f.newest_fetched_at.as_ref()))),
        );
    }
    body.push_str("</tbody></table>");
    if let Some(s) = &st {
        body.push_str(&chart::bar_chart(
            "Resources per type",
            &type_bars(&s.types),
        ));
    }
    body.push_str("</section>");
    let (by, window) = recent_requests(&dash, org).await?;
    let _ = write!(
        body,
        "<section><h2>Latency and errors, {window}</h2>{}</section>",
        source_charts(&name, by.get(&name).map(Vec::as_slice).unwrap_or_default())
    );
    body.push_str(
        "<section><h2>Runs</h2><table id=\"runs\"><thead><tr><th>Run</th><th>Kind</th>\
         <th>Started</th><th>Finished</th><th>Outcome</th><th>Error</th></tr></thead><tbody>",
    );
    for r in &runs {
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/connections/{}/runs/{}\">run {}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seg(&name),
            r.id,
            r.id,
            esc(&r.kind),
            esc(&time(&r.started_at)),
            esc(&opt_time(r.finished_at.as_ref())),
            badge(r.outcome.as_str()),
            esc(r.error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table></section>");
    let findings = store
        .list_finding_records(&conn, None, 200)
        .await
        .map_err(store_err)?;
    body.push_str("<section id=\"findings\"><h2>Findings</h2>");
    findings_table(&mut body, &who, &name, &findings);
    body.push_str("</section>");
    Ok(who.page(format!("Connection {name}"), body).into_response())
}

fn findings_table(
    body: &mut String,
    who: &Signed,
    conn: &str,
    findings: &[aqueduct_core::FindingRecord],
) {
    if findings.is_empty() {
        body.push_str("<p class=\"muted\">No findings.</p>");
        return;
    }
    body.push_str(
        "<table class=\"findings\"><thead><tr><th>When</th><th>Connection</th><th>Kind</th>\
         <th>Severity</th><th>Type</th><th>Detail</th><th>Acknowledged</th></tr></thead><tbody>",
    );
    // open ones first, newest first within each
    let mut sorted: Vec<&aqueduct_core::FindingRecord> = findings.iter().collect();
    sorted.sort_by_key(|f| (f.acknowledged.is_some(), std::cmp::Reverse(f.finding.at)));
    for f in sorted {
        let ack = match &f.acknowledged {
            Some(a) => format!(
                "by {} at {}{}",
                esc(&a.by),
                esc(&time(&a.at)),
                a.note
                    .as_ref()
                    .map(|n| format!(": {}", esc(n)))
                    .unwrap_or_default()
            ),
            None => format!(
                "<form method=\"post\" action=\"/dashboard/connections/{}/findings/{}/acknowledge\" class=\"inline\">{}\
                 <input type=\"text\" name=\"note\" maxlength=\"1000\" placeholder=\"note\" aria-label=\"note\">\
                 <button type=\"submit\">Acknowledge</button></form>",
                seg(conn),
                f.id,
                who.csrf()
            ),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ack}</td></tr>",
            esc(&time(&f.finding.at)),
            esc(conn),
            esc(&f.finding.kind),
            badge(&f.finding.severity),
            esc(f.finding.resource_type.as_deref().unwrap_or("")),
            esc(&f.finding.detail),
        );
    }
    body.push_str("</tbody></table>");
}

/// The ledger entries of a run, in the store's order (their index is their link), and the
/// order they are shown in: failures first, then by time.
async fn run_ledger(
    dash: &Dash,
    who: &Signed,
    name: &str,
    run: RunId,
) -> Result<(aqueduct_core::SyncRun, Vec<LedgerEntry>, Vec<usize>), DashError> {
    let conn = crate::api::connection(&dash.app, &who.caller, name).await?;
    let found = dash
        .app
        .store
        .get_run(&conn, run)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            DashError::new(
                StatusCode::NOT_FOUND,
                format!("There is no run {run} on {name}."),
            )
        })?;
    let entries = dash
        .app
        .store
        .run_requests(&conn, run)
        .await
        .map_err(store_err)?;
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].error_kind.is_none(), entries[i].at, i));
    Ok((found, entries, order))
}

/// A run and its ledger: every request, failures first.
pub async fn run(
    State(dash): State<Arc<Dash>>,
    who: Signed,
    P((name, run)): P<(String, RunId)>,
) -> R {
    let (found, entries, order) = run_ledger(&dash, &who, &name, run).await?;
    let failed = entries.iter().filter(|e| e.error_kind.is_some()).count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/dashboard/connections/{}\">← {}</a></p><section class=\"summary\"><dl>\
         <dt>Outcome</dt><dd>{}</dd><dt>Kind</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd>\
         <dt>Finished</dt><dd>{}</dd><dt>Requests</dt><dd>{}</dd><dt>Failed</dt><dd id=\"failed-count\">{failed}</dd>\
         <dt>Error</dt><dd>{}</dd></dl></section>",
        seg(&name),
        esc(&name),
        badge(found.outcome.as_str()),
        esc(&found.kind),
        esc(&time(&found.started_at)),
        esc(&opt_time(found.finished_at.as_ref())),
        entries.len(),
        esc(found.error.as_deref().unwrap_or("")),
    );
    if let Some(s) = &found.summary {
        let _ = write!(
            body,
            "<details><summary>Summary</summary><pre>{}</pre></details>",
            esc(s)
        );
    }
    body.push_str(
        "<section><h2>Requests (failures first)</h2><table id=\"ledger\"><thead><tr><th>#</th>\
         <th>When</th><th>Request</th><th>Type</th><th>Status</th><th>Error</th><th>Attempt</th>\
         <th>ms</th><th>Resources</th></tr></thead><tbody>",
    );
    for i in order {
        let e = &entries[i];
        let _ = write!(
            body,
            "<tr class=\"{}\"><td><a href=\"/dashboard/connections/{}/runs/{run}/requests/{i}\">{i}</a></td>\
             <td>{}</td><td class=\"url\">{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.0}</td><td>{}</td></tr>",
            if e.error_kind.is_some() {
                "failed"
            } else {
                "ok"
            },
            seg(&name),
            esc(&e.at.format("%H:%M:%S%.3f").to_string()),
            esc(&e.method),
            esc(&e.url_template),
            esc(e.resource_type.as_deref().unwrap_or("")),
            e.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "–".into()),
            esc(e.error_kind.as_deref().unwrap_or("")),
            e.attempt,
            aqueduct_core::finite(e.duration_ms),
            e.resources,
        );
    }
    body.push_str("</tbody></table></section>");
    Ok(who
        .page(format!("Run {run} of {name}"), body)
        .into_response())
}

/// One request of a run's ledger, everything recorded about it.
pub async fn request(
    State(dash): State<Arc<Dash>>,
    who: Signed,
    P((name, run, n)): P<(String, RunId, usize)>,
) -> R {
    let (_, entries, _) = run_ledger(&dash, &who, &name, run).await?;
    let e = entries.get(n).ok_or_else(|| {
        DashError::new(
            StatusCode::NOT_FOUND,
            format!("Run {run} has no request {n}."),
        )
    })?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/dashboard/connections/{}/runs/{run}\">← run {run}</a></p>\
         <dl class=\"request\">\
         <dt>Outcome</dt><dd id=\"request-outcome\">{}</dd>\
         <dt>When</dt><dd>{}</dd><dt>Method</dt><dd>{}</dd><dt>URL</dt><dd class=\"url\">{}</dd>\
         <dt>Template</dt><dd>{}</dd><dt>Status</dt><dd id=\"request-status\">{}</dd>\
         <dt>Error</dt><dd id=\"request-error\">{}</dd><dt>Attempt</dt><dd>{}</dd>\
         <dt>Duration</dt><dd>{:.1} ms</dd><dt>Bytes</dt><dd>{}</dd><dt>Resources</dt><dd>{}</dd>\
         <dt>Resource type</dt><dd>{}</dd><dt>Patient</dt><dd>{}</dd>\
         <dt>Page complete</dt><dd>{}</dd></dl>",
        seg(&name),
        if e.error_kind.is_some() {
            badge("failed")
        } else {
            badge("complete")
        },
        esc(&e.at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()),
        esc(&e.method),
        esc(&e.url),
        esc(&e.url_template),
        e.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no answer".into()),
        esc(e.error_kind.as_deref().unwrap_or("none")),
        e.attempt,
        aqueduct_core::finite(e.duration_ms),
        e.bytes,
        e.resources,
        esc(e.resource_type.as_deref().unwrap_or("")),
        esc(e.patient_id.as_deref().unwrap_or("")),
        if e.page_complete { "yes" } else { "no" },
    );
    Ok(who
        .page(format!("Request {n} of run {run}"), body)
        .into_response())
}

/// Findings of every connection (open first) and the organization's alerts.
pub async fn findings(State(dash): State<Arc<Dash>>, who: Signed) -> R {
    let org = who.caller.org();
    let mut body = String::new();
    let alerts = dash
        .app
        .store
        .list_alerts(org, false)
        .await
        .map_err(store_err)?;
    body.push_str("<section><h2>Alerts</h2>");
    if alerts.is_empty() {
        body.push_str("<p class=\"muted\">No alerts.</p>");
    } else {
        body.push_str(
            "<table id=\"alerts\"><thead><tr><th>Connection</th><th>Rule</th><th>Subject</th>\
             <th>State</th><th>Severity</th><th>Detail</th><th>First seen</th><th>Last seen</th>\
             </tr></thead><tbody>",
        );
        for a in &alerts {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.connection),
                esc(&a.rule),
                esc(&a.subject),
                badge(&a.state),
                esc(&a.severity),
                esc(&a.detail),
                esc(&time(&a.first_seen)),
                esc(&time(&a.last_seen)),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    let mut times = Vec::new();
    let mut tables = String::new();
    for name in names(&dash, org).await? {
        let conn = ConnectionRef::new(org, &name);
        let f = dash
            .app
            .store
            .list_finding_records(&conn, None, 500)
            .await
            .map_err(store_err)?;
        if f.is_empty() {
            continue;
        }
        times.extend(f.iter().map(|r| r.finding.at));
        let _ = write!(tables, "<h3>{}</h3>", esc(&name));
        findings_table(&mut tables, &who, &name, &f);
    }
    let _ = write!(
        body,
        "<section><h2>Findings over time</h2>{}</section><section><h2>Findings</h2>{}</section>",
        chart::line_chart(
            "Findings raised",
            "",
            &[chart::counts_over_time("findings", &times, BUCKETS)]
        ),
        if tables.is_empty() {
            "<p class=\"muted\">No findings.</p>".to_string()
        } else {
            tables
        }
    );
    Ok(who.page("Findings and alerts", body).into_response())
}

#[derive(Deserialize)]
pub struct PatientsQuery {
    after: Option<String>,
}

pub async fn patients(
    State(dash): State<Arc<Dash>>,
    who: Signed,
    P(name): P<String>,
    Query(q): Query<PatientsQuery>,
) -> R {
    let conn = crate::api::connection(&dash.app, &who.caller, &name).await?;
    let limit = dash.app.page_size(None);
    let page = dash
        .app
        .store
        .list_resources(&conn, "Patient", q.after.as_deref(), limit, false)
        .await
        .map_err(store_err)?;
    crate::api::records_log(
        &dash.app,
        &who.caller,
        "dashboard",
        "/dashboard/connections/{connection}/patients",
        None,
        vec!["Patient".into()],
        page.len() as u64,
    )
    .await?;
    let mut body = format!(
        "<p><a href=\"/dashboard/connections/{}\">← {}</a></p><table id=\"patients\"><thead><tr>\
         <th>Name</th><th>Born</th><th>Gender</th><th>Id at the source</th></tr></thead><tbody>",
        seg(&name),
        esc(&name)
    );
    for r in &page {
        let s = crate::api::records::summary(&name, &r.logical_id, &r.bytes);
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/connections/{}/patients/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seg(&name),
            seg(&r.logical_id),
            esc(s.name.as_deref().unwrap_or("(no name)")),
            esc(s.birth_date.as_deref().unwrap_or("")),
            esc(s.gender.as_deref().unwrap_or("")),
            esc(&r.logical_id),
        );
    }
    body.push_str("</tbody></table>");
    if page.len() as u32 == limit {
        if let Some(last) = page.last() {
            let _ = write!(
                body,
                "<p><a href=\"/dashboard/connections/{}/patients?after={}\">Next page</a></p>",
                seg(&name),
                seg(&last.logical_id)
            );
        }
    }
    Ok(who
        .page(format!("Patients at {name}"), body)
        .into_response())
}

/// One patient's record at one source: what is held, by type, and how fresh it is.
pub async fn patient(
    State(dash): State<Arc<Dash>>,
    who: Signed,
    P((name, pid)): P<(String, String)>,
) -> R {
    let conn = crate::api::connection(&dash.app, &who.caller, &name).await?;
    let store = &dash.app.store;
    let patient = store
        .get_resource(&conn, "Patient", &pid)
        .await
        .map_err(store_err)?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(|| {
            DashError::new(
                StatusCode::NOT_FOUND,
                format!("There is no patient {pid} at {name}."),
            )
        })?;
    let held = store
        .list_patient_resources(&conn, &pid, None)
        .await
        .map_err(store_err)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &held {
        *counts.entry(r.resource_type.clone()).or_default() += 1;
    }
    crate::api::records_log(
        &dash.app,
        &who.caller,
        "dashboard",
        "/dashboard/connections/{connection}/patients/{patient}",
        Some(crate::fhir::ids::facade_id(&name, &pid)),
        counts.keys().cloned().collect(),
        held.len() as u64,
    )
    .await?;
    let s = crate::api::records::summary(&name, &pid, &patient.bytes);
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/dashboard/connections/{}/patients\">← patients at {}</a></p>\
         <dl class=\"summary\"><dt>Name</dt><dd id=\"patient-name\">{}</dd><dt>Born</dt><dd>{}</dd>\
         <dt>Gender</dt><dd>{}</dd><dt>Source</dt><dd>{}</dd><dt>Facade id</dt><dd>{}</dd>\
         <dt>Last complete sync of the source</dt><dd>{}</dd></dl>",
        seg(&name),
        esc(&name),
        esc(s.name.as_deref().unwrap_or("(no name)")),
        esc(s.birth_date.as_deref().unwrap_or("")),
        esc(s.gender.as_deref().unwrap_or("")),
        esc(&name),
        esc(&s.facade_id),
        esc(&opt_time(last_complete(&dash, &conn).await?.as_ref())),
    );
    let elsewhere = other_sources(&dash, who.caller.org(), &name, &pid, &patient.bytes).await?;
    body.push_str("<section><h2>The same patient at other sources</h2>");
    if elsewhere.is_empty() {
        body.push_str(
            "<p class=\"muted\">No other source holds a patient with one of these identifiers.</p>",
        );
    } else {
        body.push_str("<ul id=\"elsewhere\">");
        for (c, id, ident) in &elsewhere {
            let _ = write!(
                body,
                "<li><a href=\"/dashboard/connections/{}/patients/{}\">{} at {}</a> (identifier {})</li>",
                seg(c),
                seg(id),
                esc(id),
                esc(c),
                esc(ident)
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    let bars: Vec<(String, u64)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    body.push_str(&chart::bar_chart("The record by type", &bars));
    body.push_str(
        "<table id=\"record\"><thead><tr><th>Type</th><th>Id at the source</th>\
         <th>Last updated at the source</th><th>Received</th></tr></thead><tbody>",
    );
    for r in &held {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.resource_type),
            esc(&r.logical_id),
            esc(r.last_updated.as_deref().unwrap_or("")),
            esc(&time(&r.fetched_at)),
        );
    }
    body.push_str("</tbody></table>");
    Ok(who
        .page(
            format!("{} at {name}", s.name.as_deref().unwrap_or("Patient")),
            body,
        )
        .into_response())
}

/// Identifiers of a patient looked up at most (a record with hundreds is junk, not a person).
const MAX_IDENTIFIERS: usize = 20;

/// The patients of the organization's other sources that share an identifier (system and
/// value) with this one, through the identifier index normalization keeps: (connection,
/// source id, `system|value`).
async fn other_sources(
    dash: &Dash,
    org: &str,
    conn: &str,
    pid: &str,
    bytes: &[u8],
) -> Result<Vec<(String, String, String)>, DashError> {
    #[derive(Deserialize)]
    struct Ident {
        system: Option<String>,
        value: Option<String>,
    }
    #[derive(Deserialize)]
    struct Pat {
        #[serde(default)]
        identifier: Vec<Ident>,
    }
    let Ok(p) = serde_json::from_slice::<Pat>(bytes) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, String, String)> = Vec::new();
    for i in p.identifier.iter().take(MAX_IDENTIFIERS) {
        let (Some(system), Some(value)) = (&i.system, &i.value) else {
            continue;
        };
        for hit in dash
            .app
            .store
            .find_by_identifier(org, "Patient", system, value)
            .await
            .map_err(store_err)?
        {
            let here = hit.connection == conn && hit.logical_id == pid;
            if !here
                && !out
                    .iter()
                    .any(|(c, id, _)| *c == hit.connection && *id == hit.logical_id)
            {
                out.push((hit.connection, hit.logical_id, format!("{system}|{value}")));
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct TerminologyQuery {
    mapped: Option<String>,
}

/// The standard systems a code can be mapped to, and which one fits a kind of row best.
const TARGETS: &[(&str, &str)] = &[
    ("LOINC", aqueduct_normalize::terminology::LOINC),
    ("SNOMED CT", aqueduct_normalize::terminology::SNOMED),
    ("RxNorm", aqueduct_normalize::terminology::RXNORM),
    ("ICD-10-CM", aqueduct_normalize::terminology::ICD10CM),
    ("CVX", aqueduct_normalize::terminology::CVX),
    ("CPT", aqueduct_normalize::terminology::CPT),
    (
        "v3 ActCode (encounter class)",
        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    ),
];

fn default_target(kind: &str) -> &'static str {
    match kind {
        "condition" => aqueduct_normalize::terminology::SNOMED,
        "medication_request" | "medication" => aqueduct_normalize::terminology::RXNORM,
        "immunization" => aqueduct_normalize::terminology::CVX,
        "procedure" => aqueduct_normalize::terminology::SNOMED,
        "encounter" => "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        _ => aqueduct_normalize::terminology::LOINC,
    }
}

/// The terminology review queue: codes no rule could resolve, most frequent first, each with
/// a form to map it; and the mappings already made.
pub async fn terminology(
    State(dash): State<Arc<Dash>>,
    who: Signed,
    Query(q): Query<TerminologyQuery>,
) -> R {
    let org = who.caller.org();
    let queue = dash
        .app
        .store
        .unmapped_codes(org, None, 500)
        .await
        .map_err(store_err)?;
    let mut body = String::new();
    if let Some(m) = &q.mapped {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"mapped\">Mapped {}. The rows it touches are derived again after the next sync.</p>",
            esc(m)
        );
    }
    body.push_str(
        "<section><h2>Unmapped codes</h2><table id=\"unmapped\"><thead><tr><th>Connection</th>\
         <th>Kind</th><th>Code</th><th>Text</th><th>Rows</th><th>Map to</th></tr></thead><tbody>",
    );
    for (i, u) in queue.iter().enumerate() {
        let form = match (&u.source_system, &u.source_code) {
            (Some(sys), Some(code)) => {
                let want = default_target(&u.kind);
                let options: String = TARGETS
                    .iter()
                    .map(|(label, uri)| {
                        format!(
                            "<option value=\"{}\"{}>{}</option>",
                            esc(uri),
                            if *uri == want { " selected" } else { "" },
                            esc(label)
                        )
                    })
                    .collect();
                format!(
                    "<form method=\"post\" action=\"/dashboard/connections/{}/code-mappings\" class=\"map\">{}\
                     <input type=\"hidden\" name=\"source_system\" value=\"{}\">\
                     <input type=\"hidden\" name=\"source_code\" value=\"{}\">\
                     <select name=\"target_system\" aria-label=\"target system\" id=\"target-system-{i}\">{options}</select>\
                     <input type=\"text\" name=\"target_code\" required placeholder=\"code\" aria-label=\"target code\" id=\"target-code-{i}\">\
                     <input type=\"text\" name=\"display\" placeholder=\"display\" aria-label=\"display\" value=\"{}\">\
                     <button type=\"submit\" id=\"map-{i}\">Map</button></form>",
                    seg(&u.connection),
                    who.csrf(),
                    esc(sys),
                    esc(code),
                    esc(u.source_text.as_deref().unwrap_or("")),
                )
            }
            _ => "<span class=\"muted\">text only: no code to map</span>".to_string(),
        };
        let _ = write!(
            body,
            "<tr data-code=\"{}\"><td>{}</td><td>{}</td><td>{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{form}</td></tr>",
            esc(&format!(
                "{}|{}",
                u.source_system.as_deref().unwrap_or(""),
                u.source_code.as_deref().unwrap_or("")
            )),
            esc(&u.connection),
            esc(&u.kind),
            esc(u.source_code.as_deref().unwrap_or("")),
            esc(u.source_system.as_deref().unwrap_or("")),
            esc(u.source_text.as_deref().unwrap_or("")),
            u.count,
        );
    }
    body.push_str("</tbody></table>");
    if queue.is_empty() {
        body.push_str("<p class=\"muted\">Nothing waits for review.</p>");
    }
    body.push_str(
        "</section><section><h2>Mappings</h2><table id=\"mappings\"><thead><tr><th>Connection</th>\
                   <th>Local code</th><th>Standard code</th><th>Display</th></tr></thead><tbody>",
    );
    let mut mapped = 0;
    for name in names(&dash, org).await? {
        let conn = ConnectionRef::new(org, &name);
        for m in dash
            .app
            .store
            .list_code_mappings(&conn)
            .await
            .map_err(store_err)?
        {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}|{}</td><td>{}|{}</td><td>{}</td></tr>",
                esc(&name),
                esc(&m.source_system),
                esc(&m.source_code),
                esc(&m.target_system),
                esc(&m.target_code),
                esc(m.target_display.as_deref().unwrap_or("")),
            );
            mapped += 1;
        }
    }
    body.push_str("</tbody></table>");
    if mapped == 0 {
        body.push_str("<p class=\"muted\">No local code is mapped yet.</p>");
    }
    body.push_str("</section>");
    Ok(who.page("Terminology review", body).into_response())
}

/// A refresh request (a sync started here): its state, reloading itself until it is done,
/// then its outcome and the runs it caused.
pub async fn refresh_request(State(dash): State<Arc<Dash>>, who: Signed, P(id): P<i64>) -> R {
    let r = dash
        .app
        .store
        .get_refresh(who.caller.org(), id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            DashError::new(
                StatusCode::NOT_FOUND,
                format!("There is no refresh request {id}."),
            )
        })?;
    let done = r.state == "done";
    let conn = r.request.connection.clone().unwrap_or_default();
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"summary\"><dt>Connection</dt><dd><a href=\"/dashboard/connections/{}\">{}</a></dd>\
         <dt>State</dt><dd id=\"refresh-state\">{}</dd><dt>Outcome</dt><dd id=\"refresh-outcome\">{}</dd>\
         <dt>Requested</dt><dd>{}</dd><dt>Handled</dt><dd>{}</dd><dt>Attempts</dt><dd>{}</dd>\
         <dt>Detail</dt><dd>{}</dd></dl>",
        seg(&conn),
        esc(&conn),
        badge(&r.state),
        r.outcome
            .map(|o| badge(o.as_str()))
            .unwrap_or_else(|| "–".into()),
        esc(&time(&r.requested_at)),
        esc(&opt_time(r.handled_at.as_ref())),
        r.attempts,
        esc(r.detail.as_deref().unwrap_or("")),
    );
    if let Some(into) = r.coalesced_into {
        let _ = write!(
            body,
            "<p>Joined with <a href=\"/dashboard/refresh-requests/{into}\">request {into}</a>.</p>"
        );
    }
    if !r.run_ids.is_empty() {
        body.push_str("<p>Runs: ");
        for run in &r.run_ids {
            let _ = write!(
                body,
                "<a class=\"run\" href=\"/dashboard/connections/{}/runs/{run}\">run {run}</a> ",
                seg(&conn)
            );
        }
        body.push_str("</p>");
    }
    if !done {
        body.push_str("<p class=\"muted\">This page reloads itself until the sync is done.</p>");
    }
    let mut page = who.page(format!("Sync request {id}"), body);
    if !done {
        page.refresh_secs = Some(1);
    }
    Ok(page.into_response())
}
