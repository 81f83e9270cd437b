//! `aqueduct sim`: run the simulator by hand.

use std::net::SocketAddr;

/// Like println!, but a closed stdout (a reader that went away) is not a reason to panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use aqueduct_sim::{Fault, SimConfig, SimError, Simulator};

/// Arguments of `aqueduct sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Personality: reference, epic, cerner, athena, payer, or the path of a TOML file.
    #[arg(long, default_value = "reference")]
    pub personality: String,
    #[arg(long, default_value_t = 20)]
    pub patients: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fault to inject, `name[:param][@rate]`, repeatable (e.g. server-error-500@0.1).
    #[arg(long = "fault")]
    pub faults: Vec<Fault>,
    #[arg(long, default_value_t = 300)]
    pub resources_per_patient: usize,
    /// Access token lifetime in seconds (default: the personality's).
    #[arg(long)]
    pub token_lifetime: Option<u64>,
    /// Requests per second before 429 (default: the personality's).
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Show a consent page instead of approving authorization requests automatically.
    #[arg(long)]
    pub consent_page: bool,
    /// Add a patient with about this many resources (repeatable): a long history.
    #[arg(long = "large-patient")]
    pub large_patients: Vec<usize>,
}

pub async fn run_standalone(args: SimArgs) -> Result<(), SimError> {
    let config = SimConfig {
        personality: args.personality.clone(),
        patients: args.patients,
        seed: args.seed,
        resources_per_patient: args.resources_per_patient,
        faults: args.faults.clone(),
        auto_approve: !args.consent_page,
        token_lifetime_secs: args.token_lifetime,
        rate_limit_per_sec: args.rate_limit,
        large_patients: args.large_patients.clone(),
    };
    let server = Simulator::start_on(args.listen, config).await?;
    say!(
        "Aqueduct EHR simulator ({}) serving FHIR R4 at {}",
        server.personality().name,
        server.base_url()
    );
    say!(
        "  SMART configuration: {}/.well-known/smart-configuration",
        server.base_url()
    );
    for c in server.clients() {
        say!(
            "  client {:<24} {:?}{}",
            c.client_id,
            c.kind,
            c.client_secret
                .map(|s| format!(" secret={s}"))
                .unwrap_or_default()
        );
    }
    let ids = server.patient_ids();
    say!(
        "  patients: {} (e.g. {})",
        ids.len(),
        ids.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    );
    say!("  group for Bulk export: Group/{}", server.group_id());
    let faults = args
        .faults
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    if !faults.is_empty() {
        say!("  faults: {}", faults.join(", "));
    }
    say!(
        "  backend-services clients: POST {}/admin/backend-clients/CLIENT_ID with the client's public JWKS",
        server.base_url().split("/fhir").next().unwrap_or("")
    );
    let origin = server
        .base_url()
        .split("/fhir")
        .next()
        .unwrap_or("")
        .to_string();
    say!("  ground truth: GET {origin}/admin/truth/patient/ID (and {origin}/admin/truth)");
    say!(
        "  document host {}, foreign origin {} (requests: GET {origin}/admin/side-requests)",
        server.documents_origin(),
        server.foreign_origin()
    );
    say!("Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn arguments_parse_with_repeated_faults() {
        let cli = Cli::try_parse_from([
            "sim",
            "--personality",
            "epic",
            "--patients",
            "5",
            "--fault",
            "server-error-500@0.1",
            "--fault",
            "timeout:2",
        ])
        .expect("parse");
        assert_eq!(cli.sim.personality, "epic");
        assert_eq!(cli.sim.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(cli.sim.faults.len(), 2);
        assert!(Cli::try_parse_from(["sim", "--fault", "nonsense"]).is_err());
    }
}
