//! Stock FHIR client libraries, used as published, read a demo patient's whole record through
//! `aqueduct serve`'s facade: fhirpy (PyPI) and fhir-kit-client (npm) each read the Patient,
//! search its Observations following every page, and run `$everything` following every page.
//! What each read must be exactly what the store holds for the patient.
//!
//! Needs python3 (with pip), node and npm; the libraries themselves are installed into the kit
//! (`tests/stock_clients/.pydeps`, `tests/stock_clients/node_modules`, both gitignored) from
//! the pinned `requirements.txt` and `package-lock.json` when missing or stale. A missing tool
//! fails the test with how to install it: it never skips.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aqueduct_store::{ConnectionRef, ParseStatus};

const CONNECTION: &str = "epic-main";
/// Small pages, so both searches take several.
const PAGE_SIZE: usize = 7;
const INSTALL_HINT: &str = "install python3, pip, node and npm with `apt-get install python3 \
     python3-pip nodejs npm` (Debian) or your platform's packages; `.ci/run` installs them in CI";

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stock_clients")
}

fn aqueduct(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .env_remove("AQUEDUCT_VAULT_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aqueduct {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, failing the test with `what` (and the install hint when the program is missing).
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?} ({e}); {INSTALL_HINT}",
            cmd.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tool the kit needs: missing or broken, the test fails saying how to install it.
fn require(cmd: &mut Command, what: &str) {
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{what} is needed and was not found; {INSTALL_HINT}");
}

/// Installs the pinned packages into `dir` unless the stamp there matches `lock`'s contents.
fn install_once(dir: &Path, lock: &Path, install: &mut Command, what: &str) {
    let want = std::fs::read(lock).unwrap();
    let stamp = dir.join(".aqueduct-installed-from");
    if std::fs::read(&stamp).ok().as_deref() == Some(&want[..]) {
        return;
    }
    eprintln!("stock_clients: installing {what} into {}", dir.display());
    run(install, &format!("installing {what}"));
    std::fs::write(stamp, want).unwrap();
}

fn python_deps() -> PathBuf {
    let kit = kit();
    let target = kit.join(".pydeps");
    require(
        Command::new("python3").args(["-m", "pip", "--version"]),
        "python3 with pip (for fhirpy)",
    );
    install_once(
        &target,
        &kit.join("requirements.txt"),
        Command::new("python3")
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
            .arg(kit.join("requirements.txt")),
        "fhirpy (pip install --target .pydeps -r requirements.txt)",
    );
    target
}

fn node_deps() {
    let kit = kit();
    require(
        Command::new("node").arg("--version"),
        "node (for fhir-kit-client)",
    );
    require(
        Command::new("npm").arg("--version"),
        "npm (to install fhir-kit-client)",
    );
    install_once(
        &kit.join("node_modules"),
        &kit.join("package-lock.json"),
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&kit),
        "fhir-kit-client (npm ci)",
    );
}

/// The `aqueduct serve` child, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one client printed.
#[derive(serde::Deserialize)]
struct Read {
    patient_id: String,
    observations: Vec<String>,
    everything: Vec<String>,
}

fn parse_read(who: &str, out: &Output) -> Read {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{who} printed no record ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn duplicates(ids: &[String]) -> Vec<&String> {
    let mut seen = BTreeMap::<&String, usize>::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect()
}

fn check(who: &str, read: &Read, patient: &str, obs: &BTreeSet<String>, all: &BTreeSet<String>) {
    assert_eq!(read.patient_id, patient, "{who}: the Patient read");
    assert!(
        duplicates(&read.observations).is_empty(),
        "{who}: Observations read twice across pages: {:?}",
        duplicates(&read.observations)
    );
    let got: BTreeSet<String> = read.observations.iter().cloned().collect();
    assert_eq!(
        &got,
        obs,
        "{who}: Observation?patient= read {} of the {} the store holds",
        got.len(),
        obs.len()
    );
    assert!(
        duplicates(&read.everything).is_empty(),
        "{who}: $everything gave resources twice across pages: {:?}",
        duplicates(&read.everything)
    );
    let got: BTreeSet<String> = read.everything.iter().cloned().collect();
    let missing: Vec<_> = all.difference(&got).collect();
    let extra: Vec<_> = got.difference(all).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{who}: $everything read {} resources; missing from what the store holds: {missing:?}; \
         not the patient's: {extra:?}",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirpy_and_fhir_kit_client_read_a_whole_record_through_the_facade() {
    // The tools first: a machine without them fails here, saying what to install.
    let pydeps = python_deps();
    node_deps();

    let dir = tempfile::tempdir().unwrap();
    aqueduct(dir.path(), &["demo", "--patients", "3"]);
    let key = String::from_utf8(
        aqueduct(
            dir.path(),
            &["api-keys", "create", "--org", "demo", "--scope", "read"],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(key.starts_with("aqk_"), "{key}");

    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--no-engine",
            ])
            .current_dir(dir.path())
            .env_remove("AQUEDUCT_VAULT_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let up = http
            .get(format!("{origin}/fhir/demo/metadata"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "aqueduct serve did not answer on {origin}: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let listed: serde_json::Value = http
        .get(format!("{origin}/api/v1/connections/{CONNECTION}/patients"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &listed["patients"][0];
    let pid = first["id"].as_str().unwrap().to_string();
    let patient = first["facade_id"].as_str().unwrap().to_string();
    assert_eq!(patient, format!("{CONNECTION}.{pid}"));

    // What the store holds for that patient, as facade ids.
    let store = aqueduct_store::open(
        &dir.path()
            .join("aqueduct-data/aqueduct.db")
            .to_string_lossy(),
    )
    .await
    .unwrap();
    let held = store
        .list_patient_resources(&ConnectionRef::new("demo", CONNECTION), &pid, None)
        .await
        .unwrap();
    let fid = |id: &str| format!("{CONNECTION}.{id}");
    let obs: BTreeSet<String> = held
        .iter()
        .filter(|r| r.resource_type == "Observation")
        .map(|r| fid(&r.logical_id))
        .collect();
    let mut all: BTreeSet<String> = held
        .iter()
        .filter(|r| aqueduct_serve::fhir::TYPES.contains(&r.resource_type.as_str()))
        // bytes that are not JSON are held but cannot be served as a resource
        .filter(|r| !matches!(r.parse_status, ParseStatus::InvalidJson(_)))
        .map(|r| format!("{}/{}", r.resource_type, fid(&r.logical_id)))
        .collect();
    all.insert(format!("Patient/{patient}"));
    assert!(
        obs.len() > 2 * PAGE_SIZE && all.len() > 2 * PAGE_SIZE,
        "the demo patient should need several pages: {} Observations, {} resources",
        obs.len(),
        all.len()
    );

    let base = format!("{origin}/fhir/demo");
    let page = PAGE_SIZE.to_string();
    let kit = kit();
    let python = run(
        Command::new("python3")
            .arg(kit.join("read_record.py"))
            .args([&base, &key, &patient, &page])
            .env("PYTHONPATH", &pydeps)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONNOUSERSITE", "1"),
        "fhirpy reading the record",
    );
    check(
        "fhirpy",
        &parse_read("fhirpy", &python),
        &patient,
        &obs,
        &all,
    );

    let node = run(
        Command::new("node")
            .arg(kit.join("read_record.mjs"))
            .args([&base, &key, &patient, &page])
            .current_dir(&kit),
        "fhir-kit-client reading the record",
    );
    check(
        "fhir-kit-client",
        &parse_read("fhir-kit-client", &node),
        &patient,
        &obs,
        &all,
    );
}
