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
//! The rules are written once, over the entries an attempt touches ([`Entry`] and the functions
//! under it); two ledgers keep the entries: [`MemoryLedger`] in this process (one replica) and
//! [`StoreLedger`] in the store's database, shared by every replica on it (docs/sign-in.md).
//! Keys are opaque keyed hashes ([`BudgetKey`]): a ledger never holds an email, and each bounds
//! its table whatever callers send. The rules are tested through [`AttemptLedger`] against both
//! ledgers, so they are shown to answer alike (`control/tests/sign_in_ledger.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{self, Lane, Store, StoreError};

/// A budget's window, seconds.
pub const WINDOW: u64 = 15 * 60;
/// Longest lock a spent budget gets (the doubling stops here), seconds.
pub const MAX_LOCK: u64 = 4 * 3600;
/// How long a budget that was spent remembers it (for the doubling) after its lock ends.
const STRIKE_MEMORY: u64 = 24 * 3600;
/// Attempts of one email hashed at once.
pub const MAX_IN_FLIGHT_PER_EMAIL: u32 = 1;
/// How long a [`StoreLedger`] reservation holds its place before any replica may settle it as a
/// failure, seconds: what a replica that died mid-hash costs its emails (they are busy until
/// then). Far longer than a hash, even on a loaded machine; a live replica whose answer comes
/// later still settles nothing twice (the reservation is gone, counted as a failure).
pub const RESERVATION_TTL: u64 = 60;

/// The opaque name of a budget: a keyed hash of what it counts (see `auth::SignInGuard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetKey(pub [u8; 16]);

/// One budget an attempt draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// Another attempt for the same email (or the reservations still out) fill the budget, or
    /// the ledger could not be reached: try again in a moment.
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

/// The ledger's name for an admitted attempt, handed back to settle it (a [`StoreLedger`]
/// reservation's row; a [`MemoryLedger`] needs none and gives 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationId(pub u64);

/// What a ledger holds, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Budget entries kept (bounded by the ledger's capacity).
    pub entries: u64,
    /// Attempts admitted and not yet settled.
    pub in_flight: u64,
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
    ) -> LedgerFuture<'a, Result<ReservationId, Refusal>>;

    /// Settles an attempt [`Self::reserve`] admitted as `id`.
    fn settle<'a>(
        &'a self,
        attempt: &'a Attempt,
        id: ReservationId,
        outcome: Outcome,
        now: u64,
    ) -> LedgerFuture<'a, ()>;

    /// What the ledger holds now.
    fn census(&self) -> LedgerFuture<'_, Result<Census, StoreError>>;
}

/// An admitted attempt. Dropped without [`Self::settle`] (its task panicked or was cancelled),
/// it settles as [`Outcome::Failed`]: losing the answer must never refund a guess.
pub struct Reservation {
    ledger: Arc<dyn AttemptLedger>,
    attempt: Option<Attempt>,
    id: ReservationId,
    now: u64,
}

impl Reservation {
    /// Reserves `attempt` in `ledger`.
    pub async fn take(
        ledger: Arc<dyn AttemptLedger>,
        attempt: Attempt,
        now: u64,
    ) -> Result<Self, Refusal> {
        let id = ledger.reserve(&attempt, now).await?;
        Ok(Self {
            ledger,
            attempt: Some(attempt),
            id,
            now,
        })
    }

    /// Settles the attempt at `now`.
    pub async fn settle(mut self, outcome: Outcome, now: u64) {
        if let Some(attempt) = self.attempt.take() {
            self.ledger.settle(&attempt, self.id, outcome, now).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let ledger = Arc::clone(&self.ledger);
        let (id, now) = (self.id, self.now);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { ledger.settle(&attempt, id, Outcome::Failed, now).await });
        }
    }
}

/// One budget's state (and, for an email's key, its attempts in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Start of the current window.
    pub(crate) start: u64,
    /// Failures in the current window.
    pub(crate) failures: u32,
    /// Reserved attempts not yet settled: counted as failures until they are.
    pub(crate) pending: u32,
    /// Attempts of this email being hashed (only on an email's key).
    pub(crate) in_flight: u32,
    /// How many times in a row the budget was spent: the next lock is `WINDOW << strikes`.
    pub(crate) strikes: u32,
    /// Locked (spent) until then.
    pub(crate) locked_until: u64,
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

    pub(crate) fn busy(&self) -> bool {
        self.pending > 0 || self.in_flight > 0
    }

    /// From when forgetting the entry changes no answer, unless it is [`Self::busy`]: its
    /// window and lock are over, and a budget that was spent has been quiet for
    /// `STRIKE_MEMORY` since (or the doubling would start over).
    pub(crate) fn forget_at(&self) -> u64 {
        let over = self.locked_until.max(self.start.saturating_add(WINDOW));
        if self.strikes == 0 {
            over
        } else {
            over.max(self.locked_until.saturating_add(STRIKE_MEMORY))
        }
    }

    /// Whether forgetting the entry changes no answer.
    fn expired(&self, now: u64) -> bool {
        !self.busy() && now >= self.forget_at()
    }

    /// Eviction order when the table is full: what restricts least goes first. A spent budget
    /// goes last, so flooding the table with made-up emails does not reset a victim's lock.
    /// (`store::sign_in_budgets::make_room` orders rows by the same four columns.)
    fn weight(&self, now: u64) -> (bool, u32, u32, u64) {
        (
            now < self.locked_until,
            self.strikes,
            self.failures,
            self.start,
        )
    }
}

/// The entries an attempt touches, by key: a ledger's whole table, or the rows a database ledger
/// read for one step.
pub(crate) type Entries = HashMap<BudgetKey, Entry>;

/// Whether `attempt` may go ahead, over `entries` (holding every entry of its keys that exists;
/// their windows are rolled to `now`). Counts nothing.
pub(crate) fn admit(entries: &mut Entries, attempt: &Attempt, now: u64) -> Result<(), Refusal> {
    let mut retry_after = 0;
    let mut busy = false;
    for budget in &attempt.budgets {
        if let Some(entry) = entries.get_mut(&budget.key) {
            entry.roll(now, budget.limit);
            if now < entry.locked_until {
                retry_after = retry_after.max(entry.locked_until - now);
            } else if entry.failures.saturating_add(entry.pending) >= budget.limit {
                busy = true;
            }
        }
    }
    if let Some(email) = entries.get(&attempt.email) {
        busy |= email.in_flight >= MAX_IN_FLIGHT_PER_EMAIL;
    }
    if retry_after > 0 {
        return Err(Refusal::Locked { retry_after });
    }
    if busy {
        return Err(Refusal::Busy);
    }
    Ok(())
}

/// How many entries counting `attempt` adds to `entries`.
pub(crate) fn new_entries(entries: &Entries, attempt: &Attempt) -> usize {
    let mut new: Vec<BudgetKey> = Vec::with_capacity(attempt.budgets.len() + 1);
    for key in attempt.budgets.iter().map(|b| b.key).chain([attempt.email]) {
        if !entries.contains_key(&key) && !new.contains(&key) {
            new.push(key);
        }
    }
    new.len()
}

/// Counts an admitted attempt: pending on each of its budgets, in flight on its email.
pub(crate) fn hold(entries: &mut Entries, attempt: &Attempt, now: u64) {
    for budget in &attempt.budgets {
        let entry = entries.entry(budget.key).or_insert_with(|| Entry::new(now));
        entry.pending += 1;
    }
    entries
        .entry(attempt.email)
        .or_insert_with(|| Entry::new(now))
        .in_flight += 1;
}

/// Settles a held attempt over `entries`.
pub(crate) fn release(entries: &mut Entries, attempt: &Attempt, outcome: Outcome, now: u64) {
    for budget in &attempt.budgets {
        if let Some(entry) = entries.get_mut(&budget.key) {
            entry.pending = entry.pending.saturating_sub(1);
            match outcome {
                Outcome::Failed => entry.fail(now, budget.limit),
                Outcome::Succeeded if budget.cleared_by_success => entry.forgive(),
                Outcome::Succeeded | Outcome::Abandoned => {}
            }
        }
    }
    if let Some(email) = entries.get_mut(&attempt.email) {
        email.in_flight = email.in_flight.saturating_sub(1);
    }
}

/// Entries a ledger keeps by default: 48 bytes each in a [`MemoryLedger`]'s table (a full
/// table measured 16 MiB resident, its growth and the eviction scratch included); a
/// [`StoreLedger`]'s rows take about 100 bytes each with their index.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The ledger in this process's memory. A restart forgets it (a restart per window is not
/// something an attacker can order); replicas would each have their own, which is why
/// [`StoreLedger`] exists.
#[derive(Debug)]
pub struct MemoryLedger {
    entries: Mutex<Entries>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every update leaves the map consistent, so a panic elsewhere cannot poison meaning.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous body of [`AttemptLedger::reserve`].
    pub fn try_reserve(&self, attempt: &Attempt, now: u64) -> Result<(), Refusal> {
        let mut map = self.lock();
        admit(&mut map, attempt, now)?;
        let new = new_entries(&map, attempt);
        if map.len() + new > self.capacity {
            self.make_room(&mut map, now);
            if map.len() + new > self.capacity {
                return Err(Refusal::Busy);
            }
        }
        hold(&mut map, attempt, now);
        Ok(())
    }

    /// The synchronous body of [`AttemptLedger::settle`].
    pub fn settle_now(&self, attempt: &Attempt, outcome: Outcome, now: u64) {
        release(&mut self.lock(), attempt, outcome, now);
    }

    /// Forgets expired entries; if that is not enough, the least restrictive eighth of the
    /// table. Entries with attempts in flight are never forgotten.
    fn make_room(&self, map: &mut Entries, now: u64) {
        map.retain(|_, e| !e.expired(now));
        let target = room_target(self.capacity);
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

/// How many entries a full table keeps after making room: seven eighths of it, so room is made
/// once per eighth of the capacity of new entries, not at every one.
pub(crate) fn room_target(capacity: usize) -> usize {
    capacity - capacity / 8
}

impl AttemptLedger for MemoryLedger {
    fn reserve<'a>(
        &'a self,
        attempt: &'a Attempt,
        now: u64,
    ) -> LedgerFuture<'a, Result<ReservationId, Refusal>> {
        Box::pin(std::future::ready(
            self.try_reserve(attempt, now).map(|()| ReservationId(0)),
        ))
    }

    fn settle<'a>(
        &'a self,
        attempt: &'a Attempt,
        _: ReservationId,
        outcome: Outcome,
        now: u64,
    ) -> LedgerFuture<'a, ()> {
        self.settle_now(attempt, outcome, now);
        Box::pin(std::future::ready(()))
    }

    fn census(&self) -> LedgerFuture<'_, Result<Census, StoreError>> {
        let map = self.lock();
        let census = Census {
            entries: map.len() as u64,
            in_flight: map.values().map(|e| u64::from(e.in_flight)).sum(),
        };
        Box::pin(std::future::ready(Ok(census)))
    }
}

/// The ledger in the store's database (`sign_in_budgets` and `sign_in_reservations`): every
/// replica on one PostgreSQL database shares it, so N replicas allow no more guesses than one.
///
/// Each call is one write transaction ([`Store::write_apart`] in [`Lane::SignIn`]), serialised
/// with every other replica's ledger steps by the lane's own lock: the check and the count stay
/// one step across replicas, and neither waits for nor delays the store's other writes. A
/// reservation is a row with an expiry ([`RESERVATION_TTL`]): if the replica that made it dies
/// mid-hash, the next reservation anywhere past that time settles it as a failure, so no email
/// stays busy and no guess is refunded. At most `capacity` entries are kept, made room for as
/// [`MemoryLedger`] does. A database that cannot be reached refuses attempts (`Busy`, logged):
/// closed, as a spent budget is.
///
/// An attempt the database refused as locked is refused again by this replica, without asking,
/// until the lock ends ([`KNOWN_LOCKS`]): a lock only ends with time (or with a success of an
/// attempt admitted before it, which the one attempt per email in flight rules out), so the
/// answer is the database's; and a client hammering its lock costs the shared database nothing.
#[derive(Debug, Clone)]
pub struct StoreLedger {
    store: Store,
    capacity: usize,
    locks: Arc<Mutex<HashMap<Attempt, u64>>>,
}

/// Locked attempts a [`StoreLedger`] remembers (each until its lock ends; when full, expired
/// ones are forgotten, and if none is, nothing more is remembered: the database answers).
pub const KNOWN_LOCKS: usize = 4096;

impl StoreLedger {
    /// A ledger in `store`'s database keeping at most [`DEFAULT_CAPACITY`] entries.
    pub fn new(store: Store) -> Self {
        Self::with_capacity(store, DEFAULT_CAPACITY)
    }

    /// A ledger in `store`'s database keeping at most `capacity` entries.
    pub fn with_capacity(store: Store, capacity: usize) -> Self {
        Self {
            store,
            capacity: capacity.max(16),
            locks: Arc::default(),
        }
    }

    /// Until when `attempt` is known to be locked, if it is at `now`.
    fn known_lock(&self, attempt: &Attempt, now: u64) -> Option<u64> {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.get(attempt).copied().filter(|until| now < *until)
    }

    fn remember_lock(&self, attempt: &Attempt, until: u64, now: u64) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.len() >= KNOWN_LOCKS {
            locks.retain(|_, until| now < *until);
        }
        if locks.len() < KNOWN_LOCKS {
            locks.insert(attempt.clone(), until);
        }
    }
}

impl AttemptLedger for StoreLedger {
    fn reserve<'a>(
        &'a self,
        attempt: &'a Attempt,
        now: u64,
    ) -> LedgerFuture<'a, Result<ReservationId, Refusal>> {
        let owned = attempt.clone();
        let capacity = self.capacity;
        Box::pin(async move {
            if let Some(until) = self.known_lock(attempt, now) {
                return Err(Refusal::Locked {
                    retry_after: until - now,
                });
            }
            let reserved = self
                .store
                .write_apart(Lane::SignIn, move |tx| {
                    store::sign_in_budgets::reserve(tx, &owned, now, capacity)
                })
                .await;
            let reserved = reserved.unwrap_or_else(|e| {
                tracing::error!(error = %e, "the sign-in ledger could not be reached");
                Err(Refusal::Busy)
            });
            if let Err(Refusal::Locked { retry_after }) = reserved {
                self.remember_lock(attempt, now.saturating_add(retry_after), now);
            }
            reserved
        })
    }

    fn settle<'a>(
        &'a self,
        attempt: &'a Attempt,
        id: ReservationId,
        outcome: Outcome,
        now: u64,
    ) -> LedgerFuture<'a, ()> {
        let owned = attempt.clone();
        Box::pin(async move {
            let settled = self
                .store
                .write_apart(Lane::SignIn, move |tx| {
                    store::sign_in_budgets::settle(tx, &owned, id, outcome, now)
                })
                .await;
            if let Err(e) = settled {
                // The reservation stays and expires: then it is counted as a failure.
                tracing::error!(error = %e, "settling a sign-in attempt");
            }
        })
    }

    fn census(&self) -> LedgerFuture<'_, Result<Census, StoreError>> {
        Box::pin(self.store.read(store::sign_in_budgets::census))
    }
}

/// The ledger a service on `store` uses: the database's on PostgreSQL, where several replicas
/// may share it; this process's memory on SQLite, which one process serves (its budgets are
/// then exact without a durable write per guess: docs/sign-in.md).
pub fn ledger_for(store: &Store) -> Arc<dyn AttemptLedger> {
    if store.is_postgres() {
        Arc::new(StoreLedger::new(store.clone()))
    } else {
        Arc::new(MemoryLedger::default())
    }
}
