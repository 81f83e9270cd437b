//! The probes. Each is one or a few requests; a probe that cannot be made is recorded as a
//! problem, never a panic, and never stops the others.

use aqueduct_core::BoxFuture;
use std::sync::Arc;

use aqueduct_client::fhir::{Bundle, Entry};
use aqueduct_client::{AccessTokenSource, FetchErrorKind, FhirClient, FhirRequest, VendorProfile};
use chrono::Utc;
use url::Url;

use crate::report::{DoctorReport, SmartSummary, TypeProbe};

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Types to try a patient search for (default: the profile's default types).
    pub types: Vec<String>,
    /// The patient to search for; default: the first the server lists.
    pub patient: Option<String>,
    /// How many categories to try on a rejected search (bounds the requests).
    pub max_categories: usize,
    /// The page size asked for to find the server's maximum.
    pub page_probe: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            patient: None,
            max_categories: 6,
            page_probe: 1000,
        }
    }
}

const RATE_HEADERS: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
];

/// Probes `base` with the assumed `profile` (its extra headers and pacing are used; its claims
/// about the server are not trusted).
pub fn probe<'a>(
    base: &'a Url,
    profile: &'a VendorProfile,
    auth: Arc<dyn AccessTokenSource>,
    opts: ProbeOptions,
) -> BoxFuture<'a, DoctorReport> {
    Box::pin(probe_unboxed(base, profile, auth, opts))
}

async fn probe_unboxed(
    base: &Url,
    profile: &VendorProfile,
    auth: Arc<dyn AccessTokenSource>,
    opts: ProbeOptions,
) -> DoctorReport {
    let mut r = DoctorReport {
        base_url: base.as_str().trim_end_matches('/').to_string(),
        ..Default::default()
    };
    let http = aqueduct_client::client::shared_http();
    let root = base.as_str().trim_end_matches('/').to_string();

    r.tls = if base.scheme() == "https" {
        "HTTPS (certificate verified with rustls)".into()
    } else {
        "plain HTTP: no TLS (acceptable on loopback only)".into()
    };

    smart(&http, &root, &mut r).await;

    let client = match FhirClient::new(base.clone(), profile, auth.clone()) {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(format!("cannot build a client: {e}"));
            return r;
        }
    };
    let capability = match client.capability_statement().await {
        Ok(Some(cs)) => Some(cs),
        Ok(None) => {
            r.problems
                .push("no usable CapabilityStatement at /metadata".into());
            None
        }
        Err(e) => {
            r.problems.push(format!("CapabilityStatement: {e}"));
            None
        }
    };
    if let Some(cs) = &capability {
        r.fhir_version = cs.fhir_version.clone();
        r.claimed_types = cs
            .rest
            .iter()
            .flat_map(|rest| rest.resource.iter())
            .filter_map(|res| res.resource_type.clone())
            .collect();
    }

    let token = match auth.token().await {
        Ok(t) => t,
        Err(e) => {
            r.problems.push(format!("no access token: {e}"));
            None
        }
    };
    response_headers(&client, &mut r).await;

    let patient = match opts.patient.clone() {
        Some(p) => Some(p),
        None => first_patient(&client)
            .await
            .map_err(|e| r.problems.push(e))
            .ok()
            .flatten(),
    };
    r.probe_patient = patient.clone();
    let Some(pid) = patient else {
        r.problems
            .push("no patient to probe searches with (pass one)".into());
        return r;
    };

    let types = if opts.types.is_empty() {
        profile.default_types.clone()
    } else {
        opts.types.clone()
    };
    let mut best: Option<(String, u64)> = None;
    for t in &types {
        let (tp, next) = probe_type(&client, profile, t, &pid, &opts, capability.as_ref()).await;
        if r.paging_style.is_none() {
            r.paging_style = next.as_deref().map(|n| paging_style(n).to_string());
        }
        if tp.plain_search_works
            && tp.entries > best.as_ref().map(|b| b.1).unwrap_or(0)
            && t != "Patient"
        {
            best = Some((t.clone(), tp.entries));
        }
        if tp.claimed && !tp.plain_search_works && tp.working_categories.is_empty() {
            r.claimed_but_failing.push(t.clone());
        }
        r.types.push(tp);
    }

    r.everything = match client.url(&format!("Patient/{pid}/$everything"), &[("_count", "10")]) {
        Ok(u) => match client.get(FhirRequest::new(u).patient(pid.clone())).await {
            Ok(_) => Some(true),
            Err(e) if matches!(e.kind, FetchErrorKind::Http(_)) => Some(false),
            Err(e) => {
                r.problems.push(format!("$everything: {e}"));
                None
            }
        },
        Err(e) => {
            r.problems.push(format!("$everything: {e}"));
            None
        }
    };
    r.batch = batch(&http, &root, profile, token.as_deref(), &pid, &mut r).await;
    r.include = include(&client, &pid).await;
    if let Some((t, _)) = best {
        page_size(&client, profile, &t, &pid, opts.page_probe, &mut r).await;
    }
    r
}

async fn smart(http: &reqwest::Client, root: &str, r: &mut DoctorReport) {
    let url = format!("{root}/.well-known/smart-configuration");
    let got = async {
        let resp = http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        resp.json::<serde_json::Value>()
            .await
            .map_err(|e| format!("not JSON: {e}"))
    }
    .await;
    let strings = |v: &serde_json::Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match got {
        Ok(v) => {
            r.smart = Some(SmartSummary {
                authorization_endpoint: v
                    .get("authorization_endpoint")
                    .and_then(|x| x.as_str())
                    .map(str::to_string),
                token_endpoint: v
                    .get("token_endpoint")
                    .and_then(|x| x.as_str())
                    .map(str::to_string),
                capabilities: strings(&v, "capabilities"),
                grant_types: strings(&v, "grant_types_supported"),
                code_challenge_methods: strings(&v, "code_challenge_methods_supported"),
                token_endpoint_auth_methods: strings(&v, "token_endpoint_auth_methods_supported"),
            })
        }
        Err(e) => r.smart_error = Some(e),
    }
}

/// The batch probe POSTs, which the FHIR client does not do (it only reads): this request
/// alone is built by hand, with the same headers and token the client would send.
fn with_headers(
    mut req: reqwest::RequestBuilder,
    profile: &VendorProfile,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    for (k, v) in &profile.http.extra_headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.header("accept", profile.http.accept.as_str())
}

/// What the headers of an ordinary search say: the server's clock, its rate-limit signals
/// and the software it names. Sent through the FHIR client like every probe, so it is paced
/// by the host limiter, retried, and sent with the profile's headers and the token.
async fn response_headers(client: &FhirClient, r: &mut DoctorReport) {
    let url = match client.url("Patient", &[("_count", "1")]) {
        Ok(u) => u,
        Err(e) => {
            r.problems.push(format!("GET Patient?_count=1: {e}"));
            return;
        }
    };
    let sent = Utc::now();
    match client
        .get(FhirRequest::new(url).resource_type("Patient"))
        .await
    {
        Ok(resp) => {
            let received = Utc::now();
            let h = &resp.headers;
            if let Some(d) = h
                .get("date")
                .and_then(|v| v.to_str().ok())
                .and_then(httpdate_parse)
            {
                // the last attempt's midpoint: retries before it do not count as skew
                let last = chrono::Duration::from_std(resp.duration).unwrap_or_default();
                let start = if received - last > sent {
                    received - last
                } else {
                    sent
                };
                let ours = start + (received - start) / 2;
                r.clock_skew_secs = Some((d - ours).num_milliseconds() as f64 / 1000.0);
            }
            for name in RATE_HEADERS {
                if let Some(v) = h.get(*name).and_then(|v| v.to_str().ok()) {
                    r.rate_limit_headers.push((name.to_string(), v.to_string()));
                }
            }
            if let Some(s) = h.get("server").and_then(|v| v.to_str().ok()) {
                r.software = Some(s.to_string());
            }
        }
        Err(e) => r.problems.push(format!("GET Patient?_count=1: {e}")),
    }
}

fn httpdate_parse(s: &str) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

async fn first_patient(client: &FhirClient) -> Result<Option<String>, String> {
    let url = client
        .url("Patient", &[("_count", "1")])
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(FhirRequest::new(url).resource_type("Patient"))
        .await
        .map_err(|e| format!("listing patients: {e}"))?;
    let bundle = resp
        .bundle()
        .map_err(|e| format!("listing patients: {e}"))?;
    Ok(first_id(&bundle))
}

fn first_id(bundle: &Bundle) -> Option<String> {
    bundle.entry.iter().find_map(|e| match e {
        Entry::Ok(be) => be
            .resource
            .as_ref()
            .and_then(|raw| aqueduct_client::fhir::ResourceHead::parse(raw.get()))
            .and_then(|h| h.id),
        _ => None,
    })
}

fn entries(bundle: &Bundle, mode: &str) -> u64 {
    bundle
        .entry
        .iter()
        .filter(|e| match e {
            Entry::Ok(be) => {
                be.search
                    .as_ref()
                    .and_then(|s| s.mode.as_deref())
                    .unwrap_or("match")
                    == mode
            }
            _ => false,
        })
        .count() as u64
}

async fn probe_type(
    client: &FhirClient,
    profile: &VendorProfile,
    rtype: &str,
    pid: &str,
    opts: &ProbeOptions,
    capability: Option<&aqueduct_client::fhir::CapabilityStatement>,
) -> (TypeProbe, Option<String>) {
    let mut next = None;
    let mut tp = TypeProbe {
        resource_type: rtype.to_string(),
        claimed: capability.is_some_and(|c| c.supports_type(rtype)),
        ..Default::default()
    };
    let param = profile.patient_param(rtype);
    let search = |extra: Option<(&str, String)>| {
        let mut params: Vec<(&str, String)> =
            vec![(param.as_str(), pid.to_string()), ("_count", "10".into())];
        params.extend(extra);
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.url(rtype, &borrowed)
    };
    let Ok(url) = search(None) else {
        tp.plain_status = "invalid URL".into();
        return (tp, None);
    };
    match client
        .get(FhirRequest::new(url).resource_type(rtype).patient(pid))
        .await
    {
        Ok(resp) => {
            tp.plain_status = resp.status.to_string();
            match resp.bundle() {
                Ok(b) if b.is_bundle() => {
                    tp.plain_search_works = true;
                    tp.entries = entries(&b, "match");
                    next = b.next_link().map(str::to_string);
                }
                _ => tp.plain_status = format!("{} but not a Bundle", resp.status),
            }
        }
        Err(e) => {
            tp.plain_status = match e.status {
                Some(s) => s.to_string(),
                None => e.kind_code(),
            };
            if matches!(e.kind, FetchErrorKind::Http(400)) {
                let settings = profile.type_settings(rtype);
                let mut candidates = settings.required_categories.clone();
                candidates.extend(settings.known_categories.iter().cloned());
                candidates.dedup();
                for cat in candidates.into_iter().take(opts.max_categories) {
                    let Ok(url) = search(Some(("category", cat.clone()))) else {
                        continue;
                    };
                    if let Ok(resp) = client
                        .get(FhirRequest::new(url).resource_type(rtype).patient(pid))
                        .await
                    {
                        if resp.bundle().is_ok_and(|b| b.is_bundle()) {
                            tp.working_categories.push(cat);
                        }
                    }
                }
            }
        }
    }
    (tp, next)
}

async fn batch(
    http: &reqwest::Client,
    root: &str,
    profile: &VendorProfile,
    token: Option<&str>,
    pid: &str,
    r: &mut DoctorReport,
) -> Option<bool> {
    let body = serde_json::json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": format!("Patient/{pid}")}}],
    });
    let req = with_headers(http.post(root), profile, token)
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    match req.send().await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let text = resp.bytes().await.unwrap_or_default();
            let b = Bundle::parse(&text).ok();
            Some(ok && b.is_some_and(|b| b.bundle_type.as_deref() == Some("batch-response")))
        }
        Err(e) => {
            r.problems.push(format!("batch: {e}"));
            None
        }
    }
}

async fn include(client: &FhirClient, pid: &str) -> Option<bool> {
    let tries = [
        ("Encounter", "Encounter:participant"),
        ("MedicationRequest", "MedicationRequest:requester"),
        ("Observation", "Observation:performer"),
        ("Encounter", "*"),
    ];
    let mut answered = false;
    for (t, inc) in tries {
        let Ok(url) = client.url(t, &[("patient", pid), ("_include", inc), ("_count", "20")])
        else {
            continue;
        };
        match client
            .get(FhirRequest::new(url).resource_type(t).patient(pid))
            .await
        {
            Ok(resp) => {
                answered = true;
                if resp.bundle().is_ok_and(|b| entries(&b, "include") > 0) {
                    return Some(true);
                }
            }
            Err(e) if matches!(e.kind, FetchErrorKind::Http(_)) => answered = true,
            Err(_) => {}
        }
    }
    answered.then_some(false)
}

async fn page_size(
    client: &FhirClient,
    profile: &VendorProfile,
    rtype: &str,
    pid: &str,
    ask: u32,
    r: &mut DoctorReport,
) {
    let param = profile.patient_param(rtype);
    let count = ask.to_string();
    let Ok(url) = client.url(rtype, &[(param.as_str(), pid), ("_count", count.as_str())]) else {
        return;
    };
    match client
        .get(FhirRequest::new(url).resource_type(rtype).patient(pid))
        .await
    {
        Ok(resp) => match resp.bundle() {
            Ok(b) => {
                let n = entries(&b, "match") as u32;
                if let Some(next) = b.next_link() {
                    // A next link after fewer entries than asked: the server's ceiling.
                    if n < ask {
                        r.max_page_size = Some(n);
                    }
                    r.paging_style
                        .get_or_insert_with(|| paging_style(next).into());
                }
            }
            Err(e) => r.problems.push(format!("page-size probe: {e}")),
        },
        Err(e) => r.problems.push(format!("page-size probe: {e}")),
    }
}

/// Offsets and page numbers can be followed again later; anything else is treated as a
/// server-side cursor that may expire.
pub(crate) fn paging_style(next: &str) -> &'static str {
    let Ok(u) = Url::parse(next) else {
        return "opaque-cursor";
    };
    let numeric = [
        "_offset",
        "offset",
        "page",
        "_page",
        "_getpagesoffset",
        "__page",
    ];
    let has_numeric = u
        .query_pairs()
        .any(|(k, v)| numeric.contains(&k.as_ref()) && v.parse::<u64>().is_ok());
    if has_numeric {
        "next-link"
    } else {
        "opaque-cursor"
    }
}

#[cfg(test)]
mod tests {
    use super::paging_style;

    #[test]
    fn paging_styles_are_told_apart_by_their_next_links() {
        assert_eq!(
            paging_style("https://x/fhir/Observation?patient=1&_count=50&_offset=50"),
            "next-link"
        );
        assert_eq!(
            paging_style("https://x/fhir?_getpages=abc&_getpagesoffset=100"),
            "next-link"
        );
        assert_eq!(
            paging_style("https://x/fhir/Observation?_cursor=ZjQ1YWJj"),
            "opaque-cursor"
        );
        assert_eq!(paging_style("not a url"), "opaque-cursor");
    }
}
