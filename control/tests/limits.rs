//! Per-key rate limits: plan bounds, policy versions, the limits outbox and the signed push to
//! the edge (against an in-process fake edge on loopback).

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use common::{START, TestApp, keyring};
use control::publish::{EdgeSyncSink, KvRestSink, LimitPublisher, Sink};
use control::store::StoreError;
use control::store::{keys as keys_db, limits as limits_db};
use serde_json::{Value, json};
use shared::key::KeyId;
use shared::limits::{LimitPush, LimitUpdate, SYNC_PATH};

/// A stand-in for the edge's sync endpoint: checks each push's signature, records it and
/// answers with the status the test sets.
#[derive(Clone)]
struct FakeEdge {
    pushes: Arc<Mutex<Vec<LimitPush>>>,
    status: Arc<AtomicU16>,
    bad_signatures: Arc<AtomicU16>,
}

impl FakeEdge {
    async fn start() -> (Self, String) {
        let edge = Self {
            pushes: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            bad_signatures: Arc::default(),
        };
        let router = Router::new()
            .route(SYNC_PATH, put(receive))
            .with_state(edge.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (edge, url)
    }

    fn pushes(&self) -> Vec<LimitPush> {
        self.pushes.lock().unwrap().clone()
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

async fn receive(State(edge): State<FakeEdge>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("lynxo-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The test clock stands at START or a little after.
    if shared::limits::verify_push(&keyring(), signature, &body, START, 3600).is_err() {
        edge.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let status = StatusCode::from_u16(edge.status.load(Ordering::SeqCst)).unwrap();
    if status.is_success() {
        edge.pushes
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
    }
    status
}

fn limit_publisher(app: &TestApp, url: &str) -> LimitPublisher {
    let sink: Arc<dyn Sink> = Arc::new(EdgeSyncSink::new(url, Arc::clone(&app.state.keyring)));
    LimitPublisher::new(app.state.store.clone(), app.clock.clone(), sink)
}

async fn get_key(app: &TestApp, id: &str) -> Value {
    app.alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK)
        .body
}

#[tokio::test]
async fn a_new_key_is_pushed_with_its_policy_and_leaves_the_outbox() {
    let app = TestApp::new();
    let (edge, url) = FakeEdge::start().await;
    let key = app
        .create_key(json!({ "rate_limit": 50, "rate_limit_window": 10 }))
        .await;
    let id = key["id"].as_str().unwrap();
    assert_eq!(
        (&key["rate_limit"], &key["rate_limit_window"]),
        (&json!(50), &json!(10))
    );
    assert_eq!(key["rate_limit_pending"], true);
    let mut publisher = limit_publisher(&app, &url);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.pushed, pass.failed, pass.pending), (1, false, 0));
    assert_eq!(
        edge.pushes(),
        vec![LimitPush {
            limits: vec![LimitUpdate {
                key_id: KeyId::parse_hex(id).unwrap(),
                policy: shared::limits::Policy::new(50, 10).unwrap(),
                version: START * 1000,
                // The standard plan's cap; a created key is its own budget.
                per_minute: Some(6000),
                budget: None,
            }]
        }]
    );
    assert_eq!(get_key(&app, id).await["rate_limit_pending"], false);
    // Nothing left: the next pass sends nothing.
    let pass = publisher.run_once().await.unwrap();
    assert_eq!(pass.pushed, 0);
    assert_eq!(edge.pushes().len(), 1);
    assert_eq!(edge.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_push_keeps_the_outbox_rows_and_backs_off() {
    let app = TestApp::new();
    let (edge, url) = FakeEdge::start().await;
    let id = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    edge.answer(503);
    let mut publisher = limit_publisher(&app, &url);
    let pass = publisher.run_once().await;
    assert!(pass.as_ref().unwrap().failed);
    assert_eq!(pass.as_ref().unwrap().pending, 1);
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(1));
    let pass = publisher.run_once().await;
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(2));
    let pass = publisher.run_once().await;
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(4));
    assert_eq!(get_key(&app, &id).await["rate_limit_pending"], true);
    edge.answer(204);
    let pass = publisher.run_once().await;
    assert_eq!(pass.as_ref().unwrap().pushed, 1);
    // Success resets the backoff; with nothing pending the loop waits for a wake-up.
    assert_eq!(publisher.idle_after(&pass), Duration::from_secs(30));
    assert_eq!(get_key(&app, &id).await["rate_limit_pending"], false);
}

#[tokio::test]
async fn changing_a_limit_pushes_a_new_version_without_a_new_key() {
    let app = TestApp::new();
    let (edge, url) = FakeEdge::start().await;
    let id = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut publisher = limit_publisher(&app, &url);
    publisher.run_once().await.unwrap();
    let first = edge.pushes()[0].limits[0].clone();
    assert_eq!((first.policy.limit, first.policy.window), (600, 60));
    app.clock.advance(Duration::from_millis(1500));
    let updated = app
        .alice()
        .patch(
            &format!("/v1/keys/{id}"),
            json!({ "rate_limit": 5, "rate_limit_window": 1 }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        (
            &updated["rate_limit"],
            &updated["rate_limit_window"],
            &updated["rate_limit_pending"]
        ),
        (&json!(5), &json!(1), &json!(true))
    );
    publisher.run_once().await.unwrap();
    let second = edge.pushes()[1].limits[0].clone();
    assert_eq!(second.key_id.to_string(), id);
    assert_eq!((second.policy.limit, second.policy.window), (5, 1));
    assert!(second.version > first.version);
    assert_eq!(second.version, START * 1000 + 1500);
    // The change is audited with both policies.
    assert_eq!(app.audit_actions().last().unwrap(), "key.updated");
    let events = app.alice().get("/v1/audit-events?limit=1").await.body;
    let details = &events["data"][0]["details"];
    assert_eq!(details["before"]["rate_limit"], 600);
    assert_eq!(details["after"]["rate_limit_window"], 1);
    assert_eq!(details["policy_version"], second.version);
    // Sending the same policy again changes nothing and queues nothing.
    let same = app
        .alice()
        .patch(&format!("/v1/keys/{id}"), json!({ "rate_limit": 5 }))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(same["rate_limit_pending"], false);
}

#[tokio::test]
async fn a_policy_changed_during_a_push_stays_queued() {
    let app = TestApp::new();
    let id = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = KeyId::parse_hex(&id).unwrap();
    let store = &app.state.store;
    let pushed = store
        .read_blocking::<_, StoreError, _>(|c| limits_db::pending(c, 1000))
        .unwrap();
    assert_eq!(pushed.len(), 1);
    // While that push is in flight, the limit changes.
    let newer = store
        .write_blocking::<_, StoreError, _>(move |tx| {
            keys_db::set_rate_limit(tx, key, 7, 60, START * 1000 + 1)
        })
        .unwrap();
    let deleted = store
        .write_blocking::<_, StoreError, _>(move |tx| limits_db::acknowledged(tx, &pushed))
        .unwrap();
    assert_eq!(
        deleted, 0,
        "the acknowledged version is no longer the queued one"
    );
    let queued = store
        .read_blocking::<_, StoreError, _>(|c| limits_db::pending(c, 1000))
        .unwrap();
    assert_eq!(queued[0].version, newer);
    assert_eq!(queued[0].policy.limit, 7);
}

#[tokio::test]
async fn a_rotated_key_gets_its_own_policy_push() {
    let app = TestApp::new();
    let (edge, url) = FakeEdge::start().await;
    let id = app.create_key(json!({ "rate_limit": 42 })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut publisher = limit_publisher(&app, &url);
    publisher.run_once().await.unwrap();
    app.advance(1);
    let rotated = app
        .alice()
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({ "grace_period_seconds": 60 }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    let new_id = rotated["key"]["id"].as_str().unwrap();
    assert_eq!(rotated["key"]["rate_limit"], 42);
    assert_eq!(rotated["key"]["rate_limit_pending"], true);
    publisher.run_once().await.unwrap();
    let push = &edge.pushes()[1].limits;
    assert_eq!(push.len(), 1);
    assert_eq!(push[0].key_id.to_string(), new_id);
    assert_eq!(push[0].policy.limit, 42);
    // The successor spends its predecessor's budget: one limiter for the chain.
    assert_eq!(push[0].budget.map(|b| b.to_string()), Some(id.clone()));
    assert_eq!(rotated["key"]["rate_limit_budget"], id.as_str());
    assert_eq!(rotated["previous"]["rate_limit_budget"], id.as_str());
}

#[tokio::test]
async fn with_only_kv_configured_limits_stay_pending() {
    let app = TestApp::new();
    let id = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An address nothing listens on: the publisher must not even try.
    let sink: Arc<dyn Sink> = Arc::new(KvRestSink::new("http://127.0.0.1:9", "a", "n", "t"));
    let mut publisher = LimitPublisher::new(app.state.store.clone(), app.clock.clone(), sink);
    let pass = publisher.run_once().await.unwrap();
    assert_eq!((pass.pushed, pass.failed, pass.pending), (0, false, 1));
    assert_eq!(get_key(&app, &id).await["rate_limit_pending"], true);
}

#[tokio::test]
async fn limits_respect_the_plan_per_minute() {
    let app = TestApp::new();
    // Absent limit: the plan's 600/min scaled to the window.
    let key = app.create_key(json!({ "rate_limit_window": 10 })).await;
    assert_eq!(
        (&key["rate_limit"], &key["rate_limit_window"]),
        (&json!(100), &json!(10))
    );
    let key = app
        .create_key(json!({ "rate_limit": 600_000, "rate_limit_window": 6000 }))
        .await;
    assert_eq!(key["rate_limit"], 600_000);
    let r = app
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "n", "environment": "production", "permission": "read_only",
                    "rate_limit": 6000, "rate_limit_window": 1 }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(r.body["field"], "rate_limit");
    assert_eq!(r.body["max_rate_limit"], 6000);
    assert_eq!(r.body["max_rate_limit_for_window"], 100);
    assert!(r.body["detail"].as_str().unwrap().contains("100"));
    for bad in [
        json!({ "rate_limit": 0 }),
        json!({ "rate_limit_window": 0 }),
        json!({ "rate_limit_window": 86_401 }),
    ] {
        let mut body =
            json!({ "name": "n", "environment": "production", "permission": "read_only" });
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.alice()
            .post("/v1/keys", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let id = key["id"].as_str().unwrap();
    // Shrinking the window under a large limit breaks the cap: refused, nothing changes.
    let r = app
        .alice()
        .patch(
            &format!("/v1/keys/{id}"),
            json!({ "rate_limit_window": 60 }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(r.body["max_rate_limit_for_window"], 6000);
    assert_eq!(r.body["rate_limit"], 600_000);
    for bad in [
        json!({ "rate_limit": null }),
        json!({ "rate_limit_window": null }),
        json!({ "rate_limit": 0 }),
        json!({ "rate_limit_window": 90_000 }),
    ] {
        app.alice()
            .patch(&format!("/v1/keys/{id}"), bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert_eq!(get_key(&app, id).await["rate_limit_window"], 6000);
    // Another account's key is a 404 and nothing changes.
    app.bob()
        .patch(&format!("/v1/keys/{id}"), json!({ "rate_limit": 1 }))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}

#[test]
fn the_limits_request_is_a_signed_put_of_the_push() {
    let ring = Arc::new(keyring());
    let sink = EdgeSyncSink::new("http://127.0.0.1:8787/", Arc::clone(&ring));
    let body = br#"{"limits":[]}"#;
    let req = sink.limits_request(body, START).unwrap();
    assert_eq!(req.method(), http::Method::PUT);
    assert_eq!(
        req.uri().to_string(),
        "http://127.0.0.1:8787/_lynxo/sync/limits"
    );
    assert_eq!(req.headers()["content-type"], "application/json");
    let signature = req.headers()["lynxo-signature"].to_str().unwrap();
    assert_eq!(
        shared::limits::verify_push(&ring, signature, body, START, 300),
        Ok(START)
    );
    assert!(shared::limits::verify_push(&ring, signature, b"{}", START, 300).is_err());
}

#[test]
fn migration_0002_keeps_old_limits_per_minute_and_queues_every_working_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../src/store/migrations/0001_initial.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO accounts (id, name, plan_id, created_at) VALUES (1, 'a', 'standard', 1);
             INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, hint,
                                   rate_limit, created_at)
             VALUES ('00000000000000000000000000000001', 0, 1, 'live', 'production', 1, 1, 'h',
                     120, 1);
             INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, hint,
                                   rate_limit, created_at, revoked_at)
             VALUES ('00000000000000000000000000000002', 0, 1, 'gone', 'production', 1, 1, 'h',
                     120, 1, 2);",
        )
        .unwrap();
    }
    let store = control::store::Store::open(&path, common::audit_keyring()).unwrap();
    let live = KeyId::parse_hex("00000000000000000000000000000001").unwrap();
    let row = store
        .read_blocking::<_, StoreError, _>(move |c| keys_db::get(c, 1, live))
        .unwrap()
        .unwrap();
    assert_eq!((row.rate_limit, row.rate_limit_window), (120, 60));
    assert!(row.limit_pending);
    let queued = store
        .read_blocking::<_, StoreError, _>(|c| limits_db::pending(c, 1000))
        .unwrap();
    assert_eq!(queued.len(), 1, "revoked keys are not pushed");
    assert_eq!(queued[0].key_id, live);
}

#[test]
fn migration_0005_gives_every_rotation_chain_one_budget_and_queues_every_working_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.sqlite3");
    let id = |n: u8| format!("{n:032x}");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("../src/store/migrations/0001_initial.sql"),
            include_str!("../src/store/migrations/0002_usage_and_limits.sql"),
            include_str!("../src/store/migrations/0003_audit_by_target.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 3; DELETE FROM limits_outbox;
             INSERT INTO accounts (id, name, plan_id, created_at) VALUES (1, 'a', 'standard', 1);",
        )
        .unwrap();
        // A chain 1 -> 2 -> 3 as the old rotation left it (two keys in grace), and key 4 alone,
        // revoked.
        let far = 4_000_000_000_i64;
        for (n, from, revoked_at) in [
            (1_u8, None, Some(far)),
            (2, Some(1_u8), Some(far)),
            (3, Some(2), None),
            (4, None, Some(2)),
        ] {
            conn.execute(
                "INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, \
                 hint, rate_limit, created_at, rotated_from, revoked_at) \
                 VALUES (?1, 0, 1, 'k', 'production', 1, 1, 'h', 120, 1, ?2, ?3)",
                rusqlite::params![id(n), from.map(id), revoked_at],
            )
            .unwrap();
        }
    }
    let store = control::store::Store::open(&path, common::audit_keyring()).unwrap();
    for n in 1..=4_u8 {
        let key = KeyId::parse_hex(&id(n)).unwrap();
        let row = store
            .read_blocking::<_, StoreError, _>(move |c| keys_db::get(c, 1, key))
            .unwrap()
            .unwrap();
        let root = if n == 4 { 4 } else { 1 };
        assert_eq!(row.budget_id.to_string(), id(root), "key {n}");
    }
    let queued = store
        .read_blocking::<_, StoreError, _>(|c| limits_db::pending(c, 1000))
        .unwrap();
    let mut pushed: Vec<(String, Option<String>)> = queued
        .into_iter()
        .map(|u| (u.key_id.to_string(), u.budget.map(|b| b.to_string())))
        .collect();
    pushed.sort();
    assert_eq!(
        pushed,
        [(id(1), None), (id(2), Some(id(1))), (id(3), Some(id(1)))],
        "every working key, with its chain's budget; the revoked one is not pushed"
    );
}
