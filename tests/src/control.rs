//! Starts the real control plane (the `control` binary) for a test, in front of a running
//! [`Stack`]'s worker, and stops it afterwards.
//!
//! The binary is built with the cargo that runs the tests (`cargo build -p control --bin control
//! --message-format=json`, same profile, same target directory), and its path is read from
//! cargo's own build messages rather than guessed, so `CARGO_TARGET_DIR` or a release run
//! finds the right file. An up-to-date binary makes that a no-op of well under a second.
//!
//! [`Control::start`] creates a temporary database (SQLite, or PostgreSQL when the suite runs
//! on it: [`crate::postgres::test_database`]), runs `control init` (an account, a
//! user and a management token), then `control serve` on the port the stack reserved for it
//! (the worker's `CONTROL_URL`, where it sends usage batches) with the test
//! keyring and `--edge-sync-url` pointing at the stack's worker, so revocations reach the edge
//! through the worker's signed sync endpoint. It returns once the worker holds every shard from
//! the publisher's first pass (before that the worker fails closed). [`Control::stop`] and
//! [`Control::resume`] take it down and up again on the same database; `Drop` stops it. Both
//! `init` and `serve` get the tests' audit keyring ([`AUDIT_KEYRING`]);
//! [`Control::verify_audit`] checks a database against the checkpoint `serve` anchored at the
//! worker.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use shared::key::Environment;
use shared::scope::ScopeSet;

use crate::stack::{KEYRING, Stack, workspace_binary};
use crate::{http, keys};

/// The control plane's audit keyring in the tests (`LYNXO_AUDIT_KEYRING`): a test-only secret,
/// not the signing keyring's.
pub const AUDIT_KEYRING: &str = shared::testkit::AUDIT_KEYRING;

/// How long a limit push or a usage batch may take to arrive before a test fails. Both take
/// milliseconds to a few seconds; a batch retried after the control plane came back waits for
/// the meter's backoff (at most 30 s).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The email of the user `init` creates (dashboard tests sign in with it).
pub const EMAIL: &str = "e2e@example.com";
/// That user's password.
pub const PASSWORD: &str = "e2e-password-long-enough";

/// The running control plane.
pub struct Control {
    /// Its address.
    pub addr: SocketAddr,
    /// The management token `init` printed.
    pub token: String,
    /// The account `init` created.
    pub account_id: u64,
    bin: PathBuf,
    edge: SocketAddr,
    state: TempDir,
    /// What it serves: a SQLite file in `state`, or a PostgreSQL URL.
    database: PathBuf,
    child: Option<Child>,
    /// Extra environment of `serve` (say, scaled-down lifetimes).
    env: Vec<(String, String)>,
}

/// An account as `control init` printed it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account.
    pub account_id: u64,
    /// Its first user.
    pub user_id: u64,
    /// Its management token.
    pub token: String,
}

impl Account {
    fn from_init(printed: &str) -> Self {
        let field = |name: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("control init printed no {name}: {printed}"))
        };
        let number = |name: &str| {
            field(name)
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        Self {
            account_id: number("account_id"),
            user_id: number("user_id"),
            token: field("management_token"),
        }
    }
}

/// A response from the control plane, with its body parsed as JSON (`Null` if it is not).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// The raw response.
    pub raw: http::Response,
}

/// Builds the `control` binary with the cargo running the tests; returns its path.
pub fn control_binary() -> PathBuf {
    workspace_binary("control", "control")
}

/// Runs `control init` on `database`: a new account, its user and a management token.
pub(crate) fn init(
    bin: &Path,
    database: &Path,
    name: &str,
    email: &str,
    password: &str,
) -> Account {
    let init = Command::new(bin)
        .arg("init")
        .arg("--database")
        .arg(database)
        .args(["--account-name", name, "--email", email])
        .env("LYNXO_INIT_PASSWORD", password)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin:?} init: {e}"));
    let printed = String::from_utf8_lossy(&init.stdout).into_owned();
    assert!(
        init.status.success(),
        "control init failed: {printed}{}",
        String::from_utf8_lossy(&init.stderr)
    );
    Account::from_init(&printed)
}

impl Control {
    /// Initialises a fresh database and serves it, publishing to `stack`'s worker; returns once
    /// the service is ready.
    pub fn start(stack: &Stack) -> Self {
        Self::start_with_env(stack, &[])
    }

    /// [`Control::start`] with extra environment for `serve` (`LYNXO_LIST_LIFETIME_SECS`, ...).
    pub fn start_with_env(stack: &Stack, env: &[(&str, &str)]) -> Self {
        Self::start_on(stack, env, crate::postgres::test_database)
    }

    /// [`Control::start`] on a SQLite file whatever backend the suite runs on
    /// (`LYNXO_TEST_POSTGRES`): for tests of what exists for SQLite's file only (`control
    /// backup` / `restore`; on PostgreSQL its own tools do that, docs/postgres.md).
    pub fn start_sqlite(stack: &Stack) -> Self {
        Self::start_on(stack, &[], |dir| dir.join("control.sqlite3"))
    }

    /// [`Control::start`] on `database` (a SQLite file or a `postgres://` URL), made by
    /// `database` in the control plane's own temporary directory.
    pub fn start_on(
        stack: &Stack,
        env: &[(&str, &str)],
        database: impl FnOnce(&Path) -> PathBuf,
    ) -> Self {
        let bin = control_binary();
        let state = tempfile::Builder::new()
            .prefix("lynxo-e2e-control-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let database = database(state.path());
        let first = init(&bin, &database, "Default account", EMAIL, PASSWORD);

        let mut control = Self {
            addr: stack.control,
            token: first.token,
            account_id: first.account_id,
            bin,
            edge: stack.edge,
            state,
            database,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        control.spawn();
        control.wait_ready(Duration::from_secs(30));
        control.wait_for_every_shard(stack, Duration::from_secs(30));
        control
    }

    /// Another `control serve` on the same (PostgreSQL) database, publishing to the same worker
    /// on a port of its own: a second replica. Returns once it is ready. The worker sends usage
    /// to the first one only (its `CONTROL_URL`).
    pub fn replica(&self) -> Self {
        let state = tempfile::Builder::new()
            .prefix("lynxo-e2e-replica-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("a free port: {e}"));
        let mut replica = Self {
            addr,
            token: self.token.clone(),
            account_id: self.account_id,
            bin: self.bin.clone(),
            edge: self.edge,
            state,
            database: self.database.clone(),
            child: None,
            env: self.env.clone(),
        };
        replica.spawn();
        replica.wait_ready(Duration::from_secs(30));
        replica
    }

    /// Kills the control plane at once (SIGKILL of its process group), as a crashed host.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    /// The database it serves: a SQLite file, or a `postgres://` URL when the suite runs on
    /// PostgreSQL ([`crate::postgres::test_database`]).
    pub fn database(&self) -> PathBuf {
        self.database.clone()
    }

    /// The running `control serve` process.
    pub fn process(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Adds another account with its own user (`email`, `password`) to the served database, as
    /// `control init` does; returns it with its management token.
    pub fn add_account(&self, name: &str, email: &str, password: &str) -> Account {
        init(&self.bin, &self.database(), name, email, password)
    }

    /// Runs `control verify-audit` on `database` against the stack's worker (where `serve`
    /// anchors the audit checkpoint): whether it passed, and what it printed.
    pub fn verify_audit(&self, database: &std::path::Path) -> (bool, String) {
        let out = Command::new(&self.bin)
            .arg("verify-audit")
            .arg("--database")
            .arg(database)
            .env("LYNXO_EDGE_SYNC_URL", format!("http://{}", self.edge))
            .env("LYNXO_KEYRING", KEYRING)
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {:?} verify-audit: {e}", self.bin));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Starts `control serve` on [`Self::addr`], appending to the log.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("control.log"))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--database")
            .arg(self.database())
            .args(["--listen", &self.addr.to_string()])
            .args(["--edge-sync-url", &format!("http://{}", self.edge)])
            .args(["--public-origin", &format!("http://{}", self.addr)])
            .env("LYNXO_KEYRING", KEYRING)
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?} serve: {e}", self.bin));
        self.child = Some(child);
    }

    /// Stops the control plane (SIGTERM, then SIGKILL after 5 s); its database stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
    }

    /// Restarts the control plane with the signing keyring `keyring` (its `LYNXO_KEYRING` from
    /// now on), publishing to `stack`'s worker as it runs now (a restarted worker has a new
    /// address). Returns once it is ready and its first pass has rewritten every revocation
    /// shard, so every shard is signed by the new keyring's active kid.
    pub fn restart_with_keyring(&mut self, stack: &Stack, keyring: &str) {
        let before = self.shard_versions().into_iter().max().unwrap_or(0);
        self.stop();
        self.env.retain(|(k, _)| k != "LYNXO_KEYRING");
        self.env
            .push(("LYNXO_KEYRING".to_owned(), keyring.to_owned()));
        self.edge = stack.edge;
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
        let start = Instant::now();
        loop {
            let versions = self.shard_versions();
            if versions.len() == usize::from(keys::SHARDS) && versions.iter().all(|v| *v > before) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the control plane did not republish every shard: {versions:?} (before: \
                 {before})\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The version of each revocation shard the control plane last published (from its
    /// database, read only).
    pub fn shard_versions(&self) -> Vec<u64> {
        let Ok(mut db) = crate::database::Database::try_open(&self.database()) else {
            return Vec::new();
        };
        let mut versions = Vec::new();
        for shard in 0..keys::SHARDS {
            match db.try_row(
                "SELECT version FROM revocation_shards WHERE shard = ?1",
                &[i64::from(shard).into()],
            ) {
                Ok(Some(row)) => versions.push(u64::try_from(row[0].int()).unwrap_or(0)),
                Ok(None) => {}
                Err(_) => return Vec::new(),
            }
        }
        versions
    }

    /// Runs `control keyring <args>` on the served database with `keyring` as its
    /// `LYNXO_KEYRING`: whether it succeeded, its standard output and its standard error.
    pub fn keyring_command(&self, args: &[&str], keyring: &str) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .arg("keyring")
            .args(args)
            .env("LYNXO_DATABASE", self.database())
            .env("LYNXO_KEYRING", keyring)
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {:?} keyring: {e}", self.bin));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts the stopped control plane again on the same address and database; returns once it
    /// is ready.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the control plane is running");
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Waits until the worker has every revocation shard from the publisher's first pass: until
    /// then it fails closed (503) for keys in the shards it lacks. Probes with one test key per
    /// shard (the test keyring is the control plane's too).
    fn wait_for_every_shard(&self, stack: &Stack, limit: Duration) {
        let start = Instant::now();
        for shard in 0..keys::SHARDS {
            let mut claims = keys::claims(
                keys::key_id(shard, u64::MAX),
                Environment::Development,
                ScopeSet::FULL_ACCESS,
            );
            // The worker's active kid: after a rollover the tests' kid 1 may be gone.
            claims.kid = stack.keyring.active_kid();
            let auth = format!("Bearer {}", keys::issue(&stack.keyring, &claims));
            loop {
                let r = stack.edge("GET", "/v1/jobs", &[("Authorization", &auth)], b"");
                if r.status == 200 {
                    break;
                }
                assert_eq!(r.status, 503, "shard {shard} probe: {}", r.text());
                assert!(
                    start.elapsed() < limit,
                    "the worker lacks shard {shard} after {limit:?}\ncontrol plane log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            if http::send(self.addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "control plane not ready after {limit:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The control plane's process id, while it runs (for its memory: `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the control plane logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("control.log")).unwrap_or_default()
    }

    /// Calls the admin API with the management token; `body` is sent as JSON if present.
    pub fn api(&self, method: &str, target: &str, body: Option<&Value>) -> ApiResponse {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        let bytes = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let raw = http::send(self.addr, method, target, &headers, bytes.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {target} to the control plane: {e}"));
        let body = serde_json::from_slice(&raw.body).unwrap_or(Value::Null);
        ApiResponse {
            status: raw.status,
            body,
            raw,
        }
    }

    /// Calls the admin API and asserts the status; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, method: &str, target: &str, body: Option<&Value>, status: u16) -> Value {
        let r = self.api(method, target, body);
        assert_eq!(r.status, status, "{method} {target}: {}", r.raw.text());
        r.body
    }
}

impl Control {
    /// Polls the key until the edge acknowledged its current rate-limit policy.
    pub fn wait_limit_synced(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let key = self.expect("GET", &format!("/v1/keys/{id}"), None, 200);
            match key["rate_limit_pending"].as_bool() {
                Some(false) => return key,
                Some(true) => {}
                None => panic!("no rate_limit_pending in {key}"),
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the limit of {id} did not reach the edge in {DEADLINE:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The key's usage over the last hour, by minute.
    pub fn key_usage(&self, id: &str) -> Value {
        let to = crate::stack::unix_now() + 60;
        let from = to - 3600;
        self.expect(
            "GET",
            &format!("/v1/keys/{id}/usage?from={from}&to={to}&granularity=minute"),
            None,
            200,
        )
    }

    /// Polls the key's usage until it counts at least `requests`; returns it. `context` is
    /// printed on failure (the worker's log, say).
    pub fn usage_reaching(&self, id: &str, requests: u64, context: impl Fn() -> String) -> Value {
        let start = Instant::now();
        loop {
            let usage = self.key_usage(id);
            if usage["totals"]["requests"].as_u64().unwrap_or(0) >= requests {
                return usage;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "usage of {id} did not reach {requests} in {DEADLINE:?}: {usage}\n{}",
                context()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}
