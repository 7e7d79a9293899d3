//! Revocation publishing state: the list version counter, the outbox and what each shard last
//! published.
//!
//! A revocation is *in force* once `api_keys.revocation_in_force` is set: in the transaction of an
//! immediate revoke ([`enqueue_now`]), or, for a rotation's old key, by the publish after its grace
//! period ends ([`schedule`], then [`prepare_shard`]). It is never cleared, and a shard carries
//! exactly the keys in force: what the edge is told never depends on comparing a stored time with
//! a later clock reading, so a clock that ran fast at the revoke, or steps back afterwards, cannot
//! delay or undo it. The outbox row says which shard to publish; an immediate one is due at once
//! (`due_at` 0), in commit order. The publisher reads the shard's keys, signs the shard under a new
//! version, pushes it, and only then deletes the outbox rows the push covered. A crash anywhere in
//! between leaves the rows, so the next tick (or start) publishes again: publishing is
//! at-least-once and idempotent.

use crate::store::db::{Db, OptionalExtension, params};
use shared::key::KeyId;

use super::Result;
use super::audit::{self, Actor};
use super::keys::id_top;
use super::{to_i64, to_u64};
use crate::events::Event;

/// Takes the next list version at `now` (Unix seconds). Versions are never reused, so every
/// shard a reader sees is newer than the one before. They are also at least `now` in
/// milliseconds: a database started afresh (a reset development setup, a restored backup)
/// still publishes above what readers have seen, instead of being refused as a rollback.
pub fn next_version(tx: &Db<'_>, now: u64) -> Result<u64> {
    Ok(to_u64(
        tx.prepare_cached(
            "UPDATE revocation_meta SET list_version = max(list_version + 1, ?1) WHERE id = 1 \
             RETURNING list_version",
        )?
        .query_row([to_i64(now.saturating_mul(1000))], |r| r.get(0))?,
    )?)
}

/// Puts `key_id`'s revocation in force now, in the caller's transaction, and queues its shard
/// for publishing at once, whatever the clock says.
pub fn enqueue_now(tx: &Db<'_>, key_id: KeyId, version: u64) -> Result<()> {
    tx.prepare_cached("UPDATE api_keys SET revocation_in_force = 1 WHERE id = ?1")?
        .execute([key_id.to_string()])?;
    insert_outbox(tx, key_id, version, 0)
}

/// Queues `key_id`'s revocation to come into force once `due_at` (Unix seconds) has come: the
/// end of a rotation's grace period.
pub fn schedule(tx: &Db<'_>, key_id: KeyId, version: u64, due_at: u64) -> Result<()> {
    insert_outbox(tx, key_id, version, due_at)
}

fn insert_outbox(tx: &Db<'_>, key_id: KeyId, version: u64, due_at: u64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO revocation_outbox (key_id, id_top, version, due_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        key_id.to_string(),
        id_top(key_id),
        to_i64(version),
        to_i64(due_at)
    ])?;
    Ok(())
}

/// The range of top-16-bit id prefixes that shard `shard` of `count` holds, as SQL integers.
pub fn top_range(shard: u16, count: u16) -> (i64, i64) {
    let range = shared::revocation::shard_range(shard, count);
    (i64::from(range.start), i64::from(range.end))
}

fn shard_of_top(top: i64, count: u16) -> u16 {
    let mut id = [0_u8; 16];
    id[..2].copy_from_slice(&u16::try_from(top).unwrap_or(u16::MAX).to_be_bytes());
    shared::revocation::shard_of(KeyId(id), count)
}

/// Shards with outbox rows due at `now`: every immediate revocation, and rotations whose grace
/// period has ended.
pub fn shards_due(conn: &Db<'_>, count: u16, now: u64) -> Result<Vec<u16>> {
    let mut due = vec![false; usize::from(count)];
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT id_top FROM revocation_outbox WHERE due_at <= ?1")?;
    for top in stmt.query_map([to_i64(now)], |r| r.get::<_, i64>(0))? {
        due[usize::from(shard_of_top(top?, count))] = true;
    }
    Ok((0..count).filter(|&s| due[usize::from(s)]).collect())
}

/// What one shard publish carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardContent {
    /// The new list version.
    pub version: u64,
    /// Every id of the shard whose revocation is in force.
    pub ids: Vec<KeyId>,
    /// The last outbox row this publish covers.
    pub outbox_upto: Option<i64>,
}

/// Takes a version, puts in force the shard's scheduled revocations due at `now`, and reads the
/// shard's revoked ids, in one transaction so the outbox rows covered are exactly those committed
/// before it.
pub fn prepare_shard(tx: &Db<'_>, shard: u16, count: u16, now: u64) -> Result<ShardContent> {
    let version = next_version(tx, now)?;
    let (lo, hi) = top_range(shard, count);
    // A grace period that has ended: from now on in force, whatever the clock says later.
    tx.prepare_cached(
        "UPDATE api_keys SET revocation_in_force = 1 WHERE revocation_in_force = 0 AND id IN \
         (SELECT key_id FROM revocation_outbox WHERE id_top >= ?1 AND id_top < ?2 \
          AND due_at <= ?3)",
    )?
    .execute(params![lo, hi, to_i64(now)])?;
    // With the revocations read back from the edge that no key here carries ([`recover`]).
    let mut stmt = tx.prepare_cached(
        "SELECT id FROM api_keys WHERE id_top >= ?1 AND id_top < ?2 AND revocation_in_force = 1 \
         UNION ALL SELECT key_id FROM recovered_revocations WHERE id_top >= ?1 AND id_top < ?2",
    )?;
    let ids = stmt
        .query_map(params![lo, hi], |r| r.get::<_, String>(0))?
        .filter_map(|id| id.ok().and_then(|id| KeyId::parse_hex(&id)))
        .collect();
    let outbox_upto: Option<i64> = tx.query_row(
        "SELECT max(id) FROM revocation_outbox WHERE id_top >= ?1 AND id_top < ?2 AND due_at <= ?3",
        params![lo, hi, to_i64(now)],
        |r| r.get(0),
    )?;
    Ok(ShardContent {
        version,
        ids,
        outbox_upto,
    })
}

/// Records a successful publish and clears the outbox rows it covered.
pub fn mark_published(
    tx: &Db<'_>,
    shard: u16,
    count: u16,
    content: &ShardContent,
    now: u64,
    next_update: u64,
) -> Result<()> {
    if let Some(upto) = content.outbox_upto {
        let (lo, hi) = top_range(shard, count);
        tx.execute(
            "DELETE FROM revocation_outbox WHERE id <= ?1 AND id_top >= ?2 AND id_top < ?3 \
             AND due_at <= ?4",
            params![upto, lo, hi, to_i64(now)],
        )?;
    }
    tx.execute(
        "INSERT INTO revocation_shards (shard_count, shard, version, published_at, next_update) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (shard_count, shard) DO UPDATE SET \
         version = excluded.version, published_at = excluded.published_at, \
         next_update = excluded.next_update WHERE excluded.version > revocation_shards.version",
        params![
            count,
            shard,
            to_i64(content.version),
            to_i64(now),
            to_i64(next_update)
        ],
    )?;
    Ok(())
}

/// The reason recorded on a key whose revocation was learnt from the edge ([`recover`]).
pub const RECOVERED_REASON: &str = "in force at the edge but not in this database (restored from \
     an older copy): recovered from the edge";

/// What [`recover`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Keys of this database whose revocation was not in force here: revoked now, each with a
    /// `key.revoked` event in its account's audit trail.
    pub keys: Vec<KeyId>,
    /// Ids of keys this database does not have, kept in `recovered_revocations`.
    pub unknown: u64,
}

/// Records the revocations `ids` read from a shard the edge holds at list version `version`
/// that this database does not have in force, at `now`. The caller opened the shard with the
/// keyring, so only a holder of the keyring can have revoked them; a revocation is never
/// undone, so each is taken as it is, whatever the shard's age. A key of this database is
/// revoked (its revocation in force, its shard queued, a `key.revoked` event by `system` in its
/// account's trail); an id no key has is kept in `recovered_revocations`, which every shard
/// published carries. The list version moves past `version`, so the next shard published is
/// newer than what the edge holds.
pub fn recover(tx: &Db<'_>, ids: &[KeyId], version: u64, now: u64) -> Result<Recovered> {
    tx.execute(
        "UPDATE revocation_meta SET list_version = max(list_version, ?1) WHERE id = 1",
        [to_i64(version)],
    )?;
    let mut recovered = Recovered::default();
    for &id in ids {
        let text = id.to_string();
        let row: Option<(i64, bool)> = tx
            .prepare_cached("SELECT account_id, revocation_in_force FROM api_keys WHERE id = ?1")?
            .query_row([&text], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((_, true)) => {}
            Some((account_id, false)) => {
                let list_version = next_version(tx, now)?;
                // A revocation time already past (a grace period that ended) is kept.
                tx.execute(
                    "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR \
                     revoked_at > ?2 THEN ?2 ELSE revoked_at END, \
                     revoke_reason = coalesce(revoke_reason, ?3), revocation_version = ?4 \
                     WHERE id = ?1",
                    params![&text, to_i64(now), RECOVERED_REASON, to_i64(list_version)],
                )?;
                enqueue_now(tx, id, list_version)?;
                audit::record(
                    tx,
                    now,
                    Some(to_u64(account_id)?),
                    &Actor::system(),
                    &Event::KeyRevoked {
                        key_id: id,
                        reason: RECOVERED_REASON.to_owned(),
                        list_version,
                        grace_ended: None,
                    },
                )?;
                recovered.keys.push(id);
            }
            None => {
                recovered.unknown += tx
                    .prepare_cached(
                        "INSERT INTO recovered_revocations (key_id, id_top, recovered_at, \
                         list_version) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key_id) DO NOTHING",
                    )?
                    .execute(params![&text, id_top(id), to_i64(now), to_i64(version)])?
                    as u64;
            }
        }
    }
    Ok(recovered)
}

/// The earliest future outbox due time: the end of the next rotation grace period.
pub fn next_due_after(conn: &Db<'_>, now: u64) -> Result<Option<u64>> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT min(due_at) FROM revocation_outbox WHERE due_at > ?1",
            [to_i64(now)],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(v.map(to_u64).transpose()?)
}

/// Outbox rows due but not yet published.
pub fn pending(conn: &Db<'_>, now: u64) -> Result<u64> {
    Ok(to_u64(conn.query_row(
        "SELECT count(*) FROM revocation_outbox WHERE due_at <= ?1",
        [to_i64(now)],
        |r| r.get(0),
    )?)?)
}

/// The last published version of each shard of this layout.
pub fn published(conn: &Db<'_>, count: u16) -> Result<Vec<(u16, u64, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT shard, version, next_update FROM revocation_shards WHERE shard_count = ?1 \
         ORDER BY shard",
    )?;
    let rows = stmt.query_map([count], |r| {
        Ok((r.get(0)?, to_u64(r.get(1)?)?, to_u64(r.get(2)?)?))
    })?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_never_fall_below_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(
            &dir.path().join("v.sqlite3"),
            crate::store::test_audit_keyring(),
        )
        .unwrap();
        let take = |now: u64| {
            store
                .write_blocking(move |tx| next_version(tx, now))
                .unwrap()
        };
        let a = take(1_000);
        let b = take(1_000);
        assert_eq!(a, 1_000_000);
        assert_eq!(b, a + 1, "same second: still strictly increasing");
        assert_eq!(
            take(999),
            b + 1,
            "a clock step back never lowers the version"
        );
        assert_eq!(take(2_000), 2_000_000);
        // A fresh database (say, a reset development setup) at a later time publishes above.
        let dir2 = tempfile::tempdir().unwrap();
        let fresh = crate::store::Store::open(
            &dir2.path().join("v.sqlite3"),
            crate::store::test_audit_keyring(),
        )
        .unwrap();
        let v = fresh.write_blocking(|tx| next_version(tx, 2_001)).unwrap();
        assert!(v > 2_000_000);
    }
}
