//! What the keys API shows: a key's view (never the key string) and the answers built from it.

use std::collections::HashMap;

use serde::Serialize;
use shared::key::{KeyId, PlainKey};
use shared::scope::{Scope, ScopeSet};

use crate::store::Result;
use crate::store::keys::KeyRow;
pub use crate::store::keys::KeyStatus;
use crate::store::signing::{RetireReason, RetiredKey};
use crate::store::usage::{self as usage_db, KeyStats};

/// A key this old (seconds) is flagged `rotation_due`.
pub const ROTATION_DUE_AFTER: u64 = 90 * 86_400;
/// A key neither used nor created for this long (seconds) is `idle`; scope use is observed over
/// the same span.
pub const IDLE_AFTER: u64 = 30 * 86_400;
/// The unused-scopes advice waits until a key is this old (seconds), and has served requests.
/// A key's first week says little about the scopes it needs: a weekly job has not run, a deploy
/// is still being wired, a scope for a rare path is not exercised yet; advice to narrow a key
/// made minutes ago is noise that teaches people to ignore the advice. A week covers one cycle
/// of the usual schedules (daily and weekly); a key with no allowed request at all is `idle`
/// instead, which says more than a list of every scope.
pub const UNUSED_SCOPES_MIN_AGE: u64 = 7 * 86_400;

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
    /// Requests in the last 24 hours (every outcome), without the attempts refused after the
    /// key was revoked (those are `refused_since_revocation`).
    pub requests_24h: u64,
    /// For a revoked key: requests the edge refused (401) from the minute of the revocation on.
    /// Null for a key that is not revoked.
    #[schema(required = true)]
    pub refused_since_revocation: Option<u64>,
    /// Active, and neither used nor created in the last 30 days.
    pub idle: bool,
    /// Scopes the key holds (every catalog scope for Full Access) with no allowed request since
    /// `unused_scopes_since`: candidates to narrow the key.
    #[schema(schema_with = crate::openapi::scopes)]
    pub unused_scopes: Vec<&'static str>,
    /// Unix seconds: the later of the key's creation and 30 days ago.
    pub unused_scopes_since: u64,
    /// Whether `unused_scopes` is advice worth acting on: the key is at least 7 days old
    /// (`UNUSED_SCOPES_MIN_AGE`) and the origin answered at least one of its requests since
    /// `unused_scopes_since`. Until then the list only says what has not happened yet.
    pub unused_scopes_advice: bool,
    /// Unix seconds: when the key is old enough for the advice (its creation plus 7 days).
    pub unused_scopes_advice_from: u64,
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
    /// The signing key (kid) whose secret sealed the key.
    #[schema(minimum = 0, maximum = 255)]
    pub kid: u8,
    /// `current`: signed by the active signing key. `previous`: by an older one, still trusted
    /// (the key works; rotate it to move it to the current one). `retired`: by a retired one
    /// (the key works nowhere and was revoked; rotating it creates its replacement).
    pub signing_key: SigningKeyState,
    /// When and why the key's signing key was retired; null unless `signing_key` is `retired`.
    #[schema(required = true)]
    pub signing_key_retired: Option<SigningKeyRetired>,
}

/// Which signing key a key was sealed with, relative to the control plane's keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigningKeyState {
    /// The active signing key.
    Current,
    /// An older signing key that is still trusted.
    Previous,
    /// A retired signing key: the key works nowhere.
    Retired,
}

/// A signing key's retirement, as a key shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SigningKeyRetired {
    /// Unix seconds.
    pub retired_at: u64,
    /// `compromised` (its secret leaked or may have) or `scheduled` (a planned end of life).
    #[schema(value_type = String, pattern = "^(compromised|scheduled)$")]
    pub reason: RetireReason,
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
    /// The view of a stored key at `now`, with its recent use; `active_kid` signs new keys.
    pub fn new(k: &KeyRow, now: u64, stats: &KeyStats, active_kid: u8) -> Self {
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
            refused_since_revocation: stats.refused_since_revocation,
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
            unused_scopes_advice: now >= k.created_at.saturating_add(UNUSED_SCOPES_MIN_AGE)
                && !stats.used_scopes.is_empty(),
            unused_scopes_advice_from: k.created_at.saturating_add(UNUSED_SCOPES_MIN_AGE),
            revoked_at: k.revoked_at,
            revoke_reason: k.revoke_reason.clone(),
            revocation_version: k.revocation_version,
            rotated_from: k.rotated_from.map(|id| id.to_string()),
            rotated_to: k.rotated_to.map(|id| id.to_string()),
            grace_until: k.grace_until,
            rate_limit_budget: k.budget_id.to_string(),
            kid: k.kid,
            signing_key: match k.kid_retired {
                Some(_) => SigningKeyState::Retired,
                None if k.kid == active_kid => SigningKeyState::Current,
                None => SigningKeyState::Previous,
            },
            signing_key_retired: k
                .kid_retired
                .map(|(retired_at, reason)| SigningKeyRetired { retired_at, reason }),
        }
    }
}

/// Recent use of each key in `rows`, with grouped queries (not one per key).
pub(super) fn stats_of(
    conn: &crate::store::db::Db<'_>,
    rows: &[KeyRow],
    now: u64,
) -> Result<HashMap<KeyId, KeyStats>> {
    let ids: Vec<KeyId> = rows.iter().map(|r| r.id).collect();
    let mut stats = usage_db::key_stats(conn, &ids, now, now.saturating_sub(IDLE_AFTER))?;
    // A revoked key's refused attempts are counted apart: in the 24 h count they would read as
    // use. From the minute of the revocation (a 401 earlier in that minute counts as after it).
    let window_start = (now / 60).saturating_sub(1439);
    for row in rows {
        let Some(revoked_at) = row
            .revoked_at
            .filter(|_| row.status(now) == KeyStatus::Revoked)
        else {
            continue;
        };
        let from = revoked_at / 60;
        let entry = stats.entry(row.id).or_default();
        entry.refused_since_revocation = Some(usage_db::refused_since(conn, row.id, from)?);
        let in_window = usage_db::refused_since(conn, row.id, from.max(window_start))?;
        entry.requests_24h = entry.requests_24h.saturating_sub(in_window);
    }
    Ok(stats)
}

/// The view of one stored key, with its recent use read from `conn`.
pub(super) fn view_of(
    conn: &crate::store::db::Db<'_>,
    row: &KeyRow,
    now: u64,
    active_kid: u8,
) -> Result<KeyView> {
    let stats = stats_of(conn, std::slice::from_ref(row), now)?;
    Ok(KeyView::new(
        row,
        now,
        stats.get(&row.id).unwrap_or(&KeyStats::default()),
        active_kid,
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
    /// What the account must know about the signing keys its keys were sealed with.
    pub signing: SigningNotice,
}

/// The account's keys as signing-key changes concern them (`docs/operations.md`, "Signing-key
/// rollover").
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningNotice {
    /// The kid that signs new keys.
    #[schema(minimum = 0, maximum = 255)]
    pub current_kid: u8,
    /// Working keys sealed with an older signing key that is still trusted: they keep working;
    /// rotate them to move them to the current one.
    pub keys_on_previous_kid: u32,
    /// Keys that stopped working because their signing key was retired, newest retirement
    /// first (at most 200): each was revoked; rotate it to create its replacement.
    pub retired_keys: Vec<RetiredKeyView>,
}

/// A key revoked because its signing key was retired.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetiredKeyView {
    /// 32 hex digits.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Non-secret reminder of the key.
    pub hint: String,
    /// The retired kid.
    #[schema(minimum = 0, maximum = 255)]
    pub kid: u8,
    /// When and why it was retired.
    pub retired: SigningKeyRetired,
    /// The key made to replace it (by rotating it), if any.
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub replaced_by: Option<String>,
}

impl From<RetiredKey> for RetiredKeyView {
    fn from(k: RetiredKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name,
            hint: k.hint,
            kid: k.kid,
            retired: SigningKeyRetired {
                retired_at: k.retired_at,
                reason: k.reason,
            },
            replaced_by: k.replaced_by.map(|id| id.to_string()),
        }
    }
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
            kid_retired: None,
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
