//! Cost of monitoring per sync: `assess_run` and `render_metrics` on a demo-sized store
//! (100 patients × 300 resources, ~1,800 requests per run, 4 runs of history).
//! Run: `cargo bench -p aqueduct-monitor --bench monitor`.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use aqueduct_monitor::{MonitorConfig, assess_run, render_metrics};
use aqueduct_store::RunOutcome;
use common::*;

const PATIENTS: usize = 100;
const DEMO: &[(&str, u64)] = &[
    ("Patient", 1),
    ("Observation", 220),
    ("Condition", 30),
    ("MedicationRequest", 25),
    ("Encounter", 24),
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Sim::new().await;
        let t = Instant::now();
        sim.seed(PATIENTS, DEMO, chrono::Duration::days(1)).await;
        println!("seeded {} resources in {:.0} ms", PATIENTS * 300, ms(t.elapsed()));
        let cfg = MonitorConfig::default();
        let mut runs = Vec::new();
        for i in 0..6u64 {
            let run = sim.store.begin_run(&sim.conn, "full:100-patients").await.unwrap();
            let entries = ledger_paged(PATIENTS, DEMO, i * 10_000, 20);
            sim.store.record_requests(&sim.conn, run, &entries).await.unwrap();
            sim.store
                .finish_run(&sim.conn, run, RunOutcome::Complete, Some(&clean_summary().to_string()), None)
                .await
                .unwrap();
            runs.push((run, entries.len()));
        }
        let mut assess = Vec::new();
        for (run, n) in runs.iter().skip(1) {
            let t = Instant::now();
            let f = assess_run(sim.store.as_ref(), &sim.conn, *run, &cfg).await.unwrap();
            assess.push(ms(t.elapsed()));
            assert!(f.is_empty(), "{f:#?}");
            println!("assess_run (run {run}, {n} requests, baseline of up to 5 runs): {:.1} ms", assess.last().unwrap());
        }
        // the same assessment without the must-support sampling, to show its share
        let run = sim.store.begin_run(&sim.conn, "full:100-patients").await.unwrap();
        let entries = ledger_paged(PATIENTS, DEMO, 99_000, 20);
        sim.store.record_requests(&sim.conn, run, &entries).await.unwrap();
        sim.store
            .finish_run(&sim.conn, run, RunOutcome::Complete, Some(&clean_summary().to_string()), None)
            .await
            .unwrap();
        runs.push((run, entries.len()));
        let light = MonitorConfig { must_support_sample: 0, ..MonitorConfig::default() };
        let t = Instant::now();
        assess_run(sim.store.as_ref(), &sim.conn, run, &light).await.unwrap();
        println!("assess_run without must-support sampling: {:.1} ms", ms(t.elapsed()));
        let mut metrics = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let text = render_metrics(sim.store.as_ref(), "acme", Duration::from_secs(3600)).await.unwrap();
            metrics.push(ms(t.elapsed()));
            size = text.len();
        }
        let total: usize = runs.iter().map(|r| r.1).sum();
        println!(
            "render_metrics ({total} ledger entries in the window, {size} bytes out): {:.1} ms median",
            median(&mut metrics)
        );
        let a = median(&mut assess);
        let m = median(&mut metrics);
        println!("assess_run median: {a:.1} ms; assess + metrics per sync: {:.1} ms", a + m);
        println!(
            "share of a 3 s / 10 s 100-patient sync: {:.2} % / {:.2} %",
            (a + m) / 3000.0 * 100.0,
            (a + m) / 10_000.0 * 100.0
        );
    });
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
