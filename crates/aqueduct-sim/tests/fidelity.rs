//! Record-fidelity personalities and settings (issue 12), each observed over real HTTP and
//! compared with the simulator's ground truth.

mod common;

use std::collections::BTreeSet;

use aqueduct_sim::{Fault, SimConfig, SimServer};
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const REFERENCE: &str = include_str!("../personalities/reference.toml");

/// The reference personality with extra top-level keys.
fn reference_with(name: &str, extra: &str) -> SimConfig {
    let path =
        std::env::temp_dir().join(format!("aqueduct-sim-{name}-{}.toml", std::process::id()));
    let text = REFERENCE.replace(
        "name = \"reference\"",
        &format!("name = \"{name}\"\n{extra}"),
    );
    std::fs::write(&path, text).expect("write personality");
    SimConfig {
        patients: 2,
        resources_per_patient: 80,
        ..SimConfig::default()
    }
    .personality_file(&path)
    .expect("personality")
}

async fn truth(sim: &SimServer, pid: &str) -> Value {
    sim.truth(pid).expect("truth")
}

fn truth_ids(t: &Value, rtype: &str) -> BTreeSet<String> {
    t["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|e| e["resourceType"] == rtype)
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

fn id_set(resources: &[Value], rtype: &str) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == rtype)
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

fn all_entries(b: &Value) -> Vec<Value> {
    b["entry"].as_array().cloned().unwrap_or_default()
}

fn outcomes(b: &Value) -> Vec<Value> {
    all_entries(b)
        .into_iter()
        .filter(|e| e["search"]["mode"] == "outcome")
        .map(|e| e["resource"].clone())
        .collect()
}

fn capability_types(cs: &Value) -> BTreeSet<String> {
    cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["type"].as_str().expect("type").to_string())
        .collect()
}

fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "reference"
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                } else {
                    references(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn hospital_serves_extra_types_and_provenance_only_through_everything() {
    let sim = start(small("hospital")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    for t in [
        "MedicationAdministration",
        "MedicationStatement",
        "ServiceRequest",
        "CarePlan",
        "CareTeam",
        "Goal",
        "DocumentReference",
    ] {
        let found = fetch_all(&sim, &token, &format!("{t}?patient={pid}")).await;
        assert!(!found.is_empty(), "{t}");
        assert_eq!(found.len(), sim.expected_count_of_type(&pid, t), "{t}");
    }
    let (_, cs) = get_json(&sim, &token, "metadata").await;
    let listed = capability_types(&cs);
    assert!(listed.contains("MedicationStatement") && listed.contains("ServiceRequest"));
    assert!(
        !listed.contains("MedicationAdministration"),
        "omitted by setting"
    );
    assert!(!listed.contains("Provenance"));
    assert!(listed.contains("Medication"));

    let (s, _) = get_json(&sim, &token, &format!("Provenance?patient={pid}")).await;
    assert_eq!(s, 404);
    let everything = fetch_all(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    let t = truth(&sim, &pid).await;
    let prov = id_set(&everything, "Provenance");
    assert!(!prov.is_empty());
    assert_eq!(prov, truth_ids(&t, "Provenance"));
    for e in t["resources"].as_array().expect("resources") {
        let want = match e["resourceType"].as_str().expect("type") {
            "Provenance" => "everything",
            "Binary" => "attachment",
            "Practitioner" | "Organization" | "Location" | "Medication" => "reference",
            _ => "search",
        };
        assert_eq!(e["via"], want, "{e}");
    }
    let (s, _) = get_json(
        &sim,
        &token,
        &format!("Provenance/{}", prov.iter().next().expect("one")),
    )
    .await;
    assert_eq!(s, 404, "Provenance is not readable on its own");
    // Medications are referenced, readable and part of the truth.
    let meds: BTreeSet<String> =
        fetch_all(&sim, &token, &format!("MedicationRequest?patient={pid}"))
            .await
            .iter()
            .filter_map(|m| {
                m["medicationReference"]["reference"]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|r| !r.starts_with('#'))
            .collect();
    assert!(!meds.is_empty());
    for m in &meds {
        let (s, med) = get_json(&sim, &token, m).await;
        assert_eq!(s, 200, "{m}");
        assert!(truth_ids(&t, "Medication").contains(med["id"].as_str().expect("id")));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn payer_answers_only_everything_under_a_patient_alias() {
    let sim = start(small("payer-everything")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    for t in ["Observation", "Condition", "Coverage", "Patient"] {
        let (s, oo) = get_json(&sim, &token, &format!("{t}?patient={pid}")).await;
        assert_eq!(s, 400, "{t}: {oo}");
    }
    let (s, patient) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    assert_eq!(s, 200);
    let alias = patient["id"].as_str().expect("id").to_string();
    assert_ne!(alias, pid, "the Patient comes back under another id");
    let everything = fetch_all(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    let obs: Vec<&Value> = everything
        .iter()
        .filter(|r| r["resourceType"] == "Observation")
        .collect();
    assert!(!obs.is_empty());
    for o in obs {
        assert_eq!(o["subject"]["reference"], format!("Patient/{alias}"));
    }
    let t = truth(&sim, &pid).await;
    assert_eq!(t["patient_resource_id"], alias.as_str());
    // $everything returns the referenced resources too, so nothing of the truth is missing
    // except the Binaries behind document attachments.
    let got: BTreeSet<String> = ids(&everything).into_iter().collect();
    let want: BTreeSet<String> = t["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|e| e["resourceType"] != "Binary")
        .map(|e| {
            format!(
                "{}/{}",
                e["resourceType"].as_str().expect("t"),
                e["id"].as_str().expect("id")
            )
        })
        .collect();
    assert_eq!(got, want);
    // ... while their reads answer 500.
    for t in ["Practitioner", "Location", "Organization", "Coverage"] {
        let id = id_set(&everything, t).into_iter().next().expect(t);
        let (s, _) = get_json(&sim, &token, &format!("{t}/{id}")).await;
        assert_eq!(s, 500, "{t}");
    }
    let (s, _) = get_json(&sim, &token, &format!("Patient/{alias}/$everything")).await;
    assert_eq!(s, 200, "the alias works too");
    sim.shutdown().await;
}

#[tokio::test]
async fn referenced_reads_fail_in_reads_id_searches_and_batches() {
    let sim = start(reference_with(
        "ref-500",
        "referenced_read_errors = [\"Practitioner\", \"Location\"]\neverything_includes_references = true",
    ))
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let everything = fetch_all(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    let prac = id_set(&everything, "Practitioner")
        .into_iter()
        .next()
        .expect("practitioner");
    let loc = id_set(&everything, "Location")
        .into_iter()
        .next()
        .expect("location");
    assert_eq!(
        get(&sim, &token, &format!("Practitioner/{prac}"))
            .await
            .status(),
        500
    );
    assert_eq!(
        get(&sim, &token, &format!("Location/{loc}")).await.status(),
        500
    );
    assert_eq!(
        get(&sim, &token, &format!("Practitioner?_id={prac}"))
            .await
            .status(),
        500
    );
    assert_eq!(
        get(&sim, &token, &format!("Observation?patient={pid}"))
            .await
            .status(),
        200
    );
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Practitioner/{prac}")}},
        {"request": {"method": "GET", "url": format!("Patient/{pid}")}}
    ]});
    let r = http()
        .post(sim.base_url())
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .expect("batch");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["entry"][0]["response"]["status"], "500");
    assert_eq!(b["entry"][1]["response"]["status"], "200");
    sim.shutdown().await;
}

#[tokio::test]
async fn member_patient_links_to_the_patients_holding_the_data() {
    let sim = start(small("payer-linked")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (s, member) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    assert_eq!(s, 200);
    let links: Vec<String> = member["link"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "seealso");
            l["other"]["reference"].as_str().expect("ref").to_string()
        })
        .collect();
    assert_eq!(links.len(), 2);
    let mrn = member["identifier"][0]["value"].as_str().expect("mrn");
    let by_mrn = fetch_all(&sim, &token, &format!("Patient?identifier={mrn}")).await;
    assert_eq!(ids(&by_mrn), vec![format!("Patient/{pid}")]);
    let direct = fetch_all(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert!(direct.is_empty(), "the member Patient holds no data");
    let t = truth(&sim, &pid).await;
    let patients = truth_ids(&t, "Patient");
    assert_eq!(patients.len(), 3);
    let mut via_links = 0;
    for l in &links {
        let linked = l
            .trim_end_matches("/_history/1")
            .trim_start_matches("Patient/")
            .to_string();
        assert!(patients.contains(&linked));
        let (s, _) = get_json(&sim, &token, &format!("Patient/{linked}/_history/1")).await;
        assert_eq!(s, 200);
        via_links += fetch_all(&sim, &token, &format!("Observation?patient={linked}"))
            .await
            .len();
    }
    assert_eq!(via_links, truth_ids(&t, "Observation").len());
    assert!(via_links > 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn versioned_references_carry_history_one_everywhere() {
    let sim = start(small("payer-linked")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[1].clone();
    let everything = fetch_all(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    let (_, member) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    let linked = member["link"][0]["other"]["reference"]
        .as_str()
        .expect("link")
        .to_string();
    let data = fetch_all(
        &sim,
        &token,
        &format!(
            "Condition?patient={}",
            linked
                .trim_end_matches("/_history/1")
                .trim_start_matches("Patient/")
        ),
    )
    .await;
    let mut refs = vec![];
    for r in everything.iter().chain(&data) {
        references(r, &mut refs);
    }
    assert!(refs.len() > 5);
    for r in refs.iter().filter(|r| !r.starts_with('#')) {
        assert!(r.ends_with("/_history/1"), "{r}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn suppressed_outcomes_and_informational_outcomes() {
    let sim = start(SimConfig {
        resources_per_patient: 200,
        ..small("epic-suppressed")
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (s, b) = get_json(&sim, &token, &format!("Condition?patient={pid}")).await;
    assert_eq!(s, 200);
    let oos = outcomes(&b);
    let suppressed: Vec<&Value> = oos
        .iter()
        .filter(|o| o["issue"][0]["code"] == "suppressed")
        .collect();
    assert_eq!(suppressed.len(), 1, "{oos:?}");
    assert!(
        oos.iter()
            .any(|o| o["issue"][0]["severity"] == "information"
                && o["issue"][0]["diagnostics"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(
                        "This response includes information available to the authorized user"
                    )))
    );
    let shown = fetch_all(&sim, &token, &format!("Condition?patient={pid}")).await;
    for c in &shown {
        assert_ne!(c["category"][0]["coding"][0]["code"], "encounter-diagnosis");
    }
    let t = truth(&sim, &pid).await;
    let all = truth_ids(&t, "Condition");
    assert!(
        all.len() > shown.len(),
        "the truth holds the hidden diagnoses"
    );
    let withheld: BTreeSet<String> = t["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|e| e["resourceType"] == "Condition" && e["withheld"] == "suppressed-category")
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect();
    let shown_ids = id_set(&shown, "Condition");
    assert_eq!(
        all.difference(&shown_ids).cloned().collect::<BTreeSet<_>>(),
        withheld,
        "the truth marks exactly what the server withheld"
    );
    let refused_plans = t["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|e| e["resourceType"] == "CarePlan" && e["withheld"] == "category-refused")
        .count();
    let plans = fetch_all(
        &sim,
        &token,
        &format!("CarePlan?patient={pid}&category=38717003"),
    )
    .await;
    assert!(refused_plans > 0);
    assert_eq!(plans.len() + refused_plans, truth_ids(&t, "CarePlan").len());
    // CarePlan: only 38717003 answers; another category is refused as suppressed.
    let (s, oo) = get_json(
        &sim,
        &token,
        &format!("CarePlan?patient={pid}&category=734163000"),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(oo["issue"][0]["code"], "suppressed");
    let (s, b) = get_json(
        &sim,
        &token,
        &format!("CarePlan?patient={pid}&category=38717003"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        outcomes(&b)
            .iter()
            .any(|o| o["issue"][0]["code"] == "informational")
    );
    // Every search answer carries the informational outcome, even an empty one.
    let (_, b) = get_json(&sim, &token, &format!("Goal?patient=nobody-{pid}")).await;
    assert_eq!(outcomes(&b).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn long_ids_are_served_and_readable() {
    let sim = start(small("epic-suppressed")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let obs = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&category=laboratory,vital-signs,social-history"),
    )
    .await;
    let lens: Vec<usize> = obs
        .iter()
        .map(|o| o["id"].as_str().expect("id").len())
        .collect();
    assert!(!lens.is_empty());
    assert!(lens.iter().all(|l| *l >= 70), "{lens:?}");
    assert!(lens.contains(&200), "{lens:?}");
    let longest = obs
        .iter()
        .max_by_key(|o| o["id"].as_str().expect("id").len())
        .expect("one");
    let (s, again) = get_json(
        &sim,
        &token,
        &format!("Observation/{}", longest["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(&again, longest);
    let t = truth(&sim, &pid).await;
    assert!(truth_ids(&t, "Medication").iter().all(|m| m.len() >= 70));
    assert!(!truth_ids(&t, "Medication").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn next_links_and_documents_use_another_case_of_the_base() {
    let sim = start(small("nextgen")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (s, _) = get_json(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(s, 400, "Observation needs code or category");
    let (s, b) = get_json(
        &sim,
        &token,
        &format!(
            "Observation?patient={pid}&category=laboratory,vital-signs,social-history&_count=2"
        ),
    )
    .await;
    assert_eq!(s, 200);
    let next = next_link(&b).expect("next");
    assert!(next.contains("/fhir/R4/"), "{next}");
    assert!(!sim.base_url().contains("/fhir/R4"));
    let (s, _) = get_json(&sim, &token, &next).await;
    assert_eq!(s, 200, "the server answers its own spelling");
    let docs = fetch_all(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    let t = truth(&sim, &pid).await;
    let shas: BTreeSet<String> = t["resources"]
        .as_array()
        .expect("r")
        .iter()
        .filter(|e| e["resourceType"] == "Binary")
        .map(|e| e["sha256"].as_str().expect("sha").to_string())
        .collect();
    assert!(!docs.is_empty());
    for d in &docs {
        let url = d["content"][0]["attachment"]["url"].as_str().expect("url");
        assert!(url.contains("/fhir/R4/documents/"), "{url}");
        assert!(!url.contains("/Binary/"));
        let r = get(&sim, &token, url).await;
        assert_eq!(r.status(), 200, "{url}");
        let bytes = r.bytes().await.expect("bytes");
        assert!(shas.contains(&hex::encode(Sha256::digest(&bytes))));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn documents_and_photos_live_on_a_second_host_that_records_tokens() {
    let sim = start(small("hospital")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let docs_origin = sim.documents_origin();
    assert_ne!(docs_origin, origin(&sim));
    let docs = fetch_all(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    let url = docs[0]["content"][0]["attachment"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(url.starts_with(&format!("{docs_origin}/content/")), "{url}");
    let (_, patient) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    let photo = patient["photo"][0]["url"]
        .as_str()
        .expect("photo")
        .to_string();
    assert!(photo.starts_with(&docs_origin));
    let r = http().get(&url).send().await.expect("doc");
    assert_eq!(r.status(), 200);
    assert!(!r.bytes().await.expect("b").is_empty());
    let r = http()
        .get(&photo)
        .bearer_auth(&token)
        .send()
        .await
        .expect("photo");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let seen = sim.side_requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.host == "documents"));
    assert!(!seen[0].headers.contains_key("authorization"));
    assert_eq!(seen[1].headers["authorization"], format!("Bearer {token}"));
    let r = http()
        .get(format!(
            "{}/admin/side-requests?host=documents",
            origin(&sim)
        ))
        .send()
        .await
        .expect("admin");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["requests"].as_array().expect("list").len(), 2);
    assert_eq!(
        v["requests"][1]["path"],
        photo.trim_start_matches(&docs_origin)
    );
    let t = truth(&sim, &pid).await;
    let photo_id = photo.rsplit('/').next().expect("id");
    assert!(truth_ids(&t, "Binary").contains(photo_id));
    sim.shutdown().await;
}

#[tokio::test]
async fn cancelled_encounters_are_left_out_of_search_but_referenced() {
    let sim = start(SimConfig {
        resources_per_patient: 300,
        ..small("athena-records")
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let searched = id_set(
        &fetch_all(&sim, &token, &format!("Encounter?patient={pid}")).await,
        "Encounter",
    );
    let t = truth(&sim, &pid).await;
    let all = truth_ids(&t, "Encounter");
    let hidden: BTreeSet<String> = all.difference(&searched).cloned().collect();
    assert!(!hidden.is_empty());
    for e in &hidden {
        let (s, enc) = get_json(&sim, &token, &format!("Encounter/{e}")).await;
        assert_eq!(s, 200);
        assert!(matches!(
            enc["status"].as_str(),
            Some("cancelled" | "entered-in-error")
        ));
    }
    let (_, b) = get_json(
        &sim,
        &token,
        &format!("Encounter?patient={pid}&status=cancelled"),
    )
    .await;
    assert!(all_entries(&b).is_empty(), "not even when asked for");
    let mut refs = vec![];
    for t in ["Condition", "DocumentReference"] {
        for r in fetch_all(&sim, &token, &format!("{t}?patient={pid}")).await {
            references(&r, &mut refs);
        }
    }
    assert!(
        refs.iter()
            .any(|r| hidden.iter().any(|h| r == &format!("Encounter/{h}"))),
        "a Condition or DocumentReference points to a hidden Encounter"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn codes_labelled_loinc_that_fail_the_check_digit() {
    let sim = start(SimConfig {
        resources_per_patient: 300,
        ..small("athena-records")
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let mut found = 0;
    for pid in sim.patient_ids() {
        for o in fetch_all(&sim, &token, &format!("Observation?patient={pid}")).await {
            let c = &o["code"]["coding"][0];
            if c["system"] == "http://loinc.org"
                && matches!(c["code"].as_str(), Some("31337" | "3953"))
            {
                found += 1;
            }
        }
    }
    assert!(found > 0);
    // The default athena personality never does this.
    let plain = start(SimConfig {
        rate_limit_per_sec: Some(1000.0),
        resources_per_patient: 300,
        ..small("athena")
    })
    .await;
    let token = system_token(&plain, "system/*.read").await;
    let pid = plain.patient_ids()[0].clone();
    let (_, b) = get_json(
        &plain,
        &token,
        &format!("Observation?patient={pid}&code=http://loinc.org|31337,http://loinc.org|3953"),
    )
    .await;
    assert!(all_entries(&b).is_empty());
    plain.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_can_fail_or_vanish() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    assert_eq!(get(&sim, &token, "metadata").await.status(), 200);
    sim.set_faults(vec!["metadata-500".parse::<Fault>().expect("f")]);
    assert_eq!(get(&sim, &token, "metadata").await.status(), 500);
    assert_eq!(
        get(&sim, &token, "Patient").await.status(),
        200,
        "only /metadata fails"
    );
    sim.set_faults(vec!["metadata-404".parse::<Fault>().expect("f")]);
    assert_eq!(get(&sim, &token, "metadata").await.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn server_wide_counts_answer_totals_per_type() {
    for personality in ["reference", "cerner"] {
        let sim = start(small(personality)).await;
        let token = system_token(&sim, "system/*.read").await;
        for t in ["Condition", "Encounter", "Procedure"] {
            let want: usize = sim
                .patient_ids()
                .iter()
                .map(|p| sim.expected_count_of_type(p, t))
                .sum();
            for q in ["_summary=count", "_count=0"] {
                let (s, b) = get_json(&sim, &token, &format!("{t}?{q}")).await;
                assert_eq!(s, 200, "{personality} {t}?{q}: {b}");
                assert_eq!(
                    b["total"].as_u64(),
                    Some(want as u64),
                    "{personality} {t}?{q}"
                );
                assert!(all_entries(&b).is_empty());
            }
        }
        sim.shutdown().await;
    }
}
