//! The keys API: create, list, get, update, revoke, rotate, and verify.
//!
//! Every change and its audit event commit in one `BEGIN IMMEDIATE` transaction. The key string
//! exists only in the create and rotate responses: the database keeps its id and a hint, the log
//! keeps the id. Another account's key is a 404 and nothing changes.
//!
//! `Idempotency-Key` on create: the first request with a key creates the API key and remembers
//! the request's hash. A replay with the same body answers `200` with the same key record and
//! `Idempotent-Replayed: true`, but without the key string, which is never stored and so cannot
//! be shown again; the same idempotency key with a different body is a `422`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::gate::{self, Denial};
use shared::key::{self, Claims, Environment, KeyId, PlainKey};
use shared::scope::{Permission, PolicyError, Scope, ScopeSet};

use crate::AppState;
use crate::auth::{Caller, random_bytes};
use crate::error::{AppError, IdPath, Json, Query, Result};
use crate::store::keys::{self as db, KeyRow, ListFilter};
use crate::store::{accounts, audit, revocations};

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest revoke reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// A key this old (seconds) is flagged `rotation_due`.
pub const ROTATION_DUE_AFTER: u64 = 90 * 86_400;
/// Longest rotation grace period (seconds).
pub const MAX_GRACE: u64 = 30 * 86_400;
/// How many retirement candidates the limit error lists.
const CANDIDATES: u32 = 5;

/// A key as the API shows it: never the key string.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyView {
    /// 32 hex digits.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Usage note.
    pub description: Option<String>,
    /// `development`, `staging` or `production`.
    pub environment: &'static str,
    /// `read_only`, `read_write`, `full_access` or `custom`.
    pub permission: &'static str,
    /// The scopes the key carries (`["*"]` for Full Access).
    pub scopes: Vec<&'static str>,
    /// Non-secret reminder of the key: prefix and last characters.
    pub hint: String,
    /// Requests per minute.
    pub rate_limit: u32,
    /// `active`, `expired`, `rotating` (revocation scheduled) or `revoked`.
    pub status: &'static str,
    /// Active and older than 90 days.
    pub rotation_due: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, or null: never expires.
    pub expires_at: Option<u64>,
    /// Unix seconds of the last use seen, if any.
    pub last_used_at: Option<u64>,
    /// When the revocation took (or takes) effect.
    pub revoked_at: Option<u64>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The revocation is in every published shard of this list version or newer.
    pub revocation_version: Option<u64>,
    /// The key this one replaced.
    pub rotated_from: Option<String>,
    /// The key that replaced this one.
    pub rotated_to: Option<String>,
    /// End of the grace period after a rotation.
    pub grace_until: Option<u64>,
}

fn status(k: &KeyRow, now: u64) -> &'static str {
    match (k.revoked_at, k.expires_at) {
        (Some(at), _) if at <= now => "revoked",
        (_, Some(exp)) if exp <= now => "expired",
        (Some(_), _) => "rotating",
        _ => "active",
    }
}

fn scope_names(scopes: ScopeSet) -> Vec<&'static str> {
    if scopes.is_full_access() {
        vec!["*"]
    } else {
        scopes.iter().map(Scope::name).collect()
    }
}

impl KeyView {
    /// The view of a stored key at `now`.
    pub fn new(k: &KeyRow, now: u64) -> Self {
        let status = status(k, now);
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            description: k.description.clone(),
            environment: k.environment.name(),
            permission: k.scopes.permission().name(),
            scopes: scope_names(k.scopes),
            hint: k.hint.clone(),
            rate_limit: k.rate_limit,
            status,
            rotation_due: status == "active" && now >= k.created_at + ROTATION_DUE_AFTER,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            revoke_reason: k.revoke_reason.clone(),
            revocation_version: k.revocation_version,
            rotated_from: k.rotated_from.map(|id| id.to_string()),
            rotated_to: k.rotated_to.map(|id| id.to_string()),
            grace_until: k.grace_until,
        }
    }
}

/// A new key with its secret: the only response that ever holds the key string.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// The full key. Shown once; store it now.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub record: KeyView,
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name (trimmed, 1 to 100 characters).
    pub name: String,
    /// Usage note (up to 1000 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// `development`, `staging` or `production`.
    pub environment: String,
    /// `read_only`, `read_write`, `full_access` or `custom`.
    pub permission: String,
    /// For `custom`: the scope names.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Unix seconds; absent: never expires.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub expires_at: Option<u64>,
    /// Requests per minute; absent: the plan's default.
    #[serde(default, deserialize_with = "whole::opt_u32")]
    pub rate_limit: Option<u32>,
}

/// A validated create request.
#[derive(Debug, Clone)]
struct KeySpec {
    name: String,
    description: Option<String>,
    environment: Environment,
    scopes: ScopeSet,
    expires_at: Option<u64>,
    rate_limit: Option<u32>,
}

fn clean_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::validation("name is required").with_field("field", "name"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::validation(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        ))
        .with_field("field", "name"));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::validation("name has control characters").with_field("field", "name"));
    }
    Ok(name.to_owned())
}

fn clean_description(description: Option<&str>) -> Result<Option<String>> {
    let Some(d) = description.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::validation(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        ))
        .with_field("field", "description"));
    }
    Ok(Some(d.to_owned()))
}

fn parse_environment(name: &str) -> Result<Environment> {
    Environment::from_name(name).ok_or_else(|| {
        AppError::validation("environment must be development, staging or production")
            .with_field("field", "environment")
    })
}

impl CreateKey {
    fn validate(&self, now: u64) -> Result<KeySpec> {
        let name = clean_name(&self.name)?;
        let description = clean_description(self.description.as_deref())?;
        let environment = parse_environment(&self.environment)?;
        let permission_error =
            |msg: &str| AppError::validation(msg.to_owned()).with_field("field", "permission");
        let scopes = match (self.permission.as_str(), &self.scopes) {
            ("custom", Some(names)) => {
                let set =
                    ScopeSet::from_names(names.iter().map(String::as_str)).map_err(|bad| {
                        AppError::validation(format!("unknown scope `{bad}`"))
                            .with_field("field", "scopes")
                            .with_field(
                                "known_scopes",
                                Scope::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
                            )
                    })?;
                if set == ScopeSet::EMPTY {
                    return Err(
                        AppError::validation("custom permission needs at least one scope")
                            .with_field("field", "scopes"),
                    );
                }
                set
            }
            ("custom", None) => return Err(permission_error("custom permission needs `scopes`")),
            (level, None) => match level {
                "read_only" => Permission::ReadOnly.scopes(),
                "read_write" => Permission::ReadWrite.scopes(),
                "full_access" => Permission::FullAccess.scopes(),
                _ => {
                    return Err(permission_error(
                        "permission must be read_only, read_write, full_access or custom",
                    ));
                }
            },
            (_, Some(_)) => {
                return Err(permission_error(
                    "`scopes` goes only with permission `custom`",
                ));
            }
        };
        if let Some(exp) = self.expires_at {
            if exp <= now {
                return Err(AppError::validation("expires_at must be in the future")
                    .with_field("field", "expires_at"));
            }
            if exp > now + 10 * 365 * 86_400 {
                return Err(AppError::validation("expires_at must be within ten years")
                    .with_field("field", "expires_at"));
            }
        }
        Ok(KeySpec {
            name,
            description,
            environment,
            scopes,
            expires_at: self.expires_at,
            rate_limit: self.rate_limit,
        })
    }
}

/// Whole numbers that JSON may spell `5` or `5.0` (JSON Schema calls both integers).
mod whole {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Number;

    fn of(n: &Number) -> Option<u64> {
        n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=9.007_199_254_740_992e15).contains(f))
                .map(|f| f as u64)
        })
    }

    fn expected<E: Error>() -> E {
        E::custom("expected a non-negative whole number")
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        of(&Number::deserialize(d)?).ok_or_else(expected)
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<Number>::deserialize(d)?
            .map(|n| of(&n).ok_or_else(expected))
            .transpose()
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        opt_u64(d)?
            .map(|n| u32::try_from(n).map_err(|_| expected()))
            .transpose()
    }
}

fn parse_id(id: &str) -> Result<KeyId> {
    KeyId::parse_hex(id).ok_or_else(AppError::not_found)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "The Idempotency-Key header is invalid",
        )
        .with_detail("use 1 to 255 visible ASCII characters, e.g. a UUID"));
    }
    Ok(Some(text.to_owned()))
}

fn limit_reached(active: u32, plan: &accounts::Plan, candidates: &[KeyRow], now: u64) -> AppError {
    let listed: Vec<_> = candidates
        .iter()
        .map(|k| {
            json!({
                "id": k.id.to_string(),
                "name": k.name,
                "hint": k.hint,
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "rotation_due": KeyView::new(k, now).rotation_due,
            })
        })
        .collect();
    AppError::new(
        StatusCode::CONFLICT,
        "active_key_limit_reached",
        "Active key limit reached",
    )
    .with_detail(format!(
        "{active} of {} keys are active; revoke a key you no longer use before creating another. \
         `candidates` lists the idle and oldest ones.",
        plan.max_active_keys
    ))
    .with_field("active_keys", active)
    .with_field("max_active_keys", plan.max_active_keys)
    .with_field("candidates", listed)
}

/// Checks the plan's bounds and returns the rate limit to store.
fn rate_limit(requested: Option<u32>, plan: &accounts::Plan) -> Result<u32> {
    match requested {
        None => Ok(plan.default_rate_limit),
        Some(r) if (1..=plan.max_rate_limit).contains(&r) => Ok(r),
        Some(_) => Err(AppError::validation(format!(
            "rate_limit must be between 1 and {} requests per minute on this plan",
            plan.max_rate_limit
        ))
        .with_field("field", "rate_limit")
        .with_field("max_rate_limit", plan.max_rate_limit)),
    }
}

/// Issues a key string for a new row; the string leaves this function only in the response.
fn mint(state: &AppState, row: &KeyRow) -> Result<PlainKey> {
    let claims = Claims {
        kid: row.kid,
        account_id: row.account_id,
        key_id: row.id,
        environment: row.environment,
        scopes: row.scopes,
        issued_at: row.created_at,
        expires_at: row.expires_at,
    };
    key::issue(&claims, &state.keyring).map_err(AppError::internal)
}

fn new_key_id() -> Result<KeyId> {
    let bytes = random_bytes()?;
    let mut id = [0_u8; 16];
    id.copy_from_slice(&bytes[..16]);
    Ok(KeyId(id))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

enum Created {
    New(Box<KeyRow>, PlainKey),
    Replayed(Box<KeyRow>),
}

/// `POST /v1/keys`.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CreateKey>,
) -> Result<Response> {
    let now = state.clock.now();
    let spec = body.validate(now)?;
    let idem = idempotency_key(&headers)?;
    let request_hash =
        Sha256::digest(serde_json::to_vec(&body).map_err(AppError::internal)?).to_vec();
    let id = new_key_id()?;
    let account = caller.account_id;
    let st = state.clone();
    let outcome = state
        .store
        .write(move |tx| {
            if let Some(idem) = &idem {
                if let Some((hash, key_id)) = db::idempotency_record(tx, account, idem)? {
                    if hash != request_hash {
                        return Err(AppError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "idempotency_key_reused",
                            "This Idempotency-Key was used with a different request",
                        ));
                    }
                    let row = db::get(tx, account, key_id)?.ok_or_else(AppError::not_found)?;
                    return Ok(Created::Replayed(Box::new(row)));
                }
            }
            let plan = accounts::plan(tx, account)?;
            let rate_limit = rate_limit(spec.rate_limit, &plan)?;
            let active = db::count_active(tx, account, now)?;
            if active >= plan.max_active_keys {
                let candidates = db::idle_or_oldest(tx, account, now, CANDIDATES)?;
                return Err(limit_reached(active, &plan, &candidates, now));
            }
            let mut row = KeyRow {
                id,
                account_id: account,
                name: spec.name,
                description: spec.description,
                environment: spec.environment,
                scopes: spec.scopes,
                kid: st.keyring.active_kid(),
                hint: String::new(),
                rate_limit,
                created_at: now,
                expires_at: spec.expires_at,
                last_used_at: None,
                revoked_at: None,
                revoke_reason: None,
                revocation_version: None,
                rotated_from: None,
                rotated_to: None,
                grace_until: None,
            };
            let plain = mint(&st, &row)?;
            row.hint = plain.hint();
            db::insert(tx, &row)?;
            if let Some(idem) = &idem {
                db::insert_idempotency(tx, account, idem, &request_hash, id, now)?;
            }
            audit::append(
                tx,
                now,
                Some(account),
                &caller.actor,
                "key.created",
                Some(&id.to_string()),
                &json!({
                    "name": row.name,
                    "environment": row.environment.name(),
                    "permission": row.scopes.permission().name(),
                    "scopes": scope_names(row.scopes),
                    "expires_at": row.expires_at,
                    "rate_limit": row.rate_limit,
                }),
            )?;
            Ok(Created::New(Box::new(row), plain))
        })
        .await?;
    Ok(match outcome {
        Created::New(row, plain) => {
            tracing::info!(key_id = %row.id, account_id = account, "key created");
            let body = CreatedKey {
                key: plain.into_inner(),
                record: KeyView::new(&row, now),
            };
            no_store((StatusCode::CREATED, Json(body)).into_response())
        }
        Created::Replayed(row) => {
            let mut response = Json(KeyView::new(&row, now)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    })
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys of this environment.
    pub environment: Option<String>,
    /// Only keys of this status: `active`, `expired`, `rotating`, `revoked`.
    pub status: Option<String>,
    /// Only keys whose name contains this (case-insensitive).
    pub search: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    pub cursor: Option<String>,
}

/// A list of keys.
#[derive(Debug, Serialize)]
pub struct KeyList {
    /// Newest first.
    pub data: Vec<KeyView>,
    /// Keys active now (counted against the plan).
    pub active_keys: u32,
    /// The plan's limit.
    pub max_active_keys: u32,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn parse_cursor(cursor: &str) -> Option<(u64, KeyId)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, KeyId::parse_hex(id)?))
}

/// `GET /v1/keys`.
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<KeyList>> {
    let now = state.clock.now();
    let environment = q
        .environment
        .as_deref()
        .map(parse_environment)
        .transpose()?;
    let status = match q.status.as_deref() {
        None => None,
        Some("active") => Some("active"),
        Some("expired") => Some("expired"),
        Some("rotating") => Some("rotating"),
        Some("revoked") => Some("revoked"),
        Some(_) => {
            return Err(AppError::validation(
                "status must be active, expired, rotating or revoked",
            )
            .with_field("field", "status"));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(
            AppError::validation("limit must be between 1 and 1000").with_field("field", "limit")
        );
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            parse_cursor(c).ok_or_else(|| {
                AppError::validation("cursor is not one this API returned")
                    .with_field("field", "cursor")
            })
        })
        .transpose()?;
    let search = q
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_NAME_CHARS)
    {
        return Err(AppError::validation("search is too long").with_field("field", "search"));
    }
    let filter = ListFilter {
        environment,
        search,
        status,
        after,
        limit,
    };
    let account = caller.account_id;
    let (rows, active, plan) = state
        .store
        .read(move |c| {
            Ok((
                db::list(c, account, &filter, now)?,
                db::count_active(c, account, now)?,
                accounts::plan(c, account)?,
            ))
        })
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.created_at, r.id)))
        .flatten();
    let data = rows.iter().map(|r| KeyView::new(r, now)).collect();
    Ok(Json(KeyList {
        data,
        active_keys: active,
        max_active_keys: plan.max_active_keys,
        next_cursor,
    }))
}

/// `GET /v1/keys/{id}`.
pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<KeyView>> {
    let id = parse_id(&id)?;
    let now = state.clock.now();
    let account = caller.account_id;
    let row = state
        .store
        .read(move |c| db::get(c, account, id))
        .await?
        .ok_or_else(AppError::not_found)?;
    Ok(Json(KeyView::new(&row, now)))
}

/// Body of `PATCH /v1/keys/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// New name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// New description; an empty string clears it.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
}

/// A PATCH field may be absent (unchanged) but not `null`: a client sending `null` to clear a
/// field would otherwise get a `200` with nothing changed. `null` is a 422, as the schema says.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// `PATCH /v1/keys/{id}`: name and description only; a key's powers never change after issue.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<UpdateKey>,
) -> Result<Json<KeyView>> {
    let id = parse_id(&id)?;
    if body.name.is_none() && body.description.is_none() {
        return Err(AppError::validation("send `name` and/or `description`"));
    }
    let name = body.name.as_deref().map(clean_name).transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| clean_description(Some(d)))
        .transpose()?;
    let now = state.clock.now();
    let account = caller.account_id;
    let row = state
        .store
        .write(move |tx| {
            let mut row = db::get(tx, account, id)?.ok_or_else(AppError::not_found)?;
            let before = json!({ "name": row.name, "description": row.description });
            if let Some(name) = name {
                row.name = name;
            }
            if let Some(description) = description {
                row.description = description;
            }
            db::update_details(tx, id, &row.name, row.description.as_deref())?;
            audit::append(
                tx,
                now,
                Some(account),
                &caller.actor,
                "key.updated",
                Some(&id.to_string()),
                &json!({
                    "before": before,
                    "after": { "name": row.name, "description": row.description },
                }),
            )?;
            Ok(row)
        })
        .await?;
    Ok(Json(KeyView::new(&row, now)))
}

/// Body of `POST /v1/keys/{id}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Why (recorded in the key and the audit trail).
    pub reason: String,
}

/// Answer of a revoke.
#[derive(Debug, Serialize)]
pub struct Revoked {
    /// The key, now revoked.
    pub key: KeyView,
    /// Every revocation-list shard of this version or newer carries the revocation.
    pub list_version: u64,
    /// Whether this call revoked it (false: it was already revoked).
    pub changed: bool,
}

fn clean_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::validation(format!(
            "reason is required, up to {MAX_REASON_CHARS} characters"
        ))
        .with_field("field", "reason"));
    }
    Ok(reason.to_owned())
}

/// `POST /v1/keys/{id}/revoke`: irreversible. A second revoke changes nothing and answers the
/// same. Revoking a key in its rotation grace period makes the revocation immediate.
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<RevokeKey>,
) -> Result<Json<Revoked>> {
    let id = parse_id(&id)?;
    let reason = clean_reason(&body.reason)?;
    let now = state.clock.now();
    let account = caller.account_id;
    let (row, version, changed) = state
        .store
        .write(move |tx| {
            let mut row = db::get(tx, account, id)?.ok_or_else(AppError::not_found)?;
            if let (Some(at), Some(version)) = (row.revoked_at, row.revocation_version) {
                if at <= now {
                    return Ok((row, version, false));
                }
            }
            let version = revocations::next_version(tx, now)?;
            db::set_revoked(tx, id, now, &reason, version, row.grace_until)?;
            revocations::enqueue(tx, id, version, now)?;
            audit::append(
                tx,
                now,
                Some(account),
                &caller.actor,
                "key.revoked",
                Some(&id.to_string()),
                &json!({ "reason": reason, "list_version": version }),
            )?;
            row.revoked_at = Some(now);
            row.revoke_reason = Some(reason);
            row.revocation_version = Some(version);
            Ok((row, version, true))
        })
        .await?;
    if changed {
        tracing::info!(key_id = %id, account_id = account, list_version = version, "key revoked");
        state.publish.wake();
    }
    Ok(Json(Revoked {
        key: KeyView::new(&row, now),
        list_version: version,
        changed,
    }))
}

/// Body of `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old key keeps working (0: revoked at once; at most 30 days).
    #[serde(deserialize_with = "whole::u64")]
    pub grace_period_seconds: u64,
}

/// Answer of a rotate.
#[derive(Debug, Serialize)]
pub struct Rotated {
    /// The new key, with its key string (shown once).
    pub key: CreatedKey,
    /// The old key, revoked at `grace_until`.
    pub previous: KeyView,
    /// Once the grace period ends, every shard of this version or newer carries the revocation.
    pub list_version: u64,
}

/// `POST /v1/keys/{id}/rotate`: a new key with the same settings; the old one is revoked when
/// the grace period ends. Both records link to each other.
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<RotateKey>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    if body.grace_period_seconds > MAX_GRACE {
        return Err(AppError::validation(format!(
            "grace_period_seconds must be at most {MAX_GRACE}"
        ))
        .with_field("field", "grace_period_seconds"));
    }
    let now = state.clock.now();
    let grace_until = now + body.grace_period_seconds;
    let new_id = new_key_id()?;
    let account = caller.account_id;
    let st = state.clone();
    let (old, new, plain, version) = state
        .store
        .write(move |tx| {
            let mut old = db::get(tx, account, id)?.ok_or_else(AppError::not_found)?;
            let state_now = status(&old, now);
            if state_now != "active" {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "key_not_active",
                    "Only an active key can be rotated",
                )
                .with_field("key_status", state_now));
            }
            let mut new = KeyRow {
                id: new_id,
                kid: st.keyring.active_kid(),
                created_at: now,
                rotated_from: Some(id),
                hint: String::new(),
                last_used_at: None,
                ..old.clone()
            };
            let plain = mint(&st, &new)?;
            new.hint = plain.hint();
            db::insert(tx, &new)?;
            let version = revocations::next_version(tx, now)?;
            db::set_revoked(tx, id, grace_until, "rotated", version, Some(grace_until))?;
            db::set_rotated_to(tx, id, new_id)?;
            revocations::enqueue(tx, id, version, grace_until)?;
            audit::append(
                tx,
                now,
                Some(account),
                &caller.actor,
                "key.rotated",
                Some(&id.to_string()),
                &json!({
                    "new_key_id": new_id.to_string(),
                    "grace_until": grace_until,
                    "list_version": version,
                }),
            )?;
            old.revoked_at = Some(grace_until);
            old.revoke_reason = Some("rotated".into());
            old.revocation_version = Some(version);
            old.grace_until = Some(grace_until);
            old.rotated_to = Some(new_id);
            Ok((old, new, plain, version))
        })
        .await?;
    tracing::info!(key_id = %id, new_key_id = %new_id, account_id = account, grace_until, "key rotated");
    state.publish.wake();
    let body = Rotated {
        key: CreatedKey {
            key: plain.into_inner(),
            record: KeyView::new(&new, now),
        },
        previous: KeyView::new(&old, now),
        list_version: version,
    };
    Ok(no_store((StatusCode::CREATED, Json(body)).into_response()))
}

/// Body of `POST /v1/keys/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// The API key to check.
    pub key: String,
    /// The method of the request the key came with.
    pub method: String,
    /// The path of that request (without query string).
    pub path: String,
    /// The environment the calling origin serves; a key of another environment is refused.
    #[serde(default)]
    pub environment: Option<String>,
}

/// The verdict: what the edge would have answered.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go ahead.
    pub valid: bool,
    /// The status the edge answers with when refusing (401, 403, 404, 405).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `invalid_token`, `insufficient_scope`, `not_found`, `method_not_allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For a key mistake that is safe to name (typo, expiry, environment): which one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// For `insufficient_scope`: the scope needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    /// The key's account (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<u64>,
    /// The key's id (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's environment (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<&'static str>,
    /// The key's scopes (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<&'static str>>,
}

impl Verdict {
    fn refuse(status: u16, code: &'static str) -> Self {
        Self {
            valid: false,
            status: Some(status),
            code: Some(code),
            reason: None,
            scope: None,
            account_id: None,
            key_id: None,
            environment: None,
            scopes: None,
        }
    }
}

/// The edge's answer to a denial, as a verdict.
fn verdict_of(denial: &Denial) -> Verdict {
    match denial {
        // Forged, tampered, unknown-signer and revoked keys look the same.
        Denial::Key(e) if e.is_forgery_class() => Verdict::refuse(401, "invalid_token"),
        Denial::Key(e) => Verdict {
            reason: Some(e.code()),
            ..Verdict::refuse(401, "invalid_token")
        },
        Denial::Revoked => Verdict::refuse(401, "invalid_token"),
        Denial::Policy(PolicyError::NoRoute) => Verdict::refuse(404, "not_found"),
        Denial::Policy(PolicyError::MethodNotAllowed { .. }) => {
            Verdict::refuse(405, "method_not_allowed")
        }
        Denial::Policy(PolicyError::InsufficientScope { needed }) => Verdict {
            scope: Some(needed.name()),
            ..Verdict::refuse(403, "insufficient_scope")
        },
        _ => Verdict::refuse(401, "invalid_token"),
    }
}

/// `POST /v1/keys/verify`: for origins not behind the edge. Runs `shared::gate::authenticate`,
/// the edge's decision, with the database's revocation state (which includes revocations not yet
/// published). Any authenticated caller may ask about any key: holding the key is what is
/// checked, and the answer reveals only the key's own claims.
pub async fn verify_key(
    State(state): State<AppState>,
    _caller: Caller,
    Json(body): Json<VerifyKey>,
) -> Result<Json<Verdict>> {
    let endpoint_env = body
        .environment
        .as_deref()
        .map(parse_environment)
        .transpose()?;
    let now = state.clock.now();
    if let (Some(expected), Ok(parsed)) = (endpoint_env, key::parse(&body.key)) {
        if parsed.environment != expected {
            return Ok(Json(Verdict {
                reason: Some("wrong_environment"),
                ..Verdict::refuse(401, "invalid_token")
            }));
        }
    }
    // The revocation lookup needs the key id, which only a verified key gives, and runs on the
    // store's threads; `gate::admit` then finishes the same decision the edge makes.
    let admission = match key::verify(&body.key, &state.keyring, now) {
        Ok(claims) => {
            let id = claims.key_id;
            let revoked = state
                .store
                .read(move |c| db::is_revoked(c, id, now))
                .await?;
            gate::admit(claims, revoked, &body.method, &body.path)
        }
        Err(e) => Err(Denial::Key(e)),
    };
    let verdict = match admission {
        Ok(admitted) => {
            let c = admitted.claims;
            Verdict {
                valid: true,
                status: None,
                code: None,
                reason: None,
                scope: None,
                account_id: Some(c.account_id),
                key_id: Some(c.key_id.to_string()),
                environment: Some(c.environment.name()),
                scopes: Some(scope_names(c.scopes)),
            }
        }
        Err(denial) => verdict_of(&denial),
    };
    Ok(Json(verdict))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::key::KeyError;

    #[test]
    fn denials_map_like_the_edge() {
        let forged = verdict_of(&Denial::Key(KeyError::BadTag));
        assert_eq!(forged, verdict_of(&Denial::Revoked));
        assert_eq!(forged.reason, None);
        let typo = verdict_of(&Denial::Key(KeyError::InvalidChecksum));
        assert_eq!(typo.reason, Some("invalid_checksum"));
        let scope = verdict_of(&Denial::Policy(PolicyError::InsufficientScope {
            needed: Scope::JobsWrite,
        }));
        assert_eq!((scope.status, scope.scope), (Some(403), Some("jobs:write")));
    }

    #[test]
    fn status_order() {
        let row = KeyRow {
            id: KeyId([1; 16]),
            account_id: 1,
            name: "n".into(),
            description: None,
            environment: Environment::Production,
            scopes: ScopeSet::FULL_ACCESS,
            kid: 1,
            hint: String::new(),
            rate_limit: 1,
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            revoke_reason: None,
            revocation_version: None,
            rotated_from: None,
            rotated_to: None,
            grace_until: None,
        };
        assert_eq!(status(&row, 10), "active");
        let rotating = KeyRow {
            revoked_at: Some(20),
            ..row.clone()
        };
        assert_eq!(status(&rotating, 10), "rotating");
        assert_eq!(status(&rotating, 20), "revoked");
        let expired = KeyRow {
            expires_at: Some(5),
            ..row
        };
        assert_eq!(status(&expired, 5), "expired");
        assert!(!KeyView::new(&expired, ROTATION_DUE_AFTER).rotation_due);
    }
}
