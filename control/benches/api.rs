//! Throughput and latency of the admin API over real HTTP on loopback, with durable commits
//! (SQLite: WAL, `synchronous=FULL` on a real file; PostgreSQL: a private server with fsync
//! on), on each backend in one run: SQLite, PostgreSQL with one replica, and PostgreSQL with
//! two replicas (two stores and two listeners on one database, the clients alternating):
//!
//! - key creations per second under 32 concurrent clients;
//! - p50/p99 latency of listing an account's 50 keys;
//! - usage ingestion (signed batches of per-minute counts) in counts per second, then the same
//!   list with 24 hours of per-minute usage behind every key (`requests_24h`, unused scopes),
//!   and the usage queries.
//!
//! `cargo bench -p control --bench api [sqlite|postgres|postgres-2 ...]` (all three by default).
//! Prints a small report; not a criterion benchmark because the quantity is a rate under
//! concurrency, not the time of one call.

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
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = if wanted.is_empty() {
        vec!["sqlite".to_owned(), "postgres".into(), "postgres-2".into()]
    } else {
        wanted
    };
    let server = runs
        .iter()
        .any(|r| r.starts_with("postgres"))
        .then(e2e::postgres::Server::start);
    for (n, run) in runs.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let (database, replicas) = match (run.as_str(), &server) {
            ("sqlite", _) => (dir.path().join("bench.sqlite3"), 1),
            ("postgres", Some(pg)) => (pg.create_database(&format!("bench{n}")).into(), 1),
            ("postgres-2", Some(pg)) => (pg.create_database(&format!("bench{n}")).into(), 2),
            _ => anyhow::bail!("unknown run {run:?}: sqlite, postgres or postgres-2"),
        };
        println!(
            "--- {run} ({replicas} replica{})",
            if replicas == 1 { "" } else { "s" }
        );
        bench(&database, replicas)?;
    }
    Ok(())
}

/// The whole scenario on `database`, served by `replicas` stores and listeners (clients take
/// them in turn).
fn bench(database: &std::path::Path, replicas: usize) -> anyhow::Result<()> {
    let audit_keyring = Arc::new(shared::testkit::audit_keyring());
    let stores = (0..replicas)
        .map(|_| Store::open(database, Arc::clone(&audit_keyring)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = stores[0].clone();
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
    // The last account's: it lists 50 keys below.
    let mut fifty_account = 0;
    for i in 0..=CREATES / 50 {
        let created = auth::bootstrap(
            &store,
            &settings,
            &format!("account {i}"),
            &format!("bench{i}@example.com"),
            "bench password 1",
            now,
        )?;
        tokens.push(created.token);
        fifty_account = created.account_id;
    }
    let fifty = tokens.pop().unwrap_or_default();
    let tokens = Arc::new(tokens);
    let keyring = shared::testkit::keyring();
    let ring = keyring.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut bases = Vec::new();
    for store in stores {
        let state = AppState::new(
            store,
            keyring.clone(),
            Arc::new(SystemClock),
            settings.clone(),
        );
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            let _ = axum::serve(
                listener,
                app(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        bases.push(format!("http://{addr}"));
    }
    let bases = Arc::new(bases);
    let base = bases[0].clone();

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
        .map(|c| {
            let (next, failures, tokens) = (next.clone(), failures.clone(), tokens.clone());
            let base = bases[c % bases.len()].clone();
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
        "create: {CREATES} keys, {CLIENTS} clients over {} listener(s), {:.0} creates/s ({} failed), durable commits",
        bases.len(),
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

    usage(&agent, &base, &fifty, fifty_account, &ring, now)?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn get(agent: &ureq::Agent, url: &str, token: &str) -> anyhow::Result<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let mut r = agent
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .call()?;
    anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
    let body = r.body_mut().read_to_vec()?;
    Ok((t.elapsed(), body))
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what}: {} sequential requests, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
}

/// 24 hours of per-minute usage for each of the 50 keys (two scopes, two outcomes each), sent
/// as signed batches, then the list and usage queries over it.
fn usage(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    account: u64,
    ring: &Keyring,
    now: u64,
) -> anyhow::Result<()> {
    use shared::key::KeyId;
    use shared::usage::{Batch, Count, Outcome};
    let (_, body) = get(agent, &format!("{base}/v1/keys?limit=50"), token)?;
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    let ids: Vec<KeyId> = list["data"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k["id"].as_str().and_then(KeyId::parse_hex))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(ids.len() == 50, "50 keys expected");
    let mut counts = Vec::new();
    for id in &ids {
        for m in 0..1440 {
            for (scope, outcome) in [
                ("jobs:read", Outcome::Success),
                ("jobs:read", Outcome::RateLimited),
                ("files:read", Outcome::Success),
                ("files:write", Outcome::Forbidden),
            ] {
                counts.push(Count {
                    key_id: *id,
                    account_id: account,
                    minute: now / 60 - m,
                    scope: Some(scope.into()),
                    outcome,
                    n: 3,
                });
            }
        }
    }
    let total = counts.len();
    let started = Instant::now();
    for (seq, chunk) in counts.chunks(10_000).enumerate() {
        let batch = Batch {
            source: "bench".into(),
            seq: seq as u64 + 1,
            counts: chunk.to_vec(),
            ..Batch::default()
        };
        let body = serde_json::to_vec(&batch)?;
        let signature = shared::usage::sign_batch(ring, &body, now);
        let status = agent
            .post(format!("{base}{}", shared::usage::INGEST_PATH))
            .header("lynxo-signature", signature)
            .content_type("application/json")
            .send(&body[..])
            .map(|r| r.status().as_u16())?;
        anyhow::ensure!(status == 200, "ingest answered {status}");
    }
    let elapsed = started.elapsed();
    println!(
        "ingest: {total} per-minute counts in batches of 10,000, {:.0} counts/s, durable commits",
        total as f64 / elapsed.as_secs_f64()
    );
    let rounds = 500;
    let mut list = Vec::new();
    let mut minutes = Vec::new();
    let mut account_days = Vec::new();
    for i in 0..rounds {
        let (t, body) = get(agent, &format!("{base}/v1/keys?limit=50"), token)?;
        if i == 0 {
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            // 12 a minute for 1,440 minutes, less a minute or two that left the 24 hours
            // while the ingest ran (slower backends take longer).
            let n = v["data"][0]["requests_24h"].as_u64().unwrap_or(0);
            anyhow::ensure!((12 * 1438..=12 * 1440).contains(&n), "requests_24h {n}");
        }
        list.push(t);
        let id = &ids[i % ids.len()];
        minutes.push(
            get(
                agent,
                &format!("{base}/v1/keys/{id}/usage?granularity=minute"),
                token,
            )?
            .0,
        );
        account_days.push(
            get(
                agent,
                &format!("{base}/v1/usage?granularity=hour&from={}", now - 86_400),
                token,
            )?
            .0,
        );
    }
    report("list (50 keys, 24 h of per-minute usage each)", list);
    report("key usage (1441 minute buckets)", minutes);
    report("account usage (25 hour buckets, 50 keys)", account_days);
    Ok(())
}
