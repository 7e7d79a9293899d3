//! Backup and restore end to end, with the real worker: `control backup` of a running control
//! plane, `control restore` into its stopped database path, and the republish of the next start.
//!
//! The edge holds shard versions newer than anything in the backup (the lost database kept
//! publishing after it). Here they are made an hour ahead of the clock, as a lost database whose
//! clock ran fast would have left them: the restored control plane's republish must be accepted
//! (versions moved past them) for a revocation made after the restore to reach the edge at all.
//! And the edge holds revocations the backup does not know (made after it, of a key the backup
//! has and of one it has not): they must stay in force at the edge, and the restored control
//! plane must learn them (the key shows revoked, with an audit event), because a revocation is
//! never undone.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::{AUDIT_KEYRING, Control, control_binary};
use e2e::keys::{SHARDS, shard_bytes, sign_push};
use e2e::stack::{Options, Stack, unix_now};
use serde_json::{Value, json};
use shared::key::KeyId;
use shared::revocation::{self, RevocationShard};

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

/// The revoked ids the edge holds in `shard`, read through its signed read endpoint and opened
/// with the keyring, with the shard's version.
fn held(stack: &Stack, shard: u16) -> (u64, Vec<KeyId>) {
    let read = revocation::sign_read(&stack.keyring, shard, unix_now());
    let r = stack.edge(
        "GET",
        &revocation::sync_path(shard),
        &[("Lynxo-Signature", &read)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_str(&r.text()).unwrap_or_else(|e| panic!("{e}"));
    let bytes =
        hex::decode(body["shard"].as_str().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let list = RevocationShard::open(&bytes, &stack.keyring).unwrap_or_else(|e| panic!("{e}"));
    (list.header().version, list.ids().collect())
}

fn put_shard(stack: &Stack, shard: u16, body: &[u8]) -> (u16, Value) {
    let r = stack.edge(
        "PUT",
        &revocation::sync_path(shard),
        &[("Lynxo-Signature", &sign_push(&stack.keyring, shard, body))],
        body,
    );
    let answer = serde_json::from_str(&r.text()).unwrap_or(Value::Null);
    (r.status, answer)
}

fn key_id(hex_id: &str) -> KeyId {
    KeyId::parse_hex(hex_id).unwrap_or_else(|| panic!("key id {hex_id}"))
}

#[test]
fn a_key_revoked_before_the_backup_stays_refused_after_a_restore_and_its_republish() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    // SQLite whatever backend the suite runs on: `control backup` and `restore` copy SQLite's
    // file (on PostgreSQL its own tools do that; docs/postgres.md).
    let mut control = Control::start_sqlite(&stack);
    let (revoked_key, revoked_id) = create(&control, "revoked before the backup");
    let (kept_key, _) = create(&control, "active throughout");
    let (later_key, later_id) = create(&control, "revoked after the backup");
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

    // After the backup, the database to be lost revokes a key the backup has, and makes and
    // revokes one the backup has not.
    revoke(&control, &later_id);
    let (unknown_key, unknown_id) = create(&control, "made and revoked after the backup");
    until(
        &stack,
        &unknown_key,
        200,
        "a key made after the backup works",
    );
    revoke(&control, &unknown_id);
    until(&stack, &later_key, 401, "a revocation after the backup");
    until(&stack, &unknown_key, 401, "a revocation after the backup");

    // It kept publishing with a clock that ran fast: the edge holds every shard at a version an
    // hour ahead, carrying what it held.
    control.stop();
    let ahead = (unix_now() + 3_600) * 1000;
    let mut revoked_at_edge = Vec::new();
    for shard in 0..SHARDS {
        let (_, ids) = held(&stack, shard);
        revoked_at_edge.extend(ids.iter().copied());
        // A push that leaves a revoked id out is refused, whatever its version.
        if let Some((_, rest)) = ids.split_first() {
            let body = shard_bytes(&stack.keyring, shard, ahead + 1, rest, 3_600);
            let (status, answer) = put_shard(&stack, shard, &body);
            assert_eq!(
                (status, answer["code"].as_str()),
                (409, Some("revocations_dropped")),
                "{answer}"
            );
        }
        let body = shard_bytes(&stack.keyring, shard, ahead, &ids, 3_600);
        let (status, answer) = put_shard(&stack, shard, &body);
        assert_eq!(status, 204, "{answer}");
    }
    for id in [&revoked_id, &later_id, &unknown_id] {
        assert!(revoked_at_edge.contains(&key_id(id)), "{id} at the edge");
    }

    // A restore refuses a database a service holds: here none does.
    let (ok, out) = cli(
        &["restore"],
        &control.database(),
        &["--from".as_ref(), backup.as_os_str()],
    );
    assert!(ok, "restore: {out}");
    assert!(out.contains("audit chain intact"), "{out}");
    control.resume();

    // The start's republish is accepted (its versions are past the edge's) and takes back no
    // revocation: the restored control plane read the edge's shards back first.
    let republished = Instant::now();
    while (0..SHARDS).any(|shard| held(&stack, shard).0 <= ahead) {
        assert!(
            republished.elapsed() < DEADLINE,
            "the restored control plane's republish did not replace the edge's shards"
        );
        sleep(Duration::from_millis(100));
    }
    for (key, what) in [
        (&revoked_key, "revoked before the backup"),
        (&later_key, "revoked after the backup"),
        (&unknown_key, "made and revoked after the backup"),
    ] {
        assert_eq!(
            status(&stack, key),
            401,
            "{what}: in force after the restore"
        );
    }
    assert_eq!(status(&stack, &kept_key), 200);
    // The control plane knows it too: the key it has shows revoked, with the audit event of it.
    let later = control.expect("GET", &format!("/v1/keys/{later_id}"), None, 200);
    assert_eq!(later["status"], "revoked", "{later}");
    let events = control.expect(
        "GET",
        &format!("/v1/audit-events?target={later_id}"),
        None,
        200,
    );
    let recovered = events["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "key.revoked" && e["actor"] == "system")
        .count();
    assert_eq!(recovered, 1, "{events}");
    // The one it has not stays unknown to it, and revoked at the edge.
    control.expect("GET", &format!("/v1/keys/{unknown_id}"), None, 404);
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
