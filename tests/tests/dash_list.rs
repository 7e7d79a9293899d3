//! Issue 18, points 5 to 7 (the keys list and field-level errors) in real headless Chromium:
//! the real control plane serves the dashboard, the real worker under `wrangler dev` answers
//! the keys, and `tests/browser/dash_list.mjs` walks the list (active by default, sorting,
//! search by hint and id, the Expires badge), filters surviving Back, a bulk revoke of three
//! keys with one confirmation and one API call after which the edge refuses them, and the
//! field-level errors of the create dialog, key settings and token dialog; axe audits every
//! state. Saves `keys-list-bulk.png` in `target/dashboard-screenshots/`.

use std::time::{Duration, Instant};

use e2e::browser::chromium;
use e2e::control::{Control, EMAIL, PASSWORD};
use e2e::stack::{Options, Stack, workspace_root};

/// The whole browser script, generously.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn keys_list_bulk_revoke_filters_and_field_errors_in_chromium() {
    let root = workspace_root();
    let browser = chromium();
    assert!(
        browser.exists(),
        "no Chromium at {}: run scripts/bootstrap.sh",
        browser.display()
    );
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    let screenshots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{screenshots:?}: {e}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let secrets = scratch.path().join("secrets.txt");
    let (dashboard, edge) = (
        format!("http://{}", control.addr),
        format!("http://{}", stack.edge),
    );
    let started = Instant::now();
    let (ok, output) = e2e::browser::run_script(
        &root,
        "tests/browser/dash_list.mjs",
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
    eprintln!("browser script ran in {:?}", started.elapsed());
    assert!(
        ok,
        "tests/browser/dash_list.mjs failed (screenshot: {}):\n{output}",
        screenshots.join("dash-list-failure.png").display(),
    );
    assert!(
        screenshots.join("keys-list-bulk.png").exists(),
        "no keys-list-bulk.png"
    );
    // No key the walk made reached the control plane's log.
    let log = control.log();
    let made = std::fs::read_to_string(&secrets).unwrap_or_default();
    let made: Vec<&str> = made.lines().filter(|l| !l.is_empty()).collect();
    assert!(made.len() >= 7, "the script reported {} keys", made.len());
    for secret in made {
        assert!(!log.contains(secret), "a key is in the control plane's log");
    }
}
