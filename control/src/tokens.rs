//! Management tokens API: a signed-in user creates, lists and revokes the `lnxm_` tokens that
//! scripts use. Creating and revoking need a dashboard session: a leaked token must not be able
//! to mint its own replacements. Listing works with either.
//!
//! The checks and transactions refuse with [`TokenOpError`], which becomes the API's answer in
//! one place, its `From` into [`AppError`].

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rusqlite::Transaction;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Via};
use crate::error::{AppError, IdPath, Json, Result};
use crate::events::Event;
use crate::secret::{HashedToken, PlainToken};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::{self, TokenRow};
use crate::store::audit::{self, Actor};

/// Why a management-token operation refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenOpError {
    /// The caller used a management token: only a dashboard session creates or revokes them.
    #[error("a management token cannot create or revoke management tokens")]
    SessionRequired,
    /// No token with this id in the caller's account (a malformed id included).
    #[error("no such management token")]
    NotFound,
    /// The name is empty, longer than 100 characters or holds control characters.
    #[error("name is required, up to 100 characters")]
    InvalidName,
    /// The token just created could not be read back in its own transaction.
    #[error("token vanished")]
    Vanished,
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<TokenOpError> for AppError {
    fn from(e: TokenOpError) -> Self {
        match e {
            TokenOpError::SessionRequired => AppError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "Sign in to the dashboard to manage tokens",
            )
            .with_detail("a management token cannot create or revoke management tokens"),
            TokenOpError::NotFound => AppError::not_found(),
            TokenOpError::InvalidName => {
                AppError::validation("name is required, up to 100 characters")
                    .with_field("field", "name")
            }
            TokenOpError::Vanished => AppError::internal_error(e),
            TokenOpError::Store(e) => e.into(),
        }
    }
}

/// Body of `POST /v1/management-tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (trimmed, 1 to 100 characters).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
}

/// A new token, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token. Store it now: it is never shown again.
    #[schema(value_type = String, pattern = "^lnxm_[0-9a-f]{64}$")]
    pub token: PlainToken,
    /// Its record.
    #[serde(flatten)]
    pub record: TokenRow,
}

/// A list of tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub data: Vec<TokenRow>,
}

fn session_required(caller: &Caller) -> Result<(), TokenOpError> {
    if caller.via == Via::Session {
        Ok(())
    } else {
        Err(TokenOpError::SessionRequired)
    }
}

fn parse_token_id(id: &str) -> Result<u64, TokenOpError> {
    id.parse().map_err(|_| TokenOpError::NotFound)
}

/// The name as stored: trimmed, 1 to 100 characters, no control characters.
fn check_name(name: &str) -> Result<String, TokenOpError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(TokenOpError::InvalidName);
    }
    Ok(name.to_owned())
}

/// Stores a new token's hash with its audit event; returns its record.
fn create(
    tx: &Transaction<'_>,
    account: u64,
    actor: &Actor,
    name: String,
    (hash, hint): (HashedToken, String),
    now: u64,
) -> Result<TokenRow, TokenOpError> {
    let id = accounts::create_token(tx, account, &name, &hash, &hint, now)?;
    audit::record(
        tx,
        now,
        Some(account),
        actor,
        &Event::TokenCreated {
            token_id: id,
            name: Some(name),
            hint,
        },
    )?;
    accounts::get_token(tx, account, id)?.ok_or(TokenOpError::Vanished)
}

/// Revokes token `id` of `account` with its audit event; a revoked token is left as it is.
fn revoke(
    tx: &Transaction<'_>,
    account: u64,
    actor: &Actor,
    id: u64,
    now: u64,
) -> Result<TokenRow, TokenOpError> {
    let row = accounts::get_token(tx, account, id)?.ok_or(TokenOpError::NotFound)?;
    if row.revoked_at.is_some() {
        return Ok(row);
    }
    accounts::revoke_token(tx, id, now)?;
    audit::record(
        tx,
        now,
        Some(account),
        actor,
        &Event::TokenRevoked {
            token_id: id,
            hint: row.hint.clone(),
        },
    )?;
    Ok(TokenRow {
        revoked_at: Some(now),
        ..row
    })
}

/// `POST /v1/management-tokens`.
#[utoipa::path(
    post,
    path = "/v1/management-tokens",
    summary = "Create a management token (dashboard session only)",
    request_body = crate::tokens::CreateToken,
    responses(
        (status = 201, description = "Created; the token is shown this once.", body = crate::tokens::CreatedToken),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        (status = 403, description = "Cross-site request, or called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> Result<Response> {
    session_required(&caller)?;
    let name = check_name(&body.name)?;
    let token = PlainToken::generate()?;
    let now = state.clock.now();
    let stored = (token.hash(), token.hint());
    let record = state
        .store
        .write(move |tx| create(tx, caller.account_id, &caller.actor, name, stored, now))
        .await?;
    let mut response = (StatusCode::CREATED, Json(CreatedToken { token, record })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v1/management-tokens`.
#[utoipa::path(
    get,
    path = "/v1/management-tokens",
    summary = "List management tokens",
    responses(
        (status = 200, description = "Tokens, newest first.", body = crate::tokens::TokenList),
        crate::openapi::Unauthenticated,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Json<TokenList>> {
    let account = caller.account_id;
    let data = state
        .store
        .read(move |c| accounts::list_tokens(c, account))
        .await?;
    Ok(Json(TokenList { data }))
}

/// `POST /v1/management-tokens/{id}/revoke`: irreversible; twice is harmless.
#[utoipa::path(
    post,
    path = "/v1/management-tokens/{id}/revoke",
    summary = "Revoke a management token (dashboard session only)",
    params(
        ("id" = u64, Path, minimum = 0, maximum = 9223372036854775807_i64),
    ),
    responses(
        (status = 200, description = "Revoked (twice is harmless).", body = crate::store::accounts::TokenRow),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Cross-site request, or called with a management token.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token in this account.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<TokenRow>> {
    let id = parse_token_id(&id)?;
    session_required(&caller)?;
    let now = state.clock.now();
    let row = state
        .store
        .write(move |tx| revoke(tx, caller.account_id, &caller.actor, id, now))
        .await?;
    Ok(Json(row))
}
