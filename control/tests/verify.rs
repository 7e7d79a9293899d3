//! `POST /v1/keys/verify` against a hostile caller: another account's key answers exactly as a
//! forged key does, each account has a budget of calls, and calls about real keys leave a bounded
//! trace in the audit trail.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{START, TestApp};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use shared::key::{Claims, Environment, KeyId};
use shared::mac::Keyring;
use shared::scope::Permission;
use tower::ServiceExt as _;

/// Status, content type and the exact body bytes of a verify call with `token`.
async fn verify_raw(app: &TestApp, token: &str, body: Value) -> (StatusCode, String, Vec<u8>) {
    let request = Request::post("/v1/keys/verify")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.router().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, bytes.to_vec())
}

/// A key of `environment` that no keyring of ours signed, shaped exactly like a real one.
fn forged(environment: Environment) -> String {
    let ring = Keyring::from_config(&format!("active=1;1:{}", "66".repeat(32))).unwrap();
    let claims = Claims {
        kid: 1,
        account_id: 999,
        key_id: KeyId([0x42; 16]),
        environment,
        scopes: Permission::FullAccess.scopes(),
        issued_at: START,
        expires_at: None,
    };
    shared::key::issue(&claims, &ring).unwrap().into_inner()
}

fn call(key: &str, method: &str, path: &str) -> Value {
    json!({ "key": key, "method": method, "path": path })
}

#[tokio::test]
async fn another_accounts_key_gets_byte_for_byte_the_answer_of_a_forged_key() {
    let app = TestApp::new();
    let live = app.create_key(json!({ "permission": "read_only" })).await;
    let expiring = app
        .create_key(json!({ "name": "short", "expires_at": START + 10 }))
        .await;
    let revoked = app.create_key(json!({ "name": "gone" })).await;
    app.alice()
        .post(
            &format!("/v1/keys/{}/revoke", revoked["id"].as_str().unwrap()),
            json!({ "reason": "test" }),
        )
        .await
        .expect(StatusCode::OK);
    app.advance(20);
    let forgery = forged(Environment::Production);
    for (method, path) in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/nope"),
    ] {
        let forged_answer = verify_raw(&app, &app.bob_token, call(&forgery, method, path)).await;
        assert_eq!(forged_answer.0, StatusCode::OK);
        for key in [&live, &expiring, &revoked] {
            let text = key["key"].as_str().unwrap();
            let answer = verify_raw(&app, &app.bob_token, call(text, method, path)).await;
            assert_eq!(
                answer,
                forged_answer,
                "{method} {path} with alice's {}: {}",
                key["name"],
                String::from_utf8_lossy(&answer.2)
            );
            // With the environment named, too.
            let mut body = call(text, method, path);
            body["environment"] = json!("production");
            let mut forged_body = call(&forgery, method, path);
            forged_body["environment"] = json!("production");
            assert_eq!(
                verify_raw(&app, &app.bob_token, body).await,
                verify_raw(&app, &app.bob_token, forged_body).await
            );
        }
    }
    // The owner still gets the full verdict.
    let own = app
        .alice()
        .post(
            "/v1/keys/verify",
            call(live["key"].as_str().unwrap(), "GET", "/v1/jobs"),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(own.body["valid"], true);
    assert_eq!(own.body["account_id"], app.alice_account);
}

#[tokio::test]
async fn verify_calls_are_rate_limited_per_account() {
    let app = TestApp::new();
    let forgery = forged(Environment::Production);
    let mut limited = None;
    for i in 0..200 {
        let r = app
            .bob()
            .post("/v1/keys/verify", call(&forgery, "GET", "/v1/jobs"))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, r));
            break;
        }
        r.expect(StatusCode::OK);
    }
    let (admitted, r) = limited.expect("200 verify calls at once were all answered");
    // The default budget: 600 a minute, a burst of 60.
    assert_eq!(admitted, 60);
    let r = r.problem(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Alice's budget is her own.
    app.alice()
        .post("/v1/keys/verify", call(&forgery, "GET", "/v1/jobs"))
        .await
        .expect(StatusCode::OK);
    // It refills at the rate: 100 ms a call.
    app.clock.advance(Duration::from_millis(100));
    app.bob()
        .post("/v1/keys/verify", call(&forgery, "GET", "/v1/jobs"))
        .await
        .expect(StatusCode::OK);
    app.bob()
        .post("/v1/keys/verify", call(&forgery, "GET", "/v1/jobs"))
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
}

/// The account's audit events with `action`, waiting up to a second (traces are written after
/// the answer).
async fn events(app: &TestApp, token: &str, action: &str, want: usize) -> Vec<Value> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let page = app
            .client(Some(format!("Bearer {token}")))
            .get("/v1/audit-events?limit=1000")
            .await
            .expect(StatusCode::OK)
            .body;
        found = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect();
        if found.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    found
}

#[tokio::test]
async fn verify_calls_about_real_keys_leave_a_bounded_trace() {
    let app = TestApp::new();
    let key = app.create_key(json!({})).await;
    let text = key["key"].as_str().unwrap();
    for _ in 0..20 {
        app.bob()
            .post("/v1/keys/verify", call(text, "GET", "/v1/jobs"))
            .await
            .expect(StatusCode::OK);
        app.alice()
            .post("/v1/keys/verify", call(text, "GET", "/v1/jobs"))
            .await
            .expect(StatusCode::OK);
    }
    // Alice's trail shows that another account presented her key: once this hour.
    let probes = events(&app, &app.alice_token, "key.verified_by_other_account", 1).await;
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0]["target"], key["id"]);
    assert_eq!(probes[0]["details"]["caller_account_id"], app.bob_account);
    assert!(probes[0]["actor"].as_str().unwrap().starts_with("token:"));
    let own = events(&app, &app.alice_token, "key.verified", 1).await;
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["details"]["valid"], true);
    // Bob's trail does not learn the key's id.
    let bob = app
        .bob()
        .get("/v1/audit-events?limit=1000")
        .await
        .expect(StatusCode::OK);
    assert!(!bob.body.to_string().contains(key["id"].as_str().unwrap()));
    // An hour later: one more each.
    app.advance(3600);
    app.bob()
        .post("/v1/keys/verify", call(text, "GET", "/v1/jobs"))
        .await
        .expect(StatusCode::OK);
    let probes = events(&app, &app.alice_token, "key.verified_by_other_account", 2).await;
    assert_eq!(probes.len(), 2);
    // Forged keys leave nothing: nobody to attribute them to.
    let before = app.audit_actions().len();
    for _ in 0..30 {
        app.bob()
            .post(
                "/v1/keys/verify",
                call(&forged(Environment::Production), "GET", "/v1/jobs"),
            )
            .await
            .expect(StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = app.audit_actions();
    assert!(
        after[before..].iter().all(|a| a == "management_token.used"),
        "{:?}",
        &after[before..]
    );
}
