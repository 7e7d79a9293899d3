//! The sign-in attempt ledgers side by side: every rule of `auth::limit` (reserve before the
//! hash, one attempt per email in flight, pending counted as failures, refunds, doubling locks,
//! windows, the bounded table) run through the `AttemptLedger` interface against the memory
//! ledger and the database ledger, which must answer alike. The database is SQLite, or
//! PostgreSQL when `LYNXO_TEST_POSTGRES` names a server (scripts/test.sh runs both). Then what
//! only the database ledger has: reservations that expire, and two stores on one database.

mod common;

use std::sync::Arc;

use control::auth::limit::{
    Attempt, AttemptLedger, Budget, BudgetKey, MAX_LOCK, MemoryLedger, Outcome, RESERVATION_TTL,
    Refusal, Reservation, StoreLedger, WINDOW,
};
use control::store::Store;

fn key(n: u32) -> BudgetKey {
    let mut k = [0xab_u8; 16];
    k[..4].copy_from_slice(&n.to_le_bytes());
    BudgetKey(k)
}

/// An unknown browser's attempt: the email's shared budget (10) and its pair's (5).
fn untrusted(email: u32, pair: u32) -> Attempt {
    Attempt {
        email: key(email),
        budgets: vec![
            Budget {
                key: key(email),
                limit: 10,
                cleared_by_success: false,
            },
            Budget {
                key: key(pair),
                limit: 5,
                cleared_by_success: true,
            },
        ],
    }
}

/// A ledger under test, with what keeps its database.
struct Under {
    name: &'static str,
    ledger: Arc<dyn AttemptLedger>,
    store: Option<Store>,
    _dir: tempfile::TempDir,
}

fn store_ledger(capacity: usize) -> Under {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&common::test_database(dir.path()), common::audit_keyring()).unwrap();
    Under {
        name: if store.is_postgres() {
            "database (PostgreSQL)"
        } else {
            "database (SQLite)"
        },
        ledger: Arc::new(StoreLedger::with_capacity(store.clone(), capacity)),
        store: Some(store),
        _dir: dir,
    }
}

/// Both ledgers, each keeping at most `capacity` entries.
fn ledgers(capacity: usize) -> Vec<Under> {
    vec![
        Under {
            name: "memory",
            ledger: Arc::new(MemoryLedger::with_capacity(capacity)),
            store: None,
            _dir: tempfile::tempdir().unwrap(),
        },
        store_ledger(capacity),
    ]
}

async fn reserve(l: &dyn AttemptLedger, a: &Attempt, now: u64) -> Result<(), Refusal> {
    l.reserve(a, now).await.map(drop)
}

async fn fail(l: &dyn AttemptLedger, a: &Attempt, now: u64) -> Result<(), Refusal> {
    let id = l.reserve(a, now).await?;
    l.settle(a, id, Outcome::Failed, now).await;
    Ok(())
}

async fn entries(l: &dyn AttemptLedger) -> u64 {
    l.census().await.unwrap().entries
}

#[tokio::test]
async fn a_reservation_counts_before_it_is_settled() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        // One attempt of an email in flight at a time; the next is busy, not counted.
        let id = l.reserve(&a, 0).await.unwrap();
        assert_eq!(reserve(l, &a, 0).await, Err(Refusal::Busy), "{}", u.name);
        l.settle(&a, id, Outcome::Failed, 0).await;
        for _ in 1..5 {
            fail(l, &a, 1).await.unwrap();
        }
        assert_eq!(
            reserve(l, &a, 2).await,
            Err(Refusal::Locked {
                retry_after: WINDOW - 1
            }),
            "{}",
            u.name
        );
    }
}

#[tokio::test]
async fn a_pending_attempt_is_counted_as_a_failure_and_a_success_refunds_it() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        for _ in 0..4 {
            fail(l, &a, 0).await.unwrap();
        }
        let id = l.reserve(&a, 0).await.unwrap();
        // The fifth guess is out: another email's attempt from the same pair key waits too.
        assert_eq!(
            reserve(l, &untrusted(3, 2), 0).await,
            Err(Refusal::Busy),
            "{}",
            u.name
        );
        // Refunded on success: the pair is forgiven, the email's shared budget keeps its four.
        l.settle(&a, id, Outcome::Succeeded, 0).await;
        for _ in 0..5 {
            fail(l, &a, 0).await.unwrap();
        }
        // 4 + 5 failures: one guess of the email's 10 is left, for any other address.
        fail(l, &untrusted(1, 9), 0).await.unwrap();
        assert_eq!(
            reserve(l, &untrusted(1, 10), 0).await,
            Err(Refusal::Locked {
                retry_after: WINDOW
            }),
            "{}",
            u.name
        );
    }
}

#[tokio::test]
async fn abandoned_attempts_count_nothing() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        for _ in 0..20 {
            let id = l.reserve(&a, 0).await.unwrap();
            l.settle(&a, id, Outcome::Abandoned, 0).await;
        }
        assert_eq!(reserve(l, &a, 0).await, Ok(()), "{}", u.name);
        assert_eq!(l.census().await.unwrap().in_flight, 1, "{}", u.name);
    }
}

#[tokio::test]
async fn one_address_cannot_spend_the_emails_budget_but_many_can() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        for _ in 0..5 {
            fail(l, &untrusted(1, 2), 0).await.unwrap();
        }
        assert!(
            matches!(
                reserve(l, &untrusted(1, 2), 0).await,
                Err(Refusal::Locked { .. })
            ),
            "{}",
            u.name
        );
        // The owner, elsewhere, still has the rest of the email's budget.
        let owner = untrusted(1, 3);
        let id = l.reserve(&owner, 0).await.unwrap();
        l.settle(&owner, id, Outcome::Succeeded, 0).await;
        // A second address spends the rest: then no unknown browser gets through.
        for _ in 0..5 {
            fail(l, &untrusted(1, 4), 0).await.unwrap();
        }
        assert!(
            matches!(
                reserve(l, &untrusted(1, 5), 0).await,
                Err(Refusal::Locked { .. })
            ),
            "{}",
            u.name
        );
    }
}

/// A reservation dropped unsettled (its task panicked or was cancelled) settles as a failure.
#[tokio::test]
async fn a_dropped_reservation_counts_as_a_failure() {
    for u in ledgers(1000) {
        let a = untrusted(1, 2);
        for _ in 0..5 {
            let r = Reservation::take(Arc::clone(&u.ledger), a.clone(), 0)
                .await
                .unwrap();
            drop(r);
            // Settled by a task of its own: wait for it.
            while u.ledger.census().await.unwrap().in_flight > 0 {
                tokio::task::yield_now().await;
            }
        }
        assert!(
            matches!(
                reserve(&*u.ledger, &a, 0).await,
                Err(Refusal::Locked { .. })
            ),
            "{}",
            u.name
        );
    }
}

#[tokio::test]
async fn locks_double_while_the_budget_is_spent_again_and_stop_at_the_cap() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        let mut now = 0;
        let mut locks = Vec::new();
        for _ in 0..7 {
            while fail(l, &a, now).await.is_ok() {}
            let Err(Refusal::Locked { retry_after }) = reserve(l, &a, now).await else {
                panic!("{}: locked expected", u.name);
            };
            locks.push(retry_after);
            now += retry_after;
        }
        assert_eq!(
            locks,
            [
                WINDOW,
                2 * WINDOW,
                4 * WINDOW,
                8 * WINDOW,
                MAX_LOCK,
                MAX_LOCK,
                MAX_LOCK
            ],
            "{}",
            u.name
        );
        // A window without spending the budget starts the doubling over.
        fail(l, &a, now).await.unwrap();
        now += WINDOW;
        while fail(l, &a, now).await.is_ok() {}
        assert_eq!(
            reserve(l, &a, now).await,
            Err(Refusal::Locked {
                retry_after: WINDOW
            }),
            "{}",
            u.name
        );
    }
}

#[tokio::test]
async fn failures_age_out_with_the_window() {
    for u in ledgers(1000) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        for _ in 0..4 {
            fail(l, &a, 0).await.unwrap();
        }
        for _ in 0..4 {
            fail(l, &a, WINDOW).await.unwrap();
        }
        assert_eq!(reserve(l, &a, WINDOW).await, Ok(()), "{}", u.name);
    }
}

#[tokio::test]
async fn the_table_is_bounded_and_a_flood_does_not_evict_a_spent_budget() {
    const CAPACITY: usize = 64;
    for u in ledgers(CAPACITY) {
        let l = &*u.ledger;
        let victim = untrusted(1, 2);
        while fail(l, &victim, 0).await.is_ok() {}
        // Made-up emails, each from its own pair: two new entries per attempt, room made over
        // and over.
        for n in 0..600 {
            fail(l, &untrusted(1000 + 2 * n, 1001 + 2 * n), 1)
                .await
                .unwrap();
            let held = entries(l).await;
            assert!(held <= CAPACITY as u64, "{}: {held} entries", u.name);
        }
        assert!(
            matches!(reserve(l, &victim, 2).await, Err(Refusal::Locked { .. })),
            "{}",
            u.name
        );
    }
}

#[tokio::test]
async fn expired_entries_are_forgotten_when_room_is_needed() {
    for u in ledgers(100) {
        let l = &*u.ledger;
        for n in 0..50 {
            fail(l, &untrusted(n, n + 100), 0).await.unwrap();
        }
        assert_eq!(entries(l).await, 100, "{}", u.name);
        fail(l, &untrusted(200, 201), WINDOW).await.unwrap();
        assert_eq!(entries(l).await, 2, "{}", u.name);
    }
}

#[tokio::test]
async fn an_attempt_in_flight_is_never_evicted() {
    for u in ledgers(16) {
        let l = &*u.ledger;
        let a = untrusted(1, 2);
        let id = l.reserve(&a, 0).await.unwrap();
        // The rest of the table fills with made-up emails until no room can be made.
        let mut refused = 0;
        for n in 0..40 {
            if fail(l, &untrusted(10 + 2 * n, 11 + 2 * n), 0)
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(entries(l).await <= 16, "{}", u.name);
        // The reservation's entries are still there: settling it counts the failure.
        l.settle(&a, id, Outcome::Failed, 0).await;
        for _ in 1..5 {
            fail(l, &a, 0).await.unwrap();
        }
        assert!(
            matches!(reserve(l, &a, 0).await, Err(Refusal::Locked { .. })),
            "{}: {refused} refused",
            u.name
        );
    }
}

/// A replica that dies mid-hash never settles its reservation: once the reservation's time is
/// up, the next reservation settles it as a failure (the email is free again, the guess is not
/// refunded), and the dead replica's late answer, if it ever comes, settles nothing again.
#[tokio::test]
async fn a_reservation_whose_replica_died_expires_as_a_failure() {
    let u = store_ledger(1000);
    let l = &*u.ledger;
    let a = untrusted(1, 2);
    for _ in 0..3 {
        fail(l, &a, 0).await.unwrap();
    }
    let lost = l.reserve(&a, 0).await.unwrap();
    assert_eq!(
        reserve(l, &a, RESERVATION_TTL - 1).await,
        Err(Refusal::Busy)
    );
    // Another email from the same pair sees the pending guess: 3 + 1 of 5.
    let other = untrusted(3, 2);
    fail(l, &other, RESERVATION_TTL - 1).await.unwrap();
    assert_eq!(
        reserve(l, &other, RESERVATION_TTL - 1).await,
        Err(Refusal::Busy)
    );
    // Its time is up: settled as the fifth failure of the pair, which locks.
    assert!(matches!(
        reserve(l, &a, RESERVATION_TTL).await,
        Err(Refusal::Locked { .. })
    ));
    assert_eq!(l.census().await.unwrap().in_flight, 0);
    // The late answer, a success, refunds nothing.
    l.settle(&a, lost, Outcome::Succeeded, RESERVATION_TTL)
        .await;
    assert!(matches!(
        reserve(l, &a, RESERVATION_TTL).await,
        Err(Refusal::Locked { .. })
    ));
}

/// Two stores on one database (two replicas' connections): parallel guesses through both are
/// admitted no more often than one budget allows, and each sees what the other counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_share_every_budget() {
    let u = store_ledger(1000);
    let first = u.store.clone().unwrap();
    let second = Store::open(first.path(), common::audit_keyring()).unwrap();
    let replicas: [Arc<dyn AttemptLedger>; 2] =
        [Arc::clone(&u.ledger), Arc::new(StoreLedger::new(second))];
    let a = untrusted(1, 2);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let l = Arc::clone(&replicas[i % 2]);
            let a = a.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                loop {
                    match fail(&*l, &a, 0).await {
                        Ok(()) => admitted += 1,
                        Err(Refusal::Busy) => tokio::task::yield_now().await,
                        Err(Refusal::Locked { .. }) => return admitted,
                    }
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 5, "the pair's budget, once over both");
    for l in &replicas {
        assert!(matches!(
            reserve(&**l, &untrusted(1, 2), 1).await,
            Err(Refusal::Locked { .. })
        ));
        assert_eq!(l.census().await.unwrap().in_flight, 0);
    }
}
