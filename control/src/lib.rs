//! Lynxo Keys control plane: the admin API, the audit trail and revocation publishing.
//!
//! - [`store`]: SQLite storage, the only module that speaks SQL.
//! - [`error`]: the one error type and the extractors that produce it.
//! - [`body`]: request bodies, read bounded in size, time and number.
//! - [`auth`]: management tokens, sign-in (and its defences), sessions and CSRF.
//! - [`client_addr`]: the client's address, from a trusted proxy's header or the TCP peer.
//! - [`account`]: the account API (name, plan, keys in use).
//! - [`keys`]: the keys API (create, list, get, update, revoke, rotate).
//! - [`audit`]: the audit-trail API.
//! - [`events`]: the audit trail's vocabulary, one typed variant per recorded action.
//! - [`publish`]: revocation publishing (outbox, coalescing, heartbeat, publishers).
//! - [`tokens`]: the management-tokens API.
//! - [`usage`]: usage ingestion from the edge, the usage and activity API, rate-limit pushes.
//! - [`verify`]: the verify endpoint (`POST /v1/keys/verify`), its per-account budget and trace.
//! - [`dashboard`]: the web dashboard.
//! - [`config`]: flags and environment.
//!
//! [`app`] builds the router from an [`AppState`], so tests call the service without a socket.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod audit;
pub mod auth;
pub mod body;
pub mod client_addr;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod keys;
pub mod publish;
pub mod server;
pub mod store;
pub mod tokens;
pub mod usage;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shared::mac::Keyring;

use crate::error::{AppError, InternalCause, Json};
use crate::store::Store;

/// The time source: a trait so tests can move time (rotation due dates, grace periods).
///
/// Two readings: the wall clock, for what is stored and signed (times, expiries, grace periods),
/// and a monotonic clock, for intervals (coalescing, heartbeats, budgets), which must not
/// stretch or shrink when the wall clock is stepped (a bad NTP server, an operator's
/// correction). Nothing that decides whether a revocation is in force reads either.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Milliseconds on a clock that only moves forward, at the pace of real time, from an
    /// arbitrary origin. The default is the wall clock, for clocks that never step.
    fn monotonic_ms(&self) -> u64 {
        self.now_ms()
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn monotonic_ms(&self) -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to. Its monotonic reading starts equal to the wall clock
/// and moves with [`ManualClock::advance`] only.
#[derive(Debug, Default)]
pub struct ManualClock {
    wall_ms: AtomicU64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `unix_seconds`.
    pub fn at(unix_seconds: u64) -> Self {
        Self {
            wall_ms: AtomicU64::new(unix_seconds * 1000),
            monotonic_ms: AtomicU64::new(unix_seconds * 1000),
        }
    }

    /// Moves the clock forward: real time passing.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
        self.monotonic_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the wall clock to `unix_seconds`, forward or back, as an NTP correction (or a bad
    /// NTP server) does: no time passes, so the monotonic reading stays.
    pub fn set(&self, unix_seconds: u64) {
        self.wall_ms.store(unix_seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic_ms.load(Ordering::SeqCst)
    }
}

/// Settings the handlers need, fixed at startup.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shards of the revocation list (the same number as the edge).
    pub shard_count: u16,
    /// The dashboard's origin (`https://keys.lynxo.ai`): cookie-authenticated writes must come
    /// from it.
    pub public_origin: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a session lasts, in seconds.
    pub session_ttl: u64,
    /// Password hashing cost (tests use a cheap one).
    pub argon2: argon2::Params,
    /// Sign-in password hashes that may run at once; more are answered 429.
    pub sign_in_hashes: usize,
    /// Proxies whose forwarding header names the client (none: the TCP peer is the client).
    pub proxies: client_addr::TrustedProxies,
    /// `POST /v1/keys/verify` calls per minute per account (a burst of a tenth of it).
    pub verify_per_minute: u32,
    /// How long a rotation waits for the edge to acknowledge the new key's rate-limit budget
    /// before it answers (zero without a publisher that can push limits).
    pub limits_sync_wait: Duration,
}

/// The default bound on sign-in hashes at once: one per CPU.
pub fn default_sign_in_hashes() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            shard_count: 16,
            public_origin: "http://localhost:8080".into(),
            max_body_bytes: 64 * 1024,
            session_ttl: 12 * 3600,
            argon2: argon2::Params::default(),
            sign_in_hashes: default_sign_in_hashes(),
            proxies: client_addr::TrustedProxies::default(),
            verify_per_minute: verify::DEFAULT_PER_MINUTE,
            limits_sync_wait: Duration::ZERO,
        }
    }
}

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Signing keys: the active kid signs new API keys.
    pub keyring: Arc<Keyring>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Startup settings.
    pub settings: Arc<Settings>,
    /// Wakes the publisher after a revocation commits.
    pub publish: publish::Trigger,
    /// Sign-in defences: attempt budgets and the bounded password hasher.
    pub sign_in: Arc<auth::SignInGuard>,
    /// The verify endpoint's budget per account and its trace.
    pub verify_guard: Arc<verify::VerifyGuard>,
}

impl AppState {
    /// State with default settings and a fresh publish trigger.
    pub fn new(store: Store, keyring: Keyring, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Self {
            store,
            sign_in: Arc::new(auth::SignInGuard::new(&keyring, &settings)),
            keyring: Arc::new(keyring),
            clock,
            verify_guard: Arc::new(verify::VerifyGuard::new(settings.verify_per_minute)),
            settings: Arc::new(settings),
            publish: publish::Trigger::default(),
        }
    }
}

/// The OpenAPI 3.1 description of this service.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The whole HTTP service.
pub fn app(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let api = Router::new()
        .route("/keys", post(keys::create_key).get(keys::list_keys))
        .route("/keys/verify", post(verify::verify_key))
        .route("/keys/{id}", get(keys::get_key).patch(keys::update_key))
        .route("/keys/{id}/revoke", post(keys::revoke_key))
        .route("/keys/{id}/rotate", post(keys::rotate_key))
        .route("/account", get(account::get_account))
        .route("/audit-events", get(audit::list_audit_events))
        .route(
            "/management-tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/management-tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/sessions", post(auth::create_session))
        .route(
            "/sessions/current",
            axum::routing::delete(auth::delete_session),
        )
        .merge(usage::routes())
        // After routing: a method no route has is 405 before any body check.
        .route_layer(middleware::from_fn(body::refuse_unexpected_body))
        .method_not_allowed_fallback(error::method_not_allowed);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(usage::ingest_routes())
        .merge(dashboard::routes())
        .route_layer(middleware::from_fn(body::refuse_unexpected_body))
        .nest("/v1", api)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    state.store.ping().await.map_err(|_| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The database is not reachable",
        )
    })?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// Logs one line per request: method, path (never the query or a body, so never a key),
/// status and duration; and the cause of any 500, once.
async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, path, status, elapsed_ms, cause, "request failed");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
    }
    response
}
