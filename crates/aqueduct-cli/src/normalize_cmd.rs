//! `aqueduct normalize` and `aqueduct codes ...`: derived data, rebuilt from raw.

use std::process::ExitCode;

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

pub async fn run_normalize(ctx: &Context, cmd: NormalizeCmd) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    let org = organization(store.as_ref(), config.as_ref(), cmd.org.org).await?;
    let terms = aqueduct_engine::terminology(cmd.args.terminology_dir.as_deref(), config.as_ref())?;
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
