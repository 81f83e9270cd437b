//! `aqueduct demo`: the main job on the embedded default. Several simulated sources run
//! in-process — an Epic-like EHR that throttles, an Oracle Health-like EHR whose
//! CapabilityStatement overpromises, a payer Patient Access API with `$everything` — and are
//! registered as connections of one organization. Each is authorized with SMART backend
//! services (a key pair generated here, its public JWKS registered at the source, then a
//! `private_key_jwt` client_credentials grant), its population discovered and synced into the
//! store; the raw data is normalized and every run is checked for silent failures. A report
//! per source follows: resources by type, requests, retries, throttling, partial types and why.
//!
//! The institution overrides raise the client's pacing above the vendors' production hints:
//! the simulators run on this machine, and the demo would otherwise spend minutes politely
//! waiting. The Epic-like source still throttles now and then (an injected 429) to show it.

use std::sync::Arc;

use anyhow::Context;
use aqueduct_client::{FhirClient, VendorProfile};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_smart::{
    AudienceParam, ClientCredentials, KeyAlgorithm, SmartClient, SmartConnection, SmartTokenSource,
    TokenManager, VaultKey, generate_key, jwks,
};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization};
use aqueduct_sync::{SyncMode, SyncOptions, SyncReport, Syncer};

const ORG: &str = "demo";

struct Source {
    connection: &'static str,
    personality: &'static str,
    profile: &'static str,
    /// The institution override a connection's configuration would carry.
    overrides: &'static str,
    faults: &'static [&'static str],
    alg: KeyAlgorithm,
}

const SOURCES: &[Source] = &[
    Source {
        connection: "epic-main",
        personality: "epic",
        profile: "epic",
        overrides: "[http.extra_headers]\n\"Epic-Client-ID\" = \"demo-client\"\n[rate_limit]\nrequests_per_sec = 400.0\nburst = 40\n",
        faults: &["rate-limit-429@0.005"],
        alg: KeyAlgorithm::RS384,
    },
    Source {
        connection: "cerner-north",
        personality: "cerner",
        profile: "cerner",
        overrides: "[rate_limit]\nrequests_per_sec = 400.0\nburst = 40\n",
        faults: &[],
        alg: KeyAlgorithm::ES384,
    },
    Source {
        connection: "payer-bluebird",
        personality: "payer",
        profile: "cms-payer",
        overrides: "[capabilities]\neverything = true\n[paging]\nmax_page_size = 500\n[rate_limit]\nrequests_per_sec = 400.0\nburst = 40\n",
        faults: &[],
        alg: KeyAlgorithm::ES384,
    },
];

struct Outcome {
    name: &'static str,
    base: String,
    report: anyhow::Result<SyncReport>,
    after: Option<aqueduct_engine::AfterSync>,
    scopes: Option<String>,
}

/// What a source's connection needs in a configuration, so the engine can sync it again
/// (`aqueduct demo --serve`).
struct Registered {
    connection: &'static str,
    base: String,
    profile: &'static str,
    overrides: &'static str,
    client_id: String,
    key: aqueduct_smart::SigningKey,
    alg: &'static str,
}

/// `--serve ADDR`: after the reports, the simulators keep running and `aqueduct serve` (API,
/// facade, dashboard, and the engine, which can sync the demo sources again) runs on the
/// demo store until stopped.
pub async fn run_demo(
    store_location: &str,
    patients: usize,
    json: bool,
    serve: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let store = aqueduct_store::open(store_location)
        .await
        .with_context(|| format!("opening the store at {store_location}"))?;
    store
        .upsert_organization(&Organization {
            name: ORG.into(),
            display_name: Some("Aqueduct demo".into()),
        })
        .await?;
    let vault_key = demo_vault_key(store_location)?;
    let vault_b64 = vault_key.to_base64();
    let smart = Arc::new(SmartClient::new(store.clone(), vault_key)?);
    let mut registered = Vec::new();

    let mut sims: Vec<SimServer> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, src) in SOURCES.iter().enumerate() {
        let faults = src
            .faults
            .iter()
            .map(|f| f.parse::<Fault>().map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sim = Simulator::start(SimConfig {
            personality: src.personality.into(),
            patients,
            seed: 100 + i as u64,
            resources_per_patient: 120,
            faults,
            ..Default::default()
        })
        .await
        .with_context(|| format!("starting the {} simulator", src.personality))?;
        let base = sim.base_url();
        let conn = ConnectionRef::new(ORG, src.connection);
        store
            .upsert_connection(&ConnectionRecord {
                organization: ORG.into(),
                name: src.connection.into(),
                base_url: base.clone(),
                profile: src.profile.into(),
            })
            .await?;
        let profile = VendorProfile::resolve_with_toml(src.profile, src.overrides)?;

        // What an EHR's developer portal does once: register our public key for this client.
        let key = generate_key(src.alg)?;
        let client_id = format!("aqueduct-demo-{}", src.connection);
        sim.register_backend_client(&client_id, &jwks(std::slice::from_ref(&key)).to_string())?;
        registered.push(Registered {
            connection: src.connection,
            base: base.clone(),
            profile: src.profile,
            overrides: src.overrides,
            client_id: client_id.clone(),
            key: key.clone(),
            alg: match src.alg {
                KeyAlgorithm::RS384 => "RS384",
                _ => "ES384",
            },
        });
        let mut sc = SmartConnection::new(conn.clone(), base.clone(), client_id);
        sc.credentials = ClientCredentials::PrivateKey(key);
        sc.backend_services = true;
        sc.openid = false;
        sc.offline_access = false;
        sc.require_patient = false;
        sc.aud = profile
            .aud_for(&base)
            .map(AudienceParam::Custom)
            .unwrap_or(AudienceParam::Omit);
        sc.resource_types = profile.default_types.clone();
        sc.resource_types.extend(
            aqueduct_sync::refs::REFERENCE_TARGET_TYPES
                .iter()
                .map(|t| t.to_string()),
        );
        let manager = Arc::new(TokenManager::new(smart.clone(), sc));
        let auth = Arc::new(SmartTokenSource(manager.clone()));

        let client = FhirClient::new(url::Url::parse(&base)?, &profile, auth)?;
        let syncer = Syncer::new(
            store.clone(),
            client,
            conn.clone(),
            profile,
            SyncOptions::default(),
        );
        let name = src.connection;
        let store = store.clone();
        tasks.spawn(async move {
            let report: anyhow::Result<SyncReport> = async {
                let ids = syncer
                    .discover_patients()
                    .await
                    .context("discovering patients")?;
                Ok(syncer.sync_patients(&ids, SyncMode::Full).await?)
            }
            .await;
            let after = match &report {
                Ok(r) => aqueduct_engine::after_sync(store.as_ref(), &conn, r.run_id, None)
                    .await
                    .ok(),
                Err(_) => None,
            };
            let scopes = manager
                .granted_scopes()
                .await
                .ok()
                .map(|g| g.to_scope_string());
            Outcome {
                name,
                base,
                report,
                after,
                scopes,
            }
        });
        sims.push(sim);
    }

    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.context("a source's sync task panicked")?);
    }
    results.sort_by_key(|o| o.name);
    // every source is in: one more round so the report counts all of them together
    let identity = aqueduct_engine::update_identity(store.as_ref(), ORG)
        .await
        .context("matching the demo's patients across sources")?;

    if json {
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|o| match &o.report {
                Ok(rep) => serde_json::json!({
                    "connection": o.name, "base_url": o.base, "granted_scopes": o.scopes, "report": rep,
                    "normalized": o.after.as_ref().map(|a| &a.normalized),
                    "findings": o.after.as_ref().map(|a| &a.findings),
                }),
                Err(e) => serde_json::json!({"connection": o.name, "base_url": o.base, "error": format!("{e:#}")}),
            })
            .collect();
        let out = serde_json::json!({"sources": out, "identity": identity});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for o in &results {
            match &o.report {
                Ok(rep) => {
                    crate::report::print_sync_report(o.name, &o.base, rep);
                    if let Some(s) = &o.scopes {
                        let shown: String = s.chars().take(120).collect();
                        println!(
                            "   SMART backend services, granted: {shown}{}",
                            if s.len() > 120 { "…" } else { "" }
                        );
                    }
                    if let Some(a) = &o.after {
                        crate::report::print_normalized(&a.normalized);
                        crate::report::print_findings(&a.findings);
                    }
                    println!();
                }
                Err(e) => println!("== {}  ({})\n   FAILED: {e:#}\n", o.name, o.base),
            }
        }
        crate::report::print_identity(&identity);
        println!();
        println!(
            "store: {store_location}  (inspect with `aqueduct status`, `aqueduct findings --org demo`)"
        );
    }
    if let Some(bind) = serve {
        let config = Arc::new(demo_config(store_location, &vault_b64, &registered)?);
        let (record, key) = aqueduct_serve::generate_key(
            ORG,
            aqueduct_store::ApiScope::Write,
            Some("aqueduct demo --serve".into()),
        )
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        store.create_api_key(&record).await?;
        let settings = aqueduct_serve::ServeSettings {
            bind,
            ..Default::default()
        };
        settings.check()?;
        let banner = vec![
            format!("  sign in with the API key {key}"),
            "  (organization demo, write scope; shown once). Ctrl-C stops the server and the simulators.".into(),
        ];
        crate::serve_cmd::run_server(store.clone(), config, settings, true, &banner).await?;
    }
    for sim in sims {
        sim.shutdown().await;
    }
    if results.iter().any(|o| o.report.is_err()) {
        anyhow::bail!("at least one source failed (see its report above)");
    }
    Ok(())
}

/// The demo keeps its own vault key beside the store (created once, owner-only), so its stored
/// tokens stay readable by later commands. Real deployments set `vault.key` instead.
fn demo_vault_key(store_location: &str) -> anyhow::Result<VaultKey> {
    if let Ok(k) = VaultKey::from_env() {
        return Ok(k);
    }
    let path = crate::demo_key::demo_key_path(store_location);
    if path.exists() {
        return VaultKey::from_file(&path).with_context(|| format!("reading {}", path.display()));
    }
    let key = VaultKey::generate()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(&path, key.to_base64().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// The configuration of the demo's sources (inline secrets: the demo's own throwaway keys),
/// so the engine in `aqueduct demo --serve` can sync them again when the dashboard asks.
fn demo_config(
    store_location: &str,
    vault_key: &str,
    sources: &[Registered],
) -> anyhow::Result<aqueduct_config::Config> {
    use toml::{Table, Value};
    let s = |v: &str| Value::String(v.to_string());
    let mut connections = Table::new();
    for r in sources {
        let mut auth = Table::new();
        auth.insert("method".into(), s("smart-backend"));
        auth.insert("client_id".into(), s(&r.client_id));
        auth.insert("algorithm".into(), s(r.alg));
        auth.insert("key_id".into(), s(r.key.kid()));
        auth.insert(
            "private_key".into(),
            Value::Table(Table::from_iter([(
                "value".to_string(),
                s(r.key.to_pkcs8_pem()),
            )])),
        );
        let mut c = Table::new();
        c.insert("base_url".into(), s(&r.base));
        c.insert("profile".into(), s(r.profile));
        c.insert("auth".into(), Value::Table(auth));
        c.insert(
            "overrides".into(),
            Value::Table(toml::from_str::<Table>(r.overrides)?),
        );
        connections.insert(r.connection.to_string(), Value::Table(c));
    }
    let mut org = Table::new();
    org.insert("display_name".into(), s("Aqueduct demo"));
    org.insert("connections".into(), Value::Table(connections));
    let mut root = Table::new();
    root.insert("allow_inline_secrets".into(), Value::Boolean(true));
    root.insert(
        "store".into(),
        Value::Table(Table::from_iter([(
            "location".to_string(),
            s(store_location),
        )])),
    );
    root.insert(
        "vault".into(),
        Value::Table(Table::from_iter([(
            "key".to_string(),
            Value::Table(Table::from_iter([("value".to_string(), s(vault_key))])),
        )])),
    );
    root.insert(
        "organizations".into(),
        Value::Table(Table::from_iter([(ORG.to_string(), Value::Table(org))])),
    );
    Ok(aqueduct_config::parse(
        &toml::to_string(&root)?,
        "aqueduct demo --serve",
    )?)
}
