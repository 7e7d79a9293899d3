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

use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::stack::{Options, Stack};

/// The whole browser script, generously: it takes well under a minute when usage arrives fast.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn dashboard_in_headless_chromium() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());
    let edge = format!("http://{}", stack.edge);
    let walked = e2e::browser::walk("dashboard.mjs", &control, &edge, &[], SCRIPT_DEADLINE);
    assert!(
        walked.secrets.len() >= 4,
        "the script reported {} shown-once secrets",
        walked.secrets.len()
    );
}
