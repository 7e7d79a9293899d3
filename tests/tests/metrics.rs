//! `/metrics` end to end (issue 15): real traffic through the real worker under `wrangler dev`
//! (allowed, refused for scope, refused as revoked), a revocation published, sign-ins refused
//! and locked out, usage flushed back in signed batches (once after a control-plane outage, so
//! the edge's meter retried), then one scrape parsed with an OpenMetrics parser shows every
//! family, the edge-reported ones included. And the clock-skew rule: a control plane whose
//! clock runs 120 s behind the edge's (libfaketime on its process, the edge untouched) turns
//! not ready once the first usage batch measures it, and the metric shows the skew.
//!
//! Waits are polls with deadlines, never sleeps that assume a speed.

use std::time::{Duration, Instant};

use e2e::control::{Control, DEADLINE};
use e2e::http;
use e2e::scrape::Scrape;
use e2e::stack::{Options, Stack};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-metrics-token-0123456789abcdef0123";
/// libfaketime, from Debian's `faketime` package (scripts/bootstrap.sh installs it); the
/// multi-threaded variant, for tokio's worker threads.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// How far behind the edge the skewed control plane's clock runs, seconds.
const SKEW: i64 = 120;

fn edge(stack: &Stack, key: &str, method: &str) -> u16 {
    let auth = format!("Bearer {key}");
    stack
        .edge(method, "/v1/jobs", &[("Authorization", auth.as_str())], b"")
        .status
}

fn create(control: &Control, body: &Value) -> (String, String) {
    let mut body = body.clone();
    body["environment"] = "development".into();
    let created = control.expect("POST", "/v1/keys", Some(&body), 201);
    let id = created["id"].as_str().unwrap().to_owned();
    control.wait_limit_synced(&id);
    (id, created["key"].as_str().unwrap().to_owned())
}

/// Polls `check` until it holds, or fails with `what` and `context()` after [`DEADLINE`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} within {DEADLINE:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(control: &Control) -> (u16, Value) {
    let r = http::send(control.addr, "GET", "/readyz", &[], b"")
        .unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn metrics_show_the_whole_system_and_clock_skew_fails_readiness() {
    let started = Instant::now();
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    clock_skew_fails_readiness_and_shows_in_the_metric(&stack);
    one_scrape_shows_every_family_after_real_traffic(&stack);
    eprintln!("metrics end to end in {:?}", started.elapsed());
}

/// The skewed control plane goes first: it starts on a fresh database before any usage
/// batch is waiting in the worker's meter, so it is ready until one arrives.
fn clock_skew_fails_readiness_and_shows_in_the_metric(stack: &Stack) {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run scripts/bootstrap.sh (Debian's faketime package)"
    );
    let behind = format!("-{SKEW}");
    let control = Control::start_with_env(
        stack,
        &[
            ("LYNXO_METRICS_TOKEN", TOKEN),
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", behind.as_str()),
            // Only the wall clock is off, as with a bad NTP server: intervals stay true.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // Within the 300 s tolerance both ways: its pushes reached the edge (start waited for
    // every shard). Ready before it has heard from the edge, unless the edge's meter already
    // delivered a batch while it started (seen under load): then not ready for the skew and
    // for nothing else.
    let (status, body) = ready(&control);
    assert!(
        status == 200 || (status == 503 && body["code"] == "clock_skew"),
        "{status} {body}"
    );
    let (id, key) = create(
        &control,
        &json!({"name": "skew", "permission": "read_only"}),
    );
    assert_eq!(edge(stack, &key, "GET"), 200);
    control.usage_reaching(&id, 1, || stack.wrangler_log());
    let (status, body) = ready(&control);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "clock_skew", "{body}");
    let skew = Scrape::get(control.addr, TOKEN)
        .value("lynxo_clock_skew_seconds", &[])
        .expect("the skew gauge");
    // Whole seconds on both sides, plus the batch's transit: within a few seconds of 120.
    assert!(
        (skew - SKEW as f64).abs() <= 5.0,
        "the edge runs {SKEW} s ahead of this control plane, measured {skew}"
    );
    assert!(
        control
            .log()
            .contains("clock skew between the edge and the control plane"),
        "the warning is logged"
    );
    eprintln!("skewed control plane: not ready, lynxo_clock_skew_seconds = {skew}");
}

fn one_scrape_shows_every_family_after_real_traffic(stack: &Stack) {
    let mut control = Control::start_with_env(stack, &[("LYNXO_METRICS_TOKEN", TOKEN)]);
    let (rw_id, rw) = create(&control, &json!({"name": "rw", "permission": "read_write"}));
    assert_eq!(edge(stack, &rw, "GET"), 200);
    control.usage_reaching(&rw_id, 1, || stack.wrangler_log());
    // The control plane down while the edge meters: its meter fails to deliver and retries,
    // and reports how often in the batch that finally arrives. First, as a restart starts the
    // counters of the control plane's own metrics from zero.
    let failures = || {
        stack
            .wrangler_log()
            .matches("control plane unreachable")
            .count()
    };
    let before = failures();
    control.stop();
    assert_eq!(edge(stack, &rw, "GET"), 200);
    wait_until(
        "the edge's meter fails to deliver to the stopped control plane",
        || failures() > before,
        || stack.wrangler_log(),
    );
    control.resume();
    control.usage_reaching(&rw_id, 2, || stack.wrangler_log());
    let (_, ro) = create(&control, &json!({"name": "ro", "permission": "read_only"}));
    let (doomed_id, doomed) = create(
        &control,
        &json!({"name": "doomed", "permission": "read_only"}),
    );
    for _ in 0..5 {
        assert_eq!(edge(stack, &rw, "GET"), 200);
    }
    // Refused for scope: a read-only key creating a job.
    assert_eq!(edge(stack, &ro, "POST"), 403);
    // Revoked, published, refused at the edge.
    assert_eq!(edge(stack, &doomed, "GET"), 200);
    control.expect(
        "POST",
        &format!("/v1/keys/{doomed_id}/revoke"),
        Some(&json!({"reason": "e2e"})),
        200,
    );
    wait_until(
        "the revocation reaches the edge",
        || edge(stack, &doomed, "GET") == 401,
        || stack.wrangler_log(),
    );
    // Sign-ins refused, until the email's budget locks it (an email nobody has: the real
    // user stays able to sign in).
    let mut locked = false;
    for _ in 0..50 {
        let body =
            json!({"email": "nobody@example.com", "password": "wrong password!"}).to_string();
        let r = http::send(
            control.addr,
            "POST",
            "/v1/sessions",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST /v1/sessions: {e}"));
        if r.status == 429 && r.json()["code"] == "too_many_sign_in_attempts" {
            locked = true;
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert!(locked, "failed sign-ins end in a lockout");
    control.usage_reaching(&rw_id, 7, || stack.wrangler_log());
    // Random paths and methods: counted under one label, adding none.
    let before = Scrape::get(control.addr, TOKEN);
    for i in 0..20 {
        let _ = http::send(control.addr, "GET", &format!("/x/{i}/%2e%2e/{i}"), &[], b"");
        let _ = http::send(control.addr, &format!("BREW{i}"), "/v1/keys", &[], b"");
    }
    // Unauthenticated scrapes are refused.
    for auth in ["", "Bearer nope", &format!("Bearer {}", control.token)] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let r = http::send(control.addr, "GET", "/metrics", &headers, b"").unwrap();
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
    }

    let s = Scrape::get(control.addr, TOKEN);
    let routes = |s: &Scrape| -> std::collections::BTreeSet<String> {
        s.samples("lynxo_http_requests_total", &[])
            .filter_map(|x| x.labels.get("route").cloned())
            .collect()
    };
    let new: Vec<String> = routes(&s).difference(&routes(&before)).cloned().collect();
    // And `/metrics` itself: the first scrape is counted once it has answered.
    assert!(
        new.iter().all(|r| r == "unmatched" || r == "/metrics"),
        "new route labels: {new:?}"
    );
    let positive = |name: &str, labels: &[(&str, &str)]| {
        let v = s.value(name, labels);
        assert!(v.is_some_and(|v| v > 0.0), "{name}{labels:?} = {v:?}");
        v.unwrap_or_default()
    };
    positive(
        "lynxo_http_requests_total",
        &[("route", "/v1/keys"), ("method", "POST"), ("status", "201")],
    );
    positive(
        "lynxo_http_request_duration_seconds_count",
        &[("route", "/v1/keys/{id}/revoke")],
    );
    positive("lynxo_http_requests_total", &[("route", "unmatched")]);
    positive(
        "lynxo_sign_in_failures_total",
        &[("reason", "wrong_credentials")],
    );
    positive("lynxo_sign_in_lockouts_total", &[]);
    positive(
        "lynxo_publish_writes_total",
        &[("publisher", "revocations"), ("result", "ok")],
    );
    positive(
        "lynxo_publish_writes_total",
        &[("publisher", "limits"), ("result", "ok")],
    );
    positive("lynxo_revocation_list_version", &[]);
    positive("lynxo_usage_batches_total", &[("result", "applied")]);
    positive("lynxo_usage_ingest_lag_seconds", &[]);
    positive("lynxo_database_size_bytes", &[]);
    positive("lynxo_edge_isolates", &[]);
    positive("lynxo_edge_reports_total", &[]);
    positive("lynxo_edge_meter_retries_total", &[]);
    positive("lynxo_clock_skew_measured_at_seconds", &[]);
    // Present, and zero on a healthy system: nothing waits, no limiter failed, the clocks
    // agree, the shards are fresh (the unit tests drive each of them away from zero).
    for (name, labels) in [
        ("lynxo_outbox_depth", &[("publisher", "revocations")][..]),
        ("lynxo_outbox_depth", &[("publisher", "limits")]),
        (
            "lynxo_outbox_oldest_age_seconds",
            &[("publisher", "revocations")],
        ),
        (
            "lynxo_outbox_oldest_age_seconds",
            &[("publisher", "limits")],
        ),
        ("lynxo_edge_limiter_failures_total", &[]),
        ("lynxo_edge_shard_age_max_seconds", &[]),
    ] {
        assert!(s.value(name, labels).is_some(), "{name}{labels:?} missing");
    }
    let skew = s.value("lynxo_clock_skew_seconds", &[]).expect("skew");
    assert!(skew.abs() <= 5.0, "clocks in step, measured {skew}");
    let age = s
        .value("lynxo_edge_shard_age_max_seconds", &[])
        .unwrap_or(f64::NAN);
    assert!(
        (0.0..=120.0).contains(&age),
        "shards republished every heartbeat (60 s): {age}"
    );
    assert_eq!(ready(&control).0, 200);
    eprintln!(
        "one scrape: {} samples, {} families",
        s.0.len(),
        s.0.iter()
            .map(|x| x.name.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}
