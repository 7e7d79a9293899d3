//! Checks the committed audit-checkpoint vectors (`tests/vectors/audit-checkpoint-v1.json`),
//! natively and, built for wasm32, under Node (`scripts/test-wasm.sh`): the worker that stores
//! checkpoints parses the same bytes the control plane tags. The tag is also recomputed with the
//! reference `hmac` crate from the documented derivation.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use shared::audit::{self, AuditKeyring, CHECKPOINT_LEN, Checkpoint, CheckpointError};
use shared::mac::Keyring;

const VECTORS: &str = include_str!("vectors/audit-checkpoint-v1.json");

#[derive(Deserialize)]
struct Vectors {
    audit_keyring: String,
    signing_keyring: String,
    checkpoints: Vec<CheckpointVector>,
    read_signature_at_1800000100: String,
}

#[derive(Deserialize)]
struct CheckpointVector {
    name: String,
    kid: u8,
    seq: u64,
    legacy_upto: u64,
    at: u64,
    head: String,
    bytes: String,
    push_signature_at_1800000100: String,
}

const SIGNED_AT: u64 = 1_800_000_100;

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn checkpoint_vectors() {
    let v: Vectors = serde_json::from_str(VECTORS).unwrap();
    let ring = AuditKeyring::from_config(&v.audit_keyring).unwrap();
    let signing = Keyring::from_config(&v.signing_keyring).unwrap();
    let (_, secrets) = shared::mac::parse_config(&v.audit_keyring).unwrap();
    for c in &v.checkpoints {
        let bytes = hex::decode(&c.bytes).unwrap();
        assert_eq!(bytes.len(), CHECKPOINT_LEN, "{}", c.name);
        let mut head = [0; 32];
        head.copy_from_slice(&hex::decode(&c.head).unwrap());
        let expected = Checkpoint {
            kid: c.kid,
            seq: c.seq,
            legacy_upto: c.legacy_upto,
            at: c.at,
            head,
        };
        assert_eq!(Checkpoint::open(&bytes, &ring), Ok(expected), "{}", c.name);
        assert_eq!(
            expected.encode(&ring).unwrap().to_vec(),
            bytes,
            "{}",
            c.name
        );
        // The documented derivation, with the reference HMAC.
        let secret = secrets.iter().find(|(kid, _)| *kid == c.kid).unwrap();
        let subkey = hmac(secret.1.expose(), b"lynxo-keys/v1/audit-checkpoint");
        assert_eq!(hmac(&subkey, &bytes[..64]), bytes[64..], "{}", c.name);
        assert_eq!(
            audit::verify_push(
                &signing,
                &c.push_signature_at_1800000100,
                &bytes,
                SIGNED_AT,
                0
            ),
            Ok(SIGNED_AT),
            "{}",
            c.name
        );
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(
            Checkpoint::open(&flipped, &ring),
            Err(CheckpointError::BadTag)
        );
        assert_eq!(Checkpoint::parse_unverified(&flipped).unwrap().seq, c.seq);
    }
    assert_eq!(
        audit::verify_read(&signing, &v.read_signature_at_1800000100, SIGNED_AT, 0),
        Ok(SIGNED_AT)
    );
}
