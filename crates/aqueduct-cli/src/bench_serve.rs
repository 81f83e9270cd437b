//! `aqueduct bench serve`: the FHIR facade and the API under load, over real HTTP on loopback.
//!
//! A simulated population is synced into a SQLite store in a temporary directory, the server
//! is started on it (audit log on: every read is committed before it is answered), and
//! `--concurrency` client tasks in the same process send requests for `--seconds` per
//! scenario. The clients share the machine with the server, so the figures are a floor for a
//! server with the machine to itself. Prints requests/s, P50/P95/P99 latency, errors, the
//! CPU time per request of the whole process (server and clients: comparable between two
//! versions even when other work shares the machine) and the process's peak RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use aqueduct_client::{ClientSecretGrant, FhirClient, VendorProfile};
use aqueduct_sim::{SimConfig, Simulator};
use aqueduct_store::ApiScope;
use aqueduct_sync::{SyncMode, SyncOptions, Syncer};
use clap::Args;

use crate::rss::{cpu_seconds, peak_rss_mib, rss_mib};

#[derive(Args)]
pub struct BenchServeArgs {
    /// Patients in the simulated population.
    #[arg(long, default_value_t = 200)]
    patients: usize,
    /// Mean resources per patient (the `$everything` scenario reads whole records of this size).
    #[arg(long, default_value_t = 300)]
    resources_per_patient: usize,
    /// Client tasks sending requests at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Only the scenarios whose name contains this (e.g. `everything`).
    #[arg(long)]
    only: Option<String>,
}

struct Scenario {
    name: &'static str,
    /// Builds the path of the n-th request.
    path: Box<dyn Fn(usize) -> String + Send + Sync>,
}

pub async fn run(args: BenchServeArgs) -> anyhow::Result<()> {
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: args.patients,
        seed: 42,
        resources_per_patient: args.resources_per_patient,
        ..Default::default()
    })
    .await
    .context("starting the simulator")?;
    let base = sim.base_url();
    let dir = tempfile::tempdir()?;
    let (store, conn) = crate::bench_sync::bench_store(&dir.path().join("bench.db"), &base).await?;
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
    let syncer = Syncer::new(
        store.clone(),
        client,
        conn.clone(),
        profile,
        SyncOptions {
            patient_concurrency: 8,
            type_concurrency: 4,
            reference_depth: 1,
            ..Default::default()
        },
    );
    let ids = sim.patient_ids();
    let report = syncer.sync_patients(&ids, SyncMode::Full).await?;
    let held: u64 = store
        .count_by_type(&conn)
        .await?
        .iter()
        .map(|t| t.live)
        .sum();
    let observations: Vec<String> = store
        .list_resources(&conn, "Observation", None, 20_000, false)
        .await?
        .into_iter()
        .map(|r| r.logical_id)
        .collect();
    anyhow::ensure!(
        !observations.is_empty(),
        "the synced store holds no Observation"
    );
    let record_sizes: Vec<usize> = {
        let mut v = Vec::new();
        for p in ids.iter().take(20) {
            v.push(store.list_patient_resources(&conn, p, None).await?.len());
        }
        v
    };

    let (key_record, key) = aqueduct_serve::generate_key("bench", ApiScope::Read, None)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    store.create_api_key(&key_record).await?;
    let settings = aqueduct_serve::ServeSettings::default();
    let state =
        aqueduct_serve::AppState::new(store.clone(), Arc::new(Default::default()), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aqueduct_serve::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let rss_before = rss_mib().unwrap_or(0.0);

    println!(
        "bench serve: {} patients, {held} resources in SQLite (sync {}), records of {}..{} resources; {} clients x {} s per scenario, audit log on",
        ids.len(),
        report.outcome.as_str(),
        record_sizes.iter().min().unwrap_or(&0),
        record_sizes.iter().max().unwrap_or(&0),
        args.concurrency,
        args.seconds
    );
    let ids = Arc::new(ids);
    let obs = Arc::new(observations);
    let scenarios = vec![
        Scenario {
            name: "facade read Observation/{id}",
            path: Box::new({
                let obs = Arc::clone(&obs);
                move |n| {
                    format!(
                        "/fhir/bench/Observation/sim.{}",
                        obs[(n * 7919) % obs.len()]
                    )
                }
            }),
        },
        Scenario {
            name: "facade raw read Observation/{id}",
            path: Box::new({
                let obs = Arc::clone(&obs);
                move |n| {
                    format!(
                        "/fhir/bench/raw/Observation/sim.{}",
                        obs[(n * 7919) % obs.len()]
                    )
                }
            }),
        },
        Scenario {
            name: "facade Observation?patient=&_count=20",
            path: Box::new({
                let ids = Arc::clone(&ids);
                move |n| {
                    format!(
                        "/fhir/bench/Observation?patient=sim.{}&_count=20",
                        ids[(n * 31) % ids.len()]
                    )
                }
            }),
        },
        Scenario {
            name: "facade Patient/{id}/$everything",
            path: Box::new({
                let ids = Arc::clone(&ids);
                move |n| {
                    format!(
                        "/fhir/bench/Patient/sim.{}/$everything?_count=1000",
                        ids[(n * 31) % ids.len()]
                    )
                }
            }),
        },
        Scenario {
            name: "facade raw Patient/{id}/$everything",
            path: Box::new({
                let ids = Arc::clone(&ids);
                move |n| {
                    format!(
                        "/fhir/bench/raw/Patient/sim.{}/$everything?_count=1000",
                        ids[(n * 31) % ids.len()]
                    )
                }
            }),
        },
        Scenario {
            name: "API GET /api/v1/connections",
            path: Box::new(|_| "/api/v1/connections".to_string()),
        },
        Scenario {
            name: "API GET /api/v1/connections/sim/runs",
            path: Box::new(|_| "/api/v1/connections/sim/runs".to_string()),
        },
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    println!(
        "  {:<40} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}",
        "scenario", "req/s", "P50 ms", "P95 ms", "P99 ms", "errors", "CPU us/req"
    );
    for sc in scenarios {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !sc.name.contains(o.as_str()))
        {
            continue;
        }
        let sc = Arc::new(sc);
        let counter = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let cpu_before = cpu_seconds();
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let (sc, counter, errors, http, key) = (
                Arc::clone(&sc),
                Arc::clone(&counter),
                Arc::clone(&errors),
                http.clone(),
                key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                    let url = format!("http://{addr}{}", (sc.path)(n));
                    let t = Instant::now();
                    let ok = match http.get(&url).bearer_auth(&key).send().await {
                        Ok(r) => {
                            let good = r.status().is_success();
                            good && r.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    lat.push(t.elapsed().as_micros() as u64);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_per_request = match (cpu_before, cpu_seconds()) {
            (Some(a), Some(b)) if !lat.is_empty() => {
                format!("{:.0}", (b - a) * 1e6 / lat.len() as f64)
            }
            _ => "-".to_string(),
        };
        lat.sort_unstable();
        let q = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map(|us| *us as f64 / 1000.0)
                .unwrap_or(0.0)
        };
        println!(
            "  {:<40} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>10}",
            sc.name,
            lat.len() as f64 / elapsed,
            q(0.50),
            q(0.95),
            q(0.99),
            errors.load(Ordering::Relaxed),
            cpu_per_request
        );
    }
    let audited = store.list_access("bench", None, None, 1).await?;
    println!(
        "  audit log          {} reads recorded",
        audited.first().map(|e| e.id).unwrap_or(0)
    );
    println!(
        "  memory             {:.0} MiB RSS before the load, peak {:.0} MiB (server, clients and simulator in one process)",
        rss_before,
        peak_rss_mib().unwrap_or(0.0)
    );
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
