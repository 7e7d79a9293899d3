//! A secret-scanning provider as GitHub and GitLab are to the control plane: a P-256 signing
//! key, its public-key document (`{"public_keys":[{"key_identifier","key","is_current"}]}`)
//! served on loopback with a count of fetches, and signatures over report bodies.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

/// A provider with one signing key.
pub struct Provider {
    key: SigningKey,
    /// The key's identifier in the document.
    pub identifier: String,
    /// Where the document is served.
    pub url: String,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    /// A provider whose key is derived from `seed`, serving its document on a loopback port
    /// until the test process exits.
    pub fn start(seed: u8) -> Self {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap_or_else(|e| panic!("key: {e}"));
        let identifier = hex::encode(Sha256::digest([seed]));
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_else(|e| panic!("pem: {e}"));
        let doc = serde_json::json!({"public_keys": [
            {"key_identifier": identifier, "key": pem, "is_current": true}
        ]})
        .to_string();
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("key server: {e}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}/meta/public_keys"),
            Err(e) => panic!("key server address: {e}"),
        };
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = [0_u8; 4096];
                let _ = conn.read(&mut head);
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
            }
        });
        Self {
            key,
            identifier,
            url,
            fetches,
        }
    }

    /// Base64 of the ASN.1 DER signature over `body`, as the providers send it.
    pub fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// How many times the document was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// SHA-256 of `text`, lowercase hex: GitHub's `token_hash`.
pub fn token_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
