//! Patient identity kept in a real store: what a sync's Patients become (persons across
//! sources with ids that stay), hard evidence from sources, reviewer decisions that hold.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_core::{ConnectionRef, ParseStatus, RawResource, Store};
use aqueduct_engine::{decide_pair, explain_pair, update_identity};
use chrono::Utc;
use serde_json::json;

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = aqueduct_store::open(&path.display().to_string())
        .await
        .unwrap();
    (store, dir)
}

struct P<'a> {
    id: &'a str,
    given: &'a str,
    family: &'a str,
    birth: &'a str,
    gender: &'a str,
    street: &'a str,
    phone: &'a str,
}

fn patient(p: &P<'_>) -> serde_json::Value {
    let mut v = json!({
        "resourceType": "Patient",
        "id": p.id,
        "name": [{"family": p.family, "given": [p.given]}],
        "birthDate": p.birth,
        "gender": p.gender,
        "identifier": [{"system": "urn:mrn", "value": format!("MRN-{}", p.id)}],
    });
    if !p.street.is_empty() {
        v["address"] = json!([{"line": [p.street], "city": "Springfield", "state": "IL", "postalCode": "62704"}]);
    }
    if !p.phone.is_empty() {
        v["telecom"] = json!([{"system": "phone", "value": p.phone}]);
    }
    v
}

fn raw(rtype: &str, id: &str, v: &serde_json::Value) -> RawResource {
    RawResource {
        resource_type: rtype.to_string(),
        logical_id: id.to_string(),
        version_id: None,
        last_updated: None,
        source_url: format!("https://ehr.example/{rtype}/{id}"),
        patient_id: (rtype == "Patient").then(|| id.to_string()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: serde_json::to_vec(v).unwrap(),
    }
}

async fn write(store: &dyn Store, conn: &str, resources: &[serde_json::Value]) {
    let batch: Vec<RawResource> = resources
        .iter()
        .map(|v| {
            raw(
                v["resourceType"].as_str().unwrap(),
                v["id"].as_str().unwrap(),
                v,
            )
        })
        .collect();
    store
        .write_resources(&ConnectionRef::new("acme", conn), &batch)
        .await
        .unwrap();
}

const ROBERT: P<'static> = P {
    id: "1",
    given: "Robert",
    family: "Smith",
    birth: "1970-05-05",
    gender: "male",
    street: "12 Main Street",
    phone: "2175550101",
};
const ANA: P<'static> = P {
    id: "2",
    given: "Ana",
    family: "Garcia",
    birth: "1988-02-29",
    gender: "female",
    street: "3 Pine Road",
    phone: "2175550102",
};
const WEI: P<'static> = P {
    id: "3",
    given: "Wei",
    family: "Chen",
    birth: "1961-09-09",
    gender: "male",
    street: "77 Cedar Court",
    phone: "2175550103",
};

async fn two_sources(store: &dyn Store) {
    write(
        store,
        "ehr",
        &[patient(&ROBERT), patient(&ANA), patient(&WEI)],
    )
    .await;
    write(
        store,
        "payer",
        &[
            patient(&P {
                id: "x",
                given: "Bob",
                street: "12 Main St",
                phone: "217-555-0101",
                ..ROBERT
            }),
            patient(&P {
                id: "y",
                street: "3 Pine Rd",
                phone: "",
                ..ANA
            }),
            patient(&P {
                id: "z",
                given: "Maria",
                family: "Okafor",
                birth: "1995-11-30",
                gender: "female",
                street: "9 Elm Street",
                phone: "2175550199",
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn patients_of_two_sources_become_one_person_and_ids_stay_when_a_third_arrives() {
    let (store, _dir) = sqlite().await;
    two_sources(store.as_ref()).await;
    let first = update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!(first.records, 6);
    assert_eq!(first.matched, 6);
    assert_eq!(first.persons, 4, "{first:?}");
    assert_eq!(first.across_sources, 2, "Robert/Bob Smith and Ana Garcia");
    let smith = store
        .person_of_record("acme", "ehr/Patient/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.person("acme", smith).await.unwrap().unwrap().records,
        vec!["ehr/Patient/1", "payer/Patient/x"]
    );
    let before = store.list_persons("acme", None, 100).await.unwrap();

    // nothing changed: nothing is compared, nothing recorded
    let again = update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!((again.matched, again.events), (0, 0), "{again:?}");
    assert_eq!(store.list_persons("acme", None, 100).await.unwrap(), before);

    // a third source: its Robert joins the Smiths, every earlier record keeps its person
    write(
        store.as_ref(),
        "clinic",
        &[patient(&P {
            id: "c9",
            phone: "",
            ..ROBERT
        })],
    )
    .await;
    let third = update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!(third.matched, 1, "only the new record is compared");
    assert_eq!(
        store
            .person_of_record("acme", "clinic/Patient/c9")
            .await
            .unwrap(),
        Some(smith)
    );
    for p in &before {
        for r in &p.records {
            assert_eq!(
                store.person_of_record("acme", r).await.unwrap(),
                Some(p.person),
                "{r} keeps its person"
            );
        }
    }
    // the join is an event with its evidence
    let events = store
        .identity_events("acme", Some(smith), None, 10)
        .await
        .unwrap();
    let joined = &events[0].event;
    assert_eq!(joined.kind, "joined");
    assert_eq!(joined.records, vec!["clinic/Patient/c9"]);
    assert!(joined.detail.contains("\"terms\""), "{}", joined.detail);

    // the evidence of a pair, with the organization's model
    let e = explain_pair(store.as_ref(), "acme", "ehr/Patient/1", "payer/Patient/x")
        .await
        .unwrap();
    assert!(e.total > e.thresholds.link, "{e}");
    assert!(!e.terms.is_empty());
}

#[tokio::test]
async fn links_from_sources_join_records_and_a_reviewer_unlink_outlasts_rematching() {
    let (store, _dir) = sqlite().await;
    two_sources(store.as_ref()).await;
    // the EHR says its old record 7 was replaced by 1 (a merge upstream), whatever the names
    let mut old = patient(&P {
        id: "7",
        given: "Rob",
        family: "Smyth-Jones",
        birth: "1971-01-01",
        gender: "male",
        street: "",
        phone: "",
    });
    old["link"] = json!([{"other": {"reference": "Patient/1"}, "type": "replaced-by"}]);
    write(store.as_ref(), "ehr", &[old]).await;
    // an HL7 merge (ADT^A40) converted to a Linkage: h1 survives, h2 was merged into it
    write(
        store.as_ref(),
        "hl7-lab",
        &[
            patient(&P { id: "h1", ..WEI }),
            patient(&P {
                id: "h2",
                given: "W",
                family: "Chan",
                birth: "1960-01-01",
                gender: "male",
                street: "",
                phone: "",
            }),
            json!({
                "resourceType": "Linkage", "id": "merge-h2-h1", "active": true,
                "item": [
                    {"type": "source", "resource": {"reference": "Patient/h1"}},
                    {"type": "historical", "resource": {"reference": "Patient/h2"}}
                ]
            }),
        ],
    )
    .await;
    let r = update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!(r.forced, 2, "{r:?}");
    let person = |rec: &'static str| {
        let store = store.clone();
        async move { store.person_of_record("acme", rec).await.unwrap() }
    };
    assert_eq!(person("ehr/Patient/7").await, person("ehr/Patient/1").await);
    assert_eq!(
        person("hl7-lab/Patient/h2").await,
        person("hl7-lab/Patient/h1").await
    );
    assert_eq!(
        person("hl7-lab/Patient/h1").await,
        person("ehr/Patient/3").await,
        "the HL7 record of Wei Chen is matched with the EHR's"
    );
    let state = store.identity_state("acme").await.unwrap();
    assert_eq!(state.forced.len(), 2);
    assert!(
        state
            .forced
            .iter()
            .any(|f| f.source.starts_with("FHIR Patient.link replaced-by"))
    );
    assert!(
        state
            .forced
            .iter()
            .any(|f| f.source.starts_with("HL7 Linkage/merge-h2-h1"))
    );
    // read again, the same links are not recorded twice
    update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!(store.identity_state("acme").await.unwrap().forced.len(), 2);

    // a reviewer says Ana's two records are two people
    let (a, b) = decide_pair(
        store.as_ref(),
        "acme",
        "ehr/Patient/2",
        "payer/Patient/y",
        false,
        "api-key:k1",
        Some("different mothers"),
    )
    .await
    .unwrap();
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    let audit = store.match_decisions("acme", 10).await.unwrap();
    assert_eq!(audit[0].reviewer, "api-key:k1");
    assert_eq!(audit[0].note.as_deref(), Some("different mothers"));
    let split = store.identity_events("acme", None, None, 1).await.unwrap();
    assert_eq!(split[0].event.kind, "split");

    // the payer sends Ana's record again, changed: re-matching does not undo the reviewer
    write(
        store.as_ref(),
        "payer",
        &[patient(&P {
            id: "y",
            street: "3 Pine Road",
            ..ANA
        })],
    )
    .await;
    let r = update_identity(store.as_ref(), "acme").await.unwrap();
    assert_eq!(r.matched, 1);
    assert_ne!(
        person("ehr/Patient/2").await,
        person("payer/Patient/y").await
    );
    assert_eq!(person("ehr/Patient/2").await, a);
}

#[tokio::test]
async fn an_unknown_record_cannot_be_decided() {
    let (store, _dir) = sqlite().await;
    two_sources(store.as_ref()).await;
    update_identity(store.as_ref(), "acme").await.unwrap();
    let err = decide_pair(
        store.as_ref(),
        "acme",
        "ehr/Patient/1",
        "nowhere/Patient/0",
        true,
        "api-key:k1",
        None,
    )
    .await;
    assert!(err.is_err());
    assert!(store.match_decisions("acme", 10).await.unwrap().is_empty());
    // another organization has none of acme's persons
    assert!(
        store
            .list_persons("other", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
