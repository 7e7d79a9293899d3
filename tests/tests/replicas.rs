//! End to end: two control planes ("replicas") on one PostgreSQL database in front of the real
//! worker under `wrangler dev`. Keys are created and revoked through either replica; one of them
//! holds the publisher lease and publishes for both, so every revocation made through either
//! reaches the worker; when the holder is killed (SIGKILL), the other takes the lease over and
//! revocations made after that reach the worker too (docs/postgres.md, "Running on
//! PostgreSQL"). The control suite's `replicas.rs` checks the cap, the chain and version order
//! under 64 clients with a stand-in edge; this is the real worker.
//!
//! Replicas are a PostgreSQL deployment: on the suite's PostgreSQL run the database is the
//! run's; on its SQLite run this test starts a private PostgreSQL server of its own.

use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::postgres::{Server, test_database, test_server};
use e2e::stack::{Options, Stack};
use serde_json::{Value, json};

/// How long a revocation may take to reach the worker: a publish pass (up to about a second on
/// a shared database, plus a shard's one write a second) and the worker's cache time, with room
/// for a loaded machine; after a kill, the survivor's next pass takes the lease first.
const DEADLINE: Duration = Duration::from_secs(20);

fn create(control: &Control, name: &str) -> (String, String) {
    let body = json!({ "name": name, "environment": "development", "permission": "read_only" });
    let created: Value = control.expect("POST", "/v1/keys", Some(&body), 201);
    (
        created["id"].as_str().unwrap_or_default().to_owned(),
        created["key"].as_str().unwrap_or_default().to_owned(),
    )
}

fn revoke(control: &Control, id: &str) {
    let body = json!({ "reason": "retired" });
    let revoked = control.expect("POST", &format!("/v1/keys/{id}/revoke"), Some(&body), 200);
    assert_eq!(revoked["key"]["status"], "revoked", "{revoked}");
}

/// Waits until the worker refuses `key` (401); it must be admitted until then.
#[track_caller]
fn until_refused(stack: &Stack, key: &str, logs: &dyn Fn() -> String) {
    stack.until_refused(key, Instant::now(), DEADLINE, logs);
}

#[test]
fn revocations_through_either_replica_reach_the_worker_and_survive_a_killed_publisher() {
    let stack = Stack::start(
        env!("CARGO_BIN_EXE_demo_origin"),
        Options {
            cache_ms: 1_000,
            ..Options::default()
        },
    );
    // Declared before the replicas, so it stops after them.
    let own_server = test_server().is_none().then(Server::start);
    let mut first = Control::start_on(&stack, &[], |dir| match &own_server {
        Some(server) => server.create_database("replicas").into(),
        None => test_database(dir),
    });
    assert!(
        first
            .database()
            .to_string_lossy()
            .starts_with("postgres://"),
        "replicas share a PostgreSQL database"
    );
    let second = first.replica();
    let logs = |a: &Control, b: &Control| format!("first:\n{}\nsecond:\n{}", a.log(), b.log());

    // Keys made through either replica work at the edge; revoked through either, they stop.
    let keys: Vec<(String, String)> = (0..8)
        .map(|i| create(if i % 2 == 0 { &first } else { &second }, &format!("k{i}")))
        .collect();
    for (_, key) in &keys {
        assert_eq!(stack.call_with_key(key).status, 200);
    }
    for (i, (id, _)) in keys.iter().enumerate().take(4) {
        revoke(if i % 2 == 0 { &second } else { &first }, id);
    }
    for (_, key) in keys.iter().take(4) {
        until_refused(&stack, key, &|| logs(&first, &second));
    }
    for (_, key) in keys.iter().skip(4) {
        assert_eq!(stack.call_with_key(key).status, 200, "a key nobody revoked");
    }

    // The first replica (the publisher lease's holder: it started first) dies; revocations made
    // through the survivor still reach the worker, and it keeps serving.
    first.kill();
    for (id, _) in keys.iter().skip(4) {
        revoke(&second, id);
    }
    let (_, fresh) = create(&second, "after the kill");
    for (_, key) in keys.iter().skip(4) {
        until_refused(&stack, key, &|| logs(&first, &second));
    }
    assert_eq!(stack.call_with_key(&fresh).status, 200);
    for (_, key) in &keys {
        assert_eq!(
            stack.call_with_key(key).status,
            401,
            "a revocation came undone"
        );
    }
    let (ok, out) = second.verify_audit(&second.database());
    assert!(ok, "{out}");
}
