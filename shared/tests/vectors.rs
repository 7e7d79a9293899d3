//! Checks the committed vectors (`tests/vectors/lynxo-v1.json`: key formats v1 and v2, revocation
//! lists, routes). The same file runs natively and, built for wasm32, under Node
//! (`scripts/test-wasm.sh`), so the worker's build of this crate is held to the same bytes as the
//! control plane's.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;

use common::KeyringJson;
use serde::Deserialize;
use shared::key::{self, Claims, Environment, KeyId};
use shared::mac::Keyring;
use shared::revocation::RevocationShard;
use shared::scope::{self, PolicyError, ScopeSet};

const VECTORS: &str = include_str!("vectors/lynxo-v1.json");

#[derive(Deserialize)]
struct Vectors {
    keyring: KeyringJson,
    valid_keys: Vec<ValidKey>,
    invalid_keys: Vec<InvalidKey>,
    revocation_lists: Vec<ListVector>,
    routes: Vec<RouteVector>,
}

#[derive(Deserialize)]
struct ValidKey {
    name: String,
    format: u8,
    text: String,
    payload: String,
    now: u64,
    claims: ClaimsJson,
}

#[derive(Deserialize)]
struct ClaimsJson {
    kid: u8,
    account_id: u64,
    key_id: String,
    environment: String,
    scopes: serde_json::Value,
    issued_at: u64,
    expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct InvalidKey {
    name: String,
    format: u8,
    text: String,
    now: u64,
    error: String,
}

#[derive(Deserialize)]
struct ListVector {
    name: String,
    hex: String,
    now: u64,
    seen_version: Option<u64>,
    error: Option<String>,
    revoked: Vec<String>,
    not_revoked: Vec<String>,
}

#[derive(Deserialize)]
struct RouteVector {
    method: String,
    path: String,
    scopes: serde_json::Value,
    result: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors file parses")
}

fn keyring(v: &Vectors) -> Keyring {
    v.keyring.keyring()
}

fn scopes(value: &serde_json::Value) -> ScopeSet {
    match value {
        serde_json::Value::String(s) if s == "full_access" => ScopeSet::FULL_ACCESS,
        serde_json::Value::Array(names) => {
            ScopeSet::from_names(names.iter().map(|n| n.as_str().unwrap())).unwrap()
        }
        other => panic!("bad scopes {other}"),
    }
}

fn key_id(hex: &str) -> KeyId {
    KeyId::parse_hex(hex).unwrap()
}

impl ClaimsJson {
    fn to_claims(&self) -> Claims {
        Claims {
            kid: self.kid,
            account_id: self.account_id,
            key_id: key_id(&self.key_id),
            environment: Environment::from_name(&self.environment).unwrap(),
            scopes: scopes(&self.scopes),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }
}

#[test]
fn valid_keys_issue_and_verify_byte_for_byte() {
    let v = vectors();
    let ring = keyring(&v);
    for format in [1, 2] {
        let count = v.valid_keys.iter().filter(|k| k.format == format).count();
        assert!(count >= 5, "{count} valid v{format} keys");
    }
    for case in &v.valid_keys {
        let claims = case.claims.to_claims();
        let issued = match case.format {
            1 => key::issue_v1(&claims, &ring),
            2 => key::issue(&claims, &ring),
            other => panic!("{}: format {other}", case.name),
        }
        .unwrap();
        assert_eq!(
            issued.expose(),
            case.text,
            "{}: issued text changed",
            case.name
        );
        assert_eq!(
            key::verify(&case.text, &ring, case.now),
            Ok(claims),
            "{}",
            case.name
        );
        let parsed = key::parse(&case.text).unwrap();
        assert_eq!(parsed.environment, claims.environment, "{}", case.name);
        let payload = shared::base62::decode(core::str::from_utf8(parsed.payload).unwrap());
        assert_eq!(hex::encode(payload.unwrap()), case.payload, "{}", case.name);
    }
}

#[test]
fn invalid_keys_fail_with_their_error() {
    let v = vectors();
    let ring = keyring(&v);
    let mut seen = Vec::new();
    for case in &v.invalid_keys {
        let err = key::verify(&case.text, &ring, case.now).expect_err(&case.name);
        assert_eq!(err.code(), case.error, "{}: {err:?}", case.name);
        seen.push((case.format, err.code()));
    }
    // Every variant a caller can meet has a vector, in each format.
    for format in [1, 2] {
        for code in [
            "surrounding_whitespace",
            "missing_prefix",
            "invalid_character",
            "invalid_length",
            "invalid_checksum",
            "unknown_environment",
            "malformed",
            "unsupported_version",
            "unknown_kid",
            "bad_tag",
            "expired",
        ] {
            assert!(
                seen.contains(&(format, code)),
                "no v{format} vector for {code}"
            );
        }
    }
}

#[test]
fn revocation_lists_open_check_and_answer_membership() {
    let v = vectors();
    let ring = keyring(&v);
    for case in &v.revocation_lists {
        let bytes = hex::decode(&case.hex).unwrap();
        let result = RevocationShard::open(&bytes, &ring)
            .and_then(|shard| shard.check(case.now, case.seen_version).map(|()| shard));
        match (&result, &case.error) {
            (Ok(shard), None) => {
                for id in &case.revoked {
                    assert!(
                        shard.contains(key_id(id)),
                        "{}: {id} not revoked",
                        case.name
                    );
                }
                for id in &case.not_revoked {
                    assert!(!shard.contains(key_id(id)), "{}: {id} revoked", case.name);
                }
                assert_eq!(shard.len(), case.revoked.len(), "{}", case.name);
                assert_eq!(
                    shard.encode(&ring).unwrap(),
                    bytes,
                    "{}: re-encoding differs",
                    case.name
                );
            }
            (Err(err), Some(code)) => assert_eq!(err.code(), code, "{}", case.name),
            _ => panic!(
                "{}: got {:?}, want {:?}",
                case.name,
                result.map(|s| s.len()),
                case.error
            ),
        }
    }
}

#[test]
fn routes_follow_the_policy() {
    for case in vectors().routes {
        let got = match scope::authorize(scopes(&case.scopes), &case.method, &case.path) {
            Ok(_) => "ok".to_owned(),
            Err(PolicyError::InsufficientScope { needed }) => {
                format!("insufficient_scope:{needed}")
            }
            Err(PolicyError::MethodNotAllowed { .. }) => "method_not_allowed".to_owned(),
            Err(PolicyError::NoRoute) => "no_route".to_owned(),
            Err(other) => format!("{other:?}"),
        };
        assert_eq!(got, case.result, "{} {}", case.method, case.path);
    }
}
