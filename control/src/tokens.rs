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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (trimmed, 1 to 100 characters).
    pub name: String,
}

/// A new token, shown once.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    /// The token. Store it now: it is never shown again.
    pub token: PlainToken,
    /// Its record.
    #[serde(flatten)]
    pub record: TokenRow,
}

/// A list of tokens.
#[derive(Debug, Serialize)]
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
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Json<TokenList>> {
    let account = caller.account_id;
    let data = state
        .store
        .read(move |c| accounts::list_tokens(c, account))
        .await?;
    Ok(Json(TokenList { data }))
}

/// `POST /v1/management-tokens/{id}/revoke`: irreversible; twice is harmless.
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
