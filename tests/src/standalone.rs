//! The control plane on its own, with no worker: `control init` on a temporary database, then
//! `control serve --no-publish` on a free loopback port with its public origin set, for tests
//! of the dashboard and the admin API that need no edge (the browser tests of sessions and
//! management tokens). Killed when dropped, with its process group.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::control::{AUDIT_KEYRING, Account, control_binary, init};
use crate::http;
use crate::stack::KEYRING;

/// How long `serve` may take to answer `/readyz` with 200.
const READY: Duration = Duration::from_secs(30);

/// A running `control serve --no-publish`.
pub struct Standalone {
    /// Where it listens (also its public origin, `http://<addr>`).
    pub addr: SocketAddr,
    /// The account `init` created, with its management token.
    pub account: Account,
    /// The `control` binary, for the operator's commands (`reset-password`, ...).
    pub bin: PathBuf,
    child: Child,
    state: TempDir,
    /// What it serves: a SQLite file in `state`, or a PostgreSQL URL.
    database: PathBuf,
}

impl Standalone {
    /// Initialises a database with one account (`account_name`, its user `email` with
    /// `password`), serves it and returns once `/readyz` answers 200.
    pub fn start(account_name: &str, email: &str, password: &str) -> Self {
        let bin = control_binary();
        let state = tempfile::Builder::new()
            .prefix("lynxo-e2e-standalone-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let database = crate::postgres::test_database(state.path());
        let account = init(&bin, &database, account_name, email, password);
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("a free port: {e}"));
        let log = std::fs::File::create(state.path().join("control.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--database")
            .arg(&database)
            .args(["--listen", &addr.to_string(), "--no-publish"])
            .args(["--public-origin", &format!("http://{addr}")])
            .env("LYNXO_KEYRING", KEYRING)
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("control serve: {e}"));
        let serve = Self {
            addr,
            account,
            bin,
            child,
            state,
            database,
        };
        let started = Instant::now();
        while !http::send(addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
            assert!(
                started.elapsed() < READY,
                "control plane not ready after {READY:?}:\n{}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        serve
    }

    /// Its public origin, `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The database it serves: a SQLite file, or a `postgres://` URL when the suite runs on
    /// PostgreSQL ([`crate::postgres::test_database`]).
    pub fn database(&self) -> PathBuf {
        self.database.clone()
    }

    /// Its temporary directory (database, log).
    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("control.log")).unwrap_or_default()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
