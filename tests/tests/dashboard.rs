//! The dashboard (issue 6) in real headless Chromium: the real control plane serves it, the real
//! worker under `wrangler dev` answers the keys it creates, and `tests/browser/dashboard.mjs`
//! (playwright-core driving Debian's `chromium`) clicks through it as a person would: sign in,
//! create a key with custom scopes, copy it, call the edge with it, see the request in the key's
//! usage chart and activity log, rotate, revoke with the typed-name confirmation, see the edge
//! refuse it; and checks that the shown-once key is kept nowhere after leaving the page and that
//! a cross-site form post is refused.
//!
//! This test then checks that no key the dashboard showed reached the control plane's log.
//! Screenshots go to `target/dashboard-screenshots/`. `scripts/bootstrap.sh` installs Chromium
//! and playwright-core; without them this test fails and says so.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::browser::chromium;
use e2e::control::{Control, EMAIL, PASSWORD};
use e2e::stack::{Options, Stack, workspace_root};

/// The whole browser script, generously: it takes well under a minute when usage arrives fast.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn dashboard_in_headless_chromium() {
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

    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());

    let screenshots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{screenshots:?}: {e}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let secrets = scratch.path().join("secrets.txt");

    let script = Instant::now();
    let (ok, output) = run_script(&root, &browser, &control, &stack, &screenshots, &secrets);
    eprintln!("{output}");
    eprintln!("browser script ran in {:?}", script.elapsed());
    assert!(
        ok,
        "tests/browser/dashboard.mjs failed (screenshot: {}):\n{output}\ncontrol plane log:\n{}",
        screenshots.join("failure.png").display(),
        tail(&control.log(), 80)
    );

    let shown = std::fs::read_to_string(&secrets).unwrap_or_default();
    let shown: Vec<&str> = shown.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        shown.len() >= 4,
        "the script reported {} shown-once secrets",
        shown.len()
    );
    let log = control.log();
    for secret in shown {
        assert!(
            !log.contains(secret),
            "a key the dashboard showed once is in the control plane's log"
        );
        // Any 24-character piece of its body would be a leak too.
        let body = secret.rsplit('_').next().unwrap_or(secret);
        for start in (0..body.len().saturating_sub(24)).step_by(8) {
            assert!(
                !log.contains(&body[start..start + 24]),
                "a piece of a shown-once key is in the control plane's log"
            );
        }
    }
}

/// Runs the browser script with the stack's addresses; returns whether it passed and what it
/// printed. Killed after [`SCRIPT_DEADLINE`].
fn run_script(
    root: &Path,
    browser: &Path,
    control: &Control,
    stack: &Stack,
    screenshots: &Path,
    secrets: &Path,
) -> (bool, String) {
    let (dashboard, edge) = (
        format!("http://{}", control.addr),
        format!("http://{}", stack.edge),
    );
    e2e::browser::run_script(
        root,
        "tests/browser/dashboard.mjs",
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
    )
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
