//! A secret-scanning provider as GitHub and GitLab are to the control plane: a P-256 signing
//! key, its public-key document (`{"public_keys":[{"key_identifier","key","is_current"}]}`)
//! served on loopback with a count of fetches, and signatures over report bodies. The same
//! fixture as the control plane's own tests (one file, included by path).

#[path = "../../control/tests/common/provider.rs"]
mod fixture;

use sha2::{Digest as _, Sha256};

pub use fixture::Provider;

/// SHA-256 of `text`, lowercase hex: GitHub's `token_hash`.
pub fn token_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
