//! `aqueduct`: the one binary. This crate parses arguments, prints, and calls the library
//! crates; the use cases live in `aqueduct-engine` (sync a connection, refresh requests,
//! schedules) and the work in the layers below it, so this crate reads as a table of contents
//! and `main.rs` only calls [`main`]. Command-line code lives here and nowhere else: the
//! `*_cli.rs` modules are the commands of the hl7, monitor, normalize and sim crates.
//!
//! The `simulator` feature (on by default) carries the EHR simulator and what needs it: `demo`,
//! `sim` and the benchmarks that sync from it. A deployment build without it
//! (`--no-default-features`) ships no simulator code and none of its test keys.

#[cfg(feature = "simulator")]
pub mod bench_bulk;
#[cfg(feature = "simulator")]
pub mod bench_chaos;
pub mod bench_match;
#[cfg(feature = "simulator")]
pub mod bench_serve;
pub mod bench_store;
#[cfg(feature = "simulator")]
pub mod bench_sync;
pub mod bulk_cmd;
pub mod config_cmd;
pub mod connect;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod demo_key;
pub mod doctor_cmd;
pub mod events_cmd;
pub mod export_cmd;
pub mod hl7_cli;
pub mod keys;
pub mod match_cmd;
pub mod monitor_cli;
pub mod monitor_cmd;
pub mod normalize_cli;
pub mod normalize_cmd;
pub mod report;
pub mod rss;
pub mod run_cmd;
pub mod serve_cmd;
#[cfg(feature = "simulator")]
pub mod sim_cli;
pub mod status;
pub mod sync_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aqueduct", version, about = "FHIR integration engine: pull whole patient records out of many EHRs and payer APIs, honestly.", long_about = None)]
struct Cli {
    /// Config file (default ./aqueduct.toml).
    #[arg(long, global = true, env = "AQUEDUCT_CONFIG")]
    config: Option<PathBuf>,
    /// Store location: a SQLite file path or a postgres:// URL (overrides the config file).
    #[arg(long, global = true, env = "AQUEDUCT_STORE")]
    store: Option<String>,
    /// More logging (-v info, -vv debug). Logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job, on the embedded default: start simulated EHRs and a payer in-process,
    /// authorize them with SMART, sync a population into the store, report per source.
    #[cfg(feature = "simulator")]
    Demo(DemoArgs),
    /// Sync one configured connection (whole records, checkpointed, every request in the
    /// ledger); exits 0 when complete, 2 when partial, 1 when failed.
    Sync(sync_cmd::SyncArgs),
    /// Tables for the warehouse: `export parquet|csv --org ORG --out DIR` writes the store's
    /// resources through SQL on FHIR views, one file per view and source, incrementally.
    Export(export_cmd::ExportArgs),
    /// FHIR Bulk Data: `bulk export CONNECTION` imports a `$export` into the store
    /// (resumable; exits 0 complete, 2 partial, 1 failed).
    #[command(subcommand)]
    Bulk(bulk_cmd::BulkCommand),
    /// The engine in the foreground: connection schedules and refresh requests (HL7 events,
    /// the API) until stopped; SIGTERM checkpoints the work in flight and exits 0.
    Run(run_cmd::RunArgs),
    /// The REST API (`/api/v1`) and the read-only FHIR R4 facade (`/fhir/{org}/`), with
    /// the engine running the syncs and refresh requests they raise (unless --no-engine).
    Serve(serve_cmd::ServeArgs),
    /// API keys for `serve`, each bound to one organization (shown once, stored hashed).
    #[command(subcommand, name = "api-keys")]
    ApiKeys(serve_cmd::ApiKeysCommand),
    /// Who read which patient's data through the API and the facade.
    Audit(serve_cmd::AuditArgs),
    /// Validate and inspect the configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Per organization and connection: resources by type, last sync and its outcome, errors.
    Status(status::StatusArgs),
    /// SMART standalone launch for a connection: prints the authorization URL, listens on a
    /// loopback redirect URI, completes the exchange and stores the tokens (encrypted).
    Connect(connect::ConnectArgs),
    /// Key pairs for SMART backend services (generate, print the public JWKS) and vault key
    /// rotation.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Probe what a live FHIR endpoint really supports; write an observed profile.
    Doctor(doctor_cmd::DoctorArgs),
    /// Re-derive normalized data from the raw archive (after a mapping or rule change);
    /// nothing is refetched.
    Normalize(normalize_cmd::NormalizeCmd),
    /// The terminology review queue: codes no rule resolved, and the mappings that fix them.
    Codes(normalize_cmd::CodesCmd),
    /// Findings, metrics and alerts from the sync ledger.
    #[command(flatten)]
    Monitor(monitor_cmd::MonitorCommand),
    /// Patient identity: the evidence of a pair, the review queue and decisions.
    #[command(subcommand, name = "match")]
    Match(match_cmd::MatchCommand),
    /// HL7 v2 over MLLP: a durable listener and a sender.
    #[command(subcommand)]
    Hl7(events_cmd::Hl7Command),
    /// Run the EHR simulator by hand: a FHIR R4 server with a vendor personality, a SMART
    /// authorization server, Bulk export and injectable faults.
    #[cfg(feature = "simulator")]
    Sim(sim_cli::SimArgs),
    /// Measure the store and the sync engine, printing figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Insert/upsert throughput of raw resources into SQLite (and PostgreSQL with --postgres).
    Store(bench_store::BenchStoreArgs),
    /// End-to-end sync throughput against the in-process simulator, requests per patient,
    /// peak memory, and behaviour under a rate limit.
    #[cfg(feature = "simulator")]
    Sync(BenchSyncArgs),
    /// A full sync killed with SIGKILL at random points and resumed each time, compared
    /// with an uninterrupted one: same resources, same bytes, every outcome true.
    #[cfg(feature = "simulator")]
    Chaos(bench_chaos::ChaosArgs),
    /// A Bulk Data export of ~385,000 resources in gzip NDJSON into SQLite (and PostgreSQL
    /// with --postgres): wall time, CPU, peak RSS, MB/s; then the Parquet export of the clean
    /// views of the SQLite store (CSV without the parquet feature): rows/s, file sizes.
    #[cfg(feature = "simulator")]
    Bulk(bench_bulk::BenchBulkArgs),
    /// Patient matching: precision, recall and F1 on the FEBRL data sets or a synthetic noisy
    /// population, time and peak memory.
    Match(bench_match::BenchMatchArgs),
    /// The FHIR facade and the API under load: requests/s and P50/P95/P99 of reads,
    /// searches, `$everything` and API lists, with the audit log on; peak memory.
    #[cfg(feature = "simulator")]
    Serve(bench_serve::BenchServeArgs),
    /// One sync of `bench chaos` (the process it kills).
    #[cfg(feature = "simulator")]
    #[command(hide = true)]
    ChaosChild(bench_chaos::ChaosChildArgs),
}

/// The `aqueduct` command: parse, log, run, exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context {
        config_path: cli.config,
        store: cli.store,
    };
    match cli.command {
        Command::Config(cmd) => config_cmd::run(&ctx, cmd),
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Keys(cmd) => keys::run(&ctx, cmd).await,
        Command::Connect(args) => connect::run(&ctx, args).await,
        #[cfg(feature = "simulator")]
        Command::Sim(args) => {
            sim_cli::run_standalone(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Store(args)) => bench_store::run(args).await,
        #[cfg(feature = "simulator")]
        Command::Bench(BenchCommand::Chaos(args)) => bench_chaos::run(args).await,
        #[cfg(feature = "simulator")]
        Command::Bench(BenchCommand::ChaosChild(args)) => bench_chaos::run_child(args).await,
        Command::Bench(BenchCommand::Match(args)) => bench_match::run(args),
        #[cfg(feature = "simulator")]
        Command::Bench(BenchCommand::Serve(args)) => {
            bench_serve::run(args).await.map(|_| ExitCode::SUCCESS)
        }
        #[cfg(feature = "simulator")]
        Command::Bench(BenchCommand::Bulk(args)) => bench_bulk::run(args).await,
        Command::Bulk(cmd) => bulk_cmd::run(&ctx, cmd).await,
        Command::Export(args) => export_cmd::run(&ctx, args).await,
        #[cfg(feature = "simulator")]
        Command::Bench(BenchCommand::Sync(args)) => {
            bench_sync::run_bench_sync(
                args.patients,
                args.resources_per_patient,
                args.rate_limit,
                args.separate_sim,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "simulator")]
        Command::Demo(args) => {
            let config = ctx.config()?;
            demo::run_demo(
                &ctx.store_location(config.as_ref()),
                args.patients,
                args.json,
                args.serve.then_some(args.bind),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(args) => sync_cmd::run(&ctx, args).await,
        Command::Run(args) => run_cmd::run(&ctx, args).await,
        Command::Serve(args) => serve_cmd::serve(&ctx, args)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::ApiKeys(cmd) => serve_cmd::api_keys(&ctx, cmd)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Audit(args) => serve_cmd::audit(&ctx, args)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Doctor(args) => doctor_cmd::run(&ctx, args).await,
        Command::Monitor(cmd) => monitor_cmd::run(&ctx, cmd).await,
        Command::Hl7(cmd) => events_cmd::run(&ctx, cmd).await,
        Command::Match(cmd) => match_cmd::run(&ctx, cmd).await,
        Command::Normalize(cmd) => normalize_cmd::run_normalize(&ctx, cmd).await,
        Command::Codes(cmd) => normalize_cmd::run_codes(&ctx, cmd).await,
    }
}

#[cfg(feature = "simulator")]
#[derive(clap::Args)]
struct DemoArgs {
    /// Patients per simulated source.
    #[arg(long, default_value_t = 100)]
    patients: usize,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
    /// Then leave the API, the FHIR facade and the dashboard running on the demo store (the
    /// simulators keep running too, so the dashboard's sync button works) and print the URL
    /// and an API key to sign in with; Ctrl-C stops it.
    #[arg(long)]
    serve: bool,
    /// Where `--serve` listens.
    #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
    bind: std::net::SocketAddr,
}

#[cfg(feature = "simulator")]
#[derive(clap::Args)]
struct BenchSyncArgs {
    /// Patients in the simulated population.
    #[arg(long, default_value_t = 1000)]
    patients: usize,
    /// Mean resources per patient.
    #[arg(long, default_value_t = 300)]
    resources_per_patient: usize,
    /// Simulated server rate limit in requests/s (measures pacing instead of throughput).
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Run the simulator as a separate process, so the peak memory printed is the sync's own.
    #[arg(long)]
    separate_sim: bool,
}

/// What every command may need from the global flags.
pub struct Context {
    pub config_path: Option<PathBuf>,
    pub store: Option<String>,
}

impl Context {
    /// The config file, if one exists (explicit paths must exist).
    pub fn config(&self) -> anyhow::Result<Option<aqueduct_config::Config>> {
        let path = aqueduct_config::resolve_path(self.config_path.as_deref());
        let explicit =
            self.config_path.is_some() || std::env::var_os(aqueduct_config::CONFIG_ENV).is_some();
        if !explicit && !path.exists() {
            return Ok(None);
        }
        Ok(Some(aqueduct_config::load(&path)?))
    }

    /// The store location: flag, then config file, then the default file.
    pub fn store_location(&self, config: Option<&aqueduct_config::Config>) -> String {
        self.store
            .clone()
            .or_else(|| config.map(|c| c.store.location.clone()))
            .unwrap_or_else(|| aqueduct_config::DEFAULT_STORE.to_string())
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AQUEDUCT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The error and its causes on one line: "cannot open X: permission denied".
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
