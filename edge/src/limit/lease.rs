//! The isolate's side of a budget: the leases it holds, spent locally one token per request,
//! and the decision for each request.

// Keyed by key ids only the control plane mints (random) and the edge verified: no caller
// chooses them, so the fast unkeyed hash is safe (std's SipHash guards against chosen keys).
use rustc_hash::FxHashMap;

use shared::key::KeyId;

use super::*;

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
pub(super) struct Lease {
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

    pub(super) fn tokens(&self) -> u32 {
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
        // The common case, on every request: nothing has expired, nothing to allocate.
        if self.segments.iter().all(|s| now_ms < s.expires_ms) {
            return;
        }
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
    pub(super) map: FxHashMap<Budget, Lease>,
    /// Key → the first key of its rotation chain, learnt from [`Taken::Redirect`]. A key's
    /// budget never changes, so an entry never goes stale.
    routes: FxHashMap<KeyId, KeyId>,
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
