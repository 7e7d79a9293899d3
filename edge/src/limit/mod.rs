//! Per-key rate limits: the counter a `KeyLimiter` Durable Object keeps for one budget, the
//! leases it grants, the isolate-local spending of those leases, and the answers (429 and the
//! IETF RateLimit header fields) the worker builds from them. Pure: unit- and property-tested on
//! the host; `stubs` only carries the messages between an isolate and the object.
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
//!
//! - this module: the budgets and the messages between an isolate and an object ([`Call`],
//!   [`Taken`], [`Grant`]): the protocol both sides speak;
//! - `counter`: the object's side: its [`Counter`];
//! - `lease`: the isolate's side: its [`Leases`] and the [`Decision`] for each request;
//! - `answer`: what a request is told: [`Status`], its header fields, and the 429s.

mod answer;
mod counter;
mod lease;

pub use answer::{Status, exceeded, refused_exceeded};
pub use counter::{Counter, capped};
pub use lease::{Decision, Leases, Local};

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::limits::{CAP_SPAN, Policy};

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
        /// The budget's key id (hex on the wire).
        budget: KeyId,
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
        /// The budget's key id (hex on the wire).
        budget: KeyId,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

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
        successor.route(key(1));
        assert_eq!(successor.budget, Some(key(1)));
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
        let text = serde_json::to_string(&Taken::Redirect { budget: key(1) }).unwrap();
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
            Call::Route { budget: key(7) },
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
