//! `aqueduct export` over a real SQLite store filled by a real sync against the simulator:
//! CSV always; Parquet (with the `parquet` feature) read back by DuckDB and pyarrow from PyPI
//! and compared with the store.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
#[cfg(feature = "parquet")]
use std::process::Stdio;
use std::process::{Command, Output};

#[cfg(feature = "parquet")]
const INSTALL_HINT: &str = "install python3 and pip with `apt-get install python3 python3-pip` \
     (Debian) or your platform's packages; `.ci/run` installs them in CI";

fn aqueduct(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .env_remove("AQUEDUCT_VAULT_KEY")
        .env_remove("AQUEDUCT_STORE")
        .env_remove("AQUEDUCT_CONFIG")
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A store filled by `aqueduct sync` of a simulated EHR (client-credentials auth), in `dir`.
fn synced_store(dir: &Path) -> aqueduct_testkit::process::Killed {
    let (sim, base) = aqueduct_testkit::process::start_sim(
        env!("CARGO_BIN_EXE_aqueduct"),
        &[
            "--patients",
            "4",
            "--personality",
            "reference",
            "--resources-per-patient",
            "40",
        ],
    );
    std::fs::write(
        dir.join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[organizations.acme.connections.src]
base_url = "{base}"
profile = "hapi"
resource_types = ["Patient", "Condition", "Observation", "Encounter"]
auth = {{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = {{ value = "sim-confidential-secret" }} }}
"#
        ),
    )
    .unwrap();
    ok(aqueduct(dir, &["sync", "src", "--json"]), "sync");
    sim
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join(aqueduct_config::DEFAULT_STORE)
}

async fn live_count(dir: &Path, rtype: &str) -> u64 {
    let store = aqueduct_store::open(store_path(dir).to_str().unwrap())
        .await
        .unwrap();
    let conn = aqueduct_core::ConnectionRef::new("acme", "src");
    store
        .count_by_type(&conn)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.resource_type == rtype)
        .map_or(0, |c| c.live)
}

fn export_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&ok(aqueduct(dir, &all), "export")).unwrap()
}

fn written(report: &serde_json::Value) -> Vec<String> {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["written"] == true)
        .map(|p| p["view"].as_str().unwrap().to_string())
        .collect()
}

fn rows_of(report: &serde_json::Value, view: &str) -> u64 {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["view"] == view)
        .unwrap()["rows"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_rewrites_only_the_partitions_whose_resources_changed() {
    let dir = tempfile::tempdir().unwrap();
    let _sim = synced_store(dir.path());
    let d = dir.path();

    let first = export_json(d, &["csv", "--org", "acme", "--out", "out"]);
    assert_eq!(
        written(&first).len(),
        11,
        "every shipped view is written: {first}"
    );
    let patients = live_count(d, "Patient").await;
    assert_eq!(patients, 4);
    assert_eq!(rows_of(&first, "patient"), patients);
    assert_eq!(
        rows_of(&first, "observation"),
        live_count(d, "Observation").await
    );
    let csv_path = d.join("out/patient/organization=acme/source=src/data.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(csv.starts_with("id,active,gender,birth_date,"), "{csv}");
    assert_eq!(csv.lines().count() as u64, patients + 1);

    // nothing changed: nothing is rewritten
    let again = export_json(d, &["csv", "--org", "acme", "--out", "out"]);
    assert!(written(&again).is_empty(), "{again}");

    // one patient changes in the store: only the patient view's partition is written again
    let store = aqueduct_store::open(store_path(d).to_str().unwrap())
        .await
        .unwrap();
    let conn = aqueduct_core::ConnectionRef::new("acme", "src");
    let page = store
        .list_resources(&conn, "Patient", None, 1, false)
        .await
        .unwrap();
    let mut p: serde_json::Value = serde_json::from_slice(&page[0].bytes).unwrap();
    p["gender"] = serde_json::json!("unknown");
    p["birthDate"] = serde_json::json!("1901-02-03");
    store
        .write_resources(
            &conn,
            &[aqueduct_core::RawResource {
                resource_type: "Patient".into(),
                logical_id: page[0].logical_id.clone(),
                version_id: None,
                last_updated: None,
                source_url: "test".into(),
                patient_id: page[0].patient_id.clone(),
                parse_status: aqueduct_core::ParseStatus::Ok,
                fetched_at: chrono::Utc::now(),
                bytes: serde_json::to_vec(&p).unwrap(),
            }],
        )
        .await
        .unwrap();
    drop(store);
    let third = export_json(d, &["csv", "--org", "acme", "--out", "out"]);
    assert_eq!(written(&third), ["patient"], "{third}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{},", page[0].logical_id))
                && l.contains(",unknown,1901-02-03,")),
        "{csv}"
    );

    // the clean form: facade ids and references, its own output directory
    let clean = export_json(
        d,
        &[
            "csv",
            "--org",
            "acme",
            "--clean",
            "--view",
            "observation",
            "--out",
            "clean",
        ],
    );
    assert_eq!(written(&clean), ["observation"]);
    let obs =
        std::fs::read_to_string(d.join("clean/observation/organization=acme/source=src/data.csv"))
            .unwrap();
    let second_line = obs.lines().nth(1).unwrap();
    assert!(
        second_line.starts_with("src.") && second_line.contains(",src."),
        "{second_line}"
    );

    // a view of the user's, from a directory; a broken one is refused with where it breaks
    let views = d.join("views");
    std::fs::create_dir(&views).unwrap();
    std::fs::write(
        views.join("names.json"),
        r#"{"resourceType": "ViewDefinition", "name": "names", "resource": "Patient",
            "select": [{"column": [{"name": "id", "path": "id"}]},
                       {"forEach": "name", "column": [{"name": "family", "path": "family"}]}]}"#,
    )
    .unwrap();
    let mine = export_json(
        d,
        &["csv", "--org", "acme", "--views", "views", "--out", "mine"],
    );
    assert_eq!(written(&mine), ["names"]);
    std::fs::write(
        views.join("broken.json"),
        r#"{"name": "broken", "resource": "Patient", "select": [{"forEach": "name.where("}]}"#,
    )
    .unwrap();
    let out = aqueduct(
        d,
        &[
            "export", "csv", "--org", "acme", "--views", "views", "--out", "mine",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.json") && err.contains("select[0].forEach"),
        "{err}"
    );
}

/// pip-installs DuckDB and pyarrow (pinned) into the reader kit, once per requirements file.
#[cfg(feature = "parquet")]
fn python_readers() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export_readers");
    let target = kit.join(".pydeps");
    let lock = kit.join("requirements.txt");
    let want = std::fs::read(&lock).unwrap();
    let stamp = target.join(".aqueduct-installed-from");
    if std::fs::read(&stamp).ok().as_deref() != Some(&want[..]) {
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--upgrade",
                "--target",
            ])
            .arg(&target)
            .arg("-r")
            .arg(&lock)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 -m pip ({e}); {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "pip install of DuckDB and pyarrow failed ({}); {INSTALL_HINT}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(stamp, want).unwrap();
    }
    target
}

#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_read_by_duckdb_and_pyarrow_matches_the_store() {
    let pydeps = python_readers();
    let dir = tempfile::tempdir().unwrap();
    let _sim = synced_store(dir.path());
    let d = dir.path();
    let raw = export_json(d, &["parquet", "--org", "acme", "--out", "raw"]);
    assert_eq!(written(&raw).len(), 11, "{raw}");
    let clean = export_json(
        d,
        &["parquet", "--org", "acme", "--clean", "--out", "clean"],
    );
    assert_eq!(written(&clean).len(), 11, "{clean}");
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export_readers/check.py"))
        .arg(store_path(d))
        .arg(d.join("raw"))
        .arg(d.join("clean"))
        .arg("acme")
        .env("PYTHONPATH", &pydeps)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "the readers disagree with the store:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        figures["patient"].as_u64(),
        Some(live_count(d, "Patient").await)
    );
    assert_eq!(
        figures["observation"].as_u64(),
        Some(live_count(d, "Observation").await)
    );
    assert!(
        figures["observations_with_value"].as_u64().unwrap() > 0,
        "{figures}"
    );
}
