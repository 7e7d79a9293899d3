//! The key page and the shown-once panel of issue 18 in real headless Chromium:
//! `tests/browser/dash_key.mjs` walks them against the real control plane and the real worker
//! under `wrangler dev`, asserts each new behaviour and runs axe on every state it visits. This
//! test then checks that no key the dashboard showed reached the control plane's log.
//! Screenshots (`key-page.png`, `key-page-375px.png`, `key-revoked.png`) go to
//! `target/dashboard-screenshots/`.

use std::time::{Duration, Instant};

use e2e::browser::chromium;
use e2e::control::{Control, EMAIL, PASSWORD};
use e2e::stack::{Options, Stack, workspace_root};

/// The whole browser script, generously: it takes about a minute when usage arrives fast.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn key_page_in_headless_chromium() {
    let root = workspace_root();
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: run scripts/bootstrap.sh (it installs Debian's chromium)",
        browser.display()
    );
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());

    let screenshots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{screenshots:?}: {e}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let secrets = scratch.path().join("secrets.txt");
    let (dashboard, edge) = (
        format!("http://{}", control.addr),
        format!("http://{}", stack.edge),
    );
    let (ok, output) = e2e::browser::run_script(
        &root,
        "tests/browser/dash_key.mjs",
        &[
            ("LYNXO_DASHBOARD_URL", dashboard.as_ref()),
            ("LYNXO_EDGE_URL", edge.as_ref()),
            ("LYNXO_EMAIL", EMAIL.as_ref()),
            ("LYNXO_PASSWORD", PASSWORD.as_ref()),
            ("LYNXO_SCREENSHOTS", screenshots.as_os_str()),
            ("LYNXO_SECRETS_FILE", secrets.as_os_str()),
            ("LYNXO_CHROMIUM", browser.as_os_str()),
        ],
        SCRIPT_DEADLINE,
    );
    eprintln!("{output}");
    let log = control.log();
    assert!(
        ok,
        "tests/browser/dash_key.mjs failed (screenshot: {}):\n{output}",
        screenshots.join("failure.png").display(),
    );
    let shown = std::fs::read_to_string(&secrets).unwrap_or_default();
    let shown: Vec<&str> = shown.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        shown.len() >= 2,
        "the script reported {} secrets",
        shown.len()
    );
    for secret in shown {
        assert!(
            !log.contains(secret),
            "a key the dashboard showed once is in the control plane's log"
        );
    }
}
