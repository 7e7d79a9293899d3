//! How cost grows with data (`bench/growth.sh`, numbers in `docs/benchmarks.md`).
//!
//! `cargo run -p control --example growth -- <scale> <dir>` generates a database of the real
//! schema straight into SQLite (prepared statements, one transaction per chunk of keys), then
//! measures the real store functions on it: an account's key list (the list page, its usage
//! stats and its counts), one key's 30-day hourly usage, an account's 30-day daily usage with
//! its top keys, usage ingestion through the group committer, and one compaction pass a day
//! later. Prints one line of results and the `EXPLAIN QUERY PLAN` of every statement measured.
//!
//! The population is fixed: 10,000 accounts with 1 to 50 keys each (about 257,000 keys); the
//! first 100 accounts, the ones measured, have 50 keys each. `scale` is the share of the other
//! keys that carry traffic, in percent (1, 10, 100): each such key, and every key of the
//! measured accounts, has 30 days of traffic: 4 active hours a day (an hourly row each), one
//! active minute in each of them for the last 7 days (the minute retention), and 20 activity
//! rows. So the measured accounts' data is the same at every scale, and only the tables around
//! them grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::store::retention::{self, Retention};
use control::store::usage::{self as db, Granularity, Subject};
use control::store::{Store, keys};
use rusqlite::{Connection, params};
use shared::key::KeyId;
use shared::usage::{Batch, Count, Outcome};

const ACCOUNTS: u64 = 10_000;
const MEASURED: u64 = 100;
const DAY: u64 = 86_400;
/// "Now" of the generated data (2026-12-01 12:00 UTC).
const NOW: u64 = 1_796_126_400;
const SCOPES: [&str; 3] = ["jobs:read", "jobs:write", "files:read"];
const RUNS: usize = 400;

/// A stable pseudo-random number from `x` (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn keys_of(account: u64) -> u64 {
    if account <= MEASURED {
        50
    } else {
        1 + mix(account) % 50
    }
}

fn key_id(account: u64, k: u64) -> KeyId {
    let id = u128::from(mix(account << 8 | k)) << 64 | u128::from(mix(!(account << 8 | k)));
    KeyId::parse_hex(&format!("{id:032x}")).expect("32 hex digits")
}

struct Key {
    id: KeyId,
    account: u64,
    seed: u64,
    active: bool,
}

fn population(scale: u64) -> Vec<Key> {
    let mut keys = Vec::new();
    for account in 1..=ACCOUNTS {
        for k in 0..keys_of(account) {
            let active = account <= MEASURED || mix(account * 64 + k) % 100 < scale;
            keys.push(Key {
                id: key_id(account, k),
                account,
                seed: mix(account << 8 | k ^ 0x5555),
                active,
            });
        }
    }
    // In primary-key order: the usage tables are keyed by key id first, so rows append.
    keys.sort_by_key(|k| k.id.to_string());
    keys
}

#[derive(Default)]
struct Generated {
    keys: u64,
    active: u64,
    minutes: u64,
    hours: u64,
    activity: u64,
}

fn generate(path: &std::path::Path, scale: u64) -> anyhow::Result<Generated> {
    let mut conn = Connection::open(path)?;
    // The store opened just before may still be closing its connections.
    conn.busy_timeout(Duration::from_secs(60))?;
    // A generator, not the service: no fsync (the measurements open the file with the
    // store's own settings).
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -1_000_000)?;
    let mut g = Generated::default();
    let tx = conn.transaction()?;
    {
        let mut account = tx.prepare(
            "INSERT INTO accounts (id, name, plan_id, created_at) VALUES (?1, ?2, 'standard', ?3)",
        )?;
        for a in 1..=ACCOUNTS {
            account.execute(params![
                a as i64,
                format!("account {a}"),
                (NOW - 400 * DAY) as i64
            ])?;
        }
    }
    tx.commit()?;
    let keys = population(scale);
    for chunk in keys.chunks(2_000) {
        use control::store::keys;
        let tx = conn.transaction()?;
        {
            let mut key = tx.prepare_cached(
                "INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, kid, \
                 hint, rate_limit, created_at, last_used_at) \
                 VALUES (?1, ?2, ?3, ?4, 'production', 7, 1, 'abcd', 600, ?5, ?6)",
            )?;
            let mut minute = tx.prepare_cached(
                "INSERT INTO usage_minutes (key_id, account_id, minute, scope, outcome, n) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut hour = tx.prepare_cached(
                "INSERT INTO usage_hours (key_id, account_id, hour, scope, outcome, n) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut activity = tx.prepare_cached(
                "INSERT INTO activity (key_id, account_id, at_ms, method, path, status, outcome, \
                 client_ip, country, colo, user_agent) \
                 VALUES (?1, ?2, ?3, 'GET', '/v1/jobs/12345', 200, '2xx', '203.0.113.7', 'FR', \
                 'CDG', 'curl/8.5.0')",
            )?;
            for k in chunk {
                let seed = k.seed;
                let created = NOW - 60 * DAY - seed % (300 * DAY);
                key.execute(params![
                    k.id,
                    keys::id_top(k.id),
                    k.account as i64,
                    format!("key {}", seed % 1000),
                    created as i64,
                    k.active.then_some((NOW - 60) as i64)
                ])?;
                g.keys += 1;
                if !k.active {
                    continue;
                }
                g.active += 1;
                let first_hour = NOW / 3600 - 30 * 24;
                let minute_from = retention::Retention::default().minute_cutoff(NOW);
                for day in 0..30 {
                    for slot in 0..4u64 {
                        let h = first_hour + day * 24 + (seed >> (slot * 8)) % 6 + slot * 6;
                        let scope = SCOPES[((seed >> slot) % 3) as usize];
                        let n = 1 + (seed >> (day % 16)) % 500;
                        hour.execute(params![
                            k.id,
                            k.account as i64,
                            h as i64,
                            scope,
                            "2xx",
                            n as i64
                        ])?;
                        g.hours += 1;
                        let m = h * 60 + (seed >> slot) % 60;
                        if m >= minute_from {
                            minute.execute(params![
                                k.id,
                                k.account as i64,
                                m as i64,
                                scope,
                                "2xx",
                                n as i64
                            ])?;
                            g.minutes += 1;
                        }
                    }
                }
                for i in 0..20u64 {
                    activity.execute(params![
                        k.id,
                        k.account as i64,
                        ((NOW - i * 36 * 3600 - seed % 3600) * 1000) as i64
                    ])?;
                    g.activity += 1;
                }
            }
        }
        tx.commit()?;
    }
    // No ANALYZE: the service never runs it, so the plans here are the service's.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(g)
}

fn p99(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[(d.len() * 99).div_ceil(100) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, scale, dir] = &args[..] else {
        anyhow::bail!("usage: growth <scale percent: 1, 10 or 100> <directory>");
    };
    let scale: u64 = scale.parse()?;
    anyhow::ensure!((1..=100).contains(&scale), "scale is a percent, 1 to 100");
    let path = std::path::Path::new(dir).join(format!("growth-{scale}.sqlite3"));
    anyhow::ensure!(!path.exists(), "{} exists", path.display());
    let keyring = Arc::new(shared::testkit::audit_keyring());
    drop(Store::open(&path, Arc::clone(&keyring))?);
    let started = Instant::now();
    let g = generate(&path, scale)?;
    let generation = started.elapsed();
    let bytes = std::fs::metadata(&path)?.len();

    // Reads on a connection of our own, with every statement's SQL recorded for its plan.
    let mut conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    conn.trace_v2(
        rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
        Some(move |e: rusqlite::trace::TraceEvent<'_>| {
            if let rusqlite::trace::TraceEvent::Stmt(s, _) = e {
                let sql = s.sql().to_string();
                let mut seen = record.lock().expect("not poisoned");
                if !seen.contains(&sql) {
                    seen.push(sql);
                }
            }
        }),
    )?;
    let measured: Vec<(u64, Vec<KeyId>)> = (1..=MEASURED)
        .map(|a| (a, (0..50).map(|k| key_id(a, k)).collect()))
        .collect();
    let mut plans: HashMap<&str, Vec<String>> = HashMap::new();
    let mut time = |name: &'static str,
                    f: &mut dyn FnMut(usize) -> anyhow::Result<()>|
     -> anyhow::Result<Duration> {
        seen.lock().expect("not poisoned").clear();
        f(0)?;
        plans.insert(name, seen.lock().expect("not poisoned").clone());
        let mut d = Vec::with_capacity(RUNS);
        for i in 1..=RUNS {
            let t = Instant::now();
            f(i)?;
            d.push(t.elapsed());
        }
        Ok(p99(d))
    };
    let list = time("key list", &mut |i| {
        let (account, _) = &measured[i % measured.len()];
        let filter = keys::ListFilter {
            limit: 50,
            ..keys::ListFilter::default()
        };
        let rows = keys::list(
            &control::store::db::Db::Sqlite(&conn),
            *account,
            &filter,
            NOW,
        )?;
        anyhow::ensure!(rows.len() == 50);
        let ids: Vec<KeyId> = rows.iter().map(|r| r.id).collect();
        let stats = db::key_stats(
            &control::store::db::Db::Sqlite(&conn),
            &ids,
            NOW,
            NOW - 30 * DAY,
        )?;
        anyhow::ensure!(stats.values().any(|s| s.requests_24h > 0));
        keys::count_working(&control::store::db::Db::Sqlite(&conn), *account, NOW)?;
        Ok(())
    })?;
    let today = NOW / DAY * DAY;
    let key_usage = time("key usage", &mut |i| {
        let (account, ids) = &measured[i % measured.len()];
        let u = db::usage(
            &control::store::db::Db::Sqlite(&conn),
            Subject::Key(*account, ids[i % 50]),
            today - 29 * DAY,
            today + DAY,
            Granularity::Hour,
            0,
        )?;
        anyhow::ensure!(u.series.len() == 720);
        Ok(())
    })?;
    let account_usage = time("account usage", &mut |i| {
        let (account, _) = &measured[i % measured.len()];
        let u = db::usage(
            &control::store::db::Db::Sqlite(&conn),
            Subject::Account(*account),
            today - 29 * DAY,
            today + DAY,
            Granularity::Day,
            20,
        )?;
        anyhow::ensure!(u.top_keys.len() == 20);
        Ok(())
    })?;
    drop(conn);

    // Ingestion: batches of 1,000 counts (the current minute, keys across the population),
    // through the store's group committer with durable commits, 4 senders at once.
    let store = Store::open(&path, keyring)?;
    let population: Vec<(KeyId, u64)> = population(scale)
        .into_iter()
        .map(|k| (k.id, k.account))
        .collect();
    let population = Arc::new(population);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 1_000;
    let retention = Retention::default();
    let started = Instant::now();
    runtime.block_on(async {
        let mut senders = Vec::new();
        for sender in 0..4u64 {
            let store = store.clone();
            let population = Arc::clone(&population);
            senders.push(tokio::spawn(async move {
                for seq in 1..=BATCHES / 4 {
                    let counts = (0..PER_BATCH)
                        .map(|i| {
                            let (key_id, account_id) =
                                population[(mix(sender << 40 | seq << 20 | i)
                                    % population.len() as u64)
                                    as usize];
                            Count {
                                key_id,
                                account_id,
                                minute: NOW / 60,
                                scope: Some(SCOPES[(i % 3) as usize].into()),
                                outcome: Outcome::Success,
                                n: 1 + i % 7,
                            }
                        })
                        .collect();
                    let batch = Batch {
                        source: format!("bench-{sender}"),
                        seq,
                        counts,
                        ..Batch::default()
                    };
                    let applied = store
                        .write(move |tx| db::apply_batch(tx, &batch, NOW * 1000, &retention))
                        .await?;
                    anyhow::ensure!(applied.applied);
                }
                Ok(())
            }));
        }
        for s in senders {
            s.await??;
        }
        anyhow::Ok(())
    })?;
    let ingest_rate = (BATCHES * PER_BATCH) as f64 / started.elapsed().as_secs_f64();

    // A compaction pass two days later: two days of minutes deleted and, at a 31-day hour
    // retention (so this 30-day data has hours to roll), a day of hours rolled up.
    let later = Retention {
        hour_days: 31,
        ..retention
    };
    // GROWTH_COMPACT=0 skips it (it is linear in the data, and the largest scale's pass takes
    // longer than this machine can give it).
    let started = Instant::now();
    let done = if std::env::var("GROWTH_COMPACT").as_deref() == Ok("0") {
        retention::Compacted::default()
    } else {
        retention::compact_blocking(&store, later, NOW + 2 * DAY, retention::STEP_ROWS)?
    };
    let pass = started.elapsed();
    drop(store);

    println!(
        "RESULT scale={scale} keys={} active_keys={} minute_rows={} hour_rows={} \
         activity_rows={} bytes={bytes} generation_s={:.1} key_list_p99_ms={} \
         key_usage_p99_ms={} account_usage_p99_ms={} ingest_counts_per_s={:.0} \
         compact_s={:.1} compact_steps={} compact_minutes={} compact_hours={}",
        g.keys,
        g.active,
        g.minutes,
        g.hours,
        g.activity,
        generation.as_secs_f64(),
        ms(list),
        ms(key_usage),
        ms(account_usage),
        ingest_rate,
        pass.as_secs_f64(),
        done.steps,
        done.minutes_deleted,
        done.hours_rolled,
    );
    // The plans, on the generated data.
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    for name in ["key list", "key usage", "account usage"] {
        for sql in &plans[name] {
            println!(
                "PLAN {name}: {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let mut rows = stmt.raw_query();
            while let Some(r) = rows.next()? {
                let detail: String = r.get(3)?;
                println!("PLAN   {detail}");
            }
        }
    }
    Ok(())
}
