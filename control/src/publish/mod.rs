//! Revocation publishing: gets committed revocations to the edge.
//!
//! A revocation commits to SQLite with an outbox row first (`store::revocations`); then the
//! [`Publisher`] loop rebuilds each touched shard from the database, signs it under a new list
//! version and writes it out, and only after a successful write deletes the outbox rows it
//! covered. A crash in between leaves the rows, so the next tick (or the next start) publishes
//! again. What a shard carries is the set of keys whose revocation is in force, a flag set in
//! the revoke's own transaction: publishing follows commit order and never compares a stored
//! time with the clock, so a clock that ran fast, or steps back, neither delays nor undoes an
//! acknowledged revocation. The loop also:
//!
//! - publishes every shard due in a pass at once: one transaction takes their versions and reads
//!   their contents, the pushes run concurrently (eight in flight; one the
//!   edge answers 503 because it is reading too many bodies at once is sent again shortly), and one transaction
//!   records those that succeeded; two commits a pass, not two per shard, so under load (every
//!   shard due every second) a pass takes about one push's time, not one per shard;
//! - coalesces: a shard is written at most once per second (Workers KV's limit per key); a burst
//!   of revocations in one shard becomes one write. The first revocation in a shard not written
//!   in the last second is written in the pass its trigger wakes, at once; a shard held back is
//!   written as soon as its second is over (the loop sleeps until then, not a fixed tick);
//! - heartbeats: every shard is republished every heartbeat (a minute by default), changed or
//!   not, so the edge's copy is never older than that while the control plane runs, and each
//!   stays valid for the list lifetime (a day by default) if it stops; at start every shard is
//!   written. Intervals run on the monotonic clock; failing writes raise an alarm in the log;
//! - reads back before it writes: at start (and after the edge refuses a push with 409) each
//!   shard is read back from the sink and every revocation in it the database lacks is recorded
//!   (`store::revocations::recover`), so a database restored from an older copy never undoes a
//!   revocation; a shard not read back is not written;
//! - waits for rotation grace periods: an outbox row is due only when the old key's grace ends,
//!   and the loop wakes when the next grace period ends.
//!
//! Two [`Sink`]s write shards: the Cloudflare KV REST API ([`KvRestSink`]) and the edge worker's
//! signed sync endpoint ([`EdgeSyncSink`]). Both build an `http::Request` first, so tests check
//! the request without a network. Both also keep the audit trail's checkpoint
//! ([`CheckpointPublisher`]).
//!
//! Rate limits take a separate loop, [`LimitPublisher`], with its own trigger and backoff, so a
//! failing limits push never delays a revocation. It pushes the keys queued in the limits outbox
//! (`store::limits`) to the edge's `PUT /_lynxo/sync/limits` and deletes the rows whose version
//! the edge acknowledged. Only [`EdgeSyncSink`] has that path: with the KV REST sink (or none),
//! policies stay queued and the keys show `rate_limit_pending`.

//!
//! - [`sink`]: where shards, limits and checkpoints are written ([`Sink`]: KV REST, edge sync,
//!   memory).
//! - [`revocations`]: the revocation list's loop ([`Publisher`]).
//! - [`limits`]: the rate-limit pushes' loop ([`LimitPublisher`]).
//! - [`checkpoint`]: the audit chain's anchor ([`CheckpointPublisher`]).

pub mod checkpoint;
pub mod limits;
pub mod revocations;
pub mod sink;

pub use self::sink::{EdgeSyncSink, KvRestSink, MemorySink, Sink, SinkError};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use self::checkpoint::{CheckpointPass, CheckpointPublisher};
pub use self::limits::{LIMITS_FIRST_BACKOFF, LIMITS_MAX_BACKOFF, LimitPass, LimitPublisher};
pub use self::revocations::{
    ALARM_AFTER_MS, DEFAULT_HEARTBEAT_SECS, DEFAULT_LIFETIME_SECS, MIN_WRITE_INTERVAL_MS, Pass,
    Publisher,
};

/// Shortest sleep between passes, so a clock that reads a little behind cannot spin the loop.
pub(crate) const MIN_IDLE: Duration = Duration::from_millis(5);
/// Sleep after a failed pass or a failed write.
pub(crate) const RETRY: Duration = Duration::from_secs(2);

/// Wakes the publisher loops: the revocation loop after a revocation commits, the limits loop
/// after a rate-limit policy changes.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    revocations: Arc<Notify>,
    limits: Arc<Notify>,
}

impl Trigger {
    /// Asks for a revocation publish pass soon.
    pub fn wake(&self) {
        self.revocations.notify_one();
    }

    /// Asks for a limits push soon.
    pub fn wake_limits(&self) {
        self.limits.notify_one();
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.revocations.notified()).await;
    }

    async fn wait_limits(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.limits.notified()).await;
    }
}
