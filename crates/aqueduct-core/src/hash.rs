use sha2::{Digest, Sha256};

/// Hex SHA-256 of a resource's bytes: how the store tells "unchanged" from "updated".
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
