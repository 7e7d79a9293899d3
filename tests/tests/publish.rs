//! End to end: what the control plane publishes, and what the worker does with it, when time
//! misbehaves and parts go down. The real control plane (`control serve`) publishes to the real
//! worker under `wrangler dev` in front of the demo origin.
//!
//! workerd's clock cannot be moved, so the availability policy runs here with its lifetimes
//! scaled down by configuration: list lifetime 30 s and heartbeat 1 s instead of a day and a
//! minute, and a control-plane outage of 20 s standing in for two hours (two thirds of the
//! lifetime here, a twelfth there). The outage starts 13 s after the first publish: with the
//! heartbeat of 15c57ae (half the lifetime, so 15 s) the edge's list would then have expired
//! at most 17 s into the outage. The policy's real numbers are checked with simulated time in
//! `control/tests/publish.rs` and `edge/src/cache.rs`.
//!
//! One stack serves the scenarios, run in order by one test.

use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::database::{self, Database};
use e2e::http::Response;
use e2e::keys::{self, SHARDS, issue, key_id, shard_bytes, sign_push};
use e2e::stack::{Options, Stack, unix_now};
use serde_json::{Value, json};
use shared::key::Environment;
use shared::revocation::{RevocationShard, ShardHeader};
use shared::scope::ScopeSet;

/// The scaled-down policy: list lifetime and heartbeat, seconds.
const LIFETIME: &str = "30";
const HEARTBEAT: &str = "1";
/// When the outage starts after the first publish, and how long it lasts.
const OUTAGE_AFTER: Duration = Duration::from_secs(13);
const OUTAGE: Duration = Duration::from_secs(20);
/// The revocation bound locally once the control plane is back: its first pass (at once) plus
/// the worker's cache time; generous for a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

struct Ctx {
    // Declared first so it stops first: it pushes to the worker.
    control: Control,
    stack: Stack,
    /// One test key per shard (the test keyring is the control plane's too).
    probes: Vec<String>,
}

impl Ctx {
    fn call(&self, key: &str) -> Response {
        let auth = format!("Bearer {key}");
        self.stack
            .edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"")
    }

    /// Asserts every shard's probe key is admitted.
    #[track_caller]
    fn all_answered(&self, when: &str) {
        for (shard, key) in self.probes.iter().enumerate() {
            let r = self.call(key);
            assert_eq!(r.status, 200, "{when}: shard {shard}: {}", r.text());
        }
    }
}

#[test]
fn publishing_under_bad_clocks_and_outages() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start_with_env(
        &stack,
        &[
            ("LYNXO_LIST_LIFETIME_SECS", LIFETIME),
            ("LYNXO_HEARTBEAT_SECS", HEARTBEAT),
        ],
    );
    let first_publish = Instant::now();
    let probes = (0..SHARDS)
        .map(|shard| {
            let claims = keys::claims(
                key_id(shard, 7),
                Environment::Development,
                ScopeSet::FULL_ACCESS,
            );
            issue(&stack.keyring, &claims)
        })
        .collect();
    let mut ctx = Ctx {
        control,
        stack,
        probes,
    };
    eprintln!("stack and control plane up in {:?}", started.elapsed());
    ctx.all_answered("at start");

    eprintln!("scenario: the audit checkpoint is anchored at the worker");
    the_audit_checkpoint_is_anchored_at_the_worker(&ctx);

    eprintln!("scenario: an outage of the control plane leaves the API answering");
    let key = ctx.control.expect(
        "POST",
        "/v1/keys",
        Some(&json!({ "name": "kept", "environment": "development", "permission": "read_only" })),
        201,
    );
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(ctx.call(&key).status, 200);
    sleep(OUTAGE_AFTER.saturating_sub(first_publish.elapsed()));
    ctx.control.stop();
    let down = Instant::now();
    eprintln!("scenario: the audit trail is checked against the anchor while it is down");
    rows_cut_or_edited_fail_verify_audit(&ctx);
    while down.elapsed() < OUTAGE {
        ctx.all_answered(&format!("{:?} into the outage", down.elapsed()));
        assert_eq!(ctx.call(&key).status, 200);
        sleep(Duration::from_millis(250));
    }

    eprintln!("scenario: back, a new revocation applies within the bound");
    ctx.control.resume();
    let id = api_key_id(&ctx, "kept");
    ctx.control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "after the outage" })),
        200,
    );
    let revoked_at = Instant::now();
    loop {
        let r = ctx.call(&key);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            revoked_at.elapsed() < BOUND,
            "still admitted {BOUND:?} after the revoke\n{}",
            ctx.control.log()
        );
        sleep(Duration::from_millis(20));
    }
    eprintln!("revocation in force after {:?}", revoked_at.elapsed());
    ctx.all_answered("after the revocation");

    eprintln!("scenario: a stale push is refused and never replaces a fresh shard");
    a_stale_push_is_refused_and_never_replaces_a_fresh_shard(&ctx);
    ctx.control.stop();
    drop(ctx);
    eprintln!("end to end in {:?}", started.elapsed());
}

fn api_key_id(ctx: &Ctx, name: &str) -> String {
    let list = ctx.control.expect("GET", "/v1/keys", None, 200);
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["id"].as_str())
        .unwrap()
        .to_owned()
}

/// A shard signed with the right keyring and a newer version than anything published, but past
/// its next-update (what a control plane with a clock hours slow would sign): the sync endpoint
/// refuses it as stale, and the shard's keys keep their fresh shard. Written to KV behind the
/// endpoint's back, it is ignored by the isolates too, and does not block the next heartbeat.
fn a_stale_push_is_refused_and_never_replaces_a_fresh_shard(ctx: &Ctx) {
    let shard = 5;
    let now = unix_now();
    let header = ShardHeader {
        shard,
        shard_count: SHARDS,
        version: now * 1000 * 10,
        issued_at: now - 7_200,
        next_update: now - 3_600,
    };
    let stale = RevocationShard::new(header, ctx.stack.keyring.active_kid(), [])
        .and_then(|s| s.encode(&ctx.stack.keyring))
        .unwrap();
    let r = ctx.stack.edge(
        "PUT",
        &format!("/_lynxo/sync/revocations/{shard}"),
        &[(
            "Lynxo-Signature",
            &sign_push(&ctx.stack.keyring, shard, &stale),
        )],
        &stale,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["code"], "stale_shard");
    let probe = &ctx.probes[usize::from(shard)];
    assert_eq!(ctx.call(probe).status, 200, "the fresh shard stays");

    ctx.stack.kv_put(&shared::revocation::kv_key(shard), &stale);
    // The worker reads KV again after its cache time (1 s here); the control plane's heartbeat
    // (1 s) replaces the value in KV meanwhile.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let r = ctx.call(probe);
        assert_eq!(r.status, 200, "with a stale shard in KV: {}", r.text());
        sleep(Duration::from_millis(100));
    }
    // A fresh push of a lower version than the stale one is taken.
    let fresh = shard_bytes(&ctx.stack.keyring, shard, 2, &[], 3_600);
    ctx.stack.kv_put(&shared::revocation::kv_key(shard), &stale);
    let r = ctx.stack.edge(
        "PUT",
        &format!("/_lynxo/sync/revocations/{shard}"),
        &[(
            "Lynxo-Signature",
            &sign_push(&ctx.stack.keyring, shard, &fresh),
        )],
        &fresh,
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Reads the checkpoint the worker holds, with a signed `GET` (unsigned: 401).
fn read_checkpoint(ctx: &Ctx) -> Option<Value> {
    let path = shared::audit::SYNC_PATH;
    assert_eq!(ctx.stack.edge("GET", path, &[], b"").status, 401);
    let sig = shared::audit::sign_read(&ctx.stack.keyring, unix_now());
    let r = ctx
        .stack
        .edge("GET", path, &[("Lynxo-Signature", &sig)], b"");
    match r.status {
        200 => Some(r.json()),
        404 => None,
        status => panic!("checkpoint read answered {status}: {}", r.text()),
    }
}

/// The control plane anchors its audit chain at the worker (a signed push into KV) within a
/// heartbeat of each change; a signed read gets it back, and the worker refuses an older one.
fn the_audit_checkpoint_is_anchored_at_the_worker(ctx: &Ctx) {
    ctx.control.expect(
        "POST",
        "/v1/keys",
        Some(
            &json!({ "name": "audited", "environment": "development", "permission": "read_only" }),
        ),
        201,
    );
    let events = ctx
        .control
        .expect("GET", "/v1/audit-events?limit=1", None, 200);
    let head = events["data"][0]["seq"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        if let Some(held) = read_checkpoint(ctx).filter(|c| c["seq"].as_u64() >= Some(head)) {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of event {head} at the worker\n{}",
            ctx.control.log()
        );
        sleep(Duration::from_millis(100));
    };
    let bytes = hex_decode(held["checkpoint"].as_str().unwrap());
    assert_eq!(bytes.len(), shared::audit::CHECKPOINT_LEN);
    // Replaying an older checkpoint (or a forged one of an earlier event) is refused.
    let mut older = bytes.clone();
    older[15] = older[15].wrapping_sub(1);
    let sig = shared::audit::sign_push(&ctx.stack.keyring, &older, unix_now());
    let r = ctx.stack.edge(
        "PUT",
        shared::audit::SYNC_PATH,
        &[("Lynxo-Signature", &sig)],
        &older,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["code"], "stale_checkpoint");
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// With the control plane stopped: `verify-audit` passes on its database, and fails on a copy
/// with the last rows cut off and on a copy with a row edited, against the checkpoint it reads
/// back from the worker.
fn rows_cut_or_edited_fail_verify_audit(ctx: &Ctx) {
    let db = ctx.control.database();
    let (ok, text) = ctx.control.verify_audit(&db);
    assert!(ok, "{text}");
    assert!(text.contains("anchored"), "{text}");
    // A copy of the database with the append-only trail's guards dropped, then `sql` run on it:
    // what an attacker with the database (the file, or PostgreSQL's superuser) could do.
    let copy = |name: &str, sql: &str| {
        let path = database::copy(&db, name);
        let mut conn = Database::open(&path);
        for trigger in ["audit_events_no_update", "audit_events_no_delete"] {
            let on = if conn.is_postgres() {
                " ON audit_events"
            } else {
                ""
            };
            conn.execute(&format!("DROP TRIGGER {trigger}{on}"), &[]);
        }
        conn.execute(sql, &[]);
        path
    };
    let cut = copy(
        "cut",
        "DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 2 FROM audit_events)",
    );
    let (ok, text) = ctx.control.verify_audit(&cut);
    assert!(!ok, "rows cut off the end passed: {text}");
    assert!(text.contains("truncated"), "{text}");
    let edited = copy(
        "edited",
        "UPDATE audit_events SET actor = 'user:999' WHERE seq = 2",
    );
    let (ok, text) = ctx.control.verify_audit(&edited);
    assert!(!ok, "an edited row passed: {text}");
}
