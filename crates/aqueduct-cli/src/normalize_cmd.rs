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
    args: aqueduct_normalize::cli::NormalizeArgs,
}

#[derive(Args)]
pub struct CodesCmd {
    #[command(flatten)]
    org: OrgArg,
    #[command(flatten)]
    args: aqueduct_normalize::cli::CodesArgs,
}

pub fn terminology(dir: Option<&std::path::Path>) -> anyhow::Result<Arc<Terminology>> {
    Ok(Arc::new(match dir {
        Some(d) => {
            let (terms, loaded) = Terminology::embedded_with_dir(d)?;
            for (file, n) in loaded {
                tracing::info!("terminology: loaded {n} entries from {file}");
            }
            terms
        }
        None => Terminology::embedded(),
    }))
}

pub async fn run_normalize(ctx: &Context, cmd: NormalizeCmd) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let org = organization(store.as_ref(), config.as_ref(), cmd.org.org).await?;
    let terms = terminology(cmd.args.terminology_dir.as_deref())?;
    print!(
        "{}",
        aqueduct_normalize::cli::run_normalize(store, &org, &cmd.args, terms).await?
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run_codes(ctx: &Context, cmd: CodesCmd) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let org = organization(store.as_ref(), config.as_ref(), cmd.org.org).await?;
    print!(
        "{}",
        aqueduct_normalize::cli::run_codes(store, &org, &cmd.args).await?
    );
    Ok(ExitCode::SUCCESS)
}
