//! What a restore changes in the restored database so the edge's view follows it: every version
//! the edge compares moves past anything the lost database can have published, and every key's
//! rate-limit policy is queued again. The revocation shards need no queueing: the publisher's
//! first pass after a start reads every shard back from the edge, records the revocations made
//! after the backup (`revocations::recover`), and writes every shard in full.

use crate::store::db::{Db, params};

use super::{Result, to_i64, to_u64};

/// How far (ms) a restore moves versions past the restoring clock: the edge holds versions the
/// lost database took after the backup, up to its clock at the time in milliseconds (the
/// publisher's versions are `max(previous + 1, now in ms)`). A day covers that database's clock
/// running up to a day ahead of the restoring host's; versions are 64-bit, a leap costs nothing.
pub const VERSION_LEAP_MS: u64 = 86_400_000;

/// What [`prepare_republish`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Republish {
    /// The revocation list's version floor: the next shard published takes a higher one.
    pub list_version: u64,
    /// Key policies queued for the edge.
    pub limits_queued: u64,
}

/// Moves the revocation list's version and every working key's policy version past
/// `now_ms + VERSION_LEAP_MS` (or past what they hold, if higher), and queues every working key's
/// policy for the next limits push. `now` in Unix seconds decides which keys still work (a
/// rotation's old key in its grace period does).
pub fn prepare_republish(tx: &Db<'_>, now_ms: u64) -> Result<Republish> {
    let floor = to_i64(now_ms.saturating_add(VERSION_LEAP_MS));
    let now = to_i64(now_ms / 1000);
    let list_version = to_u64(tx.query_row(
        "UPDATE revocation_meta SET list_version = max(list_version, ?1) WHERE id = 1 \
         RETURNING list_version",
        [floor],
        |r| r.get(0),
    )?)?;
    tx.execute(
        "UPDATE api_keys SET policy_version = max(policy_version + 1, ?1) \
         WHERE revoked_at IS NULL OR revoked_at > ?2",
        params![floor, now],
    )?;
    let limits_queued = tx.execute(
        "INSERT INTO limits_outbox (key_id, version) \
         SELECT id, policy_version FROM api_keys WHERE revoked_at IS NULL OR revoked_at > ?1 \
         ON CONFLICT (key_id) DO UPDATE SET version = excluded.version",
        [now],
    )? as u64;
    Ok(Republish {
        list_version,
        limits_queued,
    })
}
