//! The demo origin: a stand-in for the Lynxo API behind the edge.
//!
//! Every `/v1/...` request must carry the identity the edge signed
//! ([`shared::identity::Identity::verify`]); one that does not (it bypassed the edge, or a client
//! forged the headers) gets 401. An admitted request is answered with the identity and what the
//! origin received, as JSON, so tests can see exactly what the edge forwarded. A request with a
//! `Demo-Status: <code>` header is answered with that status instead of 200 (and a `Location`
//! for a 3xx), so tests can make the origin answer any status class through the edge.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use shared::identity::{Identity, scopes_value};
use shared::mac::Keyring;

/// Seconds an identity signature stays valid at the origin: edge and origin clocks agree
/// closely, and a short window bounds replay of a captured request.
pub const IDENTITY_TOLERANCE: u64 = 60;

/// The origin's router, checking identities with `keyring` (the edge's `ORIGIN_KEYRING`).
pub fn app(keyring: Arc<Keyring>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(echo_request)
        .with_state(keyring)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn echo_request(
    State(keyring): State<Arc<Keyring>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let identity = Identity::verify(
        &keyring,
        lookup,
        method.as_str(),
        uri.path(),
        unix_now(),
        IDENTITY_TOLERANCE,
    );
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            let problem = json!({
                "type": "https://docs.lynxo.ai/errors/identity_rejected",
                "title": "Unauthorized",
                "status": 401,
                "code": "identity_rejected",
                "detail": e.to_string(),
            });
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/problem+json")],
                problem.to_string(),
            )
                .into_response();
        }
    };
    let received: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), Value::String(value))
        })
        .collect();
    let answer = json!({
        "account_id": identity.account_id,
        "key_id": identity.key_id.to_string(),
        "environment": identity.environment.name(),
        "scopes": scopes_value(identity.scopes),
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "body_len": body.len(),
        "headers": received,
    });
    let status = lookup("demo-status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..600).contains(&s.as_u16()))
        .unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response();
    if status.is_redirection() {
        response.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_static("/v1/jobs"),
        );
    }
    response
}
