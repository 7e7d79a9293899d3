//! Checks the committed identity-signature vectors (`tests/vectors/identity-v2.json`). Like
//! `vectors.rs`, the same file runs natively and, built for wasm32, under Node
//! (`scripts/test-wasm.sh`), so what the worker signs and what an origin verifies are held to the
//! same bytes; a binding in another language checks the same file.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;

mod common;

use common::KeyringJson;
use serde::Deserialize;
use shared::identity::{
    Identity, REQUEST_ID_HEADER, ReplayCache, Request, RequestId, SIGNATURE_HEADER, scopes_value,
};
use shared::mac::Keyring;

const VECTORS: &str = include_str!("vectors/identity-v2.json");

#[derive(Deserialize)]
struct Vectors {
    keyring: KeyringJson,
    replay_cache: CacheJson,
    signatures: Vec<Signed>,
    verifications: Vec<Verification>,
}

#[derive(Deserialize)]
struct CacheJson {
    capacity: usize,
    window: u64,
}

#[derive(Deserialize)]
struct RequestJson {
    method: String,
    path: String,
    query: String,
    body_length: u64,
}

impl RequestJson {
    fn as_request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            body_length: self.body_length,
        }
    }
}

#[derive(Deserialize)]
struct Signed {
    name: String,
    request: RequestJson,
    request_id: String,
    signed_at: u64,
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Verification {
    name: String,
    headers: BTreeMap<String, String>,
    request: RequestJson,
    now: u64,
    result: String,
    verified: Option<VerifiedJson>,
}

#[derive(Deserialize)]
struct VerifiedJson {
    account_id: u64,
    key_id: String,
    environment: String,
    scopes: String,
    request_id: String,
    signed_at: u64,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors file parses")
}

fn keyring(v: &Vectors) -> Keyring {
    v.keyring.keyring()
}

fn cache(v: &Vectors) -> ReplayCache {
    ReplayCache::new(v.replay_cache.capacity, v.replay_cache.window).unwrap()
}

#[test]
fn the_edge_signs_byte_for_byte() {
    let v = vectors();
    let ring = keyring(&v);
    assert!(v.signatures.len() >= 4);
    for case in &v.signatures {
        let request = case.request.as_request();
        // Read the identity as an origin would, then sign it again as the edge does.
        let verified = Identity::verify(
            &ring,
            |n| case.headers.get(n).map(String::as_str),
            &request,
            case.signed_at,
            &mut cache(&v),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let id = RequestId::parse_hex(&case.request_id).unwrap();
        assert_eq!(verified.request_id, id, "{}", case.name);
        let mut headers: BTreeMap<String, String> = verified
            .identity
            .headers()
            .into_iter()
            .map(|(n, value)| (n.to_owned(), value))
            .collect();
        headers.insert(REQUEST_ID_HEADER.to_owned(), id.to_string());
        headers.insert(
            SIGNATURE_HEADER.to_owned(),
            verified.identity.sign(&ring, &request, id, case.signed_at),
        );
        assert_eq!(
            headers, case.headers,
            "{}: signed headers changed",
            case.name
        );
    }
}

#[test]
fn the_origin_answers_in_order() {
    let v = vectors();
    let ring = keyring(&v);
    let mut replay = cache(&v);
    let mut seen = Vec::new();
    for case in &v.verifications {
        let outcome = Identity::verify(
            &ring,
            |n| case.headers.get(n).map(String::as_str),
            &case.request.as_request(),
            case.now,
            &mut replay,
        );
        match (&outcome, &case.verified) {
            (Ok(got), Some(want)) => {
                assert_eq!(case.result, "ok", "{}", case.name);
                assert_eq!(got.identity.account_id, want.account_id, "{}", case.name);
                assert_eq!(
                    got.identity.key_id.to_string(),
                    want.key_id,
                    "{}",
                    case.name
                );
                assert_eq!(
                    got.identity.environment.name(),
                    want.environment,
                    "{}",
                    case.name
                );
                assert_eq!(
                    scopes_value(got.identity.scopes),
                    want.scopes,
                    "{}",
                    case.name
                );
                assert_eq!(got.request_id.to_string(), want.request_id, "{}", case.name);
                assert_eq!(got.signed_at, want.signed_at, "{}", case.name);
            }
            (Err(e), None) => assert_eq!(e.code(), case.result, "{}", case.name),
            _ => panic!("{}: got {outcome:?}, want {}", case.name, case.result),
        }
        seen.push(case.result.as_str());
    }
    assert!(replay.len() <= v.replay_cache.capacity);
    // Every refusal an origin can meet has a vector.
    for code in [
        "ok",
        "replayed",
        "bad_signature",
        "malformed_header",
        "missing_header",
        "malformed_signature",
        "unknown_kid",
        "outside_window",
        "replay_cache_full",
    ] {
        assert!(seen.contains(&code), "no vector for {code}");
    }
}
