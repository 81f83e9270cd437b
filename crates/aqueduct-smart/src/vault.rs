//! The credential vault: secrets encrypted with AES-256-GCM before they reach the store.
//!
//! Record format: `version (1 byte = 1) | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag`.
//! The associated data binds a record to its organization, connection and secret name, so a
//! ciphertext copied to another tenant or another name does not decrypt.

use std::path::Path;
use std::sync::Arc;

use aqueduct_core::{ConnectionRef, Store};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{DecryptCause, SmartError};

/// The environment variable holding the base64 vault key (32 bytes).
pub const VAULT_KEY_ENV: &str = "AQUEDUCT_VAULT_KEY";

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Secret names used by this crate.
pub mod names {
    /// The token set (access, refresh and id tokens with their metadata), JSON.
    pub const TOKENS: &str = "tokens";
    /// A symmetric client secret.
    pub const CLIENT_SECRET: &str = "client_secret";
    /// Our private signing key (JSON: alg, kid, PKCS#8 PEM).
    pub const PRIVATE_KEY: &str = "private_key";
}

/// A 256-bit vault key. `Debug` shows only its id.
pub struct VaultKey {
    id: [u8; KEY_ID_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultKey(id={})", self.id_hex())
    }
}

impl VaultKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<VaultKey, SmartError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            SmartError::VaultKey(format!(
                "the vault key must be 32 bytes, got {}",
                bytes.len()
            ))
        })?;
        let mut h = Sha256::new();
        h.update(b"aqueduct-vault-key-id");
        h.update(arr);
        let digest = h.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(VaultKey {
            id,
            key: Zeroizing::new(arr),
        })
    }

    /// From base64 text (standard alphabet, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<VaultKey, SmartError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SmartError::VaultKey("the vault key is not valid base64".into()))?,
        );
        Self::from_bytes(&bytes)
    }

    /// From `AQUEDUCT_VAULT_KEY`.
    pub fn from_env() -> Result<VaultKey, SmartError> {
        let v = Zeroizing::new(
            std::env::var(VAULT_KEY_ENV)
                .map_err(|_| SmartError::VaultKey(format!("{VAULT_KEY_ENV} is not set")))?,
        );
        Self::from_base64(&v)
    }

    /// From a key file holding base64 text (or exactly 32 raw bytes).
    pub fn from_file(path: &Path) -> Result<VaultKey, SmartError> {
        let raw = Zeroizing::new(std::fs::read(path).map_err(|e| {
            SmartError::VaultKey(format!("cannot read key file {}: {e}", path.display()))
        })?);
        if raw.len() == 32 {
            return Self::from_bytes(&raw);
        }
        let text = std::str::from_utf8(&raw).map_err(|_| {
            SmartError::VaultKey(format!(
                "key file {} is neither base64 nor 32 bytes",
                path.display()
            ))
        })?;
        Self::from_base64(text)
    }

    /// The env var when set, else the key file when given.
    pub fn load(key_file: Option<&Path>) -> Result<VaultKey, SmartError> {
        if std::env::var_os(VAULT_KEY_ENV).is_some() {
            return Self::from_env();
        }
        match key_file {
            Some(p) => Self::from_file(p),
            None => Err(SmartError::VaultKey(format!(
                "no vault key: set {VAULT_KEY_ENV} (base64 of 32 bytes) or configure a key file"
            ))),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<VaultKey, SmartError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut())
            .map_err(|_| SmartError::Crypto("random generator failed".into()))?;
        Self::from_bytes(bytes.as_ref())
    }

    /// Base64 of the key, e.g. to write a key file. Secret.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_ref()))
    }

    /// The non-secret key id stored in each record, hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn aead(&self) -> Result<LessSafeKey, SmartError> {
        let unbound = UnboundKey::new(&AES_256_GCM, self.key.as_ref())
            .map_err(|_| SmartError::Crypto("AES-256-GCM key rejected".into()))?;
        Ok(LessSafeKey::new(unbound))
    }
}

fn aad(conn: &ConnectionRef, name: &str) -> Vec<u8> {
    let mut out = b"aqueduct-vault-v1".to_vec();
    for part in [
        conn.organization.as_bytes(),
        conn.connection.as_bytes(),
        name.as_bytes(),
    ] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Encrypts one secret for (organization, connection, name).
pub fn seal(
    key: &VaultKey,
    conn: &ConnectionRef,
    name: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, SmartError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| SmartError::Crypto("random generator failed".into()))?;
    let mut buf = plaintext.to_vec();
    key.aead()?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(conn, name)),
            &mut buf,
        )
        .map_err(|_| SmartError::Crypto("encryption failed".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + buf.len());
    out.push(VERSION);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Decrypts one record; any failure (wrong key, other tenant, tampering, truncation) is
/// `VaultDecrypt` naming the connection and secret.
pub fn open(
    key: &VaultKey,
    conn: &ConnectionRef,
    name: &str,
    record: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SmartError> {
    let fail = |cause: DecryptCause| SmartError::VaultDecrypt {
        connection: conn.to_string(),
        secret: name.to_string(),
        cause,
    };
    if record.len() < HEADER_LEN + AES_256_GCM.tag_len() || record[0] != VERSION {
        return Err(fail(DecryptCause::Malformed));
    }
    if record[1..1 + KEY_ID_LEN] != key.id {
        return Err(fail(DecryptCause::WrongKey {
            record_key_id: hex::encode(&record[1..1 + KEY_ID_LEN]),
            current_key_id: key.id_hex(),
        }));
    }
    let nonce: [u8; NONCE_LEN] = record[1 + KEY_ID_LEN..HEADER_LEN]
        .try_into()
        .map_err(|_| fail(DecryptCause::Malformed))?;
    let mut buf = Zeroizing::new(record[HEADER_LEN..].to_vec());
    let plain_len = key
        .aead()?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(conn, name)),
            buf.as_mut_slice(),
        )
        .map_err(|_| fail(DecryptCause::Altered))?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// The vault over a store.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    key: Arc<VaultKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Vault(store={}, key={:?})",
            self.store.location(),
            self.key
        )
    }
}

impl Vault {
    pub fn new(store: Arc<dyn Store>, key: VaultKey) -> Vault {
        Vault {
            store,
            key: Arc::new(key),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn put(
        &self,
        conn: &ConnectionRef,
        name: &str,
        plaintext: &[u8],
    ) -> Result<(), SmartError> {
        let record = seal(&self.key, conn, name, plaintext)?;
        self.store.put_secret(conn, name, &record).await?;
        Ok(())
    }

    pub async fn get(
        &self,
        conn: &ConnectionRef,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SmartError> {
        match self.store.get_secret(conn, name).await? {
            None => Ok(None),
            Some(record) => open(&self.key, conn, name, &record).map(Some),
        }
    }

    pub async fn delete(&self, conn: &ConnectionRef, name: &str) -> Result<bool, SmartError> {
        Ok(self.store.delete_secret(conn, name).await?)
    }

    /// Stores a symmetric client secret.
    pub async fn put_client_secret(
        &self,
        conn: &ConnectionRef,
        secret: &str,
    ) -> Result<(), SmartError> {
        self.put(conn, names::CLIENT_SECRET, secret.as_bytes())
            .await
    }

    pub async fn get_client_secret(
        &self,
        conn: &ConnectionRef,
    ) -> Result<Option<Zeroizing<String>>, SmartError> {
        Ok(self
            .get(conn, names::CLIENT_SECRET)
            .await?
            .map(|b| Zeroizing::new(String::from_utf8_lossy(&b).into_owned())))
    }

    /// Stores our private signing key.
    pub async fn put_private_key(
        &self,
        conn: &ConnectionRef,
        key: &crate::keys::SigningKey,
    ) -> Result<(), SmartError> {
        self.put(conn, names::PRIVATE_KEY, &key.to_vault_bytes())
            .await
    }

    pub async fn get_private_key(
        &self,
        conn: &ConnectionRef,
    ) -> Result<Option<crate::keys::SigningKey>, SmartError> {
        match self.get(conn, names::PRIVATE_KEY).await? {
            None => Ok(None),
            Some(b) => crate::keys::SigningKey::from_vault_bytes(&b).map(Some),
        }
    }

    /// Re-encrypts every secret of `organization` from `old_key` to `new_key`. Everything is
    /// decrypted first: if any record does not open with the old key, nothing is rewritten.
    /// Records already under the new key are left alone (so an interrupted rotation can be
    /// re-run). Returns how many records were rewritten.
    pub async fn rotate(
        store: &dyn Store,
        organization: &str,
        old_key: &VaultKey,
        new_key: &VaultKey,
    ) -> Result<usize, SmartError> {
        let records = store.list_secrets(organization).await?;
        let mut plain = Vec::new();
        for (connection, name, record) in records {
            let conn = ConnectionRef::new(organization, connection);
            if record.len() > KEY_ID_LEN && record[1..1 + KEY_ID_LEN] == new_key.id {
                // already rotated; check it opens
                open(new_key, &conn, &name, &record)?;
                continue;
            }
            let p = open(old_key, &conn, &name, &record)?;
            plain.push((conn, name, p));
        }
        for (conn, name, p) in &plain {
            let record = seal(new_key, conn, name, p)?;
            store.put_secret(conn, name, &record).await?;
        }
        Ok(plain.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_binding() {
        let k = VaultKey::generate().expect("key");
        let a = ConnectionRef::new("org-a", "epic");
        let b = ConnectionRef::new("org-b", "epic");
        let r1 = seal(&k, &a, "tokens", b"secret").expect("seal");
        let r2 = seal(&k, &a, "tokens", b"secret").expect("seal");
        assert_ne!(r1, r2, "fresh nonce each time");
        assert_eq!(&open(&k, &a, "tokens", &r1).expect("open")[..], b"secret");
        assert!(matches!(
            open(&k, &b, "tokens", &r1),
            Err(SmartError::VaultDecrypt { .. })
        ));
        assert!(open(&k, &a, "client_secret", &r1).is_err());
        let other = VaultKey::generate().expect("key");
        let err = open(&other, &a, "tokens", &r1).expect_err("wrong key");
        assert!(err.to_string().contains("org-a/epic"));
        assert!(
            matches!(
                &err,
                SmartError::VaultDecrypt { cause: DecryptCause::WrongKey { record_key_id, .. }, .. }
                    if *record_key_id == k.id_hex()
            ),
            "{err}"
        );
        assert!(matches!(
            open(&k, &b, "tokens", &r1),
            Err(SmartError::VaultDecrypt {
                cause: DecryptCause::Altered,
                ..
            })
        ));
        let mut tampered = r1.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open(&k, &a, "tokens", &tampered).is_err());
        assert!(open(&k, &a, "tokens", &[]).is_err());
        assert!(!format!("{k:?}").contains(&*k.to_base64()));
    }

    #[test]
    fn key_parsing() {
        assert!(VaultKey::from_base64("AAAA").is_err());
        let k = VaultKey::generate().expect("key");
        let k2 = VaultKey::from_base64(&format!(" {}\n", &*k.to_base64())).expect("parse");
        assert_eq!(k.id_hex(), k2.id_hex());
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = VaultKey::generate().expect("key");
        let b64 = dir.path().join("key.b64");
        std::fs::write(&b64, format!("{}\n", &*k.to_base64())).expect("write");
        assert_eq!(VaultKey::from_file(&b64).expect("b64").id_hex(), k.id_hex());
        let raw = dir.path().join("key.bin");
        std::fs::write(&raw, [9u8; 32]).expect("write");
        assert!(VaultKey::from_file(&raw).is_ok());
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "too short").expect("write");
        let err = VaultKey::from_file(&bad).expect_err("bad key");
        assert!(matches!(err, SmartError::VaultKey(_)));
        assert!(VaultKey::from_file(&dir.path().join("missing")).is_err());
    }
}
