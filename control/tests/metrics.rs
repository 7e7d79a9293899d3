//! `GET /metrics`: protected by its own token, parsed by a Prometheus text parser, bounded in
//! its labels; the edge's reports and the clock skew (with its readiness rule) from signed
//! usage batches.

mod common;
// The e2e harness's parser, so both read /metrics by one rule.
#[path = "../../tests/src/exposition.rs"]
mod exposition;

use axum::http::{Method, StatusCode};
use common::{START, TestApp};
use exposition::{Sample, parse_exposition};
use serde_json::json;
use shared::key::KeyId;
use shared::usage::{Batch, Count, EdgeHealth, IsolateHealth, Outcome};

const TOKEN: &str = "metrics-token-for-tests-0123456789abcdef";

fn app() -> TestApp {
    TestApp::builder()
        .settings(|s| s.metrics_token = Some(TOKEN.parse().unwrap()))
        .build()
}

/// Scrapes with the token and parses the text with an OpenMetrics parser.
async fn scrape(app: &TestApp) -> Vec<Sample> {
    let resp = app
        .client(Some(format!("Bearer {TOKEN}")))
        .get("/metrics")
        .await
        .expect(StatusCode::OK);
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
        "{:?}",
        resp.headers
    );
    parse_exposition(resp.body.as_str().expect("a text body")).expect("parses")
}

/// The value of the sample `name` whose labels include every pair of `labels`.
fn value(scrape: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn routes(scrape: &[Sample]) -> std::collections::BTreeSet<String> {
    scrape
        .iter()
        .filter(|s| s.name == "lynxo_http_requests_total")
        .filter_map(|s| s.labels.get("route").cloned())
        .collect()
}

#[tokio::test]
async fn metrics_need_their_own_token_and_do_not_exist_without_one() {
    let app = TestApp::new();
    app.client(Some(format!("Bearer {TOKEN}")))
        .get("/metrics")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let app = self::app();
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("bearer {TOKEN}")),
        Some(TOKEN.to_owned()),
        // A management token is not the metrics token.
        Some(format!("Bearer {}", app.alice_token)),
    ] {
        app.client(auth)
            .get("/metrics")
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    scrape(&app).await;
}

#[tokio::test]
async fn requests_count_by_route_template_and_random_paths_add_no_label() {
    let app = app();
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap();
    app.alice()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::OK);
    app.bob()
        .get(&format!("/v1/keys/{id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    let first = scrape(&app).await;
    assert_eq!(
        value(
            &first,
            "lynxo_http_requests_total",
            &[
                ("route", "/v1/keys/{id}"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &first,
            "lynxo_http_requests_total",
            &[("route", "/v1/keys/{id}"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &first,
            "lynxo_http_request_duration_seconds_count",
            &[("route", "/v1/keys/{id}"), ("method", "GET")]
        )
        .is_some_and(|n| n >= 2.0)
    );
    // An attacker's random paths, encoded paths and invented methods: one label value for all.
    for i in 0..50 {
        app.anonymous().get(&format!("/random/{i}/%2e%2e")).await;
        app.anonymous().get(&format!("/v1/keys/{i}/nope")).await;
        let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        app.anonymous().send(method, "/v1/keys", None).await;
    }
    let second = scrape(&app).await;
    let added: Vec<String> = routes(&second)
        .difference(&routes(&first))
        .cloned()
        .collect();
    assert!(
        added
            .iter()
            .all(|r| r == "unmatched" || r == "/metrics" || r == "/v1/keys"),
        "{added:?}"
    );
    assert!(
        value(
            &second,
            "lynxo_http_requests_total",
            &[("route", "unmatched")]
        )
        .is_some_and(|n| n >= 50.0)
    );
    let methods: std::collections::BTreeSet<&str> = second
        .iter()
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    assert!(
        methods
            .iter()
            .all(|m| ["GET", "POST", "PATCH", "DELETE", "other"].contains(m)),
        "{methods:?}"
    );
}

#[tokio::test]
async fn sign_in_failures_and_lockouts_are_counted() {
    let app = app();
    let wrong = json!({"email": "alice@example.com", "password": "not the password!"});
    let mut locked = false;
    for _ in 0..40 {
        let resp = app.anonymous().post("/v1/sessions", wrong.clone()).await;
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            locked = true;
            break;
        }
        resp.expect(StatusCode::UNAUTHORIZED);
    }
    assert!(locked, "the budget locks the email at some point");
    let s = scrape(&app).await;
    assert!(
        value(
            &s,
            "lynxo_sign_in_failures_total",
            &[("reason", "wrong_credentials")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(value(&s, "lynxo_sign_in_lockouts_total", &[]), Some(1.0));
}

/// A keyring with the test kid and another secret: what a forger without the secret has.
fn forger() -> shared::mac::Keyring {
    shared::mac::Keyring::from_config(
        "active=1;1:9999999999999999999999999999999999999999999999999999999999999999",
    )
    .unwrap()
}

fn health(isolate: &str, at_ms: u64, failures: u64, age: u64) -> IsolateHealth {
    IsolateHealth {
        isolate: isolate.into(),
        at_ms,
        limiter_failures: failures,
        shard_age_secs: Some(age),
    }
}

fn batch(app: &TestApp, seq: u64, key: &str, isolates: Vec<IsolateHealth>, retries: u64) -> Batch {
    Batch {
        source: "meter-test".into(),
        seq,
        counts: vec![Count {
            key_id: KeyId::parse_hex(key).unwrap(),
            account_id: app.alice_account,
            minute: START / 60,
            scope: Some("jobs:read".into()),
            outcome: Outcome::Success,
            n: 3,
        }],
        health: Some(EdgeHealth {
            meter_retries: retries,
            isolates,
        }),
        ..Batch::default()
    }
}

/// Posts `batch` signed at `signed_at`.
async fn ingest_at(app: &TestApp, batch: &Batch, signed_at: u64) -> StatusCode {
    let body = serde_json::to_vec(batch).unwrap();
    let signature = shared::usage::sign_batch(&app.state.keyring, &body, signed_at);
    app.anonymous()
        .header(shared::envelope::SYNC_HEADER, &signature)
        .send(Method::POST, shared::usage::INGEST_PATH, Some(body))
        .await
        .status
}

#[tokio::test]
async fn the_edges_reports_are_exposed_counted_once_and_bounded() {
    let app = app();
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap();
    let t = START * 1000;
    let first = batch(
        &app,
        1,
        id,
        vec![health("iso-a", t, 2, 30), health("iso-b", t, 0, 5)],
        1,
    );
    app.ingest(&first).await.expect(StatusCode::OK);
    // The same batch again (a retry) counts nothing twice.
    app.ingest(&first).await.expect(StatusCode::OK);
    // iso-a's counter moved from 2 to 5: three more failures, not five.
    let second = batch(&app, 2, id, vec![health("iso-a", t + 1000, 5, 31)], 2);
    app.ingest(&second).await.expect(StatusCode::OK);
    let s = scrape(&app).await;
    assert_eq!(
        value(&s, "lynxo_usage_batches_total", &[("result", "applied")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "lynxo_usage_batches_total", &[("result", "duplicate")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "lynxo_edge_limiter_failures_total", &[]),
        Some(5.0)
    );
    assert_eq!(value(&s, "lynxo_edge_meter_retries_total", &[]), Some(3.0));
    assert_eq!(value(&s, "lynxo_edge_isolates", &[]), Some(2.0));
    assert_eq!(
        value(&s, "lynxo_edge_shard_age_seconds", &[("isolate", "iso-a")]),
        Some(31.0)
    );
    assert_eq!(
        value(&s, "lynxo_edge_shard_age_max_seconds", &[]),
        Some(31.0)
    );
    assert!(value(&s, "lynxo_usage_ingest_lag_seconds", &[]).is_some());
    // Many isolates: the table keeps a bounded number.
    let many = (0..200)
        .map(|i| health(&format!("iso-{i}"), t + 2000, 0, 1))
        .collect::<Vec<_>>();
    for (n, chunk) in many.chunks(30).enumerate() {
        let b = batch(&app, 10 + n as u64, id, chunk.to_vec(), 0);
        app.ingest(&b).await.expect(StatusCode::OK);
    }
    let s = scrape(&app).await;
    assert_eq!(
        value(&s, "lynxo_edge_isolates", &[]),
        Some(control::metrics::MAX_ISOLATES as f64)
    );
    let labelled = s
        .iter()
        .filter(|x| x.name == "lynxo_edge_shard_age_seconds")
        .count();
    assert_eq!(labelled, control::metrics::MAX_ISOLATES);
    // Forgotten once they stop reporting.
    app.advance(11 * 60);
    let s = scrape(&app).await;
    assert_eq!(value(&s, "lynxo_edge_isolates", &[]), Some(0.0));
}

async fn ready(app: &TestApp) -> common::Resp {
    app.anonymous().get("/readyz").await
}

#[tokio::test]
async fn clock_skew_is_measured_on_every_batch_and_fails_readiness() {
    let app = app();
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap();
    ready(&app).await.expect(StatusCode::OK);
    // The edge's clock 20 s ahead: measured, still ready.
    assert_eq!(
        ingest_at(&app, &batch(&app, 1, id, vec![], 0), START + 20).await,
        StatusCode::OK
    );
    let s = scrape(&app).await;
    assert_eq!(value(&s, "lynxo_clock_skew_seconds", &[]), Some(20.0));
    ready(&app).await.expect(StatusCode::OK);
    // 120 s behind: past the 60 s readiness threshold, well inside the 300 s tolerance.
    assert_eq!(
        ingest_at(&app, &batch(&app, 2, id, vec![], 0), START - 120).await,
        StatusCode::OK
    );
    let s = scrape(&app).await;
    assert_eq!(value(&s, "lynxo_clock_skew_seconds", &[]), Some(-120.0));
    let resp = ready(&app)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "clock_skew");
    assert!(
        resp.body["detail"].as_str().unwrap().contains("-120"),
        "{}",
        resp.body
    );
    // Back in step: ready again.
    assert_eq!(
        ingest_at(&app, &batch(&app, 3, id, vec![], 0), START).await,
        StatusCode::OK
    );
    ready(&app).await.expect(StatusCode::OK);
    // Past the tolerance the batch is refused, and the skew is still measured.
    assert_eq!(
        ingest_at(&app, &batch(&app, 4, id, vec![], 0), START + 400).await,
        StatusCode::UNAUTHORIZED
    );
    let s = scrape(&app).await;
    assert_eq!(value(&s, "lynxo_clock_skew_seconds", &[]), Some(400.0));
    assert_eq!(
        value(&s, "lynxo_usage_batches_total", &[("result", "refused")]),
        Some(1.0)
    );
    ready(&app)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "clock_skew");
    assert_eq!(
        ingest_at(&app, &batch(&app, 5, id, vec![], 0), START).await,
        StatusCode::OK
    );
    ready(&app).await.expect(StatusCode::OK);
    // What nobody genuine sent moves nothing: a forged signature out of tolerance, and a
    // replay of a batch already applied, signed long ago.
    let forged = batch(&app, 6, id, vec![], 0);
    let body = serde_json::to_vec(&forged).unwrap();
    let signature = shared::usage::sign_batch(&forger(), &body, START + 1000);
    let status = app
        .anonymous()
        .header(shared::envelope::SYNC_HEADER, &signature)
        .send(Method::POST, shared::usage::INGEST_PATH, Some(body))
        .await
        .status;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let old = batch(&app, 7, id, vec![], 0);
    assert_eq!(ingest_at(&app, &old, START).await, StatusCode::OK);
    // Replayed 100 s later, inside the tolerance: acknowledged as a duplicate, not measured.
    app.advance(100);
    assert_eq!(ingest_at(&app, &old, START).await, StatusCode::OK);
    ready(&app).await.expect(StatusCode::OK);
    // And an hour later, outside it: refused, not measured.
    app.advance(3500);
    assert_eq!(ingest_at(&app, &old, START).await, StatusCode::UNAUTHORIZED);
    let s = scrape(&app).await;
    assert_eq!(value(&s, "lynxo_clock_skew_seconds", &[]), Some(0.0));
    ready(&app).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn the_database_side_is_read_at_the_scrape() {
    let app = app();
    let key = app.create_key(json!({})).await;
    let id = key["id"].as_str().unwrap();
    app.alice()
        .post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "test"}))
        .await
        .expect(StatusCode::OK);
    app.advance(7);
    let s = scrape(&app).await;
    assert_eq!(
        value(&s, "lynxo_outbox_depth", &[("publisher", "revocations")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "lynxo_outbox_oldest_age_seconds",
            &[("publisher", "revocations")]
        ),
        Some(7.0)
    );
    // The created key's policy waits for the edge (no limits publisher runs here).
    assert_eq!(
        value(&s, "lynxo_outbox_depth", &[("publisher", "limits")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "lynxo_outbox_oldest_age_seconds",
            &[("publisher", "limits")]
        ),
        Some(7.0)
    );
    assert!(value(&s, "lynxo_database_size_bytes", &[]).is_some_and(|b| b > 4096.0));
    // A publisher pass empties the outbox and publishes a version.
    app.publisher().run_once().await.unwrap();
    let s = scrape(&app).await;
    assert_eq!(
        value(&s, "lynxo_outbox_depth", &[("publisher", "revocations")]),
        Some(0.0)
    );
    assert!(value(&s, "lynxo_revocation_list_version", &[]).is_some_and(|v| v > 0.0));
}
