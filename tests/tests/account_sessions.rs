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
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::browser::{ready_browser, run_script};
use e2e::control::AUDIT_KEYRING;
use e2e::http;
use e2e::stack::workspace_root;
use e2e::standalone::Standalone;

const EMAIL: &str = "sessions@example.com";
const PASSWORD: &str = "first password, long enough";
const CHANGED: &str = "changed in the browser";
const RESET: &str = "set by the operator's reset";
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

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
    let browser = ready_browser();
    let serve = Standalone::start("Default account", EMAIL, PASSWORD);
    let (addr, bin, db) = (serve.addr, serve.bin.clone(), serve.database());
    let db_arg = db.to_str().unwrap_or_else(|| panic!("database path"));

    let screenshots = root.join("target/dashboard-screenshots");
    let url = serve.url();
    let (ok, printed) = run_script(
        &root,
        "tests/browser/sessions.mjs",
        &[
            ("LYNXO_DASHBOARD_URL", url.as_ref()),
            ("LYNXO_EMAIL", EMAIL.as_ref()),
            ("LYNXO_PASSWORD", PASSWORD.as_ref()),
            ("LYNXO_NEW_PASSWORD", CHANGED.as_ref()),
            ("LYNXO_SCREENSHOTS", screenshots.as_os_str()),
            ("LYNXO_CHROMIUM", browser.as_os_str()),
        ],
        SCRIPT_DEADLINE,
    );
    eprintln!("{printed}");
    assert!(
        ok,
        "tests/browser/sessions.mjs failed (screenshot: {}):\n{printed}\ncontrol plane log:\n{}",
        screenshots.join("sessions-failure.png").display(),
        serve.log()
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
    let log = serve.log();
    for secret in [PASSWORD, CHANGED, RESET] {
        assert!(
            !log.contains(secret),
            "a password is in the control plane's log"
        );
    }
}
