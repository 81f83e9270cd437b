//! `aqueduct demo`: several simulated sources in-process (an Epic-like EHR that throttles, an
//! Oracle Health-like EHR whose CapabilityStatement overpromises, a payer Patient Access API
//! with `$everything`), registered as connections of one organization, authorized with
//! client_credentials, their populations discovered and synced into the store, then a
//! per-source report: resources by type, requests, retries, throttling, partial types and why.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use aqueduct_client::{ClientCredentials, FhirClient, VendorProfile};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
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
}

const SOURCES: &[Source] = &[
    Source {
        connection: "epic-main",
        personality: "epic",
        profile: "epic",
        overrides: "[http.extra_headers]\n\"Epic-Client-ID\" = \"demo-client\"\n",
        faults: &["rate-limit-429@0.05"],
    },
    Source {
        connection: "cerner-north",
        personality: "cerner",
        profile: "cerner",
        overrides: "",
        faults: &[],
    },
    Source {
        connection: "payer-bluebird",
        personality: "payer",
        profile: "cms-payer",
        overrides: "[capabilities]\neverything = true\n[paging]\nmax_page_size = 500\n",
        faults: &[],
    },
];

pub async fn run_demo(store_location: &str, patients: usize, json: bool) -> anyhow::Result<()> {
    let store = aqueduct_store::open(store_location)
        .await
        .with_context(|| format!("opening the store at {store_location}"))?;
    store
        .upsert_organization(&Organization {
            name: ORG.into(),
            display_name: Some("Aqueduct demo".into()),
        })
        .await?;

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
        store
            .upsert_connection(&ConnectionRecord {
                organization: ORG.into(),
                name: src.connection.into(),
                base_url: base.clone(),
                profile: src.profile.into(),
            })
            .await?;
        let profile = VendorProfile::resolve_with_toml(src.profile, src.overrides)?;
        let auth = ClientCredentials::discover(
            &base,
            "sim-confidential-app",
            "sim-confidential-secret",
            "system/*.read",
        )
        .await
        .with_context(|| format!("discovering the token endpoint of {base}"))?;
        let client = FhirClient::new(url::Url::parse(&base)?, &profile, Arc::new(auth))?;
        let syncer = Syncer::new(
            store.clone(),
            client,
            ConnectionRef::new(ORG, src.connection),
            profile,
            SyncOptions::default(),
        );
        let name = src.connection;
        tasks.spawn(async move {
            let result: anyhow::Result<SyncReport> = async {
                let ids = syncer
                    .discover_patients()
                    .await
                    .context("discovering patients")?;
                Ok(syncer.sync_patients(&ids, SyncMode::Full).await?)
            }
            .await;
            (name, base, result)
        });
        sims.push(sim);
    }

    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.context("a source's sync task panicked")?);
    }
    results.sort_by_key(|(name, _, _)| *name);

    if json {
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, base, r)| match r {
                Ok(rep) => serde_json::json!({"connection": name, "base_url": base, "report": rep}),
                Err(e) => serde_json::json!({"connection": name, "base_url": base, "error": format!("{e:#}")}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (name, base, r) in &results {
            print_report(name, base, r);
        }
        println!("store: {store_location}");
    }
    for sim in sims {
        sim.shutdown().await;
    }
    Ok(())
}

fn print_report(name: &str, base: &str, r: &anyhow::Result<SyncReport>) {
    println!("== {name}  ({base})");
    let rep = match r {
        Ok(rep) => rep,
        Err(e) => {
            println!("   FAILED: {e:#}\n");
            return;
        }
    };
    println!(
        "   outcome {}  |  {} patients ({} complete)  |  {:.1} s",
        rep.outcome.as_str(),
        rep.patients,
        rep.patients_complete,
        rep.duration.as_secs_f64()
    );
    println!(
        "   requests {}  retries {}  throttled {}  failed attempts {}  {:.1} MB",
        rep.requests,
        rep.retries,
        rep.throttled,
        rep.failed_requests,
        rep.bytes as f64 / 1e6
    );
    println!(
        "   resources {} ({} referenced, {} external references not followed)",
        rep.resources(),
        rep.referenced_fetched,
        rep.external_references
    );
    for (t, c) in &rep.by_type {
        let mut extra = String::new();
        if c.duplicates > 0 {
            extra.push_str(&format!("  duplicates {}", c.duplicates));
        }
        if c.invalid > 0 {
            extra.push_str(&format!("  invalid {}", c.invalid));
        }
        if c.tombstoned > 0 {
            extra.push_str(&format!("  tombstoned {}", c.tombstoned));
        }
        println!("     {t:<22} {:>7}{extra}", c.fetched);
    }
    if !rep.skipped_types.is_empty() {
        println!(
            "   not offered by the server: {}",
            rep.skipped_types.join(", ")
        );
    }
    let mut missing: BTreeMap<(String, &str), (usize, String)> = BTreeMap::new();
    for p in &rep.partial {
        let e = missing
            .entry((p.resource_type.clone(), p.reason.as_str()))
            .or_insert((0, p.detail.clone()));
        e.0 += 1;
    }
    for ((t, reason), (n, detail)) in &missing {
        let detail: String = detail.chars().take(140).collect();
        println!("   PARTIAL {t}: {reason} for {n} patient(s) — {detail}");
    }
    if let Some(e) = &rep.error {
        println!("   error: {e}");
    }
    println!();
}
