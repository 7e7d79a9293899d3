//! The Sessions page and the password change (issue 12) in real headless Chromium: the real
//! control plane (`control init`, then `control serve`, no edge needed) serves the dashboard,
//! and `tests/browser/sessions.mjs` (playwright-core driving Debian's `chromium`) uses it from
//! two browsers as two people would: list the sessions, end one, sign out everywhere else, change
//! the password. Then the operator's `control reset-password` runs against the live database:
//! the password the browser set stops working, the reset one works.
//!
//! Screenshots go to `target/dashboard-screenshots/`. `scripts/bootstrap.sh` installs Chromium
//! and playwright-core; without them this test fails and says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::control::{AUDIT_KEYRING, control_binary};
use e2e::http;
use e2e::stack::{KEYRING, workspace_root};

const EMAIL: &str = "sessions@example.com";
const PASSWORD: &str = "first password, long enough";
const CHANGED: &str = "changed in the browser";
const RESET: &str = "set by the operator's reset";
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> PathBuf {
    std::env::var_os("LYNXO_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Runs the control binary with the test's audit keyring; panics unless it succeeds.
fn control(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running control {args:?}: {e}"));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "control {args:?} failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

/// The status of a sign-in with `password`.
fn sign_in(addr: SocketAddr, password: &str) -> u16 {
    let body = serde_json::json!({ "email": EMAIL, "password": password }).to_string();
    http::send(
        addr,
        "POST",
        "/v1/sessions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("sign-in: {e}"))
    .status
}

#[test]
fn sessions_page_and_password_change_in_headless_chromium() {
    let root = workspace_root();
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: run scripts/bootstrap.sh (it installs Debian's chromium)",
        browser.display()
    );
    assert!(
        root.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed: run scripts/bootstrap.sh"
    );
    let bin = control_binary();
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let db = state.path().join("control.sqlite3");
    let db_arg = db.to_str().unwrap_or_else(|| panic!("database path"));
    control(
        &bin,
        &["init", "--database", db_arg, "--email", EMAIL],
        &[("LYNXO_INIT_PASSWORD", PASSWORD)],
    );
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a free port: {e}"));
    let log_path = state.path().join("control.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("log: {e}"));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let _serve = Running(
        Command::new(&bin)
            .args(["serve", "--no-publish", "--database", db_arg])
            .args(["--listen", &addr.to_string()])
            .args(["--public-origin", &format!("http://{addr}")])
            .env("LYNXO_KEYRING", KEYRING)
            .env("LYNXO_AUDIT_KEYRING", AUDIT_KEYRING)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("control serve: {e}")),
    );
    let ready = Instant::now();
    while !http::send(addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200) {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "control plane not ready: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let screenshots = root.join("target/dashboard-screenshots");
    let mut child = Command::new("node")
        .arg(root.join("tests/browser/sessions.mjs"))
        .current_dir(&root)
        .env("LYNXO_DASHBOARD_URL", format!("http://{addr}"))
        .env("LYNXO_EMAIL", EMAIL)
        .env("LYNXO_PASSWORD", PASSWORD)
        .env("LYNXO_NEW_PASSWORD", CHANGED)
        .env("LYNXO_SCREENSHOTS", &screenshots)
        .env("LYNXO_CHROMIUM", &browser)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node tests/browser/sessions.mjs: {e}"));
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for node: {e}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    assert!(
        out.status.success(),
        "tests/browser/sessions.mjs failed (screenshot: {}):\n{printed}\ncontrol plane log:\n{}",
        screenshots.join("sessions-failure.png").display(),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // The operator's reset, on the database the service is serving.
    assert_eq!(sign_in(addr, CHANGED), 200);
    let printed = control(
        &bin,
        &["reset-password", "--database", db_arg, "--email", EMAIL],
        &[("LYNXO_RESET_PASSWORD", RESET)],
    );
    assert!(printed.contains("sessions_ended="), "{printed}");
    assert_ne!(
        printed.trim_end().rsplit('=').next(),
        Some("0"),
        "the browsers' sessions were ended: {printed}"
    );
    assert_eq!(
        sign_in(addr, CHANGED),
        401,
        "the old password stops working"
    );
    assert_eq!(sign_in(addr, RESET), 200, "the reset one works");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for secret in [PASSWORD, CHANGED, RESET] {
        assert!(
            !log.contains(secret),
            "a password is in the control plane's log"
        );
    }
}
