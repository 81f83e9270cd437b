//! `aqueduct status`: what the store holds, per organization and connection.

use std::process::ExitCode;

use clap::Args;

use crate::Context;

#[derive(Args)]
pub struct StatusArgs {
    /// Only this organization.
    #[arg(long)]
    org: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let location = ctx.store_location(config.as_ref());
    let store = aqueduct_store::open(&location).await?;
    let orgs: Vec<String> = match args.org {
        Some(o) => vec![o],
        None => store
            .list_organizations()
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect(),
    };
    // Token details live encrypted in the vault: shown when the vault key is at hand.
    let smart = config
        .as_ref()
        .and_then(|c| aqueduct_engine::vault_key(c).ok())
        .or_else(|| aqueduct_smart::VaultKey::from_env().ok())
        .or_else(|| {
            aqueduct_smart::VaultKey::from_file(&crate::demo_key::demo_key_path(&location)).ok()
        })
        .and_then(|k| aqueduct_smart::SmartClient::new(store.clone(), k).ok());
    let mut report = Vec::new();
    for org in &orgs {
        let connections = store.status(org).await?;
        let mut auth = Vec::new();
        for c in &connections {
            let last = store
                .list_auth_events(&c.connection, 1)
                .await?
                .into_iter()
                .next();
            let tokens = match &smart {
                Some(s) => match s.load_tokens(&c.connection).await {
                    Ok(Some(t)) => Some(TokenView {
                        granted_scopes: t.granted_scopes.to_scope_string(),
                        expires_at: t.expires_at,
                        refresh_token: t.refresh_token.is_some(),
                        patient: t.context.patient.clone(),
                        error: None,
                    }),
                    Ok(None) => None,
                    Err(e) => Some(TokenView {
                        error: Some(e.to_string()),
                        ..TokenView::default()
                    }),
                },
                None => None,
            };
            auth.push(AuthView {
                last_event: last,
                tokens,
            });
        }
        let inbound = store.inbound_counts(org).await?;
        let refreshes = store.recent_refreshes(org, 20).await?;
        report.push((org.clone(), connections, auth, inbound, refreshes));
    }
    if args.json {
        let out: Vec<serde_json::Value> = report
            .iter()
            .map(|(org, conns, auth, inbound, refreshes)| {
                serde_json::json!({
                    "organization": org,
                    "hl7_messages": inbound,
                    "refresh_requests": refreshes,
                    "connections": conns.iter().zip(auth).map(|(c, a)| serde_json::json!({
                        "status": c,
                        "last_auth_event": a.last_event,
                        "tokens": a.tokens,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "store": location, "organizations": out })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("store: {location}");
    if report.is_empty() {
        println!("(no organizations yet: run `aqueduct demo` or `aqueduct sync`)");
    }
    for (org, conns, auth, inbound, refreshes) in &report {
        println!("organization {org}");
        if inbound.total > 0 {
            // unconverted messages are stored and acknowledged; each says why in process_error
            println!(
                "  HL7 v2 messages: {} stored, {} converted, {} unconverted, {} waiting for conversion",
                inbound.total, inbound.converted, inbound.unconverted, inbound.pending
            );
        }
        print_refreshes(refreshes);
        for (c, a) in conns.iter().zip(auth) {
            println!(
                "  connection {}  {}  profile={}",
                c.connection.connection,
                c.base_url.as_deref().unwrap_or("-"),
                c.profile.as_deref().unwrap_or("-")
            );
            match &c.last_run {
                Some(r) => {
                    let stats = c.last_run_stats.clone().unwrap_or_default();
                    println!(
                        "    last sync #{} ({}) {} at {}: {} requests, {} errors, {} throttled, {} retries",
                        r.id,
                        r.kind,
                        r.outcome.as_str(),
                        r.finished_at
                            .unwrap_or(r.started_at)
                            .format("%Y-%m-%d %H:%M:%S UTC"),
                        stats.requests,
                        stats.errors,
                        stats.throttled,
                        stats.retries
                    );
                    if let Some(e) = &r.error {
                        println!("    error: {e}");
                    }
                    // a run whose process died says "running" until the next sync closes it
                    if let Some(silent) = r.silent_for(chrono::Utc::now())
                        && silent.num_seconds()
                            > 2 * aqueduct_sync::HEARTBEAT_EVERY.as_secs() as i64
                    {
                        println!(
                            "    no sign of life for {} min: its process has probably stopped; the next sync of this connection closes it as failed",
                            silent.num_minutes()
                        );
                    }
                }
                None => println!("    never synced"),
            }
            if let Some(t) = &a.tokens {
                match &t.error {
                    Some(e) => println!("    tokens: cannot be read ({e})"),
                    None => println!(
                        "    tokens: expire {}{}, refresh token {}{}\n    granted scopes: {}",
                        t.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        if t.expires_at < chrono::Utc::now() {
                            " (expired)"
                        } else {
                            ""
                        },
                        if t.refresh_token { "yes" } else { "no" },
                        t.patient
                            .as_ref()
                            .map(|p| format!(", patient {p}"))
                            .unwrap_or_default(),
                        t.granted_scopes
                    ),
                }
            }
            if let Some(a) = &a.last_event {
                println!(
                    "    last auth event: {} {} at {}{}",
                    a.event,
                    a.outcome,
                    a.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    a.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            println!(
                "    failed requests (all runs): {}   findings: {}",
                c.error_count, c.findings
            );
            let total: u64 = c.types.iter().map(|t| t.live).sum();
            println!("    resources: {total}");
            for t in &c.types {
                let mut extra = String::new();
                if t.deleted > 0 {
                    extra.push_str(&format!("  ({} deleted upstream)", t.deleted));
                }
                if t.invalid > 0 {
                    extra.push_str(&format!("  ({} not valid FHIR, kept raw)", t.invalid));
                }
                println!("      {:<28} {:>8}{extra}", t.resource_type, t.live);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The refresh-request queue: how much waits, and the latest requests with their outcome.
fn print_refreshes(refreshes: &[aqueduct_store::RefreshRecord]) {
    if refreshes.is_empty() {
        return;
    }
    let count = |state: &str| refreshes.iter().filter(|r| r.state == state).count();
    println!(
        "  refresh requests (latest {}): {} pending, {} being worked on, {} done",
        refreshes.len(),
        count("pending"),
        count("claimed"),
        count("done")
    );
    for r in refreshes.iter().take(10) {
        let what = match (&r.request.patient_key, &r.request.connection) {
            (None, Some(c)) => format!("connection {c}"),
            (Some(_), Some(c)) => format!("a patient at {c}"),
            (Some(_), None) => "a patient, every connection holding them".to_string(),
            (None, None) => "nothing named".to_string(),
        };
        let state = match (&r.outcome, r.coalesced_into) {
            (Some(o), Some(into)) => format!("{} (with #{into})", o.as_str()),
            (Some(o), None) => o.as_str().to_string(),
            (None, _) if r.attempts > 0 => {
                format!("{} after {} failed attempt(s)", r.state, r.attempts)
            }
            (None, _) => r.state.clone(),
        };
        println!(
            "    #{} {} {} for {what}: {state}{}",
            r.id,
            r.requested_at.format("%Y-%m-%d %H:%M:%S UTC"),
            r.request.reason,
            r.detail
                .as_ref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        );
    }
}

#[derive(serde::Serialize, Default)]
struct TokenView {
    granted_scopes: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    refresh_token: bool,
    patient: Option<String>,
    error: Option<String>,
}

struct AuthView {
    last_event: Option<aqueduct_store::AuthEvent>,
    tokens: Option<TokenView>,
}
