//! Management tokens API: a signed-in user creates, lists and revokes the `lnxm_` tokens that
//! scripts use.
//!
//! A token holds admin scopes (`auth::grant::AdminScope`: the least a script needs), a key
//! grant (the most the keys it manages may carry) and an expiry (the plan's default when none
//! is named, never past the plan's maximum). Creating one needs a dashboard session *and* the
//! user's password again (`auth::reauth`, under the sign-in budgets); an account keeps at most
//! the plan's number of working tokens. Revoking needs a session. A token can list tokens with
//! `tokens:read`, and never create or revoke one: a leaked token cannot mint its replacements
//! or widen itself (`docs/security.md`).
//!
//! The checks and transactions refuse with [`TokenOpError`], which becomes the API's answer in
//! one place, its `From` into [`AppError`].

use crate::store::db::Db;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::scope::{Permission, PermissionError, Scope, ScopeSet};

use crate::auth::grant::{AdminScope, AdminScopes};
use crate::auth::{Caller, reauth};
use crate::error::{AppError, IdPath, Json, PageLimit, Query, Result};
use crate::events::Event;
use crate::secret::{HashedToken, PlainToken};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::sessions;
use crate::store::tokens::{self as db, NewToken, TokenPlan, TokenRow};

/// Why a management-token operation refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenOpError {
    /// No token with this id in the caller's account (a malformed id included).
    #[error("no such management token")]
    NotFound,
    /// The name is empty or longer than 100 characters.
    #[error("name is required, up to 100 characters")]
    InvalidName,
    /// The account already has its plan's number of working tokens.
    #[error("management token limit reached ({active} of {max})")]
    LimitReached {
        /// Working tokens.
        active: u32,
        /// The plan's limit.
        max: u32,
    },
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
            TokenOpError::NotFound => AppError::not_found(),
            TokenOpError::InvalidName => {
                AppError::validation("name is required, up to 100 characters")
                    .with_field("field", "name")
            }
            TokenOpError::LimitReached { active, max } => AppError::new(
                StatusCode::CONFLICT,
                "token_limit_reached",
                "The plan's management token limit is reached",
            )
            .with_detail(format!(
                "{active} of {max} tokens work now: revoke one you no longer use (expired and \
                 revoked tokens do not count)"
            ))
            .with_field("active_tokens", active)
            .with_field("max_tokens", max),
            TokenOpError::Vanished => AppError::internal_error(e),
            TokenOpError::Store(e) => e.into(),
        }
    }
}

/// Body of `POST /v1/management-tokens`.
// Its `Debug` leaves the password out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (trimmed, 1 to 100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The signed-in user's password, asked again (a wrong one counts against the sign-in
    /// budgets of their email).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// Admin scopes, at least one: `account:read`, `keys:read`, `keys:write`, `keys:verify`,
    /// `usage:read`, `audit:read`, `tokens:read`.
    #[schema(schema_with = crate::openapi::admin_scopes)]
    pub scopes: Vec<String>,
    /// The most the keys the token creates, rotates, changes or revokes may carry:
    /// `read_only` (default), `read_write`, `full_access` or `custom` (with
    /// `key_grant_scopes`). Only Full Access may manage Full Access keys.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::permission_or_null)]
    pub key_grant: Option<String>,
    /// For a `custom` key grant: API scope names.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::scopes_or_null)]
    pub key_grant_scopes: Option<Vec<String>>,
    /// Unix seconds, in the future and within the plan's maximum lifetime (standard: a year);
    /// absent: the plan's default lifetime (standard: 30 days).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub expires_at: Option<u64>,
    /// `true`: the token never expires, only on a plan without a maximum lifetime (else 422).
    #[serde(default)]
    pub never_expires: bool,
}

impl std::fmt::Debug for CreateToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("key_grant", &self.key_grant)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A checked create request.
#[derive(Debug)]
struct TokenSpec {
    name: String,
    scopes: AdminScopes,
    key_grant: ScopeSet,
    /// Decided in the transaction, with the plan.
    expiry: Expiry,
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Default,
    At(u64),
    Never,
}

impl CreateToken {
    fn validate(&self, now: u64) -> Result<TokenSpec> {
        let name = check_name(&self.name)?;
        let scopes =
            AdminScopes::from_names(self.scopes.iter().map(String::as_str)).map_err(|bad| {
                AppError::validation(format!("unknown admin scope `{bad}`"))
                    .with_field("field", "scopes")
                    .with_field(
                        "known_scopes",
                        AdminScope::ALL.map(AdminScope::name).to_vec(),
                    )
            })?;
        if scopes == AdminScopes::default() {
            return Err(
                AppError::validation("scopes needs at least one admin scope")
                    .with_field("field", "scopes"),
            );
        }
        let level = self.key_grant.as_deref().unwrap_or("read_only");
        let names = self
            .key_grant_scopes
            .as_ref()
            .map(|n| n.iter().map(String::as_str));
        let key_grant = match Permission::parse(level, names) {
            Ok(p) => p.scopes(),
            Err(e @ PermissionError::UnknownScope(_)) => {
                return Err(AppError::validation(e.to_string())
                    .with_field("field", "key_grant_scopes")
                    .with_field(
                        "known_scopes",
                        Scope::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
                    ));
            }
            Err(e @ (PermissionError::NoScopes | PermissionError::UnexpectedScopes)) => {
                return Err(
                    AppError::validation(e.to_string()).with_field("field", "key_grant_scopes")
                );
            }
            Err(e) => {
                return Err(AppError::validation(e.to_string()).with_field("field", "key_grant"));
            }
        };
        let expiry = match (self.expires_at, self.never_expires) {
            (Some(_), true) => {
                return Err(AppError::validation(
                    "send either expires_at or never_expires, not both",
                )
                .with_field("field", "never_expires"));
            }
            (Some(at), false) if at <= now => {
                return Err(AppError::validation("expires_at must be in the future")
                    .with_field("field", "expires_at"));
            }
            (Some(at), false) => Expiry::At(at),
            (None, true) => Expiry::Never,
            (None, false) => Expiry::Default,
        };
        Ok(TokenSpec {
            name,
            scopes,
            key_grant,
            expiry,
        })
    }
}

/// The expiry `spec` gets under `plan` at `now`, or the 422 that says why not.
fn expiry_under(expiry: Expiry, plan: TokenPlan, now: u64) -> Result<Option<u64>> {
    match (expiry, plan.max_ttl) {
        (Expiry::Default, _) => Ok(Some(now.saturating_add(plan.default_ttl))),
        (Expiry::Never, None) => Ok(None),
        (Expiry::Never, Some(max)) => Err(AppError::validation(format!(
            "this plan's tokens expire: at most {max} s from now"
        ))
        .with_field("field", "never_expires")
        .with_field("max_ttl", max)),
        (Expiry::At(at), Some(max)) if at > now.saturating_add(max) => Err(AppError::validation(
            format!("expires_at must be within {max} s from now on this plan"),
        )
        .with_field("field", "expires_at")
        .with_field("max_ttl", max)),
        (Expiry::At(at), _) => Ok(Some(at)),
    }
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

/// Query of `GET /v1/management-tokens`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    #[param(pattern = r"^[0-9]{1,19}$")]
    pub cursor: Option<String>,
}

/// `GET /v1/management-tokens` pages: 100 tokens by default, at most 1000.
type TokenListLimit = PageLimit<100, 1000>;

/// A page of tokens.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub data: Vec<TokenRow>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Tokens that work now (unrevoked, unexpired), counted against `max_tokens`.
    pub active_tokens: u32,
    /// The plan's token limits.
    pub plan: TokenPlan,
}

fn parse_token_id(id: &str) -> Result<u64, TokenOpError> {
    id.parse().map_err(|_| TokenOpError::NotFound)
}

/// The name as stored: trimmed, 1 to 100 characters, no control, format or invisible
/// characters (`crate::text`).
fn check_name(name: &str) -> Result<String> {
    crate::text::guard("name", name)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(TokenOpError::InvalidName.into());
    }
    Ok(name.to_owned())
}

/// Stores a new token's hash with its audit event, if the account is under its plan's cap
/// (counted in the write transaction, so concurrent creates never pass it); returns its record.
fn create(
    tx: &Db<'_>,
    account: u64,
    actor: &Actor,
    spec: TokenSpec,
    (hash, hint): (HashedToken, String),
    now: u64,
) -> Result<TokenRow> {
    let plan = db::plan(tx, account)?;
    let expires_at = expiry_under(spec.expiry, plan, now)?;
    let active = db::count_working(tx, account, now)?;
    if active >= plan.max_tokens {
        return Err(TokenOpError::LimitReached {
            active,
            max: plan.max_tokens,
        }
        .into());
    }
    let token = NewToken {
        account_id: account,
        name: &spec.name,
        hash: &hash,
        hint: &hint,
        scopes: spec.scopes,
        key_grant: spec.key_grant,
        expires_at,
    };
    let id = db::create(tx, &token, now)?;
    let record = db::get(tx, account, id, now)?.ok_or(TokenOpError::Vanished)?;
    let grant = serde_json::json!({
        "scopes": record.scopes,
        "key_grant": record.key_grant,
        "key_grant_scopes": record.key_grant_scopes,
        "expires_at": record.expires_at,
    });
    audit::record(
        tx,
        now,
        Some(account),
        actor,
        &Event::TokenCreated {
            token_id: id,
            name: Some(spec.name),
            hint,
            grant: Some(grant),
        },
    )?;
    Ok(record)
}

/// Revokes token `id` of `account` with its audit event; a revoked token is left as it is.
fn revoke(
    tx: &Db<'_>,
    account: u64,
    actor: &Actor,
    id: u64,
    now: u64,
) -> Result<TokenRow, TokenOpError> {
    let row = db::get(tx, account, id, now)?.ok_or(TokenOpError::NotFound)?;
    if row.revoked_at.is_some() {
        return Ok(row);
    }
    db::revoke(tx, id, now)?;
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
        status: "revoked",
        ..row
    })
}

/// `POST /v1/management-tokens`.
#[utoipa::path(
    post,
    path = "/v1/management-tokens",
    summary = "Create a management token (dashboard session and password)",
    description = "Needs a dashboard session and the user's password (`password`): a wrong one is 403 `wrong_password` and counts against the sign-in budgets of the user's email (429 `too_many_sign_in_attempts` when spent). Past the plan's number of working tokens it is 409 `token_limit_reached` with `active_tokens` and `max_tokens`. A management token is refused (403 `session_required`).",
    request_body = crate::tokens::CreateToken,
    responses(
        (status = 201, description = "Created; the token is shown this once.", body = crate::tokens::CreatedToken),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        (status = 403, description = "Cross-site request, called with a management token (`session_required`), or a wrong password (`wrong_password`: it counts against the sign-in limits).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The plan's management token limit is reached (`token_limit_reached`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The sign-in budgets of the user's email are spent, or every password-hashing slot is taken (Retry-After).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("session" = [])),
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    parts: Parts,
    Json(body): Json<CreateToken>,
) -> Result<Response> {
    let now = state.clock.now();
    let spec = body.validate(now)?;
    // The extractor admits only sessions here (`routes::operations`); a session has a user.
    let user = caller
        .user_id()
        .ok_or_else(crate::auth::grant::session_required)?;
    reauth::confirm_password(
        &state,
        &parts,
        caller.account_id,
        user,
        &caller.actor,
        body.password,
    )
    .await?;
    let token = PlainToken::generate()?;
    let stored = (token.hash(), token.hint());
    let now = state.clock.now();
    let session = caller.session.map(|s| s.session_id);
    let record = state
        .store
        .write(move |tx| {
            // The session that asked may have been ended while the password was checked (sign
            // out everywhere, a password change): then it mints nothing.
            if let Some(id) = session
                && !sessions::exists(tx, id)?
            {
                return Err(AppError::unauthenticated());
            }
            create(tx, caller.account_id, &caller.actor, spec, stored, now)
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
    params(crate::tokens::TokenListQuery),
    responses(
        (status = 200, description = "Tokens, newest first, a page at a time.", body = crate::tokens::TokenList),
        crate::openapi::Unauthenticated,
        crate::openapi::BadQuery,
        (status = 422, description = "Bad limit or cursor.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TokenListQuery>,
    PageLimit(limit): TokenListLimit,
) -> Result<Json<TokenList>> {
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                AppError::validation("cursor is not one this API returned")
                    .with_field("field", "cursor")
            })
        })
        .transpose()?;
    let account = caller.account_id;
    let now = state.clock.now();
    let (data, active_tokens, plan) = state
        .store
        .read(move |c| -> Result<_, StoreError> {
            Ok((
                db::list(c, account, before, limit, now)?,
                db::count_working(c, account, now)?,
                db::plan(c, account)?,
            ))
        })
        .await?;
    let next_cursor = (data.len() == limit as usize)
        .then(|| data.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(TokenList {
        data,
        next_cursor,
        active_tokens,
        plan,
    }))
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
        (status = 200, description = "Revoked (twice is harmless).", body = crate::store::tokens::TokenRow),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Cross-site request, or called with a management token (`session_required`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token in this account.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("session" = [])),
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<TokenRow>> {
    let id = parse_token_id(&id)?;
    let now = state.clock.now();
    let row = state
        .store
        .write(move |tx| revoke(tx, caller.account_id, &caller.actor, id, now))
        .await?;
    Ok(Json(row))
}
