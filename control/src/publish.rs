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
//! - coalesces: a shard is written at most once per second (Workers KV's limit per key); a burst
//!   of revocations in one shard becomes one write. The first revocation in a shard not written
//!   in the last second is written in the pass its trigger wakes, at once; a shard held back is
//!   written as soon as its second is over (the loop sleeps until then, not a fixed tick);
//! - heartbeats: every shard is republished every heartbeat (a minute by default), changed or
//!   not, so the edge's copy is never older than that while the control plane runs, and each
//!   stays valid for the list lifetime (a day by default) if it stops; at start every shard is
//!   written. Intervals run on the monotonic clock; failing writes raise an alarm in the log;
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use shared::audit::{self, AuditKeyring, Checkpoint};
use shared::limits::{self, LimitPush};
use shared::mac::Keyring;
use shared::revocation::{self, RevocationShard, ShardHeader};
use tokio::sync::Notify;

use crate::error::AppError;
use crate::state::Clock;
use crate::store::audit::{self as audit_db, ChainPoint};
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
    /// This sink has no way to deliver that (the KV REST API has no limits path; the memory
    /// sink keeps no checkpoint outside the process).
    #[error("this sink cannot deliver that")]
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
    /// Whether [`Sink::put_checkpoint`] and [`Sink::get_checkpoint`] keep the audit checkpoint
    /// outside the database.
    fn supports_checkpoints(&self) -> bool {
        false
    }
    /// Stores the audit trail's newest checkpoint (`shared::audit::Checkpoint`, encoded) at
    /// `now`.
    fn put_checkpoint(&self, _body: &[u8], _now: u64) -> Result<(), SinkError> {
        Err(SinkError::Unsupported)
    }
    /// Reads back the stored checkpoint at `now` (`None`: none stored yet).
    fn get_checkpoint(&self, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        Err(SinkError::Unsupported)
    }
}

/// Sends a built request with a shared agent and maps non-2xx answers to errors.
fn send(agent: &ureq::Agent, request: http::Request<Vec<u8>>) -> Result<(), SinkError> {
    match agent.run(request) {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(refused(response)),
        Err(e) => Err(SinkError::Transport(e.to_string())),
    }
}

/// Sends a built `GET` and returns its body (at most 4 KiB), `None` on 404.
fn fetch(agent: &ureq::Agent, request: http::Request<()>) -> Result<Option<Vec<u8>>, SinkError> {
    match agent.run(request) {
        Ok(response) if response.status() == 404 => Ok(None),
        Ok(mut response) if response.status().is_success() => response
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_vec()
            .map(Some)
            .map_err(|e| SinkError::Transport(e.to_string())),
        Ok(response) => Err(refused(response)),
        Err(e) => Err(SinkError::Transport(e.to_string())),
    }
}

/// A failure status, with the start of the body for the log.
fn refused(mut response: http::Response<ureq::Body>) -> SinkError {
    SinkError::Status {
        status: response.status().as_u16(),
        body: response
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
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

impl KvRestSink {
    /// The URL of the value under the KV key `key`.
    fn value_url(&self, key: &str) -> String {
        format!(
            "{}/accounts/{}/storage/kv/namespaces/{}/values/{}",
            self.base_url,
            self.account_id,
            self.namespace_id,
            key.replace('/', "%2F")
        )
    }

    /// The request that writes the audit checkpoint under `shared::audit::KV_KEY`.
    pub fn checkpoint_request(&self, body: &[u8]) -> Result<http::Request<Vec<u8>>, SinkError> {
        http::Request::put(self.value_url(audit::KV_KEY))
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

    fn supports_checkpoints(&self) -> bool {
        true
    }

    fn put_checkpoint(&self, body: &[u8], _now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.checkpoint_request(body)?)
    }

    fn get_checkpoint(&self, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        let request = http::Request::get(self.value_url(audit::KV_KEY))
            .header("authorization", format!("Bearer {}", self.api_token))
            .body(())
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        fetch(&self.agent, request)
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

impl EdgeSyncSink {
    /// The signed request that stores the audit checkpoint `body` at the edge at `now`.
    pub fn checkpoint_request(
        &self,
        body: &[u8],
        now: u64,
    ) -> Result<http::Request<Vec<u8>>, SinkError> {
        http::Request::put(format!("{}{}", self.base_url, audit::SYNC_PATH))
            .header(
                "lynxo-signature",
                audit::sign_push(&self.keyring, body, now),
            )
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }

    /// The signed request that reads the stored checkpoint back at `now`.
    pub fn checkpoint_read_request(&self, now: u64) -> Result<http::Request<()>, SinkError> {
        http::Request::get(format!("{}{}", self.base_url, audit::SYNC_PATH))
            .header("lynxo-signature", audit::sign_read(&self.keyring, now))
            .body(())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }
}

impl Sink for EdgeSyncSink {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.request(index, body, now)?)
    }

    fn supports_checkpoints(&self) -> bool {
        true
    }

    fn put_checkpoint(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        send(&self.agent, self.checkpoint_request(body, now)?)
    }

    fn get_checkpoint(&self, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        // The edge answers `{"checkpoint": "<hex>", "seq": .., "at": ..}`.
        let Some(json) = fetch(&self.agent, self.checkpoint_read_request(now)?)? else {
            return Ok(None);
        };
        let bad = |what: &str| SinkError::Transport(format!("checkpoint read: {what}"));
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| bad("not JSON"))?;
        let hex_text = value["checkpoint"]
            .as_str()
            .ok_or_else(|| bad("no checkpoint"))?;
        hex::decode(hex_text).map(Some).map_err(|_| bad("not hex"))
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
    checkpoint: std::sync::Mutex<Option<Vec<u8>>>,
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

    // For tests: a checkpoint in the control plane's own memory anchors nothing, so `serve`
    // runs no checkpoint publisher without a real sink.
    fn supports_checkpoints(&self) -> bool {
        true
    }

    fn put_checkpoint(&self, body: &[u8], _now: u64) -> Result<(), SinkError> {
        if let Ok(mut c) = self.checkpoint.lock() {
            *c = Some(body.to_vec());
        }
        Ok(())
    }

    fn get_checkpoint(&self, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        Ok(self.checkpoint.lock().ok().and_then(|c| c.clone()))
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

    fn supports_checkpoints(&self) -> bool {
        (**self).supports_checkpoints()
    }

    fn put_checkpoint(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        (**self).put_checkpoint(body, now)
    }

    fn get_checkpoint(&self, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        (**self).get_checkpoint(now)
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
    /// Every shard is republished this often (ms), changed or not.
    heartbeat_ms: u64,
    /// Last write attempt per shard, monotonic ms: for coalescing.
    last_attempt_ms: HashMap<u16, u64>,
    /// Last successful write per shard, monotonic ms: for the heartbeat.
    last_ok_ms: HashMap<u16, u64>,
    /// Since when (monotonic ms) writes have been failing, and when that was last reported.
    failing_since_ms: Option<u64>,
    last_alarm_ms: Option<u64>,
}

/// Shards are written at most this often each (Workers KV: one write per key per second).
pub const MIN_WRITE_INTERVAL_MS: u64 = 1000;
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
        }
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
            .read(move |c| {
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
        for shard in due {
            if let Some(&t) = self.last_attempt_ms.get(&shard) {
                let free_at = t + MIN_WRITE_INTERVAL_MS;
                if (t..free_at).contains(&mono) {
                    pass.deferred.push(shard);
                    pass.due_at(free_at);
                    continue;
                }
            }
            self.last_attempt_ms.insert(shard, mono);
            match self.publish_shard(shard, now).await {
                Ok(version) => {
                    self.last_ok_ms.insert(shard, mono);
                    pass.written.push((shard, version));
                }
                Err(e) => {
                    tracing::warn!(shard, sink = self.sink.name(), error = %e, "shard publish failed");
                    pass.failed.push(shard);
                }
            }
        }
        self.alarm(&pass, mono);
        Ok(pass)
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

    async fn publish_shard(&self, shard: u16, now: u64) -> anyhow::Result<u64> {
        let count = self.shard_count;
        let content = self
            .store
            .write(move |tx| revocations::prepare_shard(tx, shard, count, now))
            .await
            .context("prepare shard")?;
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
            .context("mark published")?;
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
            Duration::from_millis(at.saturating_sub(self.clock.monotonic_ms()))
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
                    tracing::warn!(error = %format_args!("{e:#}"), "publish pass failed");
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
                tracing::warn!(error = %format_args!("{e:#}"), "limits pass failed");
            }
            let wait = self.idle_after(&pass);
            trigger.wait_limits(wait).await;
        }
    }
}

/// What a checkpoint pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointPass {
    /// A new checkpoint anchors this event.
    Anchored(u64),
    /// Nothing new since the anchored checkpoint (or no events yet).
    Unchanged,
    /// The anchor could not be read or written; retried at the next interval.
    Failed(String),
    /// The table no longer holds what the anchor says, or its new rows do not verify: nothing is
    /// anchored over it (the anchor keeps the evidence) until the table matches again.
    Refused(String),
}

/// Anchors the audit chain outside the database: every interval (the revocation heartbeat's),
/// checks the events appended since the anchored checkpoint with the audit keyring and, if they
/// verify and the anchored event is still in the table unchanged, stores a new checkpoint of the
/// head through the sink (the edge's KV). Events cut off the end after a checkpoint, or rewritten
/// before the next one, are then caught by `verify-audit`, or here.
pub struct CheckpointPublisher {
    store: Store,
    audit: Arc<AuditKeyring>,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn Sink>,
    interval: Duration,
    /// The checkpoint the sink holds, once read back (`Some(None)`: none stored yet).
    anchored: Option<Option<Checkpoint>>,
}

impl CheckpointPublisher {
    /// A publisher that anchors through `sink` every `interval`.
    pub fn new(
        store: Store,
        audit: Arc<AuditKeyring>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn Sink>,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            audit,
            clock,
            sink,
            interval,
            anchored: None,
        }
    }

    /// One pass: reads the anchor back (the first time), checks the table against it and stores a
    /// checkpoint of the head if there is a new one.
    pub async fn run_once(&mut self) -> CheckpointPass {
        let now = self.clock.now();
        if self.anchored.is_none() {
            let sink = Arc::clone(&self.sink);
            let read = tokio::task::spawn_blocking(move || sink.get_checkpoint(now)).await;
            let bytes = match read {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return CheckpointPass::Failed(format!("reading the anchor: {e}")),
                Err(e) => return CheckpointPass::Failed(e.to_string()),
            };
            match bytes.map(|b| Checkpoint::open(&b, &self.audit)).transpose() {
                Ok(anchored) => self.anchored = Some(anchored),
                Err(e) => {
                    return CheckpointPass::Refused(format!(
                        "the stored checkpoint does not verify with the audit keyring ({e}): \
                         another keyring, or forged"
                    ));
                }
            }
        }
        let anchored = self.anchored.flatten();
        let ring = Arc::clone(&self.audit);
        let checked = self
            .store
            .read(move |c| {
                let Some(head) = audit_db::head_point(c)? else {
                    return Ok(Ok(None));
                };
                Ok(match anchored {
                    Some(a) if head.seq == a.seq && head.value == a.head => Ok(None),
                    Some(a) => audit_db::check_anchor(c, &a, head.seq)
                        .and_then(|()| {
                            let from = ChainPoint {
                                seq: a.seq,
                                value: a.head,
                            };
                            audit_db::verify_after(c, &ring, from, a.legacy_upto)
                        })
                        .map(|r| r.head.map(|h| (h, a.legacy_upto))),
                    None => audit_db::verify_chain(c, &ring, None)
                        .map(|r| r.head.map(|h| (h, r.legacy_upto))),
                })
            })
            .await;
        let (head, legacy_upto) = match checked {
            Ok(Ok(Some(next))) => next,
            Ok(Ok(None)) => return CheckpointPass::Unchanged,
            Ok(Err(e)) => return CheckpointPass::Refused(e.to_string()),
            Err(e) => {
                return CheckpointPass::Failed(format!("reading the audit trail: {e}"));
            }
        };
        let checkpoint = Checkpoint {
            kid: self.audit.active_kid(),
            seq: head.seq,
            legacy_upto,
            at: now,
            head: head.value,
        };
        let body = match checkpoint.encode(&self.audit) {
            Ok(body) => body,
            Err(e) => return CheckpointPass::Failed(e.to_string()),
        };
        let sink = Arc::clone(&self.sink);
        match tokio::task::spawn_blocking(move || sink.put_checkpoint(&body, now)).await {
            Ok(Ok(())) => {
                self.anchored = Some(Some(checkpoint));
                CheckpointPass::Anchored(checkpoint.seq)
            }
            Ok(Err(e)) => {
                // The edge may hold a newer one (another control plane, a retried write): read
                // it back before the next attempt.
                self.anchored = None;
                CheckpointPass::Failed(format!("storing the checkpoint: {e}"))
            }
            Err(e) => CheckpointPass::Failed(e.to_string()),
        }
    }

    /// Runs passes forever, one per interval.
    pub async fn run(mut self) {
        if !self.sink.supports_checkpoints() {
            tracing::warn!(
                sink = self.sink.name(),
                "this publisher cannot keep the audit checkpoint: the audit trail is not anchored"
            );
            return;
        }
        loop {
            match self.run_once().await {
                CheckpointPass::Anchored(seq) => {
                    tracing::debug!(seq, sink = self.sink.name(), "audit checkpoint anchored");
                }
                CheckpointPass::Unchanged => {}
                CheckpointPass::Failed(e) => {
                    tracing::warn!(
                        sink = self.sink.name(),
                        error = e,
                        "audit checkpoint failed"
                    );
                }
                CheckpointPass::Refused(e) => tracing::error!(
                    error = e,
                    "ALARM the audit trail does not match its anchored checkpoint: rows removed \
                     or rewritten; run `lynxo-control verify-audit`"
                ),
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
