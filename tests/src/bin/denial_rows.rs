//! Measures what a flood of refused requests of one key costs the control plane (issue 10,
//! finding 5): 600 requests the key has no scope for, then 600 with the key revoked, through the
//! real worker under `wrangler dev` and the real control plane; prints the answers the client
//! got, the requests the key's usage counts, and the activity rows stored for it.
//!
//! `cargo run -p e2e --bin denial_rows` (it builds the worker and the control plane as the
//! end-to-end tests do). It only sends and counts, so it runs on any revision: the same numbers
//! before and after a change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::stack::{Options, Stack};
use serde_json::json;

fn demo_origin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
    exe.with_file_name("demo_origin")
}

fn main() {
    let stack = Stack::start(&demo_origin().display().to_string(), Options::default());
    let control = Control::start(&stack);
    let created = control.expect(
        "POST",
        "/v1/keys",
        Some(&json!({ "name": "flooded", "environment": "development",
                      "permission": "read_only", "rate_limit": 5, "rate_limit_window": 60 })),
        201,
    );
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let key = created["key"].as_str().unwrap_or_default().to_owned();
    let auth = format!("Bearer {key}");
    let send = |method: &str| {
        stack
            .edge(method, "/v1/jobs", &[("Authorization", auth.as_str())], b"")
            .status
    };
    // The key's own limit reaches the edge first (on any revision the control plane pushes it).
    control.wait_limit_synced(&id);
    let mut answers: BTreeMap<&str, BTreeMap<u16, u64>> = BTreeMap::new();
    for _ in 0..600 {
        *answers
            .entry("600 without the scope")
            .or_default()
            .entry(send("POST"))
            .or_default() += 1;
    }
    control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "leaked" })),
        200,
    );
    let mut polls = 0_u64;
    let start = Instant::now();
    while send("POST") != 401 {
        polls += 1;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "revocation never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    *answers
        .entry("600 with the key revoked")
        .or_default()
        .entry(401)
        .or_default() += 1;
    for _ in 1..600 {
        *answers
            .entry("600 with the key revoked")
            .or_default()
            .entry(send("POST"))
            .or_default() += 1;
    }
    let sent = 1200 + polls;
    let start = Instant::now();
    let usage = loop {
        let usage = control.key_usage(&id);
        if usage["totals"]["requests"].as_u64().unwrap_or(0) >= sent
            || start.elapsed() > Duration::from_secs(90)
        {
            break usage;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Let the last batches land, then count the rows.
    std::thread::sleep(Duration::from_secs(3));
    let mut rows = 0;
    let mut target = format!("/v1/keys/{id}/activity?limit=500");
    loop {
        let page = control.expect("GET", &target, None, 200);
        rows += page["data"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(cursor) => target = format!("/v1/keys/{id}/activity?limit=500&before={cursor}"),
            None => break,
        }
    }
    for (what, statuses) in &answers {
        println!("{what}: {statuses:?}");
    }
    println!("{polls} more requests while the revocation was on its way");
    println!(
        "usage counts {} requests of {sent} sent: {}",
        usage["totals"]["requests"], usage["totals"]["by_outcome"]
    );
    println!("activity rows stored for the key: {rows}");
}
