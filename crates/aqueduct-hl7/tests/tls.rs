#![allow(clippy::unwrap_used)]
//! MLLP over TLS with real certificates (made by rcgen at test time): a sender whose facility
//! pins a client certificate must present it, an allow-list of sending facilities refuses the
//! others, a plain client cannot talk to a TLS listener, and plain MLLP refuses to listen on a
//! non-loopback address unless told to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aqueduct_hl7::{ClientTls, ListenerOptions, SendOptions, TlsSettings, listen, send_with};
use aqueduct_store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

const ORG: &str = "acme";

struct Pki {
    ca_pem: String,
    server: (String, String),
    hosp_client: (String, String),
    other_client: (String, String),
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Aqueduct test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        hosp_client: leaf("hosp-interface", ExtendedKeyUsagePurpose::ClientAuth),
        other_client: leaf("someone-else", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn adt(facility: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|APP|{facility}|AQ|AQ|20240102030405||ADT^A08^ADT_A01|{control}|P|2.5.1\rEVN|A08\rPID|1||{control}^^^{facility}^MR||Doe^John\r"
    )
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    (dir, s)
}

#[tokio::test]
async fn tls_with_per_sender_client_certificates_and_a_facility_allow_list() {
    let pki = make_pki();
    let (_dir, store) = store().await;
    let hosp_fp = aqueduct_hl7::tls::pem_fingerprint(pki.hosp_client.0.as_bytes()).unwrap();
    let options = ListenerOptions {
        tls: Some(
            TlsSettings::from_pem(
                pki.server.0.as_bytes(),
                pki.server.1.as_bytes(),
                Some(pki.ca_pem.as_bytes()),
                false,
            )
            .unwrap(),
        ),
        allowed_facilities: Some(BTreeSet::from(["HOSP".to_string(), "LAB".to_string()])),
        sender_certificates: BTreeMap::from([("HOSP".to_string(), vec![hosp_fp])]),
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), options)
        .await
        .unwrap();
    let client = |cert: Option<&(String, String)>| SendOptions {
        tls: Some(
            ClientTls::from_pem(
                pki.ca_pem.as_bytes(),
                "localhost",
                cert.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
            )
            .unwrap(),
        ),
        ..SendOptions::default()
    };
    let code = |r: &[aqueduct_hl7::AckResult]| {
        r[0].code
            .clone()
            .unwrap_or_else(|| format!("{:?}", r[0].error))
    };
    // HOSP with its own certificate
    let r = send_with(
        l.local_addr(),
        [adt("HOSP", "T1")],
        &client(Some(&pki.hosp_client)),
    )
    .await;
    assert_eq!(code(&r), "AA");
    // HOSP without a certificate, or with another sender's
    let r = send_with(l.local_addr(), [adt("HOSP", "T2")], &client(None)).await;
    assert_eq!(code(&r), "AR");
    assert!(
        r[0].text.as_deref().unwrap().contains("client certificate"),
        "{r:?}"
    );
    let r = send_with(
        l.local_addr(),
        [adt("HOSP", "T3")],
        &client(Some(&pki.other_client)),
    )
    .await;
    assert_eq!(code(&r), "AR");
    // LAB pins nothing; EVIL is not on the allow-list
    let r = send_with(l.local_addr(), [adt("LAB", "T4")], &client(None)).await;
    assert_eq!(code(&r), "AA");
    let r = send_with(
        l.local_addr(),
        [adt("EVIL", "T5")],
        &client(Some(&pki.hosp_client)),
    )
    .await;
    assert_eq!(code(&r), "AR");
    assert!(r[0].text.as_deref().unwrap().contains("EVIL"), "{r:?}");
    // a plain MLLP client cannot talk to the TLS listener
    let r = send_with(
        l.local_addr(),
        [adt("LAB", "T6")],
        &SendOptions {
            timeout: std::time::Duration::from_secs(3),
            ..SendOptions::default()
        },
    )
    .await;
    assert!(r[0].code.is_none(), "{r:?}");
    // nor can a client that does not trust the listener's certificate
    let stranger = make_pki();
    let r = send_with(
        l.local_addr(),
        [adt("LAB", "T7")],
        &SendOptions {
            tls: Some(ClientTls::from_pem(stranger.ca_pem.as_bytes(), "localhost", None).unwrap()),
            ..SendOptions::default()
        },
    )
    .await;
    assert!(r[0].error.as_deref().unwrap().contains("TLS"), "{r:?}");
    let stats = l.shutdown().await;
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.refused_sender_certificate, 2);
    assert_eq!(stats.refused_facility, 1);
    assert!(stats.tls_handshake_failures >= 1, "{stats:?}");
    let stored = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
}

#[tokio::test]
async fn plain_mllp_stays_on_loopback_unless_allowed() {
    let (_dir, store) = store().await;
    let err = listen(
        "0.0.0.0:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
    let l = listen(
        "0.0.0.0:0",
        store,
        ORG.into(),
        ListenerOptions {
            allow_plain_remote: true,
            ..ListenerOptions::default()
        },
    )
    .await
    .unwrap();
    l.shutdown().await;
}
