//! HTTPS from configured certificate files (made by rcgen at test time): a client that trusts
//! the CA gets the facade with HSTS (and the dashboard's cookies are Secure); plain HTTP on the same port gets nothing; half a TLS
//! configuration or a non-loopback bind without TLS is refused before listening.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_serve::{AppState, ServeSettings};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

#[tokio::test]
async fn the_facade_is_served_over_tls_only() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let store = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let (record, key) =
        aqueduct_serve::generate_key("acme", aqueduct_store::ApiScope::Read, None).unwrap();
    aqueduct_store::Access::create_api_key(store.as_ref(), &record)
        .await
        .unwrap();
    let settings = ServeSettings {
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path),
        ..Default::default()
    };
    let state = AppState::new(store, Arc::new(Default::default()), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(aqueduct_serve::serve(
        listener,
        state,
        std::future::pending(),
    ));

    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_cert.pem().as_bytes()).unwrap()])
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = trusting
        .get(format!("https://localhost:{port}/fhir/acme/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    // the facade's links and fullUrls stay on https
    let bundle: serde_json::Value = trusting
        .get(format!("https://localhost:{port}/fhir/acme/Patient"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let self_link = bundle["link"][0]["url"].as_str().unwrap();
    assert!(
        self_link.starts_with(&format!("https://localhost:{port}/fhir/acme/")),
        "{self_link}"
    );
    // without a key, still 401 over TLS
    let r = trusting
        .get(format!("https://localhost:{port}/api/v1/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // the dashboard's cookies are Secure over TLS
    let login = trusting
        .get(format!("https://localhost:{port}/dashboard/login"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("aqueduct_login=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    // plain HTTP on the TLS port gets no answer
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/fhir/acme/metadata"))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // a client that does not trust the certificate is refused in the handshake
    let untrusting = reqwest::Client::new()
        .get(format!("https://127.0.0.1:{port}/fhir/acme/metadata"))
        .send()
        .await;
    assert!(untrusting.is_err());

    // configurations that would serve patient data in the clear, or half-configured TLS
    let half = ServeSettings {
        tls_cert: Some(cert_path),
        ..Default::default()
    };
    assert!(half.check().is_err());
    let exposed = ServeSettings {
        bind: "0.0.0.0:8443".parse().unwrap(),
        ..Default::default()
    };
    let e = exposed.check().unwrap_err().to_string();
    assert!(e.contains("not a loopback address"), "{e}");
}
