//! What rate limiting and metering add to a request's latency (issue 5), measured side by side
//! in one run: the release worker, and the same worker built with the `bench-no-limits` feature
//! (no rate limit, no metering), each under `wrangler dev` in front of its own demo origin,
//! called alternately with the same key, one request at a time.
//!
//! A benchmark, not a test: ignored by default and run by `bash bench/latency.sh`, which builds
//! the baseline into `edge/build-bench-no-limits` and sets `LYNXO_BASELINE_BUILD` to it.

use std::time::{Duration, Instant};

use e2e::control::Control;
use e2e::keys::{self, SHARDS};
use e2e::stack::{Options, Stack};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[test]
#[ignore = "benchmark: run by bench/latency.sh"]
fn latency_with_and_without_limits_and_metering() {
    let rounds: usize = std::env::var("LYNXO_LATENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let baseline = std::env::var("LYNXO_BASELINE_BUILD")
        .unwrap_or_else(|_| "edge/build-bench-no-limits".to_owned());

    let on = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&on);
    let off = Stack::start(
        env!("CARGO_BIN_EXE_demo_origin"),
        Options {
            build_dir: baseline,
            ..Options::default()
        },
    );
    // The baseline has no control plane: its revocation shards are written to its KV directly.
    for shard in 0..SHARDS {
        let bytes = keys::shard_bytes(&off.keyring, shard, 1, &[], 86_400);
        off.kv_put(&shared::revocation::kv_key(shard), &bytes);
    }

    // The plan's highest limit, so the run never reaches it.
    let created = control.expect(
        "POST",
        "/v1/keys",
        Some(&json!({
            "name": "latency", "environment": "development", "permission": "read_only",
            "rate_limit": 6000, "rate_limit_window": 60,
        })),
        201,
    );
    let key = created["key"].as_str().unwrap_or_default().to_owned();
    let auth = format!("Bearer {key}");
    let headers = [("Authorization", auth.as_str())];
    let call = |stack: &Stack| {
        let t = Instant::now();
        let r = stack.edge("GET", "/v1/jobs", &headers, b"");
        let elapsed = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("ratelimit").is_some(),
            std::ptr::eq(stack, &on),
            "RateLimit headers only with limits on"
        );
        elapsed
    };
    // Wait until the limit reached the edge, then warm both up.
    let start = Instant::now();
    while on
        .edge("GET", "/v1/jobs", &headers, b"")
        .header("ratelimit-policy")
        != Some("\"default\";q=6000;w=60")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no limit push");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..200 {
        call(&on);
        call(&off);
    }
    let mut with = Vec::with_capacity(rounds);
    let mut without = Vec::with_capacity(rounds);
    for i in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            with.push(call(&on));
            without.push(call(&off));
        } else {
            without.push(call(&off));
            with.push(call(&on));
        }
    }
    with.sort();
    without.sort();
    let (p50_on, p99_on) = (percentile(&with, 0.50), percentile(&with, 0.99));
    let (p50_off, p99_off) = (percentile(&without, 0.50), percentile(&without, 0.99));
    println!("latency through wrangler dev, {rounds} alternating requests each:");
    println!(
        "  limits + metering on : p50 {:>8.0} us  p99 {:>8.0} us",
        micros(p50_on),
        micros(p99_on)
    );
    println!(
        "  limits + metering off: p50 {:>8.0} us  p99 {:>8.0} us",
        micros(p50_off),
        micros(p99_off)
    );
    println!(
        "  added                : p50 {:>+8.0} us  p99 {:>+8.0} us",
        micros(p50_on) - micros(p50_off),
        micros(p99_on) - micros(p99_off)
    );
}
