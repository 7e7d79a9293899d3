//! The key page and the shown-once panel of issue 18 in real headless Chromium:
//! `tests/browser/dash_key.mjs` walks them against the real control plane and the real worker
//! under `wrangler dev`, asserts each new behaviour and runs axe on every state it visits. This
//! test then checks that no key the dashboard showed reached the control plane's log.
//! Screenshots (`key-page.png`, `key-page-375px.png`, `key-revoked.png`) go to
//! `target/dashboard-screenshots/`.

use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::stack::{Options, Stack};

/// The whole browser script, generously: it takes about a minute when usage arrives fast.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn key_page_in_headless_chromium() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());
    let edge = format!("http://{}", stack.edge);
    let walked = e2e::browser::walk("dash_key.mjs", &control, &edge, &[], SCRIPT_DEADLINE);
    assert!(
        walked.secrets.len() >= 2,
        "the script reported {} secrets",
        walked.secrets.len()
    );
}
