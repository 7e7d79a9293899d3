//! Sign-in attempt budgets: how many password guesses each budget allows per window, counted
//! when an attempt is *reserved*, before any hashing, and settled once the hash has answered.
//!
//! An attempt draws on a few budgets at once (the email's budget for unknown browsers and the
//! budget of its (email, address) pair, or the budget of a known device) and is admitted only if
//! all of them have room, counting attempts still in flight as failures: the check and the count
//! are one step under one lock, so parallel guesses cannot all pass a check made before any of
//! them failed. A success refunds its reservation and forgives the client's own budget; a failure
//! keeps it, and a spent budget locks for a window that doubles each time it is spent again.
//! Each email also admits one attempt in flight at a time.
//!
//! The state sits behind [`AttemptLedger`], so several control-plane replicas can later keep it
//! in their shared database. Keys are opaque keyed hashes ([`BudgetKey`]): the ledger never holds
//! an email, and its memory is bounded by [`MemoryLedger`]'s capacity whatever callers send.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

/// A budget's window, seconds.
pub const WINDOW: u64 = 15 * 60;
/// Longest lock a spent budget gets (the doubling stops here), seconds.
pub const MAX_LOCK: u64 = 4 * 3600;
/// How long a budget that was spent remembers it (for the doubling) after its lock ends.
const STRIKE_MEMORY: u64 = 24 * 3600;
/// Attempts of one email hashed at once.
pub const MAX_IN_FLIGHT_PER_EMAIL: u32 = 1;

/// The opaque name of a budget: a keyed hash of what it counts (see `auth::SignInGuard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetKey(pub [u8; 16]);

/// One budget an attempt draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What it counts.
    pub key: BudgetKey,
    /// Failures allowed per window.
    pub limit: u32,
    /// Whether a successful sign-in clears it: yes for the budget of the client that just proved
    /// it knows the password; no for the email's shared budget, or the owner signing in would
    /// hand a distributed guesser a fresh one.
    pub cleared_by_success: bool,
}

/// An attempt: the email it is for (which bounds how many are hashed at once) and its budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The email's key: at most [`MAX_IN_FLIGHT_PER_EMAIL`] attempts of it are in flight.
    pub email: BudgetKey,
    /// Every budget the attempt counts against.
    pub budgets: Vec<Budget>,
}

/// Why an attempt was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A budget is spent: try again after this many seconds.
    Locked {
        /// Seconds until every spent budget of the attempt has room again.
        retry_after: u64,
    },
    /// Another attempt for the same email (or the reservations still out) fill the budget:
    /// try again in a moment.
    Busy,
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was wrong (or the answer was never given: counted as wrong).
    Failed,
    /// The password was right.
    Succeeded,
    /// No password was checked (the service failed before hashing): nothing is counted.
    Abandoned,
}

/// What a ledger call returns: a future, so an implementation may wait on a database.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where attempt budgets live. Each call is one atomic step over all the attempt's budgets.
pub trait AttemptLedger: Send + Sync + 'static {
    /// Admits the attempt and counts it against all its budgets, or refuses it and counts
    /// nothing.
    fn reserve<'a>(
        &'a self,
        attempt: &'a Attempt,
        now: u64,
    ) -> LedgerFuture<'a, Result<(), Refusal>>;

    /// Settles an attempt [`Self::reserve`] admitted.
    fn settle<'a>(
        &'a self,
        attempt: &'a Attempt,
        outcome: Outcome,
        now: u64,
    ) -> LedgerFuture<'a, ()>;
}

/// An admitted attempt. Dropped without [`Self::settle`] (its task panicked or was cancelled),
/// it settles as [`Outcome::Failed`]: losing the answer must never refund a guess.
pub struct Reservation {
    ledger: Arc<dyn AttemptLedger>,
    attempt: Option<Attempt>,
    now: u64,
}

impl Reservation {
    /// Reserves `attempt` in `ledger`.
    pub async fn take(
        ledger: Arc<dyn AttemptLedger>,
        attempt: Attempt,
        now: u64,
    ) -> Result<Self, Refusal> {
        ledger.reserve(&attempt, now).await?;
        Ok(Self {
            ledger,
            attempt: Some(attempt),
            now,
        })
    }

    /// Settles the attempt at `now`.
    pub async fn settle(mut self, outcome: Outcome, now: u64) {
        if let Some(attempt) = self.attempt.take() {
            self.ledger.settle(&attempt, outcome, now).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let ledger = Arc::clone(&self.ledger);
        let now = self.now;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { ledger.settle(&attempt, Outcome::Failed, now).await });
        }
    }
}

/// One budget's state (and, for an email's key, its attempts in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Start of the current window.
    start: u64,
    /// Failures in the current window.
    failures: u32,
    /// Reserved attempts not yet settled: counted as failures until they are.
    pending: u32,
    /// Attempts of this email being hashed (only on an email's key).
    in_flight: u32,
    /// How many times in a row the budget was spent: the next lock is `WINDOW << strikes`.
    strikes: u32,
    /// Locked (spent) until then.
    locked_until: u64,
}

impl Entry {
    fn new(now: u64) -> Self {
        Self {
            start: now,
            failures: 0,
            pending: 0,
            in_flight: 0,
            strikes: 0,
            locked_until: 0,
        }
    }

    /// Starts a new window when the lock has ended or the window has passed.
    fn roll(&mut self, now: u64, limit: u32) {
        if now < self.locked_until {
            return;
        }
        let spent = self.failures >= limit;
        if spent || now >= self.start.saturating_add(WINDOW) {
            if !spent {
                // A window passed without being spent: the doubling starts over.
                self.strikes = 0;
            }
            self.start = now;
            self.failures = 0;
        }
    }

    fn fail(&mut self, now: u64, limit: u32) {
        self.roll(now, limit);
        self.failures = self.failures.saturating_add(1);
        if self.failures >= limit && now >= self.locked_until {
            let lock = WINDOW
                .checked_shl(self.strikes)
                .unwrap_or(MAX_LOCK)
                .min(MAX_LOCK);
            self.locked_until = now + lock;
            self.strikes = self.strikes.saturating_add(1);
        }
    }

    fn forgive(&mut self) {
        self.failures = 0;
        self.strikes = 0;
        self.locked_until = 0;
    }

    fn busy(&self) -> bool {
        self.pending > 0 || self.in_flight > 0
    }

    /// Whether forgetting the entry changes no answer.
    fn expired(&self, now: u64) -> bool {
        !self.busy()
            && now >= self.locked_until
            && now >= self.start.saturating_add(WINDOW)
            && (self.strikes == 0 || now >= self.locked_until.saturating_add(STRIKE_MEMORY))
    }

    /// Eviction order when the table is full: what restricts least goes first. A spent budget
    /// goes last, so flooding the table with made-up emails does not reset a victim's lock.
    fn weight(&self, now: u64) -> (bool, u32, u32, u64) {
        (
            now < self.locked_until,
            self.strikes,
            self.failures,
            self.start,
        )
    }
}

/// Entries a [`MemoryLedger`] keeps by default: 48 bytes each in the table; a full table
/// measured 16 MiB resident, its growth and the eviction scratch included.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The ledger in this process's memory. A restart forgets it (a restart per window is not
/// something an attacker can order); replicas would each have their own, which is why the
/// interface exists.
#[derive(Debug)]
pub struct MemoryLedger {
    entries: Mutex<HashMap<BudgetKey, Entry>>,
    capacity: usize,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryLedger {
    /// A ledger that keeps at most `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(16),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attempts admitted and not yet settled.
    pub fn attempts_in_flight(&self) -> u64 {
        self.lock().values().map(|e| u64::from(e.in_flight)).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BudgetKey, Entry>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot poison meaning.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous body of [`AttemptLedger::reserve`].
    pub fn try_reserve(&self, attempt: &Attempt, now: u64) -> Result<(), Refusal> {
        let mut map = self.lock();
        let mut retry_after = 0;
        let mut busy = false;
        for budget in &attempt.budgets {
            if let Some(entry) = map.get_mut(&budget.key) {
                entry.roll(now, budget.limit);
                if now < entry.locked_until {
                    retry_after = retry_after.max(entry.locked_until - now);
                } else if entry.failures.saturating_add(entry.pending) >= budget.limit {
                    busy = true;
                }
            }
        }
        if let Some(email) = map.get(&attempt.email) {
            busy |= email.in_flight >= MAX_IN_FLIGHT_PER_EMAIL;
        }
        if retry_after > 0 {
            return Err(Refusal::Locked { retry_after });
        }
        if busy {
            return Err(Refusal::Busy);
        }
        let mut new: Vec<BudgetKey> = Vec::with_capacity(attempt.budgets.len() + 1);
        for key in attempt.budgets.iter().map(|b| b.key).chain([attempt.email]) {
            if !map.contains_key(&key) && !new.contains(&key) {
                new.push(key);
            }
        }
        let new = new.len();
        if map.len() + new > self.capacity {
            self.make_room(&mut map, now);
            if map.len() + new > self.capacity {
                return Err(Refusal::Busy);
            }
        }
        for budget in &attempt.budgets {
            let entry = map.entry(budget.key).or_insert_with(|| Entry::new(now));
            entry.pending += 1;
        }
        map.entry(attempt.email)
            .or_insert_with(|| Entry::new(now))
            .in_flight += 1;
        Ok(())
    }

    /// The synchronous body of [`AttemptLedger::settle`].
    pub fn settle_now(&self, attempt: &Attempt, outcome: Outcome, now: u64) {
        let mut map = self.lock();
        for budget in &attempt.budgets {
            if let Some(entry) = map.get_mut(&budget.key) {
                entry.pending = entry.pending.saturating_sub(1);
                match outcome {
                    Outcome::Failed => entry.fail(now, budget.limit),
                    Outcome::Succeeded if budget.cleared_by_success => entry.forgive(),
                    Outcome::Succeeded | Outcome::Abandoned => {}
                }
            }
        }
        if let Some(email) = map.get_mut(&attempt.email) {
            email.in_flight = email.in_flight.saturating_sub(1);
        }
    }

    /// Forgets expired entries; if that is not enough, the least restrictive eighth of the
    /// table. Entries with attempts in flight are never forgotten.
    fn make_room(&self, map: &mut HashMap<BudgetKey, Entry>, now: u64) {
        map.retain(|_, e| !e.expired(now));
        let target = self.capacity - self.capacity / 8;
        if map.len() <= target {
            return;
        }
        let mut candidates: Vec<(BudgetKey, (bool, u32, u32, u64))> = map
            .iter()
            .filter(|(_, e)| !e.busy())
            .map(|(k, e)| (*k, e.weight(now)))
            .collect();
        let excess = (map.len() - target).min(candidates.len());
        if excess == 0 {
            return;
        }
        candidates.select_nth_unstable_by_key(excess - 1, |(_, w)| *w);
        for (key, _) in &candidates[..excess] {
            map.remove(key);
        }
    }
}

impl AttemptLedger for MemoryLedger {
    fn reserve<'a>(
        &'a self,
        attempt: &'a Attempt,
        now: u64,
    ) -> LedgerFuture<'a, Result<(), Refusal>> {
        Box::pin(std::future::ready(self.try_reserve(attempt, now)))
    }

    fn settle<'a>(
        &'a self,
        attempt: &'a Attempt,
        outcome: Outcome,
        now: u64,
    ) -> LedgerFuture<'a, ()> {
        self.settle_now(attempt, outcome, now);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> BudgetKey {
        BudgetKey([n; 16])
    }

    /// An unknown browser's attempt: the email's shared budget (10) and its pair's (5).
    fn untrusted(email: u8, pair: u8) -> Attempt {
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

    fn fail(ledger: &MemoryLedger, attempt: &Attempt, now: u64) -> Result<(), Refusal> {
        ledger.try_reserve(attempt, now)?;
        ledger.settle_now(attempt, Outcome::Failed, now);
        Ok(())
    }

    #[test]
    fn a_reservation_counts_before_it_is_settled() {
        let ledger = MemoryLedger::default();
        let a = untrusted(1, 2);
        // One attempt of an email in flight at a time; the next is busy, not counted.
        ledger.try_reserve(&a, 0).unwrap();
        assert_eq!(ledger.try_reserve(&a, 0), Err(Refusal::Busy));
        ledger.settle_now(&a, Outcome::Failed, 0);
        for _ in 1..5 {
            fail(&ledger, &a, 1).unwrap();
        }
        assert_eq!(
            ledger.try_reserve(&a, 2),
            Err(Refusal::Locked {
                retry_after: WINDOW - 1
            })
        );
    }

    #[test]
    fn a_pending_attempt_is_counted_as_a_failure() {
        let ledger = MemoryLedger::default();
        let a = untrusted(1, 2);
        for _ in 0..4 {
            fail(&ledger, &a, 0).unwrap();
        }
        ledger.try_reserve(&a, 0).unwrap();
        // The fifth guess is out: another email's attempt from the same pair key waits too.
        let same_pair_other_email = untrusted(3, 2);
        assert_eq!(
            ledger.try_reserve(&same_pair_other_email, 0),
            Err(Refusal::Busy)
        );
        // Refunded on success: the pair is forgiven, the email's shared budget keeps its four.
        ledger.settle_now(&a, Outcome::Succeeded, 0);
        for _ in 0..5 {
            fail(&ledger, &a, 0).unwrap();
        }
        // 4 + 5 failures: one guess of the email's 10 is left, for any other address.
        fail(&ledger, &untrusted(1, 9), 0).unwrap();
        assert_eq!(
            ledger.try_reserve(&untrusted(1, 10), 0),
            Err(Refusal::Locked {
                retry_after: WINDOW
            })
        );
    }

    #[test]
    fn abandoned_attempts_count_nothing() {
        let ledger = MemoryLedger::default();
        let a = untrusted(1, 2);
        for _ in 0..20 {
            ledger.try_reserve(&a, 0).unwrap();
            ledger.settle_now(&a, Outcome::Abandoned, 0);
        }
        assert_eq!(ledger.try_reserve(&a, 0), Ok(()));
    }

    #[test]
    fn one_address_cannot_spend_the_emails_budget_but_many_can() {
        let ledger = MemoryLedger::default();
        for _ in 0..5 {
            fail(&ledger, &untrusted(1, 2), 0).unwrap();
        }
        assert!(matches!(
            ledger.try_reserve(&untrusted(1, 2), 0),
            Err(Refusal::Locked { .. })
        ));
        // The owner, elsewhere, still has the rest of the email's budget.
        ledger.try_reserve(&untrusted(1, 3), 0).unwrap();
        ledger.settle_now(&untrusted(1, 3), Outcome::Succeeded, 0);
        // A second address spends the rest: then no unknown browser gets through.
        for _ in 0..5 {
            fail(&ledger, &untrusted(1, 4), 0).unwrap();
        }
        assert!(matches!(
            ledger.try_reserve(&untrusted(1, 5), 0),
            Err(Refusal::Locked { .. })
        ));
    }

    #[test]
    fn locks_double_while_the_budget_is_spent_again_and_stop_at_the_cap() {
        let ledger = MemoryLedger::default();
        let a = untrusted(1, 2);
        let mut now = 0;
        let mut locks = Vec::new();
        for _ in 0..7 {
            while fail(&ledger, &a, now).is_ok() {}
            let Err(Refusal::Locked { retry_after }) = ledger.try_reserve(&a, now) else {
                panic!("locked expected");
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
            ]
        );
        // A window without spending the budget starts the doubling over.
        fail(&ledger, &a, now).unwrap();
        now += WINDOW;
        while fail(&ledger, &a, now).is_ok() {}
        assert_eq!(
            ledger.try_reserve(&a, now),
            Err(Refusal::Locked {
                retry_after: WINDOW
            })
        );
    }

    #[test]
    fn failures_age_out_with_the_window() {
        let ledger = MemoryLedger::default();
        let a = untrusted(1, 2);
        for _ in 0..4 {
            fail(&ledger, &a, 0).unwrap();
        }
        for _ in 0..4 {
            fail(&ledger, &a, WINDOW).unwrap();
        }
        assert_eq!(ledger.try_reserve(&a, WINDOW), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_a_flood_does_not_evict_a_spent_budget() {
        let ledger = MemoryLedger::with_capacity(1000);
        let victim = untrusted(1, 2);
        while fail(&ledger, &victim, 0).is_ok() {}
        for n in 0..20_000_u32 {
            let mut email = [0_u8; 16];
            email[..4].copy_from_slice(&n.to_le_bytes());
            email[15] = 0xee;
            let mut pair = email;
            pair[14] = 0xff;
            let a = untrusted(0, 0);
            let a = Attempt {
                email: BudgetKey(email),
                budgets: vec![
                    Budget {
                        key: BudgetKey(email),
                        ..a.budgets[0]
                    },
                    Budget {
                        key: BudgetKey(pair),
                        ..a.budgets[1]
                    },
                ],
            };
            fail(&ledger, &a, 1).unwrap();
            assert!(ledger.len() <= 1000);
        }
        assert!(matches!(
            ledger.try_reserve(&victim, 2),
            Err(Refusal::Locked { .. })
        ));
    }

    #[test]
    fn expired_entries_are_forgotten_when_room_is_needed() {
        let ledger = MemoryLedger::with_capacity(100);
        for n in 0..50 {
            fail(&ledger, &untrusted(n, n + 100), 0).unwrap();
        }
        assert_eq!(ledger.len(), 100);
        fail(&ledger, &untrusted(200, 201), WINDOW).unwrap();
        assert_eq!(ledger.len(), 2);
    }

    #[tokio::test]
    async fn a_dropped_reservation_counts_as_a_failure() {
        let ledger = Arc::new(MemoryLedger::default());
        let a = untrusted(1, 2);
        for _ in 0..5 {
            let r = Reservation::take(ledger.clone(), a.clone(), 0)
                .await
                .unwrap();
            drop(r);
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            ledger.try_reserve(&a, 0),
            Err(Refusal::Locked { .. })
        ));
    }
}
