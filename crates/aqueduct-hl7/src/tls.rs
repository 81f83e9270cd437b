//! MLLP over TLS (rustls on the aws-lc-rs provider): the listener's certificate, optional
//! client certificates verified against a CA, and the fingerprint (SHA-256 of the DER) by
//! which a sender's certificate is pinned per sending facility.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::Hl7Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Hl7Error> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Hl7Error::Tls(format!("{what}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Hl7Error::Tls(format!("{what}: no certificate in the PEM")));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Hl7Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Hl7Error::Tls(format!("{what}: no private key in the PEM: {e}")))
}

fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, Hl7Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(pem, what)? {
        roots
            .add(c)
            .map_err(|e| Hl7Error::Tls(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// Hex SHA-256 of a certificate's DER: how a sender's certificate is named in
/// `sender_certificates`.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the first certificate of a PEM file.
pub fn pem_fingerprint(pem: &[u8]) -> Result<String, Hl7Error> {
    Ok(fingerprint(certs(pem, "certificate")?[0].as_ref()))
}

/// The listener's TLS side.
#[derive(Clone)]
pub struct TlsSettings {
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings { .. }")
    }
}

impl TlsSettings {
    /// The listener's certificate chain and key (PEM); with `client_ca`, clients may present
    /// a certificate issued by it (verified, and then matched against `sender_certificates`);
    /// with `require_client_certificate` too, a client without one is refused in the handshake.
    pub fn from_pem(
        cert_chain: &[u8],
        private_key: &[u8],
        client_ca: Option<&[u8]>,
        require_client_certificate: bool,
    ) -> Result<Self, Hl7Error> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Hl7Error::Tls(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca, "client CA")?),
                    provider(),
                );
                let verifier = if require_client_certificate {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| Hl7Error::Tls(e.to_string()))?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(
                certs(cert_chain, "listener certificate")?,
                key(private_key, "listener key")?,
            )
            .map_err(|e| Hl7Error::Tls(format!("listener certificate and key: {e}")))?;
        Ok(TlsSettings {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// The sender's TLS side: the CA that issued the listener's certificate, the name to check it
/// against, and optionally the sender's own certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls {{ server_name: {:?} }}", self.server_name)
    }
}

impl ClientTls {
    pub fn from_pem(
        ca: &[u8],
        server_name: &str,
        client_cert: Option<(&[u8], &[u8])>,
    ) -> Result<Self, Hl7Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Hl7Error::Tls(e.to_string()))?
            .with_root_certificates(roots(ca, "listener CA")?);
        let config = match client_cert {
            Some((chain, k)) => builder
                .with_client_auth_cert(certs(chain, "client certificate")?, key(k, "client key")?)
                .map_err(|e| Hl7Error::Tls(format!("client certificate and key: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| Hl7Error::Tls(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}
