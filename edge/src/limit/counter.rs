//! The `KeyLimiter` object's side of a budget: the [`Counter`] it keeps (persisted after every
//! change), which answers the messages of `limit`'s protocol.

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::limits::{CAP_SPAN, Policy};

use super::*;

/// Whether `policy`'s window could let more than `per_minute` requests into 60 seconds: the
/// grants whose leases ended in the last 60 s come from at most `⌈60 / window⌉ + 1` windows.
/// Leases of such a key are short ([`CAPPED_LEASE_MS`]); the others last to the window's end.
pub fn capped(policy: Policy, per_minute: Option<u32>) -> bool {
    per_minute.is_some_and(|cap| {
        let windows = u64::from(CAP_SPAN).div_ceil(u64::from(policy.window)) + 1;
        u64::from(policy.limit) * windows > u64::from(cap)
    })
}

/// A budget's state in its `KeyLimiter` object, persisted after every change so an eviction
/// does not reset the count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The budget's own policy, from a limits push; `None` uses the worker's default.
    pub policy: Option<Policy>,
    /// The version of `policy` (0: none yet).
    pub version: u64,
    /// The plan's per-minute cap, from a limits push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    /// Where this key's requests count, when that is another key's limiter (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<KeyId>,
    /// Start of the window `count` belongs to, Unix milliseconds.
    pub window_start_ms: u64,
    /// End of that window (its start plus the window of the policy that opened it).
    pub window_end_ms: u64,
    /// Tokens granted in that window (less those handed back).
    pub count: u32,
    /// Leases answered so far (all windows).
    #[serde(default)]
    pub serial: u64,
    /// With a per-minute cap: tokens by lease end, while they count against the cap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outstanding: Vec<Outstanding>,
}

impl Counter {
    /// Starts a new window when `now_ms` is past the one counted. The count carries over when
    /// a policy change altered the window length but the counted window began inside the
    /// current one: those requests happened in the current window.
    pub(super) fn roll(&mut self, policy: Policy, now_ms: u64) {
        let start = policy.window_start_ms(now_ms);
        if self.window_end_ms == 0 || self.window_start_ms < start {
            self.window_start_ms = start;
            self.count = 0;
        }
        self.window_end_ms = policy.reset_ms(now_ms);
    }

    /// The policy in force.
    pub fn policy(&self, default: Policy) -> Policy {
        self.policy.unwrap_or(default)
    }

    /// Forgets lease ends that no longer count against the cap at `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        self.outstanding
            .retain(|o| o.n > 0 && o.ends_ms.saturating_add(CAP_SPAN_MS) > now_ms);
    }

    /// Tokens that count against the cap at `now_ms`.
    pub(super) fn cap_used(&self, now_ms: u64) -> u64 {
        self.outstanding
            .iter()
            .filter(|o| o.ends_ms.saturating_add(CAP_SPAN_MS) > now_ms)
            .map(|o| u64::from(o.n))
            .sum()
    }

    /// What the cap leaves at `now_ms` (`u32::MAX` without a cap).
    fn cap_left(&self, now_ms: u64) -> u32 {
        match self.per_minute {
            Some(cap) => {
                u32::try_from(u64::from(cap).saturating_sub(self.cap_used(now_ms))).unwrap_or(0)
            }
            None => u32::MAX,
        }
    }

    /// When (object clock) at least one token is under the cap again.
    fn cap_frees_at(&mut self, now_ms: u64) -> u64 {
        let Some(cap) = self.per_minute else {
            return now_ms;
        };
        self.outstanding.sort_by_key(|o| o.ends_ms);
        let mut used = self.cap_used(now_ms);
        for o in &self.outstanding {
            if used < u64::from(cap) {
                break;
            }
            used -= u64::from(o.n);
            if used < u64::from(cap) {
                return o.ends_ms.saturating_add(CAP_SPAN_MS);
            }
        }
        now_ms
    }

    /// Records `n` tokens whose lease ends at `ends_ms`.
    fn note_outstanding(&mut self, ends_ms: u64, n: u32) {
        if let Some(o) = self.outstanding.iter_mut().find(|o| o.ends_ms == ends_ms) {
            o.n = o.n.saturating_add(n);
            return;
        }
        self.outstanding.push(Outstanding { ends_ms, n });
        if self.outstanding.len() > MAX_OUTSTANDING {
            self.outstanding.sort_by_key(|o| o.ends_ms);
            let first = self.outstanding.remove(0);
            self.outstanding[0].n = self.outstanding[0].n.saturating_add(first.n);
        }
    }

    /// Takes back tokens an isolate will never spend: from the cap's record of their lease,
    /// and from the window's count when their lease belongs to the current window.
    fn give_back(&mut self, returned: &[Return], now_ms: u64) {
        for r in returned {
            let mut n = r.n;
            if self.per_minute.is_some() {
                // Only what the record still holds: a return merged away or forgotten takes
                // nothing back.
                match self
                    .outstanding
                    .iter_mut()
                    .find(|o| o.ends_ms == r.lease_end_ms)
                {
                    Some(o) => {
                        n = n.min(o.n);
                        o.n -= n;
                    }
                    None => n = 0,
                }
            }
            let current = r.lease_end_ms > self.window_start_ms
                && r.lease_end_ms <= self.window_end_ms
                && now_ms < self.window_end_ms;
            if current {
                self.count = self.count.saturating_sub(n);
            }
        }
        self.prune(now_ms);
    }

    /// Takes back `returned` at `now_ms` without granting anything (a key whose requests count
    /// elsewhere now, handing back what it was granted here before).
    pub fn take_back(&mut self, returned: &[Return], now_ms: u64) {
        self.give_back(returned, now_ms);
    }

    /// Grants a lease at `now_ms`, after taking back `returned`: never more than the limit per
    /// window, nor more than the per-minute cap over the last 60 s, in total.
    pub fn take(&mut self, default: Policy, want: u32, returned: &[Return], now_ms: u64) -> Grant {
        let policy = self.policy(default);
        self.roll(policy, now_ms);
        self.give_back(returned, now_ms);
        let window_left = policy.limit.saturating_sub(self.count);
        let remaining = window_left.min(self.cap_left(now_ms));
        let granted = remaining
            .min((remaining / LEASE_DIVISOR).max(1))
            .min(want.max(1));
        let lease_end_ms = if capped(policy, self.per_minute) {
            self.window_end_ms
                .min(now_ms.saturating_add(CAPPED_LEASE_MS))
        } else {
            self.window_end_ms
        };
        self.count += granted;
        if granted > 0 && self.per_minute.is_some() {
            self.note_outstanding(lease_end_ms, granted);
        }
        self.serial += 1;
        // When the budget is spent (by this grant or before it): until when, and why.
        let by_cap = remaining == granted && window_left > granted;
        let retry_ms = if remaining > granted {
            0
        } else if by_cap {
            self.cap_frees_at(now_ms).saturating_sub(now_ms)
        } else {
            self.window_end_ms.saturating_sub(now_ms)
        };
        Grant {
            granted,
            limit: policy.limit,
            window: policy.window,
            reset_ms: self.window_end_ms,
            remaining_after: remaining - granted,
            serial: self.serial,
            lease_end_ms,
            lifetime_ms: lease_end_ms.saturating_sub(now_ms),
            retry_ms,
            by_cap,
            // Only a cap that can bind is worth a header.
            per_minute: self.per_minute.filter(|_| capped(policy, self.per_minute)),
        }
    }

    /// Applies a limits-push entry at `now_ms`: first takes back tokens returned unspent, then
    /// keeps `policy` and `per_minute` if `version` is newer than the stored one.
    pub fn set(
        &mut self,
        policy: Policy,
        version: u64,
        per_minute: Option<u32>,
        returned: &[Return],
        now_ms: u64,
    ) -> bool {
        self.give_back(returned, now_ms);
        if self.policy.is_some() && version <= self.version {
            return false;
        }
        if per_minute.is_some() && self.per_minute.is_none() && self.window_end_ms > now_ms {
            // Leases granted before the cap was known were not recorded: count the window's
            // grants as if they all ended with it (they may: never less safe).
            self.outstanding.push(Outstanding {
                ends_ms: self.window_end_ms,
                n: self.count,
            });
        }
        self.policy = Some(policy);
        self.version = version;
        self.per_minute = per_minute;
        true
    }

    /// Remembers that this key's requests count at `budget`'s limiter.
    pub fn route(&mut self, budget: KeyId) {
        self.budget = Some(budget);
    }
}
