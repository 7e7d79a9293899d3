//! Secret-scanning reports (GitHub's and GitLab's formats) and self-revocation, through the
//! real router: signatures, the providers' key documents served from loopback, idempotence,
//! "notify only", hostile bodies. `tests/tests/leaks.rs` runs the same against the real edge.

mod common;
#[path = "common/provider.rs"]
mod provider;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::TestApp;
use control::store::StoreError;
use control::store::audit;
use http_body_util::BodyExt as _;
use provider::Provider;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

fn app_with(github: &Provider, gitlab: &Provider) -> TestApp {
    let (gh, gl) = (github.url.clone(), gitlab.url.clone());
    TestApp::builder()
        .settings(move |s| {
            s.github_keys_url = Some(gh);
            s.gitlab_keys_url = Some(gl);
        })
        .build()
}

/// Sends `body` to `path` with these headers; the raw answer.
async fn send(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, Vec<u8>, Value) {
    let mut req = Request::builder().method(Method::POST).uri(path);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let response = app.router().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes, value)
}

/// Posts a report signed by `provider` (GitHub's headers, or GitLab's).
async fn report(
    app: &TestApp,
    provider: &Provider,
    gitlab: bool,
    body: &[u8],
) -> (StatusCode, Value) {
    let signature = provider.sign(body);
    let (path, id, sig) = if gitlab {
        (
            "/secret-scanning/gitlab",
            "gitlab-public-key-identifier",
            "gitlab-public-key-signature",
        )
    } else {
        (
            "/secret-scanning/github",
            "github-public-key-identifier",
            "github-public-key-signature",
        )
    };
    let headers = [
        (id, provider.identifier.as_str()),
        (sig, signature.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, _, value) = send(app, path, &headers, Body::from(body.to_vec())).await;
    (status, value)
}

/// A live key of Alice's: its string and its id.
async fn live_key(app: &TestApp) -> (String, String) {
    let created = app.create_key(json!({})).await;
    (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// A look-alike of `key`: its claims, signed with another secret (valid checksum, bad tag).
fn forged(app: &TestApp, key: &str) -> String {
    let claims = shared::key::check(key, &app.state.keyring, None).unwrap();
    let forged = shared::testkit::forged(&claims).into_inner();
    assert!(
        shared::scan::inspect(&forged).is_ok(),
        "a scanner matches it"
    );
    forged
}

async fn status_of(app: &TestApp, id: &str) -> Value {
    app.alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK)
        .body
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn a_github_report_revokes_a_live_key_and_labels_each_token() {
    let (github, gitlab) = (Provider::new(1), Provider::new(2));
    let app = app_with(&github, &gitlab);
    let (key, id) = live_key(&app).await;
    let look_alike = forged(&app, &key);
    let body = json!([
        {"token": key, "type": "lynxo_api_key", "url": "https://github.com/o/r/blob/abc/config.yml", "source": "content"},
        {"token": look_alike, "type": "lynxo_api_key", "url": "https://github.com/o/r/blob/abc/x", "source": "content"},
        {"token": "lnx_live_notakeyatall", "type": "lynxo_api_key", "url": "https://github.com/o/r", "source": "commit"},
    ])
    .to_string();
    let (status, answer) = report(&app, &github, false, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!([
            {"token_hash": sha256_hex(&key), "token_type": "lynxo_api_key", "label": "true_positive"},
            {"token_hash": sha256_hex(&look_alike), "token_type": "lynxo_api_key", "label": "false_positive"},
            {"token_hash": sha256_hex("lnx_live_notakeyatall"), "token_type": "lynxo_api_key", "label": "false_positive"},
        ])
    );
    let view = status_of(&app, &id).await;
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revoke_reason"], "leaked");
    // The leak, on the key and on the account; the audit events with where it was found.
    let leaks = app
        .alice()
        .get(&format!("/v1/keys/{id}/leaks"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(leaks["total"], 1);
    assert_eq!(leaks["leaks"][0]["reporter"], "github");
    assert_eq!(
        leaks["leaks"][0]["url"],
        "https://github.com/o/r/blob/abc/config.yml"
    );
    assert_eq!(leaks["leaks"][0]["source"], "content");
    assert_eq!(leaks["leaks"][0]["action"], "revoked");
    let account = app
        .alice()
        .get("/v1/account")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(account["leaks"], 1);
    assert_eq!(account["leak_response"], "revoke");
    let events = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .expect(StatusCode::OK)
        .body;
    let by_action = |action: &str| {
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} in {events}"))
    };
    let leaked = by_action("key.leaked");
    assert_eq!(leaked["actor"], "secret_scanning:github");
    assert_eq!(
        leaked["details"]["url"],
        "https://github.com/o/r/blob/abc/config.yml"
    );
    assert_eq!(leaked["details"]["source"], "content");
    assert_eq!(by_action("key.revoked")["details"]["reason"], "leaked");
    // Bob's account sees none of it.
    let bob = app.bob().get("/v1/leaks").await.expect(StatusCode::OK).body;
    assert_eq!(bob["total"], 0);
    app.bob()
        .get(&format!("/v1/keys/{id}/leaks"))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");

    // A replay changes nothing: same labels, no new event, no new record.
    let before = app.audit_actions();
    let (status, again) = report(&app, &github, false, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, answer);
    assert_eq!(app.audit_actions(), before);
    // Fetched once, never per request.
    assert_eq!(github.fetches(), 1);
}

#[tokio::test]
async fn refused_signatures_change_nothing_and_unknown_identifiers_refetch_once() {
    let (github, gitlab) = (Provider::new(3), Provider::new(4));
    let app = app_with(&github, &gitlab);
    let (key, id) = live_key(&app).await;
    let body = json!([{"token": key, "type": "t", "url": "u", "source": "s"}]).to_string();
    let before = app.audit_actions();
    let path = "/secret-scanning/github";
    let refused = |status: StatusCode, value: &Value| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(value["code"], "invalid_signature", "{value}");
    };
    // Signed by another key (GitLab's) under GitHub's identifier.
    let wrong = gitlab.sign(body.as_bytes());
    let (s, _, v) = send(
        &app,
        path,
        &[
            ("github-public-key-identifier", &github.identifier),
            ("github-public-key-signature", &wrong),
        ],
        Body::from(body.clone()),
    )
    .await;
    refused(s, &v);
    // A genuine signature over another body.
    let other = github.sign(b"[]");
    let (s, _, v) = send(
        &app,
        path,
        &[
            ("github-public-key-identifier", &github.identifier),
            ("github-public-key-signature", &other),
        ],
        Body::from(body.clone()),
    )
    .await;
    refused(s, &v);
    // Not base64, not DER, no headers.
    for sig in ["%%%", "AAAA"] {
        let (s, _, v) = send(
            &app,
            path,
            &[
                ("github-public-key-identifier", &github.identifier),
                ("github-public-key-signature", sig),
            ],
            Body::from(body.clone()),
        )
        .await;
        refused(s, &v);
    }
    let (s, _, v) = send(&app, path, &[], Body::from(body.clone())).await;
    refused(s, &v);
    assert_eq!(github.fetches(), 1);
    // An unknown identifier: one refetch, then 401; more unknown identifiers within the minute
    // fetch nothing more.
    let good = github.sign(body.as_bytes());
    for unknown in ["rotated-1", "rotated-2", "rotated-3"] {
        let (s, _, v) = send(
            &app,
            path,
            &[
                ("github-public-key-identifier", unknown),
                ("github-public-key-signature", &good),
            ],
            Body::from(body.clone()),
        )
        .await;
        refused(s, &v);
    }
    assert_eq!(github.fetches(), 2);
    // A minute later an unknown identifier may refetch again (a rotation is real sometimes).
    app.advance(61);
    let (s, _, v) = send(
        &app,
        path,
        &[
            ("github-public-key-identifier", "rotated-4"),
            ("github-public-key-signature", &good),
        ],
        Body::from(body.clone()),
    )
    .await;
    refused(s, &v);
    assert_eq!(github.fetches(), 3);
    // Nothing changed.
    assert_eq!(app.audit_actions(), before);
    assert_eq!(status_of(&app, &id).await["status"], "active");
    // GitHub's signature is worthless on GitLab's endpoint.
    let (s, _, v) = send(
        &app,
        "/secret-scanning/gitlab",
        &[
            ("gitlab-public-key-identifier", &github.identifier),
            ("gitlab-public-key-signature", &good),
        ],
        Body::from(body.clone()),
    )
    .await;
    refused(s, &v);
    assert_eq!(status_of(&app, &id).await["status"], "active");
}

#[tokio::test]
async fn gitlab_reports_are_acknowledged_and_idempotent() {
    let (github, gitlab) = (Provider::new(5), Provider::new(6));
    let app = app_with(&github, &gitlab);
    let (key, id) = live_key(&app).await;
    let look_alike = forged(&app, &key);
    let body = json!([
        {"type": "lynxo", "token": key, "url": "https://gitlab.com/o/r/-/blob/main/.env"},
        {"type": "lynxo", "token": look_alike, "url": "https://gitlab.com/o/r/-/blob/main/.env"},
    ])
    .to_string();
    let (status, answer) = report(&app, &gitlab, true, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer[0]["label"], "true_positive");
    assert_eq!(answer[1]["label"], "false_positive");
    let view = status_of(&app, &id).await;
    assert_eq!(view["status"], "revoked");
    let leaks = app
        .alice()
        .get("/v1/leaks")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(leaks["leaks"][0]["reporter"], "gitlab");
    assert_eq!(leaks["leaks"][0]["source"], Value::Null);
    // GitLab retries: the same report again, and the same key found elsewhere, revoke nothing
    // twice (the second place is recorded, as `already_revoked`).
    let revocations = |app: &TestApp| {
        app.audit_actions()
            .iter()
            .filter(|a| *a == "key.revoked")
            .count()
    };
    let (status, _) = report(&app, &gitlab, true, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    let elsewhere =
        json!([{"type": "lynxo", "token": key, "url": "https://gitlab.com/o/other"}]).to_string();
    let (status, _) = report(&app, &gitlab, true, elsewhere.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revocations(&app), 1);
    let leaks = app
        .alice()
        .get("/v1/leaks")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(leaks["total"], 2);
    assert_eq!(leaks["leaks"][0]["action"], "already_revoked");
}

#[tokio::test]
async fn notify_only_records_the_leak_and_keeps_the_key() {
    let (github, gitlab) = (Provider::new(7), Provider::new(8));
    let app = app_with(&github, &gitlab);
    let (key, id) = live_key(&app).await;
    let set = |v: &str| json!({ "leak_response": v });
    app.alice()
        .send(
            Method::PUT,
            "/v1/account/leak-response",
            Some(set("notify").to_string().into_bytes()),
        )
        .await
        .expect(StatusCode::OK);
    app.alice()
        .send(
            Method::PUT,
            "/v1/account/leak-response",
            Some(set("sometimes").to_string().into_bytes()),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(
        app.audit_actions()
            .contains(&"account.leak_response_changed".to_owned())
    );
    // Bob's setting is his own.
    let bob = app
        .bob()
        .get("/v1/account")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(bob["leak_response"], "revoke");
    let body =
        json!([{"token": key, "type": "t", "url": "https://x", "source": "content"}]).to_string();
    let (status, answer) = report(&app, &github, false, body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer[0]["label"], "true_positive");
    assert_eq!(status_of(&app, &id).await["status"], "active");
    let leaks = app
        .alice()
        .get(&format!("/v1/keys/{id}/leaks"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(leaks["leaks"][0]["action"], "notified");
    // The holder still can revoke it.
    let (status, _, _) = send(
        &app,
        "/v1/keys/revoke",
        &[("content-type", "application/x-www-form-urlencoded")],
        Body::from(format!("token={key}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let view = status_of(&app, &id).await;
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revoke_reason"], "revoked_by_holder");
}

#[tokio::test]
async fn hostile_reports_are_refused_whole() {
    let (github, gitlab) = (Provider::new(9), Provider::new(10));
    let app = app_with(&github, &gitlab);
    let (key, id) = live_key(&app).await;
    let before = app.audit_actions();
    // Malformed JSON after a valid signature: 400, and nothing read into the store.
    let (status, v) = report(&app, &github, false, b"[{\"token\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = report(&app, &github, false, b"{\"token\": 1}").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // 1,001 tokens (the live key among them): refused whole.
    let mut tokens: Vec<Value> = (0..1000)
        .map(|i| json!({"token": format!("lnx_live_{i}"), "type": "t"}))
        .collect();
    tokens.push(json!({"token": key, "type": "t"}));
    let body = serde_json::to_vec(&tokens).unwrap();
    let (status, v) = report(&app, &github, false, &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "too_many_tokens");
    // A body over 1 MiB, declared, and the same with no length (as a chunked one arrives).
    let huge = vec![b' '; control::leaks::MAX_REPORT_BYTES + 1];
    let signature = github.sign(&huge);
    let length = huge.len().to_string();
    for declared in [true, false] {
        let mut headers = vec![
            ("github-public-key-identifier", github.identifier.as_str()),
            ("github-public-key-signature", signature.as_str()),
        ];
        if declared {
            headers.push(("content-length", length.as_str()));
        }
        let (status, _, v) = send(
            &app,
            "/secret-scanning/github",
            &headers,
            Body::from(huge.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    }
    assert_eq!(app.audit_actions(), before);
    assert_eq!(status_of(&app, &id).await["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_report_twice_at_once_revokes_once() {
    let (github, gitlab) = (Provider::new(11), Provider::new(12));
    let app = Arc::new(app_with(&github, &gitlab));
    let (key, id) = live_key(&app).await;
    let body =
        json!([{"token": key, "type": "t", "url": "https://x", "source": "content"}]).to_string();
    let (a, b) = tokio::join!(
        report(&app, &github, false, body.as_bytes()),
        report(&app, &github, false, body.as_bytes())
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a.1, b.1);
    let actions = app.audit_actions();
    assert_eq!(actions.iter().filter(|a| *a == "key.revoked").count(), 1);
    assert_eq!(actions.iter().filter(|a| *a == "key.leaked").count(), 1);
    assert_eq!(status_of(&app, &id).await["status"], "revoked");
}

/// The list version counter and the revocation outbox's rows.
fn list_state(app: &TestApp) -> (i64, i64) {
    app.state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(c.query_row(
                "SELECT list_version, (SELECT count(*) FROM revocation_outbox) \
                 FROM revocation_meta",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap()
}

fn write_sql(app: &TestApp, sql: &'static str) {
    app.state
        .store
        .write_blocking::<_, StoreError, _>(move |tx| Ok(tx.execute_batch(sql)?))
        .unwrap();
}

#[tokio::test]
async fn a_report_that_fails_halfway_leaves_nothing_and_its_retry_does_it_all() {
    let (github, gitlab) = (Provider::new(15), Provider::new(16));
    let app = app_with(&github, &gitlab);
    let mut keys = vec![
        live_key(&app).await,
        live_key(&app).await,
        live_key(&app).await,
    ];
    let bob = app
        .bob()
        .post(
            "/v1/keys",
            json!({"name": "b", "environment": "production", "permission": "read_write"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .body;
    keys.push((
        bob["key"].as_str().unwrap().to_owned(),
        bob["id"].as_str().unwrap().to_owned(),
    ));
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, (key, _))| json!({"type": "t", "token": key, "url": format!("https://gitlab.com/o/r/-/blob/main/{i}")}))
        .collect();
    let body = serde_json::to_vec(&entries).unwrap();
    let (actions, list) = (app.audit_actions(), list_state(&app));

    // The third key's leak record fails (as a full disk or a bug would): the whole report with it.
    // The same trigger in each dialect: PostgreSQL's runs a function of its own.
    let postgres = app.state.store.is_postgres();
    write_sql(
        &app,
        if postgres {
            "CREATE FUNCTION fail_third_leak() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF (SELECT count(*) FROM key_leaks) >= 2 THEN \
                     RAISE EXCEPTION 'injected'; \
                 END IF; \
                 RETURN NEW; \
             END $$; \
             CREATE TRIGGER fail_third_leak BEFORE INSERT ON key_leaks \
             FOR EACH ROW EXECUTE FUNCTION fail_third_leak();"
        } else {
            "CREATE TRIGGER fail_third_leak BEFORE INSERT ON key_leaks \
             WHEN (SELECT count(*) FROM key_leaks) >= 2 BEGIN SELECT RAISE (ABORT, 'injected'); END;"
        },
    );
    let (status, _) = report(&app, &gitlab, true, &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        app.audit_actions(),
        actions,
        "no event of the failed report"
    );
    assert_eq!(list_state(&app), list, "no list version, no outbox row");
    for (_, id) in &keys[..3] {
        assert_eq!(status_of(&app, id).await["status"], "active");
    }
    let leaks = app
        .alice()
        .get("/v1/leaks")
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(leaks["total"], 0);

    // GitLab retries the same report: all of it is done now, under one list version.
    write_sql(
        &app,
        if postgres {
            "DROP TRIGGER fail_third_leak ON key_leaks; DROP FUNCTION fail_third_leak();"
        } else {
            "DROP TRIGGER fail_third_leak;"
        },
    );
    let (status, answer) = report(&app, &gitlab, true, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["label"] == "true_positive"),
        "{answer}"
    );
    let (version, outbox) = list_state(&app);
    assert!(version > list.0);
    assert_eq!(outbox, list.1 + 4, "one outbox row per key");
    let mut versions = Vec::new();
    for (_, id) in &keys[..3] {
        let view = status_of(&app, id).await;
        assert_eq!(view["status"], "revoked");
        assert_eq!(view["revoke_reason"], "leaked");
        versions.push(view["revocation_version"].as_i64().unwrap());
    }
    let bob_view = app
        .bob()
        .get(&format!("/v1/keys/{}", keys[3].1))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(bob_view["status"], "revoked");
    versions.push(bob_view["revocation_version"].as_i64().unwrap());
    assert!(
        versions.iter().all(|&v| v == version),
        "{versions:?} vs {version}"
    );
    let after = app.audit_actions();
    let new = &after[actions.len()..];
    assert_eq!(new.iter().filter(|a| *a == "key.revoked").count(), 4);
    assert_eq!(new.iter().filter(|a| *a == "key.leaked").count(), 4);
    assert_eq!(new.len(), 8, "{new:?}");
    let checked = app
        .state
        .store
        .read_blocking::<_, StoreError, _>(|c| {
            Ok(audit::verify_chain(c, &common::audit_keyring(), None))
        })
        .unwrap()
        .unwrap();
    assert_eq!(checked.events, after.len() as u64);

    // A third delivery changes nothing.
    let (status, again) = report(&app, &gitlab, true, &body).await;
    assert_eq!((status, &again), (StatusCode::OK, &answer));
    assert_eq!(app.audit_actions(), after);
    assert_eq!(list_state(&app), (version, outbox));
}

#[tokio::test]
async fn the_report_path_is_configurable_and_unconfigured_providers_are_404() {
    let github = Provider::new(13);
    let url = github.url.clone();
    let app = TestApp::builder()
        .settings(move |s| {
            s.github_keys_url = Some(url);
            s.secret_scanning_path = "/hooks/leaks-7f3a".into();
        })
        .build();
    let (key, id) = live_key(&app).await;
    let body = json!([{"token": key, "type": "t"}]).to_string();
    let signature = github.sign(body.as_bytes());
    let headers = [
        ("github-public-key-identifier", github.identifier.as_str()),
        ("github-public-key-signature", signature.as_str()),
    ];
    let (status, _, _) = send(
        &app,
        "/secret-scanning/github",
        &headers,
        Body::from(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, v) = send(
        &app,
        "/hooks/leaks-7f3a/github",
        &headers,
        Body::from(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(status_of(&app, &id).await["status"], "revoked");
    // GitLab is not configured here.
    let signed = [
        ("gitlab-public-key-identifier", github.identifier.as_str()),
        ("gitlab-public-key-signature", signature.as_str()),
    ];
    let (status, _, v) = send(
        &app,
        "/hooks/leaks-7f3a/gitlab",
        &signed,
        Body::from(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // Unsigned, it is refused as every unsigned report is.
    let (status, _, v) = send(&app, "/hooks/leaks-7f3a/gitlab", &[], Body::from(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test]
async fn reports_are_budgeted_per_signing_key() {
    let (github, gitlab) = (Provider::new(14), Provider::new(15));
    let (gh, gl) = (github.url.clone(), gitlab.url.clone());
    let app = TestApp::builder()
        .settings(move |s| {
            s.github_keys_url = Some(gh);
            s.gitlab_keys_url = Some(gl);
            s.reports_per_minute = 10;
        })
        .build();
    let body = b"[]";
    let (status, _) = report(&app, &github, false, body).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = report(&app, &github, false, body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // Refused forgeries do not spend it: GitLab's own budget is untouched too.
    let (status, _) = report(&app, &gitlab, true, body).await;
    assert_eq!(status, StatusCode::OK);
    app.advance(6);
    let (status, _) = report(&app, &github, false, body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn self_revocation_answers_the_same_bytes_whatever_the_key() {
    let app = TestApp::builder()
        .settings(|s| s.self_revoke_per_minute = 600)
        .build();
    let (key, id) = live_key(&app).await;
    let look_alike = forged(&app, &key);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let revoke = |body: String| {
        let app = &app;
        async move { send(app, "/v1/keys/revoke", &form, Body::from(body)).await }
    };
    let forged_answer = revoke(format!("token={look_alike}&token_type_hint=api_key")).await;
    assert_eq!(forged_answer.0, StatusCode::OK);
    assert_eq!(status_of(&app, &id).await["status"], "active");
    let random = revoke("token=hello".into()).await;
    let genuine = revoke(format!("token={key}")).await;
    let again = revoke(format!("token={key}")).await;
    for answer in [&random, &genuine, &again] {
        assert_eq!(answer.0, forged_answer.0);
        assert_eq!(answer.1, forged_answer.1, "byte-identical bodies");
    }
    let view = status_of(&app, &id).await;
    assert_eq!(view["status"], "revoked");
    assert_eq!(view["revoke_reason"], "revoked_by_holder");
    let actions = app.audit_actions();
    assert_eq!(actions.iter().filter(|a| *a == "key.revoked").count(), 1);
    let events = app
        .alice()
        .get(&format!("/v1/audit-events?target={id}"))
        .await
        .expect(StatusCode::OK)
        .body;
    let revoked = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.revoked")
        .unwrap();
    assert_eq!(revoked["actor"], "holder");
    // JSON works too; a body without a token is a 400 that names nothing about keys.
    let (key2, id2) = live_key(&app).await;
    let (status, _, _) = send(
        &app,
        "/v1/keys/revoke",
        &[("content-type", "application/json")],
        Body::from(json!({ "token": key2 }).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status_of(&app, &id2).await["status"], "revoked");
    for bad in ["", "tok=1", "token=a&token=b"] {
        let (status, _, v) = send(&app, "/v1/keys/revoke", &form, Body::from(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert_eq!(v["code"], "invalid_request");
    }
    let (status, _, _) = send(
        &app,
        "/v1/keys/revoke",
        &form,
        Body::from(vec![b'a'; control::leaks::MAX_HOLDER_BYTES + 1]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn self_revocation_is_budgeted_per_client() {
    let app = TestApp::builder()
        .settings(|s| s.self_revoke_per_minute = 10)
        .build();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, _) = send(&app, "/v1/keys/revoke", &form, Body::from("token=x")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, v) = send(&app, "/v1/keys/revoke", &form, Body::from("token=x")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "rate_limit_exceeded");
}
