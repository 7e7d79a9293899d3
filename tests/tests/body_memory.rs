//! Measurement, not a test (`#[ignore]`; run by `bench/body-memory.sh`): how much the worker's
//! `workerd` and the control plane grow while unauthenticated callers send 48 MiB bodies in
//! chunked transfer coding (no length) to the endpoints that read bodies, and to an API route.
//!
//! Each series sends one request to warm the code path (not counted), then 30 requests
//! (`BODY_MEMORY_ROUNDS`),
//! each body whole (the attacker finishes every body it can), and reads the resident set from
//! `/proc/<pid>/status` before and after each, once it settled. A series of `GET /healthz`
//! first shows what any request costs the process (logs, allocator), to tell it apart from what
//! a body costs. With `LYNXO_BASELINE_BUILD=<dir>` (worker-build output of another commit) the
//! same series run against that worker too, in the same run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use e2e::attack::Proc;
use e2e::control::Control;
use e2e::http::{self, Stream};
use e2e::stack::{Options, Stack, unix_now};

const ATTACK: usize = 48 << 20;

/// Requests per series: `BODY_MEMORY_ROUNDS`, 30 by default.
fn rounds() -> usize {
    std::env::var("BODY_MEMORY_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 10)
        .unwrap_or(30)
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> i64 {
    i64::try_from(Proc(pid).rss_kib()).unwrap_or(i64::MAX)
}

/// One request of a series: method, target, whether it carries a fresh-looking (forged)
/// signature header, and its body size (0: none).
type Attack = (&'static str, &'static str, bool, usize);

fn send(addr: SocketAddr, (method, target, signed, size): Attack) -> (u16, usize) {
    let signature = format!("t={},kid=1,v1={}", unix_now(), "00".repeat(32));
    let headers: Vec<(&str, &str)> = if signed {
        vec![("Lynxo-Signature", signature.as_str())]
    } else {
        Vec::new()
    };
    if size == 0 {
        let r = http::send(addr, method, target, &headers, b"")
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        return (r.status, 0);
    }
    let body = Stream {
        total: size,
        chunk: 64 * 1024,
        content_length: None,
        finish: true,
        pause: Duration::ZERO,
    };
    let (r, written) = http::send_streamed(
        addr,
        method,
        target,
        &headers,
        &body,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    (r.map_or(0, |r| r.status), written)
}

/// Sends a series to `addr` and prints how `pid` grew.
fn measure(label: &str, pid: u32, addr: SocketAddr, attack: Attack) {
    let (method, target, signed, size) = attack;
    send(addr, attack);
    sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    let mut growth = Vec::new();
    let mut answers = Vec::new();
    let mut written_max = 0;
    let rounds = rounds();
    for _ in 0..rounds {
        let (status, written) = send(addr, attack);
        answers.push(status);
        written_max = written_max.max(written);
        sleep(Duration::from_millis(500));
        growth.push(rss_kib(pid) - before);
    }
    answers.dedup();
    let at = |n: usize| growth[n - 1];
    println!(
        "body-memory: {label}: {method} {target} signed={signed} body={size}: RSS {before} KiB; growth after 1: {} KiB, after 10: {} KiB, after {rounds}: {} KiB, peak {} KiB; answers {answers:?}, at most {} KiB of each body written before the answer",
        at(1),
        at(10),
        at(rounds),
        growth.iter().max().copied().unwrap_or(0),
        written_max >> 10,
    );
}

const WORKER_SERIES: [Attack; 5] = [
    ("GET", "/healthz", false, 0),
    ("PUT", "/_lynxo/sync/revocations/3", false, ATTACK),
    ("PUT", "/_lynxo/sync/revocations/3", true, ATTACK),
    ("PUT", "/_lynxo/sync/limits", true, ATTACK),
    ("POST", "/v1/jobs", false, ATTACK),
];

fn attack_worker(label: &str, worker_build: Option<PathBuf>) {
    let options = Options {
        worker_build,
        ..Options::default()
    };
    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), options);
    for attack in WORKER_SERIES {
        measure(label, stack.worker_pid, stack.edge, attack);
    }
}

#[test]
#[ignore = "a measurement: bench/body-memory.sh"]
fn body_memory() {
    if let Some(dir) = std::env::var_os("LYNXO_BASELINE_BUILD") {
        attack_worker("baseline worker", Some(PathBuf::from(dir)));
    }
    attack_worker("worker", None);

    let stack = Stack::start(env!("CARGO_BIN_EXE_demo_origin"), Options::default());
    let control = Control::start(&stack);
    let pid = control
        .pid()
        .unwrap_or_else(|| panic!("control plane not running"));
    for attack in [
        ("GET", "/healthz", false, 0),
        ("POST", "/_lynxo/usage", false, ATTACK),
        ("POST", "/_lynxo/usage", true, ATTACK),
        ("POST", "/v1/sessions", false, ATTACK),
    ] {
        measure("control plane", pid, control.addr, attack);
    }
}
