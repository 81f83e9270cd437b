//! `aqueduct bench store`: raw-resource write throughput, first insert versus re-upsert of
//! unchanged resources, on SQLite and (with --postgres) PostgreSQL, with peak memory.
//!
//! The workload is realistic FHIR JSON of mixed types, 0.5–5 KB each, written in batches the
//! size a sync writes (one search page), so the figures are what a sync would see.

use std::process::ExitCode;
use std::time::Instant;

use aqueduct_store::{ConnectionRef, ParseStatus, RawResource, Store};
use chrono::Utc;
use clap::Args;
use rand::{Rng, SeedableRng};

#[derive(Args)]
pub struct BenchStoreArgs {
    /// Resources to write.
    #[arg(long, default_value_t = 200_000)]
    resources: usize,
    /// Resources per transaction (a search page).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Also measure this PostgreSQL server (e.g. postgres://postgres@127.0.0.1/test).
    #[arg(long)]
    postgres: Option<String>,
    /// Directory for the SQLite file (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

pub async fn run(args: BenchStoreArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("bench-{}.db", std::process::id()));
    println!(
        "workload: {} resources, {} per batch, mixed types 0.5-5 KB",
        args.resources, args.batch
    );
    let sqlite = aqueduct_store::open(&path.display().to_string()).await?;
    measure("sqlite", sqlite.as_ref(), &args).await?;
    drop(sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Some(url) = &args.postgres {
        let pg = aqueduct_store::open(url).await?;
        measure("postgres", pg.as_ref(), &args).await?;
    }
    println!("peak RSS of the whole run: {:.1} MB", peak_rss_mb());
    Ok(ExitCode::SUCCESS)
}

async fn measure(name: &str, store: &dyn Store, args: &BenchStoreArgs) -> anyhow::Result<()> {
    // A fresh organization per run, so repeated runs against PostgreSQL measure first inserts.
    let conn = ConnectionRef::new(
        format!(
            "bench-{}-{}",
            std::process::id(),
            Utc::now().timestamp_millis()
        ),
        "src",
    );
    let mut bytes_total = 0usize;
    // Only the store calls are timed: generating the workload is not the store's cost.
    let mut insert = std::time::Duration::ZERO;
    let mut rss_after_first_batch = 0.0;
    for (i, start) in (0..args.resources).step_by(args.batch).enumerate() {
        let batch = make_batch(start, args.batch.min(args.resources - start));
        bytes_total += batch.iter().map(|r| r.bytes.len()).sum::<usize>();
        let t = Instant::now();
        store.write_resources(&conn, &batch).await?;
        insert += t.elapsed();
        if i == 0 {
            rss_after_first_batch = current_rss_mb();
        }
    }
    let rss_after_insert = current_rss_mb();
    let mut upsert = std::time::Duration::ZERO;
    let mut unchanged = 0;
    for start in (0..args.resources).step_by(args.batch) {
        let batch = make_batch(start, args.batch.min(args.resources - start));
        let t = Instant::now();
        unchanged += store.write_resources(&conn, &batch).await?.unchanged;
        upsert += t.elapsed();
    }
    let n = args.resources as f64;
    println!("{name}:");
    println!(
        "  first insert      {:>9.0} resources/s  ({:.1} MB/s, {:.2} s, avg {:.0} B)",
        n / insert.as_secs_f64(),
        bytes_total as f64 / 1e6 / insert.as_secs_f64(),
        insert.as_secs_f64(),
        bytes_total as f64 / n
    );
    println!(
        "  unchanged upsert  {:>9.0} resources/s  ({:.2} s, {} recognised unchanged, {:.1}x faster)",
        n / upsert.as_secs_f64(),
        upsert.as_secs_f64(),
        unchanged,
        insert.as_secs_f64() / upsert.as_secs_f64()
    );
    println!(
        "  RSS after first batch {rss_after_first_batch:.1} MB, after all inserts {rss_after_insert:.1} MB (bounded: independent of the count)"
    );
    Ok(())
}

const TYPES: &[&str] = &[
    "Observation",
    "Condition",
    "MedicationRequest",
    "Encounter",
    "Procedure",
    "DiagnosticReport",
    "DocumentReference",
];

/// Deterministic per index, so the re-upsert pass produces byte-identical resources.
fn make_batch(start: usize, len: usize) -> Vec<RawResource> {
    (start..start + len).map(make_resource).collect()
}

fn make_resource(i: usize) -> RawResource {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
    let rtype = TYPES[i % TYPES.len()];
    let id = format!("{}-{i}", rtype.to_lowercase());
    let target = rng.random_range(500..5000usize);
    let mut body = format!(
        r#"{{"resourceType":"{rtype}","id":"{id}","meta":{{"versionId":"1","lastUpdated":"2026-03-0{}T10:00:00Z"}},"status":"final","subject":{{"reference":"Patient/p{}"}},"code":{{"coding":[{{"system":"http://loinc.org","code":"{}-{}","display":"Synthetic measurement"}}],"text":"Synthetic measurement"}}"#,
        1 + i % 9,
        i / 300,
        1000 + i % 9000,
        i % 10
    );
    let mut n = 0;
    if body.len() < target {
        body.push_str(r#","note":["#);
        while body.len() < target {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"text":"Clinical note segment {n} for {id}: patient reports stable symptoms, plan unchanged."}}"#));
            n += 1;
        }
        body.push(']');
    }
    body.push('}');
    RawResource {
        resource_type: rtype.to_string(),
        logical_id: id,
        version_id: Some("1".into()),
        last_updated: Some("2026-03-01T10:00:00Z".into()),
        source_url: format!("https://ehr.example/fhir/{rtype}?patient=p{}", i / 300),
        patient_id: Some(format!("p{}", i / 300)),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: body.into_bytes(),
    }
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
}

pub fn peak_rss_mb() -> f64 {
    status_kb("VmHWM:") / 1024.0
}

pub fn current_rss_mb() -> f64 {
    status_kb("VmRSS:") / 1024.0
}
