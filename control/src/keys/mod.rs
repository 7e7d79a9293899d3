//! The keys API: create, list, get, update, revoke and rotate (verify is `crate::verify`).
//!
//! - [`view`]: what the API shows of a key (never the key string), its [`KeyStatus`].
//! - [`request`]: the bodies and query the API takes, and their validation.
//! - `ops`: the transactions (create, update, revoke, rotate), one function each, refusing with
//!   [`KeyOpError`] (`error`), which becomes the API's answer in one place.
//!
//! The handlers here only tie them together: validate, run the transaction, answer. Every change
//! and its audit event commit in one `BEGIN IMMEDIATE` transaction. The key string exists only
//! in the create and rotate responses: the database keeps its id and a hint, the log keeps the
//! id. Another account's key is a 404 and nothing changes.
//!
//! `Idempotency-Key` on create: the first request with a key creates the API key and remembers
//! the request's hash. A replay with the same body answers `200` with the same key record and
//! `Idempotent-Replayed: true`, but without the key string, which is never stored and so cannot
//! be shown again; the same idempotency key with a different body is a `422`.

mod error;
pub(crate) mod ops;
pub mod request;
pub mod view;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use shared::key::KeyId;

pub use self::error::KeyOpError;
pub use self::ops::RETIRE_MIN_AGE;
use self::ops::{Created, NewKey, Rotation};
pub(crate) use self::request::parse_environment;
pub use self::request::{
    BulkRevokeKeys, CreateKey, DEFAULT_WINDOW, ListQuery, MAX_BULK_REVOKE, MAX_DESCRIPTION_CHARS,
    MAX_GRACE, MAX_NAME_CHARS, MAX_REASON_CHARS, RevokeKey, RotateKey, UpdateKey,
};
pub(crate) use self::view::scope_names;
pub use self::view::{
    BulkRevoked, CreatedKey, IDLE_AFTER, KeyList, KeyStatus, KeyView, ROTATION_DUE_AFTER,
    RetiredKeyView, Revoked, Rotated, SigningKeyRetired, SigningKeyState, SigningNotice,
};
use crate::auth::Caller;
use crate::error::{AppError, Json, KeyIdPath, Query, Result};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts;
use crate::store::keys as db;
use crate::store::signing;

/// Keys revoked by signing-key retirements that a list shows at most.
const RETIRED_KEYS_SHOWN: u32 = 200;
use crate::store::usage::KeyStats;

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /v1/keys`.
#[utoipa::path(
    post,
    path = "/v1/keys",
    summary = "Create a key",
    description = "Answers once with the full key. With an `Idempotency-Key`, a replay of the same body returns 200 with the same record and no key string (it is never stored); the same idempotency key with a different body is 422 `idempotency_key_reused`. Past the plan's key limit (keys in a rotation's grace period count) it is 409 `active_key_limit_reached` with `active_keys`, `rotating_keys`, `max_active_keys` and `candidates`.",
    request_body = crate::keys::request::CreateKey,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 201, description = "Created. The only response that contains the key string.", body = crate::keys::view::CreatedKey),
        (status = 200, description = "Idempotent replay: the same key's record, without the key string.", body = crate::keys::view::KeyView, headers(("Idempotent-Replayed" = String))),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        (status = 409, description = "The plan's active-key limit is reached; lists active count and candidates to retire.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CreateKey>,
) -> Result<Response> {
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
    let spec = body.validate(now)?;
    caller
        .may_manage(spec.scopes)
        .map_err(crate::auth::grant::key_grant_exceeded)?;
    let idem = request::idempotency_key(&headers)?;
    let request_hash =
        Sha256::digest(serde_json::to_vec(&body).map_err(AppError::internal)?).to_vec();
    let id = ops::new_key_id()?;
    let account = caller.account_id;
    let keyring = state.keyring.clone();
    let outcome = state
        .store
        .write(move |tx| {
            ops::create(
                tx,
                NewKey {
                    spec,
                    caller: &caller,
                    id,
                    keyring: &keyring,
                    idempotency: idem.map(|idem| (idem, request_hash)),
                    now_ms,
                },
            )
        })
        .await?;
    Ok(match outcome {
        Created::New(row, plain) => {
            tracing::info!(key_id = %row.id, account_id = account, "key created");
            state.publish.wake_limits();
            let body = CreatedKey {
                key: plain,
                record: KeyView::new(&row, now, &KeyStats::default(), state.keyring.active_kid()),
            };
            no_store((StatusCode::CREATED, Json(body)).into_response())
        }
        Created::Replayed(view) => {
            let mut response = Json(*view).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    })
}

/// `GET /v1/keys`.
#[utoipa::path(
    get,
    path = "/v1/keys",
    summary = "List keys",
    params(
        crate::keys::request::ListQuery,
    ),
    responses(
        (status = 200, description = "Keys, newest first.", body = crate::keys::view::KeyList),
        crate::openapi::Unauthenticated,
        crate::openapi::BadQuery,
        (status = 422, description = "Bad filter value.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
    limit: request::ListLimit,
) -> Result<Json<KeyList>> {
    let now = state.clock.now();
    let filter = q.filter(limit, now)?;
    let limit = filter.limit;
    let account = caller.account_id;
    let active = state.keyring.active_kid();
    let (rows, stats, counts, plan, (on_previous, retired)) = state
        .store
        .read(move |c| -> Result<_, StoreError> {
            let rows = db::list(c, account, &filter, now)?;
            let stats = view::stats_of(c, &rows, now)?;
            Ok((
                rows,
                stats,
                db::count_working(c, account, now)?,
                accounts::plan(c, account)?,
                (
                    signing::count_on_previous(c, account, active, now)?,
                    signing::retired_keys_of(c, account, RETIRED_KEYS_SHOWN)?,
                ),
            ))
        })
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.created_at, r.id)))
        .flatten();
    let none = KeyStats::default();
    let data = rows
        .iter()
        .map(|r| KeyView::new(r, now, stats.get(&r.id).unwrap_or(&none), active))
        .collect();
    Ok(Json(KeyList {
        data,
        active_keys: counts.working,
        rotating_keys: counts.rotating,
        max_active_keys: plan.max_active_keys,
        next_cursor,
        signing: SigningNotice {
            current_kid: active,
            keys_on_previous_kid: on_previous,
            retired_keys: retired.into_iter().map(Into::into).collect(),
        },
    }))
}

/// `GET /v1/keys/{id}`.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    summary = "Get a key",
    params(
        crate::error::KeyIdPath,
    ),
    responses(
        (status = 200, description = "The key.", body = crate::keys::view::KeyView),
        crate::openapi::Unauthenticated,
        crate::openapi::KeyNotFound,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
) -> Result<Json<KeyView>> {
    let now = state.clock.now();
    let account = caller.account_id;
    let active = state.keyring.active_kid();
    let view = state
        .store
        .read(move |c| {
            db::get(c, account, id)?
                .map(|row| view::view_of(c, &row, now, active))
                .transpose()
        })
        .await?
        .ok_or_else(AppError::not_found)?;
    Ok(Json(view))
}

/// `PATCH /v1/keys/{id}`: name, description and rate limit. The scopes, environment and expiry
/// are signed into the key and never change; the rate limit lives in the record and reaches the
/// edge through the limits outbox (a new policy version), so it changes without a new key.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    summary = "Rename, re-describe or re-limit a key",
    description = "The rate limit of a key that is not active (in a rotation's grace, revoked, expired) cannot change: 409 `key_not_active` (a key in grace shares its successor's limit). A revoked key changes no more at all: 409 `key_revoked`.",
    request_body = crate::keys::request::UpdateKey,
    params(
        crate::error::KeyIdPath,
    ),
    responses(
        (status = 200, description = "The key.", body = crate::keys::view::KeyView),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        crate::openapi::KeyNotFound,
        (status = 409, description = "The key is not active (`key_not_active`), or revoked (`key_revoked`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
    Json(body): Json<UpdateKey>,
) -> Result<Json<KeyView>> {
    let changes = body.validate()?;
    let now_ms = state.clock.now_ms();
    let active = state.keyring.active_kid();
    let account = caller.account_id;
    let (view, limit_changed) = state
        .store
        .write(move |tx| ops::update(tx, &caller, id, changes, now_ms, active))
        .await?;
    if limit_changed {
        tracing::info!(key_id = %id, account_id = account, "key rate limit changed");
        state.publish.wake_limits();
    }
    Ok(Json(view))
}

/// `POST /v1/keys/{id}/revoke`: irreversible. A second revoke changes nothing and answers the
/// same. Revoking a key in its rotation grace period makes the revocation immediate.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    summary = "Revoke a key (irreversible)",
    request_body = crate::keys::request::RevokeKey,
    params(
        crate::error::KeyIdPath,
    ),
    responses(
        (status = 200, description = "Revoked (or already revoked: `changed` false).", body = crate::keys::view::Revoked),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        crate::openapi::KeyNotFound,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
    Json(body): Json<RevokeKey>,
) -> Result<Json<Revoked>> {
    let reason = body.reason()?;
    let now = state.clock.now();
    let active = state.keyring.active_kid();
    let account = caller.account_id;
    let (view, version, changed) = state
        .store
        .write(move |tx| ops::revoke(tx, &caller, id, reason, now, active))
        .await?;
    if changed {
        tracing::info!(key_id = %id, account_id = account, list_version = version, "key revoked");
        state.publish.wake();
    }
    Ok(Json(Revoked {
        key: view,
        list_version: version,
        changed,
    }))
}

/// `POST /v1/keys/bulk-revoke`: several keys with one reason, all or none, in one
/// transaction (so one answer for the set, and no half-revoked set if anything refuses).
#[utoipa::path(
    post,
    path = "/v1/keys/bulk-revoke",
    summary = "Revoke several keys at once (irreversible)",
    description = "Revokes 1 to 100 keys with one reason, all in one transaction. If any id names no key of this account (another account's key included: the same answer), nothing is revoked: 404 `not_found` with `unknown_ids`. A key beyond a management token's key grant refuses the whole set (403). Keys already revoked answer `changed: false`, so a replay changes nothing.",
    request_body = crate::keys::request::BulkRevokeKeys,
    responses(
        (status = 200, description = "Every key revoked (or already revoked), one entry per id in order.", body = crate::keys::view::BulkRevoked),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        (status = 404, description = "Some ids name no key of this account; none was revoked. `unknown_ids` lists them.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn bulk_revoke_keys(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<BulkRevokeKeys>,
) -> Result<Json<BulkRevoked>> {
    let (ids, reason) = body.validate()?;
    let now = state.clock.now();
    let active = state.keyring.active_kid();
    let account = caller.account_id;
    let outcomes = state
        .store
        .write(move |tx| ops::revoke_many(tx, &caller, &ids, &reason, now, active))
        .await?;
    let mut revoked = 0;
    let data = outcomes
        .into_iter()
        .map(|(key, list_version, changed)| {
            if changed {
                revoked += 1;
                tracing::info!(key_id = %key.id, account_id = account, list_version, "key revoked (bulk)");
            }
            Revoked {
                key,
                list_version,
                changed,
            }
        })
        .collect();
    if revoked > 0 {
        state.publish.wake();
    }
    Ok(Json(BulkRevoked { data, revoked }))
}

/// `POST /v1/keys/{id}/rotate`: a new key with the same settings; the old one is revoked when
/// the grace period ends. Both records link to each other.
///
/// Rotation never multiplies an account's keys or quota: the new key spends the same rate-limit
/// budget as the old one (its chain's first key's, `rate_limit_budget`); a key in its grace
/// counts against the plan until the grace ends; and a chain has at most one key in grace, so
/// rotating the new key again ends the old key's grace at once (revoked now, and published).
/// Rotating works at the cap: the account's number of budgets does not change.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    summary = "Rotate a key",
    description = "A new key with the same settings; the old one works until `grace_until`. Rotation never multiplies an account's keys or quota: both keys spend one rate-limit budget (`rate_limit_budget`), the old key counts against the plan's key limit until its grace ends, and a chain keeps at most one key in grace (rotating the new key again revokes the old one at once). Rotating works at the plan's key limit. The answer waits (up to 2 s) for the edge to acknowledge the new key's budget; `rate_limit_pending` says whether it did.",
    request_body = crate::keys::request::RotateKey,
    params(
        crate::error::KeyIdPath,
    ),
    responses(
        (status = 201, description = "The new key (with its key string) and the old one.", body = crate::keys::view::Rotated),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        crate::openapi::KeyNotFound,
        (status = 409, description = "The key is not active.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
    Json(body): Json<RotateKey>,
) -> Result<Response> {
    let grace = body.grace()?;
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
    let new_id = ops::new_key_id()?;
    let account = caller.account_id;
    let keyring = state.keyring.clone();
    let Rotation {
        old,
        new,
        plain,
        list_version,
    } = state
        .store
        .write(move |tx| ops::rotate(tx, &caller, &keyring, id, new_id, grace, now_ms))
        .await?;
    let grace_until = now + grace;
    tracing::info!(key_id = %id, new_key_id = %new_id, account_id = account, grace_until, "key rotated");
    state.publish.wake();
    state.publish.wake_limits();
    // The key string leaves only once the edge knows the new key spends its chain's budget
    // (or after the configured wait: `rate_limit_pending` then says it does not yet).
    let pending = wait_for_limit_push(&state, new_id).await?;
    let mut record = KeyView::new(&new, now, &KeyStats::default(), state.keyring.active_kid());
    record.rate_limit_pending = pending;
    let body = Rotated {
        key: CreatedKey { key: plain, record },
        previous: old,
        list_version,
    };
    Ok(no_store((StatusCode::CREATED, Json(body)).into_response()))
}

/// Waits up to `Settings::limits_sync_wait` for the edge to acknowledge `key`'s policy; returns
/// whether it still waits.
async fn wait_for_limit_push(state: &AppState, key: KeyId) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + state.settings.limits_sync_wait;
    let key = key.to_string();
    loop {
        let id = key.clone();
        let pending = state
            .store
            .read(move |c| crate::store::limits::is_pending(c, &id))
            .await?;
        if !pending || tokio::time::Instant::now() >= deadline {
            return Ok(pending);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
