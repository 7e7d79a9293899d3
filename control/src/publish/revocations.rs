//! The revocation list's loop: rebuilds each touched shard from the database, signs it under a
//! new list version, writes it through the sink, then clears the outbox rows it covered
//! (coalescing, heartbeat and grace periods as the parent module says).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shared::key::KeyId;
use shared::mac::Keyring;
use shared::revocation::{RevocationShard, ShardHeader};

use super::{MIN_IDLE, RETRY, Sink, SinkError, Trigger};
use crate::error::AppError;
use crate::state::Clock;
use crate::store::{PublisherLease, StoreError};
use crate::store::{Store, revocations};

/// The publishing loop's state.
pub struct Publisher {
    store: Store,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Sink>,
    shard_count: u16,
    /// Seconds a shard stays valid for readers.
    lifetime: u64,
    /// Every shard is republished this often (ms), changed or not.
    heartbeat_ms: u64,
    /// Last write attempt per shard, monotonic ms: for coalescing.
    last_attempt_ms: HashMap<u16, u64>,
    /// Last successful write per shard, monotonic ms: for the heartbeat.
    last_ok_ms: HashMap<u16, u64>,
    /// Since when (monotonic ms) writes have been failing, and when that was last reported.
    failing_since_ms: Option<u64>,
    last_alarm_ms: Option<u64>,
    /// Shards to read back from the sink before their next write ([`Publisher::read_back`]):
    /// all of them at start, and one whose push the edge refused with a 409.
    unread: BTreeSet<u16>,
    /// Only the replica holding it publishes ([`Publisher::run`]).
    lease: PublisherLease,
    /// Whether the lease was held at the last pass.
    leased: bool,
}

/// Shards are written at most this often each (Workers KV: one write per key per second).
pub const MIN_WRITE_INTERVAL_MS: u64 = 1000;
/// Shard pushes in flight at once within a pass. The edge reads at most two bodies at once per
/// isolate (`edge::body::MAX_READS_IN_FLIGHT`) and answers a third 503 `sync_busy` at once; its
/// slot is free again as soon as a body is read, long before the push's KV write ends, so a
/// push refused that way is sent again a moment later ([`BUSY_RETRIES`]).
pub const MAX_CONCURRENT_PUSHES: usize = 8;
/// The code of the edge's 503 for a push that came while it was reading as many bodies as it
/// allows (`edge::body`): the only refusal sent again within the pass (with a push that got no
/// answer, a connection reset).
const EDGE_BUSY: &str = "\"sync_busy\"";
/// Times a push answered 503 `sync_busy`, or without an answer, is sent again within the pass, after 25 ms, then twice
/// as long each time (under 0.8 s in all); after that the shard waits for the next pass.
pub const BUSY_RETRIES: u32 = 5;
/// Longest sleep between passes.
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Default list lifetime (a shard's next-update), seconds: a day, so an outage of the control
/// plane (which issues every revocation) does not become an outage of the API; see
/// `docs/revocation-list.md`.
pub const DEFAULT_LIFETIME_SECS: u64 = 86_400;
/// Default heartbeat, seconds: every shard is republished this often, so a healthy edge never
/// holds a list older than about a minute, and one that does raises its staleness alarm.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 60;
/// Writes failing this long (ms) raise the publisher's alarm, then once a minute.
pub const ALARM_AFTER_MS: u64 = 5 * 60 * 1000;

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Shards written, with their versions.
    pub written: Vec<(u16, u64)>,
    /// Shards due but held back by coalescing.
    pub deferred: Vec<u16>,
    /// Shards whose write failed (retried next pass).
    pub failed: Vec<u16>,
    /// When the next pass has work, on the clock's monotonic scale (ms): the earliest moment a
    /// deferred shard may be written again, the end of the next rotation grace period, or the
    /// next heartbeat. `None`: nothing scheduled.
    pub next_due_ms: Option<u64>,
}

impl Pass {
    fn due_at(&mut self, at_ms: u64) {
        self.next_due_ms = Some(self.next_due_ms.map_or(at_ms, |t| t.min(at_ms)));
    }
}

impl Publisher {
    /// A publisher for `shard_count` shards that stay valid `lifetime` seconds, republished every
    /// [`DEFAULT_HEARTBEAT_SECS`] (at most every half lifetime).
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn Sink>,
        shard_count: u16,
        lifetime: u64,
    ) -> Self {
        let lifetime = lifetime.max(2);
        Self {
            store,
            keyring,
            clock,
            sink,
            shard_count,
            lifetime,
            heartbeat_ms: DEFAULT_HEARTBEAT_SECS.min(lifetime / 2) * 1000,
            last_attempt_ms: HashMap::new(),
            last_ok_ms: HashMap::new(),
            failing_since_ms: None,
            last_alarm_ms: None,
            unread: (0..shard_count).collect(),
            lease: PublisherLease::always(),
            leased: false,
        }
    }

    /// Publishes only while `lease` is held ([`crate::store::Store::publisher_lease`]): several
    /// replicas on one PostgreSQL database run this loop, one of them publishes.
    #[must_use]
    pub fn with_lease(mut self, lease: PublisherLease) -> Self {
        self.lease = lease;
        self
    }

    /// This replica just took the lease: what it knew of the edge may be stale (another replica
    /// published meanwhile), so it reads every shard back and writes every one, as at start.
    fn lease_taken(&mut self) {
        self.unread = (0..self.shard_count).collect();
        self.last_ok_ms.clear();
        self.last_attempt_ms.clear();
        self.failing_since_ms = None;
        self.last_alarm_ms = None;
    }

    /// Republishes every shard each `heartbeat` (at least 1 s, at most half the lifetime).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        let ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
        self.heartbeat_ms = ms.clamp(1000, self.lifetime * 500);
        self
    }

    /// One pass: writes every shard that is due and not held back by coalescing. A shard is due
    /// when its outbox holds a revocation in force (or a grace period that has ended), or its
    /// heartbeat has come. Only the outbox decides what is in force; the clock only schedules.
    pub async fn run_once(&mut self) -> Result<Pass, AppError> {
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let mono = self.clock.monotonic_ms();
        let count = self.shard_count;
        let (mut due, next_grace_end) = self
            .store
            .read(move |c| -> Result<_, StoreError> {
                Ok((
                    revocations::shards_due(c, count, now)?,
                    revocations::next_due_after(c, now)?,
                ))
            })
            .await?;
        let mut pass = Pass::default();
        if let Some(at) = next_grace_end {
            pass.due_at(mono + at.saturating_mul(1000).saturating_sub(now_ms));
        }
        // A reading before the last write means the clock stepped back (a clock without a
        // monotonic reading): the interval is unknown, so the work is due.
        for shard in 0..count {
            match self.last_ok_ms.get(&shard) {
                Some(&t) if (t..t + self.heartbeat_ms).contains(&mono) => {
                    pass.due_at(t + self.heartbeat_ms);
                }
                _ if !due.contains(&shard) => due.push(shard),
                _ => {}
            }
        }
        due.sort_unstable();
        // A shard is written only once what the edge holds of it is known here.
        let unread = self.read_back(now).await;
        let mut chosen = Vec::with_capacity(due.len());
        for shard in due {
            if unread.contains(&shard) {
                pass.failed.push(shard);
                continue;
            }
            if let Some(&t) = self.last_attempt_ms.get(&shard) {
                let free_at = t + MIN_WRITE_INTERVAL_MS;
                if (t..free_at).contains(&mono) {
                    pass.deferred.push(shard);
                    pass.due_at(free_at);
                    continue;
                }
            }
            self.last_attempt_ms.insert(shard, mono);
            chosen.push(shard);
        }
        for (shard, result) in self.publish_shards(chosen, now).await {
            match result {
                Ok(version) => {
                    self.last_ok_ms.insert(shard, mono);
                    pass.written.push((shard, version));
                }
                Err(e) => {
                    tracing::warn!(shard, sink = self.sink.name(), error = %format_args!("{e:#}"), "shard publish failed");
                    // The edge holds what this database lacks (revocations, or a newer
                    // version): read it back before the next write.
                    if let Some(SinkError::Status { status: 409, .. }) =
                        e.downcast_ref::<SinkError>()
                    {
                        self.unread.insert(shard);
                    }
                    pass.failed.push(shard);
                }
            }
        }
        self.alarm(&pass, mono);
        Ok(pass)
    }

    /// Reads back the shards in `unread` from the sink and records the revocations they carry
    /// that the database does not have (`revocations::recover`): after a restore from an older
    /// backup, the edge holds revocations made since, and a revocation is never undone. Only a
    /// shard that opens with the keyring is believed; its ids are revoked keys whatever its age
    /// or version, so an old or replayed one teaches nothing false. A shard the sink has none
    /// of, cannot read back (`Unsupported`) or that does not open (its bytes bind no reader
    /// either) is done with. Returns the shards whose read (or recording) failed: they stay
    /// unread, and unwritten.
    async fn read_back(&mut self, now: u64) -> BTreeSet<u16> {
        if self.unread.is_empty() {
            return BTreeSet::new();
        }
        let mut reads = tokio::task::JoinSet::new();
        for &shard in &self.unread {
            let sink = Arc::clone(&self.sink);
            reads.spawn_blocking(move || (shard, sink.get(shard, now)));
        }
        let mut read = Vec::new();
        // A read task that panicked answers nothing: its shard stays unread.
        let mut unread = self.unread.clone();
        while let Some(joined) = reads.join_next().await {
            let Ok((shard, result)) = joined else {
                continue;
            };
            unread.remove(&shard);
            match result {
                Ok(None) | Err(SinkError::Unsupported) => {}
                Ok(Some(bytes)) => match RevocationShard::open(&bytes, &self.keyring) {
                    Ok(list) => {
                        let ids: Vec<KeyId> = list.ids().collect();
                        read.push((shard, list.header().version, ids));
                    }
                    Err(e) => tracing::warn!(
                        shard,
                        error = %e,
                        "the shard the sink holds does not open with the keyring: ignored"
                    ),
                },
                Err(e) => {
                    tracing::warn!(shard, sink = self.sink.name(), error = %e, "shard read-back failed");
                    unread.insert(shard);
                }
            }
        }
        if read.is_empty() {
            self.unread.clone_from(&unread);
            return unread;
        }
        let recorded = read.iter().map(|(shard, _, _)| *shard).collect::<Vec<_>>();
        let recovered = self
            .store
            .write(move |tx| {
                let mut all = revocations::Recovered::default();
                for (_, version, ids) in &read {
                    let r = revocations::recover(tx, ids, *version, now)?;
                    all.keys.extend(r.keys);
                    all.unknown += r.unknown;
                }
                Ok::<_, StoreError>(all)
            })
            .await;
        match recovered {
            Ok(r) if r.keys.is_empty() && r.unknown == 0 => {}
            Ok(r) => tracing::warn!(
                keys = r.keys.len(),
                unknown_keys = r.unknown,
                "revocations in force at the edge were missing from the database (restored from \
                 an older copy?): recorded, with a key.revoked audit event for each known key"
            ),
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "recording revocations read back failed");
                unread.extend(recorded);
            }
        }
        let failed = unread.clone();
        self.unread = unread;
        failed
    }

    /// Raises the alarm when writes have failed for [`ALARM_AFTER_MS`]: revocations acknowledged
    /// since are not in force at the edge, which fails closed once its list's lifetime is over.
    fn alarm(&mut self, pass: &Pass, mono: u64) {
        if pass.failed.is_empty() {
            if !pass.written.is_empty() {
                if self.failing_since_ms.take().is_some() {
                    tracing::info!(sink = self.sink.name(), "revocation publishing recovered");
                }
                self.last_alarm_ms = None;
            }
            return;
        }
        let since = *self.failing_since_ms.get_or_insert(mono);
        let failing_ms = mono - since;
        let quiet = self.last_alarm_ms.is_none_or(|t| mono >= t + 60_000);
        if failing_ms >= ALARM_AFTER_MS && quiet {
            self.last_alarm_ms = Some(mono);
            let oldest_ok_s = (0..self.shard_count)
                .map(|s| self.last_ok_ms.get(&s).map_or(u64::MAX, |&t| mono - t))
                .max()
                .unwrap_or(0)
                / 1000;
            tracing::error!(
                sink = self.sink.name(),
                failing_s = failing_ms / 1000,
                oldest_shard_age_s = oldest_ok_s,
                lifetime_s = self.lifetime,
                failed_shards = pass.failed.len(),
                "ALARM revocation publishing is failing: revocations acknowledged since are not \
                 in force at the edge, which fails closed when its shards' lifetime ends"
            );
        }
    }

    /// Publishes `shards` (ascending) in one pass: one transaction takes a version for each and
    /// reads their contents, the pushes run concurrently (at most [`MAX_CONCURRENT_PUSHES`] at
    /// once), and one transaction records the pushes that succeeded and clears the outbox rows
    /// they covered. A failed push leaves its rows for the next pass. The first transaction
    /// commits before any push, so a version once sent is never taken again, even after a crash;
    /// passes never overlap, so each shard's pushes reach the edge in version order.
    async fn publish_shards(&self, shards: Vec<u16>, now: u64) -> Vec<(u16, anyhow::Result<u64>)> {
        if shards.is_empty() {
            return Vec::new();
        }
        let count = self.shard_count;
        let prepare = shards.clone();
        let prepared = self
            .store
            .write(move |tx| {
                prepare
                    .iter()
                    .map(|&shard| revocations::prepare_shard(tx, shard, count, now))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await;
        let contents = match prepared {
            Ok(contents) => contents,
            Err(e) => {
                let e = format!("{:#}", anyhow::Error::new(e).context("prepare shards"));
                return shards
                    .into_iter()
                    .map(|shard| (shard, Err(anyhow::anyhow!("{e}"))))
                    .collect();
            }
        };
        let next_update = now + self.lifetime;
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PUSHES));
        let mut pushes = tokio::task::JoinSet::new();
        for (shard, content) in shards.iter().copied().zip(contents) {
            let header = ShardHeader {
                shard,
                shard_count: count,
                version: content.version,
                issued_at: now,
                next_update,
            };
            let encoded = (|| -> anyhow::Result<Vec<u8>> {
                let list =
                    RevocationShard::new(header, self.keyring.active_kid(), content.ids.clone())?;
                Ok(list.encode(&self.keyring)?)
            })();
            let (sink, limit) = (Arc::clone(&self.sink), Arc::clone(&limit));
            pushes.spawn(async move {
                let pushed = async {
                    let bytes = encoded?;
                    let _slot = limit.acquire_owned().await?;
                    let bytes = Arc::new(bytes);
                    let mut retries = 0;
                    loop {
                        let (sink, bytes) = (Arc::clone(&sink), Arc::clone(&bytes));
                        let put = move || sink.put(shard, &bytes, now);
                        match tokio::task::spawn_blocking(put).await? {
                            Err(SinkError::Status { status: 503, body })
                                if retries < BUSY_RETRIES && body.contains(EDGE_BUSY) =>
                            {
                                tokio::time::sleep(Duration::from_millis(25 << retries)).await;
                                retries += 1;
                            }
                            // A kept-alive connection the edge had closed: sent again on
                            // a new one (a push is idempotent), within the same budget.
                            Err(SinkError::Transport(_)) if retries < BUSY_RETRIES => {
                                tokio::time::sleep(Duration::from_millis(25 << retries)).await;
                                retries += 1;
                            }
                            pushed => return anyhow::Ok(pushed?),
                        }
                    }
                }
                .await;
                (shard, content, pushed)
            });
        }
        let mut results = Vec::with_capacity(shards.len());
        let mut pushed = Vec::new();
        while let Some(joined) = pushes.join_next().await {
            match joined {
                Ok((shard, content, Ok(()))) => pushed.push((shard, content)),
                Ok((shard, _, Err(e))) => results.push((shard, Err(e))),
                Err(e) => tracing::error!(error = %e, "a shard push task failed"),
            }
        }
        pushed.sort_unstable_by_key(|(shard, _)| *shard);
        let marks = pushed.clone();
        let marked = self
            .store
            .write(move |tx| {
                marks.iter().try_for_each(|(shard, content)| {
                    revocations::mark_published(tx, *shard, count, content, now, next_update)
                })
            })
            .await;
        match marked {
            Ok(()) => {
                for (shard, content) in pushed {
                    tracing::info!(
                        shard,
                        version = content.version,
                        ids = content.ids.len(),
                        sink = self.sink.name(),
                        "shard published"
                    );
                    results.push((shard, Ok(content.version)));
                }
            }
            Err(e) => {
                let e = format!("{:#}", anyhow::Error::new(e).context("mark published"));
                results.extend(
                    pushed
                        .into_iter()
                        .map(|(shard, _)| (shard, Err(anyhow::anyhow!("{e}")))),
                );
            }
        }
        // A task that panicked answered nothing: count its shard as failed.
        for &shard in &shards {
            if !results.iter().any(|(s, _)| *s == shard) {
                results.push((shard, Err(anyhow::anyhow!("the push task failed"))));
            }
        }
        results.sort_unstable_by_key(|(shard, _)| *shard);
        results
    }

    /// How long the loop sleeps after `pass` (unless a trigger wakes it earlier): until the
    /// pass's next due moment, at most 5 s (the heartbeat's resolution), at most 2 s after a
    /// failed write.
    pub fn idle_after(&self, pass: &Pass) -> Duration {
        let cap = if pass.failed.is_empty() {
            MAX_IDLE
        } else {
            RETRY
        };
        let until_due = pass.next_due_ms.map_or(cap, |at| {
            Duration::from_millis(at.saturating_sub(self.clock.monotonic_ms()))
        });
        until_due.clamp(MIN_IDLE, cap)
    }

    /// Runs passes forever: after each wake-up, when deferred work falls due, and at least every
    /// few seconds (every second on a shared database: another replica's revocations wake no
    /// trigger here). A pass runs only while this replica holds the lease; one that lacks it
    /// tries again at its next pass, so when the holder dies another takes over within a poll.
    pub async fn run(mut self, trigger: Trigger) {
        loop {
            let held = self.lease.hold().await;
            if held && !self.leased {
                tracing::info!(
                    sink = self.sink.name(),
                    "this replica publishes revocations"
                );
                self.lease_taken();
            } else if !held && self.leased {
                tracing::warn!("publisher lease lost: another replica publishes revocations");
            }
            self.leased = held;
            let wait = if !held {
                MAX_IDLE
            } else {
                match self.run_once().await {
                    Ok(pass) => self.idle_after(&pass),
                    Err(e) => {
                        tracing::warn!(error = %format_args!("{e:#}"), "publish pass failed");
                        RETRY
                    }
                }
            };
            trigger.wait(self.lease.cap(wait)).await;
        }
    }
}
