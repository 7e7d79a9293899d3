//! What `GET /metrics` reads from the database at a scrape: each publisher's outbox (depth and
//! oldest entry), the newest published list version, and the database's size. One read, a few
//! aggregate queries over small tables (the outboxes empty as they publish).

use crate::store::db::{Db, OptionalExtension};

use super::{Result, to_i64, to_u64};

/// The database's side of a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Revocations due and not yet published.
    pub revocations_pending: u64,
    /// Seconds since the oldest of them fell due (0 with none).
    pub revocations_oldest_secs: u64,
    /// Rate-limit policies the edge has not acknowledged.
    pub limits_pending: u64,
    /// Seconds the oldest of them has waited (0 with none).
    pub limits_oldest_secs: u64,
    /// The newest version of any published shard of this layout (0 before the first).
    pub list_version: u64,
    /// The database's size in bytes: SQLite's main file (`page_count * page_size`, not the WAL),
    /// or PostgreSQL's `pg_database_size`.
    pub database_bytes: u64,
}

/// Reads the [`Gauges`] at `now_ms` for a layout of `shard_count` shards.
pub fn gauges(conn: &Db<'_>, now_ms: u64, shard_count: u16) -> Result<Gauges> {
    let now = now_ms / 1000;
    // A row is due from its `due_at` (a rotation's grace end) or, revoked at once (`due_at`
    // 0), from its commit: its version is taken from the clock then, in thousandths of a
    // second at least (`revocations::next_version`).
    let (revocations_pending, oldest_due): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), min(max(due_at, version / 1000)) FROM revocation_outbox \
         WHERE due_at <= ?1",
        [to_i64(now)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // Only keys that exist, as `limits::pending_count` counts them.
    let (limits_pending, oldest_queued): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), min(o.queued_at) FROM limits_outbox o JOIN api_keys k ON k.id = o.key_id",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let list_version: Option<i64> = conn
        .query_row(
            "SELECT max(version) FROM revocation_shards WHERE shard_count = ?1",
            [shard_count],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let size: i64 = conn.query_row(
        if conn.is_postgres() {
            "SELECT pg_database_size(current_database())"
        } else {
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        },
        [],
        |r| r.get(0),
    )?;
    let age = |at: Option<i64>, now: u64| -> Result<u64> {
        Ok(at
            .map(to_u64)
            .transpose()?
            .map_or(0, |at| now.saturating_sub(at)))
    };
    Ok(Gauges {
        revocations_pending: to_u64(revocations_pending)?,
        revocations_oldest_secs: age(oldest_due, now)?,
        limits_pending: to_u64(limits_pending)?,
        limits_oldest_secs: age(oldest_queued, now_ms)? / 1000,
        list_version: list_version.map(to_u64).transpose()?.unwrap_or(0),
        database_bytes: to_u64(size)?,
    })
}

/// Whether the batch `(source, seq)` was applied: a batch that was is a retry or a replay, and
/// says nothing about the sender's clock now.
pub fn batch_applied(conn: &Db<'_>, source: &str, seq: u64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_batches WHERE source = ?1 AND seq = ?2)",
        )?
        .query_row(crate::store::db::params![source, to_i64(seq)], |r| r.get(0))?)
}
