//! The audit-trail API: an account reads its own events, newest first. Writing happens in the
//! store, in the transaction of each change (`store::audit`).

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{AppError, Json, PageLimit, Query, Result};
use crate::state::AppState;
use crate::store::audit::{self, AuditEvent};

/// Query of `GET /v1/audit-events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events before this sequence number (for paging). Read as text so a number too
    /// large for any sequence number means "no bound" rather than a parse error.
    pub before: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events about this target (a key id, a token id).
    pub target: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The events, newest first.
    pub data: Vec<AuditEvent>,
    /// Pass as `before` for the next page; absent on the last page.
    #[schema(required = true)]
    pub next_before: Option<u64>,
}

/// `GET /v1/audit-events` pages: 100 events by default, at most 1000.
type AuditLimit = PageLimit<100, 1000>;

/// `GET /v1/audit-events`.
#[utoipa::path(
    get,
    path = "/v1/audit-events",
    summary = "Read the account's audit trail",
    params(
        ("before" = Option<u64>, Query, description = "Only events with a smaller sequence number (paging); any larger number means no bound.", minimum = 0),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000),
        ("target" = Option<String>, Query, description = "Only events about this target: a key id (32 hex digits) or a management token id.", max_length = 64, min_length = 1),
    ),
    responses(
        (status = 200, description = "Events, newest first.", body = crate::audit::AuditPage),
        crate::openapi::Unauthenticated,
        crate::openapi::BadQuery,
        (status = 422, description = "Bad limit or target.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
    PageLimit(limit): AuditLimit,
) -> Result<Json<AuditPage>> {
    let before = match q.before.as_deref() {
        None => None,
        Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
            Some(b.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(_) => {
            return Err(AppError::validation("before must be a sequence number")
                .with_field("field", "before"));
        }
    };
    if q.target
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 64)
    {
        return Err(
            AppError::validation("target must be 1 to 64 characters").with_field("field", "target")
        );
    }
    let account = caller.account_id;
    let data = state
        .store
        .read(move |c| audit::list(c, account, q.target.as_deref(), before, limit))
        .await?;
    let next_before = (data.len() == limit as usize)
        .then(|| data.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { data, next_before }))
}
