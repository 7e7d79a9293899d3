//! The rate-limit pushes' loop: the limits outbox to the edge's `PUT /_lynxo/sync/limits`, with
//! its own trigger and backoff so a failing push never delays a revocation.

use std::sync::Arc;
use std::time::Duration;

use shared::limits::{self, LimitPush};

use super::{MIN_IDLE, Sink, Trigger};
use crate::error::AppError;
use crate::state::Clock;
use crate::store::{PublisherLease, Store, limits as limits_db};

/// First wait after a failed limits push; doubles per failure up to [`LIMITS_MAX_BACKOFF`].
pub const LIMITS_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between failed limits pushes.
pub const LIMITS_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest sleep of the limits loop with nothing to push (a safety net: commits wake it).
const LIMITS_IDLE: Duration = Duration::from_secs(30);

/// What a limits pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LimitPass {
    /// Policies the edge acknowledged (and whose outbox rows were deleted if still current).
    pub pushed: usize,
    /// A push failed; the rows stay.
    pub failed: bool,
    /// Policies still queued after the pass.
    pub pending: u64,
}

/// The limits publishing loop's state.
pub struct LimitPublisher {
    store: Store,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Sink>,
    backoff: Duration,
    /// Only the replica holding it pushes ([`LimitPublisher::run`]).
    lease: PublisherLease,
}

impl LimitPublisher {
    /// A publisher that pushes through `sink` (only [`EdgeSyncSink`] can deliver limits).
    pub fn new(store: Store, clock: Arc<dyn Clock>, sink: Arc<dyn Sink>) -> Self {
        Self {
            store,
            clock,
            sink,
            backoff: LIMITS_FIRST_BACKOFF,
            lease: PublisherLease::always(),
        }
    }

    /// Pushes only while `lease` is held ([`crate::store::Store::publisher_lease`]).
    #[must_use]
    pub fn with_lease(mut self, lease: PublisherLease) -> Self {
        self.lease = lease;
        self
    }

    /// One pass: pushes every queued policy, [`limits::MAX_PUSH_ENTRIES`] per request, and
    /// deletes the rows the edge acknowledged. Stops at the first failed push.
    pub async fn run_once(&mut self) -> Result<LimitPass, AppError> {
        let mut pass = LimitPass::default();
        if !self.sink.supports_limits() {
            pass.pending = self.store.read(limits_db::pending_count).await?;
            return Ok(pass);
        }
        loop {
            let batch = self
                .store
                .read(|c| limits_db::pending(c, limits::MAX_PUSH_ENTRIES))
                .await?;
            if batch.is_empty() {
                break;
            }
            let full = batch.len() == limits::MAX_PUSH_ENTRIES;
            let push = LimitPush { limits: batch };
            let body = serde_json::to_vec(&push).map_err(AppError::internal)?;
            let now = self.clock.now();
            let sink = Arc::clone(&self.sink);
            let sent = tokio::task::spawn_blocking(move || sink.put_limits(&body, now))
                .await
                .map_err(AppError::internal)?;
            if let Err(e) = sent {
                tracing::warn!(sink = self.sink.name(), error = %e, entries = push.limits.len(), "limits push failed");
                pass.failed = true;
                break;
            }
            let entries = push.limits.len();
            let deleted = self
                .store
                .write(move |tx| limits_db::acknowledged(tx, &push.limits))
                .await?;
            tracing::info!(entries, deleted, sink = self.sink.name(), "limits pushed");
            pass.pushed += entries;
            // A row changed during the push stays queued: push again only when the batch was
            // full, otherwise the next wake-up takes the newer version.
            if !full {
                break;
            }
        }
        pass.pending = self.store.read(limits_db::pending_count).await?;
        Ok(pass)
    }

    /// How long to wait after `pass`: the backoff after a failure (doubling each time), else
    /// until woken, at most 30 s. Changes the backoff state.
    pub fn idle_after(&mut self, pass: &Result<LimitPass, AppError>) -> Duration {
        match pass {
            Ok(p) if !p.failed => {
                self.backoff = LIMITS_FIRST_BACKOFF;
                if p.pending > 0 && self.sink.supports_limits() {
                    // Rows changed while they were pushed: take them now.
                    MIN_IDLE
                } else {
                    LIMITS_IDLE
                }
            }
            _ => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(LIMITS_MAX_BACKOFF);
                wait
            }
        }
    }

    /// Runs passes forever: when woken by a policy change, after a backoff when a push failed,
    /// and at least every 30 s (every second on a shared database, whose other replicas' changes
    /// wake no trigger here). A pass runs only while this replica holds the lease.
    pub async fn run(mut self, trigger: Trigger) {
        if !self.sink.supports_limits() {
            tracing::warn!(
                sink = self.sink.name(),
                "this publisher cannot push rate limits (only --edge-sync-url can): key policies \
                 stay pending"
            );
        }
        loop {
            if !self.lease.hold().await {
                trigger.wait_limits(self.lease.cap(LIMITS_IDLE)).await;
                continue;
            }
            let pass = self.run_once().await;
            if let Err(e) = &pass {
                tracing::warn!(error = %format_args!("{e:#}"), "limits pass failed");
            }
            let wait = self.idle_after(&pass);
            trigger.wait_limits(self.lease.cap(wait)).await;
        }
    }
}
