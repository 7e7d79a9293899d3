//! Request bodies: every body the service reads goes through [`read`], bounded in size, time and
//! number, because most of them come from callers not authenticated yet (a sign-in, a usage
//! batch before its signature is checked).
//!
//! - Size: a route's limit; a declared `Content-Length` over it is refused before a byte is read,
//!   and a body without one (chunked) is cut at the limit (413).
//! - Time: the whole body within [`READ_TIMEOUT`] (408), so a slow sender lets go.
//! - Number: the bodies being read at once share a budget of [`BUDGET_BYTES`]; a read that does
//!   not fit is refused at once (503 with `Retry-After`), never queued.
//!
//! [`refuse_unexpected_body`] turns away a body on a method that takes none, unread. (A body
//! framed two ways at once never gets here: hyper reads it by its transfer coding, drops the
//! `Content-Length`, and closes the connection after the answer, as RFC 9112 6.3 asks.)

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::AppError;

/// Longest a body may take to arrive.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of bodies being read at once, across the service.
pub const BUDGET_BYTES: usize = 64 << 20;

/// The budget's unit: one permit per KiB.
const UNIT: usize = 1024;

static BUDGET: Semaphore = Semaphore::const_new(BUDGET_BYTES / UNIT);

/// The declared `Content-Length`; `Err` for one that is not a decimal number.
fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, AppError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_content_length",
                "The Content-Length header is not a number",
            )
        })
}

/// Whether the request declares a body: a `Content-Length` above 0 or any transfer coding.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "The request body is too large",
    )
    .with_field("max_bytes", limit)
}

fn timed_out() -> AppError {
    AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "The request body did not arrive in time",
    )
    .with_detail(format!(
        "send the whole body within {} s",
        READ_TIMEOUT.as_secs()
    ))
    .with_header(header::CONNECTION, HeaderValue::from_static("close"))
}

fn busy() -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "The service is reading as many request bodies as it allows at once",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Reads `body` (sent with `headers`) whole: at most `limit` bytes, within [`READ_TIMEOUT`],
/// inside the service's body budget.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, AppError> {
    let cap = match declared_length(headers)? {
        Some(n) if n > limit => return Err(too_large(limit)),
        Some(n) => n,
        None => limit,
    };
    let units = u32::try_from(cap.div_ceil(UNIT).max(1)).map_err(|_| too_large(limit))?;
    let Ok(_permit) = BUDGET.try_acquire_many(units) else {
        return Err(busy());
    };
    match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, cap)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large(limit)),
        Ok(Err(_)) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "The request body could not be read",
        )),
        Err(_) => Err(timed_out()),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Route middleware: a request to a `GET`, `HEAD` or `DELETE` route that declares a body is
/// refused before any of it is read (400 `body_not_allowed`). It runs after routing, so a
/// method the path does not have is the router's 405 (which reads nothing either).
pub async fn refuse_unexpected_body(request: Request, next: Next) -> Response {
    let bodiless = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE
    );
    if bodiless && has_body(request.headers()) {
        return AppError::new(
            StatusCode::BAD_REQUEST,
            "body_not_allowed",
            "This method takes no request body",
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response();
    }
    next.run(request).await
}
