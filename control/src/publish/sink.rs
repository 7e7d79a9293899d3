//! Where the publishers write: the [`Sink`] trait and its three implementations, the
//! Cloudflare KV REST API, the edge worker's signed sync endpoint and memory. Each builds an
//! `http::Request` first, so tests check the request without a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::audit;
use shared::envelope::SYNC_HEADER;
use shared::limits;
use shared::mac::Keyring;
use shared::revocation;

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
    /// Reads back the bytes stored for shard `index` at `now` (`None`: none stored), unchecked:
    /// the caller opens them with its keyring. [`SinkError::Unsupported`] where the sink cannot
    /// read.
    fn get(&self, _index: u16, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        Err(SinkError::Unsupported)
    }
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

/// The most a checkpoint read returns.
const CHECKPOINT_READ_MAX: u64 = 4096;
/// The most a shard read returns: Workers KV's largest value (25 MiB), as hex and JSON.
const SHARD_READ_MAX: u64 = 2 * 25 * 1024 * 1024 + 64;

/// Sends a built `GET` and returns its body (at most `limit` bytes), `None` on 404.
fn fetch(
    agent: &ureq::Agent,
    request: http::Request<()>,
    limit: u64,
) -> Result<Option<Vec<u8>>, SinkError> {
    match agent.run(request) {
        Ok(response) if response.status() == 404 => Ok(None),
        Ok(mut response) if response.status().is_success() => response
            .body_mut()
            .with_config()
            .limit(limit)
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
        fetch(&self.agent, request, CHECKPOINT_READ_MAX)
    }

    fn get(&self, index: u16, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        let request = http::Request::get(self.value_url(&revocation::kv_key(index)))
            .header("authorization", format!("Bearer {}", self.api_token))
            .body(())
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        fetch(&self.agent, request, SHARD_READ_MAX)
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
        http::Request::put(format!("{}{}", self.base_url, revocation::sync_path(index)))
            .header(SYNC_HEADER, signature)
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
            .header(SYNC_HEADER, signature)
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
            .header(SYNC_HEADER, audit::sign_push(&self.keyring, body, now))
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }

    /// The signed request that reads shard `index` back as the edge holds it, at `now`.
    pub fn read_request(&self, index: u16, now: u64) -> Result<http::Request<()>, SinkError> {
        http::Request::get(format!("{}{}", self.base_url, revocation::sync_path(index)))
            .header(
                SYNC_HEADER,
                revocation::sign_read(&self.keyring, index, now),
            )
            .body(())
            .map_err(|e| SinkError::Transport(e.to_string()))
    }

    /// The signed request that reads the stored checkpoint back at `now`.
    pub fn checkpoint_read_request(&self, now: u64) -> Result<http::Request<()>, SinkError> {
        http::Request::get(format!("{}{}", self.base_url, audit::SYNC_PATH))
            .header(SYNC_HEADER, audit::sign_read(&self.keyring, now))
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
        let read = fetch(
            &self.agent,
            self.checkpoint_read_request(now)?,
            CHECKPOINT_READ_MAX,
        )?;
        read.map(|json| hex_field(&json, "checkpoint")).transpose()
    }

    fn get(&self, index: u16, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        // The edge answers `{"shard": "<hex>"}`.
        let read = fetch(&self.agent, self.read_request(index, now)?, SHARD_READ_MAX)?;
        read.map(|json| hex_field(&json, "shard")).transpose()
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

/// The bytes of the hex string member `field` of a JSON answer of the edge.
fn hex_field(json: &[u8], field: &str) -> Result<Vec<u8>, SinkError> {
    let bad = |what: &str| SinkError::Transport(format!("{field} read: {what}"));
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|_| bad("not JSON"))?;
    let text = value[field]
        .as_str()
        .ok_or_else(|| bad(&format!("no {field}")))?;
    hex::decode(text).map_err(|_| bad("not hex"))
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

    fn get(&self, index: u16, _now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        Ok(self.latest(index))
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

    fn get(&self, index: u16, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        (**self).get(index, now)
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
