//! `aqueduct bench bulk`: a Bulk Data `$export` of a large simulated population — about
//! 385,000 resources in ~200 gzip-encoded NDJSON files (~490 MB uncompressed) by default —
//! downloaded, decompressed, parsed and stored into SQLite (then PostgreSQL with
//! `--postgres`). The simulator runs as a separate process (`aqueduct sim`), so the CPU time
//! (user + sys of this process, the kernel's rusage counters read from /proc/self/stat) and
//! the peak RSS (VmHWM, reset between passes through /proc/self/clear_refs) are the client's
//! alone. Wall time includes the simulator generating the population and gzipping each file
//! on first request.
//!
//! Then the export of that SQLite store through the shipped views in their clean form
//! (`aqueduct export parquet --clean`; CSV in a build without the `parquet` feature): rows,
//! rows/s, CPU, peak RSS and each view's file size.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use aqueduct_bulk::{BulkExporter, BulkOptions, BulkReport, Level};
use aqueduct_client::{AccessTokenSource, ClientSecretGrant, FhirClient, VendorProfile};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization, RunOutcome};

const REFERENCE: &str = include_str!("../../aqueduct-sim/personalities/reference.toml");

#[derive(clap::Args)]
pub struct BenchBulkArgs {
    /// Patients in the simulated population.
    #[arg(long, default_value_t = 1000)]
    pub patients: usize,
    /// Mean resources per patient.
    #[arg(long, default_value_t = 385)]
    pub resources_per_patient: usize,
    /// Resources per NDJSON file (default: enough for about 200 files).
    #[arg(long)]
    pub file_max_resources: Option<usize>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also import into this PostgreSQL database (e.g. postgres://postgres@127.0.0.1:5432/test).
    #[arg(long)]
    pub postgres: Option<String>,
}

/// CPU seconds (user + sys) of this process so far.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command name (which may hold spaces) start at ") "
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn personality(file_max: usize) -> String {
    let mut out = String::new();
    for line in REFERENCE.lines() {
        let line = match line.split(" =").next().unwrap_or("") {
            "name" => "name = \"bench-bulk\"".to_string(),
            "bulk_file_max_resources" => format!("bulk_file_max_resources = {file_max}"),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

struct ChildSim(std::process::Child);

impl Drop for ChildSim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_sim(personality: &str, patients: usize, rpp: usize) -> anyhow::Result<(ChildSim, String)> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("locating the aqueduct binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["sim", "--listen", "127.0.0.1:0", "--seed", "42"])
        .args(["--personality", personality])
        .args(["--patients", &patients.to_string()])
        .args(["--resources-per-patient", &rpp.to_string()])
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

async fn pass(
    label: &str,
    location: &str,
    org: &str,
    base: &str,
    client: &FhirClient,
    auth: &Arc<dyn AccessTokenSource>,
    concurrency: usize,
) -> anyhow::Result<BulkReport> {
    let store = aqueduct_store::open(location).await?;
    let conn = ConnectionRef::new(org, "sim");
    store
        .upsert_organization(&Organization {
            name: org.into(),
            display_name: None,
        })
        .await?;
    store
        .upsert_connection(&ConnectionRecord {
            organization: org.into(),
            name: "sim".into(),
            base_url: base.to_string(),
            profile: "generic".into(),
        })
        .await?;
    let exporter = BulkExporter::new(
        store.clone(),
        client.clone(),
        auth.clone(),
        conn,
        BulkOptions {
            level: Level::System,
            concurrency,
            ..BulkOptions::default()
        },
    );
    reset_peak_rss();
    let cpu0 = cpu_secs().unwrap_or(0.0);
    let t0 = Instant::now();
    let report = exporter.run().await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs().unwrap_or(0.0) - cpu0;
    let mb = report.bytes_decoded as f64 / 1e6;
    println!("  {label}");
    println!("    outcome          {}", report.outcome.as_str());
    println!(
        "    resources        {} in {} files ({:.0} MB NDJSON, {:.0} MB gzip on the wire)",
        report.resources(),
        report.files,
        mb,
        report.bytes_received as f64 / 1e6
    );
    println!(
        "    wall time        {wall:.2} s ({:.0} MB/s of NDJSON, {:.0} resources/s)",
        mb / wall.max(1e-9),
        report.resources() as f64 / wall.max(1e-9)
    );
    println!("    CPU (user+sys)   {cpu:.2} s of this process");
    match crate::rss::peak_rss_mib() {
        Some(m) => println!("    peak RSS         {m:.0} MiB (VmHWM of this process)"),
        None => println!("    peak RSS         unavailable"),
    }
    Ok(report)
}

pub async fn run(args: BenchBulkArgs) -> anyhow::Result<ExitCode> {
    let total = args.patients * args.resources_per_patient;
    let file_max = args
        .file_max_resources
        .unwrap_or_else(|| (total / 180).max(1));
    let dir = tempfile::tempdir()?;
    let ppath = dir.path().join("bench-bulk.toml");
    std::fs::write(&ppath, personality(file_max))?;
    let (_child, base) = spawn_sim(
        ppath.to_str().context("temp path is not UTF-8")?,
        args.patients,
        args.resources_per_patient,
    )?;
    let profile = VendorProfile::resolve_with_toml(
        "generic",
        "[rate_limit]\nrequests_per_sec = 0.0\nmax_concurrency = 16\n",
    )?;
    let auth: Arc<dyn AccessTokenSource> = Arc::new(
        ClientSecretGrant::discover(
            &base,
            "sim-confidential-app",
            "sim-confidential-secret",
            "system/*.read",
        )
        .await?,
    );
    let client = FhirClient::new(url::Url::parse(&base)?, &profile, auth.clone())?;
    println!(
        "bench bulk: system $export of {} patients x ~{} resources, files of up to {file_max} resources, {} downloads at once (simulator in a separate process)",
        args.patients, args.resources_per_patient, args.concurrency
    );
    let sqlite = dir.path().join("bench.db");
    let r = pass(
        "SQLite",
        sqlite.to_str().context("temp path is not UTF-8")?,
        "bench",
        &base,
        &client,
        &auth,
        args.concurrency,
    )
    .await?;
    let mut ok = r.outcome == RunOutcome::Complete;
    export_pass(
        sqlite.to_str().context("temp path is not UTF-8")?,
        "bench",
        &dir.path().join("export"),
    )
    .await?;
    if let Some(pg) = &args.postgres {
        let org = format!("bench-bulk-{}", chrono::Utc::now().timestamp());
        let r = pass(
            "PostgreSQL",
            pg,
            &org,
            &base,
            &client,
            &auth,
            args.concurrency,
        )
        .await?;
        ok &= r.outcome == RunOutcome::Complete;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The clean views of the SQLite store into files, as `aqueduct export` writes them.
async fn export_pass(location: &str, org: &str, out: &std::path::Path) -> anyhow::Result<()> {
    use aqueduct_engine::export::{ExportOptions, Form, Format, export};
    let store = aqueduct_store::open(location).await?;
    let views = aqueduct_views::catalog::builtin()?;
    let format = if cfg!(feature = "parquet") {
        Format::Parquet
    } else {
        Format::Csv
    };
    let render = |r: &aqueduct_core::StoredResource,
                  base: Option<&str>,
                  rows: &[aqueduct_core::StoredNormalized],
                  out: &mut String| {
        aqueduct_serve::fhir::view::render_into(
            r,
            aqueduct_serve::fhir::view::View::Clean,
            base,
            rows,
            out,
        )
    };
    let opts = ExportOptions {
        organization: org.to_string(),
        format,
        form: Form::Clean,
        out: out.to_path_buf(),
        clean: Some(&render),
    };
    reset_peak_rss();
    let cpu0 = cpu_secs().unwrap_or(0.0);
    let report = export(store.as_ref(), &views, &opts).await?;
    let cpu = cpu_secs().unwrap_or(0.0) - cpu0;
    let rows = report.rows_written();
    let resources: u64 = report.partitions.iter().map(|p| p.state.resources).sum();
    let bytes: u64 = report.partitions.iter().map(|p| p.state.bytes).sum();
    println!(
        "  export of the clean views to {} ({} views)",
        format.extension(),
        views.len()
    );
    println!(
        "    rows             {rows} from {resources} resources in {:.2} s ({:.0} rows/s, {:.0} resources/s)",
        report.seconds,
        rows as f64 / report.seconds.max(1e-9),
        resources as f64 / report.seconds.max(1e-9)
    );
    println!("    CPU (user+sys)   {cpu:.2} s of this process");
    if let Some(m) = crate::rss::peak_rss_mib() {
        println!("    peak RSS         {m:.0} MiB (VmHWM of this process)");
    }
    println!("    files            {:.1} MB in all", bytes as f64 / 1e6);
    for p in &report.partitions {
        println!(
            "      {:<22} {:>9} rows {:>10.2} MB{}",
            p.view,
            p.state.rows,
            p.state.bytes as f64 / 1e6,
            if p.state.failed > 0 {
                format!("  ({} resources failed)", p.state.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
