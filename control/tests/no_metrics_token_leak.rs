//! The metrics token never reaches the logs, the scrape it protects, the OpenAPI document or a
//! `Debug` print of the settings: scrapes with it and with near misses, then a search of every
//! byte.
//!
//! It installs a global log subscriber, so it lives in its own test binary.

mod common;

use axum::http::StatusCode;
use common::{TestApp, capture_logs, contains};

const TOKEN: &str = "metrics-token-that-must-stay-secret-0123456789";

#[tokio::test]
async fn the_metrics_token_is_nowhere_but_where_it_was_given() {
    let logs = capture_logs();
    let app = TestApp::builder()
        .settings(|s| s.metrics_token = Some(TOKEN.parse().unwrap()))
        .build();
    let scrape = app
        .client(Some(format!("Bearer {TOKEN}")))
        .get("/metrics")
        .await
        .expect(StatusCode::OK);
    for wrong in [&TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}0")] {
        app.client(Some(format!("Bearer {wrong}")))
            .get("/metrics")
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let openapi = app.anonymous().get("/openapi.json").await.body.to_string();
    let settings = format!("{:?}", app.state.settings);
    let secret = TOKEN.as_bytes();
    // Its first half is enough to find a truncated or partly printed copy.
    let half = &secret[..secret.len() / 2];
    for (place, bytes) in [
        ("logs", logs.bytes()),
        ("the scrape", scrape.body.to_string().into_bytes()),
        ("the OpenAPI document", openapi.into_bytes()),
        ("Debug of the settings", settings.into_bytes()),
    ] {
        assert!(
            !bytes.is_empty(),
            "{place} is empty: the search would prove nothing"
        );
        assert!(!contains(&bytes, half), "the metrics token is in {place}");
    }
}
