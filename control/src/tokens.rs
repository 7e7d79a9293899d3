//! Management tokens API: a signed-in user creates, lists and revokes the `lnxm_` tokens that
//! scripts use. Creating and revoking need a dashboard session: a leaked token must not be able
//! to mint its own replacements. Listing works with either.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Via};
use crate::error::{AppError, IdPath, Json, Result};
use crate::events::Event;
use crate::secret::PlainToken;
use crate::state::AppState;
use crate::store::accounts::{self, TokenRow};
use crate::store::audit;

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

fn session_required(caller: &Caller) -> Result<()> {
    if caller.via == Via::Session {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "Sign in to the dashboard to manage tokens",
        )
        .with_detail("a management token cannot create or revoke management tokens"))
    }
}

fn parse_token_id(id: &str) -> Result<u64> {
    id.parse().map_err(|_| AppError::not_found())
}

/// `POST /v1/management-tokens`.
#[utoipa::path(
    post,
    path = "/v1/management-tokens",
    summary = "Create a management token (dashboard session only)",
    request_body = crate::tokens::CreateToken,
    responses(
        (status = 201, description = "Created; the token is shown this once.", body = crate::tokens::CreatedToken),
        (status = 401, description = "Missing or invalid credentials (RFC 6750).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 400, description = "Body is not valid JSON.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cross-site request, or called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> Result<Response> {
    session_required(&caller)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(
            AppError::validation("name is required, up to 100 characters")
                .with_field("field", "name"),
        );
    }
    let token = PlainToken::generate()?;
    let (hash, hint) = (token.hash(), token.hint());
    let now = state.clock.now();
    let account = caller.account_id;
    let record = state
        .store
        .write(move |tx| {
            let id = accounts::create_token(tx, account, &name, &hash, &hint, now)?;
            audit::record(
                tx,
                now,
                Some(account),
                &caller.actor,
                &Event::TokenCreated {
                    token_id: id,
                    name: Some(name),
                    hint,
                },
            )?;
            accounts::get_token(tx, account, id)?
                .ok_or_else(|| AppError::internal("token vanished"))
        })
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
        (status = 401, description = "Missing or invalid credentials (RFC 6750).", body = crate::openapi::Problem, content_type = "application/problem+json"),
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
        (status = 401, description = "Missing or invalid credentials (RFC 6750).", body = crate::openapi::Problem, content_type = "application/problem+json"),
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
    let account = caller.account_id;
    let row = state
        .store
        .write(move |tx| -> Result<_, AppError> {
            let row = accounts::get_token(tx, account, id)?.ok_or_else(AppError::not_found)?;
            if row.revoked_at.is_some() {
                return Ok(row);
            }
            accounts::revoke_token(tx, id, now)?;
            audit::record(
                tx,
                now,
                Some(account),
                &caller.actor,
                &Event::TokenRevoked {
                    token_id: id,
                    hint: row.hint.clone(),
                },
            )?;
            Ok(TokenRow {
                revoked_at: Some(now),
                ..row
            })
        })
        .await?;
    Ok(Json(row))
}
