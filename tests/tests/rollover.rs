//! End to end: signing-key rollover through the real worker under `wrangler dev` and the real
//! control plane, with the commands and in the order `docs/operations.md` ("Signing-key
//! rollover") gives, the keyrings installed by restarting each side with its new
//! `LYNXO_KEYRING` (a `wrangler secret put` deploys a new version of the worker the same way:
//! new isolates, the same KV).
//!
//! One stack, two paths in order. Scheduled: kid 2 is added everywhere, then made active
//! everywhere; key A (kid 1) keeps working, key B is kid 2 and works, and a revocation of a
//! kid-1 key still reaches the edge in shards now signed by kid 2. Leak: kid 1 is retired at
//! once; A and a key forged with kid 1's secret are refused (401 `invalid_token`), B still
//! works, the edge holds only shards signed by kid 2, and the API tells the account what
//! happened; A's replacement works and A stays dead.

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::http::Response;
use e2e::keys;
use e2e::stack::{Options, Stack};
use serde_json::{Value, json};
use shared::key::{Environment, KeyId};
use shared::scope::ScopeSet;

const INVALID_TOKEN: &str = r#"Bearer realm="lynxo", error="invalid_token""#;
/// How long a revocation may take to reach the edge before the test fails.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(15);

struct Ctx {
    // Declared first so it stops first: it pushes to the worker.
    control: Control,
    stack: Stack,
    /// The keyring both sides run with now.
    ring: String,
    /// Key A: made under kid 1 before any rollover.
    a: Value,
    /// Key B: made after kid 2 became active.
    b: Option<Value>,
    /// A key forged by whoever holds kid 1's secret: a key id the control plane never issued.
    forged: String,
}

impl Ctx {
    fn create(&self, name: &str) -> Value {
        let body =
            json!({ "name": name, "environment": "development", "permission": "full_access" });
        let created = self.control.expect("POST", "/v1/keys", Some(&body), 201);
        assert!(created["key"].as_str().is_some(), "{created}");
        created
    }

    fn call(&self, key: &Value) -> Response {
        self.call_text(key["key"].as_str().unwrap_or_default())
    }

    fn call_text(&self, key: &str) -> Response {
        let auth = format!("Bearer {key}");
        self.stack
            .edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"")
    }

    fn key(&self, id: &Value) -> Value {
        let id = id.as_str().unwrap_or_default();
        self.control
            .expect("GET", &format!("/v1/keys/{id}"), None, 200)
    }

    /// Runs `control keyring <args>` with the current keyring; returns the keyring it prints.
    fn keyring(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.control.keyring_command(args, &self.ring);
        assert!(ok, "control keyring {args:?} failed: {out}{err}");
        out.trim().to_owned()
    }

    fn edge_takes(&mut self, ring: &str) {
        self.stack
            .restart_worker(&[("LYNXO_KEYRING", ring.to_owned())]);
    }

    fn control_takes(&mut self, ring: &str) {
        self.control.restart_with_keyring(&self.stack, ring);
        self.ring = ring.to_owned();
    }
}

#[track_caller]
fn assert_invalid_token(r: &Response) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some(INVALID_TOKEN));
    assert_eq!(r.json()["code"], "invalid_token", "{}", r.text());
}

#[track_caller]
fn assert_ok(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
}

fn scheduled(ctx: &mut Ctx) {
    let c = ctx.create("revoked after the switch");
    assert_eq!(ctx.a["kid"], 1, "{}", ctx.a);
    assert_eq!(ctx.a["signing_key"], "current");
    // 1. The new kid, known everywhere, active nowhere: edge first, then the control plane.
    let known = ctx.keyring(&["add"]);
    assert!(known.starts_with("active=1;1:"), "{known}");
    ctx.edge_takes(&known);
    ctx.control_takes(&known);
    assert_ok(&ctx.call(&ctx.a), "A with kid 2 known");
    // 2. Kid 2 active: the edge first (it already knows kid 2), then the control plane.
    let active = ctx.keyring(&["activate", "2"]);
    assert!(active.starts_with("active=2;1:"), "{active}");
    ctx.edge_takes(&active);
    ctx.control_takes(&active);

    assert_ok(&ctx.call(&ctx.a), "A after kid 2 became active");
    let a = ctx.key(&ctx.a["id"]);
    assert_eq!(
        (&a["kid"], &a["signing_key"]),
        (&json!(1), &json!("previous"))
    );
    let b = ctx.create("made under kid 2");
    assert_eq!(
        (&b["kid"], &b["signing_key"]),
        (&json!(2), &json!("current"))
    );
    assert_ok(&ctx.call(&b), "B");
    let list = ctx.control.expect("GET", "/v1/keys", None, 200);
    assert_eq!(list["signing"]["current_kid"], 2, "{}", list["signing"]);
    assert_eq!(
        list["signing"]["keys_on_previous_kid"], 2,
        "A and C: {}",
        list["signing"]
    );

    // A kid-1 key revoked now reaches the edge in shards signed by kid 2.
    assert_ok(&ctx.call(&c), "C before its revocation");
    let id = c["id"].as_str().unwrap_or_default();
    ctx.control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "after the switch" })),
        200,
    );
    let start = Instant::now();
    loop {
        let r = ctx.call(&c);
        if r.status == 401 {
            assert_invalid_token(&r);
            break;
        }
        assert_ok(&r, "C while its revocation travels");
        assert!(
            start.elapsed() < PROPAGATION_DEADLINE,
            "the revocation of C did not reach the edge\n{}",
            ctx.control.log()
        );
        sleep(Duration::from_millis(20));
    }
    ctx.b = Some(b);
}

fn leak(ctx: &mut Ctx) {
    let b = ctx.b.clone().unwrap_or_default();
    assert_ok(
        &ctx.call_text(&ctx.forged),
        "the forged kid-1 key, before the retirement",
    );
    // 1. Retire kid 1 at once; the command prints the keyring without it.
    let without = ctx.keyring(&["retire", "1", "--reason", "compromised"]);
    assert!(
        without.starts_with("active=2;2:") && !without.contains(",1:"),
        "{without}"
    );
    // A second retire changes nothing and prints the same keyring.
    assert_eq!(
        ctx.keyring(&["retire", "1", "--reason", "compromised"]),
        without
    );
    // 2. The control plane first: its first pass re-signs every shard with kid 2 (the worker
    //    still holds kid 1, so nothing it reads is refused meanwhile).
    ctx.control_takes(&without);
    // 3. Then the edge, without kid 1.
    ctx.edge_takes(&without);
    // Every shard the worker reads now is one signed by kid 2: a probe of each shard is
    // answered (a shard it cannot open would be a 503), before anything else is published.
    for shard in 0..keys::SHARDS {
        let mut claims = keys::claims(
            keys::key_id(shard, 9),
            Environment::Development,
            ScopeSet::FULL_ACCESS,
        );
        claims.kid = 2;
        let probe = keys::issue(&ctx.stack.keyring, &claims);
        assert_ok(
            &ctx.call_text(&probe),
            &format!("shard {shard} under kid 2 only"),
        );
    }
    assert_invalid_token(&ctx.call(&ctx.a));
    assert_invalid_token(&ctx.call_text(&ctx.forged));
    assert_ok(&ctx.call(&b), "B after kid 1 was retired");
    // The control plane points at the restarted worker (a new local address) from here on.
    let ring = ctx.ring.clone();
    ctx.control_takes(&ring);

    // The API tells the account.
    let a = ctx.key(&ctx.a["id"]);
    assert_eq!(a["status"], "revoked", "{a}");
    assert_eq!(a["revoke_reason"], "signing_key_retired");
    assert_eq!(a["signing_key"], "retired");
    assert_eq!(a["signing_key_retired"]["reason"], "compromised");
    let list = ctx.control.expect("GET", "/v1/keys", None, 200);
    let retired = &list["signing"]["retired_keys"];
    assert_eq!(retired.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(retired[0]["id"], ctx.a["id"]);
    assert_eq!(retired[0]["replaced_by"], Value::Null);
    assert_eq!(list["signing"]["keys_on_previous_kid"], 0);
    let events = ctx
        .control
        .expect("GET", "/v1/audit-events?limit=100", None, 200);
    let told: Vec<&Value> = events["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "signing_key.retired")
        .collect();
    assert_eq!(told.len(), 1, "{events}");
    assert_eq!(told[0]["details"]["kid"], 1);
    assert_eq!(told[0]["details"]["key_ids"], json!([ctx.a["id"]]));

    // Rotating A makes its replacement (kid 2), which works; A stays dead, and is replaced once.
    let a_id = ctx.a["id"].as_str().unwrap_or_default().to_owned();
    let rotated = ctx.control.expect(
        "POST",
        &format!("/v1/keys/{a_id}/rotate"),
        Some(&json!({ "grace_period_seconds": 3600 })),
        201,
    );
    assert_eq!(rotated["previous"]["status"], "revoked", "{rotated}");
    assert_eq!(rotated["previous"]["grace_until"], Value::Null);
    assert_eq!(rotated["key"]["kid"], 2);
    ctx.control
        .wait_limit_synced(rotated["key"]["id"].as_str().unwrap_or_default());
    assert_ok(&ctx.call(&rotated["key"]), "A's replacement");
    assert_invalid_token(&ctx.call(&ctx.a));
    ctx.control.expect(
        "POST",
        &format!("/v1/keys/{a_id}/rotate"),
        Some(&json!({ "grace_period_seconds": 0 })),
        409,
    );
}

/// The tests' keyring with kid 1 only.
fn kid1_only() -> String {
    let (_, rest) = e2e::stack::KEYRING
        .split_once(";1:")
        .unwrap_or_else(|| panic!("the tests' keyring has no kid 1"));
    format!("active=1;1:{}", &rest[..64])
}

#[test]
fn signing_key_rollover_scheduled_then_leaked() {
    let started = Instant::now();
    // Kid 1 alone (the tests' keyring also holds a kid 2): the rollover adds kid 2.
    let kid1 = kid1_only();
    let options = Options {
        vars: vec![("LYNXO_KEYRING", kid1.clone())],
        ..Options::default()
    };
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), options);
    let control = Control::start_with_env(&stack, &[("LYNXO_KEYRING", &kid1)]);
    let mut claims = keys::claims(
        KeyId([0x5a; 16]),
        Environment::Development,
        ScopeSet::FULL_ACCESS,
    );
    claims.kid = 1;
    let forged = keys::issue(&stack.keyring, &claims);
    let mut ctx = Ctx {
        control,
        stack,
        ring: kid1,
        a: Value::Null,
        b: None,
        forged,
    };
    ctx.a = ctx.create("made under kid 1");
    assert_ok(&ctx.call(&ctx.a), "A");
    eprintln!("stack up in {:?}", started.elapsed());
    e2e::run_scenarios(
        &mut ctx,
        &[
            ("scheduled: add, activate, old keys keep working", scheduled),
            ("leak: retire kid 1 at once", leak),
        ],
    );
}
