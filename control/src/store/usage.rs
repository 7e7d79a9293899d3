//! Usage counters, last use and the activity log, as the edge's batches report them.
//!
//! A batch is applied in one transaction together with its name `(source, seq)` in
//! `usage_batches`: a retried batch finds its name (or, once the name has expired, a `seq` at
//! or below its source's floor in `usage_sources`) and changes nothing, so retries never count
//! twice, and an acknowledged batch is committed. Counts go to per-minute rows and to per-hour
//! rollups in the same transaction; hour and day queries read the rollups and the daily rows
//! the compaction job (`store::retention`) made of old hours.
//!
//! Stored activity is bounded per key whatever the edge sends: the counts are exact, the rows a
//! sample. Per key, the latest [`Retention::activity_per_key`] forwarded requests and as many of
//! the edge's own answers (refusals and failures), at most 10 of those per minute and outcome;
//! 30 days at most (the compaction job deletes older rows).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::db::{Db, OptionalExtension, ToParam, params};
use shared::key::KeyId;
use shared::usage::{Batch, Outcome, Reason};

use super::Result;
use super::retention::{self, Retention};
use super::{to_i64, to_u64};

/// Denial rows (answers of the edge itself) kept per key by default: the latest ones. Their
/// exact number is in the usage counters. (As many forwarded requests are kept.)
pub const DENIAL_ACTIVITY_KEEP: i64 = retention::ACTIVITY_PER_KEY as i64;
/// Denial rows stored per key, minute and outcome: a sample, so a flood of refused requests
/// cannot push a key's earlier denials out of its log within a minute, nor grow the database.
pub const DENIALS_PER_MINUTE: u32 = 10;
/// Activity (denials included) is kept this long, in seconds.
pub const ACTIVITY_RETENTION: u64 = 30 * 86_400;

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// False: this `(source, seq)` was applied before; nothing changed.
    pub applied: bool,
    /// Count entries applied.
    pub counts: u64,
    /// Activity entries stored.
    pub activity: u64,
    /// Entries (counts, last uses, activity) skipped: unknown key, or a key of another account.
    pub skipped: u64,
    /// Denial entries not stored: their key, minute and outcome already had
    /// [`DENIALS_PER_MINUTE`] rows (they are in the counts).
    pub sampled_out: u64,
}

/// Applies a validated batch at `now_ms`, once per `(source, seq)`, keeping
/// `retention.activity_per_key` activity rows of each kind per key.
pub fn apply_batch(
    tx: &Db<'_>,
    batch: &Batch,
    now_ms: u64,
    retention: &Retention,
) -> Result<Applied> {
    if retention::pruned_through(tx, &batch.source)?.is_some_and(|floor| batch.seq <= floor) {
        // Applied long ago: its name expired, its source's floor remembers it.
        return Ok(Applied::default());
    }
    let fresh = tx
        .prepare_cached(
            "INSERT INTO usage_batches (source, seq, applied_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            batch.source,
            to_i64(batch.seq),
            to_i64(now_ms / 1000)
        ])?;
    if fresh == 0 {
        return Ok(Applied::default());
    }
    let mut owners: HashMap<KeyId, Option<u64>> = HashMap::new();
    let mut owner_stmt = tx.prepare_cached("SELECT account_id FROM api_keys WHERE id = ?1")?;
    let ids = batch
        .counts
        .iter()
        .map(|c| c.key_id)
        .chain(batch.last_used.iter().map(|l| l.key_id))
        .chain(batch.activity.iter().map(|a| a.key_id));
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = owners.entry(id) {
            let owner: Option<i64> = owner_stmt.query_row([id], |r| r.get(0)).optional()?;
            slot.insert(owner.map(to_u64).transpose()?);
        }
    }
    let owns = |key_id: KeyId, account_id: u64| owners.get(&key_id) == Some(&Some(account_id));
    let mut result = Applied {
        applied: true,
        ..Applied::default()
    };

    let mut minute_stmt = tx.prepare_cached(
        "INSERT INTO usage_minutes (key_id, account_id, minute, scope, outcome, n) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (key_id, minute, scope, outcome) DO UPDATE SET n = usage_minutes.n + excluded.n",
    )?;
    let mut hour_stmt = tx.prepare_cached(
        "INSERT INTO usage_hours (key_id, account_id, hour, scope, outcome, n) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (key_id, hour, scope, outcome) DO UPDATE SET n = usage_hours.n + excluded.n",
    )?;
    for c in &batch.counts {
        if !owns(c.key_id, c.account_id) {
            result.skipped += 1;
            continue;
        }
        let scope = c.scope.as_deref().unwrap_or("");
        let account = to_i64(c.account_id);
        let n = to_i64(c.n);
        minute_stmt.execute(params![
            c.key_id,
            account,
            to_i64(c.minute),
            scope,
            c.outcome.name(),
            n
        ])?;
        hour_stmt.execute(params![
            c.key_id,
            account,
            to_i64(c.minute / 60),
            scope,
            c.outcome.name(),
            n
        ])?;
        result.counts += 1;
    }

    let mut last_stmt = tx.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?3 / 1000, last_used_at_ms = ?3, last_used_ip = ?4, \
         last_used_user_agent = ?5 \
         WHERE id = ?1 AND account_id = ?2 AND coalesce(last_used_at_ms, -1) < ?3",
    )?;
    for l in &batch.last_used {
        if !owns(l.key_id, l.account_id) {
            result.skipped += 1;
            continue;
        }
        last_stmt.execute(params![
            l.key_id,
            to_i64(l.account_id),
            to_i64(l.at_ms),
            l.client_ip,
            l.user_agent
        ])?;
    }

    let mut activity_stmt = tx.prepare_cached(
        "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome, \
         client_ip, country, colo, user_agent, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut pruned: HashSet<KeyId> = HashSet::new();
    // Denial rows already stored per (key, minute, outcome), read once per triple.
    let mut denials: HashMap<(KeyId, u64, Outcome), u32> = HashMap::new();
    let mut stored_stmt = tx.prepare_cached(
        "SELECT count(*) FROM activity WHERE key_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 \
         AND outcome = ?4",
    )?;
    for a in &batch.activity {
        if !owns(a.key_id, a.account_id) {
            result.skipped += 1;
            continue;
        }
        if a.outcome.is_denial() {
            let minute = a.at_ms / 60_000;
            let stored = match denials.entry((a.key_id, minute, a.outcome)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let n: u32 = stored_stmt.query_row(
                        params![
                            a.key_id,
                            to_i64(minute * 60_000),
                            to_i64((minute + 1) * 60_000),
                            a.outcome.name()
                        ],
                        |r| r.get(0),
                    )?;
                    e.insert(n)
                }
            };
            if *stored >= DENIALS_PER_MINUTE {
                result.sampled_out += 1;
                continue;
            }
            *stored += 1;
        }
        activity_stmt.execute(params![
            a.key_id,
            to_i64(a.account_id),
            to_i64(a.at_ms),
            a.method,
            a.path,
            a.status,
            a.outcome.name(),
            a.client_ip,
            a.country,
            a.colo,
            a.user_agent,
            a.reason.map(Reason::name)
        ])?;
        result.activity += 1;
        pruned.insert(a.key_id);
    }

    // The latest rows per key of each kind: forwarded requests, and the edge's own answers.
    let origin = serde_json::Value::from(
        Outcome::ALL
            .iter()
            .filter(|o| o.is_allowed())
            .map(|o| o.name())
            .collect::<Vec<_>>(),
    )
    .to_string();
    let mut keep_stmt = tx.prepare_cached(
        "DELETE FROM activity WHERE key_id = ?1 \
         AND (outcome IN (SELECT value FROM json_each(?2))) = ?3 \
         AND id NOT IN (SELECT id FROM activity WHERE key_id = ?1 \
                        AND (outcome IN (SELECT value FROM json_each(?2))) = ?3 \
                        ORDER BY at_ms DESC, id DESC LIMIT ?4)",
    )?;
    let keep = retention.activity_per_key;
    for key in &pruned {
        keep_stmt.execute(params![key, origin, true, keep])?;
        keep_stmt.execute(params![key, origin, false, keep])?;
    }
    if result.skipped > 0 {
        tracing::warn!(
            source = batch.source,
            seq = batch.seq,
            skipped = result.skipped,
            "usage entries for unknown keys or the wrong account were skipped"
        );
    }
    Ok(result)
}

/// Bucket sizes of the usage API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// 60 s, from the per-minute rows.
    Minute,
    /// 3600 s, from the hourly rollups.
    Hour,
    /// 86400 s (UTC days), from the hourly rollups.
    Day,
}

impl Granularity {
    /// Every size, smallest first.
    pub const ALL: [Self; 3] = [Self::Minute, Self::Hour, Self::Day];

    /// Parses `minute`, `hour` or `day`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "minute" => Some(Self::Minute),
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// The name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// Bucket length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

/// Whose usage: one key (of an account) or a whole account.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    /// One key; the account is checked too.
    Key(u64, KeyId),
    /// Every key of the account.
    Account(u64),
}

/// Counts per outcome, in [`Outcome::ALL`] order.
pub type ByOutcome = [u64; Outcome::ALL.len()];

/// Usage in a range of buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// One entry per bucket, oldest first, zeros included.
    pub series: Vec<ByOutcome>,
    /// Requests per route scope (requests with no matched route are not in it).
    pub by_scope: BTreeMap<String, u64>,
    /// Of those, the ones the origin answered (the scope was used).
    pub by_scope_allowed: BTreeMap<String, u64>,
    /// Of those, the ones the edge refused or failed (a `403` names a scope the key lacks).
    pub by_scope_refused: BTreeMap<String, u64>,
    /// Top keys by requests (account queries only): id, name, requests.
    pub top_keys: Vec<(String, String, u64)>,
}

fn outcome_index(name: &str) -> Option<usize> {
    let outcome = Outcome::from_name(name)?;
    Outcome::ALL.iter().position(|o| *o == outcome)
}

/// Usage of `subject` in the buckets `[from, to)` of `granularity` (`from` and `to` aligned).
///
/// Reads across the three granularities, so totals are exact whatever has been compacted:
/// minutes from `usage_retention.minutes_from` on, hours and days before it (a minute query)
/// or everywhere (an hour or day query). A rolled-up hour or day counts in the bucket where it
/// starts, and only if it starts in the range.
pub fn usage(
    conn: &Db<'_>,
    subject: Subject,
    from: u64,
    to: u64,
    granularity: Granularity,
    top: u32,
) -> Result<Usage> {
    let g = granularity.seconds();
    let buckets = usize::try_from((to - from) / g).unwrap_or(0);
    // Each table's range, in its own unit: [lo, hi).
    let (minutes, hours) = match granularity {
        Granularity::Minute => {
            let kept = retention::minutes_from(conn)?;
            let first = (from / 60).max(kept);
            (
                (first, (to / 60).max(first)),
                (from.div_ceil(3600), to.div_ceil(3600).min(kept / 60)),
            )
        }
        Granularity::Hour | Granularity::Day => ((0, 0), (from / 3600, to / 3600)),
    };
    let days = (from.div_ceil(86_400), to.div_ceil(86_400));
    let (filter, account, key) = match subject {
        // `+` keeps the planner on the primary key (one key's rows): the account index covers
        // these queries too and would read every key of the account.
        Subject::Key(account, id) => (
            "u.key_id = ?2 AND +u.account_id = ?1",
            account,
            Some(id.to_string()),
        ),
        Subject::Account(account) => (
            "u.account_id = ?1 AND CAST(?2 AS TEXT) IS NULL",
            account,
            None,
        ),
    };
    // Parameters: ?1 account, ?2 key, then each table's [lo, hi) (?3 to ?8); the series query
    // adds ?9 `from` and ?10 the granularity.
    let arm = |table: &str, unit: &str, seconds: u64, lo: u8| {
        format!(
            "SELECT u.key_id, u.{unit} * {seconds} AS t, u.scope, u.outcome, u.n FROM {table} u \
             WHERE {filter} AND u.{unit} >= ?{lo} AND u.{unit} < ?{}",
            lo + 1
        )
    };
    let source = [
        arm("usage_minutes", "minute", 60, 3),
        arm("usage_hours", "hour", 3600, 5),
        arm("usage_days", "day", 86_400, 7),
    ]
    .join(" UNION ALL ");
    let bounds = [minutes, hours, days].map(|(lo, hi)| (to_i64(lo), to_i64(hi.max(lo))));
    let (account, from, g) = (to_i64(account), to_i64(from), to_i64(g));
    let series_args: [&dyn ToParam; 10] = [
        &account,
        &key,
        &bounds[0].0,
        &bounds[0].1,
        &bounds[1].0,
        &bounds[1].1,
        &bounds[2].0,
        &bounds[2].1,
        &from,
        &g,
    ];
    let args = &series_args[..8];
    let mut usage = Usage {
        series: vec![[0; Outcome::ALL.len()]; buckets],
        ..Usage::default()
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (s.t - ?9) / ?10 AS b, s.outcome, sum(s.n) FROM ({source}) s \
         GROUP BY b, s.outcome"
    ))?;
    let mut rows = stmt.query(&series_args[..])?;
    while let Some(r) = rows.next()? {
        let b: i64 = r.get(0)?;
        let outcome: String = r.get(1)?;
        let n = to_u64(r.get(2)?)?;
        let slot = usize::try_from(b)
            .ok()
            .and_then(|b| usage.series.get_mut(b));
        if let (Some(slot), Some(i)) = (slot, outcome_index(&outcome)) {
            slot[i] += n;
        }
    }
    drop(rows);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT s.scope, s.outcome, sum(s.n) FROM ({source}) s WHERE s.scope != '' \
         GROUP BY s.scope, s.outcome"
    ))?;
    let mut rows = stmt.query(args)?;
    while let Some(r) = rows.next()? {
        let scope: String = r.get(0)?;
        let outcome: String = r.get(1)?;
        let n = to_u64(r.get(2)?)?;
        *usage.by_scope.entry(scope.clone()).or_default() += n;
        // An outcome this build does not know is counted as neither.
        match Outcome::from_name(&outcome).map(Outcome::is_allowed) {
            Some(true) => *usage.by_scope_allowed.entry(scope).or_default() += n,
            Some(false) => *usage.by_scope_refused.entry(scope).or_default() += n,
            None => {}
        }
    }
    drop(rows);
    if matches!(subject, Subject::Account(_)) && top > 0 {
        // Sum first, then look up the names of the few keys kept.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT t.key_id, k.name, t.requests FROM \
             (SELECT s.key_id, sum(s.n) AS requests FROM ({source}) s \
              GROUP BY s.key_id ORDER BY requests DESC, s.key_id LIMIT {top}) t \
             JOIN api_keys k ON k.id = t.key_id ORDER BY t.requests DESC, t.key_id"
        ))?;
        let mut rows = stmt.query(args)?;
        while let Some(r) = rows.next()? {
            usage
                .top_keys
                .push((r.get(0)?, r.get(1)?, to_u64(r.get(2)?)?));
        }
    }
    Ok(usage)
}

/// What the key views show about recent use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Requests in the last 1440 minutes (the current one included).
    pub requests_24h: u64,
    /// Scopes with at least one allowed request since the cut-off.
    pub used_scopes: HashSet<String>,
    /// For a revoked key, the requests refused (401) from the minute of its revocation on;
    /// `requests_24h` leaves those out.
    pub refused_since_revocation: Option<u64>,
}

/// [`KeyStats`] of a page of keys at `now`, with three grouped queries whatever the page size.
/// Scope use counts allowed requests in the hours from `scopes_since` (rounded down to its
/// hour).
pub fn key_stats(
    conn: &Db<'_>,
    ids: &[KeyId],
    now: u64,
    scopes_since: u64,
) -> Result<HashMap<KeyId, KeyStats>> {
    let mut stats: HashMap<KeyId, KeyStats> = HashMap::new();
    if ids.is_empty() {
        return Ok(stats);
    }
    let list = serde_json::Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>())
        .to_string();
    // The last 1440 minutes: whole hours from the rollups, the first partial hour from minutes.
    let first_minute = (now / 60).saturating_sub(1439);
    let first_hour = first_minute.div_ceil(60);
    let mut add = |sql: &str, a: u64, b: u64| -> Result<()> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![list, to_i64(a), to_i64(b)])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if let Some(id) = KeyId::parse_hex(&id) {
                stats.entry(id).or_default().requests_24h += to_u64(r.get(1)?)?;
            }
        }
        Ok(())
    };
    add(
        "SELECT key_id, sum(n) FROM usage_hours \
         WHERE key_id IN (SELECT value FROM json_each(?1)) AND hour >= ?2 AND CAST(?3 AS BIGINT) IS NOT NULL \
         GROUP BY key_id",
        first_hour,
        0,
    )?;
    add(
        "SELECT key_id, sum(n) FROM usage_minutes \
         WHERE key_id IN (SELECT value FROM json_each(?1)) AND minute >= ?2 AND minute < ?3 \
         GROUP BY key_id",
        first_minute,
        first_hour * 60,
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT key_id, scope FROM usage_hours \
         WHERE key_id IN (SELECT value FROM json_each(?1)) AND hour >= ?2 AND scope != '' \
         AND outcome IN ('2xx', '3xx', '4xx', '5xx')",
    )?;
    let mut rows = stmt.query(params![list, to_i64(scopes_since / 3600)])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        if let Some(id) = KeyId::parse_hex(&id) {
            stats.entry(id).or_default().used_scopes.insert(r.get(1)?);
        }
    }
    Ok(stats)
}

/// Requests of `key` refused with a 401 from Unix minute `from_minute` on: whole hours from the
/// rollups, the first partial hour from the minutes (two primary-key range reads).
pub fn refused_since(conn: &Db<'_>, key: KeyId, from_minute: u64) -> Result<u64> {
    let first_hour = from_minute.div_ceil(60);
    let id = key.to_string();
    let hours: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(n), 0) FROM usage_hours \
             WHERE key_id = ?1 AND hour >= ?2 AND outcome = '401'",
        )?
        .query_row(params![id, to_i64(first_hour)], |r| r.get(0))?;
    let minutes: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(n), 0) FROM usage_minutes \
             WHERE key_id = ?1 AND minute >= ?2 AND minute < ?3 AND outcome = '401'",
        )?
        .query_row(
            params![id, to_i64(from_minute), to_i64(first_hour * 60)],
            |r| r.get(0),
        )?;
    Ok(to_u64(hours)? + to_u64(minutes)?)
}

/// One activity-log entry, as the activity API serializes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ActivityEntry)]
pub struct ActivityRow {
    /// Row id: with `at_ms`, the cursor; not serialized.
    #[serde(skip)]
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Request method.
    pub method: String,
    /// Path, without the query string.
    pub path: String,
    /// Status the client received.
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    /// `2xx`, `3xx`, `4xx`, `5xx`, `401`, `403` or `429`.
    #[schema(schema_with = crate::openapi::outcome)]
    pub outcome: String,
    /// Client address, when known.
    #[schema(required = true)]
    pub client_ip: Option<String>,
    /// ISO country code, when known.
    #[schema(required = true)]
    pub country: Option<String>,
    /// Cloudflare data center, when known.
    #[schema(required = true)]
    pub colo: Option<String>,
    /// User agent, when sent.
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// Why the edge answered it itself, as the edge recorded it (`shared::usage::Reason`):
    /// `wrong_environment`, `revoked`, `expired`, `insufficient_scope`, `rate_limit_exceeded`,
    /// `not_found`, `method_not_allowed`, `invalid_path`, `revocation_list_unavailable`,
    /// `origin_unavailable` or `internal_error`; for a row stored before the edge sent it, a
    /// refusal's is derived ([`crate::usage::query::refusal_reason`]). Null for the origin's
    /// answers.
    #[schema(required = true)]
    pub reason: Option<&'static str>,
}

/// A page of one key's activity, newest first: entries at or after `since_ms`, before the
/// cursor `(at_ms, id)`, with one of `outcomes` (all when `None`).
pub fn activity(
    conn: &Db<'_>,
    account_id: u64,
    key: KeyId,
    since_ms: u64,
    before: Option<(u64, i64)>,
    outcomes: Option<&[&str]>,
    limit: u32,
) -> Result<Vec<ActivityRow>> {
    let outcomes = outcomes.map(|o| serde_json::Value::from(o.to_vec()).to_string());
    let (before_at, before_id) =
        before.map_or((None, None), |(at, id)| (Some(to_i64(at)), Some(id)));
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, method, path, status, outcome, client_ip, country, colo, user_agent, \
         reason FROM activity WHERE key_id = ?1 AND account_id = ?2 AND at_ms >= ?3 \
         AND (CAST(?4 AS BIGINT) IS NULL OR at_ms < ?4 OR (at_ms = ?4 AND id < ?5)) \
         AND (CAST(?6 AS TEXT) IS NULL OR outcome IN (SELECT value FROM json_each(?6))) \
         ORDER BY at_ms DESC, id DESC LIMIT ?7",
    )?;
    let rows = stmt.query_map(
        params![
            key.to_string(),
            to_i64(account_id),
            to_i64(since_ms),
            before_at,
            before_id,
            outcomes,
            limit
        ],
        |r| {
            Ok(ActivityRow {
                id: r.get(0)?,
                at_ms: to_u64(r.get(1)?)?,
                method: r.get(2)?,
                path: r.get(3)?,
                status: r.get(4)?,
                outcome: r.get(5)?,
                client_ip: r.get(6)?,
                country: r.get(7)?,
                colo: r.get(8)?,
                user_agent: r.get(9)?,
                // Stored only as a known code; anything else reads as none (then derived).
                reason: r
                    .get::<_, Option<String>>(10)?
                    .as_deref()
                    .and_then(Reason::from_name)
                    .map(Reason::name),
            })
        },
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}
