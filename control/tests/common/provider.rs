//! A secret-scanning provider for the control plane's tests and benchmarks (`#[path]`-included):
//! a P-256 signing key and its public-key document served on loopback, counting fetches.
//! The end-to-end harness includes this file too (`tests/src/provider.rs`).
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// A provider: its signing key, and its public-key document served on loopback, counting
/// fetches.
pub struct Provider {
    key: SigningKey,
    pub identifier: String,
    pub url: String,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    pub fn new(seed: u8) -> Self {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let identifier = hex::encode(Sha256::digest([seed]));
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let doc = json!({"public_keys": [
            {"key_identifier": identifier, "key": pem, "is_current": true}
        ]})
        .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
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

    pub fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
