//! `aqueduct hl7 ...`: the HL7 v2 listener and sender.

use std::process::ExitCode;

use clap::Subcommand;

use crate::Context;

#[derive(Subcommand)]
pub enum Hl7Command {
    /// Receive HL7 v2 over MLLP: acknowledge each message only once it is committed to the
    /// store, de-duplicate resends, turn ADT/ORU into FHIR resources and refresh requests.
    Listen(crate::hl7_cli::ListenArgs),
    /// Send the messages of files over MLLP and print each acknowledgement.
    Send(crate::hl7_cli::SendArgs),
}

pub async fn run(ctx: &Context, cmd: Hl7Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Hl7Command::Listen(args) => {
            let config = ctx.config()?;
            let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
            crate::hl7_cli::run_listen(args, store).await?;
        }
        Hl7Command::Send(args) => crate::hl7_cli::run_send(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
