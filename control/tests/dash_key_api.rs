//! What the rebuilt key page (issue 18) asks of the API: a real 404 for a key page of no key of
//! the account, a revoked key's settings read-only, and its refused attempts counted apart from
//! its use (`refused_since_revocation`, `requests_24h`, the activity's `from_ms` / `to_ms`).

mod common;

use axum::http::StatusCode;
use common::{START, TestApp};
use serde_json::{Value, json};
use shared::key::KeyId;
use shared::usage::{Activity, Batch, Count, Outcome};

fn count(key: &str, account: u64, minute: u64, outcome: Outcome, n: u64) -> Count {
    Count {
        key_id: KeyId::parse_hex(key).unwrap(),
        account_id: account,
        minute,
        scope: (outcome == Outcome::Success).then(|| "jobs:read".to_owned()),
        outcome,
        n,
    }
}

fn activity(key: &str, account: u64, at_ms: u64, status: u16, outcome: Outcome) -> Activity {
    Activity {
        key_id: KeyId::parse_hex(key).unwrap(),
        account_id: account,
        at_ms,
        method: "GET".into(),
        path: "/v1/jobs".into(),
        status,
        outcome,
        client_ip: None,
        country: None,
        colo: None,
        user_agent: None,
        reason: None,
    }
}

async fn key(app: &TestApp, id: &str) -> Value {
    app.alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK)
        .body
}

#[tokio::test]
async fn a_key_page_of_no_key_of_the_account_is_a_real_404() {
    let app = TestApp::new();
    let mine = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = app
        .bob()
        .post(
            "/v1/keys",
            json!({ "name": "bob's", "environment": "production", "permission": "read_only" }),
        )
        .await
        .expect(StatusCode::CREATED)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = app.alice().get(&format!("/dashboard/keys/{mine}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains(&format!(r#"data-key-id="{mine}""#))
    );
    // Another account's key, an id of no key, an id with upper case, an encoded path: each the
    // same 404 page, with no key page shell (no buttons that act).
    for path in [
        format!("/dashboard/keys/{theirs}"),
        "/dashboard/keys/00112233445566778899aabbccddeeff".to_owned(),
        format!("/dashboard/keys/{}", mine.to_uppercase()),
        format!("/dashboard/keys/{mine}%2F..%2F"),
        "/dashboard/keys/%00".to_owned(),
    ] {
        let page = app.alice().get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        let html = page.body.as_str().unwrap_or_default().to_owned();
        assert!(
            html.contains("No key with this id in your account"),
            "{path}"
        );
        assert!(
            !html.contains("data-key-id") && !html.contains("revoke-open"),
            "{path}"
        );
    }
    // Bob sees his own key's page, and not Alice's.
    assert_eq!(
        app.bob()
            .get(&format!("/dashboard/keys/{theirs}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.bob()
            .get(&format!("/dashboard/keys/{mine}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_revoked_keys_settings_are_read_only() {
    let app = TestApp::new();
    let id = app.create_key(json!({ "name": "old" })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "leaked in a log" }),
        )
        .await
        .expect(StatusCode::OK);
    let events = app.audit_actions().len();
    for body in [
        json!({ "name": "renamed" }),
        json!({ "description": "x" }),
        json!({ "rate_limit": 10 }),
    ] {
        app.alice()
            .patch(&format!("/v1/keys/{id}"), body)
            .await
            .problem(StatusCode::CONFLICT, "key_revoked");
    }
    let k = key(&app, &id).await;
    assert_eq!(k["name"], "old");
    assert_eq!(k["revoke_reason"], "leaked in a log");
    assert_eq!(
        app.audit_actions().len(),
        events,
        "a refused change left an event"
    );
    // Another account's revoked key is still a 404, not a 409 that says it exists.
    app.bob()
        .patch(&format!("/v1/keys/{id}"), json!({ "name": "x" }))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_rename_racing_a_revocation_either_lands_first_or_is_refused() {
    let app = TestApp::new();
    for round in 0..8 {
        let id = app.create_key(json!({ "name": format!("k{round}") })).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let alice = app.alice();
        let (patch_path, revoke_path) = (format!("/v1/keys/{id}"), format!("/v1/keys/{id}/revoke"));
        let (patched, revoked) = tokio::join!(
            alice.patch(&patch_path, json!({ "name": "renamed" })),
            alice.post(&revoke_path, json!({ "reason": "race" })),
        );
        assert_eq!(revoked.status, StatusCode::OK);
        let k = key(&app, &id).await;
        match patched.status {
            StatusCode::OK => assert_eq!(k["name"], "renamed"),
            StatusCode::CONFLICT => assert_eq!(k["name"], format!("k{round}")),
            other => panic!("rename answered {other}: {}", patched.body),
        }
        assert_eq!(k["status"], "revoked");
    }
}

#[tokio::test]
async fn refused_attempts_after_a_revocation_are_counted_apart() {
    let app = TestApp::new();
    let a = app.alice_account;
    let id = app.create_key(json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let minute = START / 60;
    // Use before the revocation: 5 allowed, 2 refused (say, another environment).
    let mut before = Batch {
        source: "meter".into(),
        seq: 1,
        counts: vec![
            count(&id, a, minute, Outcome::Success, 5),
            count(&id, a, minute, Outcome::Unauthorized, 2),
        ],
        ..Batch::default()
    };
    before
        .activity
        .push(activity(&id, a, START * 1000, 200, Outcome::Success));
    before.activity.push(activity(
        &id,
        a,
        START * 1000 + 1,
        401,
        Outcome::Unauthorized,
    ));
    app.ingest(&before).await.expect(StatusCode::OK);
    let k = key(&app, &id).await;
    assert_eq!(k["requests_24h"], 7);
    assert_eq!(
        k["refused_since_revocation"],
        Value::Null,
        "not revoked: null"
    );

    app.advance(120);
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "retired" }),
        )
        .await
        .expect(StatusCode::OK);
    let revoked_at = key(&app, &id).await["revoked_at"].as_u64().unwrap();
    app.advance(60);
    // After it: 40 refused attempts, over two minutes.
    let mut after = Batch {
        source: "meter".into(),
        seq: 2,
        counts: vec![
            count(&id, a, revoked_at / 60 + 1, Outcome::Unauthorized, 30),
            count(&id, a, revoked_at / 60 + 2, Outcome::Unauthorized, 10),
        ],
        ..Batch::default()
    };
    for i in 0..3 {
        after.activity.push(activity(
            &id,
            a,
            (revoked_at + 61) * 1000 + i,
            401,
            Outcome::Unauthorized,
        ));
    }
    app.ingest(&after).await.expect(StatusCode::OK);
    let k = key(&app, &id).await;
    assert_eq!(k["status"], "revoked");
    assert_eq!(k["refused_since_revocation"], 40);
    assert_eq!(k["requests_24h"], 7, "the attempts are not use");
    // The list shows the same numbers.
    let list = app
        .alice()
        .get("/v1/keys?status=revoked")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(list["data"][0]["refused_since_revocation"], 40);
    assert_eq!(list["data"][0]["requests_24h"], 7);

    // The activity splits at the revocation.
    let split = revoked_at * 1000;
    let page = |q: String| {
        let alice = app.alice();
        let id = id.clone();
        async move { alice.get(&format!("/v1/keys/{id}/activity?{q}")).await }
    };
    let before_rows = page(format!("to_ms={split}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(before_rows["data"].as_array().unwrap().len(), 2);
    let since_rows = page(format!("from_ms={split}"))
        .await
        .expect(StatusCode::OK)
        .body;
    let since_rows = since_rows["data"].as_array().unwrap();
    assert_eq!(since_rows.len(), 3);
    assert!(
        since_rows
            .iter()
            .all(|r| r["at_ms"].as_u64().unwrap() >= split)
    );
    // Paging within a bound stays within it.
    let first = page(format!("from_ms={split}&limit=2"))
        .await
        .expect(StatusCode::OK)
        .body;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let rest = page(format!("from_ms={split}&limit=2&before={cursor}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    let bounded = page(format!("to_ms={split}&before={cursor}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        bounded["data"].as_array().unwrap().len(),
        2,
        "to_ms bounds a later cursor"
    );
    // Empty and extreme ranges answer, bad ones are refused, never a 500.
    assert_eq!(
        page(format!("from_ms={split}&to_ms={split}"))
            .await
            .expect(StatusCode::OK)
            .body["data"],
        json!([])
    );
    // Past the documented maximum (i64) a bound is refused, as the schema says.
    for past in [
        format!("to_ms={}", u64::MAX),
        format!("from_ms={}", 1_u64 << 63),
    ] {
        page(past)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    page(format!("to_ms={}", i64::MAX))
        .await
        .expect(StatusCode::OK);
    page("from_ms=0&to_ms=0".into())
        .await
        .expect(StatusCode::OK);
    for bad in [
        "to_ms=-1",
        "from_ms=abc",
        "to_ms=1e3",
        "from_ms=18446744073709551616",
        "to_ms=",
    ] {
        let r = page(bad.into()).await;
        assert!(r.status.is_client_error(), "{bad}: {} {}", r.status, r.body);
    }
    // Bob cannot read them.
    app.bob()
        .get(&format!("/v1/keys/{id}/activity?from_ms={split}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
}
