//! End to end: the real worker under `wrangler dev` reads both key formats. A v2 key (sealed,
//! what the control plane issues) and a v1 key (claims in clear, issued before v2) reach the
//! origin with their identity; a v2 key tampered under a recomputed checksum, or read with
//! another kid of the ring, gets exactly the answer of a forged key.

use e2e::http::Response;
use e2e::keys::{self, SHARDS, key_id, shard_bytes, sign_push};
use e2e::stack::{Options, Stack};
use shared::key::{self, Environment};
use shared::mac::Keyring;
use shared::scope::Permission;

fn bearer(stack: &Stack, key: &str) -> Response {
    let auth = format!("Bearer {key}");
    stack.edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"")
}

/// `text`'s payload with `f` applied, re-encoded with a valid checksum.
fn tampered(text: &str, f: impl Fn(&mut [u8])) -> String {
    let start = text.rfind('_').expect("separator") + 1;
    let mut payload = shared::base62::decode(&text[start..start + key::PAYLOAD_CHARS])
        .expect("a key's payload decodes");
    f(&mut payload);
    key::encode_raw(&text[4..start - 1], &payload)
}

#[test]
fn worker_reads_v2_and_v1_keys_and_refuses_tampered_v2_as_forged() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    for shard in 0..SHARDS {
        let body = shard_bytes(&stack.keyring, shard, 1, &[], 3_600);
        let auth = sign_push(&stack.keyring, shard, &body);
        let r = stack.edge(
            "PUT",
            &format!("/_lynxo/sync/revocations/{shard}"),
            &[
                ("Content-Type", "application/octet-stream"),
                ("Lynxo-Signature", &auth),
            ],
            &body,
        );
        assert_eq!(r.status, 204, "shard {shard}: {}", r.text());
    }

    let scopes = Permission::ReadOnly.scopes();
    let v2_claims = keys::claims(key_id(0, 1), Environment::Development, scopes);
    let v1_claims = keys::claims(key_id(1, 1), Environment::Development, scopes);
    let v2 = keys::issue(&stack.keyring, &v2_claims);
    let v1 = key::issue_v1(&v1_claims, &stack.keyring)
        .expect("kid 1 is in the stack's ring")
        .into_inner();
    for (name, text, claims) in [("v2", &v2, &v2_claims), ("v1", &v1, &v1_claims)] {
        let r = bearer(&stack, text);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let echo = r.json();
        assert_eq!(echo["account_id"], claims.account_id, "{name}");
        assert_eq!(echo["key_id"], claims.key_id.to_string(), "{name}");
        assert_eq!(echo["environment"], "development", "{name}");
    }

    // What a forged key gets: a key of the same shape sealed under a secret the worker lacks.
    let other = Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).expect("ring");
    let forged = bearer(&stack, &keys::issue(&other, &v2_claims));
    assert_eq!(forged.status, 401, "{}", forged.text());
    for (what, text) in [
        ("sealed claims changed", tampered(&v2, |p| p[40] ^= 0x01)),
        ("tag changed", tampered(&v2, |p| p[12] ^= 0x80)),
        ("read with kid 2", tampered(&v2, |p| p[1] ^= 1 ^ 2)),
        (
            "version changed",
            tampered(&v2, |p| p[0] = 2 + (p[0] - 1) % 254),
        ),
    ] {
        let r = bearer(&stack, &text);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.body, forged.body, "{what}");
    }
}
