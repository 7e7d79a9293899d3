//! The keys API through the real router: success, validation, 401, tenancy, limits, replay.

mod common;

use axum::http::{Method, StatusCode};
use common::{START, TestApp, keyring};
use serde_json::{Value, json};

fn id_of(key: &Value) -> String {
    key["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_key_shows_the_key_once_then_only_its_hint() {
    let app = TestApp::new();
    let created = app
        .alice()
        .post(
            "/v1/keys",
            json!({
                "name": "  ci deploy  ",
                "description": "GitHub Actions",
                "environment": "production",
                "permission": "read_only",
            }),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let body = created.body;
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("lnx_live_"));
    assert_eq!(body["name"], "ci deploy", "trimmed");
    assert_eq!(body["permission"], "read_only");
    assert_eq!(body["status"], "active");
    assert_eq!(body["rotation_due"], false);
    assert_eq!(body["expires_at"], Value::Null, "never expires by default");
    assert_eq!(body["rate_limit"], 600, "plan default");
    assert_eq!(body["hint"], shared::key::hint(key));
    let claims = shared::key::verify(key, &keyring(), START).unwrap();
    assert_eq!(claims.key_id.to_string(), body["id"]);
    assert_eq!(claims.account_id, app.alice_account);

    let id = id_of(&body);
    let got = app
        .alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(got.body["hint"], body["hint"]);
    assert!(got.body.get("key").is_none());
    let list = app.alice().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(list.body["data"][0].get("key").is_none());
    assert!(!list.body.to_string().contains(key));
    assert_eq!(list.body["active_keys"], 1);
    assert_eq!(list.body["max_active_keys"], 50);
    assert!(app.audit_actions().contains(&"key.created".to_owned()));
}

#[tokio::test]
async fn create_key_accepts_custom_scopes_expiry_and_rate_limit() {
    let app = TestApp::new();
    let body = app
        .create_key(json!({
            "environment": "development",
            "permission": "custom",
            "scopes": ["jobs:read", "files:write"],
            "expires_at": START + 3600,
            "rate_limit": 6000.0,
        }))
        .await;
    assert!(body["key"].as_str().unwrap().starts_with("lnx_dev_"));
    assert_eq!(body["permission"], "custom");
    assert_eq!(body["scopes"], json!(["jobs:read", "files:write"]));
    assert_eq!(body["expires_at"], START + 3600);
    assert_eq!(body["rate_limit"], 6000);
    let full = app.create_key(json!({ "permission": "full_access" })).await;
    assert_eq!(full["scopes"], json!(["*"]));
}

#[tokio::test]
async fn create_key_validation_errors() {
    let app = TestApp::new();
    let valid = json!({ "name": "n", "environment": "production", "permission": "read_only" });
    let with = |k: &str, v: Value| {
        let mut b = valid.clone();
        b[k] = v;
        b
    };
    let cases = [
        (
            json!({ "environment": "production", "permission": "read_only" }),
            "validation_failed",
        ),
        (with("name", json!("   ")), "validation_failed"),
        (with("name", json!("x".repeat(101))), "validation_failed"),
        (with("name", json!("a\u{7}b")), "validation_failed"),
        (
            with("description", json!("x".repeat(1001))),
            "validation_failed",
        ),
        (with("environment", json!("prod")), "validation_failed"),
        (with("permission", json!("admin")), "validation_failed"),
        (with("permission", json!("custom")), "validation_failed"),
        (with("scopes", json!(["jobs:read"])), "validation_failed"),
        (
            with("permission", json!("custom"))
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("scopes".into(), json!(["jobs:fly"]));
                    Value::Object(o)
                })
                .unwrap(),
            "validation_failed",
        ),
        (
            with("permission", json!("custom"))
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("scopes".into(), json!([]));
                    Value::Object(o)
                })
                .unwrap(),
            "validation_failed",
        ),
        (with("expires_at", json!(START)), "validation_failed"),
        (
            with("expires_at", json!(START + 11 * 365 * 86_400)),
            "validation_failed",
        ),
        (with("rate_limit", json!(0)), "validation_failed"),
        (with("rate_limit", json!(6001)), "validation_failed"),
        (with("rate_limit", json!(-1)), "validation_failed"),
        (with("rate_limit", json!(10.5)), "validation_failed"),
        (
            with("rate_limit", json!(5_000_000_000_u64)),
            "validation_failed",
        ),
        (with("colour", json!("red")), "validation_failed"),
    ];
    for (body, code) in cases {
        let r = app.alice().post("/v1/keys", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    app.alice()
        .send(Method::POST, "/v1/keys", Some(b"{not json".to_vec()))
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_json");
    app.alice()
        .header("content-type", "text/plain")
        .send(
            Method::POST,
            "/v1/keys",
            Some(valid.to_string().into_bytes()),
        )
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let mut huge = valid.clone();
    huge["description"] = json!("x".repeat(70_000));
    app.alice()
        .post("/v1/keys", huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Nothing was created by any of them.
    let list = app.alice().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn every_endpoint_refuses_missing_or_wrong_credentials() {
    let app = TestApp::new();
    let key = app.create_key(json!({})).await;
    let id = id_of(&key);
    let api_key = key["key"].as_str().unwrap().to_owned();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/keys".into(), None),
        (Method::POST, "/v1/keys".into(), Some(json!({}))),
        (Method::GET, format!("/v1/keys/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/keys/{id}"),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/keys/{id}/revoke"),
            Some(json!({ "reason": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/keys/{id}/rotate"),
            Some(json!({ "grace_period_seconds": 0 })),
        ),
        (Method::POST, "/v1/keys/verify".into(), Some(json!({}))),
        (Method::GET, "/v1/audit-events".into(), None),
        (Method::GET, "/v1/account".into(), None),
        (Method::DELETE, "/v1/sessions/current".into(), None),
        (Method::GET, "/v1/management-tokens".into(), None),
        (
            Method::POST,
            "/v1/management-tokens".into(),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            "/v1/management-tokens/1/revoke".into(),
            Some(json!({})),
        ),
    ];
    let wrong_token = format!("Bearer lnxm_{}", "0".repeat(64));
    let as_api_key = format!("Bearer {api_key}");
    for (method, path, body) in &calls {
        for auth in [
            None,
            Some(wrong_token.as_str()),
            Some(as_api_key.as_str()),
            Some("Basic abc"),
        ] {
            let r = app
                .client(auth.map(str::to_owned))
                .send(
                    method.clone(),
                    path,
                    body.as_ref().map(|b| b.to_string().into_bytes()),
                )
                .await;
            let r = r.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
            assert!(
                r.header("www-authenticate").unwrap().starts_with("Bearer"),
                "{method} {path}"
            );
        }
    }
    // The key is untouched.
    let got = app
        .alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["name"], "ci deploy");
}

/// Bob calls `call` on one of Alice's keys: 404, and neither the key nor the audit trail
/// changes.
async fn assert_foreign_key_untouched(method: Method, suffix: &str, body: Option<Value>) {
    let app = TestApp::new();
    let key = app.create_key(json!({})).await;
    let id = id_of(&key);
    // Bob's first call records his token's use; after that his calls leave no trace.
    app.bob().get("/v1/keys").await.expect(StatusCode::OK);
    let before = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    let audit_before = app.audit_actions();
    app.bob()
        .send(
            method,
            &format!("/v1/keys/{id}{suffix}"),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    let after = app.alice().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(before, after);
    assert_eq!(audit_before, app.audit_actions(), "no audit event either");
    let bobs = app.bob().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(bobs.body["data"], json!([]), "nothing created for bob");
}

#[tokio::test]
async fn get_of_another_accounts_key_is_404() {
    assert_foreign_key_untouched(Method::GET, "", None).await;
}

#[tokio::test]
async fn update_of_another_accounts_key_is_404_and_changes_nothing() {
    assert_foreign_key_untouched(Method::PATCH, "", Some(json!({ "name": "mine" }))).await;
}

#[tokio::test]
async fn revoke_of_another_accounts_key_is_404_and_changes_nothing() {
    assert_foreign_key_untouched(Method::POST, "/revoke", Some(json!({ "reason": "mine" }))).await;
}

#[tokio::test]
async fn rotate_of_another_accounts_key_is_404_and_changes_nothing() {
    assert_foreign_key_untouched(
        Method::POST,
        "/rotate",
        Some(json!({ "grace_period_seconds": 0 })),
    )
    .await;
}

#[tokio::test]
async fn another_account_cannot_list_alices_keys_and_bad_ids_are_404() {
    let app = TestApp::new();
    app.create_key(json!({})).await;
    let list = app.bob().get("/v1/keys").await.expect(StatusCode::OK);
    assert_eq!(list.body["data"], json!([]));
    // A malformed, mis-encoded or unknown id is a 404 too, not a 400 or 500.
    for path in [
        "/v1/keys/nothex",
        "/v1/keys/%F1%B8%8F",
        "/v1/keys/00000000000000000000000000000000",
    ] {
        app.alice()
            .get(path)
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn the_51st_active_key_is_refused_with_the_count_and_candidates() {
    let app = TestApp::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let k = app.create_key(json!({ "name": format!("key {i}") })).await;
        ids.push(id_of(&k));
        app.advance(1);
    }
    // Keys made in the last day are never suggested (tests/audit_read.rs has that case).
    app.advance(control::keys::RETIRE_MIN_AGE);
    let r = app
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "one more", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "active_key_limit_reached");
    assert_eq!(r.body["active_keys"], 50);
    assert_eq!(r.body["max_active_keys"], 50);
    let candidates = r.body["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5);
    assert_eq!(candidates[0]["id"], ids[0], "oldest unused first");
    assert!(r.body["detail"].as_str().unwrap().contains("50 of 50"));
    // Bob's account has its own limit.
    app.bob()
        .post(
            "/v1/keys",
            json!({ "name": "b", "environment": "production", "permission": "read_only" }),
        )
        .await
        .expect(StatusCode::CREATED);
    // Revoking one frees a slot.
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", ids[0]),
            json!({ "reason": "unused" }),
        )
        .await
        .expect(StatusCode::OK);
    app.create_key(json!({ "name": "one more" })).await;
}

#[tokio::test]
async fn idempotent_replay_returns_the_same_record_without_the_key() {
    let app = TestApp::new();
    let body = json!({ "name": "n", "environment": "staging", "permission": "read_only" });
    let first = app
        .alice()
        .header("idempotency-key", "req-123")
        .post("/v1/keys", body.clone())
        .await
        .expect(StatusCode::CREATED);
    assert!(first.body["key"].is_string());
    let replay = app
        .alice()
        .header("idempotency-key", "req-123")
        .post("/v1/keys", body.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body["id"], first.body["id"]);
    assert!(
        replay.body.get("key").is_none(),
        "the secret is never shown again"
    );
    let mut other = body.clone();
    other["name"] = json!("different");
    app.alice()
        .header("idempotency-key", "req-123")
        .post("/v1/keys", other)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    // The same idempotency key in another account is independent.
    app.bob()
        .header("idempotency-key", "req-123")
        .post("/v1/keys", body.clone())
        .await
        .expect(StatusCode::CREATED);
    app.alice()
        .header("idempotency-key", "")
        .post("/v1/keys", body)
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    let list = app.alice().get("/v1/keys").await.body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_filters_by_environment_status_and_name() {
    let app = TestApp::new();
    let a = app
        .create_key(json!({ "name": "billing 100%", "environment": "production" }))
        .await;
    app.create_key(json!({ "name": "Billing staging", "environment": "staging" }))
        .await;
    let c = app
        .create_key(json!({ "name": "search", "environment": "production" }))
        .await;
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", id_of(&c)),
            json!({ "reason": "leaked" }),
        )
        .await
        .expect(StatusCode::OK);
    let names = |v: Value| -> Vec<String> {
        let mut n: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let get = |q: &'static str| {
        let app = &app;
        async move {
            app.alice()
                .get(&format!("/v1/keys{q}"))
                .await
                .expect(StatusCode::OK)
                .body
        }
    };
    assert_eq!(
        names(get("?environment=production").await),
        ["billing 100%", "search"]
    );
    assert_eq!(names(get("?status=revoked").await), ["search"]);
    assert_eq!(
        names(get("?status=active").await),
        ["Billing staging", "billing 100%"]
    );
    assert_eq!(
        names(get("?search=BILLING").await),
        ["Billing staging", "billing 100%"]
    );
    assert_eq!(
        names(get("?search=100%25").await),
        ["billing 100%"],
        "% is literal"
    );
    assert_eq!(
        // (Search also matches hints, which hold `_`: a wildcard would match "billing" here.)
        names(get("?search=b_lling").await),
        Vec::<String>::new(),
        "_ is literal"
    );
    assert_eq!(get("?status=active").await["active_keys"], 2);
    let _ = a;
    app.alice()
        .get("/v1/keys?status=gone")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .get("/v1/keys?environment=x")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .get("/v1/keys?limit=abc")
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn update_changes_name_and_description_only() {
    let app = TestApp::new();
    let key = app.create_key(json!({ "description": "old" })).await;
    let path = format!("/v1/keys/{}", id_of(&key));
    let r = app
        .alice()
        .patch(&path, json!({ "name": "  renamed ", "description": "" }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body["name"], "renamed");
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["scopes"], key["scopes"]);
    for bad in [
        json!({}),
        json!({ "name": "" }),
        json!({ "scopes": ["jobs:read"] }),
    ] {
        app.alice()
            .patch(&path, bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert_eq!(
        app.audit_actions()
            .iter()
            .filter(|a| *a == "key.updated")
            .count(),
        1
    );
}

/// Found by schemathesis (scripts/schemathesis.sh): `{"name": "x", "description": null}` used to
/// answer 200, renaming the key and leaving the description as it was, although the schema says
/// `description` is a string and a client sending `null` meant to clear it. `null` is now a 422 for
/// either field, and nothing changes.
#[tokio::test]
async fn update_refuses_null_fields() {
    let app = TestApp::new();
    let key = app.create_key(json!({ "description": "kept" })).await;
    let path = format!("/v1/keys/{}", id_of(&key));
    for bad in [
        json!({ "name": "renamed", "description": null }),
        json!({ "name": null, "description": "changed" }),
        json!({ "name": null }),
        json!({ "description": null }),
    ] {
        app.alice()
            .patch(&path, bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let r = app.alice().get(&path).await.expect(StatusCode::OK);
    assert_eq!(r.body["name"], key["name"]);
    assert_eq!(r.body["description"], "kept");
    assert!(!app.audit_actions().iter().any(|a| a == "key.updated"));
}

#[tokio::test]
async fn revoke_is_recorded_irreversible_and_harmless_twice() {
    let app = TestApp::new();
    let key = app.create_key(json!({})).await;
    let path = format!("/v1/keys/{}/revoke", id_of(&key));
    for bad in [
        json!({}),
        json!({ "reason": "  " }),
        json!({ "reason": "x".repeat(501) }),
    ] {
        app.alice()
            .post(&path, bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let first = app
        .alice()
        .post(&path, json!({ "reason": "leaked in a log" }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(first.body["changed"], true);
    assert_eq!(first.body["key"]["status"], "revoked");
    assert_eq!(first.body["key"]["revoke_reason"], "leaked in a log");
    let version = first.body["list_version"].as_u64().unwrap();
    assert!(version >= 1);
    app.advance(10);
    let second = app
        .alice()
        .post(&path, json!({ "reason": "again" }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(second.body["changed"], false);
    assert_eq!(second.body["list_version"], version);
    assert_eq!(
        second.body["key"]["revoke_reason"], "leaked in a log",
        "first reason kept"
    );
    assert_eq!(
        app.audit_actions()
            .iter()
            .filter(|a| *a == "key.revoked")
            .count(),
        1
    );
    // Nothing un-revokes: rotating a revoked key is refused, and no endpoint changes status.
    app.alice()
        .post(
            &format!("/v1/keys/{}/rotate", id_of(&key)),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::CONFLICT, "key_not_active");
    let got = app
        .alice()
        .get(&format!("/v1/keys/{}", id_of(&key)))
        .await
        .body;
    assert_eq!(got["status"], "revoked");
}

#[tokio::test]
async fn rotate_issues_a_linked_key_and_revokes_the_old_one_after_the_grace() {
    let app = TestApp::new();
    let old = app
        .create_key(json!({ "permission": "custom", "scopes": ["jobs:read"], "rate_limit": 42, "description": "d" }))
        .await;
    let old_id = id_of(&old);
    let r = app
        .alice()
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            json!({ "grace_period_seconds": 3600 }),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let new = &r.body["key"];
    let new_key = new["key"].as_str().unwrap();
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["rotated_from"], old["id"]);
    for field in [
        "name",
        "description",
        "environment",
        "scopes",
        "rate_limit",
        "expires_at",
    ] {
        assert_eq!(new[field], old[field], "{field}");
    }
    assert_eq!(r.body["previous"]["rotated_to"], new["id"]);
    assert_eq!(r.body["previous"]["status"], "rotating");
    assert_eq!(r.body["previous"]["grace_until"], START + 3600);
    let old_key = old["key"].as_str().unwrap();
    let verify = |key: &str| {
        let body = json!({ "key": key, "method": "GET", "path": "/v1/jobs" });
        let app = &app;
        async move {
            app.alice()
                .post("/v1/keys/verify", body)
                .await
                .expect(StatusCode::OK)
                .body["valid"]
                .clone()
        }
    };
    assert_eq!(
        verify(old_key).await,
        true,
        "old key works during the grace period"
    );
    assert_eq!(verify(new_key).await, true);
    // Rotating the old key again is refused: it is already being replaced.
    app.alice()
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .problem(StatusCode::CONFLICT, "key_not_active");
    app.advance(3600);
    assert_eq!(verify(old_key).await, false, "revoked when the grace ends");
    let got = app.alice().get(&format!("/v1/keys/{old_id}")).await.body;
    assert_eq!(got["status"], "revoked");
    assert_eq!(got["revoke_reason"], "rotated");
    // Grace 0 revokes at once; grace beyond 30 days is refused.
    let k = app.create_key(json!({})).await;
    let r = app
        .alice()
        .post(
            &format!("/v1/keys/{}/rotate", id_of(&k)),
            json!({ "grace_period_seconds": 0 }),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.body["previous"]["status"], "revoked");
    assert_eq!(verify(k["key"].as_str().unwrap()).await, false);
    for bad in [
        json!({}),
        json!({ "grace_period_seconds": 30 * 86_400 + 1 }),
        json!({ "grace_period_seconds": -1 }),
    ] {
        app.alice()
            .post(
                &format!("/v1/keys/{}/rotate", r.body["key"]["id"].as_str().unwrap()),
                bad,
            )
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert_eq!(
        app.audit_actions()
            .iter()
            .filter(|a| *a == "key.rotated")
            .count(),
        2
    );
}

#[tokio::test]
async fn keys_older_than_90_days_are_flagged_for_rotation() {
    let app = TestApp::new();
    let key = app.create_key(json!({})).await;
    let path = format!("/v1/keys/{}", id_of(&key));
    app.advance(89 * 86_400);
    assert_eq!(app.alice().get(&path).await.body["rotation_due"], false);
    app.advance(86_400);
    assert_eq!(app.alice().get(&path).await.body["rotation_due"], true);
    assert_eq!(
        app.alice().get("/v1/keys").await.body["data"][0]["rotation_due"],
        true
    );
    assert_eq!(
        app.alice().get(&path).await.body["status"],
        "active",
        "keys never expire by default"
    );
}

#[tokio::test]
async fn verify_gives_the_edge_verdict_with_the_database_revocation_state() {
    let app = TestApp::new();
    let key = app.create_key(json!({ "permission": "read_only" })).await;
    let text = key["key"].as_str().unwrap();
    let check = |body: Value| {
        let app = &app;
        async move {
            app.alice()
                .post("/v1/keys/verify", body)
                .await
                .expect(StatusCode::OK)
                .body
        }
    };
    let ok = check(
        json!({ "key": text, "method": "GET", "path": "/v1/jobs/7", "environment": "production" }),
    )
    .await;
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["key_id"], key["id"]);
    assert_eq!(ok["account_id"], app.alice_account);
    let scope = check(json!({ "key": text, "method": "POST", "path": "/v1/jobs" })).await;
    assert_eq!(
        (
            scope["valid"].clone(),
            scope["status"].clone(),
            scope["code"].clone(),
            scope["scope"].clone()
        ),
        (
            json!(false),
            json!(403),
            json!("insufficient_scope"),
            json!("jobs:write")
        )
    );
    let env = check(
        json!({ "key": text, "method": "GET", "path": "/v1/jobs", "environment": "staging" }),
    )
    .await;
    assert_eq!(env["reason"], "wrong_environment");
    let mut typo = text.to_owned();
    typo.replace_range(20..21, if &text[20..21] == "A" { "B" } else { "A" });
    let t = check(json!({ "key": typo, "method": "GET", "path": "/v1/jobs" })).await;
    assert_eq!(
        (t["code"].clone(), t["reason"].clone()),
        (json!("invalid_token"), json!("invalid_checksum"))
    );
    let route = check(json!({ "key": text, "method": "GET", "path": "/v1/nope" })).await;
    assert_eq!(route["status"], 404);
    // Revoked in the database: refused at once, before any publish, and like a forgery.
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", id_of(&key)),
            json!({ "reason": "r" }),
        )
        .await
        .expect(StatusCode::OK);
    let revoked = check(json!({ "key": text, "method": "GET", "path": "/v1/jobs" })).await;
    assert_eq!(
        revoked,
        json!({ "valid": false, "status": 401, "code": "invalid_token" })
    );
    app.alice()
        .post(
            "/v1/keys/verify",
            json!({ "key": text, "method": "GET", "path": "/v1/jobs", "environment": "moon" }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    app.alice()
        .post("/v1/keys/verify", json!({ "method": "GET" }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn service_endpoints_and_unknown_routes() {
    let app = TestApp::new();
    assert_eq!(
        app.anonymous()
            .get("/healthz")
            .await
            .expect(StatusCode::OK)
            .body["status"],
        "ok"
    );
    assert_eq!(
        app.anonymous()
            .get("/readyz")
            .await
            .expect(StatusCode::OK)
            .body["status"],
        "ready"
    );
    let spec = app
        .anonymous()
        .get("/openapi.json")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(spec["openapi"], "3.1.0");
    app.anonymous()
        .get("/v2/nothing")
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");
    app.alice()
        .delete("/v1/keys")
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// Both directions: every operation the document describes is one the router has (and
/// answers: neither "no route" nor 405), and every operation the router has is described. The
/// router is built from `control::routes::operations()`, so that table is the router's.
#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_that_exist() {
    let app = TestApp::new();
    let spec: Value = serde_json::from_str(control::OPENAPI.as_ref().unwrap()).unwrap();
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: std::collections::BTreeSet<_> = control::routes::operations()
        .iter()
        .map(|op| (op.method.to_string(), op.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&described).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not described: {undocumented:?}"
    );
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(unrouted.is_empty(), "described, not routed: {unrouted:?}");
    for (method, path) in &described {
        let concrete = path.replace("{id}", &"0".repeat(32));
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.anonymous().send(m, &concrete, None).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(r.status == StatusCode::NOT_FOUND
                && r.body["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("no route"))),
            "{method} {path} is described but not routed"
        );
    }
    assert_eq!(described.len(), 33);
}

/// `control/openapi.json` is for readers (and reviews of a contract change): the document the
/// service generates and serves, byte for byte. `UPDATE_OPENAPI=1 cargo test -p control --test
/// keys_api committed_openapi` rewrites it after a change to the handlers or their types.
#[test]
fn the_committed_openapi_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = control::OPENAPI.as_ref().unwrap();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == *generated,
        "control/openapi.json is not the generated document; run \
         UPDATE_OPENAPI=1 cargo test -p control --test keys_api committed_openapi"
    );
}

#[tokio::test]
async fn list_pages_with_a_cursor_and_counts_status_like_get() {
    let app = TestApp::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(id_of(
            &app.create_key(json!({ "name": format!("k{i}") })).await,
        ));
        if i % 2 == 0 {
            app.advance(1);
        }
    }
    // Statuses of every kind, to check the SQL filter agrees with each key's own status.
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", ids[0]),
            json!({ "reason": "r" }),
        )
        .await
        .expect(StatusCode::OK);
    app.alice()
        .post(
            &format!("/v1/keys/{}/rotate", ids[1]),
            json!({ "grace_period_seconds": 600 }),
        )
        .await
        .expect(StatusCode::CREATED);
    app.create_key(json!({ "name": "short", "expires_at": START + 100 }))
        .await;
    app.advance(200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?limit=3&cursor={c}"),
            None => "/v1/keys?limit=3".to_owned(),
        };
        let page = app.alice().get(&path).await.expect(StatusCode::OK).body;
        for k in page["data"].as_array().unwrap() {
            seen.push(k.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9, "7 created, 1 rotated in, 1 expiring");
    let unique: std::collections::HashSet<_> = seen.iter().map(|k| k["id"].clone()).collect();
    assert_eq!(unique.len(), 9, "no key twice");
    for status in ["active", "expired", "rotating", "revoked"] {
        let filtered = app
            .alice()
            .get(&format!("/v1/keys?status={status}"))
            .await
            .body;
        let expected = seen.iter().filter(|k| k["status"] == status).count();
        assert!(expected > 0, "{status}");
        assert_eq!(
            filtered["data"].as_array().unwrap().len(),
            expected,
            "{status}"
        );
    }
}

/// Keys that work (active or in a rotation's grace) and of those in grace, as the list says;
/// checks that the list and the account agree with the keys' statuses.
async fn working_keys(app: &TestApp) -> (u64, u64) {
    let list = app.alice().get("/v1/keys?limit=1000").await.body;
    let working = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active" || k["status"] == "rotating")
        .count() as u64;
    let account = app.alice().get("/v1/account").await.body;
    assert_eq!(account["active_keys"], list["active_keys"]);
    assert_eq!(account["rotating_keys"], list["rotating_keys"]);
    assert_eq!(
        list["active_keys"], working,
        "active_keys counts every working key"
    );
    (working, list["rotating_keys"].as_u64().unwrap())
}

/// Finding 3 of issue 10: at 50 active keys, 10 chained rotations with a 30-day grace left 60
/// working keys while `active_keys` said 50. Now a chain keeps at most one key in grace (rotating
/// again ends the earlier grace at once), keys in grace count against creates, every key of a
/// chain spends one budget, and rotating still works at the cap.
#[tokio::test]
async fn rotation_never_multiplies_an_accounts_keys_or_budgets() {
    let app = TestApp::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(id_of(
            &app.create_key(json!({ "name": format!("key {i}") })).await,
        ));
    }
    let rotate = |id: String| {
        let app = &app;
        async move {
            app.alice()
                .post(
                    &format!("/v1/keys/{id}/rotate"),
                    json!({ "grace_period_seconds": 30 * 86_400 }),
                )
                .await
                .expect(StatusCode::CREATED)
                .body
        }
    };
    // Ten rotations of one chain at the cap: each one works.
    let mut chain = vec![ids[0].clone()];
    for _ in 0..10 {
        app.advance(1);
        let r = rotate(chain.last().unwrap().clone()).await;
        chain.push(r["key"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        working_keys(&app).await,
        (51, 1),
        "the newest key and one predecessor in grace"
    );
    for (i, id) in chain.iter().enumerate() {
        let k = app.alice().get(&format!("/v1/keys/{id}")).await.body;
        let expected = match chain.len() - 1 - i {
            0 => "active",
            1 => "rotating",
            _ => "revoked",
        };
        assert_eq!(k["status"], expected, "chain key {i}: {k}");
    }
    for id in &chain {
        let k = app.alice().get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(k["rate_limit_budget"], ids[0], "one budget per chain: {k}");
    }
    // The ended graces are in force at once (and queued for the edge, as any revocation).
    let ended = app
        .alice()
        .get(&format!("/v1/audit-events?target={}", chain[0]))
        .await
        .body;
    assert!(
        ended["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.revoked"
                && e["details"]["grace_ended_by_rotation_of"] == chain[1].as_str()),
        "{ended}"
    );
    // Keys in grace count against creates.
    let r = app
        .alice()
        .post(
            "/v1/keys",
            json!({ "name": "one more", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "active_key_limit_reached");
    assert_eq!(
        (
            r.body["active_keys"].as_u64(),
            r.body["rotating_keys"].as_u64()
        ),
        (Some(51), Some(1))
    );
    // Other chains rotate too: each adds at most one key in grace, never a budget.
    for id in &ids[1..5] {
        rotate(id.clone()).await;
    }
    assert_eq!(working_keys(&app).await, (55, 5));
    // A key in grace spends its successor's budget: its own limit cannot change.
    app.alice()
        .patch(
            &format!("/v1/keys/{}", chain[9]),
            json!({ "rate_limit": 5 }),
        )
        .await
        .problem(StatusCode::CONFLICT, "key_not_active");
    // When the graces end, the keys stop counting.
    app.advance(30 * 86_400);
    assert_eq!(working_keys(&app).await, (50, 0));
    app.alice()
        .post(
            "/v1/keys",
            json!({ "name": "one more", "environment": "production", "permission": "read_only" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "active_key_limit_reached");
}
