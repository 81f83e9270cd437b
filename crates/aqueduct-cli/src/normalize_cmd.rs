//! `aqueduct normalize` and `aqueduct codes ...`: derived data, rebuilt from raw.

use std::process::ExitCode;
use std::sync::Arc;

use aqueduct_normalize::Terminology;
use clap::Args;

use crate::Context;
use crate::monitor_cmd::{OrgArg, organization};

#[derive(Args)]
pub struct NormalizeCmd {
    #[command(flatten)]
    org: OrgArg,
    #[command(flatten)]
    args: crate::normalize_cli::NormalizeArgs,
}

#[derive(Args)]
pub struct CodesCmd {
    #[command(flatten)]
    org: OrgArg,
    #[command(flatten)]
    args: crate::normalize_cli::CodesArgs,
}

/// The terminology every normalization uses: embedded tables plus the release files of
/// `--terminology-dir` / `AQUEDUCT_TERMINOLOGY_DIR`, else of `[terminology] dir`. After a
/// sync and on request the same tables apply, so the two never disagree.
pub fn terminology(
    dir: Option<&std::path::Path>,
    config: Option<&aqueduct_config::Config>,
) -> anyhow::Result<Arc<Terminology>> {
    let env_dir = std::env::var_os("AQUEDUCT_TERMINOLOGY_DIR").map(std::path::PathBuf::from);
    let dir = dir
        .map(std::path::Path::to_path_buf)
        .or(env_dir)
        .or_else(|| config.and_then(|c| c.terminology.dir.clone()));
    // loaded once per process: release files run to hundreds of megabytes and a sync of
    // several connections normalizes each of them
    static LOADED: std::sync::Mutex<Option<(Option<std::path::PathBuf>, Arc<Terminology>)>> =
        std::sync::Mutex::new(None);
    let mut cache = LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((d, t)) = cache.as_ref()
        && *d == dir
    {
        return Ok(t.clone());
    }
    let terms = Arc::new(match dir.as_deref() {
        Some(d) => {
            let (terms, loaded) = Terminology::embedded_with_dir(d)
                .map_err(|e| anyhow::anyhow!("terminology directory {}: {e}", d.display()))?;
            for (file, n) in loaded {
                tracing::info!("terminology: loaded {n} entries from {file}");
            }
            terms
        }
        None => Terminology::embedded(),
    });
    *cache = Some((dir, terms.clone()));
    Ok(terms)
}

pub async fn run_normalize(ctx: &Context, cmd: NormalizeCmd) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let org = organization(store.as_ref(), config.as_ref(), cmd.org.org).await?;
    let terms = terminology(cmd.args.terminology_dir.as_deref(), config.as_ref())?;
    print!(
        "{}",
        crate::normalize_cli::run_normalize(store, &org, &cmd.args, terms).await?
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run_codes(ctx: &Context, cmd: CodesCmd) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let org = organization(store.as_ref(), config.as_ref(), cmd.org.org).await?;
    print!(
        "{}",
        crate::normalize_cli::run_codes(store, &org, &cmd.args).await?
    );
    Ok(ExitCode::SUCCESS)
}
