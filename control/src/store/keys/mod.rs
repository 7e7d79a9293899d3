//! API key records: everything about a key except the key string, which is never stored.

use crate::store::db::{Db, OptionalExtension, Row, params};
use shared::key::{Environment, KeyId};
use shared::scope::ScopeSet;

mod status;

pub use self::status::KeyStatus;
use super::Result;
use super::{to_i64, to_u64};

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The key's id (also signed into the key).
    pub id: KeyId,
    /// Owner.
    pub account_id: u64,
    /// Trimmed display name.
    pub name: String,
    /// What the key is for.
    pub description: Option<String>,
    /// Where the key works.
    pub environment: Environment,
    /// What it may do.
    pub scopes: ScopeSet,
    /// The signing key that made its tag.
    pub kid: u8,
    /// Non-secret reminder: `lnx_live_…abcd`.
    pub hint: String,
    /// Requests per `rate_limit_window` seconds.
    pub rate_limit: u32,
    /// The rate limit's window, seconds.
    pub rate_limit_window: u32,
    /// Increases with every change of the limit; the edge keeps the highest it has seen.
    pub policy_version: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<u64>,
    /// Last request seen by the edge, Unix seconds.
    pub last_used_at: Option<u64>,
    /// The client address of that request.
    pub last_used_ip: Option<String>,
    /// The `User-Agent` of that request.
    pub last_used_user_agent: Option<String>,
    /// When the revocation takes (took) effect; in the future during a rotation's grace.
    pub revoked_at: Option<u64>,
    /// Why.
    pub revoke_reason: Option<String>,
    /// Revocation-list version that carries the revocation.
    pub revocation_version: Option<u64>,
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// End of the rotation grace period.
    pub grace_until: Option<u64>,
    /// Read only: the edge has not acknowledged the current policy version yet.
    pub limit_pending: bool,
    /// Read only: the revocation is in force (set by `revocations::enqueue_now`, or by the
    /// publisher when a grace period ends; never cleared).
    pub revocation_in_force: bool,
    /// The key whose rate-limit budget this key spends: the first key of its rotation chain
    /// (itself for a key that was created, not rotated in).
    pub budget_id: KeyId,
    /// Read only: when and why its kid was retired (`store::signing`), if it was: then the key
    /// works nowhere.
    pub kid_retired: Option<(u64, crate::store::signing::RetireReason)>,
}

/// The top 16 bits of an id: which revocation shard range it falls in.
pub fn id_top(id: KeyId) -> i64 {
    i64::from(u16::from_be_bytes([id.0[0], id.0[1]]))
}

const INSERT_COLUMNS: &str = "id, account_id, name, description, environment, scopes, kid, hint, \
    rate_limit, created_at, expires_at, last_used_at, revoked_at, revoke_reason, \
    revocation_version, rotated_from, rotated_to, grace_until, rate_limit_window, \
    policy_version, last_used_ip, last_used_user_agent, budget_id";

/// What a read selects: the stored columns, then whether the policy waits in the outbox, then
/// the budget (never NULL since schema 5; read defensively).
const COLUMNS: &str = "id, account_id, name, description, environment, scopes, kid, hint, \
    rate_limit, created_at, expires_at, last_used_at, revoked_at, revoke_reason, \
    revocation_version, rotated_from, rotated_to, grace_until, rate_limit_window, \
    policy_version, last_used_ip, last_used_user_agent, \
    EXISTS (SELECT 1 FROM limits_outbox o WHERE o.key_id = api_keys.id), revocation_in_force, \
    coalesce(budget_id, id), \
    (SELECT retired_at FROM retired_kids r WHERE r.kid = api_keys.kid), \
    (SELECT reason FROM retired_kids r WHERE r.kid = api_keys.kid)";

fn bad(column: usize, what: &str) -> crate::store::db::Error {
    crate::store::db::Error::column(column, what.to_owned())
}

fn key_id(column: usize, text: Option<String>) -> crate::store::db::Result<Option<KeyId>> {
    text.map(|t| KeyId::parse_hex(&t).ok_or_else(|| bad(column, "key id")))
        .transpose()
}

fn opt_u64(v: Option<i64>) -> crate::store::db::Result<Option<u64>> {
    v.map(to_u64).transpose()
}

fn from_row(r: &Row<'_>) -> crate::store::db::Result<KeyRow> {
    let env: String = r.get(4)?;
    Ok(KeyRow {
        id: key_id(0, Some(r.get(0)?))?.ok_or_else(|| bad(0, "key id"))?,
        account_id: to_u64(r.get(1)?)?,
        name: r.get(2)?,
        description: r.get(3)?,
        environment: Environment::from_name(&env).ok_or_else(|| bad(4, "environment"))?,
        scopes: ScopeSet::from_bits(r.get(5)?).ok_or_else(|| bad(5, "scopes"))?,
        kid: r.get(6)?,
        hint: r.get(7)?,
        rate_limit: r.get(8)?,
        created_at: to_u64(r.get(9)?)?,
        expires_at: opt_u64(r.get(10)?)?,
        last_used_at: opt_u64(r.get(11)?)?,
        revoked_at: opt_u64(r.get(12)?)?,
        revoke_reason: r.get(13)?,
        revocation_version: opt_u64(r.get(14)?)?,
        rotated_from: key_id(15, r.get(15)?)?,
        rotated_to: key_id(16, r.get(16)?)?,
        grace_until: opt_u64(r.get(17)?)?,
        rate_limit_window: r.get(18)?,
        policy_version: to_u64(r.get(19)?)?,
        last_used_ip: r.get(20)?,
        last_used_user_agent: r.get(21)?,
        limit_pending: r.get(22)?,
        revocation_in_force: r.get(23)?,
        budget_id: key_id(24, Some(r.get(24)?))?.ok_or_else(|| bad(24, "budget id"))?,
        kid_retired: match (
            r.get::<_, Option<i64>>(25)?,
            r.get::<_, Option<String>>(26)?,
        ) {
            (Some(at), Some(reason)) => Some((
                to_u64(at)?,
                crate::store::signing::RetireReason::from_name(&reason)
                    .ok_or_else(|| bad(26, "retire reason"))?,
            )),
            _ => None,
        },
    })
}

/// Stores a new key.
pub fn insert(tx: &Db<'_>, k: &KeyRow) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO api_keys ({INSERT_COLUMNS}, id_top) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
             ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
        ),
        params![
            k.id.to_string(),
            to_i64(k.account_id),
            k.name,
            k.description,
            k.environment.name(),
            k.scopes.bits(),
            k.kid,
            k.hint,
            k.rate_limit,
            to_i64(k.created_at),
            k.expires_at.map(to_i64),
            k.last_used_at.map(to_i64),
            k.revoked_at.map(to_i64),
            k.revoke_reason,
            k.revocation_version.map(to_i64),
            k.rotated_from.map(|id| id.to_string()),
            k.rotated_to.map(|id| id.to_string()),
            k.grace_until.map(to_i64),
            k.rate_limit_window,
            to_i64(k.policy_version),
            k.last_used_ip,
            k.last_used_user_agent,
            k.budget_id.to_string(),
            id_top(k.id),
        ],
    )?;
    Ok(())
}

/// One key of one account; another account's key is `None`.
pub fn get(conn: &Db<'_>, account_id: u64, id: KeyId) -> Result<Option<KeyRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id = ?1 AND account_id = ?2"
        ))?
        .query_row(params![id.to_string(), to_i64(account_id)], from_row)
        .optional()?)
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this environment.
    pub environment: Option<Environment>,
    /// Name contains this (case-insensitive).
    pub search: Option<String>,
    /// Only keys with this status at `now`.
    pub status: Option<KeyStatus>,
    /// Only idle keys (`Some(true)`: active, neither used nor created since this time) or only
    /// keys that are not: `(idle, since)`.
    pub idle: Option<(bool, u64)>,
    /// Only keys after this one in list order: `(created_at, id)` of the last key seen.
    pub after: Option<(u64, KeyId)>,
    /// At most this many.
    pub limit: u32,
}

/// The SQL form of each status, consistent with how the API derives a key's status: revoked
/// (revocation in force, or its grace period over) first, then expired, then rotating
/// (revocation scheduled), then active.
fn status_sql(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Revoked => {
            "(revocation_in_force = 1 OR (revoked_at IS NOT NULL AND revoked_at <= ?4))"
        }
        KeyStatus::Expired => {
            "(revoked_at IS NULL OR (revoked_at > ?4 AND revocation_in_force = 0)) \
             AND expires_at IS NOT NULL AND expires_at <= ?4"
        }
        KeyStatus::Rotating => {
            "revoked_at > ?4 AND revocation_in_force = 0 AND (expires_at IS NULL OR expires_at > ?4)"
        }
        KeyStatus::Active => "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?4)",
    }
}

/// Idle: active at `?4`, and neither used nor created after `?8`.
const IDLE: &str = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?4) \
    AND max(coalesce(last_used_at, 0), created_at) < ?8";
const NOT_IDLE: &str = "NOT (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?4) \
    AND max(coalesce(last_used_at, 0), created_at) < ?8)";

/// A page of an account's keys, newest first.
pub fn list(conn: &Db<'_>, account_id: u64, filter: &ListFilter, now: u64) -> Result<Vec<KeyRow>> {
    let pattern = filter.search.as_ref().map(|s| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let (after_at, after_id) = filter.after.map_or((None, None), |(at, id)| {
        (Some(to_i64(at)), Some(id.to_string()))
    });
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE account_id = ?1 \
         AND (CAST(?2 AS TEXT) IS NULL OR environment = ?2) \
         AND (CAST(?3 AS TEXT) IS NULL OR name LIKE ?3 ESCAPE '\\' OR hint LIKE ?3 ESCAPE '\\' \
              OR id LIKE ?3 ESCAPE '\\') \
         AND ({}) \
         AND (CAST(?5 AS BIGINT) IS NULL OR created_at < ?5 OR (created_at = ?5 AND id > ?6)) \
         AND ({}) \
         ORDER BY created_at DESC, id LIMIT ?7",
        filter.status.map_or("1 = 1", status_sql),
        match filter.idle {
            // ?8 must appear in the statement for the parameter count to match.
            None => "CAST(?8 AS BIGINT) IS NULL",
            Some((true, _)) => IDLE,
            Some((false, _)) => NOT_IDLE,
        }
    ))?;
    let rows = stmt.query_map(
        params![
            to_i64(account_id),
            filter.environment.map(Environment::name),
            pattern,
            to_i64(now),
            after_at,
            after_id,
            filter.limit,
            filter.idle.map(|(_, since)| to_i64(since)),
        ],
        from_row,
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// Keys that work at the edge at `?2`, and so count against the plan's limit: active ones, and
/// ones in a rotation's grace (revoked in the future); not expired.
const WORKING: &str = "account_id = ?1 AND (revoked_at IS NULL OR revoked_at > ?2) \
    AND (expires_at IS NULL OR expires_at > ?2)";

/// How many of an account's keys work at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCounts {
    /// Keys that work: active, or in a rotation's grace period. What the plan's
    /// `max_active_keys` counts.
    pub working: u32,
    /// Of those, keys in a rotation's grace period.
    pub rotating: u32,
}

/// How many of the account's keys work at `now`.
pub fn count_working(conn: &Db<'_>, account_id: u64, now: u64) -> Result<KeyCounts> {
    Ok(conn.query_row(
        &format!("SELECT count(*), count(revoked_at) FROM api_keys WHERE {WORKING}"),
        params![to_i64(account_id), to_i64(now)],
        |r| {
            Ok(KeyCounts {
                working: r.get(0)?,
                rotating: r.get(1)?,
            })
        },
    )?)
}

/// Working keys made at or before `made_by` that are the best candidates to retire: unused
/// longest (never-used first), then oldest. Keys made later are left out: a key made minutes
/// ago has not been used yet because it is new, not because it is not needed.
pub fn idle_or_oldest(
    conn: &Db<'_>,
    account_id: u64,
    now: u64,
    made_by: u64,
    limit: u32,
) -> Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE {WORKING} AND created_at <= ?4 \
         ORDER BY coalesce(last_used_at, 0), created_at LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![to_i64(account_id), to_i64(now), limit, to_i64(made_by)],
        from_row,
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// The keys of `budget`'s rotation chain still in their grace period at `now`.
pub fn in_grace(conn: &Db<'_>, account_id: u64, budget: KeyId, now: u64) -> Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE account_id = ?1 \
         AND budget_id = ?2 AND revoked_at > ?3"
    ))?;
    let rows = stmt.query_map(
        params![to_i64(account_id), budget.to_string(), to_i64(now)],
        from_row,
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// Writes a key's name and description.
pub fn update_details(tx: &Db<'_>, id: KeyId, name: &str, description: Option<&str>) -> Result<()> {
    tx.execute(
        "UPDATE api_keys SET name = ?2, description = ?3 WHERE id = ?1",
        params![id.to_string(), name, description],
    )?;
    Ok(())
}

/// Records a revocation effective at `effective_at` (in the future for a rotation's grace).
pub fn set_revoked(
    tx: &Db<'_>,
    id: KeyId,
    effective_at: u64,
    reason: &str,
    version: u64,
    grace_until: Option<u64>,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE api_keys SET revoked_at = ?2, revoke_reason = ?3, revocation_version = ?4, \
         grace_until = ?5 WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        to_i64(effective_at),
        reason,
        to_i64(version),
        grace_until.map(to_i64)
    ])?;
    Ok(())
}

/// Links a rotated key to its successor.
pub fn set_rotated_to(tx: &Db<'_>, id: KeyId, successor: KeyId) -> Result<()> {
    tx.execute(
        "UPDATE api_keys SET rotated_to = ?2 WHERE id = ?1",
        params![id.to_string(), successor.to_string()],
    )?;
    Ok(())
}

/// Whether `id` is revoked at `now`, whatever account owns it: the verify endpoint's view.
pub fn is_revoked(conn: &Db<'_>, id: KeyId, now: u64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT revocation_in_force = 1 OR (revoked_at IS NOT NULL AND revoked_at <= ?2) \
             FROM api_keys WHERE id = ?1",
        )?
        .query_row(params![id.to_string(), to_i64(now)], |r| r.get(0))
        .optional()?
        .unwrap_or(false))
}

/// A stored `Idempotency-Key`: the hash of the request that used it and the key it created.
pub fn idempotency_record(
    conn: &Db<'_>,
    account_id: u64,
    idem_key: &str,
) -> Result<Option<(Vec<u8>, KeyId)>> {
    let row: Option<(Vec<u8>, String)> = conn
        .query_row(
            "SELECT request_hash, key_id FROM idempotency_keys WHERE account_id = ?1 AND idem_key = ?2",
            params![to_i64(account_id), idem_key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(hash, id)| KeyId::parse_hex(&id).map(|id| (hash, id))))
}

/// Remembers an `Idempotency-Key`.
pub fn insert_idempotency(
    tx: &Db<'_>,
    account_id: u64,
    idem_key: &str,
    request_hash: &[u8],
    key_id: KeyId,
    now: u64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO idempotency_keys (account_id, idem_key, request_hash, key_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            to_i64(account_id),
            idem_key,
            request_hash,
            key_id.to_string(),
            to_i64(now)
        ],
    )?;
    Ok(())
}

/// Sets a key's rate limit and takes its next policy version, `max(previous + 1, now in ms)`
/// (like revocation-list versions: a restored database still pushes above what the edge has
/// seen), and queues the policy for the edge. Returns the version.
pub fn set_rate_limit(tx: &Db<'_>, id: KeyId, limit: u32, window: u32, now_ms: u64) -> Result<u64> {
    let version = to_u64(tx.query_row(
        "UPDATE api_keys SET rate_limit = ?2, rate_limit_window = ?3, \
         policy_version = max(policy_version + 1, ?4) WHERE id = ?1 RETURNING policy_version",
        params![id.to_string(), limit, window, to_i64(now_ms)],
        |r| r.get(0),
    )?)?;
    enqueue_limit(tx, id, version, now_ms)?;
    Ok(version)
}

/// Queues `version` of a key's policy for the edge (replacing an older queued version) at
/// `now_ms`; a key already waiting keeps its first `queued_at`.
pub fn enqueue_limit(tx: &Db<'_>, id: KeyId, version: u64, now_ms: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO limits_outbox (key_id, version, queued_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key_id) DO UPDATE SET version = max(limits_outbox.version, excluded.version)",
        params![id.to_string(), to_i64(version), to_i64(now_ms)],
    )?;
    Ok(())
}
