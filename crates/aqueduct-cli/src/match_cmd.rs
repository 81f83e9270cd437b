//! `aqueduct match ...`: patient identity in the store — the evidence of a pair, the review
//! queue and reviewers' decisions, a round of matching on demand. Records are named by facade
//! id (`ehr.123`, as the API and the facade name them) or by record id (`ehr/Patient/123`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::Context;

#[derive(Subcommand)]
pub enum MatchCommand {
    /// The evidence of two Patient records: each comparison's level and weight, the prior,
    /// the total and the decision, with the organization's model.
    Explain(ExplainArgs),
    /// The pairs awaiting a reviewer, strongest first; `--decide A B link|unlink` records a
    /// decision (re-matching never overturns it).
    Review(ReviewArgs),
    /// Match the organization's new or changed Patients now (syncs do this on their own).
    Update(OrgArg),
}

#[derive(Args)]
pub struct OrgArg {
    /// The organization (needed when the store holds more than one).
    #[arg(long)]
    org: Option<String>,
}

#[derive(Args)]
pub struct ExplainArgs {
    a: String,
    b: String,
    #[command(flatten)]
    org: OrgArg,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    org: OrgArg,
    /// How many pairs to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Decide a pair: two records and `link` or `unlink`.
    #[arg(long, num_args = 3, value_names = ["A", "B", "VERDICT"])]
    decide: Option<Vec<String>>,
    /// Why, kept with the decision.
    #[arg(long, requires = "decide")]
    note: Option<String>,
    /// Who decides (default `cli:$USER`).
    #[arg(long)]
    reviewer: Option<String>,
}

/// `ehr.123` or `ehr/Patient/123` → `ehr/Patient/123`.
fn record_id(s: &str) -> anyhow::Result<String> {
    if s.contains("/Patient/") {
        return Ok(s.to_string());
    }
    match s.split_once('.') {
        Some((c, id)) if !c.is_empty() && !id.is_empty() && !c.contains('/') => {
            Ok(format!("{c}/Patient/{id}"))
        }
        _ => anyhow::bail!(
            "{s:?} names no Patient record: use its facade id (ehr.123) or record id (ehr/Patient/123)"
        ),
    }
}

fn shown(record: &str) -> String {
    match record.split_once("/Patient/") {
        Some((c, id)) => format!("{c}.{id}"),
        None => record.to_string(),
    }
}

async fn organization(store: &dyn aqueduct_store::Store, org: &OrgArg) -> anyhow::Result<String> {
    if let Some(o) = &org.org {
        return Ok(o.clone());
    }
    let orgs = store.list_organizations().await?;
    match orgs.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => anyhow::bail!("the store holds no organization yet: sync one first"),
        _ => anyhow::bail!(
            "the store holds {} organizations: name one with --org",
            orgs.len()
        ),
    }
}

pub async fn run(ctx: &Context, cmd: MatchCommand) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let store = aqueduct_store::open(&ctx.store_location(config.as_ref())).await?;
    match cmd {
        MatchCommand::Explain(args) => {
            let org = organization(store.as_ref(), &args.org).await?;
            let (a, b) = (record_id(&args.a)?, record_id(&args.b)?);
            let e = aqueduct_engine::explain_pair(store.as_ref(), &org, &a, &b)
                .await
                .with_context(|| format!("explaining {a} and {b} of {org}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                println!("{e}");
            }
        }
        MatchCommand::Review(args) => {
            let org = organization(store.as_ref(), &args.org).await?;
            if let Some(d) = &args.decide {
                let [a, b, verdict] = d.as_slice() else {
                    anyhow::bail!("--decide takes A B VERDICT");
                };
                let link = match verdict.as_str() {
                    "link" => true,
                    "unlink" => false,
                    other => anyhow::bail!("a verdict is link or unlink, not {other:?}"),
                };
                let reviewer = args.reviewer.clone().unwrap_or_else(|| {
                    format!(
                        "cli:{}",
                        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                    )
                });
                let (a, b) = (record_id(a)?, record_id(b)?);
                let (pa, pb) = aqueduct_engine::decide_pair(
                    store.as_ref(),
                    &org,
                    &a,
                    &b,
                    link,
                    &reviewer,
                    args.note.as_deref(),
                )
                .await
                .with_context(|| format!("deciding {a} and {b} of {org}"))?;
                let person = |p: Option<i64>| p.map_or("none".into(), |p| format!("person-{p:06}"));
                println!(
                    "{reviewer} {verdict}ed {} and {}: now {} and {}",
                    shown(&a),
                    shown(&b),
                    person(pa),
                    person(pb)
                );
            }
            let queue = store.review_queue(&org, args.limit).await?;
            if queue.is_empty() {
                println!("no pairs await review in {org}");
            }
            for p in &queue {
                println!(
                    "{:>+7.2} bits  {} ~ {}   (aqueduct match explain {} {})",
                    p.weight,
                    shown(&p.a),
                    shown(&p.b),
                    shown(&p.a),
                    shown(&p.b)
                );
            }
        }
        MatchCommand::Update(org) => {
            let org = organization(store.as_ref(), &org).await?;
            let r = aqueduct_engine::update_identity(store.as_ref(), &org).await?;
            crate::report::print_identity(&r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
