//! Writes the committed test vectors: `cargo run -p shared --example gen_vectors > shared/tests/vectors/lynxo-v1.json`.
//!
//! The vectors pin the format: a change that alters any issued key, error or shard byte makes
//! `tests/vectors.rs` fail until the vectors are regenerated on purpose (and the format version
//! bumped). Secrets here are test-only.

use serde_json::{Value, json};
use shared::key::{self, Claims, Environment, KeyId};
use shared::mac::{Keyring, Secret};
use shared::revocation::{RevocationShard, ShardHeader, shard_of};
use shared::scope::{Permission, Scope, ScopeSet};

const NOW: u64 = 1_750_000_000;

fn claims_json(c: &Claims) -> Value {
    let scopes: Value = if c.scopes.is_full_access() {
        json!("full_access")
    } else {
        c.scopes.iter().map(Scope::name).collect()
    };
    json!({
        "kid": c.kid,
        "account_id": c.account_id,
        "key_id": c.key_id.to_string(),
        "environment": c.environment.name(),
        "scopes": scopes,
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
    })
}

type Issuer = fn(&Claims, &Keyring) -> Result<key::PlainKey, key::IssueError>;

/// One invalid-key vector: name, text, time, expected error code.
type Case = (&'static str, String, u64, &'static str);

/// The payload bytes of a `lnx_live_` key text.
fn payload_of(text: &str) -> Vec<u8> {
    let start = text.rfind('_').unwrap() + 1;
    shared::base62::decode(&text[start..start + key::PAYLOAD_CHARS]).unwrap()
}

/// `good`'s payload changed by `f`, written as a key of `env` with a valid checksum.
fn with_payload(good: &str, env: &str, f: &dyn Fn(&mut Vec<u8>)) -> String {
    let mut p = payload_of(good);
    f(&mut p);
    key::encode_raw(env, &p)
}

/// Mistakes in the text, caught before any secret: the same for every format.
fn text_cases(good: &str) -> Vec<Case> {
    let mut substituted = good.to_owned().into_bytes();
    substituted[30] = if substituted[30] == b'a' { b'b' } else { b'a' };
    let overflow = {
        let mut t = good[..good.len() - key::CHECKSUM_CHARS].to_owned();
        t.replace_range(9..20, "zzzzzzzzzzz");
        key::with_checksum(t)
    };
    vec![
        (
            "leading space",
            format!(" {good}"),
            NOW,
            "surrounding_whitespace",
        ),
        (
            "trailing newline",
            format!("{good}\n"),
            NOW,
            "surrounding_whitespace",
        ),
        ("empty", String::new(), NOW, "missing_prefix"),
        (
            "whole Authorization value pasted",
            format!("Bearer {good}"),
            NOW,
            "missing_prefix",
        ),
        (
            "another vendor's key",
            "sk_live_51HqLyjWDarjtT1zdp7dc".to_owned(),
            NOW,
            "missing_prefix",
        ),
        (
            "hyphen inside",
            format!("{}-{}", &good[..20], &good[21..]),
            NOW,
            "invalid_character",
        ),
        (
            "last character lost",
            good[..good.len() - 1].to_owned(),
            NOW,
            "invalid_length",
        ),
        ("character added", format!("{good}x"), NOW, "invalid_length"),
        (
            "no environment separator",
            good.replacen("lnx_live_", "lnx_live", 1),
            NOW,
            "invalid_length",
        ),
        (
            "one character mistyped",
            String::from_utf8(substituted).unwrap(),
            NOW,
            "invalid_checksum",
        ),
        (
            "unknown environment",
            with_payload(good, "prod", &|_| {}),
            NOW,
            "unknown_environment",
        ),
        (
            "environment relabelled",
            with_payload(good, "dev", &|_| {}),
            NOW,
            "malformed",
        ),
        ("chunk out of range", overflow, NOW, "malformed"),
    ]
}

/// Tampering and forgery that pass the checksum, by format.
fn format_cases(format: u8, good: &str, ring: &Keyring) -> Vec<Case> {
    let tampered = |f: &dyn Fn(&mut Vec<u8>)| with_payload(good, "live", f);
    if format == 1 {
        return vec![
            (
                "first byte 0, reserved",
                tampered(&|p| p[0] = 0),
                NOW,
                "unsupported_version",
            ),
            ("unknown kid", tampered(&|p| p[1] = 9), NOW, "unknown_kid"),
            (
                "tag bit flipped",
                tampered(&|p| p[60] ^= 0x01),
                NOW,
                "bad_tag",
            ),
            (
                "claims changed, tag kept",
                tampered(&|p| p[15] ^= 0x01),
                NOW,
                "bad_tag",
            ),
            (
                "scopes widened, tag kept",
                tampered(&|p| p[4] = 0x80),
                NOW,
                "bad_tag",
            ),
        ];
    }
    // Genuine tags on layouts no issuer writes: what a holder of a leaked secret could make.
    let sealed = |claims: [u8; key::CLAIMS_LEN], ring: &Keyring| {
        key::encode_raw("live", &key::seal_raw(&claims, ring).unwrap())
    };
    let mut layout = [0_u8; key::CLAIMS_LEN];
    layout[..8].copy_from_slice(&[2, 1, 2, 0, 0, 0, 0, 3]);
    let mut future = layout;
    future[0] = 3;
    let mut bad_environment = layout;
    bad_environment[2] = 7;
    let mut expiry_without_flag = layout;
    expiry_without_flag[47] = 1;
    let mut retired = layout;
    retired[1] = 3;
    let retired_ring = Keyring::new(3, &[(3, Secret::new(vec![0x33; 32]).unwrap())]).unwrap();
    vec![
        (
            "first byte 0, reserved",
            tampered(&|p| p[0] = 0),
            NOW,
            "unsupported_version",
        ),
        (
            "version byte changed",
            tampered(&|p| p[0] = 2 + (p[0] - 1) % 254),
            NOW,
            "unsupported_version",
        ),
        (
            "sealed as version 3",
            sealed(future, ring),
            NOW,
            "unsupported_version",
        ),
        (
            "sealed by a retired kid",
            sealed(retired, &retired_ring),
            NOW,
            "unknown_kid",
        ),
        (
            "kid byte changed",
            tampered(&|p| p[1] ^= 0x40),
            NOW,
            "unknown_kid",
        ),
        (
            "kid switched to another kid of the ring",
            tampered(&|p| p[1] ^= 1 ^ 2),
            NOW,
            "bad_tag",
        ),
        (
            "tag bit flipped",
            tampered(&|p| p[10] ^= 0x01),
            NOW,
            "bad_tag",
        ),
        (
            "last tag byte changed",
            tampered(&|p| p[17] ^= 0xFF),
            NOW,
            "bad_tag",
        ),
        (
            "sealed claims bit flipped",
            tampered(&|p| p[30] ^= 0x01),
            NOW,
            "bad_tag",
        ),
        (
            "last sealed byte changed",
            tampered(&|p| p[63] ^= 0x80),
            NOW,
            "bad_tag",
        ),
        (
            "v1 claims behind a v2 header",
            v1_behind_v2_header(good),
            NOW,
            "bad_tag",
        ),
        (
            "genuine tag, unknown environment code",
            sealed(bad_environment, ring),
            NOW,
            "malformed",
        ),
        (
            "genuine tag, expiry without its flag",
            sealed(expiry_without_flag, ring),
            NOW,
            "malformed",
        ),
    ]
}

/// `good`'s header and tag in front of the claims in clear: what a v1 reader would have read.
fn v1_behind_v2_header(good: &str) -> String {
    let mut p = payload_of(good);
    let mut clear = [0_u8; key::CLAIMS_LEN];
    clear[..2].copy_from_slice(&[2, 1]);
    clear[2..8].copy_from_slice(&[2, 0, 0, 0, 0, 3]);
    p[18..].copy_from_slice(&clear[2..]);
    key::encode_raw("live", &p)
}

fn main() {
    let secrets = [(1_u8, [0x11_u8; 32]), (2, [0x22; 32])];
    let ring = Keyring::new(
        1,
        &secrets.map(|(kid, s)| (kid, Secret::new(s.to_vec()).unwrap())),
    )
    .unwrap();
    let id = |b: u8| KeyId([b; 16]);
    let base = Claims {
        kid: 1,
        account_id: 42,
        key_id: id(0xA1),
        environment: Environment::Production,
        scopes: Permission::ReadWrite.scopes(),
        issued_at: 1_700_000_000,
        expires_at: None,
    };
    let valid_claims = [
        ("production read/write", base),
        (
            "staging read only",
            Claims {
                environment: Environment::Staging,
                scopes: Permission::ReadOnly.scopes(),
                key_id: id(0xB2),
                ..base
            },
        ),
        (
            "development full access",
            Claims {
                environment: Environment::Development,
                scopes: ScopeSet::FULL_ACCESS,
                key_id: id(0xC3),
                ..base
            },
        ),
        (
            "custom scopes with expiry",
            Claims {
                scopes: ScopeSet::EMPTY
                    .with(Scope::JobsRead)
                    .with(Scope::FilesWrite),
                expires_at: Some(NOW + 1),
                key_id: id(0xD4),
                ..base
            },
        ),
        (
            "no scopes, signed by kid 2",
            Claims {
                kid: 2,
                scopes: ScopeSet::EMPTY,
                key_id: id(0xE5),
                ..base
            },
        ),
        (
            "extreme values",
            Claims {
                account_id: u64::MAX,
                key_id: KeyId([0xFF; 16]),
                issued_at: u64::MAX,
                expires_at: Some(u64::MAX),
                ..base
            },
        ),
        (
            "zero values",
            Claims {
                account_id: 0,
                key_id: KeyId([0; 16]),
                issued_at: 0,
                ..base
            },
        ),
    ];
    let issuers: [(u8, Issuer); 2] = [(1, key::issue_v1), (2, key::issue)];
    let ring_ref = &ring;
    let valid: Vec<Value> = issuers
        .iter()
        .flat_map(|&(format, issue)| {
            valid_claims.iter().map(move |(name, c)| {
                let text = issue(c, ring_ref).unwrap().into_inner();
                json!({"name": format!("v{format}: {name}"), "format": format, "text": text,
                       "payload": hex::encode(payload_of(&text)), "now": NOW, "claims": claims_json(c)})
            })
        })
        .collect();

    let mut invalid = Vec::new();
    for (format, issue) in issuers {
        let good = issue(&base, &ring).unwrap().into_inner();
        let expiring = issue(&valid_claims[3].1, &ring).unwrap().into_inner();
        invalid.extend(
            text_cases(&good)
                .into_iter()
                .chain(format_cases(format, &good, &ring))
                .chain([
                    ("expired", expiring.clone(), NOW + 1, "expired"),
                    ("expired long ago", expiring, u64::MAX, "expired"),
                ])
                .map(|(name, text, now, error)| {
                    json!({"name": format!("v{format}: {name}"), "format": format, "text": text,
                           "now": now, "error": error})
                }),
        );
    }
    let header = |shard, shard_count, version| ShardHeader {
        shard,
        shard_count,
        version,
        issued_at: NOW - 60,
        next_update: NOW + 300,
    };
    let revoked = [KeyId([0x01; 16]), KeyId([0x50; 16]), KeyId([0x7F; 16])];
    let single = RevocationShard::new(header(0, 1, 7), 1, revoked)
        .unwrap()
        .encode(&ring)
        .unwrap();
    let low: Vec<KeyId> = revoked
        .iter()
        .copied()
        .filter(|k| shard_of(*k, 4) == 1)
        .collect();
    let sharded = RevocationShard::new(header(1, 4, 8), 2, low.iter().copied())
        .unwrap()
        .encode(&ring)
        .unwrap();
    let empty = RevocationShard::new(header(3, 4, 9), 1, [])
        .unwrap()
        .encode(&ring)
        .unwrap();
    let mut tampered = single.clone();
    tampered[shared::revocation::HEADER_LEN] ^= 0x80;
    let mut unknown_kid = single.clone();
    unknown_kid[5] = 9;
    let hexes = |ids: &[KeyId]| ids.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let not_revoked = hexes(&[KeyId([0x02; 16]), KeyId([0x00; 16]), KeyId([0xFF; 16])]);
    let list = |name: &str,
                bytes: &[u8],
                now: u64,
                seen: Option<u64>,
                error: Option<&str>,
                rev: &[KeyId]| {
        json!({"name": name, "hex": hex::encode(bytes), "now": now, "seen_version": seen, "error": error,
               "revoked": hexes(rev), "not_revoked": not_revoked})
    };
    let lists = vec![
        list("one shard, three ids", &single, NOW, None, None, &revoked),
        list(
            "same version seen before",
            &single,
            NOW,
            Some(7),
            None,
            &revoked,
        ),
        list("shard 1 of 4, kid 2", &sharded, NOW, Some(3), None, &low),
        list("empty shard", &empty, NOW, None, None, &[]),
        list("rollback", &single, NOW, Some(8), Some("rollback"), &[]),
        list(
            "past next update",
            &single,
            NOW + 300,
            None,
            Some("stale"),
            &[],
        ),
        list("tampered id", &tampered, NOW, None, Some("bad_tag"), &[]),
        list(
            "unknown kid",
            &unknown_kid,
            NOW,
            None,
            Some("unknown_kid"),
            &[],
        ),
        list(
            "truncated",
            &single[..single.len() - 1],
            NOW,
            None,
            Some("invalid_length"),
            &[],
        ),
        list(
            "not a shard",
            b"{\"revoked\":[]}0123456789012345678901234567890123456789012345678901234567890123",
            NOW,
            None,
            Some("bad_magic"),
            &[],
        ),
    ];

    let routes = [
        ("GET", "/v1/jobs", json!(["jobs:read"]), "ok"),
        ("HEAD", "/v1/jobs/job_1", json!(["jobs:read"]), "ok"),
        (
            "POST",
            "/v1/jobs",
            json!(["jobs:read"]),
            "insufficient_scope:jobs:write",
        ),
        ("POST", "/v1/jobs/job_1/cancel", json!(["jobs:write"]), "ok"),
        (
            "DELETE",
            "/v1/files/f_1",
            json!(["files:read"]),
            "insufficient_scope:files:write",
        ),
        ("PATCH", "/v1/account", "full_access".into(), "ok"),
        (
            "PATCH",
            "/v1/account",
            json!(["account:read"]),
            "insufficient_scope:account:write",
        ),
        (
            "GET",
            "/v1/usage",
            json!([]),
            "insufficient_scope:usage:read",
        ),
        (
            "PUT",
            "/v1/jobs",
            "full_access".into(),
            "method_not_allowed",
        ),
        ("GET", "/v1/nothing", "full_access".into(), "no_route"),
        ("GET", "/v1/jobs/", "full_access".into(), "no_route"),
    ];
    let routes: Vec<Value> = routes
        .iter()
        .map(|(m, p, s, r)| json!({"method": m, "path": p, "scopes": s, "result": r}))
        .collect();

    let doc = json!({
        "description": "Lynxo Keys test vectors: key formats v1 (claims in clear) and v2 (sealed), revocation lists, routes. Generated by shared/examples/gen_vectors.rs. Secrets are test-only.",
        "keyring": {"active": 1, "keys": secrets.iter().map(|(kid, s)| json!({"kid": kid, "secret": hex::encode(s)})).collect::<Vec<_>>()},
        "valid_keys": valid,
        "invalid_keys": invalid,
        "revocation_lists": lists,
        "routes": routes,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}
