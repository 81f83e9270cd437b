//! The dashboard over real HTTP on loopback with a real SQLite store: sign-in refuses a bad key
//! and a forged form, the session cookie is HttpOnly and SameSite=Strict, every POST without
//! the session's CSRF token is refused with 403 and changes nothing, hostile patient data is
//! shown as text, another organization's connection is a 404, logout and revocation end the
//! session. (The whole flow in a real browser is crates/aqueduct-cli/tests/dashboard_browser.rs.)
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_serve::{AppState, ServeSettings};
use aqueduct_store::*;
use chrono::Utc;

const HOSTILE: &str = "<script>alert(1)</script>";

struct Server {
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    write_key: String,
    read_key: String,
    write_key_id: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn entry(at: chrono::DateTime<Utc>, url: &str, status: u16, error: Option<&str>) -> LedgerEntry {
    LedgerEntry {
        at,
        method: "GET".into(),
        url_template: url.into(),
        url: format!("https://ehr.example/fhir{url}"),
        resource_type: Some("Observation".into()),
        patient_id: Some("p1".into()),
        status: Some(status),
        duration_ms: 12.0,
        bytes: 100,
        resources: if error.is_some() { 0 } else { 5 },
        error_kind: error.map(str::to_string),
        page_complete: error.is_none(),
        attempt: 1,
    }
}

async fn server() -> Server {
    server_with(ServeSettings::default()).await
}

async fn server_with(settings: ServeSettings) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    for org in ["acme", "globex"] {
        store
            .upsert_connection(&ConnectionRecord {
                organization: org.into(),
                name: if org == "acme" { "ehr" } else { "other" }.into(),
                base_url: "https://ehr.example/fhir".into(),
                profile: "generic".into(),
            })
            .await
            .unwrap();
    }
    let conn = ConnectionRef::new("acme", "ehr");
    let patient = format!(
        r#"{{"resourceType":"Patient","id":"p1","identifier":[{{"system":"urn:mrn","value":"42"}}],"name":[{{"family":"{}","given":["Eve\" onmouseover=\"x"]}}]}}"#,
        HOSTILE.replace('"', "\\\"")
    );
    store
        .write_resources(
            &conn,
            &[RawResource {
                resource_type: "Patient".into(),
                logical_id: "p1".into(),
                version_id: Some("1".into()),
                last_updated: None,
                source_url: "https://ehr.example/fhir/Patient/p1".into(),
                patient_id: Some("p1".into()),
                parse_status: ParseStatus::Ok,
                fetched_at: Utc::now(),
                bytes: patient.into_bytes(),
            }],
        )
        .await
        .unwrap();
    // the same person at a second source of acme, found through the identifier index
    let lab = ConnectionRef::new("acme", "lab");
    store
        .upsert_connection(&ConnectionRecord {
            organization: "acme".into(),
            name: "lab".into(),
            base_url: "https://lab.example/fhir".into(),
            profile: "generic".into(),
        })
        .await
        .unwrap();
    store
        .write_resources(
            &lab,
            &[RawResource {
                resource_type: "Patient".into(),
                logical_id: "p9".into(),
                version_id: None,
                last_updated: None,
                source_url: "https://lab.example/fhir/Patient/p9".into(),
                patient_id: Some("p9".into()),
                parse_status: ParseStatus::Ok,
                fetched_at: Utc::now(),
                bytes: br#"{"resourceType":"Patient","id":"p9","identifier":[{"system":"urn:mrn","value":"42"}]}"#.to_vec(),
            }],
        )
        .await
        .unwrap();
    for c in [&conn, &lab] {
        let terms = Arc::new(aqueduct_normalize::Terminology::embedded());
        let ctx = aqueduct_normalize::context_for(store.as_ref(), c, terms)
            .await
            .unwrap();
        aqueduct_normalize::rebuild(store.as_ref(), c, &ctx, &["Patient".to_string()])
            .await
            .unwrap();
    }
    let run = store.begin_run(&conn, "sync").await.unwrap();
    let now = Utc::now();
    store
        .record_requests(
            &conn,
            run,
            &[
                entry(now, "/Patient/p1", 200, None),
                entry(now, "/Observation?patient=p1", 503, Some("server-error")),
            ],
        )
        .await
        .unwrap();
    store
        .finish_run(
            &conn,
            run,
            RunOutcome::Partial,
            None,
            Some("Observation: <b>gap</b>"),
        )
        .await
        .unwrap();
    store
        .record_finding(
            &conn,
            &Finding {
                at: now,
                run_id: Some(run),
                kind: "type-gap".into(),
                severity: "warning".into(),
                resource_type: Some("Observation".into()),
                detail: HOSTILE.into(),
            },
        )
        .await
        .unwrap();
    let mut keys = Vec::new();
    for scope in [ApiScope::Write, ApiScope::Read] {
        let (rec, k) = aqueduct_serve::generate_key("acme", scope, None).unwrap();
        store.create_api_key(&rec).await.unwrap();
        keys.push((rec.id, k));
    }
    let state = AppState::new(store.clone(), Arc::new(Default::default()), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aqueduct_serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        write_key_id: keys[0].0.clone(),
        write_key: keys[0].1.clone(),
        read_key: keys[1].1.clone(),
        _dir: dir,
        _stop: stop,
    }
}

/// The `name=value` of the Set-Cookie for `name`, and the whole header.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts the sign-in form with `field` = `value` (and its double-submit token).
    async fn sign_in(&self, field: &str, value: &str) -> reqwest::Response {
        let form = self
            .http
            .get(self.url("/dashboard/login"))
            .send()
            .await
            .unwrap();
        let (login_cookie, _) = set_cookie(&form, "aqueduct_login").unwrap();
        let token = hidden_csrf(&form.text().await.unwrap());
        self.http
            .post(self.url("/dashboard/login"))
            .header("cookie", &login_cookie)
            .form(&[("csrf", token.as_str()), (field, value)])
            .send()
            .await
            .unwrap()
    }

    /// Signs in with `key`: the session cookie (`aqueduct_session=…`) and the CSRF token.
    async fn login(&self, key: &str) -> (String, String) {
        self.session_of(self.sign_in("api_key", key).await).await
    }

    async fn session_of(&self, r: reqwest::Response) -> (String, String) {
        assert_eq!(r.status(), 303, "signed in");
        let (session, whole) = set_cookie(&r, "aqueduct_session").unwrap();
        assert!(
            whole.contains("HttpOnly") && whole.contains("SameSite=Strict"),
            "{whole}"
        );
        assert!(!whole.contains("Secure"), "plain HTTP on loopback: {whole}");
        let page = self.get(&session, "/dashboard/").await;
        assert_eq!(page.0, 200);
        (session, hidden_csrf(&page.1))
    }

    async fn get(&self, cookie: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .http
            .post(self.url(path))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (status, location.unwrap_or(r.text().await.unwrap()))
    }
}

#[tokio::test]
async fn sign_in_refuses_bad_keys_and_forged_forms() {
    let s = server().await;
    // no session: pages send to the sign-in page
    let r = s.http.get(s.url("/dashboard/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard/login");

    let form = s.http.get(s.url("/dashboard/login")).send().await.unwrap();
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let (cookie, whole) = set_cookie(&form, "aqueduct_login").unwrap();
    assert!(whole.contains("HttpOnly") && whole.contains("SameSite=Strict"));
    let token = hidden_csrf(&form.text().await.unwrap());

    // a made-up and a mangled key: 401, the form again, no session
    for bad in [
        "aqk_0000000000000000_nope".to_string(),
        format!("{}x", s.write_key),
        "not a key".to_string(),
    ] {
        let r = s
            .http
            .post(s.url("/dashboard/login"))
            .header("cookie", &cookie)
            .form(&[("csrf", token.as_str()), ("api_key", bad.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        assert!(set_cookie(&r, "aqueduct_session").is_none());
        assert!(r.text().await.unwrap().contains("unknown or revoked"));
    }
    // the right key without the form's token, or with another: 403
    for (c, t) in [
        (cookie.as_str(), ""),
        (cookie.as_str(), "forged"),
        ("", token.as_str()),
    ] {
        let r = s
            .http
            .post(s.url("/dashboard/login"))
            .header("cookie", c)
            .form(&[("csrf", t), ("api_key", s.write_key.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "cookie {c:?} token {t:?}");
        assert!(set_cookie(&r, "aqueduct_session").is_none());
    }
    // a made-up session cookie is no session
    let (status, _) = s.get("aqueduct_session=made-up", "/dashboard/").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn every_post_without_the_session_token_is_refused_and_changes_nothing() {
    let s = server().await;
    let (session, csrf) = s.login(&s.write_key).await;
    let conn = ConnectionRef::new("acme", "ehr");
    let finding = s.store.list_finding_records(&conn, None, 10).await.unwrap()[0].id;
    let ack = format!("/dashboard/connections/ehr/findings/{finding}/acknowledge");
    let map = [
        ("source_system", "urn:oid:1.2.3"),
        ("source_code", "LAB-GLU-POC"),
        ("target_system", "http://loinc.org"),
        ("target_code", "2345-7"),
    ];
    for (path, fields) in [
        ("/dashboard/connections/ehr/sync", &[][..]),
        (ack.as_str(), &[("note", "seen")][..]),
        ("/dashboard/connections/ehr/code-mappings", &map[..]),
        ("/dashboard/logout", &[][..]),
    ] {
        let mut without: Vec<(&str, &str)> = fields.to_vec();
        let (status, body) = s.post(&session, path, &without).await;
        assert_eq!(status, 403, "{path} without a token: {body}");
        without.push(("csrf", "forged"));
        let (status, _) = s.post(&session, path, &without).await;
        assert_eq!(status, 403, "{path} with a forged token");
        // and with no session at all, even with the right token
        without.pop();
        without.push(("csrf", csrf.as_str()));
        let (status, _) = s.post("", path, &without).await;
        assert_eq!(status, 401, "{path} without a session");
    }
    assert!(
        s.store
            .recent_refreshes("acme", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.store.list_code_mappings(&conn).await.unwrap().is_empty());
    assert!(
        s.store.list_finding_records(&conn, None, 10).await.unwrap()[0]
            .acknowledged
            .is_none()
    );
    assert_eq!(
        s.get(&session, "/dashboard/").await.0,
        200,
        "still signed in"
    );

    // with the token, each works
    let (status, to) = s
        .post(
            &session,
            "/dashboard/connections/ehr/sync",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 303);
    let raised = s.store.recent_refreshes("acme", 10).await.unwrap();
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].request.connection.as_deref(), Some("ehr"));
    assert_eq!(to, format!("/dashboard/refresh-requests/{}", raised[0].id));
    let (status, page) = s.get(&session, &to).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "waits for the engine"
    );

    let mut with: Vec<(&str, &str)> = map.to_vec();
    with.push(("csrf", &csrf));
    assert_eq!(
        s.post(&session, "/dashboard/connections/ehr/code-mappings", &with)
            .await
            .0,
        303
    );
    let mapped = s.store.list_code_mappings(&conn).await.unwrap();
    assert_eq!(mapped.len(), 1);
    assert_eq!(mapped[0].target_code, "2345-7");
    // a mapping the normalize rules refuse is a 422 with the reason
    let bad = [
        ("source_system", "urn:oid:1.2.3"),
        ("source_code", "X"),
        ("target_system", "http://loinc.org"),
        ("target_code", "2345-8"),
        ("csrf", &csrf),
    ];
    let (status, body) = s
        .post(&session, "/dashboard/connections/ehr/code-mappings", &bad)
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("not a valid"), "{body}");

    assert_eq!(
        s.post(&session, &ack, &[("note", "looked"), ("csrf", &csrf)])
            .await
            .0,
        303
    );
    let f = &s.store.list_finding_records(&conn, None, 10).await.unwrap()[0];
    let a = f.acknowledged.as_ref().unwrap();
    assert_eq!(a.note.as_deref(), Some("looked"));
    assert_eq!(a.by, format!("api-key:{}", s.write_key_id));

    // logout ends the session on the server: the old cookie no longer works
    let (status, to) = s
        .post(&session, "/dashboard/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!((status, to.as_str()), (303, "/dashboard/login"));
    assert_eq!(s.get(&session, "/dashboard/").await.0, 303);
}

#[tokio::test]
async fn a_read_key_looks_but_cannot_act() {
    let s = server().await;
    let (session, csrf) = s.login(&s.read_key).await;
    let (status, body) = s
        .post(
            &session,
            "/dashboard/connections/ehr/sync",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("write"), "{body}");
    assert!(
        s.store
            .recent_refreshes("acme", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn hostile_data_is_text_and_other_organizations_are_not_there() {
    let s = server().await;
    let (session, _) = s.login(&s.write_key).await;
    for path in [
        "/dashboard/",
        "/dashboard/connections/ehr",
        "/dashboard/connections/ehr/patients",
        "/dashboard/connections/ehr/patients/p1",
        "/dashboard/findings",
        "/dashboard/terminology",
        "/dashboard/connections/ehr/runs/1",
        "/dashboard/connections/ehr/runs/1/requests/1",
    ] {
        let (status, page) = s.get(&session, path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(!page.contains("<script"), "{path} carries markup from data");
        assert!(!page.contains("<b>gap"), "{path}");
        assert!(
            !page.contains("\" onmouseover"),
            "{path}: an attribute escaped"
        );
    }
    let (_, patient) = s
        .get(&session, "/dashboard/connections/ehr/patients/p1")
        .await;
    assert!(
        patient.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{patient}"
    );
    assert!(
        patient.contains("href=\"/dashboard/connections/lab/patients/p9\""),
        "the same MRN at the other source: {patient}"
    );
    let (_, run) = s.get(&session, "/dashboard/connections/ehr/runs/1").await;
    // failures first: the 503 row comes before the 200 row
    let failed = run.find("server-error").unwrap();
    let ok = run.find("/Patient/p1").unwrap();
    assert!(failed < ok, "failures first");
    let (_, req) = s
        .get(&session, "/dashboard/connections/ehr/runs/1/requests/1")
        .await;
    assert!(req.contains("503") && req.contains("server-error"));
    let (_, overview) = s.get(&session, "/dashboard/").await;
    assert!(overview.contains("<svg") && overview.contains("ehr: latency"));

    // the patient pages were read into the access log
    let log = s.store.list_access("acme", None, None, 50).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.event.action == "dashboard" && e.event.patient.as_deref() == Some("ehr.p1")),
        "{log:?}"
    );
    // another organization's connection reads like one that does not exist
    for path in [
        "/dashboard/connections/other",
        "/dashboard/connections/other/patients",
    ] {
        assert_eq!(s.get(&session, path).await.0, 404, "{path}");
    }
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions() {
    let s = server().await;
    let (session, _) = s.login(&s.write_key).await;
    assert!(
        s.store
            .revoke_api_key("acme", &s.write_key_id, Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(s.get(&session, "/dashboard/").await.0, 303);
}

#[tokio::test]
async fn the_admin_password_signs_in_to_its_organization_and_wrong_ones_are_throttled() {
    let password = "correct horse battery staple";
    let s = server_with(ServeSettings {
        dashboard_admin: Some(aqueduct_serve::settings::DashboardAdmin {
            organization: "acme".into(),
            password: aqueduct_config::SecretRef::Inline(password.into()),
        }),
        ..Default::default()
    })
    .await;
    let r = s.sign_in("password", "correct horse battery stapl").await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "aqueduct_session").is_none());
    assert!(r.text().await.unwrap().contains("password is wrong"));

    let (session, csrf) = s.session_of(s.sign_in("password", password).await).await;
    assert_eq!(s.get(&session, "/dashboard/connections/ehr").await.0, 200);
    assert_eq!(s.get(&session, "/dashboard/connections/other").await.0, 404);
    // the admin scope acts; the audit names the password, not a key
    assert_eq!(
        s.post(
            &session,
            "/dashboard/connections/ehr/sync",
            &[("csrf", &csrf)]
        )
        .await
        .0,
        303
    );
    let raised = s.store.recent_refreshes("acme", 10).await.unwrap();
    assert_eq!(raised[0].request.source, "dashboard-admin");

    // five wrong passwords a minute, then even the right one waits
    for _ in 1..aqueduct_serve::dashboard::session::MAX_FAILURES_PER_MINUTE {
        assert_eq!(
            s.sign_in("password", "guess guess guess").await.status(),
            401
        );
    }
    assert_eq!(
        s.sign_in("password", "guess guess guess").await.status(),
        429
    );
    assert_eq!(s.sign_in("password", password).await.status(), 429);
    // an API key still signs in
    s.login(&s.write_key).await;
}

#[tokio::test]
async fn without_an_admin_password_configured_no_password_signs_in() {
    let s = server().await;
    let r = s.sign_in("password", "").await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "aqueduct_session").is_none());
}

#[test]
fn the_admin_password_is_checked_when_the_server_starts() {
    let settings = |toml: &str| {
        let config = aqueduct_config::parse(toml, "test").unwrap();
        ServeSettings::from_config(&config).map(|s| s.dashboard_admin.is_some())
    };
    let org = "[organizations.acme.connections.ehr]\nbase_url = \"https://ehr.example/fhir\"\n";
    let admin = |pw: &str, org_name: &str| {
        format!(
            "[serve.dashboard_admin]\norganization = \"{org_name}\"\npassword = {{ value = \"{pw}\" }}\n"
        )
    };
    let ok = format!(
        "allow_inline_secrets = true\n{}{org}",
        admin("long enough passphrase", "acme")
    );
    assert!(settings(&ok).unwrap());
    for (bad, why) in [
        (
            format!("{}{org}", admin("long enough passphrase", "acme")),
            "inline",
        ),
        (
            format!(
                "allow_inline_secrets = true\n{}{org}",
                admin("short", "acme")
            ),
            "12 characters",
        ),
        (
            format!(
                "allow_inline_secrets = true\n{}{org}",
                admin("long enough passphrase", "globex")
            ),
            "no organization",
        ),
    ] {
        let e = settings(&bad).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
}
