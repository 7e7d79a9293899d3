//! No issued key string may reach the database (SQLite's file and WAL, or every row of
//! PostgreSQL's tables: `common::database_files`) or the logs. This test issues keys
//! by create and rotate, revokes them (also as leaks: a GitHub report, a holder's
//! self-revocation), publishes, then searches every byte it can find.
//!
//! It installs a global log subscriber, so it lives in its own test binary.

mod common;
#[path = "common/provider.rs"]
mod provider;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestApp, capture_logs, contains};
use serde_json::json;
use tower::ServiceExt as _;

#[tokio::test]
async fn issued_keys_are_nowhere_in_the_database_wal_or_logs() {
    let logs = capture_logs();

    let github = provider::Provider::new(31);
    let url = github.url.clone();
    let app = TestApp::builder()
        .settings(move |s| s.github_keys_url = Some(url))
        .build();
    let mut keys = Vec::new();
    for i in 0..5 {
        let k = app
            .create_key(json!({ "name": format!("k{i}"), "description": "note" }))
            .await;
        keys.push((
            k["id"].as_str().unwrap().to_owned(),
            k["key"].as_str().unwrap().to_owned(),
        ));
    }
    for (id, _) in keys.clone().iter().take(3) {
        let r = app
            .alice()
            .post(
                &format!("/v1/keys/{id}/rotate"),
                json!({ "grace_period_seconds": 0 }),
            )
            .await
            .expect(StatusCode::CREATED);
        keys.push((
            r.body["key"]["id"].as_str().unwrap().to_owned(),
            r.body["key"]["key"].as_str().unwrap().to_owned(),
        ));
    }
    for (id, _) in keys.iter().skip(3).take(3) {
        app.alice()
            .post(
                &format!("/v1/keys/{id}/revoke"),
                json!({ "reason": "test" }),
            )
            .await
            .expect(StatusCode::OK);
    }
    // Leaks: two keys reported by GitHub, one revoked by its holder.
    let report = serde_json::to_vec(&json!([
        {"token": keys[0].1, "type": "lynxo", "url": "https://github.com/a/b", "source": "content"},
        {"token": keys[1].1, "type": "lynxo", "url": "https://github.com/a/b", "source": "content"},
    ]))
    .unwrap();
    let request = Request::post("/secret-scanning/github")
        .header("github-public-key-identifier", &github.identifier)
        .header("github-public-key-signature", github.sign(&report))
        .header("content-type", "application/json")
        .body(Body::from(report))
        .unwrap();
    let answer = app.router().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let request = Request::post("/v1/keys/revoke")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}", keys[2].1)))
        .unwrap();
    let answer = app.router().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(app.audit_actions().contains(&"key.leaked".to_owned()));
    for (_, key) in &keys {
        app.alice()
            .post(
                "/v1/keys/verify",
                json!({ "key": key, "method": "GET", "path": "/v1/jobs" }),
            )
            .await
            .expect(StatusCode::OK);
    }
    app.publisher().run_once().await.unwrap();

    let files = common::database_files(&app);
    for (name, bytes) in &files {
        assert!(!bytes.is_empty(), "the {name} holds the recent writes");
    }
    let logs = logs.bytes();
    assert!(contains(&logs, b"key created"), "the capture works");
    for (id, key) in &keys {
        assert!(
            contains(&logs, id.as_bytes())
                || files
                    .iter()
                    .any(|(_, bytes)| contains(bytes, id.as_bytes())),
            "the search finds what is there"
        );
        // The key, and any 24-character piece of its body (a partial leak), appear nowhere.
        let body = &key.as_bytes()[9..];
        let mut needles = vec![key.as_bytes()];
        needles.extend(body.chunks(24).filter(|c| c.len() == 24));
        for needle in needles {
            let files = files.iter().map(|(name, bytes)| (*name, bytes));
            for (name, bytes) in files.chain([("logs", &logs)]) {
                assert!(
                    !contains(bytes, needle),
                    "{name} contains part of key {id}: {}",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}
