//! What a sign-in's attempt budgets cost in each ledger, side by side in one run: the memory
//! ledger, the database ledger on SQLite, and the database ledger on PostgreSQL (a private
//! server, `e2e::postgres`; fsync on). A sign-in makes one reserve before its hash and one
//! settle after it: the pair's latency alone (p50, p99 of N, default 2,000), and the pairs per
//! second 16 sign-ins at once get (each a different email, none refused). Beside them, one
//! argon2id hash with the service's default parameters: what a sign-in costs anyway.
//!
//!   cargo bench -p control --bench sign_in_ledger [-- N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use control::auth::limit::{
    Attempt, AttemptLedger, Budget, BudgetKey, MemoryLedger, Outcome, StoreLedger,
};
use control::store::Store;

/// An unknown browser's attempt for email `n`: its shared budget and its pair's.
fn attempt(n: u64) -> Attempt {
    let key = |kind: u8| {
        let mut k = [kind; 16];
        k[..8].copy_from_slice(&n.to_le_bytes());
        BudgetKey(k)
    };
    Attempt {
        email: key(1),
        budgets: vec![
            Budget {
                key: key(1),
                limit: 10,
                cleared_by_success: false,
            },
            Budget {
                key: key(2),
                limit: 5,
                cleared_by_success: true,
            },
        ],
    }
}

/// One sign-in's ledger work: reserve, then settle as a failure.
async fn sign_in(ledger: &dyn AttemptLedger, a: &Attempt, now: u64) {
    let id = ledger.reserve(a, now).await.expect("admitted");
    ledger.settle(a, id, Outcome::Failed, now).await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(name: &str, ledger: Arc<dyn AttemptLedger>, n: u64, base: u64) {
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n {
        let a = attempt(base + i);
        let started = Instant::now();
        sign_in(&*ledger, &a, 1_800_000_000).await;
        times.push(started.elapsed());
    }
    times.sort();
    let concurrent = 16;
    let per_task = n / concurrent;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrent)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                for i in 0..per_task {
                    let a = attempt(base + n + t * per_task + i);
                    sign_in(&*ledger, &a, 1_800_000_000).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let rate = (per_task * concurrent) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name:<24} reserve+settle p50 {:>9.3} ms  p99 {:>9.3} ms  | 16 at once: {rate:>8.0} sign-ins/s",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let ring = Arc::new(shared::testkit::audit_keyring());
    let dir = tempfile::tempdir()?;
    let sqlite = Store::open(&dir.path().join("ledger.sqlite3"), Arc::clone(&ring))?;
    let (server, url) = tokio::task::spawn_blocking(|| {
        let server = e2e::postgres::Server::start();
        let url = server.create_database("ledger");
        (server, url)
    })
    .await?;
    let postgres = Store::open(std::path::Path::new(&url), Arc::clone(&ring))?;

    let params = control::Settings::default().argon2;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0_u8; 32];
    let started = Instant::now();
    for _ in 0..5 {
        argon2
            .hash_password_into(
                b"correct horse battery staple",
                b"somesaltsomesalt",
                &mut out,
            )
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    }
    println!(
        "{:<24} one hash {:>9.3} ms (default parameters, for scale)",
        "argon2id",
        started.elapsed().as_secs_f64() * 1e3 / 5.0
    );
    measure("memory", Arc::new(MemoryLedger::default()), n, 0).await;
    measure(
        "database (SQLite)",
        Arc::new(StoreLedger::new(sqlite)),
        n,
        10 * n,
    )
    .await;
    measure(
        "database (PostgreSQL)",
        Arc::new(StoreLedger::new(postgres.clone())),
        n,
        20 * n,
    )
    .await;
    drop(postgres);
    drop(server);
    Ok(())
}
