//! `POST /v1/keys/bulk-revoke` (issue 18, point 5) through the real router and database: one
//! call revokes a set, all or none; replays and concurrent calls revoke each key once; another
//! account's ids are refused like ids that do not exist; the size is capped; a token needs
//! `keys:write` and stays within its key grant.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, TestApp};
use serde_json::{Value, json};

const ORIGIN: &str = "https://keys.lynxo.test";
const PATH: &str = "/v1/keys/bulk-revoke";

async fn alice_keys(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let key = app.create_key(json!({ "name": format!("k{i}") })).await;
        ids.push(key["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn status_of(app: &TestApp, id: &str) -> String {
    let r = app.alice().get(&format!("/v1/keys/{id}")).await;
    r.expect(StatusCode::OK).body["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn revocations(app: &TestApp) -> usize {
    app.audit_actions()
        .iter()
        .filter(|a| *a == "key.revoked")
        .count()
}

#[tokio::test]
async fn one_call_revokes_the_set_and_a_replay_changes_nothing() {
    let app = TestApp::new();
    let ids = alice_keys(&app, 3).await;
    let keep = alice_keys(&app, 1).await;
    let body = json!({ "ids": ids, "reason": "retiring the old workers" });
    let first = app.alice().post(PATH, body.clone()).await;
    let first = first.expect(StatusCode::OK).body;
    assert_eq!(first["revoked"], 3);
    let data = first["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (entry, id) in data.iter().zip(&ids) {
        assert_eq!(
            entry["key"]["id"],
            id.as_str(),
            "answers in the order given"
        );
        assert_eq!(entry["key"]["status"], "revoked");
        assert_eq!(entry["changed"], true);
        assert!(entry["list_version"].as_u64().unwrap() > 0);
        assert_eq!(status_of(&app, id).await, "revoked");
    }
    assert_eq!(status_of(&app, &keep[0]).await, "active", "only the set");
    assert_eq!(revocations(&app), 3);

    let again = app.alice().post(PATH, body).await.expect(StatusCode::OK);
    assert_eq!(again.body["revoked"], 0);
    for (a, b) in again.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(data.iter())
    {
        assert_eq!(a["changed"], false);
        assert_eq!(a["list_version"], b["list_version"], "the same version");
    }
    assert_eq!(revocations(&app), 3, "a replay records nothing");
}

#[tokio::test]
async fn another_accounts_id_refuses_the_whole_set_like_an_unknown_id() {
    let app = TestApp::new();
    let ids = alice_keys(&app, 2).await;
    let bobs = app
        .bob()
        .post(
            "/v1/keys",
            json!({ "name": "bob", "environment": "production", "permission": "read_only" }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let nowhere = "0123456789abcdef0123456789abcdef";
    let mut answers: Vec<Value> = Vec::new();
    for stranger in [bobs.as_str(), nowhere] {
        let set = json!({ "ids": [ids[0], stranger, ids[1]], "reason": "cleanup" });
        let r = app
            .alice()
            .post(PATH, set)
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(r.body["unknown_ids"], json!([stranger]));
        let mut body = r.body;
        body["unknown_ids"] = Value::Null;
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1], "Bob's key answers as no key at all");
    for id in &ids {
        assert_eq!(status_of(&app, id).await, "active", "none was revoked");
    }
    let bob_key = app.bob().get(&format!("/v1/keys/{bobs}")).await;
    assert_eq!(bob_key.expect(StatusCode::OK).body["status"], "active");
    assert_eq!(revocations(&app), 0);
}

#[tokio::test]
async fn bad_sets_are_422_and_change_nothing() {
    let app = TestApp::new();
    let ids = alice_keys(&app, 1).await;
    let many: Vec<String> = (0..101).map(|i| format!("{i:032x}")).collect();
    for body in [
        json!({ "ids": [], "reason": "x" }),
        json!({ "ids": many, "reason": "x" }),
        json!({ "ids": [ids[0], ids[0]], "reason": "x" }),
        json!({ "ids": [ids[0], ids[0].to_uppercase()], "reason": "x" }),
        json!({ "ids": ["not-an-id"], "reason": "x" }),
        json!({ "ids": ["../../keys"], "reason": "x" }),
        json!({ "ids": [ids[0]], "reason": "   " }),
        json!({ "ids": [ids[0]], "reason": "a\u{202e}b" }),
        json!({ "ids": [ids[0]], "reason": "x".repeat(501) }),
        json!({ "ids": [ids[0]] }),
        json!({ "ids": [ids[0]], "reason": "x", "force": true }),
        json!({ "ids": [1, 2], "reason": "x" }),
        json!({ "ids": ids[0], "reason": "x" }),
    ] {
        app.alice()
            .post(PATH, body.clone())
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // Past the body limit: refused before any parsing, whatever it holds.
    let huge = json!({ "ids": vec![ids[0].clone(); 5000], "reason": "x" });
    let r = app.alice().post(PATH, huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let r = app
        .alice()
        .send(
            axum::http::Method::POST,
            PATH,
            Some(b"{\"ids\": [".to_vec()),
        )
        .await;
    assert!(r.status.is_client_error(), "{r:?}");
    app.anonymous()
        .post(PATH, json!({ "ids": [ids[0]], "reason": "x" }))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(status_of(&app, &ids[0]).await, "active");
    assert_eq!(revocations(&app), 0);
}

#[tokio::test]
async fn the_cap_is_100_keys() {
    let app = TestApp::new();
    let ids = alice_keys(&app, 3).await;
    let mut set: Vec<String> = (0..97).map(|i| format!("{i:032x}")).collect();
    set.extend(ids.iter().cloned());
    // 100 ids are taken (and refused only because 97 name no key).
    let r = app
        .alice()
        .post(PATH, json!({ "ids": set, "reason": "x" }))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(r.body["unknown_ids"].as_array().unwrap().len(), 97);
}

#[tokio::test]
async fn concurrent_overlapping_sets_revoke_each_key_once() {
    let app = TestApp::new();
    let ids = alice_keys(&app, 6).await;
    let a = json!({ "ids": ids[0..4], "reason": "first" });
    let b = json!({ "ids": ids[2..6], "reason": "second" });
    let (alice_a, alice_b) = (app.alice(), app.alice());
    let (ra, rb) = tokio::join!(alice_a.post(PATH, a), alice_b.post(PATH, b));
    let (ra, rb) = (ra.expect(StatusCode::OK), rb.expect(StatusCode::OK));
    let total = ra.body["revoked"].as_u64().unwrap() + rb.body["revoked"].as_u64().unwrap();
    assert_eq!(total, 6, "each key revoked by exactly one call");
    assert_eq!(revocations(&app), 6);
    for id in &ids {
        assert_eq!(status_of(&app, id).await, "revoked");
    }
}

async fn token(app: &TestApp, cookie: &str, fields: Value) -> String {
    let mut body = json!({ "name": "script", "password": PASSWORD });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app
        .anonymous()
        .header("cookie", cookie)
        .header("origin", ORIGIN)
        .post("/v1/management-tokens", body)
        .await
        .expect(StatusCode::CREATED);
    r.body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_token_needs_keys_write_and_stays_within_its_grant() {
    let app = TestApp::new();
    let cookie = app.alice_session(ORIGIN).await;
    let ids = alice_keys(&app, 2).await;
    let full = app.create_key(json!({ "permission": "full_access" })).await;
    let full = full["id"].as_str().unwrap().to_owned();

    let reader = token(&app, &cookie, json!({ "scopes": ["keys:read"] })).await;
    let r = app
        .client(Some(format!("Bearer {reader}")))
        .post(PATH, json!({ "ids": ids, "reason": "x" }))
        .await
        .problem(StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "keys:write");

    let writer = token(
        &app,
        &cookie,
        json!({ "scopes": ["keys:read", "keys:write"], "key_grant": "read_write" }),
    )
    .await;
    let script = app.client(Some(format!("Bearer {writer}")));
    script
        .post(
            PATH,
            json!({ "ids": [ids[0], full, ids[1]], "reason": "x" }),
        )
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    for id in [&ids[0], &ids[1], &full] {
        assert_eq!(
            status_of(&app, id).await,
            "active",
            "the set is refused whole"
        );
    }
    let r = script
        .post(PATH, json!({ "ids": ids, "reason": "x" }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["revoked"], 2);
}

#[tokio::test]
async fn search_matches_name_hint_and_id() {
    let app = TestApp::new();
    let a = app.create_key(json!({ "name": "billing worker" })).await;
    let b = app.create_key(json!({ "name": "mailer" })).await;
    let found = |list: Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_name = app.alice().get("/v1/keys?search=BILLING").await.body;
    assert_eq!(found(by_name), [a["id"].as_str().unwrap()]);
    let tail: String = {
        let hint = b["hint"].as_str().unwrap();
        hint.chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    let by_hint = app
        .alice()
        .get(&format!("/v1/keys?search={tail}"))
        .await
        .body;
    assert!(found(by_hint).contains(&b["id"].as_str().unwrap().to_owned()));
    let id = a["id"].as_str().unwrap();
    let by_id = app
        .alice()
        .get(&format!("/v1/keys?search={}", &id[..12]))
        .await
        .body;
    assert_eq!(found(by_id), [id]);
    // LIKE's wildcards are text, not patterns.
    let wild = app.alice().get("/v1/keys?search=%25").await.body;
    assert!(found(wild).is_empty());
}
