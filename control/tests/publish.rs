//! Revocation publishing: outbox, versions, coalescing, heartbeat, grace periods, repair after a
//! crash, and the two HTTP publishers' requests.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use common::{START, TestApp, keyring};
use control::publish::revocations::MAX_CONCURRENT_PUSHES;
use control::publish::{EdgeSyncSink, KvRestSink, MemorySink, Publisher, Sink, SinkError};
use control::store::StoreError;
use control::store::{Store, revocations};
use serde_json::json;
use shared::envelope;
use shared::key::KeyId;
use shared::mac::Purpose;
use shared::revocation::{RevocationShard, shard_of};

fn open(bytes: &[u8]) -> RevocationShard {
    RevocationShard::open(bytes, &keyring()).unwrap()
}

/// Creates and revokes a key; returns its id and the list version the revoke answered.
async fn revoke_new_key(app: &TestApp) -> (KeyId, u64) {
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap();
    let r = app
        .alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "test" }),
        )
        .await
        .expect(StatusCode::OK);
    (
        KeyId::parse_hex(id).unwrap(),
        r.body["list_version"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_revocation_is_published_in_its_shard_at_or_after_the_answered_version() {
    let app = TestApp::builder().shard_count(4).build();
    let mut publisher = app.publisher();
    let first = publisher.run_once().await.unwrap();
    assert_eq!(first.written.len(), 4, "every shard is published at start");
    let (id, version) = revoke_new_key(&app).await;
    app.advance(1);
    let pass = publisher.run_once().await.unwrap();
    let shard = shard_of(id, 4);
    assert_eq!(pass.written.len(), 1);
    assert_eq!(pass.written[0].0, shard);
    let published = open(&app.sink.latest(shard).unwrap());
    assert!(published.contains(id));
    assert!(published.header().version >= version);
    assert_eq!(published.header().shard_count, 4);
    assert_eq!(published.header().next_update, START + 1 + 3600);
    published.check(START + 1, None).unwrap();
    let pending = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(move |c| revocations::pending(c, START + 1))
        .unwrap();
    assert_eq!(pending, 0, "the outbox row is cleared after the write");
    // Nothing more to do until the heartbeat.
    app.advance(1);
    assert!(publisher.run_once().await.unwrap().written.is_empty());
}

#[tokio::test]
async fn writes_to_one_shard_coalesce_to_one_per_second() {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    let (a, _) = revoke_new_key(&app).await;
    let (b, _) = revoke_new_key(&app).await;
    // Within the same second as the start-up write: held back.
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.written.len(), pass.deferred), (0, vec![0]));
    app.clock.advance(std::time::Duration::from_millis(999));
    assert!(publisher.run_once().await.unwrap().written.is_empty());
    app.clock.advance(std::time::Duration::from_millis(1));
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1, "two revocations, one write");
    let shard = open(&app.sink.latest(0).unwrap());
    assert!(shard.contains(a) && shard.contains(b));
    assert_eq!(app.sink.writes(), 2);
}

#[tokio::test]
async fn the_first_revocation_in_a_quiet_shard_is_written_at_once_and_the_next_when_its_second_ends()
 {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    app.clock.advance(Duration::from_millis(1000));
    let (a, _) = revoke_new_key(&app).await;
    // No time passes: the shard was not written in the last second, so the pass the revoke
    // triggers writes it, with no tick or coalescing window in between.
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.written.len(), pass.deferred.len()), (1, 0));
    assert!(open(&app.sink.latest(0).unwrap()).contains(a));
    let written_at = START * 1000 + 1000;

    // The next revocation within that second is held back, and falls due exactly when the
    // second is over: the loop sleeps 700 ms, not a fixed interval from the deferral.
    app.clock.advance(Duration::from_millis(300));
    let (b, _) = revoke_new_key(&app).await;
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.written.len(), &pass.deferred[..]), (0, &[0][..]));
    assert_eq!(pass.next_due_ms, Some(written_at + 1000));
    assert_eq!(publisher.idle_after(&pass), Duration::from_millis(700));
    app.clock.advance(Duration::from_millis(700));
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1);
    assert!(open(&app.sink.latest(0).unwrap()).contains(b));
    assert_eq!(app.sink.writes(), 3, "still at most one write per second");

    // Nothing pending: the loop sleeps until a trigger, the next heartbeat (a minute after the
    // last write) or the loop's resolution, whichever comes first.
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.next_due_ms, Some(written_at + 1000 + 60_000));
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(5));
}

#[tokio::test]
async fn the_loop_wakes_when_a_rotation_grace_period_ends() {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    let key = app.create_key(json!({})).await;
    let id = KeyId::parse_hex(key["id"].as_str().unwrap()).unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 3 }),
        )
        .await
        .expect(StatusCode::CREATED);
    let pass = publisher.run_once().await.unwrap();
    assert!(pass.written.is_empty());
    assert_eq!(pass.next_due_ms, Some((START + 3) * 1000));
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(3));
    app.advance(3);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1);
    assert!(open(&app.sink.latest(0).unwrap()).contains(id));
}

#[tokio::test]
async fn shards_are_republished_every_heartbeat_with_newer_versions() {
    let app = TestApp::builder().shard_count(2).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    let v0 = open(&app.sink.latest(0).unwrap()).header().version;
    app.advance(59);
    assert!(publisher.run_once().await.unwrap().written.is_empty());
    app.advance(1);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 2, "every shard, every minute");
    let shard = open(&app.sink.latest(0).unwrap());
    assert!(shard.header().version > v0);
    assert_eq!(shard.header().next_update, START + 60 + 3600);
    shard.check(START + 60, Some(v0)).unwrap();
}

#[tokio::test]
async fn a_rotated_key_is_published_only_when_its_grace_ends() {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    let key = app.create_key(json!({})).await;
    let id = KeyId::parse_hex(key["id"].as_str().unwrap()).unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 120 }),
        )
        .await
        .expect(StatusCode::CREATED);
    app.advance(60);
    publisher.run_once().await.unwrap();
    assert!(!open(&app.sink.latest(0).unwrap()).contains(id));
    app.advance(60);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1);
    assert!(open(&app.sink.latest(0).unwrap()).contains(id));
}

#[tokio::test]
async fn a_crash_before_publishing_is_repaired_at_the_next_start() {
    let app = TestApp::builder().shard_count(4).build();
    app.publisher().run_once().await.unwrap();
    let (id, version) = revoke_new_key(&app).await;
    // "Crash": the publisher never ran after the commit. Start over from the file.
    let store = Store::open(app.state.store.path(), common::audit_keyring()).unwrap();
    let sink = Arc::new(MemorySink::default());
    app.advance(1);
    let mut restarted = Publisher::new(
        store,
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        sink.clone(),
        4,
        3600,
    );
    restarted.run_once().await.unwrap();
    let shard = open(&sink.latest(shard_of(id, 4)).unwrap());
    assert!(shard.contains(id));
    assert!(shard.header().version > version);
}

/// Fails its first `failures` writes.
struct Flaky {
    failures: AtomicU32,
    inner: MemorySink,
}

impl Sink for Flaky {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Status {
                status: 503,
                body: "down".into(),
            });
        }
        self.inner.put(index, body, now)
    }

    fn name(&self) -> &'static str {
        "flaky"
    }
}

#[tokio::test]
async fn a_failed_write_keeps_the_outbox_row_and_is_retried() {
    let app = TestApp::builder().shard_count(1).build();
    let sink = Arc::new(Flaky {
        failures: AtomicU32::new(1),
        inner: MemorySink::default(),
    });
    let mut publisher = Publisher::new(
        app.state.store.clone(),
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        sink.clone(),
        1,
        3600,
    );
    let (id, _) = revoke_new_key(&app).await;
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.failed, vec![0]);
    let pending = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| revocations::pending(c, START))
        .unwrap();
    assert_eq!(pending, 1);
    app.advance(1);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1);
    assert!(open(&sink.inner.latest(0).unwrap()).contains(id));
}

#[test]
fn the_kv_rest_request_is_a_put_of_the_shard_bytes() {
    let sink = KvRestSink::new(
        "https://api.cloudflare.com/client/v4/",
        "acct",
        "ns",
        "cf-token",
    );
    let req = sink.request(7, b"bytes").unwrap();
    assert_eq!(req.method(), http::Method::PUT);
    assert_eq!(
        req.uri().to_string(),
        "https://api.cloudflare.com/client/v4/accounts/acct/storage/kv/namespaces/ns/values/revocations%2Fv1%2F7"
    );
    assert_eq!(req.headers()["authorization"], "Bearer cf-token");
    assert_eq!(req.headers()["content-type"], "application/octet-stream");
    assert_eq!(req.body(), b"bytes");
}

#[test]
fn the_edge_sync_request_is_signed_for_its_shard_and_body() {
    let ring = Arc::new(keyring());
    let sink = EdgeSyncSink::new("http://127.0.0.1:8787/", Arc::clone(&ring));
    let req = sink.request(3, b"shard bytes", START).unwrap();
    assert_eq!(req.method(), http::Method::PUT);
    assert_eq!(
        req.uri().to_string(),
        "http://127.0.0.1:8787/_lynxo/sync/revocations/3"
    );
    let signature = req.headers()["lynxo-signature"].to_str().unwrap();
    let verify =
        |parts: &[&[u8]]| envelope::verify(&ring, Purpose::Sync, signature, parts, START, 300);
    assert_eq!(verify(&[b"revocations", b"3", b"shard bytes"]), Ok(START));
    assert!(verify(&[b"revocations", b"4", b"shard bytes"]).is_err());
    assert!(verify(&[b"revocations", b"3", b"other bytes"]).is_err());
    assert_eq!(req.body(), b"shard bytes");
}

/// Issue 10, "time is an input": the control plane's clock runs 400 s fast (a bad NTP server),
/// a revoke is acknowledged, then the clock is corrected. The revocation is published in the
/// first pass after the correction (not when the clock reaches the revoke's stamp), and the key
/// reads as revoked, not "rotating". While the clock ran fast, no pass reached the edge: its sync
/// endpoint refuses a push signed 400 s off (300 s tolerance).
#[tokio::test]
async fn a_revoke_acknowledged_with_a_fast_clock_is_published_at_once_after_the_correction() {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap().to_owned();
    app.clock.set(START + 400);
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "leaked" }),
        )
        .await
        .expect(StatusCode::OK);
    app.clock.set(START);
    app.advance(1);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1, "published at once: {pass:?}");
    assert!(open(&app.sink.latest(0).unwrap()).contains(KeyId::parse_hex(&id).unwrap()));
    let got = app.alice().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(got.body["status"], "revoked");
    let listed = |status: &str| {
        let app = &app;
        let path = format!("/v1/keys?status={status}");
        async move {
            app.alice().get(&path).await.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("revoked").await, std::slice::from_ref(&id));
    assert!(listed("rotating").await.is_empty());
    let verdict = app
        .alice()
        .post(
            "/v1/keys/verify",
            json!({ "key": key["key"], "method": "GET", "path": "/v1/jobs" }),
        )
        .await;
    assert_eq!(verdict.body["valid"], false);
    // A second revoke changes nothing: it is revoked, whatever the clock says.
    let again = app
        .alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "again" }),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(again.body["changed"], false);
}

/// The other direction: once published, a revocation stays in every later publish of its shard
/// when the clock steps back (an immediate revoke, and a rotation whose grace period ended).
#[tokio::test]
async fn a_published_revocation_stays_published_when_the_clock_steps_back() {
    let app = TestApp::builder().shard_count(1).build();
    let mut publisher = app.publisher();
    publisher.run_once().await.unwrap();
    app.advance(1);
    let (revoked, _) = revoke_new_key(&app).await;
    let rotated = app.create_key(json!({})).await;
    let rotated = KeyId::parse_hex(rotated["id"].as_str().unwrap()).unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{rotated}/rotate"),
            json!({ "grace_period_seconds": 5 }),
        )
        .await
        .expect(StatusCode::CREATED);
    app.advance(5);
    publisher.run_once().await.unwrap();
    let shard = open(&app.sink.latest(0).unwrap());
    assert!(shard.contains(revoked) && shard.contains(rotated));

    app.clock.set(START - 400);
    app.advance(1);
    let (later, _) = revoke_new_key(&app).await;
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1, "{pass:?}");
    let shard = open(&app.sink.latest(0).unwrap());
    for id in [revoked, rotated, later] {
        assert!(
            shard.contains(id),
            "{id} dropped after the clock stepped back"
        );
    }
    // The heartbeat a minute later (monotonic time) carries them too.
    app.advance(60);
    assert_eq!(publisher.run_once().await.unwrap().written.len(), 1);
    let shard = open(&app.sink.latest(0).unwrap());
    assert!(shard.contains(revoked) && shard.contains(rotated) && shard.contains(later));
    let got = app.alice().get(&format!("/v1/keys/{rotated}")).await;
    assert_eq!(got.body["status"], "revoked");
}

/// The availability policy (`docs/revocation-list.md`), with simulated time: with the default
/// list lifetime and heartbeat of `control serve`, the shards the edge holds stay valid through a
/// two-hour control-plane outage (the edge checks exactly `RevocationShard::check`), and once the
/// control plane is back its first pass republishes every shard, a new revocation with them.
#[tokio::test]
async fn a_two_hour_control_plane_outage_leaves_the_list_valid_and_revocations_apply_after() {
    use clap::Parser as _;
    let cli = control::config::Cli::try_parse_from(["control", "serve"]).unwrap();
    let control::config::Command::Serve(args) = cli.command else {
        panic!("serve expected");
    };
    let app = TestApp::builder().shard_count(4).build();
    let mut publisher = Publisher::new(
        app.state.store.clone(),
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        app.sink.clone(),
        4,
        args.list_lifetime_secs,
    )
    .with_heartbeat(Duration::from_secs(args.heartbeat_secs));
    assert_eq!(publisher.run_once().await.unwrap().written.len(), 4);
    app.advance(args.heartbeat_secs);
    assert_eq!(
        publisher.run_once().await.unwrap().written.len(),
        4,
        "heartbeat"
    );
    let last_beat = START + args.heartbeat_secs;
    let held: Vec<RevocationShard> = (0..4).map(|s| open(&app.sink.latest(s).unwrap())).collect();

    // Two hours without a pass.
    app.advance(2 * 3600);
    let now = last_beat + 2 * 3600;
    for shard in &held {
        shard.check(now, Some(shard.header().version)).unwrap();
    }
    // Back: a revocation, and the first pass.
    let (id, version) = revoke_new_key(&app).await;
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(
        pass.written.len(),
        4,
        "every shard's heartbeat is due, the revoked one too"
    );
    let shard = open(&app.sink.latest(shard_of(id, 4)).unwrap());
    assert!(shard.contains(id) && shard.header().version >= version);
    shard.check(now, Some(held[0].header().version)).unwrap();
    // The edge fails closed a lifetime after the last heartbeat it received, not before.
    let end = last_beat + args.list_lifetime_secs;
    assert!(held[0].check(end - 1, None).is_ok());
    assert!(held[0].check(end, None).is_err());
}

/// A sink whose pushes wait (up to 10 s) until `expect` of them are in flight at once, and which
/// records the most it saw, and fails shard `fail`.
struct Overlapping {
    in_flight: std::sync::Mutex<(usize, usize)>,
    all_in: std::sync::Condvar,
    expect: usize,
    fail: u16,
    inner: MemorySink,
}

impl Sink for Overlapping {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        let mut guard = self.in_flight.lock().unwrap();
        guard.0 += 1;
        guard.1 = guard.1.max(guard.0);
        self.all_in.notify_all();
        let (mut guard, _) = self
            .all_in
            .wait_timeout_while(guard, Duration::from_secs(10), |(_, max)| {
                *max < self.expect
            })
            .unwrap();
        guard.0 -= 1;
        drop(guard);
        if index == self.fail {
            return Err(SinkError::Status {
                status: 503,
                body: "down".into(),
            });
        }
        self.inner.put(index, body, now)
    }

    fn name(&self) -> &'static str {
        "overlapping"
    }
}

/// Under load every shard is due at once: a pass pushes them concurrently, as many at once as
/// the edge reads (a sequential pass would see one push in flight at a time; the edge answers
/// more than `MAX_CONCURRENT_PUSHES` 503), each under its own new version, in shard order; a
/// shard whose push fails keeps its outbox rows while the others' are cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_pushes_its_shards_concurrently_and_a_failed_one_keeps_its_rows() {
    let app = TestApp::builder().shard_count(4).build();
    let sink = Arc::new(Overlapping {
        in_flight: std::sync::Mutex::new((0, 0)),
        all_in: std::sync::Condvar::new(),
        expect: MAX_CONCURRENT_PUSHES.min(4),
        fail: 2,
        inner: MemorySink::default(),
    });
    let mut publisher = Publisher::new(
        app.state.store.clone(),
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        sink.clone(),
        4,
        3600,
    );
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(
        sink.in_flight.lock().unwrap().1,
        MAX_CONCURRENT_PUSHES.min(4),
        "pushes overlapped, up to the limit"
    );
    assert_eq!(pass.failed, vec![2]);
    let written: Vec<u16> = pass.written.iter().map(|(s, _)| *s).collect();
    assert_eq!(written, vec![0, 1, 3]);
    let versions: Vec<u64> = pass.written.iter().map(|(_, v)| *v).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // Revocations in two shards, one of which fails again: its row stays, the other's goes.
    let mut revoked = Vec::new();
    while revoked.iter().all(|id| shard_of(*id, 4) != 2)
        || revoked.iter().all(|id| shard_of(*id, 4) == 2)
    {
        revoked.push(revoke_new_key(&app).await.0);
    }
    app.advance(2);
    let pending = |app: &TestApp| {
        app.state
            .store
            .read_blocking::<_, StoreError, _>(|c| revocations::pending(c, START + 2))
            .unwrap()
    };
    let in_shard_2 = revoked.iter().filter(|id| shard_of(**id, 4) == 2).count() as u64;
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.failed, vec![2]);
    assert_eq!(pending(&app), in_shard_2);
    for id in revoked.iter().filter(|id| shard_of(**id, 4) != 2) {
        let shard = shard_of(*id, 4);
        assert!(open(&sink.inner.latest(shard).unwrap()).contains(*id));
    }
}

/// The edge's 503 `sync_busy` (it was reading as many bodies as it allows) is sent again within
/// the pass, as is a push whose connection was reset (`BUSY_RETRIES` in all); any other 503 waits
/// for the next pass (`a_failed_write_keeps_the_outbox_row_and_is_retried`).
#[tokio::test]
async fn a_push_the_edge_was_too_busy_to_read_is_sent_again_in_the_same_pass() {
    struct Busy {
        refusals: AtomicU32,
        inner: MemorySink,
    }
    impl Sink for Busy {
        fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
            if self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(if self.refusals.load(Ordering::SeqCst) == 0 {
                    // The last refusal: a reset kept-alive connection, sent once more too.
                    SinkError::Transport("io: Connection reset by peer".into())
                } else {
                    SinkError::Status {
                        status: 503,
                        body: r#"{"code":"sync_busy","status":503}"#.into(),
                    }
                });
            }
            self.inner.put(index, body, now)
        }
        fn name(&self) -> &'static str {
            "busy"
        }
    }
    let app = TestApp::builder().shard_count(1).build();
    let sink = Arc::new(Busy {
        refusals: AtomicU32::new(2),
        inner: MemorySink::default(),
    });
    let mut publisher = Publisher::new(
        app.state.store.clone(),
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        sink.clone(),
        1,
        3600,
    );
    let (id, _) = revoke_new_key(&app).await;
    let pass = publisher.run_once().await.unwrap();
    assert!(pass.failed.is_empty(), "{pass:?}");
    assert_eq!(
        sink.refusals.load(Ordering::SeqCst),
        0,
        "both refusals were met"
    );
    assert_eq!(pass.written.len(), 1);
    assert!(open(&sink.inner.latest(0).unwrap()).contains(id));
}

/// Shard `shard` of `count` signed with `ring` at `version`, revoking `ids`.
fn signed_shard(ring: &shared::mac::Keyring, count: u16, version: u64, ids: &[KeyId]) -> Vec<u8> {
    let header = shared::revocation::ShardHeader {
        shard: 0,
        shard_count: count,
        version,
        issued_at: START,
        next_update: START + 3600,
    };
    RevocationShard::new(header, ring.active_kid(), ids.iter().copied())
        .unwrap()
        .encode(ring)
        .unwrap()
}

#[tokio::test]
async fn a_start_reads_the_shards_back_and_keeps_every_revocation_the_database_lacks() {
    // What a restore from an older backup leaves: the edge holds a newer shard that revokes a
    // key the database has as active, and one it does not have at all.
    let app = TestApp::builder().shard_count(1).build();
    let key = app.create_key(json!({})).await;
    let known = KeyId::parse_hex(key["id"].as_str().unwrap()).unwrap();
    let unknown = KeyId([0x42; 16]);
    let held_version = START * 1000 + 86_400_000;
    let held = signed_shard(&keyring(), 1, held_version, &[known, unknown]);
    app.sink.put(0, &held, START).unwrap();

    let mut publisher = app.publisher();
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.written.len(), 1, "{pass:?}");
    let published = open(&app.sink.latest(0).unwrap());
    assert!(published.contains(known) && published.contains(unknown));
    assert!(published.header().version > held_version, "newer than held");
    // The control plane agrees: the key shows revoked, with its audit event by the system.
    let id = known.to_string();
    let view = app.alice().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(view.body["status"], "revoked", "{}", view.body);
    let events = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .expect(StatusCode::OK);
    let recovered: Vec<_> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.revoked")
        .collect();
    assert_eq!(recovered.len(), 1, "{}", events.body);
    assert_eq!(recovered[0]["actor"], "system");
    assert_eq!(
        recovered[0]["details"]["reason"],
        revocations::RECOVERED_REASON
    );

    // A restart reads back what it wrote: nothing new to record, the unknown id still carried.
    let revoked_events = || {
        app.audit_actions()
            .iter()
            .filter(|a| *a == "key.revoked")
            .count()
    };
    app.advance(2);
    let mut restarted = app.publisher();
    assert_eq!(restarted.run_once().await.unwrap().written.len(), 1);
    assert_eq!(revoked_events(), 1);
    let again = open(&app.sink.latest(0).unwrap());
    assert!(again.contains(known) && again.contains(unknown));
    // And a later revocation in the shard publishes with them.
    app.advance(2);
    let (later, _) = revoke_new_key(&app).await;
    restarted.run_once().await.unwrap();
    let latest = open(&app.sink.latest(0).unwrap());
    assert!(latest.contains(later) && latest.contains(unknown) && latest.contains(known));
}

#[tokio::test]
async fn a_shard_read_back_that_does_not_open_with_the_keyring_teaches_nothing() {
    let app = TestApp::builder().shard_count(1).build();
    let key = app.create_key(json!({})).await;
    let id = KeyId::parse_hex(key["id"].as_str().unwrap()).unwrap();
    let other =
        shared::mac::Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).unwrap();
    let forged = signed_shard(&other, 1, u64::MAX / 2, &[id]);
    app.sink.put(0, &forged, START).unwrap();
    let mut publisher = app.publisher();
    assert_eq!(publisher.run_once().await.unwrap().written.len(), 1);
    assert!(!open(&app.sink.latest(0).unwrap()).contains(id));
    let view = app.alice().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(view.body["status"], "active", "{}", view.body);
    assert!(!app.audit_actions().contains(&"key.revoked".to_owned()));
}

/// A sink whose reads fail: nothing is written over what it holds.
struct Unreadable(Arc<MemorySink>);

impl Sink for Unreadable {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        self.0.put(index, body, now)
    }
    fn get(&self, _index: u16, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        Err(SinkError::Transport("connection refused".into()))
    }
    fn name(&self) -> &'static str {
        "unreadable"
    }
}

#[tokio::test]
async fn a_shard_that_could_not_be_read_back_is_not_written() {
    let app = TestApp::builder().shard_count(2).build();
    let sink = Arc::new(MemorySink::default());
    let mut publisher = Publisher::new(
        app.state.store.clone(),
        Arc::clone(&app.state.keyring),
        app.clock.clone(),
        Arc::new(Unreadable(Arc::clone(&sink))),
        2,
        3600,
    );
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.written.len(), pass.failed.len()), (0, 2), "{pass:?}");
    assert_eq!(sink.writes(), 0);
}
