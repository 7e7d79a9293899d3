//! What every handler reaches: the [`AppState`] (database, keyring, clock, settings, guards),
//! the [`Settings`] fixed at startup and the [`Clock`] tests move. Handler modules import it
//! from here, and the router (`routes`) imports the handlers: nothing points back up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::mac::Keyring;

use crate::secret::Secret;
use crate::store::Store;
use crate::{auth, client_addr, leaks, metrics, publish, skew, verify};

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
    /// How long a session lasts at most, in seconds, however it is used (the absolute timeout).
    pub session_ttl: u64,
    /// A session unused this long, in seconds, ends (the idle timeout).
    pub session_idle: u64,
    /// Sessions a user may have at once; signing in past it ends their oldest.
    pub sessions_per_user: u32,
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
    /// How long usage is kept, and activity rows per key (`store::retention`).
    pub retention: crate::store::retention::Retention,
    /// The bearer token `GET /metrics` needs; without one it refuses every request.
    pub metrics_token: Option<Secret>,
    /// `/readyz` fails while the edge's clock is further than this from ours, in seconds.
    pub skew_ready_secs: u64,
    /// A warning is logged once when the skew passes this, in seconds.
    pub skew_warn_secs: u64,
    /// Where the secret-scanning report endpoints live (`/secret-scanning`).
    pub secret_scanning_path: String,
    /// GitHub's secret-scanning public-key document (`None`: GitHub reports are off, 404).
    pub github_keys_url: Option<String>,
    /// GitLab's public-key document (`None`: GitLab reports are off, 404).
    pub gitlab_keys_url: Option<String>,
    /// Reports a minute per provider key identifier (a burst of a tenth of it).
    pub reports_per_minute: u32,
    /// Self-revocations a minute per client network (a burst of a tenth of it).
    pub self_revoke_per_minute: u32,
    /// The API's base URL in each environment, for the dashboard's example requests.
    pub api_bases: ApiBases,
}

/// The API's base URL in each environment (no trailing slash): the edge deployment that serves
/// that environment's keys. The dashboard's "Try it" line uses the key's own, so a development
/// key is never shown beside the production URL that would refuse it as `wrong_environment`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiBases {
    /// `development` keys' base URL.
    pub development: String,
    /// `staging` keys' base URL.
    pub staging: String,
    /// `production` keys' base URL.
    pub production: String,
}

impl ApiBases {
    /// Production's default: the public API.
    pub const PRODUCTION: &'static str = "https://api.lynxo.ai";
    /// Staging's default.
    pub const STAGING: &'static str = "https://api.staging.lynxo.ai";
    /// Development's default.
    pub const DEVELOPMENT: &'static str = "https://api.development.lynxo.ai";

    /// The base URL of `environment`.
    pub fn of(&self, environment: shared::key::Environment) -> &str {
        match environment {
            shared::key::Environment::Development => &self.development,
            shared::key::Environment::Staging => &self.staging,
            _ => &self.production,
        }
    }
}

impl Default for ApiBases {
    fn default() -> Self {
        Self {
            development: Self::DEVELOPMENT.into(),
            staging: Self::STAGING.into(),
            production: Self::PRODUCTION.into(),
        }
    }
}

impl Settings {
    /// A session's use is written to the database at most this often (seconds): a tenth of the
    /// idle timeout, at most a minute, so reads do not each write and the idle timeout is off
    /// by at most a tenth.
    pub fn session_touch_every(&self) -> u64 {
        (self.session_idle / 10).clamp(1, 60)
    }
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
            session_idle: 3600,
            sessions_per_user: 10,
            argon2: argon2::Params::default(),
            sign_in_hashes: default_sign_in_hashes(),
            proxies: client_addr::TrustedProxies::default(),
            verify_per_minute: verify::DEFAULT_PER_MINUTE,
            limits_sync_wait: Duration::ZERO,
            retention: crate::store::retention::Retention::default(),
            metrics_token: None,
            skew_ready_secs: skew::DEFAULT_READY_SECS,
            skew_warn_secs: skew::DEFAULT_WARN_SECS,
            secret_scanning_path: leaks::DEFAULT_PATH.into(),
            github_keys_url: None,
            gitlab_keys_url: None,
            reports_per_minute: leaks::DEFAULT_REPORTS_PER_MINUTE,
            self_revoke_per_minute: leaks::DEFAULT_HOLDER_PER_MINUTE,
            api_bases: ApiBases::default(),
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
    /// Sign-in defences: attempt budgets (`auth::limit::ledger_for`) and the bounded password
    /// hasher.
    pub sign_in: Arc<auth::SignInGuard>,
    /// The verify endpoint's budget per account and its trace.
    pub verify_guard: Arc<verify::VerifyGuard>,
    /// What `GET /metrics` exposes.
    pub metrics: Arc<metrics::Metrics>,
    /// Secret-scanning providers' keys and the leak endpoints' budgets.
    pub leaks: Arc<leaks::LeakGuard>,
}

impl AppState {
    /// State with default settings and a fresh publish trigger.
    pub fn new(store: Store, keyring: Keyring, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Self {
            // The database's budgets on PostgreSQL (shared by replicas), memory's on SQLite.
            sign_in: Arc::new(auth::SignInGuard::with_ledger(
                &keyring,
                &settings,
                auth::limit::ledger_for(&store),
            )),
            store,
            keyring: Arc::new(keyring),
            clock,
            verify_guard: Arc::new(verify::VerifyGuard::new(settings.verify_per_minute)),
            metrics: Arc::new(metrics::Metrics::new(&settings)),
            leaks: Arc::new(leaks::LeakGuard::new(
                settings.github_keys_url.clone(),
                settings.gitlab_keys_url.clone(),
                settings.reports_per_minute,
                settings.self_revoke_per_minute,
            )),
            settings: Arc::new(settings),
            publish: publish::Trigger::default(),
        }
    }
}
