//! End to end through the real control plane: keys created, revoked and rotated with the admin API
//! (`control serve`, a fresh database, SQLite or PostgreSQL, a management token from `control
//! init`) and used against the real worker under `wrangler dev` in front of the demo origin.
//! Revocations reach the worker the way they do locally in production: the control plane's
//! publisher pushes the shards to the worker's signed sync endpoint.
//!
//! One stack serves every scenario, run in order by one test; each scenario creates the keys it
//! needs. Waits are polls with generous deadlines, never fixed sleeps that assume a speed.

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::http::Response;
use e2e::stack::{Options, Stack};
use serde_json::{Value, json};
use shared::scope::Permission;

const INVALID_TOKEN: &str = r#"Bearer realm="lynxo", error="invalid_token""#;
/// How long a revocation may take to reach the edge before the test fails (the measured
/// propagation is milliseconds; docs/edge.md).
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(15);
/// The grace period of the rotation scenario, seconds.
const GRACE_SECONDS: u64 = 5;

struct Ctx {
    // Declared first so it stops first: it pushes to the worker.
    control: Control,
    stack: Stack,
}

impl Ctx {
    /// Creates a key through `POST /v1/keys`; returns the answer (with the full `key`).
    fn create(&self, name: &str, environment: &str, permission: &str) -> Value {
        let body = json!({ "name": name, "environment": environment, "permission": permission });
        let created = self.control.expect("POST", "/v1/keys", Some(&body), 201);
        assert!(created["key"].as_str().is_some(), "{created}");
        created
    }

    fn call(&self, key: &str) -> Response {
        self.stack.call_with_key(key)
    }

    /// Polls the edge until `key` is refused as an invalid token; asserts it is accepted until
    /// then. Returns how long that took.
    fn until_refused(&self, key: &str, limit: Duration) -> Duration {
        let (took, refused) = self.stack.until_refused(key, Instant::now(), limit, || {
            format!("control plane log:\n{}", self.control.log())
        });
        assert_invalid_token(&refused);
        took
    }
}

#[track_caller]
fn assert_invalid_token(r: &Response) -> Value {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some(INVALID_TOKEN));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["code"], "invalid_token", "{body}");
    body
}

type Scenario = (&'static str, fn(&Ctx));

#[test]
fn control_plane_end_to_end() {
    let started = Instant::now();
    let options = Options {
        // wrangler.toml's default cache time: the tests see what a deployment would.
        cache_ms: 2_000,
        ..Options::default()
    };
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), options);
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());
    let ctx = Ctx { control, stack };

    let scenarios: [Scenario; 4] = [
        (
            "created key reaches origin with identity",
            created_key_reaches_origin_with_identity,
        ),
        ("revoked key is rejected", revoked_key_is_rejected),
        (
            "rotated keys overlap for the grace period",
            rotated_keys_overlap_for_the_grace_period,
        ),
        (
            "key of another environment gets a hint",
            key_of_another_environment_gets_a_hint,
        ),
    ];
    for (name, scenario) in scenarios {
        let t = Instant::now();
        eprintln!("scenario: {name}");
        scenario(&ctx);
        eprintln!("scenario: {name}: ok in {:?}", t.elapsed());
    }
    eprintln!("control plane end to end in {:?}", started.elapsed());
}

fn created_key_reaches_origin_with_identity(ctx: &Ctx) {
    let created = ctx.create("ci pipeline", "development", "read_write");
    let key = created["key"].as_str().unwrap_or_default();
    assert!(key.starts_with("lnx_dev_"), "{key}");
    let r = ctx.call(key);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["account_id"], ctx.control.account_id, "{echo}");
    assert_eq!(echo["key_id"], created["id"], "{echo}");
    assert_eq!(echo["environment"], "development");
    assert_eq!(
        echo["scopes"],
        shared::identity::scopes_value(Permission::ReadWrite.scopes())
    );
    // The scopes the control plane reported are the ones the origin was told.
    let listed: Vec<&str> = created["scopes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(echo["scopes"], listed.join(" "));
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
}

fn revoked_key_is_rejected(ctx: &Ctx) {
    let created = ctx.create("to revoke", "development", "full_access");
    let key = created["key"].as_str().unwrap_or_default();
    let id = created["id"].as_str().unwrap_or_default();
    assert_eq!(ctx.call(key).status, 200);
    let keep = ctx.create("bystander", "development", "full_access");
    let keep = keep["key"].as_str().unwrap_or_default();

    let revoked = ctx.control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "leaked in a public repo" })),
        200,
    );
    assert_eq!(revoked["key"]["status"], "revoked", "{revoked}");
    assert!(revoked["list_version"].as_u64().is_some(), "{revoked}");
    let took = ctx.until_refused(key, PROPAGATION_DEADLINE);
    eprintln!("revocation reached the edge in {took:?}");
    // Revoked keys look like any invalid token: no reason that tells them apart.
    let body = assert_invalid_token(&ctx.call(key));
    assert_ne!(body["reason"], "revoked", "{body}");
    // Other keys are unaffected.
    assert_eq!(ctx.call(keep).status, 200);
}

fn rotated_keys_overlap_for_the_grace_period(ctx: &Ctx) {
    let created = ctx.create("to rotate", "development", "read_only");
    let old = created["key"].as_str().unwrap_or_default();
    let id = created["id"].as_str().unwrap_or_default();
    assert_eq!(ctx.call(old).status, 200);

    let rotated_at = Instant::now();
    let rotated = ctx.control.expect(
        "POST",
        &format!("/v1/keys/{id}/rotate"),
        Some(&json!({ "grace_period_seconds": GRACE_SECONDS })),
        201,
    );
    let new = rotated["key"]["key"].as_str().unwrap_or_default();
    assert!(!new.is_empty() && new != old, "{rotated}");
    assert_eq!(rotated["key"]["rotated_from"], id, "{rotated}");
    assert_eq!(rotated["previous"]["rotated_to"], rotated["key"]["id"]);

    // During the grace period both keys work. The grace end is kept in whole seconds, so the
    // old key is safe for at least GRACE_SECONDS - 1 s after the call; check until a full second
    // short of that, so a check that is slow to answer on a loaded machine cannot race the
    // revocation.
    let overlap = Duration::from_millis(GRACE_SECONDS * 1_000 - 2_000);
    while rotated_at.elapsed() < overlap {
        for key in [old, new] {
            let r = ctx.call(key);
            assert_eq!(
                r.status,
                200,
                "during the grace period ({:?} after rotating): {}",
                rotated_at.elapsed(),
                r.text()
            );
        }
        sleep(Duration::from_millis(100));
    }
    let echo = ctx.call(new).json();
    assert_eq!(echo["key_id"], rotated["key"]["id"]);

    // Then the old key is revoked and reaches the edge; the new one keeps working.
    let took = ctx.until_refused(
        old,
        PROPAGATION_DEADLINE + Duration::from_secs(GRACE_SECONDS),
    );
    eprintln!(
        "old key refused {:?} after the rotation (grace {GRACE_SECONDS} s)",
        rotated_at.elapsed()
    );
    assert!(took < PROPAGATION_DEADLINE + Duration::from_secs(GRACE_SECONDS));
    assert_eq!(ctx.call(new).status, 200);
    let previous = ctx
        .control
        .expect("GET", &format!("/v1/keys/{id}"), None, 200);
    assert_eq!(previous["status"], "revoked", "{previous}");
}

fn key_of_another_environment_gets_a_hint(ctx: &Ctx) {
    let created = ctx.create("staging job", "staging", "full_access");
    let key = created["key"].as_str().unwrap_or_default();
    assert!(key.starts_with("lnx_stage_"), "{key}");
    let body = assert_invalid_token(&ctx.call(key));
    assert_eq!(body["reason"], "wrong_environment", "{body}");
    assert_eq!(body["key_environment"], "staging");
    assert_eq!(body["endpoint_environment"], "development");
    let hint = body["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains("staging") && hint.contains("development"),
        "{hint}"
    );
}
