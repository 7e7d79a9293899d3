//! Per-key rate limits: the counter a `KeyLimiter` Durable Object keeps for one key, the leases
//! it grants, the isolate-local spending of those leases, and the answers (429 and the IETF
//! RateLimit header fields) the worker builds from them. Pure: unit- and property-tested on the
//! host; `lib.rs` only carries the messages between an isolate and the object.
//!
//! The object is the only place that counts. It grants tokens in *leases*, never more than the
//! key's limit per window in total, so the edge never admits more than the limit (over-admission
//! is zero). An isolate spends a lease locally, one token per admitted request, with no network
//! call, and asks the object again when the lease is spent. A lease is valid only for the window
//! it was granted in. Tokens left in a lease when its window ends (or when the isolate goes away)
//! are lost: the only error is under-admission, bounded by the lease rule:
//!
//! ```text
//! granted = min(remaining, max(1, remaining / 16), max(1, want))
//! want    = 1 + tokens this isolate was granted for the key in this window (slow start)
//! ```
//!
//! `remaining / 16` spreads what is left over the isolates that ask; `want` doubles each lease
//! (1, 2, 4, 8, ...) so an isolate that sees one request of a key never holds more than that one
//! token, and an isolate never strands more tokens than it already spent in the window.
//!
//! To keep the object's round trip off the hot path, an isolate that has spent half of its
//! latest lease asks for the next one in the background ([`Local::Allowed`]'s `refill`), one
//! such call at a time per key; a request waits for the object only when the lease is empty.
//! `docs/rate-limits.md` has the arithmetic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::limits::{Policy, PolicyError};

use crate::problem::{Problem, Reply};

/// Share of the remaining budget one lease may take, as a divisor.
pub const LEASE_DIVISOR: u32 = 16;

/// How long an isolate answers 429 from memory after the object said the window's budget is
/// spent, before it asks again (a limit raised in the control plane then reaches every isolate
/// within this time, not only at the next window).
pub const EXHAUSTED_RECHECK_MS: u64 = 1_000;

/// Most keys an isolate keeps leases for before it forgets expired ones (memory bound).
pub const MAX_LOCAL_KEYS: usize = 10_000;

/// Parses `"<limit>/<window seconds>"`, e.g. `"600/60"`.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let (limit, window) = text.trim().split_once('/').ok_or(PolicyError::Window)?;
    let limit: u32 = limit.trim().parse().map_err(|_| PolicyError::ZeroLimit)?;
    let window: u32 = window.trim().parse().map_err(|_| PolicyError::Window)?;
    Policy::new(limit, window)
}

/// A message from an isolate to a key's `KeyLimiter` object (JSON body of its fetch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Take a lease of up to `want` tokens; `default` applies when the key has no policy.
    Take {
        /// The worker's `RATE_LIMIT_DEFAULT`.
        default: Policy,
        /// The most tokens the isolate wants (slow start).
        want: u32,
    },
    /// Store the key's policy (kept only if `version` is newer), after giving back `returned`
    /// unspent tokens of a lease that ends at `lease_reset_ms`.
    Set {
        /// The new policy.
        policy: Policy,
        /// Its version.
        version: u64,
        /// Unspent tokens the isolate that took the push surrendered.
        returned: u32,
        /// The end of the window those tokens were granted in.
        lease_reset_ms: u64,
    },
}

/// The object's answer to [`Call::Take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Tokens granted, 0 when the window's budget is spent.
    pub granted: u32,
    /// The policy's limit.
    pub limit: u32,
    /// The policy's window, seconds.
    pub window: u32,
    /// When the window (and the lease) ends, Unix milliseconds.
    pub reset_ms: u64,
    /// What the object has left in the window after this grant.
    pub remaining_after: u32,
    /// The object's count of answers so far: orders answers that arrive out of order.
    #[serde(default)]
    pub serial: u64,
}

/// The object's answer to [`Call::Set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOutcome {
    /// Whether the policy was newer than the stored one and replaced it.
    pub applied: bool,
}

/// A key's state in its `KeyLimiter` object, persisted after every change so an eviction does
/// not reset the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The key's own policy, from a limits push; `None` uses the worker's default.
    pub policy: Option<Policy>,
    /// The version of `policy` (0: none yet).
    pub version: u64,
    /// Start of the window `count` belongs to, Unix milliseconds.
    pub window_start_ms: u64,
    /// End of that window (its start plus the window of the policy that opened it).
    pub window_end_ms: u64,
    /// Tokens granted in that window.
    pub count: u32,
    /// Leases answered so far (all windows).
    #[serde(default)]
    pub serial: u64,
}

impl Counter {
    /// Starts a new window when `now_ms` is past the one counted. The count carries over when
    /// a policy change altered the window length but the counted window began inside the
    /// current one: those requests happened in the current window.
    fn roll(&mut self, policy: Policy, now_ms: u64) {
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

    /// Grants a lease at `now_ms`: never more than the limit per window in total.
    pub fn take(&mut self, default: Policy, want: u32, now_ms: u64) -> Grant {
        let policy = self.policy(default);
        self.roll(policy, now_ms);
        let remaining = policy.limit.saturating_sub(self.count);
        let granted = remaining
            .min((remaining / LEASE_DIVISOR).max(1))
            .min(want.max(1));
        self.count += granted;
        self.serial += 1;
        Grant {
            granted,
            limit: policy.limit,
            window: policy.window,
            reset_ms: self.window_end_ms,
            remaining_after: remaining - granted,
            serial: self.serial,
        }
    }

    /// Applies a limits-push entry at `now_ms`: first takes back tokens returned unspent from
    /// the current window, then keeps `policy` if `version` is newer than the stored one.
    pub fn set(
        &mut self,
        policy: Policy,
        version: u64,
        returned: u32,
        lease_reset_ms: u64,
        now_ms: u64,
    ) -> bool {
        if returned > 0 && lease_reset_ms == self.window_end_ms && now_ms < self.window_end_ms {
            self.count = self.count.saturating_sub(returned);
        }
        if self.policy.is_some() && version <= self.version {
            return false;
        }
        self.policy = Some(policy);
        self.version = version;
        true
    }
}

/// The numbers the RateLimit header fields and a 429 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Requests per window.
    pub limit: u32,
    /// Window, seconds.
    pub window: u32,
    /// Requests left in this window, as far as this isolate knows.
    pub remaining: u32,
    /// When the window ends, Unix milliseconds.
    pub reset_ms: u64,
}

impl Status {
    /// Whole seconds until the window ends, at least 1 while it lasts.
    pub fn seconds_to_reset(&self, now_ms: u64) -> u64 {
        self.reset_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured
    /// fields) at `now_ms`.
    pub fn headers(&self, now_ms: u64) -> [(&'static str, String); 2] {
        [
            (
                "ratelimit-policy",
                format!("\"default\";q={};w={}", self.limit, self.window),
            ),
            (
                "ratelimit",
                format!(
                    "\"default\";r={};t={}",
                    self.remaining,
                    self.seconds_to_reset(now_ms)
                ),
            ),
        ]
    }
}

/// What the isolate decides for one request without calling the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A token of the local lease was spent: forward. With `refill`, also ask the object for
    /// a lease of up to that many tokens in the background, then [`Leases::refilled`].
    Allowed {
        /// The numbers for the headers.
        status: Status,
        /// The slow-start size of a background lease to ask for, if one is due.
        refill: Option<u32>,
    },
    /// The object said the window's budget is spent: 429 until `reset_ms`.
    Limited(Status),
    /// No token here: ask the object for a lease of up to `want`.
    Ask {
        /// Slow-start size of the next lease.
        want: u32,
    },
}

/// The decision after the object answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward.
    Allowed(Status),
    /// 429.
    Limited(Status),
}

impl Decision {
    /// The numbers for the headers.
    pub fn status(&self) -> Status {
        match self {
            Self::Allowed(s) | Self::Limited(s) => *s,
        }
    }
}

/// One key's lease in one isolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    /// Tokens left to spend.
    tokens: u32,
    /// The window's end: the lease is void from then on.
    reset_ms: u64,
    limit: u32,
    window: u32,
    /// The object's remaining budget at its latest answer (by serial).
    remote: u32,
    /// The serial of that answer.
    serial: u64,
    /// Tokens this isolate was granted for the key in this window (for slow start).
    granted: u32,
    /// With `remote == 0`: until when 429s are answered without asking the object.
    recheck_ms: u64,
    /// Size of the latest lease (a refill is due when half of it is spent).
    last: u32,
    /// Whether a background refill is in flight.
    refilling: bool,
}

impl Lease {
    /// Takes the object's remaining budget from `grant` unless a later answer (a higher
    /// serial: concurrent calls can answer out of order) already said it.
    fn note_remote(&mut self, grant: &Grant) {
        if grant.serial >= self.serial {
            self.remote = grant.remaining_after;
            self.serial = grant.serial;
        }
    }

    fn status(&self) -> Status {
        Status {
            limit: self.limit,
            window: self.window,
            remaining: self.remote.saturating_add(self.tokens),
            reset_ms: self.reset_ms,
        }
    }
}

/// The leases of one isolate. Every method is synchronous, so requests running concurrently in
/// the isolate (JavaScript runs one at a time between awaits) can never spend a token twice.
#[derive(Debug, Default)]
pub struct Leases {
    map: HashMap<KeyId, Lease>,
}

impl Leases {
    /// Spends a local token of `key` at `now_ms`, or says why not.
    pub fn take(&mut self, key: KeyId, now_ms: u64) -> Local {
        match self.map.get_mut(&key) {
            Some(lease) if now_ms < lease.reset_ms => {
                if lease.tokens > 0 {
                    lease.tokens -= 1;
                    let due = !lease.refilling
                        && lease.remote > 0
                        && u64::from(lease.tokens) * 2 <= u64::from(lease.last);
                    lease.refilling |= due;
                    Local::Allowed {
                        status: lease.status(),
                        refill: due.then(|| lease.granted.saturating_add(1)),
                    }
                } else if lease.remote == 0 && now_ms < lease.recheck_ms {
                    Local::Limited(lease.status())
                } else if lease.remote == 0 {
                    // One request asks again; the others keep their 429 until it has answered.
                    lease.recheck_ms = now_ms.saturating_add(EXHAUSTED_RECHECK_MS);
                    Local::Ask {
                        want: lease.granted.saturating_add(1),
                    }
                } else {
                    Local::Ask {
                        want: lease.granted.saturating_add(1),
                    }
                }
            }
            _ => Local::Ask { want: 1 },
        }
    }

    /// Records the object's answer at `now_ms` and decides the request that asked.
    pub fn record(&mut self, key: KeyId, grant: &Grant, now_ms: u64) -> Decision {
        if self.map.len() >= MAX_LOCAL_KEYS && !self.map.contains_key(&key) {
            self.map.retain(|_, l| now_ms < l.reset_ms);
            if self.map.len() >= MAX_LOCAL_KEYS {
                // Forgetting leases only strands tokens: under-admission, never over.
                self.map.clear();
            }
        }
        let fresh = Lease {
            tokens: 0,
            reset_ms: grant.reset_ms,
            limit: grant.limit,
            window: grant.window,
            remote: grant.remaining_after,
            serial: grant.serial,
            granted: 0,
            recheck_ms: 0,
            last: 0,
            refilling: false,
        };
        let lease = self.map.entry(key).or_insert(fresh);
        if lease.reset_ms < grant.reset_ms || now_ms >= lease.reset_ms {
            *lease = fresh;
        }
        if grant.granted == 0 {
            if grant.reset_ms == lease.reset_ms {
                lease.remote = 0;
                lease.serial = lease.serial.max(grant.serial);
                lease.recheck_ms = now_ms.saturating_add(EXHAUSTED_RECHECK_MS);
                return Decision::Limited(lease.status());
            }
            // A refusal for a window already over: refuse, keep the newer lease.
            return Decision::Limited(Status {
                limit: grant.limit,
                window: grant.window,
                remaining: 0,
                reset_ms: grant.reset_ms,
            });
        }
        if grant.reset_ms == lease.reset_ms && now_ms < grant.reset_ms {
            lease.tokens = lease.tokens.saturating_add(grant.granted - 1);
            lease.granted = lease.granted.saturating_add(grant.granted);
            lease.last = grant.granted;
            lease.note_remote(grant);
            lease.limit = grant.limit;
            lease.window = grant.window;
            Decision::Allowed(lease.status())
        } else {
            // The grant belongs to a window that has ended (or is older than the lease held):
            // its token was counted there, so this request may use it; the rest are void.
            Decision::Allowed(Status {
                limit: grant.limit,
                window: grant.window,
                remaining: grant.remaining_after,
                reset_ms: grant.reset_ms,
            })
        }
    }

    /// Records the answer to a background refill at `now_ms`: its tokens join the lease (none
    /// is spent: no request waited for it).
    pub fn refilled(&mut self, key: KeyId, grant: &Grant, now_ms: u64) {
        let Some(lease) = self.map.get_mut(&key) else {
            return;
        };
        if grant.reset_ms != lease.reset_ms || now_ms >= lease.reset_ms {
            // Another window's lease by now: its tokens are void, the refill is over.
            if grant.reset_ms <= lease.reset_ms {
                lease.refilling = false;
            }
            return;
        }
        lease.refilling = false;
        lease.note_remote(grant);
        if grant.granted == 0 {
            lease.recheck_ms = now_ms.saturating_add(EXHAUSTED_RECHECK_MS);
            return;
        }
        lease.tokens = lease.tokens.saturating_add(grant.granted);
        lease.granted = lease.granted.saturating_add(grant.granted);
        lease.last = grant.granted;
    }

    /// A background refill failed: the next request may start another.
    pub fn refill_failed(&mut self, key: KeyId) {
        if let Some(lease) = self.map.get_mut(&key) {
            lease.refilling = false;
        }
    }

    /// What this isolate knows of `key`'s window at `now_ms`, without spending anything.
    pub fn status(&self, key: KeyId, now_ms: u64) -> Option<Status> {
        self.map
            .get(&key)
            .filter(|l| now_ms < l.reset_ms)
            .map(Lease::status)
    }

    /// Drops `key`'s lease (its policy changed) and returns the unspent tokens and the end of
    /// their window, to give back to the object.
    pub fn surrender(&mut self, key: KeyId, now_ms: u64) -> Option<(u32, u64)> {
        self.map
            .remove(&key)
            .filter(|l| l.tokens > 0 && now_ms < l.reset_ms)
            .map(|l| (l.tokens, l.reset_ms))
    }

    /// Keys holding a lease (for tests and logs).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key holds a lease.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// 429 `rate_limit_exceeded` at `now_ms`, with `Retry-After` and the RateLimit header fields.
pub fn exceeded(status: &Status, now_ms: u64) -> Reply {
    let retry_after = status.seconds_to_reset(now_ms);
    let reset = status.reset_ms.div_ceil(1000);
    let unit = if status.window == 1 {
        "second".to_owned()
    } else {
        format!("{} seconds", status.window)
    };
    let mut problem = Problem::new(
        429,
        "rate_limit_exceeded",
        "Rate Limit Exceeded",
        format!(
            "This API key allows {} requests per {unit}, and this window's requests are used up. \
             The limit resets in {retry_after} s (at {reset}, Unix time). To send more, raise the \
             key's rate limit in the dashboard or through the API, or contact support for a \
             higher plan.",
            status.limit
        ),
    )
    .field("limit", status.limit)
    .field("window", status.window)
    .field("reset", reset)
    .field("retry_after", retry_after)
    .header("retry-after", retry_after.to_string());
    let limited = Status {
        remaining: 0,
        ..*status
    };
    for (name, value) in limited.headers(now_ms) {
        problem = problem.header(name, value);
    }
    problem.reply()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000_000;

    fn policy(limit: u32, window: u32) -> Policy {
        Policy::new(limit, window).unwrap()
    }

    fn key(n: u8) -> KeyId {
        KeyId([n; 16])
    }

    /// One isolate in front of one object: asks whenever its lease is spent, and refills in
    /// the background (here: at once) when due.
    fn request(leases: &mut Leases, obj: &mut Counter, default: Policy, now: u64) -> Decision {
        match leases.take(key(1), now) {
            Local::Allowed { status, refill } => {
                if let Some(want) = refill {
                    let grant = obj.take(default, want, now);
                    leases.refilled(key(1), &grant, now);
                }
                Decision::Allowed(status)
            }
            Local::Limited(s) => Decision::Limited(s),
            Local::Ask { want } => {
                let grant = obj.take(default, want, now);
                leases.record(key(1), &grant, now)
            }
        }
    }

    #[test]
    fn policies_parse() {
        assert_eq!(parse_policy("600/60"), Ok(policy(600, 60)));
        assert_eq!(parse_policy(" 5 / 1 "), Ok(policy(5, 1)));
        assert!(parse_policy("0/60").is_err());
        assert!(parse_policy("600").is_err());
        assert!(parse_policy("600/0").is_err());
        assert!(parse_policy("600/86401").is_err());
        assert!(parse_policy("x/60").is_err());
    }

    #[test]
    fn one_isolate_gets_exactly_the_limit_then_429_then_again() {
        for limit in [1, 2, 5, 17, 100, 600, 5_000] {
            let default = policy(limit, 60);
            let (mut leases, mut obj) = (Leases::default(), Counter::default());
            let mut allowed = 0;
            let mut last_remaining = None;
            for i in 0..limit as u64 + 50 {
                match request(&mut leases, &mut obj, default, T0 + i) {
                    Decision::Allowed(s) => {
                        allowed += 1;
                        // Remaining is exact with one isolate.
                        assert_eq!(s.remaining, limit - allowed, "limit {limit}");
                        last_remaining = Some(s.remaining);
                    }
                    Decision::Limited(s) => assert_eq!(s.remaining, 0),
                }
            }
            assert_eq!(allowed, limit);
            assert_eq!(last_remaining, Some(0));
            // The next window starts again.
            let next = policy(limit, 60).reset_ms(T0);
            assert!(matches!(
                request(&mut leases, &mut obj, default, next),
                Decision::Allowed(s) if s.remaining == limit - 1
            ));
        }
    }

    #[test]
    fn spent_budget_is_answered_locally() {
        let default = policy(3, 60);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        for _ in 0..3 {
            request(&mut leases, &mut obj, default, T0);
        }
        assert!(matches!(
            request(&mut leases, &mut obj, default, T0),
            Decision::Limited(_)
        ));
        // No more calls: the lease says the budget is spent...
        assert!(matches!(leases.take(key(1), T0 + 1), Local::Limited(_)));
        // ...until it is time to ask again (a raised limit reaches this isolate), and then
        // only one request asks.
        assert!(matches!(
            leases.take(key(1), T0 + EXHAUSTED_RECHECK_MS),
            Local::Ask { .. }
        ));
        assert!(matches!(
            leases.take(key(1), T0 + EXHAUSTED_RECHECK_MS),
            Local::Limited(_)
        ));
        // The limit is raised in another isolate; this one learns it at its next recheck.
        obj.set(policy(5, 60), 1, 0, 0, T0 + EXHAUSTED_RECHECK_MS);
        assert!(matches!(
            request(&mut leases, &mut obj, default, T0 + 2 * EXHAUSTED_RECHECK_MS),
            Decision::Allowed(s) if s.remaining == 1
        ));
    }

    #[test]
    fn lease_sizes_follow_the_rule() {
        let mut obj = Counter::default();
        let p = policy(1000, 60);
        // Slow start caps the first leases, then remaining / 16.
        let sizes: Vec<u32> = [1, 2, 4, 8, 16, 32, 64, 128]
            .iter()
            .map(|want| obj.take(p, *want, T0).granted)
            .collect();
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 58, 54]);
        assert_eq!(obj.count, 175);
        // The tail is one token at a time.
        let mut obj = Counter {
            count: 990,
            window_start_ms: p.window_start_ms(T0),
            window_end_ms: p.reset_ms(T0),
            ..Counter::default()
        };
        assert_eq!(obj.take(p, 100, T0).granted, 1);
        obj.count = 1000;
        let g = obj.take(p, 100, T0);
        assert_eq!((g.granted, g.remaining_after), (0, 0));
    }

    #[test]
    fn windows_roll_over_and_leases_expire() {
        let p = policy(10, 10);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        let start = p.window_start_ms(T0);
        for _ in 0..4 {
            request(&mut leases, &mut obj, p, start);
        }
        assert!(leases.status(key(1), start).is_some());
        let next = start + 10_000;
        assert_eq!(leases.status(key(1), next), None);
        assert_eq!(leases.take(key(1), next), Local::Ask { want: 1 });
        // A refill answered after its window ended adds nothing.
        let stale = Grant {
            granted: 5,
            limit: 10,
            window: 10,
            reset_ms: next,
            remaining_after: 1,
            serial: 0,
        };
        leases.refilled(key(1), &stale, next);
        assert_eq!(leases.status(key(1), next), None);
        let g = obj.take(p, 1, next);
        assert_eq!(
            (g.granted, g.remaining_after, g.reset_ms),
            (1, 9, next + 10_000)
        );
    }

    #[test]
    fn answers_out_of_order_keep_the_latest_remaining() {
        let p = policy(1000, 60);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        let first = obj.take(p, 1, T0);
        leases.record(key(1), &first, T0);
        // A background refill and a foreground lease in flight at once; the later answer
        // (higher serial) arrives first.
        let refill = obj.take(p, 2, T0);
        let ask = obj.take(p, 4, T0);
        assert!(ask.serial > refill.serial);
        let Decision::Allowed(after_ask) = leases.record(key(1), &ask, T0) else {
            panic!("allowed");
        };
        leases.refilled(key(1), &refill, T0);
        let status = leases.status(key(1), T0).unwrap();
        assert_eq!(status.remaining, 1000 - 2, "two requests admitted");
        assert_eq!(after_ask.remaining, ask.remaining_after + ask.granted - 1);
    }

    #[test]
    fn policy_versions_only_move_forward() {
        let mut obj = Counter::default();
        assert!(obj.set(policy(5, 60), 3, 0, 0, T0));
        assert!(!obj.set(policy(50, 60), 2, 0, 0, T0));
        assert!(!obj.set(policy(50, 60), 3, 0, 0, T0));
        assert_eq!(obj.policy, Some(policy(5, 60)));
        assert!(obj.set(policy(50, 60), 4, 0, 0, T0));
        assert_eq!(obj.policy(policy(1, 1)), policy(50, 60));
    }

    #[test]
    fn a_changed_limit_applies_at_once_with_returned_tokens() {
        let default = policy(600, 60);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        let mut allowed = 0;
        for _ in 0..40 {
            if matches!(
                request(&mut leases, &mut obj, default, T0),
                Decision::Allowed(_)
            ) {
                allowed += 1;
            }
        }
        assert!(obj.count > allowed, "a lease is outstanding");
        // The isolate that takes the push gives its lease back; the new limit counts what was
        // really admitted.
        let (returned, reset) = leases.surrender(key(1), T0).unwrap();
        assert!(obj.set(policy(45, 60), 1, returned, reset, T0));
        assert_eq!(obj.count, allowed);
        for _ in 0..100 {
            if matches!(
                request(&mut leases, &mut obj, default, T0),
                Decision::Allowed(_)
            ) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 45);
        // Raising it lets more through in the same window.
        leases.surrender(key(1), T0);
        assert!(obj.set(policy(50, 60), 2, 0, 0, T0));
        let mut more = 0;
        for _ in 0..100 {
            if matches!(
                request(&mut leases, &mut obj, default, T0),
                Decision::Allowed(_)
            ) {
                more += 1;
            }
        }
        assert_eq!(more, 5);
    }

    #[test]
    fn returned_tokens_of_another_window_are_ignored() {
        let p = policy(10, 60);
        let mut obj = Counter::default();
        obj.take(p, 5, T0);
        let before = obj.count;
        obj.set(p, 1, 3, p.reset_ms(T0) - 60_000, T0);
        assert_eq!(obj.count, before);
    }

    #[test]
    fn a_longer_window_keeps_the_count_of_the_window_inside_it() {
        let mut obj = Counter::default();
        let short = policy(100, 30);
        let start = 1_800_000_030_000; // a 30 s boundary inside a 60 s window
        obj.take(short, 5, start);
        assert_eq!(obj.count, 5);
        obj.set(policy(100, 60), 1, 0, 0, start + 1);
        let g = obj.take(short, 100, start + 2);
        assert_eq!(g.remaining_after + g.granted, 95);
    }

    #[test]
    fn headers_and_the_429_body() {
        let s = Status {
            limit: 600,
            window: 60,
            remaining: 17,
            reset_ms: T0 + 42_000,
        };
        assert_eq!(
            s.headers(T0 + 500),
            [
                ("ratelimit-policy", "\"default\";q=600;w=60".to_owned()),
                ("ratelimit", "\"default\";r=17;t=42".to_owned()),
            ]
        );
        let reply = exceeded(&s, T0 + 500);
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("42"));
        assert_eq!(reply.header("ratelimit"), Some("\"default\";r=0;t=42"));
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"default\";q=600;w=60")
        );
        assert_eq!(
            reply.header("content-type"),
            Some(crate::problem::PROBLEM_JSON)
        );
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["code"], "rate_limit_exceeded");
        assert_eq!(body["title"], "Rate Limit Exceeded");
        assert_eq!(body["status"], 429);
        assert_eq!(body["limit"], 600);
        assert_eq!(body["window"], 60);
        assert_eq!(body["reset"], (T0 + 42_000) / 1000);
        assert_eq!(body["retry_after"], 42);
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("600 requests per 60 seconds"), "{detail}");
        assert!(detail.contains("dashboard") && detail.contains("support"));
    }

    #[test]
    fn calls_round_trip_as_json() {
        let take = Call::Take {
            default: policy(600, 60),
            want: 4,
        };
        let text = serde_json::to_string(&take).unwrap();
        assert_eq!(
            text,
            r#"{"op":"take","default":{"limit":600,"window":60},"want":4}"#
        );
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), take);
    }

    /// Many isolates with random interleavings, random policy changes and window rollovers:
    /// the object never grants more than the limit in force per window, and admissions never
    /// exceed grants.
    #[derive(Debug, Clone)]
    enum Step {
        Request {
            isolate: usize,
            advance_ms: u64,
        },
        Change {
            limit: u32,
            from: usize,
        },
        /// The oldest pending background refill of an isolate completes (or fails).
        Refill {
            isolate: usize,
            fail: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            20 => (0..8usize, 0..400u64).prop_map(|(isolate, advance_ms)| Step::Request { isolate, advance_ms }),
            1 => (1..200u32, 0..8usize).prop_map(|(limit, from)| Step::Change { limit, from }),
            6 => (0..8usize, prop::bool::weighted(0.1)).prop_map(|(isolate, fail)| Step::Refill { isolate, fail }),
        ]
    }

    proptest! {
        #[test]
        fn never_over_admits(limit in 1..300u32, steps in prop::collection::vec(step(), 1..800)) {
            let default = policy(limit, 5);
            let mut obj = Counter::default();
            let mut isolates: Vec<Leases> = (0..8).map(|_| Leases::default()).collect();
            let mut now = T0;
            let mut version = 0;
            // Admitted requests per window start, and the largest limit in force in it.
            let mut admitted: HashMap<u64, u32> = HashMap::new();
            let mut granted: HashMap<u64, u32> = HashMap::new();
            let mut ceiling: HashMap<u64, u32> = HashMap::new();
            let mut current_limit = limit;
            let mut pending: Vec<Vec<u32>> = vec![Vec::new(); 8];
            for s in steps {
                match s {
                    Step::Refill { isolate, fail } => {
                        if pending[isolate].is_empty() {
                            continue;
                        }
                        let want = pending[isolate].remove(0);
                        if fail {
                            isolates[isolate].refill_failed(key(1));
                            continue;
                        }
                        let window = default.window_start_ms(now);
                        let g = obj.take(default, want, now);
                        *granted.entry(window).or_default() += g.granted;
                        let c = ceiling.entry(window).or_insert(current_limit);
                        *c = (*c).max(current_limit);
                        isolates[isolate].refilled(key(1), &g, now);
                    }
                    Step::Request { isolate, advance_ms } => {
                        now += advance_ms;
                        let window = default.window_start_ms(now);
                        let c = ceiling.entry(window).or_insert(current_limit);
                        *c = (*c).max(current_limit);
                        let leases = &mut isolates[isolate];
                        let decision = match leases.take(key(1), now) {
                            Local::Allowed { refill, .. } => {
                                if let Some(want) = refill {
                                    pending[isolate].push(want);
                                }
                                true
                            }
                            Local::Limited(_) => false,
                            Local::Ask { want } => {
                                let g = obj.take(default, want, now);
                                *granted.entry(window).or_default() += g.granted;
                                matches!(leases.record(key(1), &g, now), Decision::Allowed(_))
                            }
                        };
                        if decision {
                            *admitted.entry(window).or_default() += 1;
                        }
                    }
                    Step::Change { limit, from } => {
                        version += 1;
                        current_limit = limit;
                        let window = default.window_start_ms(now);
                        let c = ceiling.entry(window).or_insert(limit);
                        *c = (*c).max(limit);
                        let (returned, reset) = isolates[from].surrender(key(1), now).unwrap_or((0, 0));
                        if returned > 0 && reset == obj.window_end_ms && now < reset {
                            *granted.entry(window).or_default() -= returned;
                        }
                        obj.set(policy(limit, 5), version, returned, reset, now);
                    }
                }
            }
            for (window, n) in &admitted {
                let g = granted.get(window).copied().unwrap_or(0);
                prop_assert!(*n <= g, "admitted {n} > granted {g}");
                prop_assert!(*n <= ceiling[window], "admitted {n} > largest limit {}", ceiling[window]);
            }
            for (window, g) in &granted {
                prop_assert!(*g <= ceiling[window], "granted {g} > largest limit {}", ceiling[window]);
            }
        }

        #[test]
        fn one_isolate_is_exact(limit in 1..2000u32, extra in 0..100u32) {
            let default = policy(limit, 60);
            let (mut leases, mut obj) = (Leases::default(), Counter::default());
            let allowed = (0..limit + extra)
                .filter(|_| matches!(request(&mut leases, &mut obj, default, T0), Decision::Allowed(_)))
                .count();
            prop_assert_eq!(allowed as u32, limit);
        }
    }
}
