//! Bounded growth: roll-up and retention of usage (`store::retention`), each rule against the
//! answers of the usage queries before and after, and compaction racing ingestion.

use std::sync::Arc;

use control::store::retention::{self, Phase, Retention};
use control::store::usage::{self as db, Granularity, Subject, Usage};
use control::store::{Store, StoreError};
use shared::key::KeyId;
use shared::usage::{Activity, Batch, Count, Outcome};

const DAY: u64 = 86_400;
/// "Now": a Unix time on no particular boundary.
const NOW: u64 = 20_400 * DAY + 13 * 3600 + 25 * 60 + 7;
const ACCOUNT: u64 = 1;
const OTHER: u64 = 2;

fn key(n: u8) -> KeyId {
    KeyId::parse_hex(&format!("{n:02x}").repeat(16)).unwrap()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("c.sqlite3"),
        Arc::new(shared::testkit::audit_keyring()),
    )
    .unwrap();
    store
        .write_blocking(|tx| -> Result<(), StoreError> {
            for (id, account) in [(ACCOUNT, "a"), (OTHER, "b")] {
                tx.execute(
                    "INSERT INTO accounts (id, name, plan_id, created_at) \
                     VALUES (?1, ?2, 'standard', 1)",
                    control::store::db::params![id as i64, account],
                )?;
            }
            for n in 1..=4u8 {
                let account = if n == 4 { OTHER } else { ACCOUNT };
                tx.execute(
                    "INSERT INTO api_keys (id, id_top, account_id, name, environment, scopes, \
                     kid, hint, rate_limit, created_at) \
                     VALUES (?1, 0, ?2, ?3, 'production', 1, 1, 'h', 10, 1)",
                    control::store::db::params![key(n), account as i64, format!("k{n}")],
                )?;
            }
            Ok(())
        })
        .unwrap();
    (dir, store)
}

/// A batch counting `n` requests per entry of `at` (Unix seconds) for key `k`, with a scope
/// and outcome that vary with the time, so sums by scope and outcome are tested too.
fn batch(source: &str, seq: u64, k: u8, at: &[u64], n: u64) -> Batch {
    let account = if k == 4 { OTHER } else { ACCOUNT };
    let outcomes = [Outcome::Success, Outcome::ClientError, Outcome::RateLimited];
    let mut counts: Vec<Count> = Vec::new();
    for &t in at {
        let scope = ["jobs:read", "jobs:write"][(t / 3600 % 2) as usize];
        let outcome = outcomes[(t / 60 % 3) as usize];
        if let Some(c) = counts.iter_mut().find(|c| {
            c.minute == t / 60 && c.outcome == outcome && c.scope.as_deref() == Some(scope)
        }) {
            c.n += n;
        } else {
            counts.push(Count {
                key_id: key(k),
                account_id: account,
                minute: t / 60,
                scope: Some(scope.into()),
                outcome,
                n,
            });
        }
    }
    Batch {
        source: source.into(),
        seq,
        counts,
        ..Batch::default()
    }
}

fn apply(store: &Store, b: Batch, retention: Retention) -> db::Applied {
    store
        .write_blocking(move |tx| db::apply_batch(tx, &b, NOW * 1000, &retention))
        .unwrap()
}

fn query(store: &Store, subject: Subject, from: u64, to: u64, g: Granularity) -> Usage {
    store
        .read_blocking(move |c| db::usage(c, subject, from, to, g, 20))
        .unwrap()
}

fn total(u: &Usage) -> u64 {
    u.series.iter().flatten().sum()
}

fn compact(store: &Store, retention: Retention, budget: u64) -> retention::Compacted {
    retention::compact_blocking(store, retention, NOW, budget).unwrap()
}

fn rows(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    store
        .read_blocking(move |c| Ok::<_, StoreError>(c.query_row(&sql, [], |r| r.get(0))?))
        .unwrap()
}

/// Every 20 minutes for the last `days` days, up to `NOW`.
fn times(days: u64) -> Vec<u64> {
    (0..days * 72).map(|i| NOW - i * 1200).collect()
}

/// The subjects and ranges whose answers must not change: day-aligned ranges over the whole
/// history, one key and the account, at every granularity that can cover them.
fn answers(store: &Store) -> Vec<Usage> {
    let today = NOW / DAY * DAY;
    let mut out = Vec::new();
    for subject in [Subject::Key(ACCOUNT, key(1)), Subject::Account(ACCOUNT)] {
        // Whole history by day, the last 60 days by hour, and a minute range across the
        // minute cut-off (25 hours around it, on hours).
        let r = Retention::default();
        let cut = r.minute_cutoff(NOW) * 60;
        out.push(query(
            store,
            subject,
            today - 200 * DAY,
            today + DAY,
            Granularity::Day,
        ));
        out.push(query(
            store,
            subject,
            today - 60 * DAY,
            today,
            Granularity::Hour,
        ));
        // Across the cut-off, minutes read from hours land in their hour's first minute: the
        // totals (by outcome, scope and key) are what must not change.
        let mut minutes = query(
            store,
            subject,
            cut - 12 * 3600,
            cut + 13 * 3600,
            Granularity::Minute,
        );
        minutes.series = vec![
            minutes
                .series
                .iter()
                .fold([0; Outcome::ALL.len()], |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                    a
                }),
        ];
        out.push(minutes);
    }
    out
}

#[test]
fn roll_up_keeps_every_total_by_bucket_scope_and_key() {
    let (_dir, store) = open();
    let r = Retention::default();
    for (seq, k) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
        apply(&store, batch("e", seq, k, &times(150), u64::from(k)), r);
    }
    let before = answers(&store);
    assert!(total(&before[0]) > 0);
    let minutes_before = rows(&store, "usage_minutes");
    let done = compact(&store, r, 700);
    assert!(
        done.minutes_deleted > 0 && done.hours_rolled > 0,
        "{done:?}"
    );
    assert!(done.steps > 4, "small steps: {done:?}");
    assert!(rows(&store, "usage_days") > 0);
    assert!(rows(&store, "usage_minutes") < minutes_before);
    let after = answers(&store);
    assert_eq!(before, after);
    // Nothing is left to do: a second pass changes nothing and answers the same.
    let again = compact(&store, r, 700);
    assert_eq!(
        (again.minutes_deleted, again.hours_rolled),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(answers(&store), before);
}

#[test]
fn minutes_and_hours_go_only_past_their_cut_offs() {
    let (_dir, store) = open();
    let r = Retention::default();
    apply(&store, batch("e", 1, 1, &times(120), 1), r);
    compact(&store, r, 10_000);
    let (oldest_minute, oldest_hour, newest_day): (i64, i64, i64) = store
        .read_blocking(|c| {
            Ok::<_, StoreError>((
                c.query_row("SELECT min(minute) FROM usage_minutes", [], |r| r.get(0))?,
                c.query_row("SELECT min(hour) FROM usage_hours", [], |r| r.get(0))?,
                c.query_row("SELECT max(day) FROM usage_days", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert!(oldest_minute as u64 >= r.minute_cutoff(NOW));
    assert!((oldest_minute as u64) < r.minute_cutoff(NOW) + 60);
    assert!(oldest_hour as u64 >= r.hour_cutoff(NOW));
    assert!((oldest_hour as u64) < r.hour_cutoff(NOW) + 24);
    assert_eq!(newest_day as u64 + 1, r.hour_cutoff(NOW) / 24);
}

#[test]
fn a_minute_query_before_the_cut_off_reads_the_hours() {
    let (_dir, store) = open();
    let r = Retention::default();
    apply(&store, batch("e", 1, 1, &times(20), 5), r);
    let cut = r.minute_cutoff(NOW) * 60;
    // Two hours entirely before the minute cut-off, on hours.
    let (from, to) = (cut - 2 * 3600, cut);
    let subject = Subject::Key(ACCOUNT, key(1));
    let before = query(&store, subject, from, to, Granularity::Minute);
    compact(&store, r, 10_000);
    let after = query(&store, subject, from, to, Granularity::Minute);
    assert_eq!(total(&after), total(&before));
    assert_eq!(after.by_scope, before.by_scope);
    // Each hour lands in its first minute.
    let non_zero: Vec<usize> = (0..after.series.len())
        .filter(|&i| after.series[i].iter().sum::<u64>() > 0)
        .collect();
    assert_eq!(non_zero, [0, 60]);
}

#[test]
fn activity_is_bounded_per_key_and_in_time() {
    let (_dir, store) = open();
    let r = Retention {
        activity_per_key: 7,
        ..Retention::default()
    };
    let entry = |at_ms: u64, outcome: Outcome| Activity {
        key_id: key(1),
        account_id: ACCOUNT,
        at_ms,
        method: "GET".into(),
        path: "/v1/jobs".into(),
        status: if outcome == Outcome::Success {
            200
        } else {
            429
        },
        outcome,
        client_ip: None,
        country: None,
        colo: None,
        user_agent: None,
        reason: None,
    };
    // 40 days of one request a day, each kind: the old ones expire, and only 7 of each kind
    // are kept whatever their age.
    let mut b = batch("e", 1, 1, &[NOW], 1);
    for d in 0..40 {
        for o in [Outcome::Success, Outcome::RateLimited] {
            b.activity.push(entry((NOW - d * DAY) * 1000, o));
        }
    }
    apply(&store, b, r);
    assert_eq!(rows(&store, "activity"), 14);
    let newest: i64 = store
        .read_blocking(|c| {
            Ok::<_, StoreError>(c.query_row(
                "SELECT count(*) FROM activity WHERE at_ms > ?1",
                [((NOW - 7 * DAY) * 1000) as i64],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(newest, 14, "the newest 7 of each kind");
    // Old rows (a batch delayed for weeks) are deleted by the time rule.
    let mut late = batch("e", 2, 2, &[NOW], 1);
    for d in [31, 35, 3] {
        late.activity.push(Activity {
            key_id: key(2),
            ..entry((NOW - d * DAY) * 1000, Outcome::Success)
        });
    }
    apply(&store, late, r);
    assert_eq!(rows(&store, "activity"), 17);
    let done = compact(&store, r, 1);
    assert_eq!(done.activity_deleted, 2);
    assert_eq!(rows(&store, "activity"), 15);
}

#[test]
fn batch_names_expire_and_their_replays_are_still_refused() {
    let (_dir, store) = open();
    let r = Retention {
        batch_days: 1,
        ..Retention::default()
    };
    // Applied 2 days ago (seq 1..=3) and now (seq 4).
    for seq in 1..=3 {
        let b = batch("meter-0-ab", seq, 1, &[NOW - 3600], 1);
        store
            .write_blocking(move |tx| db::apply_batch(tx, &b, (NOW - 2 * DAY) * 1000, &r))
            .unwrap();
    }
    assert!(apply(&store, batch("meter-0-ab", 4, 1, &[NOW - 60], 1), r).applied);
    let subject = Subject::Key(ACCOUNT, key(1));
    let range = (NOW / 3600 * 3600 - 3600, NOW / 3600 * 3600 + 3600);
    let before = total(&query(&store, subject, range.0, range.1, Granularity::Hour));
    assert_eq!(before, 4);
    let done = compact(&store, r, 2);
    assert_eq!(done.batches_deleted, 3);
    assert_eq!(rows(&store, "usage_batches"), 1);
    // Every replay, the expired ones included, is acknowledged and counts nothing.
    for seq in 1..=4 {
        let again = apply(&store, batch("meter-0-ab", seq, 1, &[NOW - 3600], 1), r);
        assert!(!again.applied, "seq {seq}");
    }
    assert_eq!(
        rows(&store, "usage_batches"),
        1,
        "no name of a replay stored"
    );
    assert_eq!(
        total(&query(&store, subject, range.0, range.1, Granularity::Hour)),
        before
    );
    // The next batch of the source, and another source's first, are applied.
    assert!(apply(&store, batch("meter-0-ab", 5, 1, &[NOW - 60], 1), r).applied);
    assert!(apply(&store, batch("meter-1-cd", 1, 1, &[NOW - 60], 1), r).applied);
}

#[test]
fn a_step_is_bounded_even_for_one_key_with_a_long_history() {
    let (_dir, store) = open();
    let r = Retention::default();
    // One key, a minute row every minute for 10 days: 14,400 rows, 3 days of them expired.
    let at: Vec<u64> = (0..10 * 1440).map(|i| NOW - i * 60).collect();
    apply(&store, batch("e", 1, 1, &at, 1), r);
    let expired: i64 = store
        .read_blocking(move |c| {
            Ok::<_, StoreError>(c.query_row(
                "SELECT count(*) FROM usage_minutes WHERE minute < ?1",
                [r.minute_cutoff(NOW) as i64],
                |row| row.get(0),
            )?)
        })
        .unwrap();
    assert!(expired > 3000);
    let mut phase = Phase::start();
    let mut steps = 0;
    while matches!(phase, Phase::Minutes(_)) {
        let p = phase.clone();
        let (next, done) = store
            .write_blocking(move |tx| retention::step(tx, &r, NOW, p, 500))
            .unwrap();
        assert!(done.minutes_deleted <= 500, "{done:?}");
        phase = next;
        steps += 1;
    }
    assert!(steps as i64 > expired / 500, "{steps} steps");
    assert_eq!(
        rows(&store, "usage_minutes"),
        10 * 1440 - expired,
        "exactly the expired rows went"
    );
}

/// Ingestion racing compaction: batches for recent and for long-expired times (an edge that
/// retried for months) arrive while passes run in small steps. Every request is counted
/// exactly once at the end, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_during_compaction_loses_nothing_and_counts_nothing_twice() {
    let (_dir, store) = open();
    let r = Retention::default();
    let history = times(150);
    apply(&store, batch("seed", 1, 1, &history, 1), r);
    let mut expected = history.len() as u64;
    let ingest = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            for seq in 1..=200u64 {
                // Alternately recent and far past (in hours being rolled up right now).
                let at = if seq % 2 == 0 {
                    NOW - seq * 60
                } else {
                    NOW - (100 + seq % 40) * DAY
                };
                for k in [1u8, 2] {
                    let b = batch(&format!("race-{k}"), seq, k, &[at, at - 7200], 3);
                    let applied = store
                        .write(move |tx| db::apply_batch(tx, &b, NOW * 1000, &r))
                        .await
                        .unwrap();
                    assert!(applied.applied);
                    sent += 6;
                    // A retry of the same batch, as an edge that lost the answer sends it.
                    let b = batch(&format!("race-{k}"), seq, k, &[at, at - 7200], 3);
                    let again = store
                        .write(move |tx| db::apply_batch(tx, &b, NOW * 1000, &r))
                        .await
                        .unwrap();
                    assert!(!again.applied);
                }
            }
            sent
        })
    };
    let mut passes = 0;
    while !ingest.is_finished() || passes == 0 {
        retention::compact(&store, r, NOW, 50).await.unwrap();
        passes += 1;
    }
    expected += ingest.await.unwrap();
    retention::compact(&store, r, NOW, 50).await.unwrap();
    let today = NOW / DAY * DAY;
    let all = query(
        &store,
        Subject::Account(ACCOUNT),
        today - 400 * DAY,
        today + DAY,
        Granularity::Day,
    );
    assert_eq!(total(&all), expected, "after {passes} passes");
    let by_key: u64 = all.top_keys.iter().map(|(_, _, n)| n).sum();
    assert_eq!(by_key, expected);
}

#[test]
fn reopening_migrates_once_and_reads_every_minute_until_a_pass() {
    // Opening twice applies nothing twice, and the watermark starts at 0: every minute row is
    // read until a pass moves it.
    let (dir, store) = open();
    apply(
        &store,
        batch("e", 1, 1, &[NOW - 60], 2),
        Retention::default(),
    );
    drop(store);
    let store = Store::open(
        &dir.path().join("c.sqlite3"),
        Arc::new(shared::testkit::audit_keyring()),
    )
    .unwrap();
    let from = NOW / 60 * 60 - 120;
    let u = query(
        &store,
        Subject::Key(ACCOUNT, key(1)),
        from,
        from + 600,
        Granularity::Minute,
    );
    assert_eq!(total(&u), 2);
    let wm = store.read_blocking(retention::minutes_from).unwrap();
    assert_eq!(wm, 0);
}

/// `control compact`: one pass by hand on the service's database, settings from the
/// environment as `serve` reads them; a retention it would answer inexactly with is refused.
#[test]
fn the_compact_command_runs_a_pass_and_refuses_a_bad_retention() {
    const BIN: &str = env!("CARGO_BIN_EXE_control");
    let dir = tempfile::tempdir().unwrap();
    let ring = std::process::Command::new(BIN)
        .arg("generate-keyring")
        .output()
        .unwrap();
    let ring = String::from_utf8(ring.stdout).unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .arg("compact")
            .args(extra)
            .env("LYNXO_DATABASE", dir.path().join("c.sqlite3"))
            .env("LYNXO_AUDIT_KEYRING", ring.trim())
            .output()
            .unwrap()
    };
    let ok = run(&[]);
    assert!(ok.status.success(), "{ok:?}");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("compacted in 4 transactions")),
        "{out}"
    );
    let bad = run(&["--usage-minute-days", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("minute retention"));
}
