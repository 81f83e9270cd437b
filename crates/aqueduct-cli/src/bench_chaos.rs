//! `aqueduct bench chaos`: a full sync killed with SIGKILL at random points, resumed each
//! time, then compared with an uninterrupted sync of the same simulated population.
//!
//! The simulator runs in this process; every interrupted sync is a child process
//! (`aqueduct bench chaos-child`) killed with `kill -9` after a random delay drawn from a
//! seeded generator, so a run is reproducible in its kill times. Checked at the end: the two
//! stores hold the same resources with the same bytes (SHA-256), the last run is complete,
//! and every killed run that had started is closed as failed ("interrupted"), never left
//! running or reported complete. Prints the figures; exits 1 when any check fails.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aqueduct_client::{ClientSecretGrant, FhirClient, VendorProfile};
use aqueduct_sim::{SimConfig, Simulator};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization, RunOutcome, Store};
use aqueduct_sync::{SyncMode, SyncOptions, Syncer};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// How long a killed child's lease and heartbeat count as alive: the next child waits this
/// long before it can resume.
const STALE_AFTER: Duration = Duration::from_millis(400);

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Patients in the simulated population.
    #[arg(long, default_value_t = 200)]
    pub patients: usize,
    /// Mean resources per patient.
    #[arg(long, default_value_t = 60)]
    pub resources_per_patient: usize,
    /// How many times the sync is killed before it may finish.
    #[arg(long, default_value_t = 50)]
    pub kills: usize,
    /// Seed of the kill times (and of the simulator's data).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct ChaosChildArgs {
    #[arg(long)]
    pub base: String,
    #[arg(long)]
    pub store: String,
}

fn profile() -> anyhow::Result<VendorProfile> {
    // small pages: many checkpoints to be killed between
    Ok(VendorProfile::resolve_with_toml(
        "generic",
        "[paging]\nmax_page_size = 20\n[rate_limit]\nrequests_per_sec = 0.0\nmax_concurrency = 8\n",
    )?)
}

async fn open_store(path: &str, base: &str) -> anyhow::Result<(Arc<dyn Store>, ConnectionRef)> {
    let store = aqueduct_store::open(path).await?;
    let conn = ConnectionRef::new("chaos", "sim");
    store
        .upsert_organization(&Organization {
            name: "chaos".into(),
            display_name: None,
        })
        .await?;
    store
        .upsert_connection(&ConnectionRecord {
            organization: "chaos".into(),
            name: "sim".into(),
            base_url: base.to_string(),
            profile: "generic".into(),
        })
        .await?;
    Ok((store, conn))
}

/// One full sync of the population into the store at `path`.
async fn sync_once(base: &str, path: &str) -> anyhow::Result<aqueduct_sync::SyncReport> {
    let (store, conn) = open_store(path, base).await?;
    let auth = ClientSecretGrant::discover(
        base,
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await?;
    let profile = profile()?;
    let client = FhirClient::new(url::Url::parse(base)?, &profile, Arc::new(auth))?;
    // per-type searches (as against most EHRs): many pages, and a reference-resolution
    // phase after each patient's searches for a kill to land in
    let options = SyncOptions {
        stale_run_after: STALE_AFTER,
        use_everything: false,
        ..Default::default()
    };
    let syncer = Syncer::new(store, client, conn, profile, options);
    let mut patients = syncer.discover_patients().await?;
    patients.sort();
    Ok(syncer.sync_patients(&patients, SyncMode::Full).await?)
}

/// The child: one sync, exit 0 when complete.
pub async fn run_child(args: ChaosChildArgs) -> anyhow::Result<ExitCode> {
    let r = sync_once(&args.base, &args.store).await?;
    Ok(if r.outcome == RunOutcome::Complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Every live resource of the connection: (type, id) → SHA-256 of its bytes.
async fn snapshot(
    store: &dyn Store,
    conn: &ConnectionRef,
) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    for tc in store.count_by_type(conn).await? {
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_resources(conn, &tc.resource_type, after.as_deref(), 500, false)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.logical_id.clone());
            for r in &page {
                out.insert(
                    (r.resource_type.clone(), r.logical_id.clone()),
                    hex::encode(Sha256::digest(&r.bytes)),
                );
            }
        }
    }
    Ok(out)
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: args.patients,
        seed: args.seed,
        resources_per_patient: args.resources_per_patient,
        ..Default::default()
    })
    .await?;
    let base = sim.base_url();
    let dir = tempfile::tempdir()?;
    let path = |name: &str| -> anyhow::Result<String> {
        Ok(dir
            .path()
            .join(name)
            .to_str()
            .context("temp path is not UTF-8")?
            .to_string())
    };
    println!(
        "chaos: {} patients × ~{} resources, {} kills, seed {}",
        args.patients, args.resources_per_patient, args.kills, args.seed
    );

    let started = Instant::now();
    let reference = sync_once(&base, &path("reference.db")?).await?;
    let uninterrupted = started.elapsed();
    println!(
        "  uninterrupted: {} in {:.1} s, {} requests, {} resources",
        reference.outcome.as_str(),
        uninterrupted.as_secs_f64(),
        reference.requests,
        reference.resources()
    );

    let chaos_db = path("chaos.db")?;
    let exe = std::env::current_exe().context("locating the aqueduct binary")?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let max_delay = uninterrupted.as_millis().clamp(100, 60_000) as u64;
    let mut killed = 0usize;
    let mut finished_early = 0usize;
    let chaos_started = Instant::now();
    for _ in 0..args.kills {
        let mut child = std::process::Command::new(&exe)
            .args([
                "bench",
                "chaos-child",
                "--base",
                &base,
                "--store",
                &chaos_db,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting a chaos child")?;
        let delay = Duration::from_millis(rng.random_range(20..=max_delay));
        tokio::time::sleep(delay).await;
        match child.try_wait()? {
            Some(_) => finished_early += 1,
            None => {
                child.kill()?; // SIGKILL: no destructor, no flush, no lease release
                killed += 1;
            }
        }
        let _ = child.wait();
        // the dead child's heartbeat and lease must age before the next one may resume
        tokio::time::sleep(STALE_AFTER + Duration::from_millis(150)).await;
    }
    let last = std::process::Command::new(&exe)
        .args([
            "bench",
            "chaos-child",
            "--base",
            &base,
            "--store",
            &chaos_db,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running the final chaos child")?;
    let chaos_time = chaos_started.elapsed();

    let (a_store, a_conn) = open_store(&path("reference.db")?, &base).await?;
    let (b_store, b_conn) = open_store(&chaos_db, &base).await?;
    let a = snapshot(a_store.as_ref(), &a_conn).await?;
    let b = snapshot(b_store.as_ref(), &b_conn).await?;
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    let differ = a
        .iter()
        .filter(|(k, h)| b.get(*k).is_some_and(|x| x != *h))
        .count();
    let runs = b_store.list_runs(&b_conn, 10_000).await?;
    let requests: u64 = {
        let mut n = 0;
        for r in &runs {
            n += b_store.run_request_stats(&b_conn, r.id).await?.requests;
        }
        n
    };
    let final_run = runs.first();
    let final_complete = final_run.is_some_and(|r| r.outcome == RunOutcome::Complete);
    let earlier = runs.iter().skip(1);
    let lying: Vec<_> = earlier
        .clone()
        .filter(|r| {
            !(r.outcome == RunOutcome::Failed
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("interrupted")))
                && r.outcome != RunOutcome::Complete
        })
        .map(|r| (r.id, r.outcome.as_str(), r.error.clone()))
        .collect();
    let closed_interrupted = earlier.filter(|r| r.outcome == RunOutcome::Failed).count();

    println!(
        "  chaos: {killed} killed, {finished_early} finished before their kill, then a final run: exit {}, {:.1} s in all",
        last.code().unwrap_or(-1),
        chaos_time.as_secs_f64()
    );
    println!(
        "  runs recorded {}: {closed_interrupted} closed as interrupted, last {}",
        runs.len(),
        final_run.map(|r| r.outcome.as_str()).unwrap_or("none")
    );
    println!(
        "  requests: {requests} over all runs vs {} uninterrupted ({:+.0} %)",
        reference.requests,
        (requests as f64 / reference.requests.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "  store: {} resources vs {} uninterrupted; missing {}, extra {}, different bytes {differ}",
        b.len(),
        a.len(),
        missing.len(),
        extra.len()
    );
    let identical = missing.is_empty() && extra.is_empty() && differ == 0;
    println!("  identical: {}", if identical { "yes" } else { "NO" });
    if !missing.is_empty() {
        println!(
            "  e.g. missing: {:?}",
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    let ok = identical && final_complete && lying.is_empty() && last.success();
    if !lying.is_empty() {
        println!("  runs whose outcome is not true: {lying:?}");
    }
    println!("  verdict: {}", if ok { "pass" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
