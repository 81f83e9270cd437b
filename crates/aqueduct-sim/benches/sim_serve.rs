//! Serving benchmark: start-up with 1,000 patients, then search pages over real HTTP.
//! Server and client share one current-thread runtime, i.e. one core, so the figures are a
//! floor. Run with `cargo bench -p aqueduct-sim`.

use std::time::Instant;

use aqueduct_sim::{SimConfig, Simulator};
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    entry: Vec<IgnoredAny>,
    #[serde(default)]
    link: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    relation: String,
    url: String,
}

async fn pass(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    patients: &[String],
    query: &str,
) -> (usize, usize, f64) {
    let t = Instant::now();
    let (mut resources, mut requests) = (0, 0);
    for pid in patients {
        let mut url = format!("{base}/{}", query.replace("{pid}", pid));
        loop {
            let body = client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .expect("GET")
                .bytes()
                .await
                .expect("body");
            requests += 1;
            let b: Bundle = serde_json::from_slice(&body).expect("bundle");
            resources += b.entry.len();
            match b.link.into_iter().find(|l| l.relation == "next") {
                Some(l) => url = l.url,
                None => break,
            }
        }
    }
    (resources, requests, t.elapsed().as_secs_f64())
}

fn report(label: &str, (resources, requests, secs): (usize, usize, f64)) {
    println!(
        "{label:<44} {resources:>8} resources {requests:>6} requests {secs:>7.2} s  {:>9.0} resources/s {:>7.0} requests/s",
        resources as f64 / secs,
        requests as f64 / secs
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let t = Instant::now();
    let sim = Simulator::start(SimConfig {
        patients: 1000,
        ..SimConfig::default()
    })
    .await
    .expect("start");
    let startup = t.elapsed();
    println!(
        "start-up with 1,000 patients: {:.1} ms (budget 2,000 ms)",
        startup.as_secs_f64() * 1000.0
    );

    let base = sim.base_url();
    let origin = base.trim_end_matches("/fhir/r4").to_string();
    let client = reqwest::Client::new();
    let tok: serde_json::Value = client
        .post(format!("{origin}/oauth2/token"))
        .basic_auth("sim-confidential-app", Some("sim-confidential-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = tok["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let patients = sim.patient_ids();

    report(
        "$everything, _count=1000, cold (generates)",
        pass(
            &client,
            &base,
            &token,
            &patients,
            "Patient/{pid}/$everything?_count=1000",
        )
        .await,
    );
    report(
        "$everything, _count=1000, warm",
        pass(
            &client,
            &base,
            &token,
            &patients,
            "Patient/{pid}/$everything?_count=1000",
        )
        .await,
    );
    report(
        "Observation?patient, _count=50, warm",
        pass(
            &client,
            &base,
            &token,
            &patients[..200],
            "Observation?patient={pid}&_count=50",
        )
        .await,
    );
    let s = sim.stats();
    println!(
        "server stats: {} requests, {} resources served",
        s.requests, s.resources_served
    );
    sim.shutdown().await;
}
