//! A provider's signing keys (GitHub's, GitLab's), fetched from its public-key document and
//! cached, and the check of a report's signature against them.
//!
//! The document (`{"public_keys":[{"key_identifier","key","is_current"}]}`, keys in PEM) is
//! fetched the first time a report arrives, then again only when a report names an identifier
//! the cache does not hold (the provider rotated its key), and such refetches are themselves at
//! most one per [`REFETCH_INTERVAL_MS`]: a flood of made-up identifiers costs the provider's URL
//! one request a minute, never one per report. Fetches are serialised, so reports that arrive
//! together with one new identifier share one fetch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

/// Least time between two refetches caused by unknown identifiers, monotonic milliseconds.
pub const REFETCH_INTERVAL_MS: u64 = 60_000;
/// Largest public-key document read.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest identifier looked up (GitHub's are 64 hex digits).
const MAX_IDENTIFIER_LEN: usize = 256;
/// Longest base64 signature accepted (a DER P-256 signature is at most 72 bytes).
const MAX_SIGNATURE_LEN: usize = 200;

/// Why a report's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The identifier or signature header is missing or not text.
    #[error("the signature headers are missing")]
    Missing,
    /// No key with this identifier, even after a refetch.
    #[error("no public key with this identifier")]
    UnknownKey,
    /// The signature is not base64 of an ASN.1 DER ECDSA signature.
    #[error("the signature is not base64 ASN.1 DER")]
    Malformed,
    /// The signature does not verify over the body.
    #[error("the signature does not verify")]
    Mismatch,
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<DocumentKey>,
}

#[derive(Deserialize)]
struct DocumentKey {
    key_identifier: String,
    key: String,
}

/// Parses a public-key document: the keys that parse (a key in a format we cannot read is
/// skipped, and logged, rather than losing the others).
fn parse_document(bytes: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut keys = HashMap::new();
    for k in doc.public_keys {
        match VerifyingKey::from_public_key_pem(k.key.trim()) {
            Ok(key) => {
                keys.insert(k.key_identifier, key);
            }
            Err(e) => {
                tracing::warn!(identifier = k.key_identifier, error = %e, "provider public key skipped")
            }
        }
    }
    Ok(keys)
}

#[derive(Debug, Default)]
struct FetchState {
    /// A fetch has been tried.
    loaded: bool,
    /// Monotonic ms of the last refetch caused by an unknown identifier.
    refetched_at: Option<u64>,
    /// Fetches made (for tests and logs).
    fetches: u64,
}

/// One provider's keys.
pub struct ProviderKeys {
    /// `github` or `gitlab`, for the logs.
    provider: &'static str,
    url: String,
    agent: ureq::Agent,
    keys: RwLock<Arc<HashMap<String, VerifyingKey>>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKeys")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ProviderKeys {
    /// The keys of `provider` published at `url`; nothing is fetched until a report arrives.
    pub fn new(provider: &'static str, url: String) -> Self {
        Self {
            provider,
            url,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(FETCH_TIMEOUT))
                .build()
                .into(),
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    fn cached(&self, identifier: &str) -> Option<VerifyingKey> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(identifier)
            .copied()
    }

    /// How many times the document was fetched.
    pub async fn fetches(&self) -> u64 {
        self.fetch.lock().await.fetches
    }

    /// The key named `identifier`: from the cache, or after one fetch when the cache has never
    /// been filled or (at most once per [`REFETCH_INTERVAL_MS`]) does not know it.
    async fn key(&self, identifier: &str, now_ms: u64) -> Result<VerifyingKey, SignatureError> {
        if let Some(key) = self.cached(identifier) {
            return Ok(key);
        }
        let mut state = self.fetch.lock().await;
        // Another report may have fetched it while this one waited.
        if let Some(key) = self.cached(identifier) {
            return Ok(key);
        }
        if state.loaded {
            if state
                .refetched_at
                .is_some_and(|at| now_ms.saturating_sub(at) < REFETCH_INTERVAL_MS)
            {
                return Err(SignatureError::UnknownKey);
            }
            state.refetched_at = Some(now_ms);
        }
        state.loaded = true;
        state.fetches += 1;
        let (agent, url) = (self.agent.clone(), self.url.clone());
        let fetched = tokio::task::spawn_blocking(move || fetch_document(&agent, &url))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match fetched {
            Ok(keys) => {
                tracing::info!(
                    provider = self.provider,
                    keys = keys.len(),
                    "provider public keys fetched"
                );
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
            }
            Err(error) => {
                tracing::warn!(
                    provider = self.provider,
                    error,
                    "provider public keys not fetched"
                );
            }
        }
        self.cached(identifier).ok_or(SignatureError::UnknownKey)
    }

    /// Checks `signature` (base64 of ASN.1 DER) over the raw `body` with the key `identifier`.
    pub async fn verify(
        &self,
        identifier: &str,
        signature: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), SignatureError> {
        if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN {
            return Err(SignatureError::UnknownKey);
        }
        if signature.len() > MAX_SIGNATURE_LEN {
            return Err(SignatureError::Malformed);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
        // Go's crypto/ecdsa (GitHub's) does not normalise S; the check accepts either form.
        let signature = signature.normalize_s().unwrap_or(signature);
        let key = self.key(identifier, now_ms).await?;
        key.verify(body, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

fn fetch_document(agent: &ureq::Agent, url: &str) -> Result<HashMap<String, VerifyingKey>, String> {
    let mut response = agent
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT_BYTES)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    parse_document(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_key_in_another_format_is_skipped_not_fatal() {
        let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let pem = p256::pkcs8::EncodePublicKey::to_public_key_pem(
            key.verifying_key(),
            p256::pkcs8::LineEnding::LF,
        )
        .unwrap();
        let doc = serde_json::json!({"public_keys": [
            {"key_identifier": "good", "key": pem, "is_current": true},
            {"key_identifier": "bad", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "is_current": false},
        ]});
        let keys = parse_document(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["good"], *key.verifying_key());
        assert!(parse_document(b"[]").is_err());
    }
}
