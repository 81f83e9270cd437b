//! `aqueduct bench sync`: end-to-end sync throughput against an in-process simulator over real
//! HTTP on loopback, into a SQLite store in a temporary directory.
//!
//! Prints resources/s, requests per patient, peak RSS (VmHWM, which includes the simulator
//! running in the same process) and, with a rate limit, the total time against the floor of
//! requests / R and the number of 429s the server sent.

use std::sync::Arc;
use std::time::Instant;

pub use crate::rss::{peak_rss_mib, rss_mib};

use anyhow::Context;
use aqueduct_client::{ClientSecretGrant, FhirClient, VendorProfile};
use aqueduct_sim::{SimConfig, Simulator};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization};
use aqueduct_sync::{SyncMode, SyncOptions, Syncer};

/// A fresh SQLite store in `path` with the benchmark's organization and connection registered.
pub(crate) async fn bench_store(
    path: &std::path::Path,
    base: &str,
) -> anyhow::Result<(Arc<dyn aqueduct_store::Store>, ConnectionRef)> {
    let store = aqueduct_store::open(path.to_str().context("temp path is not UTF-8")?).await?;
    let conn = ConnectionRef::new("bench", "sim");
    store
        .upsert_organization(&Organization {
            name: "bench".into(),
            display_name: None,
        })
        .await?;
    store
        .upsert_connection(&ConnectionRecord {
            organization: "bench".into(),
            name: "sim".into(),
            base_url: base.to_string(),
            profile: "hapi".into(),
        })
        .await?;
    Ok((store, conn))
}

/// Size of the extra large patient added to unthrottled runs (a long history).
const LARGE_PATIENT: usize = 50_000;

/// The simulator as a child process (`aqueduct sim`), so that this process's peak RSS is the
/// sync's alone.
struct ChildSim(std::process::Child);

impl Drop for ChildSim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_sim(patients: usize, resources_per_patient: usize) -> anyhow::Result<(ChildSim, String)> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("locating the aqueduct binary")?;
    let mut child = std::process::Command::new(exe)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--personality",
            "reference",
            "--seed",
            "42",
        ])
        .args(["--patients", &patients.to_string()])
        .args([
            "--resources-per-patient",
            &resources_per_patient.to_string(),
        ])
        .args(["--large-patient", &LARGE_PATIENT.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting `aqueduct sim`")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .context("the simulator exited before printing its URL")??;
        if let Some(i) = line.find("http://") {
            break line[i..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((ChildSim(child), base))
}

/// Throughput and the sync's own memory, with the simulator in another process.
async fn separate_process(patients: usize, resources_per_patient: usize) -> anyhow::Result<()> {
    let (_child, base) = spawn_sim(patients, resources_per_patient)?;
    let dir = tempfile::tempdir()?;
    let store = aqueduct_store::open(
        dir.path()
            .join("bench.db")
            .to_str()
            .context("temp path is not UTF-8")?,
    )
    .await?;
    let conn = ConnectionRef::new("bench", "sim");
    let profile = VendorProfile::resolve_with_toml(
        "hapi",
        "[paging]\nmax_page_size = 1000\n[rate_limit]\nrequests_per_sec = 0.0\nmax_concurrency = 16\n",
    )?;
    let auth = ClientSecretGrant::discover(
        &base,
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await?;
    let client = FhirClient::new(url::Url::parse(&base)?, &profile, Arc::new(auth))?;
    let options = SyncOptions {
        patient_concurrency: 8,
        type_concurrency: 4,
        reference_depth: 1,
        ..Default::default()
    };
    let syncer = Syncer::new(store.clone(), client, conn, profile, options);
    let ids = syncer.discover_patients().await?;
    let baseline = rss_mib().unwrap_or(0.0);
    let started = Instant::now();
    let report = syncer.sync_patients(&ids, SyncMode::Full).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let resources = report.resources();
    println!(
        "bench sync (simulator in a separate process): {} patients x ~{resources_per_patient} + 1 patient of ~{LARGE_PATIENT}",
        ids.len().saturating_sub(1)
    );
    println!("  outcome            {}", report.outcome.as_str());
    println!(
        "  resources          {resources} in {elapsed:.2} s = {:.0} resources/s end to end into SQLite",
        resources as f64 / elapsed.max(1e-9)
    );
    println!(
        "  requests           {} ({:.1} per patient), {} retries",
        report.requests,
        report.requests as f64 / ids.len().max(1) as f64,
        report.retries
    );
    println!(
        "  peak RSS           {:.0} MiB for the sync process alone ({baseline:.0} MiB before the sync started)",
        peak_rss_mib().unwrap_or(0.0)
    );
    Ok(())
}

pub async fn run_bench_sync(
    patients: usize,
    resources_per_patient: usize,
    rate_limit: Option<f64>,
    separate_sim: bool,
) -> anyhow::Result<()> {
    if separate_sim {
        anyhow::ensure!(
            rate_limit.is_none(),
            "--separate-sim measures throughput and memory; drop --rate-limit"
        );
        return separate_process(patients, resources_per_patient).await;
    }
    let large = if rate_limit.is_none() {
        vec![LARGE_PATIENT]
    } else {
        vec![]
    };
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients,
        seed: 42,
        resources_per_patient,
        large_patients: large.clone(),
        rate_limit_per_sec: rate_limit,
        ..Default::default()
    })
    .await
    .context("starting the simulator")?;
    let base = sim.base_url();
    let dir = tempfile::tempdir()?;
    let store_path = dir.path().join("bench.db");
    let (store, conn) = bench_store(&store_path, &base).await?;

    // The server supports $everything with pages of up to 1,000: the profile says so; with a
    // rate limit, the profile's pace is set to it (what an institution override would do).
    let mut overrides = String::from("[paging]\nmax_page_size = 1000\n");
    if let Some(r) = rate_limit {
        overrides.push_str(&format!(
            "[rate_limit]\nrequests_per_sec = {r}\nburst = 1\n"
        ));
    } else {
        overrides.push_str("[rate_limit]\nrequests_per_sec = 0.0\nmax_concurrency = 16\n");
    }
    let profile = VendorProfile::resolve_with_toml("hapi", &overrides)?;
    let auth = ClientSecretGrant::discover(
        &base,
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await?;
    let client = FhirClient::new(url::Url::parse(&base)?, &profile, Arc::new(auth))?;
    let options = SyncOptions {
        patient_concurrency: 8,
        type_concurrency: 4,
        reference_depth: 1,
        ..Default::default()
    };
    let syncer = Syncer::new(store.clone(), client, conn.clone(), profile, options);
    let ids = sim.patient_ids();
    // This also makes the simulator generate every record now, so the RSS measured here is
    // (about) the simulator's share.
    let expected: usize = ids.iter().map(|p| sim.expected_resource_count(p)).sum();
    let baseline = rss_mib();

    let started = Instant::now();
    let report = syncer.sync_patients(&ids, SyncMode::Full).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let resources = report.resources();
    let stats = sim.stats();

    println!(
        "bench sync: {} patients x ~{resources_per_patient} resources{}",
        patients,
        if large.is_empty() {
            String::new()
        } else {
            format!(" + 1 patient of ~{LARGE_PATIENT}")
        }
    );
    println!("  outcome            {}", report.outcome.as_str());
    println!(
        "  resources          {resources} stored: {} from patient searches (simulator compartments hold {expected}) + {} referenced",
        resources - report.referenced_fetched,
        report.referenced_fetched
    );
    println!("  duration           {elapsed:.2} s");
    println!(
        "  throughput         {:.0} resources/s end to end into SQLite",
        resources as f64 / elapsed.max(1e-9)
    );
    println!(
        "  requests           {} ({:.1} per patient), {} retries",
        report.requests,
        report.requests as f64 / ids.len().max(1) as f64,
        report.retries
    );
    if let Some(r) = rate_limit {
        let floor = report.requests as f64 / r;
        println!(
            "  rate limit         {r}/s: total {elapsed:.2} s vs requests/R = {floor:.2} s ({:.0} %)",
            100.0 * elapsed / floor.max(1e-9)
        );
        println!(
            "  throttled          {} 429s from the server, {} throttled answers seen by the client",
            stats.rate_limited, report.throttled
        );
    }
    match peak_rss_mib() {
        Some(m) => println!(
            "  peak RSS           {m:.0} MiB (VmHWM, simulator included; {:.0} MiB before the sync started)",
            baseline.unwrap_or(0.0)
        ),
        None => println!("  peak RSS           unavailable (no /proc/self/status)"),
    }
    if !report.partial.is_empty() {
        println!(
            "  partial            {:?}",
            report.partial.iter().take(5).collect::<Vec<_>>()
        );
    }
    if let Some(r) = rate_limit {
        unaware_pass(&sim, &base, r).await?;
    }
    sim.shutdown().await;
    Ok(())
}

/// The same population synced by a client that does not know the server's limit (its
/// profile paces at 4R): the server's 429s + Retry-After and the adaptive concurrency do the
/// work. Into a fresh store, with a fresh limiter.
async fn unaware_pass(sim: &aqueduct_sim::SimServer, base: &str, r: f64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench-unaware.db");
    let (store, conn) = bench_store(&path, base).await?;
    let overrides = format!(
        "[paging]\nmax_page_size = 1000\n[rate_limit]\nrequests_per_sec = {}\n",
        r * 4.0
    );
    let profile = VendorProfile::resolve_with_toml("hapi", &overrides)?;
    let auth = ClientSecretGrant::discover(
        base,
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await?;
    let client = FhirClient::builder(url::Url::parse(base)?, &profile)
        .auth(Arc::new(auth))
        .limiter_registry(Arc::new(aqueduct_client::LimiterRegistry::new()))
        .build()?;
    let syncer = Syncer::new(
        store,
        client,
        conn,
        profile,
        SyncOptions {
            patient_concurrency: 8,
            ..Default::default()
        },
    );
    let before = sim.stats().rate_limited;
    let started = Instant::now();
    let report = syncer
        .sync_patients(&sim.patient_ids(), SyncMode::Full)
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let floor = report.requests as f64 / r;
    println!(
        "  unaware client     profile paced at {:.0}/s against a server limited to {r}/s:",
        r * 4.0
    );
    println!(
        "                     outcome {}, {} resources, {elapsed:.2} s vs requests/R = {floor:.2} s, {} 429s, {} retries",
        report.outcome.as_str(),
        report.resources(),
        sim.stats().rate_limited - before,
        report.retries
    );
    Ok(())
}
