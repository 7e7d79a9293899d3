//! The service's one error type, [`AppError`], and the extractors that turn malformed input
//! into it, so every failure a client sees is an RFC 9457 `application/problem+json` body with a
//! stable `code`.
//!
//! Internal errors become a bare 500; their cause travels to the logging middleware in a
//! response extension and is logged there, once. An [`AppError`] is also a
//! `std::error::Error` whose `Display` and `source` give that cause, so the background loops and
//! the CLI, which have no response to carry it, log the real failure and not only its code.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use shared::key::KeyId;

use crate::state::AppState;

/// Handler result.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// A failure, as the client will see it. Boxed: results stay one pointer wide on the happy path.
#[derive(Debug)]
pub struct AppError(Box<Problem>);

#[derive(Debug)]
struct Problem {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: Option<String>,
    extra: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<Cause>,
}

/// What made a 500: never sent, logged once.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// The cause of a 500, handed to the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl AppError {
    /// A client error with a stable `code` and a short human title.
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self(Box::new(Problem {
            status,
            code,
            title,
            detail: None,
            extra: Map::new(),
            headers: Vec::new(),
            internal: None,
        }))
    }

    /// A server fault described by a message. The cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::internal_error(cause.to_string())
    }

    /// A server fault caused by `error`, kept as this error's `source`. Logged, never sent.
    pub fn internal_error(error: impl Into<Cause>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        );
        e.0.internal = Some(error.into());
        e
    }

    /// 422: the body parsed but a field is invalid.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request is invalid",
        )
        .with_detail(detail)
    }

    /// The resource does not exist (or belongs to another account: the same answer).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    /// No valid credentials (RFC 6750).
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        )
        .with_detail("send `Authorization: Bearer lnxm_...` or sign in")
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lynxo-control\""),
        )
    }

    /// Adds a human explanation.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Adds a machine-readable member to the problem body.
    #[must_use]
    pub fn with_field(mut self, name: &str, value: impl Serialize) -> Self {
        self.0.extra.insert(
            name.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.0.code
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        crate::store::StoreError::from(e).into()
    }
}

/// Seconds a client is asked to wait after `storage_full`.
pub const STORAGE_FULL_RETRY_AFTER: u32 = 5;

/// The one conversion of a storage failure at the HTTP boundary: a 500, the cause logged; or,
/// when the disk refused the write (full, or failing I/O), a 503 `storage_full` with
/// `Retry-After`, its cause logged too. Either way the write was rolled back whole.
impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        if !e.is_unwritable() {
            return Self::internal_error(e);
        }
        let mut full = Self::storage_full();
        full.0.internal = Some(e.into());
        full
    }
}

impl AppError {
    /// 503 `storage_full`: the database's disk refuses writes; nothing of this request was
    /// written.
    pub fn storage_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_full",
            "The database cannot store writes now",
        )
        .with_detail(
            "the control plane's disk is full or failing; nothing was written, retry later",
        )
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(STORAGE_FULL_RETRY_AFTER),
        )
    }
}

/// A handler that answers a storage failure directly answers what [`AppError`] makes of it.
impl IntoResponse for crate::store::StoreError {
    fn into_response(self) -> Response {
        AppError::from(self).into_response()
    }
}

impl std::fmt::Display for AppError {
    /// `code: title`, then the detail, or for a 500 its cause and the cause's own sources.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.0;
        write!(f, "{}: {}", p.code, p.title)?;
        if let Some(detail) = &p.detail {
            write!(f, ": {detail}")?;
        }
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .internal
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let p = *self.0;
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("https://docs.lynxo.ai/errors/{}", p.code)),
        );
        body.insert("title".into(), Value::String(p.title.into()));
        body.insert("status".into(), Value::from(p.status.as_u16()));
        if let Some(detail) = p.detail {
            body.insert("detail".into(), Value::String(detail));
        }
        body.insert("code".into(), Value::String(p.code.into()));
        body.extend(p.extra);
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        let mut response = (p.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in p.headers {
            headers.insert(name, value);
        }
        if let Some(cause) = p.internal {
            response
                .extensions_mut()
                .insert(InternalCause(chain(cause.as_ref())));
        }
        response
    }
}

/// `error` and its sources, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// `axum::Json`, but the body is read by [`crate::body::read`] (bounded in size, time and
/// number) and malformed bodies get our problem format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T> FromRequest<AppState> for Json<T>
where
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as application/json",
            ));
        }
        let (parts, body) = req.into_parts();
        let bytes = crate::body::read(&parts.headers, body, state.settings.max_body_bytes).await?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON body: 400 `invalid_json` for bytes that are not JSON, 422 `validation_failed`
/// for JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(json_refused)
}

/// The answer for a body `serde_json` refused: 422 for JSON of the wrong shape, 400 for text
/// that is not JSON.
pub fn json_refused(e: serde_json::Error) -> AppError {
    match e.classify() {
        serde_json::error::Category::Data => AppError::validation(e.to_string()),
        _ => AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "The body is not valid JSON",
        )
        .with_detail(e.to_string()),
    }
}

/// Whether the request says its body is JSON: `application/json` or `application/*+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, with our problem format for bad query strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        "The query string is invalid",
    )
    .with_detail(rejection.body_text())
}

/// A key id from the URL. An id that is not even text (bad percent-encoding) is a 404 like any
/// other unknown id, in our problem format.
#[derive(Debug, Clone)]
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|_| AppError::not_found())
    }
}

/// A key id from the URL, parsed: an id that is not 32 hex digits names no key, so it is the
/// same 404 as an unknown one.
#[derive(Debug, Clone, Copy)]
pub struct KeyIdPath(pub KeyId);

impl<S: Send + Sync> FromRequestParts<S> for KeyIdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let IdPath(id) = IdPath::from_request_parts(parts, state).await?;
        KeyId::parse_hex(&id)
            .map(Self)
            .ok_or_else(AppError::not_found)
    }
}

/// The `limit` query parameter of a paged list, checked: `DEFAULT` when absent, else it must be
/// in `1..=MAX` (a 422 naming the field). The list's own `Query` still declares `limit`, since it
/// refuses parameters it does not know; this extractor reads that one parameter again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit<const DEFAULT: u32, const MAX: u32>(pub u32);

#[derive(serde::Deserialize)]
struct LimitParam {
    limit: Option<u32>,
}

impl<const DEFAULT: u32, const MAX: u32> PageLimit<DEFAULT, MAX> {
    /// `limit`, checked.
    pub fn check(limit: Option<u32>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT);
        if !(1..=MAX).contains(&limit) {
            return Err(
                AppError::validation(format!("limit must be between 1 and {MAX}"))
                    .with_field("field", "limit"),
            );
        }
        Ok(Self(limit))
    }
}

impl<S, const DEFAULT: u32, const MAX: u32> FromRequestParts<S> for PageLimit<DEFAULT, MAX>
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(LimitParam { limit }) =
            axum::extract::Query::try_from_uri(&parts.uri).map_err(|r| query_rejection(&r))?;
        Self::check(limit)
    }
}

/// The answer for a path no route has.
pub async fn route_not_found(uri: Uri) -> AppError {
    AppError::not_found().with_detail(format!("no route for {}", uri.path()))
}

/// The answer for a known path with an unsupported method.
pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct Disk;

    #[derive(Debug, thiserror::Error)]
    #[error("writing shard 3")]
    struct Write(#[source] Disk);

    #[test]
    fn an_internal_error_shows_its_cause_chain_and_keeps_it_as_source() {
        let e = AppError::internal_error(Write(Disk));
        assert_eq!(
            e.to_string(),
            "internal_error: Internal server error: writing shard 3: disk full"
        );
        let source = std::error::Error::source(&e).unwrap();
        assert_eq!(source.to_string(), "writing shard 3");
        let response = e.into_response();
        assert_eq!(
            response.extensions().get::<InternalCause>().unwrap().0,
            "writing shard 3: disk full"
        );
        let client = AppError::validation("name is required");
        assert_eq!(
            client.to_string(),
            "validation_failed: The request is invalid: name is required"
        );
        assert!(std::error::Error::source(&client).is_none());
    }
}
