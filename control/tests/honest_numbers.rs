//! Numbers that mislead no one (issue 18, point 8): refused requests counted apart from used
//! scopes, the unused-scopes advice held until a key is old enough for it to mean something,
//! and keys made minutes ago never suggested for retiring at the key limit; and the activity
//! log naming each refusal's reason (point 2).

mod common;

use axum::http::StatusCode;
use common::{START, TestApp};
use control::keys::RETIRE_MIN_AGE;
use control::keys::view::UNUSED_SCOPES_MIN_AGE;
use serde_json::{Value, json};
use shared::key::KeyId;
use shared::usage::{Activity, Batch, Count, Outcome};

fn count(
    key: &str,
    account: u64,
    minute: u64,
    scope: Option<&str>,
    outcome: Outcome,
    n: u64,
) -> Count {
    Count {
        key_id: KeyId::parse_hex(key).unwrap(),
        account_id: account,
        minute,
        scope: scope.map(str::to_owned),
        outcome,
        n,
    }
}

fn batch(seq: u64, counts: Vec<Count>) -> Batch {
    Batch {
        source: "meter-honest".into(),
        seq,
        counts,
        ..Batch::default()
    }
}

async fn key(app: &TestApp, body: Value) -> String {
    app.create_key(body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn view(app: &TestApp, id: &str) -> Value {
    app.alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK)
        .body
}

#[tokio::test]
async fn refused_requests_are_counted_apart_from_the_scopes_used() {
    let app = TestApp::new();
    let id = key(&app, json!({ "permission": "read_only" })).await;
    let (a, minute) = (app.alice_account, START / 60);
    app.ingest(&batch(
        1,
        vec![
            count(&id, a, minute, Some("jobs:read"), Outcome::Success, 3),
            count(&id, a, minute, Some("jobs:read"), Outcome::RateLimited, 1),
            // A read-only key's POST /v1/jobs: the edge names the scope it lacks.
            count(&id, a, minute, Some("jobs:write"), Outcome::Forbidden, 4),
            count(&id, a, minute, None, Outcome::Unauthorized, 2),
        ],
    ))
    .await
    .expect(StatusCode::OK);
    let usage = app
        .alice()
        .get(&format!("/v1/keys/{id}/usage"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        usage["by_scope_allowed"],
        json!({ "jobs:read": 3 }),
        "{usage}"
    );
    assert_eq!(
        usage["by_scope_refused"],
        json!({ "jobs:read": 1, "jobs:write": 4 }),
        "{usage}"
    );
    assert_eq!(
        usage["by_scope"],
        json!({ "jobs:read": 4, "jobs:write": 4 }),
        "the total is unchanged: {usage}"
    );
    let account = app
        .alice()
        .get("/v1/usage")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        account["by_scope_allowed"],
        json!({ "jobs:read": 3 }),
        "{account}"
    );
}

#[tokio::test]
async fn the_unused_scopes_advice_waits_for_a_week_and_some_traffic() {
    let app = TestApp::new();
    let id = key(&app, json!({ "permission": "read_write" })).await;
    let fresh = view(&app, &id).await;
    assert_eq!(fresh["unused_scopes_advice"], false, "{fresh}");
    assert_eq!(
        fresh["unused_scopes_advice_from"],
        START + UNUSED_SCOPES_MIN_AGE
    );
    assert!(!fresh["unused_scopes"].as_array().unwrap().is_empty());
    // Old enough, but nothing answered yet: still no advice (the key is idle, not narrow).
    app.advance(UNUSED_SCOPES_MIN_AGE);
    assert_eq!(view(&app, &id).await["unused_scopes_advice"], false);
    // Traffic minutes old is advice too early by traffic; after a week and answered requests
    // (scope use is read per hour), the list is advice.
    let now = START + UNUSED_SCOPES_MIN_AGE;
    app.ingest(&batch(
        1,
        vec![count(
            &id,
            app.alice_account,
            now / 60 - 120,
            Some("jobs:read"),
            Outcome::Success,
            5,
        )],
    ))
    .await
    .expect(StatusCode::OK);
    let advised = view(&app, &id).await;
    assert_eq!(advised["unused_scopes_advice"], true, "{advised}");
    assert!(
        !advised["unused_scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "jobs:read"),
        "{advised}"
    );
    // Refusals alone are not traffic that makes the advice meaningful.
    let refused_only = key(&app, json!({ "permission": "read_write" })).await;
    app.advance(UNUSED_SCOPES_MIN_AGE);
    let now = START + 2 * UNUSED_SCOPES_MIN_AGE;
    app.ingest(&batch(
        2,
        vec![count(
            &refused_only,
            app.alice_account,
            now / 60 - 120,
            Some("account:read"),
            Outcome::Forbidden,
            9,
        )],
    ))
    .await
    .expect(StatusCode::OK);
    let v = view(&app, &refused_only).await;
    assert_eq!(v["unused_scopes_advice"], false, "{v}");
}

#[tokio::test]
async fn keys_made_minutes_ago_are_never_suggested_for_retiring() {
    let app = TestApp::new();
    // 45 settled keys: 20 development ones, then production; then 5 new production keys.
    for i in 0..45 {
        let env = if i < 20 { "development" } else { "production" };
        key(
            &app,
            json!({ "name": format!("old {i}"), "environment": env }),
        )
        .await;
        app.advance(1);
    }
    app.advance(RETIRE_MIN_AGE);
    let mut young = Vec::new();
    for i in 0..5 {
        young.push(key(&app, json!({ "name": format!("new {i}") })).await);
        app.advance(60);
    }
    let refused = app
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "one more", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "active_key_limit_reached");
    let candidates = refused.body["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5, "{}", refused.body);
    for c in candidates {
        assert!(
            !young.iter().any(|y| c["id"] == *y),
            "a new key suggested: {c}"
        );
        assert!(c["name"].as_str().unwrap().starts_with("old "), "{c}");
        assert_eq!(c["environment"], "development", "{c}");
        assert!(c["created_at"].as_u64().unwrap() <= START + 45, "{c}");
    }

    // When every key is new, none is suggested.
    let fresh = TestApp::new();
    for i in 0..50 {
        key(&fresh, json!({ "name": format!("k{i}") })).await;
    }
    let refused = fresh
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "one more", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "active_key_limit_reached");
    assert_eq!(refused.body["candidates"], json!([]), "{}", refused.body);
}

#[tokio::test]
async fn each_refusal_in_the_activity_log_names_its_reason() {
    let app = TestApp::new();
    let expires = START + 3600;
    let id = key(
        &app,
        json!({ "permission": "read_only", "expires_at": expires }),
    )
    .await;
    app.advance(7200);
    let a = app.alice_account;
    let entry = |at_s: u64, status: u16, outcome: Outcome| Activity {
        key_id: KeyId::parse_hex(&id).unwrap(),
        account_id: a,
        at_ms: at_s * 1000,
        method: "GET".into(),
        path: "/v1/jobs".into(),
        status,
        outcome,
        client_ip: None,
        country: None,
        colo: None,
        user_agent: None,
        reason: None,
    };
    let mut b = batch(1, vec![]);
    b.activity = vec![
        entry(START + 1, 401, Outcome::Unauthorized),
        entry(START + 2, 403, Outcome::Forbidden),
        entry(START + 3, 429, Outcome::RateLimited),
        entry(START + 4, 200, Outcome::Success),
    ];
    b.activity.push(entry(expires, 401, Outcome::Unauthorized));
    b.activity.push(entry(expires + 5, 403, Outcome::Forbidden));
    app.ingest(&b).await.expect(StatusCode::OK);
    let page = app
        .alice()
        .get(&format!("/v1/keys/{id}/activity"))
        .await
        .expect(StatusCode::OK)
        .body;
    let reasons: Vec<(u64, Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["at_ms"].as_u64().unwrap() / 1000, e["reason"].clone()))
        .collect();
    let of = |at: u64| {
        reasons
            .iter()
            .find(|(t, _)| *t == at)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no entry at {at}: {reasons:?}"))
    };
    assert_eq!(of(START + 1), "wrong_environment");
    assert_eq!(of(START + 2), "insufficient_scope");
    assert_eq!(of(START + 3), "rate_limit_exceeded");
    assert_eq!(of(START + 4), Value::Null);
    assert_eq!(of(expires), "expired");
    assert_eq!(of(expires + 5), "insufficient_scope");
}
