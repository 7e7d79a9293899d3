//! Backup and restore end to end, with the real worker: `control backup` of a running control
//! plane, `control restore` into its stopped database path, and the republish of the next start.
//!
//! The edge holds shard versions newer than anything in the backup (the lost database kept
//! publishing after it). Here they are made an hour ahead of the clock, as a lost database whose
//! clock ran fast would have left them, and they leave out the key revoked before the backup: the
//! restored control plane's republish must be accepted (versions moved past them) for that key to
//! be refused again, and for a revocation made after the restore to reach the edge at all.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::{AUDIT_KEYRING, Control, control_binary};
use e2e::keys::{SHARDS, shard_bytes, sign_push};
use e2e::stack::{Options, Stack, unix_now};
use serde_json::{Value, json};

/// Revocations reach the worker's isolate in milliseconds; this bound is for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn status(stack: &Stack, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    stack
        .edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"")
        .status
}

/// Polls until the edge answers `want` for `key`, ten times a second (under the key's default
/// limit of 600 a minute, so a long wait never turns into 429).
fn until(stack: &Stack, key: &str, want: u16, what: &str) {
    let start = Instant::now();
    loop {
        let s = status(stack, key);
        if s == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: still {s} after {DEADLINE:?}"
        );
        sleep(Duration::from_millis(100));
    }
}

fn create(control: &Control, name: &str) -> (String, String) {
    let body = json!({ "name": name, "environment": "development", "permission": "full_access" });
    let key = control.expect("POST", "/v1/keys", Some(&body), 201);
    (
        key["key"].as_str().unwrap_or_default().to_owned(),
        key["id"].as_str().unwrap_or_default().to_owned(),
    )
}

fn revoke(control: &Control, id: &str) -> Value {
    control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "restore test" })),
        200,
    )
}

fn cli(args: &[&str], database: &std::path::Path, extra: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(control_binary())
        .args(args)
        .arg("--database")
        .arg(database)
        .args(extra)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running control {args:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_key_revoked_before_the_backup_stays_refused_after_a_restore_and_its_republish() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let mut control = Control::start(&stack);
    let (revoked_key, revoked_id) = create(&control, "revoked before the backup");
    let (kept_key, _) = create(&control, "active throughout");
    until(&stack, &revoked_key, 200, "a new key works");
    revoke(&control, &revoked_id);
    until(&stack, &revoked_key, 401, "the revocation reaches the edge");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let backup = dir.path().join("backup.sqlite3");
    let (ok, out) = cli(
        &["backup"],
        &control.database(),
        &["--to".as_ref(), backup.as_os_str()],
    );
    assert!(ok, "backup: {out}");

    // After the backup the lost database kept publishing: the edge now holds every shard at a
    // version an hour ahead of the clock, without the key revoked before the backup.
    control.stop();
    let ahead = (unix_now() + 3_600) * 1000;
    for shard in 0..SHARDS {
        let body = shard_bytes(&stack.keyring, shard, ahead, &[], 3_600);
        let r = stack.edge(
            "PUT",
            &format!("/_lynxo/sync/revocations/{shard}"),
            &[("Lynxo-Signature", &sign_push(&stack.keyring, shard, &body))],
            &body,
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    until(
        &stack,
        &revoked_key,
        200,
        "the edge's newer shards leave the key out",
    );

    // A restore refuses a database a service holds: here none does.
    let (ok, out) = cli(
        &["restore"],
        &control.database(),
        &["--from".as_ref(), backup.as_os_str()],
    );
    assert!(ok, "restore: {out}");
    assert!(out.contains("audit chain intact"), "{out}");
    control.resume();

    // The start's republish is accepted (its versions are past the edge's): revoked again.
    until(
        &stack,
        &revoked_key,
        401,
        "the republish restores the revocation",
    );
    assert_eq!(status(&stack, &kept_key), 200);
    // And a revocation made now reaches the edge.
    let (new_key, new_id) = create(&control, "after the restore");
    until(&stack, &new_key, 200, "a key made after the restore works");
    revoke(&control, &new_id);
    until(
        &stack,
        &new_key,
        401,
        "a revocation after the restore reaches the edge",
    );

    control.stop();
    let (ok, out) = cli(&["verify-audit"], &control.database(), &[]);
    assert!(ok, "verify-audit: {out}");
}
