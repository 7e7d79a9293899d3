//! End to end: the real worker under `wrangler dev` in front of the demo origin, over real HTTP.
//!
//! One stack serves every scenario (starting workerd takes seconds), run in order by one test so
//! the KV state each scenario builds on is explicit. Each scenario is its own function, named
//! for what it shows; a failure names the scenario.

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::http::Response;
use e2e::keys::{self, SHARDS, issue, key_id, shard_bytes, sign_push, sign_push_at};
use e2e::stack::{Options, Stack, unix_now};
use serde_json::Value;
use shared::key::{Claims, Environment};
use shared::mac::Keyring;
use shared::scope::{Permission, ScopeSet};

const CHALLENGE: &str = r#"Bearer realm="lynxo""#;
const INVALID_TOKEN: &str = r#"Bearer realm="lynxo", error="invalid_token""#;

/// Shards the scenarios use; each scenario that changes a shard owns it.
const SHARD_MAIN: u16 = 0;
const SHARD_REVOKE: u16 = 1;
const SHARD_TAMPER: u16 = 2;
const SHARD_STALE: u16 = 3;
const SHARD_NEVER_PUSHED: u16 = 15;

struct Ctx {
    stack: Stack,
    /// Read/Write key in SHARD_MAIN.
    key: String,
}

impl Ctx {
    fn key(
        &self,
        shard: u16,
        n: u64,
        environment: Environment,
        scopes: ScopeSet,
    ) -> (Claims, String) {
        let claims = keys::claims(key_id(shard, n), environment, scopes);
        let text = issue(&self.stack.keyring, &claims);
        (claims, text)
    }

    fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.stack.edge("GET", target, headers, b"")
    }

    fn bearer(&self, method: &str, target: &str, key: &str) -> Response {
        let auth = format!("Bearer {key}");
        self.stack
            .edge(method, target, &[("Authorization", &auth)], b"")
    }

    fn push(&self, shard: u16, body: &[u8], signature: Option<&str>) -> Response {
        let target = format!("/_lynxo/sync/revocations/{shard}");
        let mut headers = vec![("Content-Type", "application/octet-stream")];
        if let Some(sig) = signature {
            headers.push(("Lynxo-Signature", sig));
        }
        self.stack.edge("PUT", &target, &headers, body)
    }

    fn push_signed(&self, shard: u16, body: &[u8]) -> Response {
        self.push(
            shard,
            body,
            Some(&sign_push(&self.stack.keyring, shard, body)),
        )
    }

    /// Waits out the worker's cache period so its next read comes from KV.
    fn wait_for_cache(&self) {
        sleep(Duration::from_millis(self.stack.options.cache_ms + 300));
    }
}

/// Asserts an RFC 9457 problem with `status` and `code`; returns the body.
#[track_caller]
fn problem(r: &Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("https://docs.lynxo.ai/errors/{code}"));
    body
}

#[track_caller]
fn reason(r: &Response, status: u16, code: &str, reason: &str) -> Value {
    let body = problem(r, status, code);
    assert_eq!(body["reason"], reason, "{body}");
    body
}

/// A named step of the suite.
type Scenario = (&'static str, fn(&Ctx));

#[test]
fn edge_end_to_end() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    eprintln!("stack up in {:?}", started.elapsed());
    let mut ctx = Ctx {
        stack,
        key: String::new(),
    };
    ctx.key = ctx
        .key(
            SHARD_MAIN,
            1,
            Environment::Development,
            Permission::ReadWrite.scopes(),
        )
        .1;

    let scenarios: [Scenario; 13] = [
        ("missing shard fails closed", missing_shard_fails_closed),
        ("publish every shard", publish_every_shard),
        (
            "valid key reaches origin with identity",
            valid_key_reaches_origin_with_identity,
        ),
        ("credential errors", credential_errors),
        ("key errors with hints", key_errors_with_hints),
        ("environment mismatch", environment_mismatch),
        ("scope and route policy", scope_and_route_policy),
        (
            "forged identity never reaches origin",
            forged_identity_never_reaches_origin,
        ),
        ("revoke then rejected", revoke_then_rejected),
        ("sync refusals", sync_refusals),
        (
            "tampered or older shard in KV ignored",
            tampered_or_older_shard_in_kv_ignored,
        ),
        ("stale shard fails closed", stale_shard_fails_closed),
        (
            "never pushed shard fails closed",
            never_pushed_shard_fails_closed,
        ),
    ];
    for (name, scenario) in scenarios {
        let t = Instant::now();
        eprintln!("scenario: {name}");
        scenario(&ctx);
        eprintln!("scenario: {name}: ok in {:?}", t.elapsed());
    }
    eprintln!("end to end in {:?}", started.elapsed());
}

fn missing_shard_fails_closed(ctx: &Ctx) {
    let r = ctx.bearer("GET", "/v1/jobs", &ctx.key);
    problem(&r, 503, "revocation_list_unavailable");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
}

fn publish_every_shard(ctx: &Ctx) {
    for shard in 0..SHARDS {
        if shard == SHARD_NEVER_PUSHED {
            continue;
        }
        let body = shard_bytes(&ctx.stack.keyring, shard, 1, &[], 3_600);
        let r = ctx.push_signed(shard, &body);
        assert_eq!(r.status, 204, "shard {shard}: {}", r.text());
        assert_eq!(r.header("lynxo-shard-version"), Some("1"));
    }
}

fn valid_key_reaches_origin_with_identity(ctx: &Ctx) {
    let r = ctx.bearer("GET", "/v1/jobs?limit=5", &ctx.key);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["account_id"], 42);
    assert_eq!(echo["key_id"], key_id(SHARD_MAIN, 1).to_string());
    assert_eq!(echo["environment"], "development");
    assert_eq!(
        echo["scopes"],
        shared::identity::scopes_value(Permission::ReadWrite.scopes())
    );
    assert_eq!(echo["path"], "/v1/jobs");
    assert_eq!(echo["query"], "limit=5");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let auth = format!("{scheme} {}", ctx.key);
        let r = ctx.get_with("/v1/jobs/j_1", &[("Authorization", &auth)]);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }

    let auth = format!("Bearer {}", ctx.key);
    let r = ctx.stack.edge(
        "POST",
        "/v1/jobs",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"model":"x"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body_len"], 13);

    // A key in the query string works too, and never reaches the origin.
    let r = ctx.get_with(&format!("/v1/jobs?a=1&api_key={}&b=2", ctx.key), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], "a=1&b=2");
}

fn credential_errors(ctx: &Ctx) {
    let r = ctx.get_with("/v1/jobs", &[]);
    let body = problem(&r, 401, "missing_credentials");
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert!(body.get("reason").is_none());

    let auth = format!("Bearer {}", ctx.key);
    let r = ctx.get_with(
        "/v1/jobs",
        &[("Authorization", &auth), ("Authorization", &auth)],
    );
    reason(&r, 400, "invalid_request", "multiple_credentials");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="lynxo", error="invalid_request""#)
    );
    let r = ctx.get_with(
        &format!("/v1/jobs?access_token={}", ctx.key),
        &[("Authorization", &auth)],
    );
    reason(&r, 400, "invalid_request", "multiple_credentials");

    let huge = format!("Bearer {}", "A".repeat(4_000));
    reason(
        &ctx.get_with("/v1/jobs", &[("Authorization", &huge)]),
        400,
        "invalid_request",
        "credential_too_large",
    );
    reason(
        &ctx.get_with("/v1/jobs", &[("Authorization", &ctx.key)]),
        400,
        "invalid_request",
        "missing_bearer_scheme",
    );
    let r = ctx.get_with("/v1/jobs", &[("Authorization", "Basic dXNlcjpwYXNz")]);
    problem(&r, 401, "missing_credentials");
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
}

fn key_errors_with_hints(ctx: &Ctx) {
    let key = &ctx.key;
    let mut typo = key.clone().into_bytes();
    let at = key.len() - 20;
    typo[at] = if typo[at] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ascii");
    let cases = [
        (format!("Bearer   {key}"), "surrounding_whitespace"),
        (format!("Bearer {typo}"), "invalid_checksum"),
        (
            format!("Bearer {}", &key[..key.len() - 3]),
            "invalid_length",
        ),
        (
            "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc".to_owned(),
            "missing_prefix",
        ),
    ];
    for (auth, why) in cases {
        let r = ctx.get_with("/v1/jobs", &[("Authorization", &auth)]);
        let body = reason(&r, 401, "invalid_token", why);
        assert_eq!(r.header("www-authenticate"), Some(INVALID_TOKEN));
        assert!(body["hint"].as_str().is_some_and(|h| !h.is_empty()));
    }

    let mut expiring = keys::claims(
        key_id(SHARD_MAIN, 2),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    expiring.issued_at = unix_now() - 100;
    expiring.expires_at = Some(unix_now() - 10);
    let expired = issue(&ctx.stack.keyring, &expiring);
    reason(
        &ctx.bearer("GET", "/v1/jobs", &expired),
        401,
        "invalid_token",
        "expired",
    );
}

fn environment_mismatch(ctx: &Ctx) {
    for environment in [Environment::Production, Environment::Staging] {
        let (_, other) = ctx.key(SHARD_MAIN, 3, environment, ScopeSet::FULL_ACCESS);
        let r = ctx.bearer("GET", "/v1/jobs", &other);
        let body = reason(&r, 401, "invalid_token", "wrong_environment");
        let hint = body["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains(environment.name()) && hint.contains("development"),
            "{hint}"
        );
        assert_eq!(body["key_environment"], environment.name());
        assert_eq!(body["endpoint_environment"], "development");
    }
}

fn scope_and_route_policy(ctx: &Ctx) {
    let (_, read_only) = ctx.key(
        SHARD_MAIN,
        4,
        Environment::Development,
        Permission::ReadOnly.scopes(),
    );
    assert_eq!(ctx.bearer("GET", "/v1/jobs", &read_only).status, 200);
    let r = ctx.bearer("POST", "/v1/jobs", &read_only);
    let body = problem(&r, 403, "insufficient_scope");
    assert_eq!(body["scope"], "jobs:write");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="lynxo", error="insufficient_scope", scope="jobs:write""#)
    );
    let (_, empty) = ctx.key(SHARD_MAIN, 5, Environment::Development, ScopeSet::EMPTY);
    problem(
        &ctx.bearer("GET", "/v1/account", &empty),
        403,
        "insufficient_scope",
    );

    problem(
        &ctx.bearer("GET", "/v1/nothing-here", &ctx.key),
        404,
        "not_found",
    );
    let r = ctx.bearer("PUT", "/v1/jobs", &ctx.key);
    problem(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD"));
}

fn forged_identity_never_reaches_origin(ctx: &Ctx) {
    let auth = format!("Bearer {}", ctx.key);
    let forged_sig =
        "t=1,kid=3,v2=0000000000000000000000000000000000000000000000000000000000000000";
    let r = ctx.get_with(
        "/v1/account",
        &[
            ("Authorization", &auth),
            ("Lynxo-Account-Id", "1"),
            ("Lynxo-Scopes", "*"),
            ("lynxo-environment", "production"),
            ("Lynxo-Identity-Signature", forged_sig),
            ("X-Lynxo-Admin", "true"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["account_id"], 42);
    assert_eq!(echo["environment"], "development");
    let headers = &echo["headers"];
    assert_eq!(headers["lynxo-account-id"], "42");
    // The origin shows the identity it verified, never the signature.
    assert!(
        headers.get("lynxo-identity-signature").is_none(),
        "{headers}"
    );
    assert!(headers.get("x-lynxo-admin").is_none(), "{headers}");

    // Straight to the origin, skipping the edge: the forged identity is refused. (Replays of a
    // genuine one are in tests/edge_requests.rs, which records what the edge sends.)
    let r = ctx.stack.origin(
        "GET",
        "/v1/account",
        &[
            ("Lynxo-Account-Id", "1"),
            ("Lynxo-Key-Id", &key_id(0, 1).to_string()),
            ("Lynxo-Environment", "development"),
            ("Lynxo-Scopes", "*"),
            ("Lynxo-Request-Id", &"ab".repeat(16)),
            ("Lynxo-Identity-Signature", forged_sig),
        ],
    );
    problem(&r, 401, "identity_rejected");
}

/// The body of the answer to a forged key, which a revoked key must match exactly.
fn forged_answer(ctx: &Ctx) -> Response {
    let other = Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).expect("ring");
    let claims = keys::claims(
        key_id(SHARD_MAIN, 6),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    let forged = issue(&other, &claims);
    let r = ctx.bearer("GET", "/v1/jobs", &forged);
    problem(&r, 401, "invalid_token");
    r
}

fn revoke_then_rejected(ctx: &Ctx) {
    let (claims, key) = ctx.key(
        SHARD_REVOKE,
        1,
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    let (_, neighbour) = ctx.key(
        SHARD_REVOKE,
        2,
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    assert_eq!(ctx.bearer("GET", "/v1/jobs", &key).status, 200);
    let body = shard_bytes(&ctx.stack.keyring, SHARD_REVOKE, 2, &[claims.key_id], 3_600);
    assert_eq!(ctx.push_signed(SHARD_REVOKE, &body).status, 204);
    let revoked_at = Instant::now();
    let r = loop {
        let r = ctx.bearer("GET", "/v1/jobs", &key);
        if r.status != 200 || revoked_at.elapsed() > Duration::from_secs(10) {
            break r;
        }
        sleep(Duration::from_millis(50));
    };
    eprintln!("revocation visible after {:?}", revoked_at.elapsed());
    problem(&r, 401, "invalid_token");
    assert_eq!(r.header("www-authenticate"), Some(INVALID_TOKEN));
    // Revoked, forged and unknown-kid keys are indistinguishable.
    assert_eq!(r.body, forged_answer(ctx).body);
    let ring9 = Keyring::from_config(&format!("active=9;9:{}", "11".repeat(32))).expect("ring");
    let mut c = keys::claims(
        key_id(SHARD_MAIN, 7),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    c.kid = 9;
    assert_eq!(
        ctx.bearer("GET", "/v1/jobs", &issue(&ring9, &c)).body,
        r.body
    );
    assert_eq!(ctx.bearer("GET", "/v1/jobs", &neighbour).status, 200);
}

fn sync_refusals(ctx: &Ctx) {
    let ring = &ctx.stack.keyring;
    let v1 = shard_bytes(ring, SHARD_REVOKE, 1, &[], 3_600);
    problem(&ctx.push(SHARD_REVOKE, &v1, None), 401, "missing_signature");
    let other = Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).expect("ring");
    let bad = sign_push(&other, SHARD_REVOKE, &v1);
    reason(
        &ctx.push(SHARD_REVOKE, &v1, Some(&bad)),
        401,
        "invalid_signature",
        "bad_signature",
    );
    let old = sign_push_at(ring, SHARD_REVOKE, &v1, unix_now() - 3_600);
    reason(
        &ctx.push(SHARD_REVOKE, &v1, Some(&old)),
        401,
        "invalid_signature",
        "outside_tolerance",
    );
    // Signed for another shard index than the path's.
    let moved = sign_push(ring, SHARD_REVOKE + 1, &v1);
    problem(
        &ctx.push(SHARD_REVOKE, &v1, Some(&moved)),
        401,
        "invalid_signature",
    );
    // Older than what KV holds (v2 revoked a key): a replay that would un-revoke it.
    let r = ctx.push_signed(SHARD_REVOKE, &v1);
    let body = problem(&r, 409, "stale_version");
    assert_eq!(body["current_version"], 2);
    // A valid shard, but of another index.
    let elsewhere = shard_bytes(ring, SHARD_MAIN, 9, &[], 3_600);
    problem(
        &ctx.push_signed(SHARD_REVOKE, &elsewhere),
        422,
        "shard_mismatch",
    );
    problem(
        &ctx.push_signed(SHARD_REVOKE, b"LNXR not really"),
        422,
        "invalid_shard",
    );
    let big = vec![0_u8; ctx.stack.options.sync_max_bytes + 1];
    problem(
        &ctx.push_signed(SHARD_REVOKE, &big),
        413,
        "payload_too_large",
    );
    problem(&ctx.push_signed(SHARDS, &v1), 404, "not_found");
}

fn tampered_or_older_shard_in_kv_ignored(ctx: &Ctx) {
    let ring = &ctx.stack.keyring;
    let (claims, key) = ctx.key(
        SHARD_TAMPER,
        1,
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    let kv_key = shared::revocation::kv_key(SHARD_TAMPER);
    let v5 = shard_bytes(ring, SHARD_TAMPER, 5, &[claims.key_id], 3_600);
    assert_eq!(ctx.push_signed(SHARD_TAMPER, &v5).status, 204);
    problem(&ctx.bearer("GET", "/v1/jobs", &key), 401, "invalid_token");

    // A newer shard that would un-revoke the key, with one bit of its tag flipped.
    let mut tampered = shard_bytes(ring, SHARD_TAMPER, 6, &[], 3_600);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    ctx.stack.kv_put(&kv_key, &tampered);
    ctx.wait_for_cache();
    problem(&ctx.bearer("GET", "/v1/jobs", &key), 401, "invalid_token");

    // A genuine but older shard (a rollback) that does not list the key.
    let v4 = shard_bytes(ring, SHARD_TAMPER, 4, &[], 3_600);
    ctx.stack.kv_put(&kv_key, &v4);
    ctx.wait_for_cache();
    problem(&ctx.bearer("GET", "/v1/jobs", &key), 401, "invalid_token");

    // The sync endpoint replaces the tampered value in KV.
    ctx.stack.kv_put(&kv_key, &tampered);
    let v7 = shard_bytes(ring, SHARD_TAMPER, 7, &[claims.key_id], 3_600);
    assert_eq!(ctx.push_signed(SHARD_TAMPER, &v7).status, 204);
}

fn stale_shard_fails_closed(ctx: &Ctx) {
    let ring = &ctx.stack.keyring;
    let (_, key) = ctx.key(
        SHARD_STALE,
        1,
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    // Valid for at most 4 s (its issued-at is the current whole second).
    let short = shard_bytes(ring, SHARD_STALE, 2, &[], 4);
    assert_eq!(ctx.push_signed(SHARD_STALE, &short).status, 204);
    assert_eq!(ctx.bearer("GET", "/v1/jobs", &key).status, 200);
    sleep(Duration::from_millis(4_600));
    let r = ctx.bearer("GET", "/v1/jobs", &key);
    problem(&r, 503, "revocation_list_unavailable");
    assert!(r.header("retry-after").is_some());
    // The control plane's next heartbeat restores service.
    let fresh = shard_bytes(ring, SHARD_STALE, 3, &[], 3_600);
    assert_eq!(ctx.push_signed(SHARD_STALE, &fresh).status, 204);
    assert_eq!(ctx.bearer("GET", "/v1/jobs", &key).status, 200);
}

fn never_pushed_shard_fails_closed(ctx: &Ctx) {
    let (_, key) = ctx.key(
        SHARD_NEVER_PUSHED,
        1,
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    problem(
        &ctx.bearer("GET", "/v1/jobs", &key),
        503,
        "revocation_list_unavailable",
    );
}

/// Binding and dependency failures are 5xx problem documents, never crashes or open doors.
#[test]
fn edge_fails_closed_on_bad_bindings() {
    let origin_bin = env!("CARGO_BIN_EXE_demo_origin");
    // An identity keyring that does not parse: every API request is refused, health still works.
    let options = Options {
        vars: vec![("ORIGIN_KEYRING", "active=1;1:00".to_owned())],
        ..Options::default()
    };
    let stack = Stack::start(origin_bin, options);
    let claims = keys::claims(
        key_id(0, 1),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    let auth = format!("Bearer {}", issue(&stack.keyring, &claims));
    let r = stack.edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"");
    let body = problem(&r, 500, "edge_misconfigured");
    assert!(!body.to_string().contains("ORIGIN_KEYRING"), "{body}");
    assert_eq!(stack.edge("GET", "/healthz", &[], b"").status, 200);
    drop(stack);

    // An origin that is down: 502, after every check passed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let options = Options {
        vars: vec![("ORIGIN_URL", format!("http://{closed}"))],
        ..Options::default()
    };
    let stack = Stack::start(origin_bin, options);
    let body = shard_bytes(&stack.keyring, 0, 1, &[], 3_600);
    let sig = sign_push(&stack.keyring, 0, &body);
    let pushed = stack.edge(
        "PUT",
        "/_lynxo/sync/revocations/0",
        &[("Lynxo-Signature", &sig)],
        &body,
    );
    assert_eq!(pushed.status, 204, "{}", pushed.text());
    let r = stack.edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"");
    problem(&r, 502, "origin_unavailable");
}
