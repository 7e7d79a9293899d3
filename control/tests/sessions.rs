//! Sign-in, sessions, CSRF, brute-force limiting, token-use auditing and the audit API.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, TestApp};
use control::store::StoreError;
use control::store::audit;
use serde_json::json;

const ORIGIN: &str = "https://keys.lynxo.test";

/// Signs alice in and returns the `Cookie` header value.
async fn sign_in(app: &TestApp) -> String {
    let r = app
        .anonymous()
        .header("origin", ORIGIN)
        .post(
            "/v1/sessions",
            json!({ "email": "Alice@Example.com ", "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["account_id"], app.alice_account);
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Domain"),
        "__Host- cookies have no Domain"
    );
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("__Host-lynxo_session="));
    pair
}

fn key_body() -> serde_json::Value {
    json!({ "name": "from the dashboard", "environment": "production", "permission": "read_only" })
}

#[tokio::test]
async fn a_session_cookie_authenticates_and_writes_need_the_dashboard_origin() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let browser = || app.anonymous().header("cookie", &cookie);
    browser().get("/v1/keys").await.expect(StatusCode::OK);
    // Cross-site or unproven writes are refused before anything happens.
    browser()
        .post("/v1/keys", key_body())
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    browser()
        .header("origin", "https://evil.example")
        .post("/v1/keys", key_body())
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    browser()
        .header("sec-fetch-site", "cross-site")
        .header("origin", ORIGIN)
        .post("/v1/keys", key_body())
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    browser()
        .header("sec-fetch-site", "same-site")
        .post("/v1/keys", key_body())
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    let list = browser().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(list.body["data"], json!([]), "nothing was created");
    // From the dashboard itself they work.
    let created = browser()
        .header("origin", ORIGIN)
        .post("/v1/keys", key_body())
        .await
        .expect(StatusCode::CREATED);
    browser()
        .header("sec-fetch-site", "same-origin")
        .post(
            &format!("/v1/keys/{}/revoke", created.body["id"].as_str().unwrap()),
            json!({ "reason": "done" }),
        )
        .await
        .expect(StatusCode::OK);
    // Bearer tokens are not ambient credentials: no origin needed.
    app.alice()
        .post("/v1/keys", key_body())
        .await
        .expect(StatusCode::CREATED);
    let events = app
        .alice()
        .get("/v1/audit-events")
        .await
        .expect(StatusCode::OK);
    let actors: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.created")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.iter().any(|a| a.starts_with("user:")), "{actors:?}");
    assert!(actors.iter().any(|a| a.starts_with("token:")), "{actors:?}");
}

#[tokio::test]
async fn sign_in_refuses_cross_site_posts_and_wrong_passwords() {
    let app = TestApp::new();
    app.anonymous()
        .header("origin", "https://evil.example")
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    for body in [
        json!({ "email": "alice@example.com", "password": "wrong password!" }),
        json!({ "email": "nobody@example.com", "password": PASSWORD }),
        json!({ "email": "alice@example.com", "password": app.alice_token }),
    ] {
        let r = app
            .anonymous()
            .post("/v1/sessions", body)
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert!(r.header("set-cookie").is_none());
    }
    app.anonymous()
        .post("/v1/sessions", json!({ "email": "alice@example.com" }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Alice's two failures are in her trail; the unknown email's is in nobody's.
    assert_eq!(failed_sign_ins(&app, 2).await.len(), 2);
}

/// Alice's audit events with this action, newest first.
async fn alice_events(app: &TestApp, action: &str) -> Vec<serde_json::Value> {
    let events = app
        .alice()
        .get("/v1/audit-events?limit=1000")
        .await
        .expect(StatusCode::OK)
        .body;
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// The `user.sign_in_failed` events of alice's account, once there are `n` (they are written
/// after the answer, so that a known email answers as fast as an unknown one).
async fn failed_sign_ins(app: &TestApp, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let failed = alice_events(app, "user.sign_in_failed").await;
        if failed.len() >= n {
            return failed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} failed sign-ins were not recorded");
}

#[tokio::test]
async fn a_failed_sign_in_is_by_an_anonymous_actor_against_the_user_and_keeps_no_email() {
    let app = TestApp::new();
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": "wrong password!" }),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let typed = "my.password.typed.here@oops.example";
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": typed, "password": PASSWORD }),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let alice = alice_events(&app, "user.created").await[0]["target"].clone();
    let failed = failed_sign_ins(&app, 1).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let event = &failed[0];
    assert_eq!(event["actor"], "anonymous", "{event}");
    assert_eq!(event["target"], alice, "{event}");
    assert_eq!(event["account_id"], app.alice_account, "{event}");
    assert!(!event["details"].to_string().contains('@'), "{event}");
    // No row of any account, nor one of none, holds the unknown email.
    let rows: Vec<String> = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            let mut stmt = c.prepare(
                "SELECT actor || coalesce(target, '') || coalesce(source, '') || details \
                 FROM audit_events",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert!(rows.iter().all(|r| !r.contains(typed)), "{rows:?}");
}

#[tokio::test]
async fn repeated_failures_lock_that_client_out_of_the_email_for_a_window() {
    let app = TestApp::new();
    let wrong = json!({ "email": "alice@example.com", "password": "wrong password!" });
    for _ in 0..5 {
        app.anonymous()
            .post("/v1/sessions", wrong.clone())
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
    let right = json!({ "email": "alice@example.com", "password": PASSWORD });
    let r = app
        .anonymous()
        .post("/v1/sessions", right.clone())
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_sign_in_attempts");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900);
    // Another user is not locked out by alice's failures.
    app.anonymous()
        .post(
            "/v1/sessions",
            json!({ "email": "bob@example.com", "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    app.advance(retry);
    app.anonymous()
        .post("/v1/sessions", right)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn sign_out_and_expiry_end_a_session() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    // A management token has no session: signing out is a harmless no-op.
    app.alice()
        .delete("/v1/sessions/current")
        .await
        .expect(StatusCode::NO_CONTENT);
    let r = app
        .anonymous()
        .header("cookie", &cookie)
        .header("origin", ORIGIN)
        .delete("/v1/sessions/current")
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    app.anonymous()
        .header("cookie", &cookie)
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let cookie = sign_in(&app).await;
    app.advance(12 * 3600);
    app.anonymous()
        .header("cookie", &cookie)
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn token_use_is_audited_at_most_hourly() {
    let app = TestApp::new();
    let used = || {
        app.audit_actions()
            .iter()
            .filter(|a| *a == "management_token.used")
            .count()
    };
    assert_eq!(used(), 0);
    app.alice().get("/v1/keys").await.expect(StatusCode::OK);
    app.alice().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(used(), 1);
    app.advance(3600);
    app.alice().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(used(), 2);
}

#[tokio::test]
async fn the_audit_api_shows_only_the_callers_account_and_pages() {
    let app = TestApp::new();
    for i in 0..3 {
        app.create_key(json!({ "name": format!("k{i}") })).await;
    }
    app.bob()
        .post("/v1/keys", key_body())
        .await
        .expect(StatusCode::CREATED);
    let page = app
        .alice()
        .get("/v1/audit-events?limit=2")
        .await
        .expect(StatusCode::OK)
        .body;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["action"], "key.created");
    assert_eq!(data[0]["details"]["name"], "k2");
    let next = page["next_before"].as_u64().unwrap();
    let all = app
        .alice()
        .get(&format!("/v1/audit-events?before={next}&limit=1000"))
        .await
        .expect(StatusCode::OK)
        .body;
    for e in all["data"].as_array().unwrap().iter().chain(data) {
        assert_eq!(e["account_id"], app.alice_account, "{e}");
    }
    let huge = app
        .alice()
        .get("/v1/audit-events?before=99999999999999999999999999")
        .await
        .expect(StatusCode::OK);
    assert!(!huge.body["data"].as_array().unwrap().is_empty());
    app.alice()
        .get("/v1/audit-events?before=-1")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .get("/v1/audit-events?limit=0")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .get("/v1/audit-events?limit=x")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_query");
    let checked = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(audit::verify_chain(c, &common::audit_keyring(), None))
        })
        .unwrap()
        .unwrap()
        .events;
    assert!(checked >= 10, "{checked}");
}

#[tokio::test]
async fn audit_events_record_the_client_address() {
    let app = TestApp::new();
    let mut request = axum::http::Request::post("/v1/keys")
        .header("authorization", format!("Bearer {}", app.alice_token))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(key_body().to_string()))
        .unwrap();
    let addr: std::net::SocketAddr = "203.0.113.7:4242".parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let response = tower::ServiceExt::oneshot(app.router(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created = &alice_events(&app, "key.created").await[0];
    assert_eq!(created["source"], "203.0.113.7");
}

#[tokio::test]
async fn a_signed_in_user_creates_lists_and_revokes_management_tokens() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let dashboard = || {
        app.anonymous()
            .header("cookie", &cookie)
            .header("origin", ORIGIN)
    };
    let created = dashboard()
        .post(
            "/v1/management-tokens",
            json!({
                "name": " deploy bot ",
                "password": PASSWORD,
                "scopes": ["keys:read", "tokens:read"],
            }),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let token = created.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lnxm_") && token.len() == 5 + 64);
    assert_eq!(created.body["name"], "deploy bot");
    let id = created.body["id"].as_u64().unwrap();
    let script = app.client(Some(format!("Bearer {token}")));
    script.get("/v1/keys").await.expect(StatusCode::OK);
    // A token can list tokens but not mint or revoke them.
    let list = script
        .get("/v1/management-tokens")
        .await
        .expect(StatusCode::OK);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert!(!list.body.to_string().contains(&token));
    script
        .post("/v1/management-tokens", json!({ "name": "x" }))
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    script
        .post(&format!("/v1/management-tokens/{id}/revoke"), json!({}))
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    // Validation, tenancy, cross-site.
    for bad in [
        json!({ "name": "  ", "password": PASSWORD, "scopes": ["keys:read"] }),
        json!({}),
    ] {
        dashboard()
            .post("/v1/management-tokens", bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    app.anonymous()
        .header("cookie", &cookie)
        .post("/v1/management-tokens", json!({ "name": "x" }))
        .await
        .problem(StatusCode::FORBIDDEN, "cross_site_request");
    app.anonymous()
        .post("/v1/management-tokens", json!({ "name": "x" }))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let bobs = app.bob().get("/v1/management-tokens").await.body;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 1, "only bob's own");
    // Revoke: the token stops working at once; twice is harmless.
    let revoked = dashboard()
        .post(&format!("/v1/management-tokens/{id}/revoke"), json!({}))
        .await
        .expect(StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_u64());
    dashboard()
        .post(&format!("/v1/management-tokens/{id}/revoke"), json!({}))
        .await
        .expect(StatusCode::OK);
    script
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    for path in [
        "/v1/management-tokens/999/revoke",
        "/v1/management-tokens/x/revoke",
    ] {
        dashboard()
            .post(path, json!({}))
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
    }
    let actions = app.audit_actions();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "management_token.revoked")
            .count(),
        1
    );
}

#[tokio::test]
async fn another_accounts_token_is_404_and_stays_valid() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let bobs = app.bob().get("/v1/management-tokens").await.body;
    let bob_token_id = bobs["data"][0]["id"].as_u64().unwrap();
    app.anonymous()
        .header("cookie", &cookie)
        .header("origin", ORIGIN)
        .post(
            &format!("/v1/management-tokens/{bob_token_id}/revoke"),
            json!({}),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.bob().get("/v1/keys").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn the_account_api_names_the_account_its_plan_and_keys_in_use() {
    let app = TestApp::new();
    for i in 0..2 {
        app.create_key(json!({ "name": format!("k{i}") })).await;
    }
    let me = app
        .alice()
        .get("/v1/account")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(me["id"], app.alice_account, "{me}");
    assert_eq!(me["name"], "Alice Inc", "{me}");
    assert_eq!(me["plan_id"], "standard", "{me}");
    assert_eq!(me["plan"]["max_active_keys"], 50, "{me}");
    assert_eq!(me["plan"]["default_rate_limit"], 600, "{me}");
    assert_eq!(me["active_keys"], 2, "{me}");
    let bob = app
        .bob()
        .get("/v1/account")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(bob["name"], "Bob Ltd", "{bob}");
    assert_eq!(bob["active_keys"], 0, "{bob}");
    app.anonymous()
        .get("/v1/account")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn the_audit_api_filters_by_target_within_the_account() {
    let app = TestApp::new();
    let first = app.create_key(json!({ "name": "first" })).await;
    let second = app.create_key(json!({ "name": "second" })).await;
    let id = first["id"].as_str().unwrap();
    app.alice()
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": "test" }),
        )
        .await
        .expect(StatusCode::OK);
    let page = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .expect(StatusCode::OK)
        .body;
    let actions: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["target"], id, "{e}");
            e["action"].as_str().unwrap()
        })
        .collect();
    assert_eq!(actions, ["key.revoked", "key.created"]);
    let other = second["id"].as_str().unwrap();
    let page = app
        .alice()
        .get(&format!("/v1/audit-events?target={other}&limit=1"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(page["data"][0]["target"], other);
    // Another account's events of the same target are never shown.
    let theirs = app
        .bob()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(theirs["data"], json!([]));
    app.alice()
        .get(&format!("/v1/audit-events?target={}", "x".repeat(65)))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}
