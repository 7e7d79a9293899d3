//! Environment mistakes, readable audit and honest numbers (issue 18, points 2, 8 and 10) end to
//! end: the real worker under `wrangler dev` (it serves the development environment), the real
//! control plane, and `tests/browser/dash_env.mjs` in headless Chromium.
//!
//! First, through the API: a production key sent to the development edge is refused as
//! `wrong_environment` and, its tag verified, the refusal is metered against it (counted as
//! refused, in its activity with the reason, its last use set); a forged production key with the
//! same id records nothing; a revoked production key's refusal there carries the edge's own
//! reason, `wrong_environment`, into its activity (not `revoked`, as the key's dates would
//! say). Then the browser walks the key page, which must show that refusal,
//! and the "Try it" line of a new development key, which must name the development API's base
//! URL (configured here as the worker's own address, so the line really works).

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::{Control, DEADLINE};
use e2e::stack::{KEYRING, Options, Stack};
use serde_json::{Value, json};
use shared::key;
use shared::mac::Keyring;

/// The whole browser script, generously.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// Genuine wrong-environment requests sent.
const WRONG_ENV_REQUESTS: u64 = 3;

#[test]
fn environment_refusals_readable_audit_and_honest_numbers() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let dev_base = format!("http://{}", stack.edge);
    let control = Control::start_with_env(
        &stack,
        &[
            ("LYNXO_API_BASE_DEVELOPMENT", dev_base.as_str()),
            ("LYNXO_API_BASE_STAGING", "https://api.staging.example.test"),
        ],
    );

    let prod_id = environment_refusals_are_metered_against_the_key(&control, &stack);
    a_revoked_keys_environment_refusal_carries_the_edges_reason(&control, &stack);
    // An event with a time in its details (`grace_until`) for the audit page to show as a date.
    let other = control.expect(
        "POST",
        "/v1/keys",
        Some(
            &json!({ "name": "rotated for the audit", "environment": "development",
                      "permission": "read_only" }),
        ),
        201,
    );
    let other = other["id"].as_str().unwrap_or_default();
    control.expect(
        "POST",
        &format!("/v1/keys/{other}/rotate"),
        Some(&json!({ "grace_period_seconds": 3600 })),
        201,
    );

    let scopes_id = allowed_and_refused_scopes(&control, &stack);

    e2e::browser::walk(
        "dash_env.mjs",
        &control,
        &dev_base,
        &[
            ("LYNXO_WRONG_ENV_KEY_ID", prod_id.as_ref()),
            ("LYNXO_SCOPES_KEY_ID", scopes_id.as_ref()),
        ],
        SCRIPT_DEADLINE,
    );
}

/// Sends a forged, then genuine, production key to the development edge; returns the genuine
/// key's id once its refusals are in its activity and usage.
fn environment_refusals_are_metered_against_the_key(control: &Control, stack: &Stack) -> String {
    let created = control.expect(
        "POST",
        "/v1/keys",
        Some(
            &json!({ "name": "production at the dev edge", "environment": "production",
                      "permission": "read_only" }),
        ),
        201,
    );
    let (id, text) = (
        created["id"].as_str().unwrap_or_default().to_owned(),
        created["key"].as_str().unwrap_or_default().to_owned(),
    );
    let ring = Keyring::from_config(KEYRING).unwrap_or_else(|e| panic!("keyring: {e:?}"));
    let claims = key::check(&text, &ring, None).unwrap_or_else(|e| panic!("own key: {e:?}"));
    // Same account, same key id, same environment and checksum: only the tag is wrong.
    let forged = shared::testkit::forged(&claims).into_inner();
    let send = |k: &str| {
        let auth = format!("Bearer {k}");
        stack.edge(
            "GET",
            "/v1/jobs",
            &[
                ("Authorization", auth.as_str()),
                ("User-Agent", "e2e/dash-env"),
            ],
            b"",
        )
    };
    // The forged ones first: the same isolate meters both in order, into the key's one meter
    // shard, so by the time the genuine ones arrive a recorded forgery would have too.
    for _ in 0..5 {
        let r = send(&forged);
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.text().contains("wrong_environment"), "{}", r.text());
    }
    for _ in 0..WRONG_ENV_REQUESTS {
        let r = send(&text);
        assert_eq!(r.status, 401, "{}", r.text());
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(body["reason"], "wrong_environment", "{body}");
    }

    let start = Instant::now();
    let entries = loop {
        let page = control.expect(
            "GET",
            &format!("/v1/keys/{id}/activity?limit=500"),
            None,
            200,
        );
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        if entries.len() as u64 >= WRONG_ENV_REQUESTS {
            break entries;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the wrong-environment refusals never reached {id}'s activity: {page}\n{}",
            stack.wrangler_log()
        );
        sleep(Duration::from_millis(250));
    };
    assert_eq!(entries.len() as u64, WRONG_ENV_REQUESTS, "{entries:?}");
    for e in &entries {
        assert_eq!(e["status"], 401, "{e}");
        assert_eq!(e["outcome"], "401", "{e}");
        assert_eq!(e["reason"], "wrong_environment", "{e}");
        assert_eq!(e["user_agent"], "e2e/dash-env", "{e}");
    }
    let usage = control.usage_reaching(&id, WRONG_ENV_REQUESTS, || stack.wrangler_log());
    assert_eq!(usage["totals"]["requests"], WRONG_ENV_REQUESTS, "{usage}");
    assert_eq!(usage["totals"]["denied"], WRONG_ENV_REQUESTS, "{usage}");
    assert_eq!(usage["totals"]["allowed"], 0, "{usage}");
    assert_eq!(
        usage["totals"]["by_outcome"]["401"], WRONG_ENV_REQUESTS,
        "{usage}"
    );
    let view = control.expect("GET", &format!("/v1/keys/{id}"), None, 200);
    assert!(view["last_used_at"].as_u64().is_some(), "{view}");
    id
}

/// A production key revoked, then sent to the development edge: the edge refuses it for its
/// environment (checked before revocation), and the activity log says so with the edge's own
/// reason. Derived from the key's dates, it would read `revoked`.
fn a_revoked_keys_environment_refusal_carries_the_edges_reason(control: &Control, stack: &Stack) {
    let created = control.expect(
        "POST",
        "/v1/keys",
        Some(
            &json!({ "name": "revoked production at the dev edge", "environment": "production",
                      "permission": "read_only" }),
        ),
        201,
    );
    let (id, text) = (
        created["id"].as_str().unwrap_or_default().to_owned(),
        created["key"].as_str().unwrap_or_default().to_owned(),
    );
    control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "e2e: refused for its environment, not its revocation" })),
        200,
    );
    let auth = format!("Bearer {text}");
    let r = stack.edge("GET", "/v1/jobs", &[("Authorization", auth.as_str())], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(body["reason"], "wrong_environment", "{body}");
    let start = Instant::now();
    let entry = loop {
        let page = control.expect("GET", &format!("/v1/keys/{id}/activity"), None, 200);
        if let Some(entry) = page["data"].as_array().and_then(|d| d.first()) {
            break entry.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the refusal never reached {id}'s activity: {page}\n{}",
            stack.wrangler_log()
        );
        sleep(Duration::from_millis(250));
    };
    assert_eq!(entry["outcome"], "401", "{entry}");
    assert_eq!(entry["reason"], "wrong_environment", "{entry}");
}

/// A read-only development key used once (`GET /v1/jobs`: 200) and refused once (`POST
/// /v1/jobs`: 403, `jobs:write`); returns its id once both are in its usage.
fn allowed_and_refused_scopes(control: &Control, stack: &Stack) -> String {
    let created = control.expect(
        "POST",
        "/v1/keys",
        Some(&json!({ "name": "reads only", "environment": "development",
                      "permission": "read_only" })),
        201,
    );
    let (id, text) = (
        created["id"].as_str().unwrap_or_default().to_owned(),
        created["key"].as_str().unwrap_or_default().to_owned(),
    );
    let auth = format!("Bearer {text}");
    let headers = [("Authorization", auth.as_str())];
    let start = Instant::now();
    // A new key works at once; the loop only absorbs a slow first answer of the worker.
    while stack.edge("GET", "/v1/jobs", &headers, b"").status != 200 {
        assert!(start.elapsed() < DEADLINE, "the new key never worked");
        sleep(Duration::from_millis(100));
    }
    let r = stack.edge("POST", "/v1/jobs", &headers, b"");
    assert_eq!(r.status, 403, "{}", r.text());
    let mut usage = control.usage_reaching(&id, 2, || stack.wrangler_log());
    let start = Instant::now();
    while usage["by_scope_refused"]["jobs:write"] != 1 {
        assert!(start.elapsed() < DEADLINE, "the 403 never counted: {usage}");
        sleep(Duration::from_millis(250));
        usage = control.key_usage(&id);
    }
    assert_eq!(usage["by_scope_allowed"].get("jobs:write"), None, "{usage}");
    id
}
