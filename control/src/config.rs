//! Command line and environment: every setting is a flag with an environment variable, with a
//! default that works locally. Validated at startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use shared::audit::AuditKeyring;
use shared::mac::{Keyring, parse_config};

use crate::client_addr::{ForwardedHeader, IpNet, TrustedProxies};
use crate::publish::{
    DEFAULT_HEARTBEAT_SECS, DEFAULT_LIFETIME_SECS, EdgeSyncSink, KvRestSink, MemorySink, Sink,
};
use crate::secret::Secret;
use crate::store::retention::Retention;

/// Lynxo Keys control plane.
#[derive(Debug, Parser)]
#[command(name = "lynxo-control", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "LYNXO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service and the revocation publisher.
    // Boxed: its many flags make it far larger than the other commands.
    Serve(Box<ServeArgs>),
    /// Create an account, its first user and a management token (printed once).
    Init(InitArgs),
    /// Check the audit trail's keyed chain and, with a publisher configured, that it still holds
    /// the checkpoint anchored at the edge; exits non-zero if not.
    VerifyAudit(VerifyAuditArgs),
    /// Set a new password for a user and end every session of theirs (there is no email, so no
    /// reset link: this is the way back in for a user who lost their password).
    ResetPassword(ResetPasswordArgs),
    /// Print a new random keyring (`active=1;1:<64 hex>`) for LYNXO_KEYRING or, generated again,
    /// LYNXO_AUDIT_KEYRING.
    GenerateKeyring,
    /// Signing-key rollover: add, activate and retire kids of LYNXO_KEYRING. Each prints the
    /// keyring text to install next, on the edge and here (docs/operations.md, "Signing-key
    /// rollover").
    #[command(subcommand)]
    Keyring(KeyringCommand),
    /// Run one compaction pass now (roll old usage up, delete what expired), in small
    /// transactions, beside a running `serve` or not. `serve` runs the same pass on its own.
    Compact(CompactArgs),
    /// Copy the database to a file while the service runs (a consistent snapshot, `VACUUM
    /// INTO`); never overwrites a file.
    Backup(BackupArgs),
    /// Check a backup (integrity, schema, audit chain) and put it in place of a stopped
    /// service's database; the next `serve` republishes revocations and limits in full.
    Restore(RestoreArgs),
    /// Copy this SQLite database into an empty PostgreSQL database (schema, every row, identity
    /// sequences) in one transaction that commits only if row counts, row digests and the audit
    /// chain check out on what PostgreSQL holds; never overwrites (docs/postgres.md).
    CopyToPostgres(CopyToPostgresArgs),
}

/// `keyring` subcommands. Each reads the current keyring (LYNXO_KEYRING or
/// LYNXO_KEYRING_FILE) and prints the next one on standard output, and what to do with it on
/// standard error.
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Add a new kid with a fresh random secret, above every kid in use or retired.
    Add(KeyringAddArgs),
    /// Make a kid of the keyring the one that signs new keys, revocation shards and pushes.
    Activate(KeyringActivateArgs),
    /// Retire a kid: every key it signed that still works is revoked and its owner told; the
    /// kid can never be used again. Prints the keyring without it.
    Retire(KeyringRetireArgs),
    /// Show the kids of the keyring, the retired ones, and how many working keys each signed.
    Status(KeyringStatusArgs),
}

/// `keyring add` settings.
#[derive(Debug, Clone, Args)]
pub struct KeyringAddArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keyring: KeyringArgs,
    /// Also make the new kid the active one (only once every edge and control plane knows it,
    /// or for a leak: docs/operations.md).
    #[arg(long)]
    pub activate: bool,
    /// The database, so the new kid is above every retired kid too.
    #[arg(long, env = "LYNXO_DATABASE")]
    pub database: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
}

/// `keyring activate` settings.
#[derive(Debug, Clone, Args)]
pub struct KeyringActivateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keyring: KeyringArgs,
    /// The kid to activate (in the keyring, not retired).
    pub kid: u8,
    /// The database, to refuse a retired kid.
    #[arg(long, env = "LYNXO_DATABASE")]
    pub database: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
}

/// `keyring retire` settings.
#[derive(Debug, Clone, Args)]
pub struct KeyringRetireArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    /// The keyring the control plane runs with after the retirement (its active kid cannot be
    /// retired).
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// The kid to retire.
    pub kid: u8,
    /// Why: `compromised` (its secret leaked or may have) or `scheduled` (planned end of life).
    #[arg(long, value_enum)]
    pub reason: crate::store::signing::RetireReason,
    /// The operator's own note, kept with the record (never shown to accounts).
    #[arg(long)]
    pub note: Option<String>,
}

/// `keyring status` settings.
#[derive(Debug, Clone, Args)]
pub struct KeyringStatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keyring: KeyringArgs,
}

/// How long usage is kept (`store::retention`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Days of per-minute usage (at least 2); older minutes are read from the hourly counts.
    #[arg(long, env = "LYNXO_USAGE_MINUTE_DAYS", default_value_t = Retention::default().minute_days)]
    pub usage_minute_days: u32,
    /// Days of per-hour usage (at least 31 and at least the minute days); older hours are rolled
    /// up into per-day counts, kept for ever.
    #[arg(long, env = "LYNXO_USAGE_HOUR_DAYS", default_value_t = Retention::default().hour_days)]
    pub usage_hour_days: u32,
    /// Activity rows kept per key, of each kind (forwarded requests; the edge's own refusals).
    #[arg(long, env = "LYNXO_ACTIVITY_PER_KEY", default_value_t = Retention::default().activity_per_key)]
    pub activity_per_key: u32,
    /// Days an applied usage batch's name is kept (at least 1).
    #[arg(long, env = "LYNXO_USAGE_BATCH_DAYS", default_value_t = Retention::default().batch_days)]
    pub usage_batch_days: u32,
    /// Seconds between compaction passes of `serve`.
    #[arg(long, env = "LYNXO_COMPACT_EVERY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub compact_every_secs: u64,
}

impl RetentionArgs {
    /// The retention, checked.
    pub fn retention(&self) -> anyhow::Result<Retention> {
        let r = Retention {
            minute_days: self.usage_minute_days,
            hour_days: self.usage_hour_days,
            activity_per_key: self.activity_per_key,
            batch_days: self.usage_batch_days,
        };
        r.validate()?;
        Ok(r)
    }
}

/// `compact` settings.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub retention: RetentionArgs,
}

/// `backup` settings.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The backup file to write (must not exist).
    #[arg(long)]
    pub to: PathBuf,
}

/// `restore` settings.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    /// The backup file to restore (written by `backup`).
    #[arg(long)]
    pub from: PathBuf,
}

/// `copy-to-postgres` settings.
#[derive(Debug, Clone, Args)]
pub struct CopyToPostgresArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    /// The empty target database, `postgres://USER@HOST:PORT/DB` (or `host=/run/postgresql
    /// dbname=...`). No TLS yet: loopback or a unix socket only (TLS comes with the store).
    #[arg(long, env = "LYNXO_COPY_TO", hide_env_values = true)]
    pub to: Secret,
}

/// The database.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// SQLite database file (created if missing), or a PostgreSQL database
    /// (`postgres://USER@HOST:PORT/DB`, loopback or a unix socket; several `serve` replicas may
    /// share it: see docs/postgres.md).
    #[arg(
        long,
        env = "LYNXO_DATABASE",
        default_value = "lynxo-control.sqlite3",
        hide_env_values = true
    )]
    pub database: PathBuf,
}

/// Where the signing keys come from.
#[derive(Debug, Clone, Args)]
pub struct KeyringArgs {
    /// Signing keyring, `active=KID;KID:HEX,...` (the same as the edge's LYNXO_KEYRING).
    #[arg(long, env = "LYNXO_KEYRING", hide_env_values = true)]
    pub keyring: Option<Secret>,
    /// A file holding the keyring text, instead of LYNXO_KEYRING.
    #[arg(long, env = "LYNXO_KEYRING_FILE", conflicts_with = "keyring")]
    pub keyring_file: Option<PathBuf>,
}

impl KeyringArgs {
    /// The keyring text, from the flag, the environment or the file.
    pub fn text(&self) -> anyhow::Result<String> {
        Ok(match (&self.keyring, &self.keyring_file) {
            (Some(text), _) => text.expose().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading keyring file {}", path.display()))?,
            (None, None) => anyhow::bail!(
                "no signing keyring: set LYNXO_KEYRING or --keyring-file \
                 (`lynxo-control generate-keyring` makes one)"
            ),
        })
    }

    /// Loads and parses the keyring.
    pub fn load(&self) -> anyhow::Result<Keyring> {
        Keyring::from_config(&self.text()?).context("parsing the keyring")
    }
}

/// The audit keyring: the secret the audit chain is keyed with. Held outside the database, and
/// never the key-signing keyring's secret (the edge holds that one).
#[derive(Debug, Clone, Args)]
pub struct AuditKeyringArgs {
    /// Audit keyring, `active=KID;KID:HEX,...` (`lynxo-control generate-keyring` makes one).
    #[arg(long, env = "LYNXO_AUDIT_KEYRING", hide_env_values = true)]
    pub audit_keyring: Option<Secret>,
    /// A file holding the audit keyring text, instead of LYNXO_AUDIT_KEYRING.
    #[arg(
        long,
        env = "LYNXO_AUDIT_KEYRING_FILE",
        conflicts_with = "audit_keyring"
    )]
    pub audit_keyring_file: Option<PathBuf>,
}

impl AuditKeyringArgs {
    fn text(&self) -> anyhow::Result<String> {
        match (&self.audit_keyring, &self.audit_keyring_file) {
            (Some(text), _) => Ok(text.expose().to_owned()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading audit keyring file {}", path.display())),
            (None, None) => anyhow::bail!(
                "no audit keyring: set LYNXO_AUDIT_KEYRING or --audit-keyring-file \
                 (`lynxo-control generate-keyring` makes one; keep it apart from the database)"
            ),
        }
    }

    /// Loads and parses the audit keyring; refuses one that reuses a secret of `signing` (the
    /// key-signing keyring's text), which the edge holds too.
    pub fn load(&self, signing: Option<&str>) -> anyhow::Result<Arc<AuditKeyring>> {
        let text = self.text()?;
        let ring = AuditKeyring::from_config(&text).context("parsing the audit keyring")?;
        if let Some(signing) = signing {
            let (_, audit) = parse_config(&text)?;
            let (_, keys) = parse_config(signing).context("parsing the keyring")?;
            anyhow::ensure!(
                !audit
                    .iter()
                    .any(|(_, a)| keys.iter().any(|(_, k)| a.expose() == k.expose())),
                "the audit keyring reuses a secret of the signing keyring: the edge holds that \
                 one, so it must not key the audit chain"
            );
        }
        Ok(Arc::new(ring))
    }
}

/// Where revocation shards, rate limits and the audit checkpoint go: the edge's sync endpoint or
/// the KV REST API.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The edge worker's base URL: revocation shards are pushed to its signed sync endpoint.
    #[arg(long, env = "LYNXO_EDGE_SYNC_URL")]
    pub edge_sync_url: Option<String>,
    /// Cloudflare account id, to write shards through the KV REST API instead.
    #[arg(long, env = "LYNXO_KV_ACCOUNT_ID", requires_all = ["kv_namespace_id", "kv_api_token"])]
    pub kv_account_id: Option<String>,
    /// KV namespace id of the worker's revocation binding.
    #[arg(long, env = "LYNXO_KV_NAMESPACE_ID")]
    pub kv_namespace_id: Option<String>,
    /// Cloudflare API token with Workers KV edit rights.
    #[arg(long, env = "LYNXO_KV_API_TOKEN", hide_env_values = true)]
    pub kv_api_token: Option<Secret>,
    /// Cloudflare API base URL.
    #[arg(
        long,
        env = "LYNXO_KV_API_BASE",
        default_value = "https://api.cloudflare.com/client/v4"
    )]
    pub kv_api_base: String,
}

impl PublishArgs {
    /// Whether a real publisher (not the in-memory fallback) is configured.
    pub fn is_configured(&self) -> bool {
        self.edge_sync_url.is_some() || self.kv_account_id.is_some()
    }

    /// The shard writer the settings select: KV REST, edge sync, or (neither) memory only. The
    /// edge sync needs the key-signing keyring to sign its requests.
    pub fn sink(&self, keyring: Option<Arc<Keyring>>) -> anyhow::Result<Arc<dyn Sink>> {
        match (&self.kv_account_id, &self.edge_sync_url) {
            (Some(_), Some(_)) => {
                anyhow::bail!("choose one publisher: the KV REST API or --edge-sync-url")
            }
            (Some(account), None) => Ok(Arc::new(KvRestSink::new(
                &self.kv_api_base,
                account,
                self.kv_namespace_id.as_deref().unwrap_or_default(),
                self.kv_api_token.as_ref().map_or("", Secret::expose),
            ))),
            (None, Some(url)) => {
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "--edge-sync-url must be an http(s) URL"
                );
                let keyring = keyring.ok_or_else(|| {
                    anyhow::anyhow!("--edge-sync-url needs the signing keyring (LYNXO_KEYRING)")
                })?;
                Ok(Arc::new(EdgeSyncSink::new(url, keyring)))
            }
            (None, None) => {
                tracing::warn!(
                    "no publisher configured (--edge-sync-url or --kv-*): revocations are \
                     committed but reach no edge, and the audit trail is not anchored"
                );
                Ok(Arc::new(MemorySink::default()))
            }
        }
    }
}

/// `verify-audit` settings.
#[derive(Debug, Clone, Args)]
pub struct VerifyAuditArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    /// Where the checkpoint is read back from (as `serve` publishes it). Neither: the chain is
    /// checked, but rows cut off its end cannot be detected.
    #[command(flatten)]
    pub publish: PublishArgs,
    /// The key-signing keyring, to sign the read at the edge (`--edge-sync-url` only).
    #[arg(long, env = "LYNXO_KEYRING", hide_env_values = true)]
    pub keyring: Option<Secret>,
}

/// `serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keyring: KeyringArgs,
    /// Address to listen on.
    #[arg(long, env = "LYNXO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The dashboard's origin; cookie-authenticated writes must come from it.
    #[arg(
        long,
        env = "LYNXO_PUBLIC_ORIGIN",
        default_value = "http://localhost:8080"
    )]
    pub public_origin: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub publish: PublishArgs,
    /// Run with no publisher: revocations are committed and shown by the API, but reach no edge
    /// (the in-memory sink takes the shards), and the audit trail is not anchored. Without a
    /// publisher (`--edge-sync-url` or `--kv-*`) `serve` refuses to start unless this is given.
    #[arg(long, env = "LYNXO_NO_PUBLISH")]
    pub no_publish: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
    /// Revocation-list shards; must equal the edge's setting.
    #[arg(long, env = "LYNXO_SHARD_COUNT", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub shard_count: u16,
    /// Seconds a published shard stays valid (its next-update): how long the edge keeps
    /// answering from its last list when the control plane is unreachable, before it fails
    /// closed.
    #[arg(long, env = "LYNXO_LIST_LIFETIME_SECS", default_value_t = DEFAULT_LIFETIME_SECS, value_parser = clap::value_parser!(u64).range(10..))]
    pub list_lifetime_secs: u64,
    /// Every shard is republished (and the audit checkpoint refreshed) this often; at most half
    /// the list lifetime.
    #[arg(long, env = "LYNXO_HEARTBEAT_SECS", default_value_t = DEFAULT_HEARTBEAT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    /// `POST /v1/keys/verify` calls per minute per account (a burst of a tenth of it).
    #[arg(long, env = "LYNXO_VERIFY_RATE_LIMIT", default_value_t = crate::verify::DEFAULT_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub verify_rate_limit: u32,
    /// Largest request body, in bytes.
    #[arg(long, env = "LYNXO_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request head (from the connection's start, or from the
    /// previous response on a kept-alive connection); a slower one is disconnected.
    #[arg(long, env = "LYNXO_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_secs: u64,
    /// Client connections open at once; more wait in the listen backlog. Keep it well under the
    /// process's file-descriptor limit (`ulimit -n`, systemd's `LimitNOFILE`).
    #[arg(long, env = "LYNXO_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Reverse proxies (IP addresses or CIDR networks, comma-separated) whose forwarding header
    /// names the client. Only their header is read, and only the hops they appended; a request
    /// from any other peer is that peer's. Empty: every peer is the client.
    #[arg(long, env = "LYNXO_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write the client's address into (the one they overwrite
    /// or append to, so the right-most hops are theirs).
    #[arg(long, env = "LYNXO_CLIENT_ADDRESS_HEADER", value_enum, default_value_t)]
    pub client_address_header: ForwardedHeader,
    /// Sign-in password hashes (argon2id, 19 MiB each) running at once; more are answered 429
    /// with Retry-After. Default: the number of CPUs.
    #[arg(long, env = "LYNXO_SIGN_IN_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub sign_in_concurrency: Option<u16>,
    /// Seconds a dashboard session lasts at most, however it is used (the absolute timeout).
    #[arg(long, env = "LYNXO_SESSION_TTL_SECS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(60..=30 * 86400))]
    pub session_ttl_secs: u64,
    /// Seconds a dashboard session may go unused before it ends (the idle timeout); at most the
    /// absolute timeout.
    #[arg(long, env = "LYNXO_SESSION_IDLE_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_secs: u64,
    /// Sessions a user may have at once; a sign-in past it ends their oldest.
    #[arg(long, env = "LYNXO_SESSIONS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sessions_per_user: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub retention: RetentionArgs,
    /// The bearer token `GET /metrics` requires (at least 32 characters; give Prometheus the
    /// same in `authorization.credentials`). Unset: `/metrics` refuses every request (401).
    #[arg(long, env = "LYNXO_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
    /// `/readyz` answers 503 `clock_skew` while the edge's clock (read from its signed usage
    /// batches) is further than this from ours, in seconds; signed exchanges stop at 300.
    #[arg(long, env = "LYNXO_SKEW_READY_SECS", default_value_t = crate::skew::DEFAULT_READY_SECS, value_parser = clap::value_parser!(u64).range(1..300))]
    pub skew_ready_secs: u64,
    /// A warning is logged once when the clock skew passes this many seconds.
    #[arg(long, env = "LYNXO_SKEW_WARN_SECS", default_value_t = crate::skew::DEFAULT_WARN_SECS, value_parser = clap::value_parser!(u64).range(1..300))]
    pub skew_warn_secs: u64,
    /// The API's base URL for development keys (the dashboard's example requests).
    #[arg(long, env = "LYNXO_API_BASE_DEVELOPMENT", default_value = crate::state::ApiBases::DEVELOPMENT)]
    pub api_base_development: String,
    /// The API's base URL for staging keys.
    #[arg(long, env = "LYNXO_API_BASE_STAGING", default_value = crate::state::ApiBases::STAGING)]
    pub api_base_staging: String,
    /// The API's base URL for production keys.
    #[arg(long, env = "LYNXO_API_BASE_PRODUCTION", default_value = crate::state::ApiBases::PRODUCTION)]
    pub api_base_production: String,
    /// Path prefix of the secret-scanning report endpoints (`<prefix>/github`,
    /// `<prefix>/gitlab`): what you register with GitHub and GitLab.
    #[arg(long, env = "LYNXO_SECRET_SCANNING_PATH", default_value = crate::leaks::DEFAULT_PATH)]
    pub secret_scanning_path: String,
    /// GitHub's secret-scanning public-key document; unset, the GitHub endpoint answers 404.
    /// GitHub's is `https://api.github.com/meta/public_keys/secret_scanning`.
    #[arg(long, env = "LYNXO_GITHUB_KEYS_URL")]
    pub github_keys_url: Option<String>,
    /// GitLab's public-key document for its leaked-secret reports; unset, the GitLab endpoint
    /// answers 404.
    #[arg(long, env = "LYNXO_GITLAB_KEYS_URL")]
    pub gitlab_keys_url: Option<String>,
    /// Secret-scanning reports a minute per provider signing key (a burst of a tenth of it).
    #[arg(long, env = "LYNXO_SECRET_SCANNING_RATE_LIMIT", default_value_t = crate::leaks::DEFAULT_REPORTS_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub secret_scanning_rate_limit: u32,
    /// `POST /v1/keys/revoke` calls a minute per client network (a burst of a tenth of it).
    #[arg(long, env = "LYNXO_SELF_REVOKE_RATE_LIMIT", default_value_t = crate::leaks::DEFAULT_HOLDER_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub self_revoke_rate_limit: u32,
}

/// Checks a path prefix for the report endpoints: `/` then segments of letters, digits, `-` and
/// `_`, no trailing slash, and not under the API's `/v1` or the dashboard's paths.
pub fn validate_scanning_path(path: &str) -> anyhow::Result<()> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    let well_formed = path.starts_with('/')
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    anyhow::ensure!(
        well_formed,
        "--secret-scanning-path must look like /secret-scanning (letters, digits, - and _ \
         between slashes, no trailing slash), got {path:?}"
    );
    anyhow::ensure!(
        ![
            "v1",
            "dashboard",
            "assets",
            "sign-in",
            "healthz",
            "readyz",
            "openapi.json"
        ]
        .contains(&segments[0]),
        "--secret-scanning-path must not be under another route ({path:?})"
    );
    Ok(())
}

/// Checks that `text` is an origin: `scheme://host[:port]`, nothing after it. The CSRF check
/// compares browsers' `Origin` header with it byte for byte, so a trailing slash or a path
/// would refuse every dashboard write.
pub fn validate_origin(text: &str) -> anyhow::Result<()> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| anyhow::anyhow!("--public-origin must start with https:// or http://"))?;
    anyhow::ensure!(
        !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']),
        "--public-origin must be scheme://host[:port] with no path or trailing slash, got {text:?}"
    );
    Ok(())
}

/// An API base URL: `https://` or `http://`, a host, an optional path, no trailing slash, and
/// only characters that need no quoting in the shell line the dashboard shows it in.
pub fn validate_api_base(flag: &str, text: &str) -> anyhow::Result<()> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| anyhow::anyhow!("{flag} must start with https:// or http://"))?;
    anyhow::ensure!(
        !rest.is_empty()
            && !rest.starts_with('/')
            && !text.ends_with('/')
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]%".contains(&b)),
        "{flag} must be scheme://host[:port][/path] without a trailing slash, query or \
         characters a shell would read, got {text:?}"
    );
    Ok(())
}

impl ServeArgs {
    /// The API's base URL per environment.
    pub fn api_bases(&self) -> crate::state::ApiBases {
        crate::state::ApiBases {
            development: self.api_base_development.clone(),
            staging: self.api_base_staging.clone(),
            production: self.api_base_production.clone(),
        }
    }
}

impl ServeArgs {
    /// Checks the settings that clap's types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        validate_origin(&self.public_origin)?;
        validate_scanning_path(&self.secret_scanning_path)?;
        for (flag, url) in [
            ("--api-base-development", &self.api_base_development),
            ("--api-base-staging", &self.api_base_staging),
            ("--api-base-production", &self.api_base_production),
        ] {
            validate_api_base(flag, url)?;
        }
        match (self.publish.is_configured(), self.no_publish) {
            (true, true) => anyhow::bail!(
                "--no-publish contradicts the publisher given (--edge-sync-url or --kv-*)"
            ),
            (false, false) => anyhow::bail!(
                "no publisher: give --edge-sync-url or --kv-account-id/--kv-namespace-id/\
                 --kv-api-token, or --no-publish to run with revocations that reach no edge"
            ),
            _ => {}
        }
        if let Some(token) = &self.metrics_token {
            anyhow::ensure!(
                token.expose().len() >= 32 && token.expose().bytes().all(|b| b.is_ascii_graphic()),
                "--metrics-token must be at least 32 printable characters without spaces \
                 (`openssl rand -hex 32` makes one)"
            );
        }
        anyhow::ensure!(
            self.max_body_bytes >= 1024,
            "--max-body-bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.session_idle_secs <= self.session_ttl_secs,
            "--session-idle-secs must be at most --session-ttl-secs"
        );
        anyhow::ensure!(
            self.heartbeat_secs * 2 <= self.list_lifetime_secs,
            "--heartbeat-secs must be at most half of --list-lifetime-secs, so a shard is \
             republished before the edge refuses it"
        );
        self.retention.retention()?;
        Ok(())
    }

    /// The proxies allowed to name the client.
    pub fn proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone(), self.client_address_header)
    }
}

/// `init` settings.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The account's display name.
    #[arg(long, env = "LYNXO_INIT_ACCOUNT", default_value = "Default account")]
    pub account_name: String,
    /// The first user's email.
    #[arg(long, env = "LYNXO_INIT_EMAIL")]
    pub email: String,
    /// The first user's password (at least 12 characters); prefer the environment variable.
    #[arg(long, env = "LYNXO_INIT_PASSWORD", hide_env_values = true)]
    pub password: Secret,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
}

/// `reset-password` settings.
#[derive(Debug, Clone, Args)]
pub struct ResetPasswordArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The user's email.
    #[arg(long, env = "LYNXO_RESET_EMAIL")]
    pub email: String,
    /// The new password (at least 12 characters); prefer the environment variable, which stays
    /// out of the shell's history and the process list.
    #[arg(long, env = "LYNXO_RESET_PASSWORD", hide_env_values = true)]
    pub password: Secret,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditKeyringArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bases_are_urls_a_shell_line_can_hold() {
        for good in [
            "https://api.lynxo.ai",
            "http://127.0.0.1:8787",
            "https://[::1]:8443/api",
            "https://eu.example.com/lynxo/v1-base",
        ] {
            assert!(validate_api_base("--x", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "api.lynxo.ai",
            "ftp://api.lynxo.ai",
            "https://",
            "https:///path",
            "https://api.lynxo.ai/",
            "https://api.lynxo.ai?x=1",
            "https://api.lynxo.ai#x",
            "https://api.lynxo.ai/$(id)",
            "https://api.lynxo.ai/a b",
            "https://api.lynxo.ai/\"quoted\"",
            "https://api.lynxo.ai/;rm",
        ] {
            assert!(validate_api_base("--x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in ["https://keys.lynxo.ai", "http://localhost:8080"] {
            assert!(validate_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "keys.lynxo.ai",
            "https://keys.lynxo.ai/",
            "https://keys.lynxo.ai/app",
            "https://",
            "ftp://x",
        ] {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_report_path_is_checked_at_startup() {
        for good in ["/secret-scanning", "/hooks/leaks-7f3a_b", "/a"] {
            assert!(validate_scanning_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "secret-scanning",
            "/secret-scanning/",
            "/a//b",
            "/a/../b",
            "/a b",
            "/v1/scan",
            "/dashboard",
            "/assets/x",
        ] {
            assert!(validate_scanning_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses_with_defaults() {
        let cli = Cli::try_parse_from(["control", "serve", "--keyring", "active=1;1:00"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected");
        };
        assert_eq!(args.shard_count, 16);
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert!(!args.no_publish);
        assert!(args.validate().is_err(), "no publisher and no --no-publish");
        assert!(args.proxies().is_empty());
        assert_eq!(args.sign_in_concurrency, None);
        assert_eq!(
            (
                args.session_ttl_secs,
                args.session_idle_secs,
                args.sessions_per_user
            ),
            (12 * 3600, 3600, 10)
        );
        assert!(Cli::try_parse_from(["control", "serve", "--shard-count", "0"]).is_err());
    }

    /// With no publisher, revocations would be marked published and dropped from the outbox
    /// without reaching any edge: `serve` starts that way only when told to.
    #[test]
    fn serve_needs_a_publisher_or_an_explicit_no_publish() {
        let validate = |extra: &[&str]| {
            let mut argv = vec!["control", "serve", "--keyring", "active=1;1:00"];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("serve expected");
            };
            args.validate().map(|()| args.no_publish)
        };
        assert!(validate(&[]).is_err());
        assert!(validate(&["--no-publish"]).unwrap());
        assert!(!validate(&["--edge-sync-url", "http://127.0.0.1:8787"]).unwrap());
        assert!(validate(&["--no-publish", "--edge-sync-url", "http://127.0.0.1:8787"]).is_err());
        let kv = [
            "--kv-account-id",
            "a",
            "--kv-namespace-id",
            "n",
            "--kv-api-token",
            "t",
        ];
        assert!(validate(&kv).is_ok());
    }

    #[test]
    fn trusted_proxies_are_checked_at_startup() {
        let serve = |extra: &[&str]| {
            let mut argv = vec!["control", "serve", "--keyring", "active=1;1:00"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(args) => args,
                _ => unreachable!(),
            })
        };
        let args = serve(&[
            "--trusted-proxies",
            "127.0.0.1,10.0.0.0/8, ::1",
            "--client-address-header",
            "forwarded",
            "--sign-in-concurrency",
            "4",
        ])
        .unwrap();
        assert_eq!(args.trusted_proxies.len(), 3);
        assert_eq!(args.client_address_header, ForwardedHeader::Forwarded);
        assert_eq!(args.sign_in_concurrency, Some(4));
        for bad in [
            &["--trusted-proxies", "0.0.0.0/0"][..],
            &["--trusted-proxies", "10.0.0.0/8,proxy.internal"],
            &["--trusted-proxies", "10.0.0.0/40"],
            &["--client-address-header", "x-real-ip"],
            &["--sign-in-concurrency", "0"],
            &["--session-idle-secs", "0"],
            &["--sessions-per-user", "0"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }
}
