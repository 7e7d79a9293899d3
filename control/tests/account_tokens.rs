//! Issue 12, points 3 and 4, through the real router and a real database: management tokens
//! with scopes, a key grant, an expiry, a cap and re-authentication; and the text rule that
//! keeps names, descriptions and reasons from lying.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, START, TestApp};
use serde_json::{Value, json};

const ORIGIN: &str = "https://keys.lynxo.test";
const DAY: u64 = 86_400;

/// Signs Alice in; returns the session cookie pair.
async fn sign_in(app: &TestApp) -> String {
    let r = app
        .anonymous()
        .header("origin", ORIGIN)
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::OK);
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    set_cookie.split(';').next().unwrap().to_owned()
}

/// A client with Alice's dashboard session.
fn dashboard<'a>(app: &'a TestApp, cookie: &str) -> common::Client<'a> {
    app.anonymous()
        .header("cookie", cookie)
        .header("origin", ORIGIN)
}

/// Mints a token from Alice's session with `fields` on top of a name and the password.
async fn mint(app: &TestApp, cookie: &str, fields: Value) -> common::Resp {
    let mut body = json!({ "name": "script", "password": PASSWORD, "scopes": ["keys:read"] });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    dashboard(app, cookie)
        .post("/v1/management-tokens", body)
        .await
}

async fn minted(app: &TestApp, cookie: &str, fields: Value) -> (String, Value) {
    let r = mint(app, cookie, fields).await.expect(StatusCode::CREATED);
    (r.body["token"].as_str().unwrap().to_owned(), r.body)
}

fn key(permission: &str) -> Value {
    json!({ "name": "k", "environment": "production", "permission": permission })
}

#[tokio::test]
async fn a_scoped_token_gets_403_outside_its_scopes_and_cannot_widen_itself() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let (token, record) = minted(&app, &cookie, json!({ "scopes": ["keys:read"] })).await;
    assert_eq!(record["scopes"], json!(["keys:read"]));
    assert_eq!(record["key_grant"], "read_only");
    let id = record["id"].as_u64().unwrap();
    let script = app.client(Some(format!("Bearer {token}")));
    script.get("/v1/keys").await.expect(StatusCode::OK);
    for (method, path, scope) in [
        ("POST", "/v1/keys", "keys:write"),
        ("GET", "/v1/audit-events", "audit:read"),
        ("GET", "/v1/usage", "usage:read"),
        ("GET", "/v1/account", "account:read"),
        ("GET", "/v1/management-tokens", "tokens:read"),
        ("POST", "/v1/keys/verify", "keys:verify"),
    ] {
        let r = match method {
            "GET" => script.get(path).await,
            _ => script.post(path, key("read_only")).await,
        }
        .problem(StatusCode::FORBIDDEN, "insufficient_scope");
        assert_eq!(r.body["required_scope"], scope, "{method} {path}");
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.contains(r#"error="insufficient_scope""#)
                && challenge.contains(&format!(r#"scope="{scope}""#)),
            "{challenge}"
        );
    }
    // It cannot mint a token (with any scopes), nor revoke one, itself included.
    let wider = json!({ "name": "wider", "password": PASSWORD, "scopes": ["keys:write"] });
    script
        .post("/v1/management-tokens", wider)
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    script
        .post(&format!("/v1/management-tokens/{id}/revoke"), json!({}))
        .await
        .problem(StatusCode::FORBIDDEN, "session_required");
    // Nothing it was refused left a key or a token behind.
    let keys = app.alice().get("/v1/keys").await.body;
    assert_eq!(keys["data"].as_array().unwrap().len(), 0);
    let tokens = app.alice().get("/v1/management-tokens").await.body;
    assert_eq!(tokens["active_tokens"], 2);
}

#[tokio::test]
async fn a_key_a_token_manages_never_exceeds_its_key_grant() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let full_key = app.create_key(json!({ "permission": "full_access" })).await;
    let full_id = full_key["id"].as_str().unwrap().to_owned();
    let (token, _) = minted(
        &app,
        &cookie,
        json!({ "scopes": ["keys:read", "keys:write"], "key_grant": "read_write" }),
    )
    .await;
    let script = app.client(Some(format!("Bearer {token}")));
    for permission in ["read_only", "read_write"] {
        script
            .post("/v1/keys", key(permission))
            .await
            .expect(StatusCode::CREATED);
    }
    let r = script
        .post("/v1/keys", key("full_access"))
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    assert_eq!(r.body["key_grant"], json!(["read_write"]));
    // Rotating would hand out a fresh Full Access secret; changing or revoking is managing it.
    let path = format!("/v1/keys/{full_id}");
    script
        .post(
            &format!("{path}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    script
        .patch(&path, json!({ "name": "mine now" }))
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    script
        .post(&format!("{path}/revoke"), json!({ "reason": "x" }))
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    let after = app.alice().get(&path).await.expect(StatusCode::OK).body;
    assert_eq!(after["status"], "active");
    assert_eq!(after["name"], full_key["name"]);
    // A custom grant: keys within it, and nothing beyond.
    let (custom, record) = minted(
        &app,
        &cookie,
        json!({
            "scopes": ["keys:write"],
            "key_grant": "custom",
            "key_grant_scopes": ["jobs:read", "jobs:write"],
        }),
    )
    .await;
    assert_eq!(
        record["key_grant_scopes"],
        json!(["jobs:read", "jobs:write"])
    );
    let custom = app.client(Some(format!("Bearer {custom}")));
    let mut within = key("custom");
    within["scopes"] = json!(["jobs:read"]);
    custom
        .post("/v1/keys", within)
        .await
        .expect(StatusCode::CREATED);
    let mut beyond = key("custom");
    beyond["scopes"] = json!(["jobs:read", "files:read"]);
    custom
        .post("/v1/keys", beyond)
        .await
        .problem(StatusCode::FORBIDDEN, "key_grant_exceeded");
    // The dashboard session manages every key.
    dashboard(&app, &cookie)
        .post(
            &format!("{path}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn tokens_expire_by_default_within_the_plans_bounds() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let (default, record) = minted(&app, &cookie, json!({})).await;
    assert_eq!(record["expires_at"], START + 30 * DAY);
    assert_eq!(record["status"], "active");
    let (short, record) = minted(&app, &cookie, json!({ "expires_at": START + 3600 })).await;
    assert_eq!(record["expires_at"], START + 3600);
    for (fields, field) in [
        (json!({ "expires_at": START + 366 * DAY }), "expires_at"),
        (json!({ "expires_at": START }), "expires_at"),
        (json!({ "never_expires": true }), "never_expires"),
        (
            json!({ "never_expires": true, "expires_at": START + 60 }),
            "never_expires",
        ),
    ] {
        let r = mint(&app, &cookie, fields.clone())
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], field, "{fields}");
    }
    let (year, _) = minted(&app, &cookie, json!({ "expires_at": START + 365 * DAY })).await;
    app.advance(3600);
    let r = app
        .client(Some(format!("Bearer {short}")))
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    app.advance(30 * DAY);
    app.client(Some(format!("Bearer {default}")))
        .get("/v1/keys")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.client(Some(format!("Bearer {year}")))
        .get("/v1/keys")
        .await
        .expect(StatusCode::OK);
    let list = app.alice().get("/v1/management-tokens").await.body;
    let statuses: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "expired", "expired", "active"]);
}

#[tokio::test]
async fn minting_needs_the_password_and_a_wrong_one_spends_the_sign_in_budget() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    // Without the password: refused before anything.
    dashboard(&app, &cookie)
        .post(
            "/v1/management-tokens",
            json!({ "name": "x", "scopes": ["keys:read"] }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    mint(&app, &cookie, json!({ "password": "" }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Wrong ones: 403, recorded, and counted like failed sign-ins of the user's email.
    let mut refusals = Vec::new();
    for _ in 0..6 {
        refusals.push(mint(&app, &cookie, json!({ "password": "not the password" })).await);
    }
    for r in &refusals[..5] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body["code"], "wrong_password");
    }
    assert_eq!(refusals[5].status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusals[5].body["code"], "too_many_sign_in_attempts");
    // The budget is the sign-in's: signing in from the same place is refused now too.
    app.anonymous()
        .header("origin", ORIGIN)
        .post(
            "/v1/sessions",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        )
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "too_many_sign_in_attempts");
    let actions = app.audit_actions();
    let failed = actions
        .iter()
        .filter(|a| *a == "user.password_check_failed")
        .count();
    assert_eq!(failed, 5);
    let list = app.alice().get("/v1/management-tokens").await.body;
    assert_eq!(list["active_tokens"], 1, "no token was made");
}

#[tokio::test]
async fn the_cap_refuses_the_token_past_it_and_frees_on_revoke() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    // `init`'s token is one of the 25.
    let mut ids = Vec::new();
    for i in 0..24 {
        let (_, record) = minted(&app, &cookie, json!({ "name": format!("t{i}") })).await;
        ids.push(record["id"].as_u64().unwrap());
    }
    let r = mint(&app, &cookie, json!({}))
        .await
        .problem(StatusCode::CONFLICT, "token_limit_reached");
    assert_eq!(r.body["active_tokens"], 25);
    assert_eq!(r.body["max_tokens"], 25);
    dashboard(&app, &cookie)
        .post(
            &format!("/v1/management-tokens/{}/revoke", ids[0]),
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
    minted(&app, &cookie, json!({ "expires_at": START + 60 })).await;
    mint(&app, &cookie, json!({}))
        .await
        .problem(StatusCode::CONFLICT, "token_limit_reached");
    // Expired tokens do not count either.
    app.advance(61);
    minted(&app, &cookie, json!({})).await;
}

/// Parallel mints by five users of one account race for the last places under the cap: the
/// count is taken in the write transaction, so they never pass it. (One user's password checks
/// run one at a time: the sign-in budgets allow one attempt of an email in flight.)
#[tokio::test]
async fn parallel_mints_never_pass_the_cap() {
    let app = TestApp::builder()
        .settings(|s| s.sign_in_hashes = 16)
        .build();
    let cookie = sign_in(&app).await;
    for i in 0..22 {
        minted(&app, &cookie, json!({ "name": format!("t{i}") })).await;
    }
    let hash = control::auth::hash_password(PASSWORD, &app.state.settings).unwrap();
    let account = app.alice_account;
    let mut cookies = Vec::new();
    for i in 0..5 {
        let (email, hash) = (format!("user{i}@example.com"), hash.clone());
        app.state
            .store
            .write_blocking::<_, control::store::StoreError, _>(move |tx| {
                control::store::accounts::create_user(tx, account, &email, &hash, START)
            })
            .unwrap();
        let r = app
            .anonymous()
            .header("origin", ORIGIN)
            .post(
                "/v1/sessions",
                json!({ "email": format!("user{i}@example.com"), "password": PASSWORD }),
            )
            .await
            .expect(StatusCode::OK);
        cookies.push(
            r.header("set-cookie")
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    let router = app.router();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cookie) in cookies.into_iter().enumerate() {
        let router = router.clone();
        tasks.spawn(async move {
            let body =
                json!({ "name": format!("p{i}"), "password": PASSWORD, "scopes": ["keys:read"] });
            let request = axum::http::Request::post("/v1/management-tokens")
                .header("cookie", cookie)
                .header("origin", ORIGIN)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(answer) = tasks.join_next().await {
        match answer.unwrap() {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::CONFLICT, _) => refused += 1,
            (other, body) => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, refused), (2, 3));
    let list = app.alice().get("/v1/management-tokens").await.body;
    assert_eq!(list["active_tokens"], 25);
}

#[tokio::test]
async fn another_accounts_token_is_404_and_the_list_is_paged() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let bobs = app.bob().get("/v1/management-tokens").await.body;
    let bob_id = bobs["data"][0]["id"].as_u64().unwrap();
    dashboard(&app, &cookie)
        .post(&format!("/v1/management-tokens/{bob_id}/revoke"), json!({}))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.bob().get("/v1/keys").await.expect(StatusCode::OK);
    for i in 0..4 {
        minted(&app, &cookie, json!({ "name": format!("page{i}") })).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/management-tokens?limit=2&cursor={c}"),
            None => "/v1/management-tokens?limit=2".to_owned(),
        };
        let page = app.alice().get(&path).await.expect(StatusCode::OK).body;
        for t in page["data"].as_array().unwrap() {
            seen.push(t["id"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    assert!(!seen.contains(&bob_id));
    for bad in ["limit=0", "limit=1001", "cursor=x", "cursor=-1"] {
        app.alice()
            .get(&format!("/v1/management-tokens?{bad}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test]
async fn token_use_is_shown_and_audited_without_a_write_per_read() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let (token, record) = minted(
        &app,
        &cookie,
        json!({ "scopes": ["keys:read", "keys:write"], "key_grant": "read_only" }),
    )
    .await;
    let id = record["id"].as_u64().unwrap();
    assert!(record["last_used_at"].is_null());
    let script = app.client(Some(format!("Bearer {token}")));
    for _ in 0..20 {
        script.get("/v1/keys").await.expect(StatusCode::OK);
    }
    assert_eq!(last_used(&app, id).await, START);
    app.advance(30);
    script.get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(
        last_used(&app, id).await,
        START,
        "written at most once a minute"
    );
    app.advance(31);
    script.get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(last_used(&app, id).await, START + 61);
    // Writes each have their own event naming the token.
    script
        .post("/v1/keys", key("read_only"))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(use_events(&app, id).await, 1, "one use event an hour");
    app.advance(3600);
    script.get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(use_events(&app, id).await, 2);
    let events = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .body;
    let use_event = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "management_token.used")
        .unwrap()
        .clone();
    assert_eq!(use_event["details"]["path"], "/v1/keys");
    assert_eq!(use_event["actor"], format!("token:{id}"));
    let all = app.alice().get("/v1/audit-events").await.body;
    let created = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.created")
        .unwrap()
        .clone();
    assert_eq!(created["actor"], format!("token:{id}"));
}

/// Each class the text rule refuses, on each write path, with the character and its position.
#[tokio::test]
async fn text_with_control_format_or_invisible_characters_is_refused_with_its_position() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let kept = app.create_key(json!({ "name": "kept" })).await;
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let audit_before = app.audit_actions().len();
    let cases: Vec<(&str, &str, Value, &str, &str, &str, u64)> = vec![
        // (method+path, field, body, character, category, reason, position)
        (
            "POST /v1/keys",
            "name",
            json!({ "name": "\u{202E}noitcudorp-ffo-deripxe", "environment": "production", "permission": "read_only" }),
            "U+202E",
            "Cf",
            "bidi",
            0,
        ),
        (
            "POST /v1/keys",
            "name",
            json!({ "name": "Prod\u{200B} key", "environment": "production", "permission": "read_only" }),
            "U+200B",
            "Cf",
            "zero_width",
            4,
        ),
        (
            "POST /v1/keys",
            "description",
            json!({ "name": "ok", "description": "line\r\nkey.revoked forged", "environment": "production", "permission": "read_only" }),
            "U+000D",
            "Cc",
            "control",
            4,
        ),
        (
            "POST /v1/keys",
            "description",
            json!({ "name": "ok", "description": "nul\u{0}", "environment": "production", "permission": "read_only" }),
            "U+0000",
            "Cc",
            "control",
            3,
        ),
        (
            "PATCH /v1/keys/{id}",
            "name",
            json!({ "name": "ab\u{2066}c" }),
            "U+2066",
            "Cf",
            "bidi",
            2,
        ),
        (
            "PATCH /v1/keys/{id}",
            "description",
            json!({ "description": "esc\u{1b}[2J" }),
            "U+001B",
            "Cc",
            "control",
            3,
        ),
        (
            "POST /v1/keys/{id}/revoke",
            "reason",
            json!({ "reason": "a\u{2028}b" }),
            "U+2028",
            "Zl",
            "line_break",
            1,
        ),
        (
            "POST /v1/keys/{id}/revoke",
            "reason",
            json!({ "reason": "tag\u{E0041}" }),
            "U+E0041",
            "Cf",
            "format",
            3,
        ),
        (
            "POST /v1/management-tokens",
            "name",
            json!({ "name": "bot\u{FEFF}", "password": PASSWORD, "scopes": ["keys:read"] }),
            "U+FEFF",
            "Cf",
            "zero_width",
            3,
        ),
        (
            "POST /v1/management-tokens",
            "name",
            json!({ "name": "x\u{3164}", "password": PASSWORD, "scopes": ["keys:read"] }),
            "U+3164",
            "Lo",
            "invisible",
            1,
        ),
    ];
    for (route, field, body, character, category, reason, position) in cases {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{id}", &kept_id);
        let client = dashboard(&app, &cookie);
        let r = match method {
            "POST" => client.post(&path, body).await,
            _ => client.patch(&path, body).await,
        }
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], field, "{route}");
        assert_eq!(r.body["character"], character, "{route}");
        assert_eq!(r.body["category"], category, "{route}");
        assert_eq!(r.body["reason"], reason, "{route}");
        assert_eq!(r.body["position"], position, "{route}");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(character) && detail.contains(&format!("at character {position}")),
            "{detail}"
        );
    }
    let names = app.alice().get("/v1/keys").await.body;
    assert_eq!(
        names["data"].as_array().unwrap().len(),
        1,
        "nothing created"
    );
    let after = app.alice().get(&format!("/v1/keys/{kept_id}")).await.body;
    assert_eq!(after["status"], "active");
    assert_eq!(after["name"], "kept");
    assert_eq!(app.audit_actions().len(), audit_before, "nothing recorded");
    // Named characters carry their name.
    let r = dashboard(&app, &cookie)
        .post(
            "/v1/keys",
            json!({ "name": "\u{202E}x", "environment": "production", "permission": "read_only" }),
        )
        .await;
    assert_eq!(r.body["character_name"], "RIGHT-TO-LEFT OVERRIDE");
    // Visible text of every script still passes.
    for name in ["Clé – été", "מפתח", "本番キー", "🔑 deploy"] {
        app.create_key(json!({ "name": name })).await;
    }
}

/// Token `id`'s `last_used_at` as Alice's list shows it.
async fn last_used(app: &TestApp, id: u64) -> Value {
    let list = app.alice().get("/v1/management-tokens").await.body;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()["last_used_at"]
        .clone()
}

/// How many `management_token.used` events token `id` has.
async fn use_events(app: &TestApp, id: u64) -> usize {
    let events = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .body;
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "management_token.used")
        .count()
}

#[tokio::test]
async fn a_wrong_password_is_the_same_answer_for_a_token_and_a_password_change() {
    let app = TestApp::new();
    let cookie = sign_in(&app).await;
    let minting = mint(&app, &cookie, json!({ "password": "not the password" })).await;
    let changing = dashboard(&app, &cookie)
        .post(
            "/v1/user/password",
            json!({ "current_password": "not the password", "new_password": "a brand new password" }),
        )
        .await;
    for r in [&minting, &changing] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body["code"], "wrong_password");
        assert!(
            r.body["detail"].as_str().unwrap().contains("sign-in"),
            "the detail says failures count against the sign-in limits: {}",
            r.body
        );
    }
    for field in ["type", "title", "status", "code", "detail"] {
        assert_eq!(minting.body[field], changing.body[field], "{field}");
    }
    // One failure event per wrong password, named for what the password was asked for.
    let actions = app.audit_actions();
    let count = |name: &str| actions.iter().filter(|a| *a == name).count();
    assert_eq!(count("user.password_check_failed"), 1);
    assert_eq!(count("user.password_change_failed"), 1);
}
