//! What the keys API shows: a key's view (never the key string) and the answers built from it.

use std::collections::HashMap;

use serde::Serialize;
use shared::key::{KeyId, PlainKey};
use shared::scope::{Scope, ScopeSet};

use crate::store::Result;
use crate::store::keys::KeyRow;
pub use crate::store::keys::KeyStatus;
use crate::store::usage::{self as usage_db, KeyStats};

/// A key this old (seconds) is flagged `rotation_due`.
pub const ROTATION_DUE_AFTER: u64 = 90 * 86_400;
/// A key neither used nor created for this long (seconds) is `idle`; scope use is observed over
/// the same span.
pub const IDLE_AFTER: u64 = 30 * 86_400;

/// A key as the API shows it: never the key string.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Key)]
pub struct KeyView {
    /// 32 hex digits.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Usage note.
    #[schema(required = true)]
    pub description: Option<String>,
    /// `development`, `staging` or `production`.
    #[schema(schema_with = crate::openapi::environment)]
    pub environment: &'static str,
    /// `read_only`, `read_write`, `full_access` or `custom`.
    #[schema(schema_with = crate::openapi::permission)]
    pub permission: &'static str,
    /// The scopes the key carries (`["*"]` for Full Access).
    pub scopes: Vec<&'static str>,
    /// Non-secret reminder of the key: prefix and last characters.
    pub hint: String,
    /// Requests per `rate_limit_window` seconds.
    #[schema(minimum = 1)]
    pub rate_limit: u32,
    /// The rate limit's window, seconds (fixed windows aligned to the Unix epoch).
    #[schema(minimum = 1, maximum = 86400)]
    pub rate_limit_window: u32,
    /// The edge has not acknowledged the current rate limit yet.
    pub rate_limit_pending: bool,
    /// `active`, `expired`, `rotating` (revocation scheduled) or `revoked`.
    #[schema(schema_with = crate::openapi::key_status)]
    pub status: KeyStatus,
    /// Active and older than 90 days.
    pub rotation_due: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, or null: never expires.
    #[schema(required = true)]
    pub expires_at: Option<u64>,
    /// Unix seconds of the last use seen, if any.
    #[schema(required = true)]
    pub last_used_at: Option<u64>,
    /// Client address of the last use.
    #[schema(required = true)]
    pub last_used_ip: Option<String>,
    /// `User-Agent` of the last use.
    #[schema(required = true)]
    pub last_used_user_agent: Option<String>,
    /// Requests in the last 24 hours (every outcome).
    pub requests_24h: u64,
    /// Active, and neither used nor created in the last 30 days.
    pub idle: bool,
    /// Scopes the key holds (every catalog scope for Full Access) with no allowed request since
    /// `unused_scopes_since`: candidates to narrow the key.
    #[schema(schema_with = crate::openapi::scopes)]
    pub unused_scopes: Vec<&'static str>,
    /// Unix seconds: the later of the key's creation and 30 days ago.
    pub unused_scopes_since: u64,
    /// When the revocation took (or takes) effect.
    #[schema(required = true)]
    pub revoked_at: Option<u64>,
    /// Why it was revoked.
    #[schema(required = true)]
    pub revoke_reason: Option<String>,
    /// The revocation is in every published shard of this list version or newer.
    #[schema(required = true)]
    pub revocation_version: Option<u64>,
    /// The key this one replaced.
    #[schema(required = true)]
    pub rotated_from: Option<String>,
    /// The key that replaced this one.
    #[schema(required = true)]
    pub rotated_to: Option<String>,
    /// End of the grace period after a rotation.
    #[schema(required = true)]
    pub grace_until: Option<u64>,
    /// The key whose rate limit this key spends at the edge: the first key of its rotation
    /// chain (its own id for a key that was created). A key and its successor in grace show the
    /// same value: they share one budget.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub rate_limit_budget: String,
}

/// The scope names a key shows: `["*"]` for Full Access.
pub(crate) fn scope_names(scopes: ScopeSet) -> Vec<&'static str> {
    if scopes.is_full_access() {
        vec!["*"]
    } else {
        scopes.iter().map(Scope::name).collect()
    }
}

/// Active and older than [`ROTATION_DUE_AFTER`].
pub(super) fn rotation_due(k: &KeyRow, now: u64) -> bool {
    k.status(now) == KeyStatus::Active && now >= k.created_at + ROTATION_DUE_AFTER
}

impl KeyView {
    /// The view of a stored key at `now`, with its recent use.
    pub fn new(k: &KeyRow, now: u64, stats: &KeyStats) -> Self {
        let status = k.status(now);
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
            idle: status == KeyStatus::Active
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
pub(super) fn stats_of(
    conn: &rusqlite::Connection,
    rows: &[KeyRow],
    now: u64,
) -> Result<HashMap<KeyId, KeyStats>> {
    let ids: Vec<KeyId> = rows.iter().map(|r| r.id).collect();
    usage_db::key_stats(conn, &ids, now, now.saturating_sub(IDLE_AFTER))
}

/// The view of one stored key, with its recent use read from `conn`.
pub(super) fn view_of(conn: &rusqlite::Connection, row: &KeyRow, now: u64) -> Result<KeyView> {
    let stats = stats_of(conn, std::slice::from_ref(row), now)?;
    Ok(KeyView::new(
        row,
        now,
        stats.get(&row.id).unwrap_or(&KeyStats::default()),
    ))
}

/// A new key with its secret: the only response that ever holds the key string.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The full key. Shown once; store it now.
    // (`PlainKey`'s `Debug` shows only its hint.)
    #[serde(serialize_with = "expose_key")]
    #[schema(value_type = String)]
    pub key: PlainKey,
    /// The key's record.
    #[serde(flatten)]
    pub record: KeyView,
}

fn expose_key<S: serde::Serializer>(key: &PlainKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(key.expose())
}

/// A list of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Answer of a revoke.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The key, now revoked.
    pub key: KeyView,
    /// Every revocation-list shard of this version or newer carries the revocation.
    pub list_version: u64,
    /// Whether this call revoked it (false: it was already revoked).
    pub changed: bool,
}

/// Answer of a bulk revoke: one entry per id, in the order given.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkRevoked {
    /// Each key's answer, as a single revoke would give it.
    pub data: Vec<Revoked>,
    /// How many of them this call revoked (the others were already revoked).
    pub revoked: usize,
}

/// Answer of a rotate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    /// The new key, with its key string (shown once).
    pub key: CreatedKey,
    /// The old key, revoked at `grace_until`.
    pub previous: KeyView,
    /// Once the grace period ends, every shard of this version or newer carries the revocation.
    pub list_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::key::Environment;

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
        assert_eq!(row.status(10), KeyStatus::Active);
        let rotating = KeyRow {
            revoked_at: Some(20),
            ..row.clone()
        };
        assert_eq!(rotating.status(10), KeyStatus::Rotating);
        assert_eq!(rotating.status(20), KeyStatus::Revoked);
        let expired = KeyRow {
            expires_at: Some(5),
            ..row
        };
        assert_eq!(expired.status(5), KeyStatus::Expired);
        assert!(!rotation_due(&expired, ROTATION_DUE_AFTER));
    }
}
