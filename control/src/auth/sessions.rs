//! The signed-in user's sessions: list them, end one, end every other ("sign out everywhere"),
//! and the purge of sessions that ended by time.
//!
//! Only a dashboard session can call these: a management token acts for an account, not for a
//! user, and has no sessions. A session id that is not one of the caller's own (another user's,
//! another account's, a malformed one) answers 404, as one that does not exist.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::SESSION_COOKIE;
use super::caller::{Caller, SignedIn};
use crate::error::{AppError, IdPath, Json, Result};
use crate::events::{Event, SessionsEndedBy};
use crate::state::{AppState, Clock};
use crate::store::audit::{self, Actor};
use crate::store::sessions::{self, SessionRecord};
use crate::store::{Store, StoreError};

/// Longest user agent kept, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// The request's `User-Agent` as a session stores it: its first 256 bytes, each byte outside
/// printable ASCII shown as `?`, so no stored agent holds a control, format or bidi character
/// whatever the client sent.
pub fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .map(|v| {
            v.as_bytes()
                .iter()
                .take(MAX_USER_AGENT_BYTES)
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '?'
                    }
                })
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Why a session operation refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionOpError {
    /// The caller used a management token, which has no user and no sessions.
    #[error("sessions belong to a signed-in user: a management token has none")]
    SessionRequired,
    /// The caller has no session with this id (another user's included).
    #[error("no such session")]
    NotFound,
    /// The caller's own session ended while the request was on its way (another of the user's
    /// sessions ended it): it may end nothing.
    #[error("this session has ended")]
    Ended,
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<SessionOpError> for AppError {
    fn from(e: SessionOpError) -> Self {
        match e {
            SessionOpError::SessionRequired => AppError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "Sign in to the dashboard to manage your sessions",
            )
            .with_detail(e.to_string()),
            SessionOpError::NotFound => AppError::not_found(),
            SessionOpError::Ended => AppError::unauthenticated(),
            SessionOpError::Store(e) => e.into(),
        }
    }
}

/// The session of a signed-in caller, or `session_required`.
pub(crate) fn signed_in(caller: &Caller) -> Result<SignedIn, SessionOpError> {
    caller.session.ok_or(SessionOpError::SessionRequired)
}

/// The user's sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// Live sessions, newest first; `current` marks the caller's.
    pub data: Vec<SessionRecord>,
}

/// What ending sessions did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionsEnded {
    /// The sessions ended, oldest first (ended ones that were already past their time
    /// included).
    pub ended: Vec<u64>,
}

/// `GET /v1/sessions`: the signed-in user's live sessions.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    summary = "List your sessions (dashboard session only)",
    responses(
        (status = 200, description = "Your live sessions, newest first.", body = crate::auth::sessions::SessionList),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionList>> {
    let me = signed_in(&caller)?;
    let (now, idle) = (state.clock.now(), state.settings.session_idle);
    let data = state
        .store
        .read(move |c| sessions::list(c, me.user_id, Some(me.session_id), now, idle))
        .await?;
    Ok(Json(SessionList { data }))
}

/// Ends sessions of the caller's user in one transaction with their audit event: `which` picks
/// them. An empty pick writes nothing.
async fn end_sessions(
    state: &AppState,
    caller: Caller,
    reason: SessionsEndedBy,
    which: impl FnOnce(&crate::store::db::Db<'_>, SignedIn) -> Result<Vec<u64>, StoreError>
    + Send
    + 'static,
) -> Result<Vec<u64>, SessionOpError> {
    let me = signed_in(&caller)?;
    let now = state.clock.now();
    let (account, actor) = (caller.account_id, caller.actor);
    let ended = state
        .store
        .write(move |tx| -> Result<_, SessionOpError> {
            // Checked in the transaction: of two sessions ending each other at once, the first
            // to commit wins, and the one it ended ends nothing.
            if !sessions::exists(tx, me.session_id)? {
                return Err(SessionOpError::Ended);
            }
            let ended = which(tx, me)?;
            if !ended.is_empty() {
                let event = Event::SessionsEnded {
                    user_id: me.user_id,
                    session_ids: ended.clone(),
                    reason,
                };
                audit::record(tx, now, Some(account), &actor, &event)?;
            }
            Ok(ended)
        })
        .await?;
    Ok(ended)
}

/// `DELETE /v1/sessions/{id}`: ends one of the signed-in user's sessions.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    summary = "End one of your sessions (dashboard session only)",
    params(
        ("id" = u64, Path, minimum = 0, maximum = 9223372036854775807_i64, description = "A session id from `GET /v1/sessions`. Another user's session is 404."),
    ),
    responses(
        (status = 204, description = "Ended; it is signed out at its next request. Ending the caller's own session also clears its cookie."),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Cross-site request, or called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "You have no session with this id.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Response> {
    let me = signed_in(&caller)?;
    let id: u64 = id.parse().map_err(|_| SessionOpError::NotFound)?;
    let ended = end_sessions(&state, caller, SessionsEndedBy::User, move |tx, me| {
        Ok(if sessions::end(tx, me.user_id, id)? {
            vec![id]
        } else {
            Vec::new()
        })
    })
    .await?;
    if ended.is_empty() {
        return Err(SessionOpError::NotFound.into());
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if id == me.session_id {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_cookie()?);
    }
    Ok(response)
}

/// `DELETE /v1/sessions/others`: signs out everywhere else.
#[utoipa::path(
    delete,
    path = "/v1/sessions/others",
    summary = "End every other session of yours: sign out everywhere else (dashboard session only)",
    responses(
        (status = 200, description = "Every other session ended; each is signed out at its next request.", body = crate::auth::sessions::SessionsEnded),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Cross-site request, or called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn end_other_sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionsEnded>> {
    let ended = end_sessions(
        &state,
        caller,
        SessionsEndedBy::SignOutEverywhere,
        |tx, me| sessions::end_all_but(tx, me.user_id, Some(me.session_id)),
    )
    .await?;
    Ok(Json(SessionsEnded { ended }))
}

/// The `Set-Cookie` value that removes the session cookie.
pub(super) fn clear_cookie() -> Result<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .map_err(AppError::internal)
}

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Deletes sessions that ended by time, every [`PURGE_EVERY`], in batches of
/// [`sessions::PURGE_BATCH`] (one write each, so other writes interleave) until none is left.
/// Sign-in purges a batch too; this keeps rows of users who never sign in again from staying.
pub async fn purge_loop(store: Store, clock: Arc<dyn Clock>, idle: u64) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        loop {
            let now = clock.now();
            let purged = store
                .write(move |tx| sessions::purge(tx, now, idle, sessions::PURGE_BATCH))
                .await;
            match purged {
                Ok(n) if n >= sessions::PURGE_BATCH => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "purging ended sessions");
                    break;
                }
            }
        }
    }
}

/// The actor of an operator's command line.
pub(super) fn cli_actor() -> Actor {
    Actor {
        actor: "cli".into(),
        source: None,
    }
}
