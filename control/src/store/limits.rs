//! The limits outbox: key policies the edge has not acknowledged yet. A pushed policy carries
//! the plan's per-minute cap and, for a key rotated in, its budget: the first key of its
//! rotation chain, whose limiter the key shares with the predecessor still in its grace.
//!
//! A change of a key's rate limit (and a new key) takes a new policy version and puts
//! `(key_id, version)` here in the same transaction (`keys::set_rate_limit`,
//! `keys::enqueue_limit`). The limits publisher pushes the current policy of queued keys and then
//! deletes each row only if its version is still the one pushed: a change made during the push
//! stays queued for the next one.

use crate::store::db::{Db, params};
use shared::limits::{LimitUpdate, Policy};

use super::Result;
use super::{to_i64, to_u64};

/// Up to `max` queued policies, oldest versions first, each with the plan's per-minute cap and
/// the key's budget when it is another key's (its rotation chain's first key).
pub fn pending(conn: &Db<'_>, max: usize) -> Result<Vec<LimitUpdate>> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.key_id, k.rate_limit, k.rate_limit_window, o.version, p.max_rate_limit, \
         nullif(coalesce(k.budget_id, k.id), k.id) \
         FROM limits_outbox o JOIN api_keys k ON k.id = o.key_id \
         JOIN accounts a ON a.id = k.account_id JOIN plans p ON p.id = a.plan_id \
         ORDER BY o.version, o.key_id LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(max).unwrap_or(i64::MAX)], |r| {
        Ok(LimitUpdate {
            key_id: r.get(0)?,
            policy: Policy {
                limit: r.get(1)?,
                window: r.get(2)?,
            },
            version: to_u64(r.get(3)?)?,
            per_minute: Some(r.get(4)?),
            budget: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// Whether `key`'s policy still waits for the edge.
pub fn is_pending(conn: &Db<'_>, key: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM limits_outbox WHERE key_id = ?1)")?
        .query_row([key], |r| r.get(0))?)
}

/// How many policies wait for the edge.
pub fn pending_count(conn: &Db<'_>) -> Result<u64> {
    Ok(to_u64(conn.query_row(
        "SELECT count(*) FROM limits_outbox o JOIN api_keys k ON k.id = o.key_id",
        [],
        |r| r.get(0),
    )?)?)
}

/// The edge acknowledged these versions: deletes the rows still at them.
pub fn acknowledged(tx: &Db<'_>, pushed: &[LimitUpdate]) -> Result<u64> {
    let mut stmt =
        tx.prepare_cached("DELETE FROM limits_outbox WHERE key_id = ?1 AND version = ?2")?;
    let mut deleted = 0;
    for u in pushed {
        deleted += stmt.execute(params![u.key_id, to_i64(u.version)])? as u64;
    }
    Ok(deleted)
}
