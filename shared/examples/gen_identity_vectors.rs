//! Writes the committed identity-signature vectors:
//! `cargo run -p shared --example gen_identity_vectors > shared/tests/vectors/identity-v2.json`.
//!
//! They pin the wire format of the identity the edge forwards (`shared::identity`, scheme `v2`):
//! the headers signed for given requests, byte for byte, and what an origin's verification
//! answers, in order, against one replay cache. `tests/identity_vectors.rs` checks them natively
//! and as wasm32; a binding in another language must pass the same file. Secrets are test-only.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared::identity::{
    Identity, REQUEST_ID_HEADER, ReplayCache, Request, RequestId, SIGNATURE_HEADER, parse_scopes,
};
use shared::key::{Environment, KeyId};
use shared::mac::{Keyring, Secret};
use shared::scope::{Permission, Scope, ScopeSet};

const T: u64 = 1_750_000_000;
const WINDOW: u64 = 30;
const CAPACITY: usize = 3;

fn request_json(r: &Request<'_>) -> Value {
    json!({"method": r.method, "path": r.path, "query": r.query, "body_length": r.body_length})
}

/// The headers the edge sends for `identity` making `request` as `id` at `at`.
fn headers(
    ring: &Keyring,
    identity: &Identity,
    request: &Request<'_>,
    id: RequestId,
    at: u64,
) -> BTreeMap<String, String> {
    let mut h: BTreeMap<String, String> = identity
        .headers()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    h.insert(REQUEST_ID_HEADER.to_owned(), id.to_string());
    h.insert(
        SIGNATURE_HEADER.to_owned(),
        identity.sign(ring, request, id, at),
    );
    h
}

fn main() {
    let secrets = [(3_u8, [0x33_u8; 32]), (4, [0x44; 32])];
    let ring = Keyring::new(
        3,
        &secrets.map(|(kid, s)| (kid, Secret::new(s.to_vec()).unwrap())),
    )
    .unwrap();
    let other_ring = Keyring::new(9, &[(9, Secret::new(vec![0x99; 32]).unwrap())]).unwrap();
    let id = |b: u8| RequestId([b; 16]);
    let alice = Identity {
        account_id: 42,
        key_id: KeyId([0xA1; 16]),
        environment: Environment::Production,
        scopes: Permission::ReadOnly.scopes(),
    };
    let get = Request {
        method: "GET",
        path: "/v1/jobs",
        query: "limit=5&cursor=j_9",
        body_length: 0,
    };
    let post = Request {
        method: "POST",
        path: "/v1/jobs",
        query: "",
        body_length: 13,
    };

    let signed_cases = [
        ("GET with a query, read only", alice, get, id(0x01), T),
        (
            "POST with a body, full access, staging",
            Identity {
                environment: Environment::Staging,
                scopes: ScopeSet::FULL_ACCESS,
                ..alice
            },
            post,
            id(0x02),
            T,
        ),
        (
            "DELETE, custom scopes, development",
            Identity {
                account_id: 7,
                key_id: KeyId([0x0B; 16]),
                environment: Environment::Development,
                scopes: ScopeSet::EMPTY
                    .with(Scope::JobsWrite)
                    .with(Scope::FilesRead),
            },
            Request {
                method: "DELETE",
                path: "/v1/jobs/j_1",
                query: "",
                body_length: 0,
            },
            id(0x03),
            T + 1,
        ),
        (
            "no scopes",
            Identity {
                scopes: ScopeSet::EMPTY,
                ..alice
            },
            Request {
                method: "HEAD",
                path: "/v1/account",
                query: "a=%20b&c",
                body_length: 0,
            },
            id(0x04),
            T,
        ),
    ];
    let signatures: Vec<Value> = signed_cases
        .iter()
        .map(|(name, identity, request, rid, at)| {
            json!({
                "name": name,
                "request": request_json(request),
                "request_id": rid.to_string(),
                "signed_at": at,
                "headers": headers(&ring, identity, request, *rid, *at),
            })
        })
        .collect();

    // What an origin answers, in this order, with one cache of CAPACITY ids and WINDOW seconds.
    let good = headers(&ring, &alice, &get, id(0x10), T);
    let with = |name: &str, value: &str| {
        let mut h = good.clone();
        h.insert(name.to_owned(), value.to_owned());
        h
    };
    let without = |name: &str| {
        let mut h = good.clone();
        h.remove(name);
        h
    };
    let v1 = good[SIGNATURE_HEADER].replace("v2=", "v1=");
    let steps: Vec<(&str, BTreeMap<String, String>, Request<'_>, u64)> = vec![
        ("first use", good.clone(), get, T + 2),
        ("the same again: a replay", good.clone(), get, T + 3),
        (
            "another query",
            good.clone(),
            Request {
                query: "limit=500&cursor=j_9",
                ..get
            },
            T + 3,
        ),
        (
            "no query",
            good.clone(),
            Request { query: "", ..get },
            T + 3,
        ),
        (
            "another method",
            good.clone(),
            Request {
                method: "DELETE",
                ..get
            },
            T + 3,
        ),
        (
            "another path",
            good.clone(),
            Request {
                path: "/v1/account",
                ..get
            },
            T + 3,
        ),
        (
            "a body",
            good.clone(),
            Request {
                body_length: 1,
                ..get
            },
            T + 3,
        ),
        (
            "scopes raised by the client",
            with("lynxo-scopes", "*"),
            get,
            T + 3,
        ),
        (
            "another request id",
            with(REQUEST_ID_HEADER, &id(0x11).to_string()),
            get,
            T + 3,
        ),
        (
            "request id in capitals",
            with(REQUEST_ID_HEADER, &"AB".repeat(16)),
            get,
            T + 3,
        ),
        ("no request id", without(REQUEST_ID_HEADER), get, T + 3),
        ("no signature", without(SIGNATURE_HEADER), get, T + 3),
        (
            "account id with a leading zero",
            with("lynxo-account-id", "042"),
            get,
            T + 3,
        ),
        (
            "the previous scheme",
            with(SIGNATURE_HEADER, &v1),
            get,
            T + 3,
        ),
        (
            "signed by another keyring",
            headers(&other_ring, &alice, &get, id(0x12), T),
            get,
            T + 3,
        ),
        (
            "signed by the second kid",
            headers(
                &Keyring::new(4, &[(4, Secret::new(vec![0x44; 32]).unwrap())]).unwrap(),
                &alice,
                &get,
                id(0x13),
                T,
            ),
            get,
            T + 3,
        ),
        (
            "older than the window",
            headers(&ring, &alice, &get, id(0x14), T - WINDOW - 1),
            get,
            T,
        ),
        (
            "further ahead than the window",
            headers(&ring, &alice, &get, id(0x15), T + WINDOW + 1),
            get,
            T,
        ),
        (
            "at the edge of the window",
            headers(&ring, &alice, &get, id(0x16), T - WINDOW),
            get,
            T,
        ),
        // The cache holds 0x16 (signed at T - 30), 0x10 and 0x13 (at T): full. A newer id
        // evicts the oldest; while the cache is full, nothing signed no later than the oldest id
        // it holds (T now) gets in.
        (
            "a newer id when full evicts the oldest",
            headers(&ring, &alice, &get, id(0x17), T),
            get,
            T,
        ),
        (
            "the evicted id again",
            headers(&ring, &alice, &get, id(0x16), T - WINDOW),
            get,
            T,
        ),
        (
            "a new id signed no later than the evicted one",
            headers(&ring, &alice, &get, id(0x18), T - WINDOW),
            get,
            T,
        ),
        ("the first id still spent", good.clone(), get, T + 4),
        (
            "after the window the first id is past its signature",
            good.clone(),
            get,
            T + WINDOW + 1,
        ),
    ];
    let mut cache = ReplayCache::new(CAPACITY, WINDOW).unwrap();
    let verifications: Vec<Value> = steps
        .into_iter()
        .map(|(name, h, request, now)| {
            let outcome = Identity::verify(
                &ring,
                |n| h.get(n).map(String::as_str),
                &request,
                now,
                &mut cache,
            );
            let (result, identity) = match outcome {
                Ok(v) => (
                    "ok".to_owned(),
                    json!({
                        "account_id": v.identity.account_id,
                        "key_id": v.identity.key_id.to_string(),
                        "environment": v.identity.environment.name(),
                        "scopes": h["lynxo-scopes"],
                        "request_id": v.request_id.to_string(),
                        "signed_at": v.signed_at,
                    }),
                ),
                Err(e) => (e.code().to_owned(), Value::Null),
            };
            assert!(parse_scopes(&h["lynxo-scopes"]).is_some());
            json!({
                "name": name,
                "headers": h,
                "request": request_json(&request),
                "now": now,
                "result": result,
                "verified": identity,
            })
        })
        .collect();

    let doc = json!({
        "description": "Lynxo Keys identity signature (scheme v2) test vectors: the headers the edge forwards to the origin, and an origin's answers in order against one replay cache. Generated by shared/examples/gen_identity_vectors.rs. Secrets are test-only.",
        "keyring": {"active": 3, "keys": secrets.iter().map(|(kid, s)| json!({"kid": kid, "secret": hex::encode(s)})).collect::<Vec<_>>()},
        "replay_cache": {"capacity": CAPACITY, "window": WINDOW},
        "signatures": signatures,
        "verifications": verifications,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
