//! Bounded growth: how long usage is kept at each granularity, and the compaction job that
//! keeps it so, a bounded step per transaction.
//!
//! Per-minute counts are kept [`Retention::minute_days`], per-hour counts
//! [`Retention::hour_days`] and then rolled up into per-day counts kept for ever; activity
//! older than [`usage::ACTIVITY_RETENTION`] and applied batch names older than
//! [`Retention::batch_days`] are deleted. Every count is in exactly one of `usage_hours` and
//! `usage_days` (a roll-up step moves a key's hours into days in one transaction), and every
//! minute row is a copy of detail its hour holds, so deleting minutes loses no total and
//! queries stay exact across granularities (`usage::usage`). A pass walks the keys in order
//! and commits every [`STEP_ROWS`] rows or so, so ingestion waits for one small transaction at
//! most, and a late batch (the edge retried it for days) only adds rows the next pass rolls up.
//!
//! Why replays stay refused after their batch names are deleted: `docs/control-plane.md`,
//! "Retention".

use crate::store::db::{Db, OptionalExtension, params};

use super::{Result, to_i64, to_u64, usage};

/// Rows (or keys visited) per compaction transaction, unless told otherwise.
pub const STEP_ROWS: u64 = 5_000;

/// Activity rows kept per key of each kind, unless told otherwise.
pub const ACTIVITY_PER_KEY: u32 = 200;

/// How long usage is kept. [`Retention::default`] is what `control serve` uses unless told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days of per-minute counts (at least 2: the key list's 24-hour totals read minutes).
    pub minute_days: u32,
    /// Days of per-hour counts, then rolled up into days (at least 31 and at least
    /// `minute_days`: the key views' 30-day scope use reads hours).
    pub hour_days: u32,
    /// Activity rows kept per key of each kind (forwarded requests; the edge's own answers).
    pub activity_per_key: u32,
    /// Days an applied batch's name is kept (at least 1).
    pub batch_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            minute_days: 7,
            hour_days: 90,
            activity_per_key: ACTIVITY_PER_KEY,
            batch_days: 30,
        }
    }
}

/// A retention the queries could not answer exactly with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// Fewer than 2 days of minutes.
    #[error("minute retention must be at least 2 days")]
    MinuteDays,
    /// Fewer than 31 days of hours, or fewer than of minutes.
    #[error("hour retention must be at least 31 days and at least the minute retention")]
    HourDays,
    /// No activity kept, or over 100,000 rows per key.
    #[error("activity per key must be 1 to 100000")]
    ActivityPerKey,
    /// Batch names kept less than a day.
    #[error("batch retention must be at least 1 day")]
    BatchDays,
}

impl Retention {
    /// Refuses a retention that would make an answer inexact.
    pub fn validate(&self) -> Result<(), RetentionError> {
        if self.minute_days < 2 {
            return Err(RetentionError::MinuteDays);
        }
        if self.hour_days < 31 || self.hour_days < self.minute_days {
            return Err(RetentionError::HourDays);
        }
        if !(1..=100_000).contains(&self.activity_per_key) {
            return Err(RetentionError::ActivityPerKey);
        }
        if self.batch_days < 1 {
            return Err(RetentionError::BatchDays);
        }
        Ok(())
    }

    /// The first minute kept at `now` (on an hour).
    pub fn minute_cutoff(&self, now: u64) -> u64 {
        (now / 3600).saturating_sub(u64::from(self.minute_days) * 24) * 60
    }

    /// The first hour not rolled up at `now` (on a UTC day).
    pub fn hour_cutoff(&self, now: u64) -> u64 {
        (now / 86_400).saturating_sub(u64::from(self.hour_days)) * 24
    }
}

/// Where a compaction pass is: each step continues from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Deleting expired minutes, keys after this one (`""`: from the start).
    Minutes(String),
    /// Rolling expired hours up into days, keys after this one.
    Hours(String),
    /// Deleting expired activity.
    Activity,
    /// Deleting expired batch names.
    Batches,
    /// The pass is over.
    Done,
}

impl Phase {
    /// The start of a pass.
    pub fn start() -> Self {
        Self::Minutes(String::new())
    }
}

/// What compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Transactions committed.
    pub steps: u64,
    /// Minute rows deleted.
    pub minutes_deleted: u64,
    /// Hour rows moved into days.
    pub hours_rolled: u64,
    /// Activity rows deleted.
    pub activity_deleted: u64,
    /// Batch names deleted.
    pub batches_deleted: u64,
}

impl Compacted {
    fn add(&mut self, other: Self) {
        self.steps += other.steps;
        self.minutes_deleted += other.minutes_deleted;
        self.hours_rolled += other.hours_rolled;
        self.activity_deleted += other.activity_deleted;
        self.batches_deleted += other.batches_deleted;
    }
}

/// The first key after `after` with rows in `table`, by its primary key.
fn next_key(tx: &Db<'_>, table: &str, after: &str) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT key_id FROM {table} WHERE key_id > ?1 ORDER BY key_id LIMIT 1"
        ))?
        .query_row([after], |r| r.get(0))
        .optional()?)
}

/// The last unit (minute or hour) of `key`'s rows before `cutoff` to handle in a step that may
/// touch `budget` more rows: `cutoff - 1` when all fit, else the unit of the row after the
/// budget (that unit included, so a step always makes progress).
fn step_bound(
    tx: &Db<'_>,
    table: &str,
    unit: &str,
    key: &str,
    cutoff: u64,
    budget: u64,
) -> Result<Option<(u64, bool)>> {
    let oldest: Option<i64> = tx
        .prepare_cached(&format!(
            "SELECT {unit} FROM {table} WHERE key_id = ?1 AND {unit} < ?2 ORDER BY {unit} LIMIT 1"
        ))?
        .query_row(params![key, to_i64(cutoff)], |r| r.get(0))
        .optional()?;
    if oldest.is_none() {
        return Ok(None);
    }
    let beyond: Option<i64> = tx
        .prepare_cached(&format!(
            "SELECT {unit} FROM {table} WHERE key_id = ?1 AND {unit} < ?2 \
             ORDER BY {unit} LIMIT 1 OFFSET ?3"
        ))?
        .query_row(params![key, to_i64(cutoff), to_i64(budget)], |r| r.get(0))
        .optional()?;
    Ok(Some(match beyond {
        None => (cutoff - 1, true),
        Some(unit) => (to_u64(unit)?, false),
    }))
}

/// Walks the keys of `table` after `after`, calling `expire(key, last)` for each key with rows
/// before `cutoff` (`last`: the last unit to handle in this step), until about `budget` rows
/// or keys were touched. Returns where the walk stops (`None`: past the last key) and the rows
/// `expire` reported.
fn walk_keys(
    tx: &Db<'_>,
    table: &str,
    unit: &str,
    mut after: String,
    cutoff: u64,
    budget: u64,
    mut expire: impl FnMut(&str, u64) -> Result<u64>,
) -> Result<(Option<String>, u64)> {
    let (mut spent, mut rows) = (0, 0);
    while spent < budget {
        let Some(key) = next_key(tx, table, &after)? else {
            return Ok((None, rows));
        };
        spent += 1;
        if let Some((last, whole)) = step_bound(tx, table, unit, &key, cutoff, budget - spent)? {
            let n = expire(&key, last)?;
            spent += n;
            rows += n;
            if !whole {
                // This key has more: the next step starts with it again.
                break;
            }
        }
        after = key;
    }
    Ok((Some(after), rows))
}

/// One bounded step of a pass at `now`: at most about `budget` rows (or keys visited) in this
/// transaction. Returns where the next step starts.
pub fn step(
    tx: &Db<'_>,
    retention: &Retention,
    now: u64,
    phase: Phase,
    budget: u64,
) -> Result<(Phase, Compacted)> {
    let budget = budget.max(1);
    let mut done = Compacted {
        steps: 1,
        ..Compacted::default()
    };
    match phase {
        Phase::Minutes(after) => {
            let cutoff = retention.minute_cutoff(now);
            if after.is_empty() {
                // Before any minute goes: from here on, queries read hours before the cutoff.
                tx.prepare_cached(
                    "UPDATE usage_retention SET minutes_from = max(minutes_from, ?1)",
                )?
                .execute([to_i64(cutoff)])?;
            }
            let (next, n) = walk_keys(
                tx,
                "usage_minutes",
                "minute",
                after,
                cutoff,
                budget,
                |key, last| {
                    Ok(tx
                        .prepare_cached(
                            "DELETE FROM usage_minutes WHERE key_id = ?1 AND minute <= ?2",
                        )?
                        .execute(params![key, to_i64(last)])? as u64)
                },
            )?;
            done.minutes_deleted = n;
            Ok((
                next.map_or(Phase::Hours(String::new()), Phase::Minutes),
                done,
            ))
        }
        Phase::Hours(after) => {
            let cutoff = retention.hour_cutoff(now);
            let (next, n) = walk_keys(
                tx,
                "usage_hours",
                "hour",
                after,
                cutoff,
                budget,
                |key, last| {
                    // Moved in one transaction: the count is in the hours or in the days, never
                    // both, never neither.
                    tx.prepare_cached(
                        "INSERT INTO usage_days (key_id, account_id, day, scope, outcome, n) \
                     SELECT key_id, account_id, hour / 24, scope, outcome, sum(n) FROM usage_hours \
                     WHERE key_id = ?1 AND hour <= ?2 \
                     GROUP BY key_id, account_id, hour / 24, scope, outcome \
                     ON CONFLICT (key_id, day, scope, outcome) DO UPDATE SET n = usage_days.n + excluded.n",
                    )?
                    .execute(params![key, to_i64(last)])?;
                    Ok(tx
                        .prepare_cached("DELETE FROM usage_hours WHERE key_id = ?1 AND hour <= ?2")?
                        .execute(params![key, to_i64(last)])? as u64)
                },
            )?;
            done.hours_rolled = n;
            Ok((next.map_or(Phase::Activity, Phase::Hours), done))
        }
        Phase::Activity => {
            let cutoff_ms = now.saturating_sub(usage::ACTIVITY_RETENTION) * 1000;
            let n = tx
                .prepare_cached(
                    "DELETE FROM activity WHERE id IN \
                     (SELECT id FROM activity WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
                )?
                .execute(params![to_i64(cutoff_ms), to_i64(budget)])?;
            done.activity_deleted = n as u64;
            let next = if (n as u64) < budget {
                Phase::Batches
            } else {
                Phase::Activity
            };
            Ok((next, done))
        }
        Phase::Batches => {
            let cutoff = to_i64(now.saturating_sub(u64::from(retention.batch_days) * 86_400));
            // The floor first, from the rows about to go, then the rows.
            tx.prepare_cached(
                "INSERT INTO usage_sources (source, pruned_through) \
                 SELECT source, max(seq) FROM \
                 (SELECT source, seq FROM usage_batches WHERE applied_at < ?1 \
                  ORDER BY applied_at LIMIT ?2) AS due \
                 WHERE true GROUP BY source \
                 ON CONFLICT (source) DO UPDATE \
                 SET pruned_through = max(usage_sources.pruned_through, excluded.pruned_through)",
            )?
            .execute(params![cutoff, to_i64(budget)])?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM usage_batches WHERE (source, seq) IN \
                     (SELECT source, seq FROM usage_batches WHERE applied_at < ?1 \
                      ORDER BY applied_at LIMIT ?2)",
                )?
                .execute(params![cutoff, to_i64(budget)])?;
            done.batches_deleted = n as u64;
            let next = if (n as u64) < budget {
                Phase::Done
            } else {
                Phase::Batches
            };
            Ok((next, done))
        }
        Phase::Done => Ok((Phase::Done, Compacted::default())),
    }
}

/// Runs a whole pass at `now` on `store`, one step per write transaction: other writes
/// (ingestion, key changes) take their turn between steps. [`compact_blocking`] on a blocking
/// thread.
pub async fn compact(
    store: &super::Store,
    retention: Retention,
    now: u64,
    budget: u64,
) -> Result<Compacted> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || compact_blocking(&store, retention, now, budget)).await?
}

/// A whole pass, for callers off the async runtime (the `compact` command; [`compact`]).
pub fn compact_blocking(
    store: &super::Store,
    retention: Retention,
    now: u64,
    budget: u64,
) -> Result<Compacted> {
    let mut phase = Phase::start();
    let mut total = Compacted::default();
    while phase != Phase::Done {
        let (next, done) =
            store.write_blocking(move |tx| step(tx, &retention, now, phase, budget))?;
        total.add(done);
        phase = next;
    }
    Ok(total)
}

/// `serve`'s compaction loop: a pass at start and then every `every`. A failed pass is logged
/// and tried again at the next tick (nothing it committed is undone, nothing is half-moved).
pub async fn run(
    store: super::Store,
    clock: std::sync::Arc<dyn crate::Clock>,
    retention: Retention,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match compact(&store, retention, clock.now(), STEP_ROWS).await {
            Ok(done) => tracing::info!(
                steps = done.steps,
                minutes_deleted = done.minutes_deleted,
                hours_rolled = done.hours_rolled,
                activity_deleted = done.activity_deleted,
                batches_deleted = done.batches_deleted,
                "usage compacted"
            ),
            Err(e) => {
                tracing::error!(error = %e, "usage compaction failed; next pass at the next tick")
            }
        }
    }
}

/// `usage_retention.minutes_from`: minute rows before it may be gone.
pub fn minutes_from(conn: &crate::store::db::Db<'_>) -> Result<u64> {
    let v: i64 = conn
        .prepare_cached("SELECT minutes_from FROM usage_retention WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(to_u64(v)?)
}

/// The highest `seq` of `source` whose name was deleted: a batch at or below it was applied.
pub fn pruned_through(tx: &Db<'_>, source: &str) -> Result<Option<u64>> {
    let v: Option<i64> = tx
        .prepare_cached("SELECT pruned_through FROM usage_sources WHERE source = ?1")?
        .query_row([source], |r| r.get(0))
        .optional()?;
    Ok(v.map(to_u64).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_that_would_make_answers_inexact_are_refused() {
        let ok = Retention::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                Retention {
                    minute_days: 1,
                    ..ok
                },
                RetentionError::MinuteDays,
            ),
            (
                Retention {
                    hour_days: 30,
                    ..ok
                },
                RetentionError::HourDays,
            ),
            (
                Retention {
                    minute_days: 40,
                    hour_days: 35,
                    ..ok
                },
                RetentionError::HourDays,
            ),
            (
                Retention {
                    activity_per_key: 0,
                    ..ok
                },
                RetentionError::ActivityPerKey,
            ),
            (
                Retention {
                    batch_days: 0,
                    ..ok
                },
                RetentionError::BatchDays,
            ),
        ];
        for (r, e) in cases {
            assert_eq!(r.validate(), Err(e), "{r:?}");
        }
    }

    #[test]
    fn cutoffs_fall_on_hours_and_days() {
        let r = Retention::default();
        let now = 20_000 * 86_400 + 5 * 3600 + 17 * 60 + 3;
        assert_eq!(r.minute_cutoff(now), ((20_000 - 7) * 24 + 5) * 60);
        assert_eq!(r.hour_cutoff(now), (20_000 - 90) * 24);
    }
}
