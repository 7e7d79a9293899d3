//! The verify endpoint's guard: a budget of calls per account, and the trace each account's
//! calls leave, bounded.
//!
//! `POST /v1/keys/verify` answers whether a key text is genuine, which is worth asking a
//! million times to someone holding a pile of candidate strings. So each account has a token
//! bucket ([`VerifyGuard::take`]: `per_minute` calls a minute, a burst of a tenth of that; 429
//! with `Retry-After` when empty), measured on the monotonic clock. The calls that concern a real
//! key are written to the audit trail (`verify::verify_key`), but at most once per key per hour
//! and at most [`MAX_TRACES_PER_HOUR`] rows per calling account per hour
//! ([`VerifyGuard::should_trace`]): the trail shows who checked which key, and a caller cannot
//! grow it faster than that. Both are in memory: a restart refills the buckets, which costs a
//! caller a restart per minute.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use shared::key::KeyId;

/// Default calls per minute per account.
pub const DEFAULT_PER_MINUTE: u32 = 600;
/// Most audit rows one account's verify calls write in an hour.
pub const MAX_TRACES_PER_HOUR: usize = 60;
/// Accounts remembered before idle ones are forgotten.
const MAX_ACCOUNTS: usize = 10_000;
/// Units of one call in the bucket; a bucket refills `per_minute` units a millisecond, so
/// `per_minute` calls a minute.
const CALL: u64 = 60_000;

#[derive(Debug)]
struct Account {
    /// Units in the bucket.
    units: u64,
    /// Monotonic ms of the last refill.
    at_ms: u64,
    /// The hour (Unix seconds / 3600) the traces below belong to.
    hour: u64,
    /// Keys traced this hour.
    traced: HashSet<KeyId>,
}

/// Per-account budgets and trace bookkeeping of the verify endpoint.
#[derive(Debug)]
pub struct VerifyGuard {
    per_minute: u64,
    capacity: u64,
    accounts: Mutex<HashMap<u64, Account>>,
}

impl VerifyGuard {
    /// `per_minute` calls a minute per account (at least 1), a burst of a tenth of that.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = u64::from(per_minute.max(1));
        Self {
            per_minute,
            capacity: (per_minute / 10).max(1) * CALL,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `account`'s bucket at monotonic `now_ms`. `Err(seconds)`: empty, retry
    /// after that long.
    pub fn take(&self, account: u64, now_ms: u64) -> Result<(), u64> {
        let Ok(mut accounts) = self.accounts.lock() else {
            return Ok(());
        };
        if accounts.len() >= MAX_ACCOUNTS && !accounts.contains_key(&account) {
            let (per_minute, capacity) = (self.per_minute, self.capacity);
            // Forget accounts whose bucket has refilled and that traced nothing this hour.
            accounts.retain(|_, a| {
                refill(a, now_ms, per_minute, capacity);
                a.units < capacity || !a.traced.is_empty()
            });
        }
        let a = accounts.entry(account).or_insert(Account {
            units: self.capacity,
            at_ms: now_ms,
            hour: 0,
            traced: HashSet::new(),
        });
        refill(a, now_ms, self.per_minute, self.capacity);
        if a.units >= CALL {
            a.units -= CALL;
            Ok(())
        } else {
            let wait_ms = (CALL - a.units).div_ceil(self.per_minute);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }

    /// Whether `account`'s call about `key` at `now` (Unix seconds) should be written to the
    /// audit trail: the first about that key this hour, within the account's hourly cap.
    pub fn should_trace(&self, account: u64, key: KeyId, now: u64) -> bool {
        let Ok(mut accounts) = self.accounts.lock() else {
            return false;
        };
        let Some(a) = accounts.get_mut(&account) else {
            return false;
        };
        let hour = now / 3600;
        if a.hour != hour {
            a.hour = hour;
            a.traced.clear();
        }
        a.traced.len() < MAX_TRACES_PER_HOUR && a.traced.insert(key)
    }
}

fn refill(a: &mut Account, now_ms: u64, per_minute: u64, capacity: u64) {
    let elapsed = now_ms.saturating_sub(a.at_ms);
    a.units = a
        .units
        .saturating_add(elapsed.saturating_mul(per_minute))
        .min(capacity);
    a.at_ms = a.at_ms.max(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let guard = VerifyGuard::new(600);
        for _ in 0..60 {
            assert_eq!(guard.take(1, 1_000), Ok(()));
        }
        assert_eq!(
            guard.take(1, 1_000),
            Err(1),
            "600 a minute: one call per 100 ms"
        );
        // Another account has its own bucket.
        assert_eq!(guard.take(2, 1_000), Ok(()));
        assert_eq!(guard.take(1, 1_099), Err(1));
        assert_eq!(guard.take(1, 1_100), Ok(()));
        assert_eq!(guard.take(1, 1_100), Err(1));
        // A minute refills the burst, not more.
        let taken = (0..100).filter(|_| guard.take(1, 61_100).is_ok()).count();
        assert_eq!(taken, 60);
        let slow = VerifyGuard::new(6);
        assert_eq!(slow.take(1, 0), Ok(()));
        assert_eq!(slow.take(1, 0), Err(10));
    }

    #[test]
    fn traces_once_per_key_per_hour_within_a_cap() {
        let guard = VerifyGuard::new(600);
        let key = |n: u8| KeyId([n; 16]);
        assert!(
            !guard.should_trace(1, key(1), 0),
            "no call taken: nothing to trace"
        );
        guard.take(1, 0).unwrap();
        assert!(guard.should_trace(1, key(1), 0));
        assert!(!guard.should_trace(1, key(1), 3_599));
        assert!(guard.should_trace(1, key(1), 3_600), "a new hour");
        let traced = (2..=200_u8)
            .filter(|&n| guard.should_trace(1, key(n), 3_600))
            .count();
        assert_eq!(traced, MAX_TRACES_PER_HOUR - 1);
    }
}
