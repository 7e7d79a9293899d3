//! Token buckets by name (a provider's key identifier, a client's network), bounded in number.
//!
//! Each name has `per_minute` calls a minute and a burst of a tenth of that, measured on the
//! monotonic clock. The table holds at most [`MAX_NAMES`] names: when it is full, names whose
//! bucket has refilled are forgotten (they are as good as new), and if none has, a new name is
//! refused until one does. So a flood from many addresses costs bounded memory and is refused,
//! never queued.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Names remembered at most.
pub const MAX_NAMES: usize = 10_000;
/// Units of one call; a bucket refills `per_minute` units a millisecond.
const CALL: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    at_ms: u64,
}

/// Buckets keyed by `K`.
#[derive(Debug)]
pub struct Buckets<K> {
    per_minute: u64,
    capacity: u64,
    max_names: usize,
    names: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// `per_minute` calls a minute per name (at least 1), a burst of a tenth of that.
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_NAMES)
    }

    /// The same, remembering at most `max_names` names.
    pub fn with_capacity(per_minute: u32, max_names: usize) -> Self {
        let per_minute = u64::from(per_minute.max(1));
        Self {
            per_minute,
            capacity: (per_minute / 10).max(1) * CALL,
            max_names,
            names: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(b.at_ms);
        b.units = b
            .units
            .saturating_add(elapsed.saturating_mul(self.per_minute))
            .min(self.capacity);
        b.at_ms = b.at_ms.max(now_ms);
    }

    /// Takes one call from `name`'s bucket at monotonic `now_ms`. `Err(seconds)`: none left (or
    /// no room for a new name), retry after that long.
    pub fn take(&self, name: K, now_ms: u64) -> Result<(), u64> {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.len() >= self.max_names && !names.contains_key(&name) {
            names.retain(|_, b| {
                self.refill(b, now_ms);
                b.units < self.capacity
            });
            if names.len() >= self.max_names {
                return Err(60);
            }
        }
        let capacity = self.capacity;
        let b = names.entry(name).or_insert(Bucket {
            units: capacity,
            at_ms: now_ms,
        });
        self.refill(b, now_ms);
        if b.units >= CALL {
            b.units -= CALL;
            Ok(())
        } else {
            let wait_ms = (CALL - b.units).div_ceil(self.per_minute);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }

    /// Names remembered now.
    pub fn len(&self) -> usize {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no name is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let b = Buckets::new(600);
        for _ in 0..60 {
            assert_eq!(b.take("a", 0), Ok(()));
        }
        assert_eq!(b.take("a", 0), Err(1));
        // Another name has its own bucket.
        assert_eq!(b.take("b", 0), Ok(()));
        // 600 a minute: one call every 100 ms.
        assert_eq!(b.take("a", 100), Ok(()));
        assert!(b.take("a", 100).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_refilled_names_first() {
        let b = Buckets::with_capacity(60, 3);
        for name in 0..3 {
            assert_eq!(b.take(name, 0), Ok(()));
        }
        // Full, and nobody has refilled: a new name is refused, the table does not grow.
        assert!(b.take(3, 0).is_err());
        assert_eq!(b.len(), 3);
        // A minute later every bucket is full again: they are forgotten, the new name fits.
        assert_eq!(b.take(3, 60_000), Ok(()));
        assert_eq!(b.len(), 1);
    }
}
