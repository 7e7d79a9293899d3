//! Per-key rate limits: the counter a `KeyLimiter` Durable Object keeps for one budget, the
//! leases it grants, the isolate-local spending of those leases, and the answers (429 and the
//! IETF RateLimit header fields) the worker builds from them. Pure: unit- and property-tested on
//! the host; `lib.rs` only carries the messages between an isolate and the object.
//!
//! The object is the only place that counts. It grants tokens in *leases*, never more than the
//! key's limit per window in total, so the edge never admits more than the limit (over-admission
//! is zero). An isolate spends a lease locally, one token per request, with no network call, and
//! asks the object again when the lease is spent. Tokens a lease still holds when it ends (or
//! when the isolate goes away) are lost unless the isolate hands them back with its next call:
//! the only error is under-admission, bounded by the lease rule:
//!
//! ```text
//! granted = min(remaining, max(1, remaining / 16), max(1, want))
//! want    = 1 + tokens this isolate holds or spent for the key in this window (slow start)
//! ```
//!
//! Two more rules make a budget what the product promises:
//!
//! - **One budget per rotation chain.** A key's requests count at the limiter of its
//!   [`Budget`]: the first key of its rotation chain, which the limits push names. The key's own
//!   object answers [`Taken::Redirect`] and the isolate remembers the route, so a key and its
//!   successor in grace spend one budget. Requests with a revoked or expired key count at a
//!   budget of their own ([`Budget::Refused`], [`REFUSED_KEY_POLICY`]): a leaked dead key is
//!   throttled without spending its successor's budget.
//! - **A per-minute cap over any 60 seconds.** With the plan's cap `C` pushed for the key, every
//!   grant is recorded with the time its lease ends, and the object grants only while the tokens
//!   of leases that ended less than 60 s ago (or have not ended) stay within `C`. A token is
//!   spent between its grant and its lease's end, so any 60 s span sees at most `C` admissions,
//!   whatever the window. Leases of a key whose window could let more than `C` into 60 s last
//!   [`CAPPED_LEASE_MS`] instead of to the end of the window, and an isolate measures that
//!   lifetime from the moment it sent the call, with its own clock, so it never spends a token
//!   after the object's lease end whatever the offset between the two clocks.
//!
//! `docs/rate-limits.md` has the arithmetic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::limits::{CAP_SPAN, Policy, PolicyError};

use crate::problem::{Problem, Reply};

/// Share of the remaining budget one lease may take, as a divisor.
pub const LEASE_DIVISOR: u32 = 16;

/// How long an isolate answers 429 from memory after the object said the budget is spent,
/// before it asks again (a limit raised in the control plane then reaches every isolate within
/// this time, not only at the next window).
pub const EXHAUSTED_RECHECK_MS: u64 = 1_000;

/// Most keys an isolate keeps leases (and budget routes) for before it forgets expired ones
/// (memory bound).
pub const MAX_LOCAL_KEYS: usize = 10_000;

/// The span of the per-minute cap, in milliseconds.
pub const CAP_SPAN_MS: u64 = CAP_SPAN as u64 * 1000;

/// How long a lease lasts when the per-minute cap can bind (see [`capped`]). Each token counts
/// against the cap from its grant until 60 s after its lease ends, so at the cap a key is
/// admitted `C` per 61 s: the price of spending without a call per request.
pub const CAPPED_LEASE_MS: u64 = 1_000;

/// Most lease ends a limiter remembers for the cap; beyond it the two earliest are merged into
/// one that ends at the later time (counted longer: never less safe).
pub const MAX_OUTSTANDING: usize = 256;

/// Most unspent parts of leases an isolate holds for one budget (a refill adds one).
const MAX_SEGMENTS: usize = 8;

/// The budget of requests made with a revoked or expired key (the edge's own choice: such a
/// key has no policy any more). Enough for a client to see its 401s, little for a flood.
pub const REFUSED_KEY_POLICY: Policy = Policy {
    limit: 60,
    window: 60,
};

/// Parses `"<limit>/<window seconds>"`, e.g. `"600/60"`.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let (limit, window) = text.trim().split_once('/').ok_or(PolicyError::Window)?;
    let limit: u32 = limit.trim().parse().map_err(|_| PolicyError::ZeroLimit)?;
    let window: u32 = window.trim().parse().map_err(|_| PolicyError::Window)?;
    Policy::new(limit, window)
}

/// Which limiter counts a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// A working key's budget: the limiter named by this key id (the first key of its rotation
    /// chain once the route is known, the key itself before).
    Key(KeyId),
    /// Requests made with this key after it was revoked or expired.
    Refused(KeyId),
}

impl Budget {
    /// The name of the budget's `KeyLimiter` object (`id_from_name`): the key id in hex, as
    /// before budgets existed, or `refused-<key id>`.
    pub fn object_name(self) -> String {
        match self {
            Self::Key(key) => key.to_string(),
            Self::Refused(key) => format!("refused-{key}"),
        }
    }
}

/// Tokens an isolate hands back unspent: the rest of the lease that ended at `lease_end_ms`
/// (the object's clock, as [`Grant::lease_end_ms`] named it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Return {
    /// The lease's end, as the object named it.
    pub lease_end_ms: u64,
    /// Tokens never spent.
    pub n: u32,
}

/// A message from an isolate to a `KeyLimiter` object (JSON body of its fetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Take a lease of up to `want` tokens; `default` applies when the budget has no policy.
    Take {
        /// The worker's `RATE_LIMIT_DEFAULT` ([`REFUSED_KEY_POLICY`] for a refused key).
        default: Policy,
        /// The most tokens the isolate wants (slow start).
        want: u32,
        /// Tokens of earlier leases the isolate will never spend.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        returned: Vec<Return>,
    },
    /// Store the budget's policy and per-minute cap (kept only if `version` is newer), after
    /// taking back `returned` tokens.
    Set {
        /// The new policy.
        policy: Policy,
        /// Its version.
        version: u64,
        /// The plan's per-minute cap, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_minute: Option<u32>,
        /// Unspent tokens the isolate that took the push surrendered.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        returned: Vec<Return>,
    },
    /// Remember that this key's requests count at `budget`'s limiter (a key's budget never
    /// changes, so repeating it is harmless).
    Route {
        /// The budget's key id, 32 lowercase hex digits.
        budget: String,
    },
}

/// The object's answer to [`Call::Take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Tokens granted, 0 when the budget is spent (in the window, or under the cap).
    pub granted: u32,
    /// The policy's limit.
    pub limit: u32,
    /// The policy's window, seconds.
    pub window: u32,
    /// When the window ends, Unix milliseconds (the object's clock).
    pub reset_ms: u64,
    /// What the object has left after this grant: in the window, and under the cap.
    pub remaining_after: u32,
    /// The object's count of answers so far: orders answers that arrive out of order.
    #[serde(default)]
    pub serial: u64,
    /// When the lease ends, the object's clock: names it when tokens are handed back.
    #[serde(default)]
    pub lease_end_ms: u64,
    /// How long the lease lasts from its grant, ms. The isolate's tokens are void this long
    /// after it sent the call (its own clock), so never after `lease_end_ms`.
    #[serde(default)]
    pub lifetime_ms: u64,
    /// With nothing left after this grant: ms until the object can grant again.
    #[serde(default)]
    pub retry_ms: u64,
    /// With nothing left after this grant: whether only the per-minute cap is spent (the window
    /// has budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_cap: bool,
    /// The per-minute cap in force, when it can bind (see [`capped`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
}

/// The object's answer to [`Call::Take`]: a lease, or where this key's budget is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Taken {
    /// The key's requests count at another key's limiter: ask that one.
    Redirect {
        /// The budget's key id, hex.
        budget: String,
    },
    /// A lease from this limiter.
    Granted(Grant),
}

/// The object's answer to [`Call::Set`] and [`Call::Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOutcome {
    /// Whether the policy was newer than the stored one and replaced it.
    pub applied: bool,
}

/// Tokens granted whose lease ends at `ends_ms`: they count against the per-minute cap until
/// 60 s after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    /// The lease end (object clock), also the name under which tokens come back.
    pub ends_ms: u64,
    /// Tokens granted with that end and not handed back.
    pub n: u32,
}

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
    pub budget: Option<String>,
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

    /// Forgets lease ends that no longer count against the cap at `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        self.outstanding
            .retain(|o| o.n > 0 && o.ends_ms.saturating_add(CAP_SPAN_MS) > now_ms);
    }

    /// Tokens that count against the cap at `now_ms`.
    fn cap_used(&self, now_ms: u64) -> u64 {
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
    pub fn route(&mut self, budget: &str) {
        self.budget = Some(budget.to_owned());
    }
}

/// The numbers the RateLimit header fields and a 429 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Requests per window.
    pub limit: u32,
    /// Window, seconds.
    pub window: u32,
    /// Requests left, as far as this isolate knows: in this window and under the cap.
    pub remaining: u32,
    /// When the window ends, Unix milliseconds.
    pub reset_ms: u64,
    /// When a refused request may succeed again (the window's end, or sooner when only the
    /// per-minute cap refused), Unix milliseconds.
    pub retry_ms: u64,
    /// The per-minute cap, if any.
    pub per_minute: Option<u32>,
}

impl Status {
    /// Whole seconds until the window ends, at least 1 while it lasts.
    pub fn seconds_to_reset(&self, now_ms: u64) -> u64 {
        self.reset_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    /// Whole seconds until a refused request may succeed, at least 1.
    pub fn seconds_to_retry(&self, now_ms: u64) -> u64 {
        self.retry_ms
            .min(self.reset_ms)
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured
    /// fields) at `now_ms`. A key with a per-minute cap lists it as a second policy.
    pub fn headers(&self, now_ms: u64) -> [(&'static str, String); 2] {
        let mut policy = format!("\"default\";q={};w={}", self.limit, self.window);
        if let Some(cap) = self.per_minute {
            policy.push_str(&format!(", \"minute\";q={cap};w={CAP_SPAN}"));
        }
        let t = if self.remaining == 0 {
            self.seconds_to_retry(now_ms)
        } else {
            self.seconds_to_reset(now_ms)
        };
        [
            ("ratelimit-policy", policy),
            (
                "ratelimit",
                format!("\"default\";r={};t={t}", self.remaining),
            ),
        ]
    }
}

/// What the isolate decides for one request without calling the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A token of the local lease was spent: go on. With `refill`, also ask the object for a
    /// lease of up to that many tokens in the background, then [`Leases::refilled`].
    Allowed {
        /// The numbers for the headers.
        status: Status,
        /// The slow-start size of a background lease to ask for, if one is due.
        refill: Option<u32>,
    },
    /// The object said the budget is spent: 429 until `retry_ms`.
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
    /// Go on.
    Allowed(Status),
    /// 429.
    Limited(Status),
    /// The lease ended before its answer arrived (a slow call, or a window that turned): its
    /// tokens go back; ask again.
    Void,
}

impl Decision {
    /// The numbers for the headers (none for [`Decision::Void`]).
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Allowed(s) | Self::Limited(s) => Some(*s),
            Self::Void => None,
        }
    }
}

/// Unspent tokens of one grant in an isolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    tokens: u32,
    /// The isolate's clock: the tokens are void from then on.
    expires_ms: u64,
    /// The object's name for the lease, for handing tokens back.
    lease_end_ms: u64,
}

/// One budget's lease in one isolate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    /// Unspent tokens by grant.
    segments: Vec<Segment>,
    /// The window's end (object clock): a lease of a later window replaces this one.
    reset_ms: u64,
    limit: u32,
    window: u32,
    per_minute: Option<u32>,
    /// The object's remaining budget at its latest answer (by serial).
    remote: u32,
    /// The serial of that answer.
    serial: u64,
    /// Tokens this isolate holds or spent for the budget in this window (for slow start).
    granted: u32,
    /// With `remote == 0`: until when 429s are answered without asking the object.
    recheck_ms: u64,
    /// With `remote == 0`: when a request may succeed again.
    retry_ms: u64,
    /// Size of the latest lease (a refill is due when half of it is spent).
    last: u32,
    /// Whether a background refill is in flight.
    refilling: bool,
    /// Tokens to hand back with the next call.
    returns: Vec<Return>,
}

impl Lease {
    fn new(grant: &Grant) -> Self {
        Self {
            segments: Vec::new(),
            reset_ms: grant.reset_ms,
            limit: grant.limit,
            window: grant.window,
            per_minute: grant.per_minute,
            remote: grant.remaining_after,
            serial: grant.serial,
            granted: 0,
            recheck_ms: 0,
            retry_ms: grant.reset_ms,
            last: 0,
            refilling: false,
            returns: Vec::new(),
        }
    }

    /// Takes the object's remaining budget from `grant` unless a later answer (a higher
    /// serial: concurrent calls can answer out of order) already said it.
    fn note_remote(&mut self, grant: &Grant) {
        if grant.serial >= self.serial {
            self.remote = grant.remaining_after;
            self.serial = grant.serial;
        }
    }

    fn tokens(&self) -> u32 {
        self.segments.iter().map(|s| s.tokens).sum()
    }

    /// Hands back `n` tokens this lease held of the grant that ends at `lease_end_ms`: they no
    /// longer count for slow start either.
    fn give_back(&mut self, lease_end_ms: u64, n: u32) {
        self.granted = self.granted.saturating_sub(n);
        self.hand_back(lease_end_ms, n);
    }

    /// Hands back `n` tokens of a grant that never joined the lease.
    fn hand_back(&mut self, lease_end_ms: u64, n: u32) {
        if n == 0 {
            return;
        }
        match self
            .returns
            .iter_mut()
            .find(|r| r.lease_end_ms == lease_end_ms)
        {
            Some(r) => r.n = r.n.saturating_add(n),
            None => self.returns.push(Return { lease_end_ms, n }),
        }
    }

    /// Moves the tokens of segments void at `now_ms` to the returns.
    fn expire(&mut self, now_ms: u64) {
        let mut kept = Vec::with_capacity(self.segments.len());
        for s in std::mem::take(&mut self.segments) {
            if now_ms < s.expires_ms {
                kept.push(s);
            } else {
                self.give_back(s.lease_end_ms, s.tokens);
            }
        }
        self.segments = kept;
    }

    /// Adds a segment, handing back the oldest when there are too many.
    fn add(&mut self, segment: Segment) {
        if segment.tokens == 0 {
            return;
        }
        self.segments.push(segment);
        if self.segments.len() > MAX_SEGMENTS {
            let old = self.segments.remove(0);
            self.give_back(old.lease_end_ms, old.tokens);
        }
    }

    /// Spends one token: from the segment that is void first.
    fn spend(&mut self) -> bool {
        let Some(s) = self
            .segments
            .iter_mut()
            .filter(|s| s.tokens > 0)
            .min_by_key(|s| s.expires_ms)
        else {
            return false;
        };
        s.tokens -= 1;
        self.segments.retain(|s| s.tokens > 0);
        true
    }

    fn status(&self) -> Status {
        Status {
            limit: self.limit,
            window: self.window,
            remaining: self.remote.saturating_add(self.tokens()),
            reset_ms: self.reset_ms,
            retry_ms: self.retry_ms,
            per_minute: self.per_minute,
        }
    }
}

/// The moment a lease from `grant` ends in the isolate's clock, for a call sent at `sent_ms`.
fn expiry(grant: &Grant, sent_ms: u64) -> u64 {
    if grant.lifetime_ms == 0 && grant.lease_end_ms == 0 {
        // An object from before lease lifetimes: valid to the window's end.
        grant.reset_ms
    } else {
        sent_ms.saturating_add(grant.lifetime_ms)
    }
}

/// When a request refused by `grant` (answered at `now_ms`) may succeed: the window's end, or
/// sooner when only the per-minute cap refused.
fn retry_at(grant: &Grant, now_ms: u64) -> u64 {
    if grant.by_cap {
        now_ms.saturating_add(grant.retry_ms).min(grant.reset_ms)
    } else {
        grant.reset_ms
    }
}

/// The leases of one isolate, and the budgets its keys count at. Every method is synchronous,
/// so requests running concurrently in the isolate (JavaScript runs one at a time between
/// awaits) can never spend a token twice.
#[derive(Debug, Default)]
pub struct Leases {
    map: HashMap<Budget, Lease>,
    /// Key → the first key of its rotation chain, learnt from [`Taken::Redirect`]. A key's
    /// budget never changes, so an entry never goes stale.
    routes: HashMap<KeyId, KeyId>,
}

impl Leases {
    /// The budget `key`'s requests count at, as far as this isolate knows.
    pub fn budget_of(&self, key: KeyId) -> Budget {
        Budget::Key(self.routes.get(&key).copied().unwrap_or(key))
    }

    /// Remembers that `key`'s requests count at `budget`'s limiter.
    pub fn route(&mut self, key: KeyId, budget: KeyId) {
        if self.routes.len() >= MAX_LOCAL_KEYS && !self.routes.contains_key(&key) {
            // Forgetting a route only costs one more redirect.
            self.routes.clear();
        }
        self.routes.insert(key, budget);
    }

    /// Spends a local token of `budget` at `now_ms`, or says why not.
    pub fn take(&mut self, budget: Budget, now_ms: u64) -> Local {
        let Some(lease) = self.map.get_mut(&budget) else {
            return Local::Ask { want: 1 };
        };
        lease.expire(now_ms);
        if now_ms >= lease.reset_ms {
            // The window is over: what is left is void (and was handed back above).
            return Local::Ask { want: 1 };
        }
        if lease.spend() {
            let tokens = lease.tokens();
            let due = !lease.refilling
                && lease.remote > 0
                && u64::from(tokens) * 2 <= u64::from(lease.last);
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

    /// The tokens to hand back with the next call to `budget`'s object (taken: a failed call
    /// loses them, which only under-admits).
    pub fn returns(&mut self, budget: Budget) -> Vec<Return> {
        self.map
            .get_mut(&budget)
            .map(|l| std::mem::take(&mut l.returns))
            .unwrap_or_default()
    }

    /// Records the object's answer to a call sent at `sent_ms`, at `now_ms` (both the
    /// isolate's clock), and decides the request that asked: it spends one token now.
    pub fn record(&mut self, budget: Budget, grant: &Grant, sent_ms: u64, now_ms: u64) -> Decision {
        if self.map.len() >= MAX_LOCAL_KEYS && !self.map.contains_key(&budget) {
            self.map.retain(|_, l| now_ms < l.reset_ms);
            if self.map.len() >= MAX_LOCAL_KEYS {
                // Forgetting leases only strands tokens: under-admission, never over.
                self.map.clear();
            }
        }
        let expires_ms = expiry(grant, sent_ms);
        let lease = self.map.entry(budget).or_insert_with(|| Lease::new(grant));
        if lease.reset_ms < grant.reset_ms || now_ms >= lease.reset_ms {
            // A new window: what the old lease held is void, and goes back.
            lease.expire(u64::MAX);
            let returns = std::mem::take(&mut lease.returns);
            *lease = Lease::new(grant);
            lease.returns = returns;
        }
        if grant.granted == 0 {
            let retry_ms = retry_at(grant, now_ms);
            if grant.reset_ms == lease.reset_ms {
                lease.remote = 0;
                lease.serial = lease.serial.max(grant.serial);
                lease.per_minute = grant.per_minute;
                lease.retry_ms = retry_ms;
                lease.recheck_ms =
                    now_ms.saturating_add(EXHAUSTED_RECHECK_MS.min(grant.retry_ms.max(1)));
                return Decision::Limited(lease.status());
            }
            // A refusal for a window already over: refuse, keep the newer lease.
            return Decision::Limited(Status {
                limit: grant.limit,
                window: grant.window,
                remaining: 0,
                reset_ms: grant.reset_ms,
                retry_ms,
                per_minute: grant.per_minute,
            });
        }
        if now_ms >= expires_ms {
            lease.hand_back(grant.lease_end_ms, grant.granted);
            return Decision::Void;
        }
        if grant.reset_ms == lease.reset_ms {
            lease.add(Segment {
                tokens: grant.granted - 1,
                expires_ms,
                lease_end_ms: grant.lease_end_ms,
            });
            lease.granted = lease.granted.saturating_add(grant.granted);
            lease.last = grant.granted;
            lease.note_remote(grant);
            lease.limit = grant.limit;
            lease.window = grant.window;
            lease.per_minute = grant.per_minute;
            if grant.serial >= lease.serial {
                lease.retry_ms = retry_at(grant, now_ms);
            }
            Decision::Allowed(lease.status())
        } else {
            // The grant belongs to an older window than the lease held: its token is still
            // valid (its lease has not ended), so this request may use it; the rest go back.
            lease.hand_back(grant.lease_end_ms, grant.granted - 1);
            Decision::Allowed(Status {
                limit: grant.limit,
                window: grant.window,
                remaining: grant.remaining_after,
                reset_ms: grant.reset_ms,
                retry_ms: grant.reset_ms,
                per_minute: grant.per_minute,
            })
        }
    }

    /// Records the answer to a background refill sent at `sent_ms`, at `now_ms`: its tokens
    /// join the lease (none is spent: no request waited for it).
    pub fn refilled(&mut self, budget: Budget, grant: &Grant, sent_ms: u64, now_ms: u64) {
        let Some(lease) = self.map.get_mut(&budget) else {
            return;
        };
        let expires_ms = expiry(grant, sent_ms);
        if grant.reset_ms != lease.reset_ms || now_ms >= lease.reset_ms || now_ms >= expires_ms {
            // Another window's lease by now, or a lease already over: its tokens are void.
            if grant.reset_ms <= lease.reset_ms {
                lease.refilling = false;
            }
            lease.hand_back(grant.lease_end_ms, grant.granted);
            return;
        }
        lease.refilling = false;
        lease.note_remote(grant);
        if grant.serial >= lease.serial {
            lease.retry_ms = retry_at(grant, now_ms);
        }
        if grant.granted == 0 {
            lease.recheck_ms =
                now_ms.saturating_add(EXHAUSTED_RECHECK_MS.min(grant.retry_ms.max(1)));
            lease.retry_ms = retry_at(grant, now_ms);
            return;
        }
        lease.add(Segment {
            tokens: grant.granted,
            expires_ms,
            lease_end_ms: grant.lease_end_ms,
        });
        lease.granted = lease.granted.saturating_add(grant.granted);
        lease.last = grant.granted;
    }

    /// A background refill failed: the next request may start another.
    pub fn refill_failed(&mut self, budget: Budget) {
        if let Some(lease) = self.map.get_mut(&budget) {
            lease.refilling = false;
        }
    }

    /// What this isolate knows of `budget`'s window at `now_ms`, without spending anything.
    pub fn status(&self, budget: Budget, now_ms: u64) -> Option<Status> {
        self.map
            .get(&budget)
            .filter(|l| now_ms < l.reset_ms)
            .map(|l| {
                let mut status = l.status();
                let live: u32 = l
                    .segments
                    .iter()
                    .filter(|s| now_ms < s.expires_ms)
                    .map(|s| s.tokens)
                    .sum();
                status.remaining = l.remote.saturating_add(live);
                status
            })
    }

    /// Drops `budget`'s lease (its policy changed) and returns every token it held unspent,
    /// to give back to the object.
    pub fn surrender(&mut self, budget: Budget) -> Vec<Return> {
        let Some(mut lease) = self.map.remove(&budget) else {
            return Vec::new();
        };
        lease.expire(u64::MAX);
        lease.returns
    }

    /// Budgets holding a lease (for tests and logs).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no budget holds a lease.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The window, in words.
fn window_words(window: u32) -> String {
    if window == 1 {
        "second".to_owned()
    } else {
        format!("{window} seconds")
    }
}

/// 429 `rate_limit_exceeded` at `now_ms`, with `Retry-After` and the RateLimit header fields.
pub fn exceeded(status: &Status, now_ms: u64) -> Reply {
    let retry_after = status.seconds_to_retry(now_ms);
    let reset = status.reset_ms.div_ceil(1000);
    let unit = window_words(status.window);
    let by_cap = status.retry_ms < status.reset_ms;
    let detail = match status.per_minute {
        Some(cap) if by_cap => format!(
            "This API key allows {} requests per {unit}, and at most {cap} in any {CAP_SPAN} \
             seconds, which are used up. Retry in {retry_after} s. To send more, contact \
             support for a higher plan.",
            status.limit
        ),
        _ => format!(
            "This API key allows {} requests per {unit}, and this window's requests are used up. \
             The limit resets in {retry_after} s (at {reset}, Unix time). To send more, raise the \
             key's rate limit in the dashboard or through the API, or contact support for a \
             higher plan.",
            status.limit
        ),
    };
    let mut problem = Problem::new(429, "rate_limit_exceeded", "Rate Limit Exceeded", detail)
        .field("limit", status.limit)
        .field("window", status.window)
        .field("reset", reset)
        .field("retry_after", retry_after)
        .header("retry-after", retry_after.to_string());
    if let Some(cap) = status.per_minute {
        problem = problem.field("max_per_minute", cap);
    }
    let limited = Status {
        remaining: 0,
        ..*status
    };
    for (name, value) in limited.headers(now_ms) {
        problem = problem.header(name, value);
    }
    problem.reply()
}

/// 429 for a request with a revoked or expired key over [`REFUSED_KEY_POLICY`]: `Retry-After`
/// only, no RateLimit fields (they would describe a policy the key no longer has) and nothing
/// about the key.
pub fn refused_exceeded(status: &Status, now_ms: u64) -> Reply {
    let retry_after = status.seconds_to_retry(now_ms);
    Problem::new(
        429,
        "rate_limit_exceeded",
        "Rate Limit Exceeded",
        format!(
            "Too many requests with a key that is not valid. Retry in {retry_after} s, with a \
             valid key."
        ),
    )
    .field("retry_after", retry_after)
    .header("retry-after", retry_after.to_string())
    .reply()
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

    const B: Budget = Budget::Key(KeyId([1; 16]));

    /// One isolate in front of one object, on one clock: asks whenever its lease is spent, and
    /// refills in the background (here: at once) when due.
    fn request(leases: &mut Leases, obj: &mut Counter, default: Policy, now: u64) -> Decision {
        match leases.take(B, now) {
            Local::Allowed { status, refill } => {
                if let Some(want) = refill {
                    let returned = leases.returns(B);
                    let grant = obj.take(default, want, &returned, now);
                    leases.refilled(B, &grant, now, now);
                }
                Decision::Allowed(status)
            }
            Local::Limited(s) => Decision::Limited(s),
            Local::Ask { want } => {
                let returned = leases.returns(B);
                let grant = obj.take(default, want, &returned, now);
                leases.record(B, &grant, now, now)
            }
        }
    }

    fn allowed(d: Decision) -> bool {
        matches!(d, Decision::Allowed(_))
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
                    Decision::Void => panic!("no lease ends early on one clock"),
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
        assert!(matches!(leases.take(B, T0 + 1), Local::Limited(_)));
        // ...until it is time to ask again (a raised limit reaches this isolate), and then
        // only one request asks.
        assert!(matches!(
            leases.take(B, T0 + EXHAUSTED_RECHECK_MS),
            Local::Ask { .. }
        ));
        assert!(matches!(
            leases.take(B, T0 + EXHAUSTED_RECHECK_MS),
            Local::Limited(_)
        ));
        // The limit is raised in another isolate; this one learns it at its next recheck.
        obj.set(policy(5, 60), 1, None, &[], T0 + EXHAUSTED_RECHECK_MS);
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
            .map(|want| obj.take(p, *want, &[], T0).granted)
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
        assert_eq!(obj.take(p, 100, &[], T0).granted, 1);
        obj.count = 1000;
        let g = obj.take(p, 100, &[], T0);
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
        assert!(leases.status(B, start).is_some());
        let next = start + 10_000;
        assert_eq!(leases.status(B, next), None);
        assert_eq!(leases.take(B, next), Local::Ask { want: 1 });
        // A refill answered after its window ended adds nothing, and hands its tokens back.
        let stale = Grant {
            granted: 5,
            limit: 10,
            window: 10,
            reset_ms: next,
            remaining_after: 1,
            serial: 0,
            lease_end_ms: next,
            lifetime_ms: 5_000,
            retry_ms: 0,
            by_cap: false,
            per_minute: None,
        };
        leases.refilled(B, &stale, next - 5_000, next);
        assert_eq!(leases.status(B, next), None);
        assert!(leases.returns(B).iter().any(|r| r.n == 5));
        let g = obj.take(p, 1, &[], next);
        assert_eq!(
            (g.granted, g.remaining_after, g.reset_ms),
            (1, 9, next + 10_000)
        );
    }

    #[test]
    fn answers_out_of_order_keep_the_latest_remaining() {
        let p = policy(1000, 60);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        let first = obj.take(p, 1, &[], T0);
        leases.record(B, &first, T0, T0);
        // A background refill and a foreground lease in flight at once; the later answer
        // (higher serial) arrives first.
        let refill = obj.take(p, 2, &[], T0);
        let ask = obj.take(p, 4, &[], T0);
        assert!(ask.serial > refill.serial);
        let Decision::Allowed(after_ask) = leases.record(B, &ask, T0, T0) else {
            panic!("allowed");
        };
        leases.refilled(B, &refill, T0, T0);
        let status = leases.status(B, T0).unwrap();
        assert_eq!(status.remaining, 1000 - 2, "two requests admitted");
        assert_eq!(after_ask.remaining, ask.remaining_after + ask.granted - 1);
    }

    #[test]
    fn policy_versions_only_move_forward() {
        let mut obj = Counter::default();
        assert!(obj.set(policy(5, 60), 3, None, &[], T0));
        assert!(!obj.set(policy(50, 60), 2, Some(10), &[], T0));
        assert!(!obj.set(policy(50, 60), 3, None, &[], T0));
        assert_eq!((obj.policy, obj.per_minute), (Some(policy(5, 60)), None));
        assert!(obj.set(policy(50, 60), 4, Some(6000), &[], T0));
        assert_eq!(obj.policy(policy(1, 1)), policy(50, 60));
        assert_eq!(obj.per_minute, Some(6000));
    }

    #[test]
    fn a_changed_limit_applies_at_once_with_returned_tokens() {
        let default = policy(600, 60);
        let (mut leases, mut obj) = (Leases::default(), Counter::default());
        let mut admitted = 0;
        for _ in 0..40 {
            admitted += u32::from(allowed(request(&mut leases, &mut obj, default, T0)));
        }
        assert!(obj.count > admitted, "a lease is outstanding");
        // The isolate that takes the push gives its lease back; the new limit counts what was
        // really admitted.
        let returned = leases.surrender(B);
        assert!(obj.set(policy(45, 60), 1, None, &returned, T0));
        assert_eq!(obj.count, admitted);
        for _ in 0..100 {
            admitted += u32::from(allowed(request(&mut leases, &mut obj, default, T0)));
        }
        assert_eq!(admitted, 45);
        // Raising it lets more through in the same window.
        let returned = leases.surrender(B);
        assert!(obj.set(policy(50, 60), 2, None, &returned, T0));
        let mut more = 0;
        for _ in 0..100 {
            more += u32::from(allowed(request(&mut leases, &mut obj, default, T0)));
        }
        assert_eq!(more, 5);
    }

    #[test]
    fn returned_tokens_of_another_window_are_ignored() {
        let p = policy(10, 60);
        let mut obj = Counter::default();
        obj.take(p, 5, &[], T0);
        let before = obj.count;
        let old = Return {
            lease_end_ms: p.reset_ms(T0) - 60_000,
            n: 3,
        };
        obj.set(p, 1, None, &[old], T0);
        assert_eq!(obj.count, before);
    }

    #[test]
    fn a_longer_window_keeps_the_count_of_the_window_inside_it() {
        let mut obj = Counter::default();
        let short = policy(100, 30);
        let start = 1_800_000_030_000; // a 30 s boundary inside a 60 s window
        obj.take(short, 5, &[], start);
        assert_eq!(obj.count, 5);
        obj.set(policy(100, 60), 1, None, &[], start + 1);
        let g = obj.take(short, 100, &[], start + 2);
        assert_eq!(g.remaining_after + g.granted, 95);
    }

    #[test]
    fn a_key_redirects_to_its_budget_and_the_isolate_remembers() {
        let mut successor = Counter::default();
        successor.route(&key(1).to_string());
        assert_eq!(
            successor.budget.as_deref(),
            Some(key(1).to_string().as_str())
        );
        let mut leases = Leases::default();
        assert_eq!(leases.budget_of(key(2)), Budget::Key(key(2)));
        leases.route(key(2), key(1));
        assert_eq!(leases.budget_of(key(2)), Budget::Key(key(1)));
        // The predecessor (the chain's first key) and its successor spend one lease.
        let p = policy(3, 60);
        let mut root = Counter::default();
        let mut admitted = 0;
        for i in 0..10u8 {
            let k = if i % 2 == 0 { key(1) } else { key(2) };
            let b = leases.budget_of(k);
            let d = match leases.take(b, T0) {
                Local::Allowed { .. } => Decision::Allowed(leases.status(b, T0).unwrap()),
                Local::Limited(s) => Decision::Limited(s),
                Local::Ask { want } => {
                    let returned = leases.returns(b);
                    let g = root.take(p, want, &returned, T0);
                    leases.record(b, &g, T0, T0)
                }
            };
            admitted += u32::from(allowed(d));
        }
        assert_eq!(admitted, 3);
        // A refused key's budget is its own object, never the chain's.
        assert_eq!(Budget::Key(key(1)).object_name(), key(1).to_string());
        assert_eq!(
            Budget::Refused(key(1)).object_name(),
            format!("refused-{}", key(1))
        );
        let text = serde_json::to_string(&Taken::Redirect {
            budget: key(1).to_string(),
        })
        .unwrap();
        assert_eq!(text, format!(r#"{{"budget":"{}"}}"#, key(1)));
        let grant = root.take(p, 1, &[], T0 + 60_000);
        let back: Taken =
            serde_json::from_str(&serde_json::to_string(&Taken::Granted(grant)).unwrap()).unwrap();
        assert_eq!(back, Taken::Granted(grant));
    }

    #[test]
    fn a_capped_key_gets_short_leases_and_no_more_than_the_cap_per_minute() {
        // 8,640,000 a day is the plan's 6,000 a minute on average; in one burst it would be
        // 1,440 minutes' worth.
        let day = policy(8_640_000, 86_400);
        assert!(capped(day, Some(6000)));
        assert!(
            capped(policy(6000, 60), Some(6000)),
            "two windows in a minute"
        );
        assert!(!capped(policy(3000, 60), Some(6000)));
        assert!(!capped(policy(600, 60), Some(6000)));
        assert!(
            capped(policy(100, 1), Some(6000)),
            "61 windows of one second"
        );
        assert!(!capped(day, None));

        let mut obj = Counter::default();
        obj.set(day, 1, Some(6000), &[], T0);
        let (mut leases, mut admitted) = (Leases::default(), 0_u32);
        for i in 0..20_000 {
            admitted += u32::from(allowed(request(&mut leases, &mut obj, day, T0 + i)));
        }
        assert!(admitted <= 6000, "{admitted} in 20 s");
        assert!(
            admitted >= 5_900,
            "{admitted}: tokens stranded by short leases"
        );
        // Requests answered from memory once the cap is spent say so too.
        let Local::Limited(s) = leases.take(B, T0 + 19_999) else {
            panic!("limited from memory");
        };
        assert!(
            s.retry_ms < s.reset_ms && s.retry_ms <= T0 + 61_000 + 20_000,
            "{s:?}"
        );
        let g = obj.take(day, 1, &[], T0 + 20_000);
        assert_eq!(g.granted, 0);
        assert!(g.by_cap && g.retry_ms > 0 && g.retry_ms <= 61_000, "{g:?}");
        assert!(g.lifetime_ms <= CAPPED_LEASE_MS);
        let Decision::Limited(s) = request(&mut leases, &mut obj, day, T0 + 20_001) else {
            panic!("limited by the cap");
        };
        let reply = exceeded(&s, T0 + 20_001);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["max_per_minute"], 6000);
        assert!(body["retry_after"].as_u64().unwrap() <= 61, "{body}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"default\";q=8640000;w=86400, \"minute\";q=6000;w=60")
        );
        // A minute after the leases ended, the cap has room again.
        let later = T0 + 20_000 + CAPPED_LEASE_MS + CAP_SPAN_MS;
        assert!(allowed(request(&mut leases, &mut obj, day, later)));
    }

    #[test]
    fn unspent_tokens_go_back_to_the_cap_and_the_window() {
        let day = policy(8_640_000, 86_400);
        let mut obj = Counter::default();
        obj.set(day, 1, Some(6000), &[], T0);
        let mut leases = Leases::default();
        // A burst grows the lease, then traffic pauses past its end.
        for i in 0..64 {
            request(&mut leases, &mut obj, day, T0 + i);
        }
        let held = obj.count;
        let later = T0 + 10 * CAPPED_LEASE_MS;
        assert!(allowed(request(&mut leases, &mut obj, day, later)));
        // The stranded tokens came back with the call: what counts is what was admitted and
        // what the isolate holds now.
        let holds = leases.map[&B].tokens();
        assert_eq!(obj.count, 65 + holds);
        assert!(obj.count < held + holds, "{} vs {held}", obj.count);
        assert_eq!(obj.cap_used(later), u64::from(obj.count));
    }

    #[test]
    fn a_lease_that_ends_before_its_answer_is_void() {
        let day = policy(8_640_000, 86_400);
        let mut obj = Counter::default();
        obj.set(day, 1, Some(6000), &[], T0);
        let mut leases = Leases::default();
        let g = obj.take(day, 1, &[], T0);
        // The answer took longer than the lease lasts.
        assert_eq!(
            leases.record(B, &g, T0, T0 + CAPPED_LEASE_MS),
            Decision::Void
        );
        let back = leases.returns(B);
        assert_eq!(
            back,
            [Return {
                lease_end_ms: g.lease_end_ms,
                n: 1
            }]
        );
        obj.take(day, 1, &back, T0 + CAPPED_LEASE_MS);
        assert_eq!(obj.count, 1, "only the second grant counts");
    }

    #[test]
    fn headers_and_the_429_body() {
        let s = Status {
            limit: 600,
            window: 60,
            remaining: 17,
            reset_ms: T0 + 42_000,
            retry_ms: T0 + 42_000,
            per_minute: None,
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
        // A refused key's 429 says nothing about a policy or the key.
        let refused = refused_exceeded(&s, T0 + 500);
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("retry-after"), Some("42"));
        assert_eq!(refused.header("ratelimit"), None);
        assert!(!refused.body.contains("600"), "{}", refused.body);
    }

    #[test]
    fn calls_round_trip_as_json() {
        let take = Call::Take {
            default: policy(600, 60),
            want: 4,
            returned: vec![],
        };
        let text = serde_json::to_string(&take).unwrap();
        assert_eq!(
            text,
            r#"{"op":"take","default":{"limit":600,"window":60},"want":4}"#
        );
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), take);
        let calls = [
            Call::Take {
                default: policy(60, 60),
                want: 2,
                returned: vec![Return {
                    lease_end_ms: T0,
                    n: 3,
                }],
            },
            Call::Set {
                policy: policy(5, 10),
                version: 9,
                per_minute: Some(6000),
                returned: vec![],
            },
            Call::Route {
                budget: key(7).to_string(),
            },
        ];
        for call in calls {
            let text = serde_json::to_string(&call).unwrap();
            assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call, "{text}");
        }
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

    /// The per-minute cap with many isolates whose clocks are off by up to ±2 s from the
    /// object's, calls that take up to 1.5 s, refills that complete late or fail, limit
    /// changes and windows of every length.
    #[derive(Debug, Clone)]
    enum CapStep {
        Request {
            isolate: usize,
            advance_ms: u64,
            latency_ms: u64,
        },
        Refill {
            isolate: usize,
            fail: bool,
        },
        Change {
            limit: u32,
            from: usize,
        },
    }

    fn cap_step() -> impl Strategy<Value = CapStep> {
        prop_oneof![
            30 => (0..6usize, prop_oneof![0..50u64, 0..2_000u64, Just(0)], prop_oneof![8 => 0..100u64, 1 => 0..1_500u64])
                .prop_map(|(isolate, advance_ms, latency_ms)| CapStep::Request { isolate, advance_ms, latency_ms }),
            8 => (0..6usize, prop::bool::weighted(0.1)).prop_map(|(isolate, fail)| CapStep::Refill { isolate, fail }),
            1 => (1..400u32, 0..6usize).prop_map(|(limit, from)| CapStep::Change { limit, from }),
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
            let returned_in = |granted: &mut HashMap<u64, u32>, obj: &Counter, back: &[Return], now: u64| {
                // What the object takes back from the current window.
                for r in back {
                    if r.lease_end_ms > obj.window_start_ms && r.lease_end_ms <= obj.window_end_ms && now < obj.window_end_ms {
                        let g = granted.entry(obj.window_start_ms).or_default();
                        *g = g.saturating_sub(r.n);
                    }
                }
            };
            for s in steps {
                match s {
                    Step::Refill { isolate, fail } => {
                        if pending[isolate].is_empty() {
                            continue;
                        }
                        let want = pending[isolate].remove(0);
                        if fail {
                            isolates[isolate].refill_failed(B);
                            continue;
                        }
                        let window = default.window_start_ms(now);
                        let back = isolates[isolate].returns(B);
                        obj.roll(obj.policy(default), now);
                        returned_in(&mut granted, &obj, &back, now);
                        let g = obj.take(default, want, &back, now);
                        *granted.entry(window).or_default() += g.granted;
                        let c = ceiling.entry(window).or_insert(current_limit);
                        *c = (*c).max(current_limit);
                        isolates[isolate].refilled(B, &g, now, now);
                    }
                    Step::Request { isolate, advance_ms } => {
                        now += advance_ms;
                        let window = default.window_start_ms(now);
                        let c = ceiling.entry(window).or_insert(current_limit);
                        *c = (*c).max(current_limit);
                        let leases = &mut isolates[isolate];
                        let decision = match leases.take(B, now) {
                            Local::Allowed { refill, .. } => {
                                if let Some(want) = refill {
                                    pending[isolate].push(want);
                                }
                                true
                            }
                            Local::Limited(_) => false,
                            Local::Ask { want } => {
                                let back = leases.returns(B);
                                obj.roll(obj.policy(default), now);
                                returned_in(&mut granted, &obj, &back, now);
                                let g = obj.take(default, want, &back, now);
                                *granted.entry(window).or_default() += g.granted;
                                allowed(leases.record(B, &g, now, now))
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
                        let back = isolates[from].surrender(B);
                        returned_in(&mut granted, &obj, &back, now);
                        obj.set(policy(limit, 5), version, None, &back, now);
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
                .filter(|_| allowed(request(&mut leases, &mut obj, default, T0)))
                .count();
            prop_assert_eq!(allowed as u32, limit);
        }

        /// No 60 seconds, aligned or not, admit more than the per-minute cap, whatever the
        /// window, in real time: the object's clock is the real one, each isolate's is off by
        /// a fixed amount, and a token is admitted at the real time its request is answered.
        #[test]
        fn no_minute_admits_more_than_the_cap(
            cap in 1..300u32,
            window in prop_oneof![Just(1u32), Just(7), Just(60), Just(90), Just(3600), Just(86_400)],
            per_minute_of_window in 1..3u32,
            offsets in prop::collection::vec(-2_000i64..2_000, 6),
            steps in prop::collection::vec(cap_step(), 1..1500),
        ) {
            // The largest limit the plan allows for the window (often above the cap's share).
            let limit = (u64::from(cap) * u64::from(window) * u64::from(per_minute_of_window) / 60).clamp(1, 1_000_000) as u32;
            let start = policy(limit, window);
            let mut obj = Counter::default();
            obj.set(start, 1, Some(cap), &[], T0);
            let mut version = 1;
            let mut isolates: Vec<Leases> = (0..6).map(|_| Leases::default()).collect();
            // Pending background refills: (want, sent at, isolate clock).
            let mut pending: Vec<Vec<(u32, u64)>> = vec![Vec::new(); 6];
            let mut t = T0;
            let local = |t: u64, i: usize| t.saturating_add_signed(offsets[i]);
            let mut admissions: Vec<u64> = Vec::new();
            for s in steps {
                match s {
                    CapStep::Request { isolate, advance_ms, latency_ms } => {
                        t += advance_ms;
                        let b = B;
                        match isolates[isolate].take(b, local(t, isolate)) {
                            Local::Allowed { refill, .. } => {
                                admissions.push(t);
                                if let Some(want) = refill {
                                    pending[isolate].push((want, local(t, isolate)));
                                }
                            }
                            Local::Limited(_) => {}
                            Local::Ask { want } => {
                                // The glue asks at most three times (a void lease asks again).
                                for _ in 0..3 {
                                    let sent = local(t, isolate);
                                    let back = isolates[isolate].returns(b);
                                    let g = obj.take(start, want, &back, t);
                                    t += latency_ms;
                                    match isolates[isolate].record(b, &g, sent, local(t, isolate)) {
                                        Decision::Allowed(_) => {
                                            admissions.push(t);
                                            break;
                                        }
                                        Decision::Limited(_) => break,
                                        Decision::Void => {}
                                    }
                                }
                            }
                        }
                    }
                    CapStep::Refill { isolate, fail } => {
                        if pending[isolate].is_empty() {
                            continue;
                        }
                        let (want, sent) = pending[isolate].remove(0);
                        if fail {
                            isolates[isolate].refill_failed(B);
                            continue;
                        }
                        let back = isolates[isolate].returns(B);
                        let g = obj.take(start, want, &back, t);
                        isolates[isolate].refilled(B, &g, sent, local(t, isolate));
                    }
                    CapStep::Change { limit, from } => {
                        version += 1;
                        let back = isolates[from].surrender(B);
                        obj.set(policy(limit.max(1), window), version, Some(cap), &back, t);
                    }
                }
            }
            admissions.sort_unstable();
            let mut first = 0;
            for (last, at) in admissions.iter().enumerate() {
                while admissions[first] + CAP_SPAN_MS <= *at {
                    first += 1;
                }
                let n = last - first + 1;
                prop_assert!(n <= cap as usize, "{n} admitted in 60 s from {} to {at}, cap {cap}", admissions[first]);
            }
        }
    }
}
