//! How a sync report reads in a terminal (sync and demo share it).

use std::collections::BTreeMap;

use aqueduct_sync::SyncReport;

pub fn print_sync_report(name: &str, base: &str, rep: &SyncReport) {
    println!("== {name}  ({base})");
    println!(
        "   outcome {}  |  {} patients ({} complete)  |  {:.1} s",
        rep.outcome.as_str(),
        rep.patients,
        rep.patients_complete,
        rep.duration.as_secs_f64()
    );
    println!(
        "   requests {}  retries {}  throttled {}  failed attempts {}  {:.1} MB",
        rep.requests,
        rep.retries,
        rep.throttled,
        rep.failed_requests,
        rep.bytes as f64 / 1e6
    );
    println!(
        "   resources {} ({} referenced, {} external references not followed)",
        rep.resources(),
        rep.referenced_fetched,
        rep.external_references
    );
    for (t, c) in &rep.by_type {
        let mut extra = String::new();
        if c.duplicates > 0 {
            extra.push_str(&format!("  duplicates {}", c.duplicates));
        }
        if c.invalid > 0 {
            extra.push_str(&format!("  invalid {}", c.invalid));
        }
        if c.tombstoned > 0 {
            extra.push_str(&format!("  tombstoned {}", c.tombstoned));
        }
        println!("     {t:<22} {:>7}{extra}", c.fetched);
    }
    if !rep.skipped_types.is_empty() {
        println!(
            "   not offered by the server: {}",
            rep.skipped_types.join(", ")
        );
    }
    let mut missing: BTreeMap<(String, &str), (usize, String)> = BTreeMap::new();
    for p in &rep.partial {
        let e = missing
            .entry((p.resource_type.clone(), p.reason.as_str()))
            .or_insert((0, p.detail.clone()));
        e.0 += 1;
    }
    for ((t, reason), (n, detail)) in &missing {
        let detail: String = detail.chars().take(140).collect();
        println!("   PARTIAL {t}: {reason} for {n} patient(s) — {detail}");
    }
    if let Some(e) = &rep.error {
        println!("   error: {e}");
    }
    println!();
}

pub fn print_findings(findings: &[aqueduct_store::Finding]) {
    if findings.is_empty() {
        println!("   findings: none (nothing looked silently wrong)");
        return;
    }
    println!("   findings ({}):", findings.len());
    for f in findings {
        let detail: String = f.detail.chars().take(160).collect();
        println!(
            "     [{}] {}{}: {detail}",
            f.severity,
            f.kind,
            f.resource_type
                .as_ref()
                .map(|t| format!(" {t}"))
                .unwrap_or_default()
        );
    }
}

pub fn print_normalized(r: &aqueduct_normalize::RebuildReport) {
    let shares: Vec<String> = r
        .resolution_shares()
        .into_iter()
        .filter(|(_, share)| *share > 0.0)
        .map(|(level, share)| format!("{level} {:.1}%", share * 100.0))
        .collect();
    let rows: u64 = r.resolution.values().sum();
    let derived: u64 = r.types.iter().map(|t| t.resources).sum();
    let unchanged: u64 = r.types.iter().map(|t| t.unchanged).sum();
    println!(
        "   normalized: {derived} resources re-derived, {unchanged} unchanged; {rows} coded rows ({}); {} BMI derived",
        if shares.is_empty() {
            "none".to_string()
        } else {
            shares.join(", ")
        },
        r.derived_bmi
    );
}

/// One round of patient identity: who was matched across sources, what awaits a reviewer.
pub fn print_identity(r: &aqueduct_engine::IdentityReport) {
    println!(
        "identity: {} people matched across sources ({} persons from {} patient records; {} compared this round{}{})",
        r.across_sources,
        r.persons,
        r.records,
        r.matched,
        if r.forced > 0 {
            format!(", {} links from sources", r.forced)
        } else {
            String::new()
        },
        if r.trained {
            ", model estimated again"
        } else {
            ""
        },
    );
    println!(
        "   {} pairs await review (`aqueduct match review`)",
        r.awaiting_review
    );
}
