//! Revocation publishing: gets committed revocations to the edge.
//!
//! A revocation commits to SQLite with an outbox row first (`store::revocations`); then the
//! [`Publisher`] loop rebuilds each touched shard from the database, signs it under a new list
//! version and writes it out, and only after a successful write deletes the outbox rows it
//! covered. A crash in between leaves the rows, so the next tick (or the next start) publishes
//! again. The loop also:
//!
//! - coalesces: a shard is written at most once per second (Workers KV's limit per key); a burst
//!   of revocations in one shard becomes one write. The first revocation in a shard not written
//!   in the last second is written in the pass its trigger wakes, at once; a shard held back is
//!   written as soon as its second is over (the loop sleeps until then, not a fixed tick);
//! - heartbeats: a shard is republished when half its lifetime has passed, long before readers
//!   would refuse it as stale; at start every shard not yet published in this layout is written;
//! - waits for rotation grace periods: an outbox row is due only when the old key's grace ends,
//!   and the loop wakes when the next grace period ends.
//!
//! Two [`Sink`]s write shards: the Cloudflare KV REST API ([`KvRestSink`]) and the edge worker's
//! signed sync endpoint ([`EdgeSyncSink`]). Both build an `http::Request` first, so tests check
//! the request without a network.
//!
//! Rate limits take a separate loop, [`LimitPublisher`], with its own trigger and backoff, so a
//! failing limits push never delays a revocation. It pushes the keys queued in the limits outbox
//! (`store::limits`) to the edge's `PUT /_lynxo/sync/limits` and deletes the rows whose version
//! the edge acknowledged. Only [`EdgeSyncSink`] has that path: with the KV REST sink (or none),
//! policies stay queued and the keys show `rate_limit_pending`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::limits::{self, LimitPush};
use shared::mac::Keyring;
use shared::revocation::{self, RevocationShard, ShardHeader};
use tokio::sync::Notify;

use crate::Clock;
use crate::error::AppError;
use crate::store::{Store, limits as limits_db, revocations};

/// Shortest sleep between passes, so a clock that reads a little behind cannot spin the loop.
const MIN_IDLE: Duration = Duration::from_millis(5);
/// Sleep after a failed pass or a failed write.
const RETRY: Duration = Duration::from_secs(2);

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

/// Why a shard could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The request could not be sent or got no answer.
    #[error("transport: {0}")]
    Transport(String),
    /// The receiver answered with a failure status.
    #[error("receiver answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// This sink has no way to deliver that (the KV REST API has no limits path).
    #[error("this sink cannot deliver rate limits")]
    Unsupported,
}

/// Where shards are written. Blocking: called from `spawn_blocking`.
pub trait Sink: Send + Sync + 'static {
    /// Writes shard `index`'s signed bytes, at `now` (Unix seconds).
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError>;
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Whether [`Sink::put_limits`] can deliver.
    fn supports_limits(&self) -> bool {
        false
    }
    /// Pushes a JSON [`LimitPush`] body at `now`.
    fn put_limits(&self, _body: &[u8], _now: u64) -> Result<(), SinkError> {
        Err(SinkError::Unsupported)
    }
}

/// Sends a built request with a shared agent and maps non-2xx answers to errors.
fn send(agent: &ureq::Agent, request: http::Request<Vec<u8>>) -> Result<(), SinkError> {
    match agent.run(request) {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(mut response) => Err(SinkError::Status {
            status: response.status().as_u16(),
            body: response
                .body_mut()
                .read_to_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
        }),
        Err(e) => Err(SinkError::Transport(e.to_string())),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Writes shards through the Cloudflare KV REST API (production).
pub struct KvRestSink {
    /// API base, `https://api.cloudflare.com/client/v4`.
    pub base_url: String,
    /// Cloudflare account id.
    pub account_id: String,
    /// KV namespace id (the worker's `REVOCATIONS` binding).
    pub namespace_id: String,
    /// API token with `Workers KV Storage:Edit`.
    pub api_token: String,
    agent: ureq::Agent,
}

impl KvRestSink {
    /// A sink for one namespace.
    pub fn new(base_url: &str, account_id: &str, namespace_id: &str, api_token: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            account_id: account_id.to_owned(),
            namespace_id: namespace_id.to_owned(),
            api_token: api_token.to_owned(),
            agent: agent(),
        }
    }

    /// The request that writes shard `index`: `PUT .../values/<url-encoded key>`.
    pub fn request(&self, index: u16, body: &[u8]) -> Result<http::Request<Vec<u8>>, SinkError> {
        let key = revocation::kv_key(index).replace('/', "%2F");
        http::Request::put(format!(
            "{}/accounts/{}/storage/kv/namespaces/{}/values/{key}",
            self.base_url, self.account_id, self.namespace_id
        ))
        .header("authorization", format!("Bearer {}", self.api_token))
        .header("content-type", "application/octet-stream")
        .body(body.to_vec())
        .map_err(|e| SinkError::Transport(e.to_string()))
    }
}

impl Sink for KvRestSink {
    fn put(&self, index: u16, body: &[u8], _now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.request(index, body)?)
    }

    fn name(&self) -> &'static str {
        "kv-rest"
    }
}

/// Pushes shards to the edge worker's signed sync endpoint, which writes KV through its binding
/// (local development, and usable in production).
pub struct EdgeSyncSink {
    /// The worker's base URL, `http://127.0.0.1:8787`.
    pub base_url: String,
    keyring: Arc<Keyring>,
    agent: ureq::Agent,
}

impl EdgeSyncSink {
    /// A sink that signs pushes with `keyring`'s sync subkey.
    pub fn new(base_url: &str, keyring: Arc<Keyring>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            keyring,
            agent: agent(),
        }
    }

    /// The signed request that pushes shard `index` at `now`.
    pub fn request(
        &self,
        index: u16,
        body: &[u8],
        now: u64,
    ) -> Result<http::Request<Vec<u8>>, SinkError> {
        let signature = revocation::sign_push(&self.keyring, index, body, now);
        http::Request::put(format!("{}/_lynxo/sync/revocations/{index}", self.base_url))
            .header("lynxo-signature", signature)
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }

    /// The signed request that pushes a JSON [`LimitPush`] body at `now`.
    pub fn limits_request(
        &self,
        body: &[u8],
        now: u64,
    ) -> Result<http::Request<Vec<u8>>, SinkError> {
        let signature = limits::sign_push(&self.keyring, body, now);
        http::Request::put(format!("{}{}", self.base_url, limits::SYNC_PATH))
            .header("lynxo-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }
}

impl Sink for EdgeSyncSink {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.request(index, body, now)?)
    }

    fn name(&self) -> &'static str {
        "edge-sync"
    }

    fn supports_limits(&self) -> bool {
        true
    }

    fn put_limits(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.limits_request(body, now)?)
    }
}

/// Keeps the latest bytes of each shard in memory: for tests, and for running without an edge
/// (bounded: one value per shard, like KV).
#[derive(Debug, Default)]
pub struct MemorySink {
    latest: std::sync::Mutex<HashMap<u16, Vec<u8>>>,
    writes: std::sync::atomic::AtomicU64,
}

impl MemorySink {
    /// The latest bytes written for `index`.
    pub fn latest(&self, index: u16) -> Option<Vec<u8>> {
        self.latest.lock().ok()?.get(&index).cloned()
    }

    /// How many writes it has taken.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Sink for MemorySink {
    fn put(&self, index: u16, body: &[u8], _now: u64) -> Result<(), SinkError> {
        if let Ok(mut latest) = self.latest.lock() {
            latest.insert(index, body.to_vec());
        }
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// Forwards to a shared sink, so a test can keep a handle on it.
impl<T: Sink> Sink for Arc<T> {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        (**self).put(index, body, now)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn supports_limits(&self) -> bool {
        (**self).supports_limits()
    }

    fn put_limits(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        (**self).put_limits(body, now)
    }
}

/// The publishing loop's state.
pub struct Publisher {
    store: Store,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Sink>,
    shard_count: u16,
    /// Seconds a shard stays valid for readers.
    lifetime: u64,
    /// Last write per shard, ms: for coalescing.
    last_write_ms: HashMap<u16, u64>,
}

/// Shards are written at most this often each (Workers KV: one write per key per second).
pub const MIN_WRITE_INTERVAL_MS: u64 = 1000;
/// Longest sleep between passes.
const MAX_IDLE: Duration = Duration::from_secs(5);

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Shards written, with their versions.
    pub written: Vec<(u16, u64)>,
    /// Shards due but held back by coalescing.
    pub deferred: Vec<u16>,
    /// Shards whose write failed (retried next pass).
    pub failed: Vec<u16>,
    /// When the next pass has work, Unix ms: the earliest moment a deferred shard may be written
    /// again, or the end of the next rotation grace period. `None`: only the heartbeat.
    pub next_due_ms: Option<u64>,
}

impl Pass {
    fn due_at(&mut self, at_ms: u64) {
        self.next_due_ms = Some(self.next_due_ms.map_or(at_ms, |t| t.min(at_ms)));
    }
}

impl Publisher {
    /// A publisher for `shard_count` shards that stay valid `lifetime` seconds.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn Sink>,
        shard_count: u16,
        lifetime: u64,
    ) -> Self {
        Self {
            store,
            keyring,
            clock,
            sink,
            shard_count,
            lifetime: lifetime.max(2),
            last_write_ms: HashMap::new(),
        }
    }

    /// One pass: writes every shard that is due and not held back by coalescing.
    pub async fn run_once(&mut self) -> Result<Pass, AppError> {
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let count = self.shard_count;
        let heartbeat_by = now + self.lifetime / 2;
        let (due, next_grace_end) = self
            .store
            .read(move |c| {
                Ok((
                    revocations::shards_due(c, count, now, heartbeat_by)?,
                    revocations::next_due_after(c, now)?,
                ))
            })
            .await?;
        let mut pass = Pass::default();
        if let Some(at) = next_grace_end {
            pass.due_at(at.saturating_mul(1000));
        }
        for shard in due {
            if let Some(&t) = self.last_write_ms.get(&shard) {
                let free_at = t + MIN_WRITE_INTERVAL_MS;
                if now_ms < free_at {
                    pass.deferred.push(shard);
                    pass.due_at(free_at);
                    continue;
                }
            }
            self.last_write_ms.insert(shard, now_ms);
            match self.publish_shard(shard, now).await {
                Ok(version) => pass.written.push((shard, version)),
                Err(e) => {
                    tracing::warn!(shard, sink = self.sink.name(), error = %e, "shard publish failed");
                    pass.failed.push(shard);
                }
            }
        }
        Ok(pass)
    }

    async fn publish_shard(&self, shard: u16, now: u64) -> anyhow::Result<u64> {
        let count = self.shard_count;
        let content = self
            .store
            .write(move |tx| revocations::prepare_shard(tx, shard, count, now))
            .await
            .map_err(|e| anyhow::anyhow!("prepare shard: {}", e.code()))?;
        let next_update = now + self.lifetime;
        let header = ShardHeader {
            shard,
            shard_count: count,
            version: content.version,
            issued_at: now,
            next_update,
        };
        let bytes = RevocationShard::new(header, self.keyring.active_kid(), content.ids.clone())?
            .encode(&self.keyring)?;
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || sink.put(shard, &bytes, now)).await??;
        let version = content.version;
        let ids = content.ids.len();
        self.store
            .write(move |tx| {
                revocations::mark_published(tx, shard, count, &content, now, next_update)
            })
            .await
            .map_err(|e| anyhow::anyhow!("mark published: {}", e.code()))?;
        tracing::info!(
            shard,
            version,
            ids,
            sink = self.sink.name(),
            "shard published"
        );
        Ok(version)
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
            Duration::from_millis(at.saturating_sub(self.clock.now_ms()))
        });
        until_due.clamp(MIN_IDLE, cap)
    }

    /// Runs passes forever: after each wake-up, when deferred work falls due, and at least every
    /// few seconds.
    pub async fn run(mut self, trigger: Trigger) {
        loop {
            let wait = match self.run_once().await {
                Ok(pass) => self.idle_after(&pass),
                Err(e) => {
                    tracing::warn!(code = e.code(), "publish pass failed");
                    RETRY
                }
            };
            trigger.wait(wait).await;
        }
    }
}

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
}

impl LimitPublisher {
    /// A publisher that pushes through `sink` (only [`EdgeSyncSink`] can deliver limits).
    pub fn new(store: Store, clock: Arc<dyn Clock>, sink: Arc<dyn Sink>) -> Self {
        Self {
            store,
            clock,
            sink,
            backoff: LIMITS_FIRST_BACKOFF,
        }
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
    /// and at least every 30 s.
    pub async fn run(mut self, trigger: Trigger) {
        if !self.sink.supports_limits() {
            tracing::warn!(
                sink = self.sink.name(),
                "this publisher cannot push rate limits (only --edge-sync-url can): key policies \
                 stay pending"
            );
        }
        loop {
            let pass = self.run_once().await;
            if let Err(e) = &pass {
                tracing::warn!(code = e.code(), "limits pass failed");
            }
            let wait = self.idle_after(&pass);
            trigger.wait_limits(wait).await;
        }
    }
}
