//! `aqueduct match ...` against a real SQLite store: a round of matching, the evidence of a
//! pair printed with each comparison's weight and the total, a decision recorded with who
//! decided.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

use aqueduct_store::{ConnectionRef, Organization, ParseStatus, RawResource};
use chrono::Utc;

fn patient(id: &str, given: &str, street: &str) -> RawResource {
    let body = serde_json::json!({
        "resourceType": "Patient", "id": id,
        "name": [{"family": "Smith", "given": [given]}],
        "birthDate": "1970-05-05", "gender": "male",
        "address": [{"line": [street], "city": "Springfield", "state": "IL", "postalCode": "62704"}],
        "telecom": [{"system": "phone", "value": "2175550101"}],
    });
    RawResource {
        resource_type: "Patient".into(),
        logical_id: id.into(),
        version_id: None,
        last_updated: None,
        source_url: "https://ehr.example/Patient".into(),
        patient_id: Some(id.into()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: serde_json::to_vec(&body).unwrap(),
    }
}

fn aqueduct(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .arg("--store")
        .arg(dir.join("s.db"))
        .args(args)
        .current_dir(dir)
        .env("USER", "alice")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn match_explains_a_pair_and_records_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap();
        store
            .upsert_organization(&Organization {
                name: "acme".into(),
                display_name: None,
            })
            .await
            .unwrap();
        store
            .write_resources(
                &ConnectionRef::new("acme", "ehr"),
                &[patient("1", "Robert", "12 Main Street")],
            )
            .await
            .unwrap();
        store
            .write_resources(
                &ConnectionRef::new("acme", "payer"),
                &[patient("x", "Bob", "12 Main St")],
            )
            .await
            .unwrap();
    }
    let (ok, out) = aqueduct(dir.path(), &["match", "update"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("identity: 1 people matched across sources"),
        "{out}"
    );

    let (ok, out) = aqueduct(
        dir.path(),
        &["match", "explain", "ehr.1", "payer/Patient/x"],
    );
    assert!(ok, "{out}");
    for line in [
        "given name",
        "birth date",
        "phone",
        "total",
        "decision: link",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }

    let (ok, out) = aqueduct(
        dir.path(),
        &[
            "match", "review", "--decide", "ehr.1", "payer.x", "unlink", "--note", "twins",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("cli:alice unlinked ehr.1 and payer.x"),
        "{out}"
    );
    let (ok, out) = aqueduct(dir.path(), &["match", "update"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("identity: 0 people matched across sources"),
        "{out}"
    );

    let (ok, out) = aqueduct(dir.path(), &["match", "explain", "ehr.1", "nowhere"]);
    assert!(!ok);
    assert!(out.contains("names no Patient record"), "{out}");
}
