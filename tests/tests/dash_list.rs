//! Issue 18, points 5 to 7 (the keys list and field-level errors) in real headless Chromium:
//! the real control plane serves the dashboard, the real worker under `wrangler dev` answers
//! the keys, and `tests/browser/dash_list.mjs` walks the list (active by default, sorting,
//! search by hint and id, the Expires badge), filters surviving Back, a bulk revoke of three
//! keys with one confirmation and one API call after which the edge refuses them, and the
//! field-level errors of the create dialog, key settings and token dialog; axe audits every
//! state. Saves `keys-list-bulk.png` in `target/dashboard-screenshots/`.

use std::time::Duration;

use e2e::control::Control;
use e2e::stack::{Options, Stack};

/// The whole browser script, generously.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn keys_list_bulk_revoke_filters_and_field_errors_in_chromium() {
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    let edge = format!("http://{}", stack.edge);
    let walked = e2e::browser::walk("dash_list.mjs", &control, &edge, &[], SCRIPT_DEADLINE);
    assert!(
        walked.screenshots.join("keys-list-bulk.png").exists(),
        "no keys-list-bulk.png"
    );
    assert!(
        walked.secrets.len() >= 7,
        "the script reported {} keys",
        walked.secrets.len()
    );
}
