//! The demo origin: a stand-in for the Lynxo API behind the edge, and the example of how an
//! origin checks the edge's identity.
//!
//! Every `/v1/...` request must carry the identity the edge signed, checked with
//! [`shared::identity::Identity::verify`] against the request as received (method, path, query,
//! `Content-Length`) and this origin's [`ReplayCache`], before the body is read; then exactly the
//! signed number of body bytes is read. A request that bypassed the edge, a forged identity, a
//! signed request replayed or changed, is refused (401 `identity_rejected` with the check that
//! failed as `reason`). An admitted request is answered with the identity it verified and what
//! the origin received, as JSON, so tests can see exactly what the edge forwarded; never with
//! the signature. A request with a `Demo-Status: <code>` header (which the edge forwards only
//! when its `FORWARD_HEADERS` names it) is answered with that status instead of 200 (and a
//! `Location` for a 3xx), so tests can make the origin answer any status class through the edge.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use shared::identity::{
    self, Identity, IdentityError, ReplayCache, SIGNATURE_HEADER, scopes_value,
};
use shared::mac::Keyring;

/// Seconds an identity signature stays valid at the origin, and how long its request id is
/// remembered: edge and origin clocks agree closely, and a short window bounds how long a
/// captured request is worth anything at all.
pub const REPLAY_WINDOW: u64 = identity::MAX_WINDOW;

/// Request ids remembered at most: far above what one demo origin serves in a window.
pub const REPLAY_CAPACITY: usize = 1 << 16;

/// Largest body the demo origin reads.
pub const MAX_BODY: u64 = 1 << 20;

/// What the origin holds: the identity keyring and its replay cache.
struct Origin {
    keyring: Arc<Keyring>,
    replay: Mutex<ReplayCache>,
}

/// The origin's router, checking identities with `keyring` (the edge's `ORIGIN_KEYRING`).
pub fn app(keyring: Arc<Keyring>) -> Router {
    let replay = ReplayCache::new(REPLAY_CAPACITY, REPLAY_WINDOW)
        .unwrap_or_else(|e| unreachable!("the constants are valid: {e}"));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(echo_request)
        .with_state(Arc::new(Origin {
            keyring,
            replay: Mutex::new(replay),
        }))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn problem(status: StatusCode, code: &str, reason: &str, detail: &str) -> Response {
    let problem = json!({
        "type": format!("https://docs.lynxo.ai/errors/{code}"),
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "code": code,
        "reason": reason,
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        problem.to_string(),
    )
        .into_response()
}

fn rejected(e: &IdentityError) -> Response {
    let status = match e {
        // Not the caller's fault: this origin is over its capacity for the window.
        IdentityError::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    problem(status, "identity_rejected", e.code(), &e.to_string())
}

async fn echo_request(State(origin): State<Arc<Origin>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let body_length = match lookup(header::CONTENT_LENGTH.as_str()).map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_content_length",
                "invalid_content_length",
                "Content-Length is not a number.",
            );
        }
    };
    let signed = identity::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        body_length,
    };
    // Checked before a byte of the body is read.
    let verified = {
        let mut replay = origin
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Identity::verify(&origin.keyring, lookup, &signed, unix_now(), &mut replay)
    };
    let verified = match verified {
        Ok(verified) => verified,
        Err(e) => return rejected(&e),
    };
    if body_length > MAX_BODY {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "payload_too_large",
            "The demo origin reads at most 1 MiB.",
        );
    }
    // Exactly the signed length: more is refused by the limit, less by the comparison.
    let body = match axum::body::to_bytes(body, body_length as usize).await {
        Ok(body) if body.len() as u64 == body_length => body,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "body_length_mismatch",
                "body_length_mismatch",
                "The body is not the length the edge signed.",
            );
        }
    };
    let received: Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURE_HEADER)
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), Value::String(value))
        })
        .collect();
    let identity = verified.identity;
    let answer = json!({
        "account_id": identity.account_id,
        "key_id": identity.key_id.to_string(),
        "environment": identity.environment.name(),
        "scopes": scopes_value(identity.scopes),
        "request_id": verified.request_id.to_string(),
        "signed_at": verified.signed_at,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
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
