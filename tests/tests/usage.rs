//! Rate limits, usage metering and the activity log end to end (issue 5): keys created through
//! the real control plane, whose limits reach the real worker under `wrangler dev` through the
//! signed sync endpoint, and whose usage comes back from the worker's meter to the control
//! plane in signed batches.
//!
//! One stack serves every scenario, run in order by one test; each scenario creates the keys it
//! needs. Waits are polls with generous deadlines, never fixed sleeps that assume a speed; the
//! only sleeps wait for a rate-limit window to start, which is a property of the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use e2e::control::{Control, DEADLINE};
use e2e::http::Response;
use e2e::stack::{Options, Stack, wait_for_window_start};
use serde_json::{Value, json};

struct Ctx {
    // Declared first so it stops first: it pushes to the worker.
    control: Control,
    stack: Stack,
}

impl Ctx {
    fn create(&self, body: &Value) -> Value {
        let created = self.control.expect("POST", "/v1/keys", Some(body), 201);
        assert!(created["key"].as_str().is_some(), "{created}");
        created
    }

    fn wait_limit_synced(&self, id: &str) -> Value {
        self.control.wait_limit_synced(id)
    }

    fn send(&self, key: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Response {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("User-Agent", "e2e/usage"),
        ];
        headers.extend_from_slice(extra);
        self.stack.edge(method, path, &headers, b"")
    }

    fn get(&self, key: &str) -> Response {
        self.send(key, "GET", "/v1/jobs", &[])
    }

    fn usage(&self, id: &str) -> Value {
        self.control.key_usage(id)
    }

    fn usage_reaching(&self, id: &str, requests: u64) -> Value {
        self.control
            .usage_reaching(id, requests, || self.stack.wrangler_log())
    }
}

#[track_caller]
fn assert_rate_headers(r: &Response, limit: u64, window: u64, remaining: u64) {
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(format!("\"default\";q={limit};w={window}").as_str()),
        "{:?}",
        r.headers
    );
    let state = r.header("ratelimit").unwrap_or_default();
    let prefix = format!("\"default\";r={remaining};t=");
    let reset: u64 = state
        .strip_prefix(&prefix)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("RateLimit {state:?}, expected {prefix}<seconds>"));
    assert!((1..=window).contains(&reset), "{state}");
}

#[track_caller]
fn assert_rate_limited(r: &Response, limit: u64, window: u64) -> u64 {
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_rate_headers(r, limit, window, 0);
    let retry_after: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers));
    assert!((1..=window).contains(&retry_after), "{retry_after}");
    let body = r.json();
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["title"], "Rate Limit Exceeded", "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    assert_eq!(body["window"], window, "{body}");
    assert_eq!(body["retry_after"], retry_after, "{body}");
    let reset = body["reset"].as_u64().unwrap_or(0);
    assert_eq!(reset % window, 0, "the reset is a window boundary: {body}");
    retry_after
}

#[test]
fn rate_limits_usage_and_activity_end_to_end() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    eprintln!("stack and control plane up in {:?}", started.elapsed());
    let mut ctx = Ctx { control, stack };

    let scenarios: [e2e::Scenario<Ctx>; 6] = [
        (
            "exactly the limit, then 429 until the window resets",
            exactly_the_limit_then_429_until_the_window_resets,
        ),
        (
            "the origin's answer passes through whole, with the RateLimit fields added",
            the_origin_answer_passes_through_with_the_rate_fields,
        ),
        (
            "a changed limit applies without a new key",
            a_changed_limit_applies_without_a_new_key,
        ),
        (
            "every outcome reaches the key's activity log",
            every_outcome_reaches_the_activity_log,
        ),
        (
            "usage is exact across a control-plane restart",
            usage_is_exact_across_a_control_plane_restart,
        ),
        (
            "8 concurrent clients stay within the limit",
            concurrent_clients_stay_within_the_limit,
        ),
    ];
    e2e::run_scenarios(&mut ctx, &scenarios);
    eprintln!(
        "rate limits and usage end to end in {:?}",
        started.elapsed()
    );
}

fn exactly_the_limit_then_429_until_the_window_resets(ctx: &mut Ctx) {
    let created = ctx.create(&json!({
        "name": "limited", "environment": "development", "permission": "read_only",
        "rate_limit": 5, "rate_limit_window": 10,
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default(),
        created["key"].as_str().unwrap_or_default(),
    );
    assert_eq!(created["rate_limit"], 5, "{created}");
    assert_eq!(created["rate_limit_window"], 10, "{created}");
    ctx.wait_limit_synced(id);

    wait_for_window_start(10);
    for remaining in (0..5).rev() {
        let r = ctx.get(key);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_rate_headers(&r, 5, 10, remaining);
    }
    let r = ctx.get(key);
    let retry_after = assert_rate_limited(&r, 5, 10);
    // Still limited: a 429 does not reset anything.
    assert_rate_limited(&ctx.get(key), 5, 10);

    sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    let r = ctx.get(key);
    assert_eq!(r.status, 200, "after the window: {}", r.text());
    assert_rate_headers(&r, 5, 10, 4);
}

/// The edge rebuilds the origin's response to add the RateLimit fields (a fetched response's
/// headers are immutable): status, the origin's headers and body come through unchanged, for
/// every status class and the statuses that must have no body.
fn the_origin_answer_passes_through_with_the_rate_fields(ctx: &mut Ctx) {
    let created = ctx.create(&json!({
        "name": "pass-through", "environment": "development", "permission": "read_only",
        "rate_limit": 100, "rate_limit_window": 3600,
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default(),
        created["key"].as_str().unwrap_or_default(),
    );
    ctx.wait_limit_synced(id);
    let statuses = [200_u16, 201, 204, 302, 304, 404, 503];
    let mut remaining = 100;
    for status in statuses {
        let r = ctx.send(
            key,
            "GET",
            "/v1/jobs",
            &[("Demo-Status", &status.to_string())],
        );
        assert_eq!(r.status, status, "{}", r.text());
        remaining -= 1;
        // Another window may have begun since the key was made (a fresh budget): read it off.
        let state = r.header("ratelimit").unwrap_or_default().to_owned();
        if !state.starts_with(&format!("\"default\";r={remaining};")) {
            remaining = state
                .strip_prefix("\"default\";r=")
                .and_then(|rest| rest.split(';').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("{status}: RateLimit {state:?}"));
        }
        assert_rate_headers(&r, 100, 3600, remaining);
        if status == 204 || status == 304 {
            assert!(r.body.is_empty(), "{status} carried a body: {}", r.text());
            continue;
        }
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{status}"
        );
        let echoed: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{status}: the origin's body did not come through: {e}"));
        assert_eq!(echoed["method"], "GET", "{status}: {echoed}");
        if status == 302 {
            assert_eq!(r.header("location"), Some("/v1/jobs"));
        }
    }
}

fn a_changed_limit_applies_without_a_new_key(ctx: &mut Ctx) {
    let created = ctx.create(&json!({
        "name": "raised", "environment": "development", "permission": "read_only",
        "rate_limit": 3, "rate_limit_window": 10,
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default(),
        created["key"].as_str().unwrap_or_default(),
    );
    ctx.wait_limit_synced(id);
    wait_for_window_start(10);
    for _ in 0..3 {
        assert_eq!(ctx.get(key).status, 200);
    }
    assert_rate_limited(&ctx.get(key), 3, 10);

    let updated = ctx.control.expect(
        "PATCH",
        &format!("/v1/keys/{id}"),
        Some(&json!({ "rate_limit": 8 })),
        200,
    );
    assert_eq!(updated["rate_limit"], 8, "{updated}");
    ctx.wait_limit_synced(id);
    wait_for_window_start(10);
    for remaining in (0..8).rev() {
        let r = ctx.get(key);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_rate_headers(&r, 8, 10, remaining);
    }
    assert_rate_limited(&ctx.get(key), 8, 10);
}

fn every_outcome_reaches_the_activity_log(ctx: &mut Ctx) {
    // Five requests per hour, refused ones included: four forwarded and one without the scope,
    // then the next is over the limit (unless the hour turned in between, in which case a later
    // one is).
    let created = ctx.create(&json!({
        "name": "outcomes", "environment": "development", "permission": "read_only",
        "rate_limit": 5, "rate_limit_window": 3600,
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default(),
        created["key"].as_str().unwrap_or_default(),
    );
    ctx.wait_limit_synced(id);

    for (status, expected) in [("200", 200), ("302", 302), ("404", 404), ("503", 503)] {
        let r = ctx.send(key, "GET", "/v1/jobs", &[("Demo-Status", status)]);
        assert_eq!(r.status, expected, "{}", r.text());
    }
    let r = ctx.send(key, "POST", "/v1/jobs", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    let limited = (0..6).map(|_| ctx.get(key)).find(|r| r.status == 429);
    assert!(limited.is_some(), "never over the limit of 5 per hour");

    ctx.control.expect(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({ "reason": "e2e" })),
        200,
    );
    let start = Instant::now();
    while ctx.get(key).status != 401 {
        assert!(
            start.elapsed() < DEADLINE,
            "the revocation never reached the edge"
        );
        sleep(Duration::from_millis(50));
    }

    let wanted = ["2xx", "3xx", "4xx", "5xx", "401", "403", "429"];
    let start = Instant::now();
    let activity = loop {
        let page = ctx.control.expect(
            "GET",
            &format!("/v1/keys/{id}/activity?limit=500"),
            None,
            200,
        );
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        let seen: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["outcome"].as_str())
            .collect();
        if wanted.iter().all(|w| seen.contains(w)) {
            break entries;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "activity of {id} lacks some of {wanted:?} after {DEADLINE:?}: {page}"
        );
        sleep(Duration::from_millis(250));
    };
    let find = |outcome: &str| {
        activity
            .iter()
            .find(|e| e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} in {activity:?}"))
    };
    let forbidden = find("403");
    assert_eq!(forbidden["method"], "POST");
    assert_eq!(forbidden["path"], "/v1/jobs");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(find("3xx")["status"], 302);
    assert_eq!(find("4xx")["status"], 404);
    assert_eq!(find("5xx")["status"], 503);
    assert_eq!(find("401")["status"], 401);
    assert_eq!(find("429")["status"], 429);
    assert_eq!(find("2xx")["user_agent"], "e2e/usage");
    // Newest first.
    let times: Vec<u64> = activity
        .iter()
        .filter_map(|e| e["at_ms"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let key_view = ctx
        .control
        .expect("GET", &format!("/v1/keys/{id}"), None, 200);
    assert!(key_view["last_used_at"].as_u64().is_some(), "{key_view}");
    assert_eq!(key_view["last_used_user_agent"], "e2e/usage", "{key_view}");
}

fn usage_is_exact_across_a_control_plane_restart(ctx: &mut Ctx) {
    let created = ctx.create(&json!({
        "name": "metered", "environment": "development", "permission": "read_write",
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default().to_owned(),
        created["key"].as_str().unwrap_or_default().to_owned(),
    );
    ctx.wait_limit_synced(&id);
    let mut sent_2xx = 0;
    let mut sent_4xx = 0;
    let mut sent = |ctx: &Ctx, status: &str| {
        let r = ctx.send(&key, "GET", "/v1/jobs", &[("Demo-Status", status)]);
        assert_eq!(r.status.to_string(), status, "{}", r.text());
        if status == "200" {
            sent_2xx += 1;
        } else {
            sent_4xx += 1;
        }
    };
    for _ in 0..20 {
        sent(ctx, "200");
    }
    // Some of these are already delivered, some wait in the worker's meter.
    ctx.control.stop();
    for _ in 0..10 {
        sent(ctx, "200");
        sent(ctx, "404");
    }
    // Long enough for the meter to try, fail and back off at least once.
    sleep(Duration::from_secs(3));
    ctx.control.resume();
    for _ in 0..15 {
        sent(ctx, "200");
    }
    let total = sent_2xx + sent_4xx;
    let usage = ctx.usage_reaching(&id, total);
    assert_eq!(usage["totals"]["requests"], total, "{usage}");
    assert_eq!(usage["totals"]["by_outcome"]["2xx"], sent_2xx, "{usage}");
    assert_eq!(usage["totals"]["by_outcome"]["4xx"], sent_4xx, "{usage}");
    assert_eq!(usage["totals"]["denied"], 0, "{usage}");
    assert_eq!(usage["by_scope"]["jobs:read"], total, "{usage}");
    let series_sum: u64 = usage["series"]
        .as_array()
        .map(|s| s.iter().filter_map(|b| b["requests"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(series_sum, total, "{usage}");
    // Retries after the outage must not count anything twice: still exact a while later.
    sleep(Duration::from_secs(3));
    assert_eq!(ctx.usage(&id)["totals"]["requests"], total);
    eprintln!("usage: {total} requests sent, {total} counted, across a control-plane restart");
}

fn concurrent_clients_stay_within_the_limit(ctx: &mut Ctx) {
    const CLIENTS: usize = 8;
    const WINDOW: u64 = 10;
    const WINDOWS: u64 = 3;
    const LIMIT: u64 = 300;
    let created = ctx.create(&json!({
        "name": "hot", "environment": "development", "permission": "read_only",
        "rate_limit": LIMIT, "rate_limit_window": WINDOW,
    }));
    let (id, key) = (
        created["id"].as_str().unwrap_or_default(),
        created["key"].as_str().unwrap_or_default(),
    );
    ctx.wait_limit_synced(id);

    let allowed = AtomicU64::new(0);
    let limited = AtomicU64::new(0);
    wait_for_window_start(WINDOW);
    let end = Instant::now() + Duration::from_millis(WINDOW * WINDOWS * 1000 - 200);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                while Instant::now() < end {
                    let r = ctx.get(key);
                    match r.status {
                        200 => allowed.fetch_add(1, Ordering::Relaxed),
                        429 => limited.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected {other}: {}", r.text()),
                    };
                }
            });
        }
    });
    let allowed = allowed.into_inner();
    let limited = limited.into_inner();
    let budget = LIMIT * WINDOWS;
    let over = i64::try_from(allowed).unwrap_or(i64::MAX) - i64::try_from(budget).unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let percent = over as f64 * 100.0 / budget as f64;
    eprintln!(
        "accuracy: {CLIENTS} clients, {WINDOWS} windows of {LIMIT}/{WINDOW}s: {allowed} allowed of \
         {budget} ({over:+}, {percent:+.2}%), {limited} limited, {} requests",
        allowed + limited
    );
    assert!(
        limited > 0,
        "the clients never reached the limit: the run says nothing"
    );
    assert!(
        over.unsigned_abs() * 50 <= budget,
        "allowed {allowed} is more than 2% from {budget}"
    );
    // Every request is counted, exactly.
    let usage = ctx.usage_reaching(id, allowed + limited);
    assert_eq!(usage["totals"]["requests"], allowed + limited, "{usage}");
    assert_eq!(usage["totals"]["by_outcome"]["429"], limited, "{usage}");
    assert_eq!(usage["totals"]["allowed"], allowed, "{usage}");
}
