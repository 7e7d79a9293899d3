//! The keys API: create, list, get, update, revoke and rotate (verify is in `crate::verify`).
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
use shared::key::{self, Claims, Environment, KeyId, PlainKey};
use shared::scope::{Permission, Scope, ScopeSet};

use crate::AppState;
use crate::auth::{Caller, random_bytes};
use crate::error::{AppError, IdPath, Json, Query, Result};
use crate::store::keys::{self as db, KeyRow, ListFilter};
use crate::store::usage::{self as usage_db, KeyStats};
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
/// A key neither used nor created for this long (seconds) is `idle`; scope use is observed over
/// the same span.
pub const IDLE_AFTER: u64 = 30 * 86_400;
/// The window a rate limit gets when none is given, seconds (plans express limits per minute).
pub const DEFAULT_WINDOW: u32 = 60;
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
    /// Requests per `rate_limit_window` seconds.
    pub rate_limit: u32,
    /// The rate limit's window, seconds (fixed windows aligned to the Unix epoch).
    pub rate_limit_window: u32,
    /// The edge has not acknowledged the current rate limit yet.
    pub rate_limit_pending: bool,
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
    /// Client address of the last use.
    pub last_used_ip: Option<String>,
    /// `User-Agent` of the last use.
    pub last_used_user_agent: Option<String>,
    /// Requests in the last 24 hours (every outcome).
    pub requests_24h: u64,
    /// Active, and neither used nor created in the last 30 days.
    pub idle: bool,
    /// Scopes the key holds (every catalog scope for Full Access) with no allowed request since
    /// `unused_scopes_since`: candidates to narrow the key.
    pub unused_scopes: Vec<&'static str>,
    /// Unix seconds: the later of the key's creation and 30 days ago.
    pub unused_scopes_since: u64,
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
    /// The key whose rate limit this key spends at the edge: the first key of its rotation
    /// chain (its own id for a key that was created). A key and its successor in grace show the
    /// same value: they share one budget.
    pub rate_limit_budget: String,
}

fn status(k: &KeyRow, now: u64) -> &'static str {
    match (k.revoked_at, k.expires_at) {
        // In force is final: a revoke stamped by a clock that ran fast is still revoked once
        // the clock is corrected, not "rotating".
        (Some(_), _) if k.revocation_in_force => "revoked",
        (Some(at), _) if at <= now => "revoked",
        (_, Some(exp)) if exp <= now => "expired",
        (Some(_), _) => "rotating",
        _ => "active",
    }
}

pub(crate) fn scope_names(scopes: ScopeSet) -> Vec<&'static str> {
    if scopes.is_full_access() {
        vec!["*"]
    } else {
        scopes.iter().map(Scope::name).collect()
    }
}

fn rotation_due(k: &KeyRow, now: u64) -> bool {
    status(k, now) == "active" && now >= k.created_at + ROTATION_DUE_AFTER
}

impl KeyView {
    /// The view of a stored key at `now`, with its recent use.
    pub fn new(k: &KeyRow, now: u64, stats: &KeyStats) -> Self {
        let status = status(k, now);
        let idle_since = now.saturating_sub(IDLE_AFTER);
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            description: k.description.clone(),
            environment: k.environment.name(),
            permission: k.scopes.permission().name(),
            scopes: scope_names(k.scopes),
            hint: k.hint.clone(),
            rate_limit: k.rate_limit,
            rate_limit_window: k.rate_limit_window,
            rate_limit_pending: k.limit_pending,
            status,
            rotation_due: rotation_due(k, now),
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            last_used_ip: k.last_used_ip.clone(),
            last_used_user_agent: k.last_used_user_agent.clone(),
            requests_24h: stats.requests_24h,
            idle: status == "active"
                && k.created_at < idle_since
                && k.last_used_at.is_none_or(|at| at < idle_since),
            unused_scopes: k
                .scopes
                .iter()
                .filter(|s| !stats.used_scopes.contains(s.name()))
                .map(Scope::name)
                .collect(),
            unused_scopes_since: k.created_at.max(idle_since),
            revoked_at: k.revoked_at,
            revoke_reason: k.revoke_reason.clone(),
            revocation_version: k.revocation_version,
            rotated_from: k.rotated_from.map(|id| id.to_string()),
            rotated_to: k.rotated_to.map(|id| id.to_string()),
            grace_until: k.grace_until,
            rate_limit_budget: k.budget_id.to_string(),
        }
    }
}

/// Recent use of each key in `rows`, with grouped queries (not one per key).
fn stats_of(
    conn: &rusqlite::Connection,
    rows: &[KeyRow],
    now: u64,
) -> Result<std::collections::HashMap<KeyId, KeyStats>> {
    let ids: Vec<KeyId> = rows.iter().map(|r| r.id).collect();
    usage_db::key_stats(conn, &ids, now, now.saturating_sub(IDLE_AFTER))
}

/// The view of one stored key, with its recent use read from `conn`.
fn view_of(conn: &rusqlite::Connection, row: &KeyRow, now: u64) -> Result<KeyView> {
    let stats = stats_of(conn, std::slice::from_ref(row), now)?;
    Ok(KeyView::new(
        row,
        now,
        stats.get(&row.id).unwrap_or(&KeyStats::default()),
    ))
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
    /// Requests per `rate_limit_window`; absent: the plan's default rate for that window.
    #[serde(default, deserialize_with = "whole::opt_u32")]
    pub rate_limit: Option<u32>,
    /// Seconds, 1 to 86400; absent: 60. (Absent from the idempotency hash when absent, so a
    /// request hashes as it did before windows existed.)
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit_window: Option<u32>,
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
    rate_limit_window: u32,
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

pub(crate) fn parse_environment(name: &str) -> Result<Environment> {
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
            rate_limit_window: check_window(self.rate_limit_window)?,
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

    /// A PATCH field: absent is `None` (via `default`), `null` is refused.
    pub fn some_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let n = u64(d)?;
        u32::try_from(n).map(Some).map_err(|_| expected())
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

fn limit_reached(
    counts: db::KeyCounts,
    plan: &accounts::Plan,
    candidates: &[KeyRow],
    now: u64,
) -> AppError {
    let listed: Vec<_> = candidates
        .iter()
        .map(|k| {
            json!({
                "id": k.id.to_string(),
                "name": k.name,
                "hint": k.hint,
                "status": status(k, now),
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "rotation_due": rotation_due(k, now),
            })
        })
        .collect();
    AppError::new(
        StatusCode::CONFLICT,
        "active_key_limit_reached",
        "Active key limit reached",
    )
    .with_detail(format!(
        "{} of {} keys are in use ({} of them in a rotation's grace period, counted until it \
         ends); revoke a key you no longer use before creating another. `candidates` lists the \
         idle and oldest ones.",
        counts.working, plan.max_active_keys, counts.rotating
    ))
    .with_field("active_keys", counts.working)
    .with_field("rotating_keys", counts.rotating)
    .with_field("max_active_keys", plan.max_active_keys)
    .with_field("candidates", listed)
}

/// Checks a requested window (absent: [`DEFAULT_WINDOW`]).
fn check_window(window: Option<u32>) -> Result<u32> {
    let window = window.unwrap_or(DEFAULT_WINDOW);
    if window == 0 || window > shared::limits::MAX_WINDOW {
        return Err(AppError::validation(format!(
            "rate_limit_window must be between 1 and {} seconds",
            shared::limits::MAX_WINDOW
        ))
        .with_field("field", "rate_limit_window"));
    }
    Ok(window)
}

/// The plan's default rate (per minute) scaled to `window`, at least 1.
fn default_limit(plan: &accounts::Plan, window: u32) -> u32 {
    let scaled = u64::from(plan.default_rate_limit) * u64::from(window) / 60;
    u32::try_from(scaled.max(1)).unwrap_or(u32::MAX)
}

/// Checks `limit` per `window` against the plan, whose cap is per minute: at most
/// `max_rate_limit * window / 60` requests per window.
fn check_rate_limit(limit: u32, window: u32, plan: &accounts::Plan) -> Result<()> {
    let max_for_window = u64::from(plan.max_rate_limit) * u64::from(window) / 60;
    if limit == 0 || u64::from(limit) * 60 > u64::from(plan.max_rate_limit) * u64::from(window) {
        return Err(AppError::validation(format!(
            "rate_limit must be between 1 and {max_for_window} requests per {window} s on this \
             plan (at most {} per minute)",
            plan.max_rate_limit
        ))
        .with_field("field", "rate_limit")
        .with_field("max_rate_limit", plan.max_rate_limit)
        .with_field("max_rate_limit_for_window", max_for_window)
        .with_field("rate_limit", limit)
        .with_field("rate_limit_window", window));
    }
    Ok(())
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
    Replayed(Box<KeyView>),
}

/// `POST /v1/keys`.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CreateKey>,
) -> Result<Response> {
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
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
                    let view = view_of(tx, &row, now)?;
                    return Ok(Created::Replayed(Box::new(view)));
                }
            }
            let plan = accounts::plan(tx, account)?;
            let window = spec.rate_limit_window;
            let rate_limit = spec
                .rate_limit
                .unwrap_or_else(|| default_limit(&plan, window));
            check_rate_limit(rate_limit, window, &plan)?;
            // Keys in a rotation's grace count: they work at the edge until it ends.
            let counts = db::count_working(tx, account, now)?;
            if counts.working >= plan.max_active_keys {
                let candidates = db::idle_or_oldest(tx, account, now, CANDIDATES)?;
                return Err(limit_reached(counts, &plan, &candidates, now));
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
                rate_limit_window: window,
                policy_version: now_ms,
                created_at: now,
                expires_at: spec.expires_at,
                last_used_at: None,
                last_used_ip: None,
                last_used_user_agent: None,
                revoked_at: None,
                revoke_reason: None,
                revocation_version: None,
                rotated_from: None,
                rotated_to: None,
                grace_until: None,
                limit_pending: true,
                revocation_in_force: false,
                budget_id: id,
            };
            let plain = mint(&st, &row)?;
            row.hint = plain.hint();
            db::insert(tx, &row)?;
            db::enqueue_limit(tx, id, now_ms)?;
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
                    "rate_limit_window": row.rate_limit_window,
                }),
            )?;
            Ok(Created::New(Box::new(row), plain))
        })
        .await?;
    Ok(match outcome {
        Created::New(row, plain) => {
            tracing::info!(key_id = %row.id, account_id = account, "key created");
            state.publish.wake_limits();
            let body = CreatedKey {
                key: plain.into_inner(),
                record: KeyView::new(&row, now, &KeyStats::default()),
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
    /// `true`: only idle keys (active, neither used nor created in 30 days); `false`: only the
    /// others.
    pub idle: Option<bool>,
}

/// A list of keys.
#[derive(Debug, Serialize)]
pub struct KeyList {
    /// Newest first.
    pub data: Vec<KeyView>,
    /// Keys that work now, counted against the plan: active ones and ones in a rotation's
    /// grace period.
    pub active_keys: u32,
    /// Of those, keys in a rotation's grace period (each shares its successor's rate limit).
    pub rotating_keys: u32,
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
        idle: q.idle.map(|idle| (idle, now.saturating_sub(IDLE_AFTER))),
        after,
        limit,
    };
    let account = caller.account_id;
    let (rows, stats, counts, plan) = state
        .store
        .read(move |c| {
            let rows = db::list(c, account, &filter, now)?;
            let stats = stats_of(c, &rows, now)?;
            Ok((
                rows,
                stats,
                db::count_working(c, account, now)?,
                accounts::plan(c, account)?,
            ))
        })
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.created_at, r.id)))
        .flatten();
    let none = KeyStats::default();
    let data = rows
        .iter()
        .map(|r| KeyView::new(r, now, stats.get(&r.id).unwrap_or(&none)))
        .collect();
    Ok(Json(KeyList {
        data,
        active_keys: counts.working,
        rotating_keys: counts.rotating,
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
    let view = state
        .store
        .read(move |c| {
            db::get(c, account, id)?
                .map(|row| view_of(c, &row, now))
                .transpose()
        })
        .await?
        .ok_or_else(AppError::not_found)?;
    Ok(Json(view))
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
    /// New rate limit, requests per window (the window stays unless sent too).
    #[serde(default, deserialize_with = "whole::some_u32")]
    pub rate_limit: Option<u32>,
    /// New window, seconds (the limit stays unless sent too).
    #[serde(default, deserialize_with = "whole::some_u32")]
    pub rate_limit_window: Option<u32>,
}

/// A PATCH field may be absent (unchanged) but not `null`: a client sending `null` to clear a
/// field would otherwise get a `200` with nothing changed. `null` is a 422, as the schema says.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// `PATCH /v1/keys/{id}`: name, description and rate limit. The scopes, environment and expiry
/// are signed into the key and never change; the rate limit lives in the record and reaches the
/// edge through the limits outbox (a new policy version), so it changes without a new key.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<UpdateKey>,
) -> Result<Json<KeyView>> {
    let id = parse_id(&id)?;
    if body.name.is_none()
        && body.description.is_none()
        && body.rate_limit.is_none()
        && body.rate_limit_window.is_none()
    {
        return Err(AppError::validation(
            "send at least one of `name`, `description`, `rate_limit`, `rate_limit_window`",
        ));
    }
    if body.rate_limit_window.is_some() {
        check_window(body.rate_limit_window)?;
    }
    let name = body.name.as_deref().map(clean_name).transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| clean_description(Some(d)))
        .transpose()?;
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
    let account = caller.account_id;
    let (view, limit_changed) = state
        .store
        .write(move |tx| {
            let mut row = db::get(tx, account, id)?.ok_or_else(AppError::not_found)?;
            let snapshot = |row: &KeyRow| {
                json!({
                    "name": row.name,
                    "description": row.description,
                    "rate_limit": row.rate_limit,
                    "rate_limit_window": row.rate_limit_window,
                })
            };
            let before = snapshot(&row);
            if let Some(name) = name {
                row.name = name;
            }
            if let Some(description) = description {
                row.description = description;
            }
            db::update_details(tx, id, &row.name, row.description.as_deref())?;
            let limit = body.rate_limit.unwrap_or(row.rate_limit);
            let window = body.rate_limit_window.unwrap_or(row.rate_limit_window);
            let limit_changed = (limit, window) != (row.rate_limit, row.rate_limit_window);
            let state_now = status(&row, now);
            if limit_changed && state_now != "active" {
                // A rotating key's budget is its successor's, and the limit pushed for a key
                // is its whole chain's: only the chain's active key sets it.
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "key_not_active",
                    "Only an active key's rate limit can be changed",
                )
                .with_detail(
                    "A key in its rotation grace period shares the rate limit of the key that \
                     replaced it: change that key's limit.",
                )
                .with_field("key_status", state_now));
            }
            if limit_changed {
                check_rate_limit(limit, window, &accounts::plan(tx, account)?)?;
                row.policy_version = db::set_rate_limit(tx, id, limit, window, now_ms)?;
                row.rate_limit = limit;
                row.rate_limit_window = window;
                row.limit_pending = true;
            }
            let mut details = json!({ "before": before, "after": snapshot(&row) });
            if limit_changed {
                details["policy_version"] = json!(row.policy_version);
            }
            audit::append(
                tx,
                now,
                Some(account),
                &caller.actor,
                "key.updated",
                Some(&id.to_string()),
                &details,
            )?;
            Ok((view_of(tx, &row, now)?, limit_changed))
        })
        .await?;
    if limit_changed {
        tracing::info!(key_id = %id, account_id = account, "key rate limit changed");
        state.publish.wake_limits();
    }
    Ok(Json(view))
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

/// Revokes `id` at `now`: the key's new state, a list version, the outbox row and the
/// `key.revoked` event (`details` plus the reason and version), in `tx`. Returns the version.
fn revoke_now(
    tx: &rusqlite::Transaction<'_>,
    now: u64,
    caller: &Caller,
    id: KeyId,
    reason: &str,
    grace_until: Option<u64>,
    mut details: serde_json::Value,
) -> Result<u64> {
    let version = revocations::next_version(tx, now)?;
    db::set_revoked(tx, id, now, reason, version, grace_until)?;
    revocations::enqueue_now(tx, id, version)?;
    details["reason"] = json!(reason);
    details["list_version"] = json!(version);
    audit::append(
        tx,
        now,
        Some(caller.account_id),
        &caller.actor,
        "key.revoked",
        Some(&id.to_string()),
        &details,
    )?;
    Ok(version)
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
    let (view, version, changed) = state
        .store
        .write(move |tx| {
            let mut row = db::get(tx, account, id)?.ok_or_else(AppError::not_found)?;
            if let (Some(version), "revoked") = (row.revocation_version, status(&row, now)) {
                return Ok((view_of(tx, &row, now)?, version, false));
            }
            let version = revoke_now(tx, now, &caller, id, &reason, row.grace_until, json!({}))?;
            row.revoked_at = Some(now);
            row.revoke_reason = Some(reason);
            row.revocation_version = Some(version);
            row.revocation_in_force = true;
            Ok((view_of(tx, &row, now)?, version, true))
        })
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
///
/// Rotation never multiplies an account's keys or quota: the new key spends the same rate-limit
/// budget as the old one (its chain's first key's, `rate_limit_budget`); a key in its grace
/// counts against the plan until the grace ends; and a chain has at most one key in grace, so
/// rotating the new key again ends the old key's grace at once (revoked now, and published).
/// Rotating works at the cap: the account's number of budgets does not change.
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
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
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
            // At most one key of a chain in grace: the one this rotation puts there.
            for earlier in db::in_grace(tx, account, old.budget_id, now)? {
                revoke_now(
                    tx,
                    now,
                    &caller,
                    earlier.id,
                    "rotated",
                    Some(now),
                    json!({
                        "grace_ended_by_rotation_of": id.to_string(),
                        "grace_was_until": earlier.grace_until,
                    }),
                )?;
            }
            let mut new = KeyRow {
                id: new_id,
                kid: st.keyring.active_kid(),
                created_at: now,
                rotated_from: Some(id),
                hint: String::new(),
                last_used_at: None,
                last_used_ip: None,
                last_used_user_agent: None,
                policy_version: now_ms,
                limit_pending: true,
                ..old.clone()
            };
            let plain = mint(&st, &new)?;
            new.hint = plain.hint();
            db::insert(tx, &new)?;
            db::enqueue_limit(tx, new_id, now_ms)?;
            let version = revocations::next_version(tx, now)?;
            db::set_revoked(tx, id, grace_until, "rotated", version, Some(grace_until))?;
            db::set_rotated_to(tx, id, new_id)?;
            if body.grace_period_seconds == 0 {
                revocations::enqueue_now(tx, id, version)?;
            } else {
                revocations::schedule(tx, id, version, grace_until)?;
            }
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
                    "rate_limit_budget": old.budget_id.to_string(),
                }),
            )?;
            old.revoked_at = Some(grace_until);
            old.revoke_reason = Some("rotated".into());
            old.revocation_version = Some(version);
            old.grace_until = Some(grace_until);
            old.rotated_to = Some(new_id);
            old.revocation_in_force = body.grace_period_seconds == 0;
            let old = view_of(tx, &old, now)?;
            Ok((old, new, plain, version))
        })
        .await?;
    tracing::info!(key_id = %id, new_key_id = %new_id, account_id = account, grace_until, "key rotated");
    state.publish.wake();
    state.publish.wake_limits();
    // The key string leaves only once the edge knows the new key spends its chain's budget
    // (or after the configured wait: `rate_limit_pending` then says it does not yet).
    let pending = wait_for_limit_push(&state, new_id).await?;
    let mut record = KeyView::new(&new, now, &KeyStats::default());
    record.rate_limit_pending = pending;
    let body = Rotated {
        key: CreatedKey {
            key: plain.into_inner(),
            record,
        },
        previous: old,
        list_version: version,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            rate_limit_window: 60,
            policy_version: 1,
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            last_used_ip: None,
            last_used_user_agent: None,
            limit_pending: false,
            revocation_in_force: false,
            revoked_at: None,
            revoke_reason: None,
            revocation_version: None,
            rotated_from: None,
            rotated_to: None,
            grace_until: None,
            budget_id: KeyId([1; 16]),
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
        assert!(!rotation_due(&expired, ROTATION_DUE_AFTER));
    }
}
