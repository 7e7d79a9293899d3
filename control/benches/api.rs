//! Throughput and latency of the admin API over real HTTP on loopback, with durable commits
//! (WAL, `synchronous=FULL`) on a real file:
//!
//! - key creations per second under 32 concurrent clients;
//! - p50/p99 latency of listing an account's 50 keys.
//!
//! `cargo bench -p control --bench api`. Prints a small report; not a criterion benchmark
//! because the quantity is a rate under concurrency, not the time of one call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control::store::Store;
use control::{AppState, Settings, SystemClock, app, auth};
use shared::mac::Keyring;

const CLIENTS: usize = 32;
const CREATES: usize = 6000;
const LISTS: usize = 3000;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn create(agent: &ureq::Agent, base: &str, token: &str) -> u16 {
    agent
        .post(format!("{base}/v1/keys"))
        .header("authorization", format!("Bearer {token}"))
        .content_type("application/json")
        .send(r#"{"name":"bench","environment":"production","permission":"read_only"}"#)
        .map(|mut r| {
            let _ = r.body_mut().read_to_vec();
            r.status().as_u16()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.sqlite3"))?;
    let settings = Settings {
        // Account setup is not what is measured.
        argon2: argon2::Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?,
        ..Settings::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Every account on the standard plan (50 active keys): CREATES / 50 accounts, so the limit
    // check counts what it counts in production.
    let mut tokens = Vec::new();
    for i in 0..=CREATES / 50 {
        let created = auth::bootstrap(
            &store,
            &settings,
            &format!("account {i}"),
            &format!("bench{i}@example.com"),
            "bench password 1",
            now,
        )
        .map_err(|e| anyhow::anyhow!("{}", e.code()))?;
        tokens.push(created.token);
    }
    let fifty = tokens.pop().unwrap_or_default();
    let tokens = Arc::new(tokens);
    let keyring = Keyring::from_config(&format!("active=1;1:{}", "5a".repeat(32)))?;
    let state = AppState::new(store, keyring, Arc::new(SystemClock), settings);

    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(async move {
        let _ = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let base = format!("http://{addr}");

    // Warm up: the first use of each token writes its audit row.
    for token in tokens.iter() {
        let _ = agent()
            .get(format!("{base}/v1/keys"))
            .header("authorization", format!("Bearer {token}"))
            .call();
    }

    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, failures, base, tokens) =
                (next.clone(), failures.clone(), base.clone(), tokens.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= CREATES {
                        break;
                    }
                    if create(&agent, &base, &tokens[n / 50]) != 201 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed();
    println!(
        "create: {CREATES} keys, {CLIENTS} clients, {:.0} creates/s ({} failed), durable commits",
        CREATES as f64 / elapsed.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );

    let agent = agent();
    for _ in 0..50 {
        create(&agent, &base, &fifty);
    }
    let mut latencies = Vec::with_capacity(LISTS);
    for _ in 0..LISTS {
        let t = Instant::now();
        let mut r = agent
            .get(format!("{base}/v1/keys"))
            .header("authorization", format!("Bearer {fifty}"))
            .call()?;
        let body = r.body_mut().read_to_vec()?;
        latencies.push(t.elapsed());
        assert!(body.len() > 50 * 200, "a list of 50 keys");
    }
    latencies.sort();
    println!(
        "list (50 keys): {LISTS} sequential requests, p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
