//! Usage metering: what the isolate counts for each request it can attribute to a key, its
//! buffer of pre-aggregated parts of a batch, and the `UsageMeter` Durable Object's open batch,
//! sealing and delivery schedule. Pure: the runtime glue (`stubs`, `objects`) moves the parts
//! and batches and carries out the storage writes; the wire format of a batch is
//! `shared::usage`.
//!
//! The request path only increments a counter: the isolate's [`Buffer`] keeps, per meter shard,
//! the counts per (key, minute, scope, outcome), each key's last use, and the activity entries
//! the batch would keep anyway (built only when kept). After the response (in `ctx.wait_until`)
//! it flushes each shard's part as one named [`Delivery`] to the meter object of that shard
//! (`meter-<key id mod shards>`), [`FLUSH_AFTER_MS`] after the first buffered request or when
//! a shard's part is full (see [`FLUSH_AT`]). The object merges a delivery into its open
//! [`Aggregate`] in durable storage ([`MeterState`] says which writes to make); its alarm seals
//! the open aggregate as the next numbered [`Batch`] and posts the sealed batches in order to
//! the control plane, deleting each only after a 2xx. A batch keeps its `(source, seq)` for
//! ever, so the control plane applies it once however often it is sent.
//!
//! - `buffer`: the isolate's per-shard parts and the deliveries they become;
//! - `aggregate`: the object's open batch, merged from deliveries and sealed as batches;
//! - `store`: the object's storage protocol, as the writes to make;
//! - `names`: object names, delivery names and storage keys.

mod aggregate;
mod buffer;
mod names;
mod store;

pub use aggregate::Aggregate;
pub use buffer::{Buffer, Delivery, Flush};
pub use names::*;
pub use store::{MeterState, Stored, backoff_ms};

use shared::key::KeyId;
use shared::usage::{MAX_ACTIVITY_PER_BATCH, Outcome, Reason};

use crate::problem::Reply;

/// The isolate flushes this long after the first request it buffered ...
pub const FLUSH_AFTER_MS: u64 = 1_000;
/// ... or at once when a shard's part holds this many counts (many keys), or a full activity
/// log ([`MAX_ACTIVITY_PER_BATCH`] entries: a flood of denials, which the batch may still have
/// room for). A part whose allowed entries reached their caps is not full: a flush would only
/// send entries the batch drops.
pub const FLUSH_AT: usize = 1_000;
/// First retry of a failed flush; the next ones wait twice as long each.
pub const RETRY_AFTER_MS: u64 = 500;
/// Most entries (counts and activity entries) an isolate holds while its meter objects cannot
/// be reached; the oldest failed deliveries are dropped whole (and logged) beyond it.
pub const MAX_BUFFERED: usize = 20_000;
/// Allowed (non-denial) activity entries kept per key per batch, and per key per flush of an
/// isolate.
pub const ALLOWED_ACTIVITY_PER_KEY: u32 = 100;
/// Denials (answers of the edge itself) kept per key and outcome per batch, and per flush of
/// an isolate: a flood of refused requests is counted exactly and sampled, never stored whole.
pub const DENIED_ACTIVITY_PER_KEY: u32 = 10;
/// Allowed activity entries kept per batch in all: the rest of the batch's room is for denials.
pub const MAX_ALLOWED_ACTIVITY_PER_BATCH: usize = MAX_ACTIVITY_PER_BATCH / 2;
/// The meter object seals and sends its open batch this long after the first delivery in it.
pub const SEAL_AFTER_MS: u64 = 1_000;
/// First retry delay after a failed delivery; doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 1_000;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// Who made a request and what it asked for: the parts of a request's record known before the
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key id.
    pub key_id: KeyId,
    /// The key's account.
    pub account_id: u64,
    /// The route's scope, when the route was looked up.
    pub scope: Option<&'static str>,
}

/// Request details for the activity log and the key's last use, borrowed from the request by
/// the glue: the buffer copies them only into what it keeps (an activity entry, a key's last
/// use when its client changed), so counting a request allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The method as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// `CF-Connecting-IP`.
    pub client_ip: Option<&'a str>,
    /// `User-Agent` as sent.
    pub user_agent: Option<&'a str>,
}

/// Where a request came from, as Cloudflare saw it (`request.cf`): only an activity entry
/// carries it, so the glue reads it (calls into the runtime) only for a request whose entry
/// the buffer keeps ([`Buffer::push`] asks for it then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// Cloudflare's country code.
    pub country: Option<String>,
    /// Cloudflare's data-center code.
    pub colo: Option<String>,
}

/// One answered request, as the buffer records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The status the client received.
    pub status: u16,
    /// Its class.
    pub outcome: Outcome,
    /// Why the edge answered it itself ([`crate::problem::Reply::reason`]); `None` for the
    /// origin's answer. A `Copy` code: nothing allocated per request.
    pub reason: Option<Reason>,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

impl Answered {
    /// A request the origin answered with `status`: no reason, the edge did not refuse it.
    pub const fn origin(status: u16, at_ms: u64) -> Self {
        Self {
            status,
            outcome: Outcome::of_origin_status(status),
            reason: None,
            at_ms,
        }
    }

    /// A request the edge answered itself with `reply`: never origin traffic whatever its
    /// status, with the reason of the edge's decision the reply carries.
    pub const fn edge(reply: &Reply, at_ms: u64) -> Self {
        Self {
            status: reply.status,
            outcome: Outcome::of_edge_status(reply.status),
            reason: reply.reason,
            at_ms,
        }
    }
}

/// The activity sampling rule of a batch, shared by the isolate's parts and the object's open
/// batch: up to [`ALLOWED_ACTIVITY_PER_KEY`] allowed requests per key (at most
/// [`MAX_ALLOWED_ACTIVITY_PER_BATCH`] in all, so denials always have room) and up to
/// [`DENIED_ACTIVITY_PER_KEY`] denials per key and outcome, at most [`MAX_ACTIVITY_PER_BATCH`]
/// entries in all. `kept_of_key` is the entries kept so far for the key (allowed) or for the
/// key and outcome (denials); both counters move when the entry is kept.
pub(crate) fn keep(
    entries: usize,
    outcome: Outcome,
    kept_of_key: &mut u32,
    allowed_kept: &mut usize,
) -> bool {
    if entries >= MAX_ACTIVITY_PER_BATCH {
        return false;
    }
    if outcome.is_allowed() {
        if *kept_of_key >= ALLOWED_ACTIVITY_PER_KEY
            || *allowed_kept >= MAX_ALLOWED_ACTIVITY_PER_BATCH
        {
            return false;
        }
        *allowed_kept += 1;
    } else if *kept_of_key >= DENIED_ACTIVITY_PER_KEY {
        return false;
    }
    *kept_of_key += 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::usage::{Activity, Batch, IsolateHealth, MAX_HEALTH_ISOLATES, MAX_PATH};

    const T0: u64 = 1_800_000_000_000;

    fn caller(n: u8) -> Caller {
        Caller {
            key_id: KeyId([n; 16]),
            account_id: 9,
            scope: Some("jobs:read"),
        }
    }

    fn seen() -> Seen<'static> {
        Seen {
            method: "GET",
            path: "/v1/jobs",
            client_ip: Some("203.0.113.7"),
            user_agent: Some("curl/8"),
        }
    }

    fn nl() -> Place {
        Place {
            country: Some("NL".into()),
            colo: Some("AMS".into()),
        }
    }

    fn answered(outcome: Outcome, at_ms: u64) -> Answered {
        let status = match outcome {
            Outcome::Unauthorized => 401,
            Outcome::Forbidden => 403,
            Outcome::RateLimited => 429,
            _ => 200,
        };
        Answered {
            status,
            outcome,
            reason: None,
            at_ms,
        }
    }

    /// Pushes one request of key `n` to a one-shard buffer.
    fn push(buf: &mut Buffer, n: u8, outcome: Outcome, at_ms: u64) -> Flush {
        buf.push(1, &caller(n), &seen(), answered(outcome, at_ms), nl)
    }

    /// Everything buffered, as one shard's delivery.
    fn part(buf: &mut Buffer) -> Delivery {
        let mut out = buf.take(T0, "n");
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    fn seal(agg: &mut Aggregate) -> Batch {
        agg.seal("meter-0-ab", 7).0
    }

    fn report(isolate: &str, at_ms: u64, limiter_failures: u64) -> IsolateHealth {
        IsolateHealth {
            isolate: isolate.into(),
            at_ms,
            limiter_failures,
            shard_age_secs: Some(5),
        }
    }

    #[test]
    fn a_batch_carries_each_isolates_latest_report_bounded() {
        let mut agg = Aggregate::default();
        let mut deliver = |health: Option<IsolateHealth>| {
            let mut buf = Buffer::default();
            push(&mut buf, 1, Outcome::Success, T0);
            let mut d = part(&mut buf);
            d.health = health;
            agg.merge(d);
        };
        deliver(Some(report("a", T0 + 2, 3)));
        // An older report (a retried delivery) never replaces a newer one.
        deliver(Some(report("a", T0 + 1, 1)));
        deliver(None);
        deliver(Some(report("b", T0, 0)));
        let batch = seal(&mut agg);
        let health = batch.health.unwrap();
        assert_eq!(health.meter_retries, 0);
        assert_eq!(
            health.isolates,
            [report("a", T0 + 2, 3), report("b", T0, 0)]
        );
        // Sealed: the next batch starts without reports, and one without any has no field.
        let mut buf = Buffer::default();
        push(&mut buf, 1, Outcome::Success, T0);
        agg.merge(part(&mut buf));
        assert_eq!(seal(&mut agg).health, None);
        // Many isolates: the batch keeps the most recent ones, at most the cap.
        for i in 0..(MAX_HEALTH_ISOLATES as u64 + 10) {
            let mut buf = Buffer::default();
            push(&mut buf, 1, Outcome::Success, T0);
            let mut d = part(&mut buf);
            d.health = Some(report(&format!("i{i}"), T0 + i, 0));
            agg.merge(d);
        }
        let isolates = seal(&mut agg).health.unwrap().isolates;
        assert_eq!(isolates.len(), MAX_HEALTH_ISOLATES);
        assert!(isolates.iter().all(|h| h.at_ms >= T0 + 10));
    }

    #[test]
    fn a_sealed_batch_reports_the_deliveries_that_failed_since_the_last() {
        let mut state = MeterState::default();
        let mut buf = Buffer::default();
        push(&mut buf, 1, Outcome::Success, T0);
        state.record(part(&mut buf), || "ab".into(), T0).unwrap();
        state.retries = 2;
        let sealed = state.seal().unwrap().unwrap();
        let batch: Batch = serde_json::from_str(&sealed.writes[0].1).unwrap();
        assert_eq!(batch.health.unwrap().meter_retries, 2);
        assert_eq!(state.retries, 0);
    }

    #[test]
    fn activity_entries_carry_attribution_and_truncate() {
        let (user_agent, path) = ("é".repeat(200), "/".repeat(600));
        let mut s = seen();
        s.user_agent = Some(&user_agent);
        s.path = &path;
        let mut buf = Buffer::default();
        buf.push(1, &caller(1), &s, answered(Outcome::RateLimited, T0), nl);
        let unscoped = Caller {
            scope: None,
            ..caller(1)
        };
        buf.push(
            1,
            &unscoped,
            &s,
            answered(Outcome::Unauthorized, T0 + 1),
            nl,
        );
        let d = part(&mut buf);
        let a = &d.activity[0];
        assert_eq!(a.key_id, KeyId([1; 16]));
        assert_eq!((a.account_id, a.status, a.at_ms), (9, 429, T0));
        assert_eq!(a.user_agent.as_ref().unwrap().len(), 256);
        assert_eq!(a.path.len(), MAX_PATH);
        assert_eq!(a.country.as_deref(), Some("NL"));
        let scopes: Vec<Option<&str>> = d.counts.iter().map(|c| c.scope.as_deref()).collect();
        assert_eq!(scopes, [None, Some("jobs:read")], "sorted");
        assert_eq!(d.last_used[0].user_agent.as_ref().unwrap().len(), 256);
        assert_eq!(d.last_used[0].at_ms, T0 + 1);
    }

    /// The edge's own reason for each refusal of an owned key rides from its decision, through
    /// the reply, into the key's activity entry (and the delivery's JSON to the meter object);
    /// the origin's answer carries none. The client's body is not where it comes from: a
    /// revoked key's names no reason.
    #[test]
    fn each_refusal_carries_the_edges_own_reason_into_its_entry() {
        use crate::decide::{Incoming, RevocationStatus, decide};
        use crate::limit::{Status, exceeded, refused_exceeded};
        use shared::key::{self, Claims, Environment};
        use shared::scope::Permission;

        const NOW: u64 = 1_800_000_000;
        let cfg = crate::testing::config();
        let issue = |environment, expires_at| {
            let claims = Claims {
                kid: 1,
                account_id: 9,
                key_id: KeyId([5; 16]),
                environment,
                scopes: Permission::ReadOnly.scopes(),
                issued_at: NOW - 100,
                expires_at,
            };
            format!(
                "Bearer {}",
                key::issue(&claims, &cfg.keyring).unwrap().into_inner()
            )
        };
        let live = issue(Environment::Production, None);
        // Of another environment and also expired: the edge checks the environment first.
        let other = issue(Environment::Development, Some(NOW - 10));
        let expired = issue(Environment::Production, Some(NOW - 10));
        let refuse = |auth: &str, method, revocation: RevocationStatus| {
            let req = Incoming {
                method,
                path: "/v1/jobs",
                query: None,
                authorization: Some(auth),
            };
            let decided = decide(&req, &cfg, NOW, |_| revocation);
            assert!(decided.owner.is_some(), "{method} {auth}: attributed");
            decided.answer.unwrap_err()
        };
        let status = Status {
            limit: 10,
            window: 60,
            remaining: 0,
            reset_ms: NOW * 1000 + 5_000,
            retry_ms: NOW * 1000 + 5_000,
            per_minute: None,
        };
        let revoked = refuse(&live, "GET", RevocationStatus::Revoked);
        assert!(!revoked.body.contains("reason"), "{}", revoked.body);
        let cases = [
            (
                refuse(&other, "GET", RevocationStatus::Revoked),
                Some(Reason::WrongEnvironment),
            ),
            (revoked, Some(Reason::Revoked)),
            (
                refuse(&expired, "GET", RevocationStatus::Clear),
                Some(Reason::Expired),
            ),
            (
                refuse(&live, "POST", RevocationStatus::Clear),
                Some(Reason::InsufficientScope),
            ),
            (
                refuse(&live, "DELETE", RevocationStatus::Clear),
                Some(Reason::MethodNotAllowed),
            ),
            (
                refuse(&live, "GET", RevocationStatus::Unavailable),
                Some(Reason::RevocationListUnavailable),
            ),
            (
                exceeded(&status, NOW * 1000),
                Some(Reason::RateLimitExceeded),
            ),
            (
                refused_exceeded(&status, NOW * 1000),
                Some(Reason::RateLimitExceeded),
            ),
            (crate::problem::internal(), Some(Reason::InternalError)),
        ];
        let mut buf = Buffer::default();
        let mut want = Vec::new();
        for (n, (reply, reason)) in (1..).zip(&cases) {
            let answered = Answered::edge(reply, T0 + u64::from(n));
            assert_eq!(answered.reason, *reason, "{}", reply.body);
            buf.push(1, &caller(n), &seen(), answered, nl);
            want.push((KeyId([n; 16]), *reason));
        }
        // Admitted and forwarded: the origin's answer, whatever its status, has no reason.
        let req = Incoming {
            method: "GET",
            path: "/v1/jobs",
            query: None,
            authorization: Some(&live),
        };
        assert!(
            decide(&req, &cfg, NOW, |_| RevocationStatus::Clear)
                .answer
                .is_ok()
        );
        for (n, status) in [(100, 200), (101, 401), (102, 503)] {
            buf.push(1, &caller(n), &seen(), Answered::origin(status, T0), nl);
            want.push((KeyId([n; 16]), None));
        }
        let delivery = part(&mut buf);
        // The meter object reads the delivery from JSON.
        let delivery: Delivery =
            serde_json::from_str(&serde_json::to_string(&delivery).unwrap()).unwrap();
        let mut got: Vec<(KeyId, Option<Reason>)> = delivery
            .activity
            .iter()
            .map(|a| (a.key_id, a.reason))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        for a in &delivery.activity {
            if let Some(reason) = a.reason {
                assert_eq!(reason.outcome(), a.outcome, "{a:?}");
            } else {
                assert!(a.outcome.is_allowed(), "{a:?}");
            }
        }
    }

    /// `request.cf` is a call into the runtime: read for the kept activity entries only.
    #[test]
    fn the_place_is_read_only_for_kept_entries() {
        let mut buf = Buffer::default();
        let mut reads = 0;
        let total = ALLOWED_ACTIVITY_PER_KEY + 50;
        for i in 0..total {
            buf.push(
                1,
                &caller(1),
                &seen(),
                answered(Outcome::Success, T0 + u64::from(i)),
                || {
                    reads += 1;
                    nl()
                },
            );
        }
        let d = part(&mut buf);
        assert_eq!(reads, d.activity.len());
        assert_eq!(reads, ALLOWED_ACTIVITY_PER_KEY as usize);
        assert_eq!(d.dropped_activity, 50);
        assert!(d.activity.iter().all(|a| a.colo.as_deref() == Some("AMS")));
        assert_eq!(d.counts[0].n, u64::from(total));
    }

    #[test]
    fn counts_aggregate_by_key_minute_scope_and_outcome() {
        let mut buf = Buffer::default();
        for at in [T0, T0 + 1, T0 + 59_999, T0 + 60_000] {
            push(&mut buf, 1, Outcome::Success, at);
        }
        push(&mut buf, 1, Outcome::RateLimited, T0 + 2);
        push(&mut buf, 2, Outcome::Success, T0 + 3);
        let d = part(&mut buf);
        assert_eq!(d.requests(), 6);
        let mut agg = Aggregate::default();
        assert_eq!(agg.merge(d).len(), 6);
        let batch = seal(&mut agg);
        assert_eq!((batch.source.as_str(), batch.seq), ("meter-0-ab", 7));
        assert!(agg.is_empty());
        let n = |key: u8, minute: u64, outcome| {
            batch
                .counts
                .iter()
                .find(|c| {
                    c.key_id == KeyId([key; 16]) && c.minute == minute && c.outcome == outcome
                })
                .map_or(0, |c| c.n)
        };
        let m = T0 / 60_000;
        assert_eq!(n(1, m, Outcome::Success), 3);
        assert_eq!(n(1, m + 1, Outcome::Success), 1);
        assert_eq!(n(1, m, Outcome::RateLimited), 1);
        assert_eq!(n(2, m, Outcome::Success), 1);
        assert_eq!(batch.counts.len(), 4);
        assert_eq!(batch.last_used.len(), 2);
        let last1 = batch
            .last_used
            .iter()
            .find(|l| l.key_id == KeyId([1; 16]))
            .unwrap();
        assert_eq!(last1.at_ms, T0 + 60_000);
        assert_eq!(batch.activity.len(), 6);
    }

    #[test]
    fn last_use_is_the_latest_request_in_isolate_and_object() {
        let mut buf = Buffer::default();
        let mut s = seen();
        buf.push(1, &caller(1), &s, answered(Outcome::Success, T0 + 5), nl);
        s.client_ip = Some("198.51.100.1");
        // An older request (another request's clock) does not replace the latest.
        buf.push(1, &caller(1), &s, answered(Outcome::Success, T0 + 4), nl);
        let first = part(&mut buf);
        assert_eq!(first.last_used[0].client_ip.as_deref(), Some("203.0.113.7"));
        buf.push(1, &caller(1), &s, answered(Outcome::Success, T0 + 9), nl);
        let second = part(&mut buf);
        assert_eq!(
            second.last_used[0].client_ip.as_deref(),
            Some("198.51.100.1")
        );
        // Merged in either order, the batch says the latest.
        for parts in [[first.clone(), second.clone()], [second, first]] {
            let mut agg = Aggregate::default();
            for p in parts {
                agg.merge(p);
            }
            let batch = seal(&mut agg);
            assert_eq!(batch.last_used.len(), 1);
            assert_eq!(batch.last_used[0].at_ms, T0 + 9);
            assert_eq!(
                batch.last_used[0].client_ip.as_deref(),
                Some("198.51.100.1")
            );
        }
    }

    #[test]
    fn the_isolate_samples_allowed_requests_and_denials_per_key() {
        let mut buf = Buffer::default();
        for i in 0..150 {
            push(&mut buf, 1, Outcome::Success, T0 + i);
        }
        for i in 0..20 {
            push(&mut buf, 1, Outcome::Forbidden, T0 + i);
            push(&mut buf, 1, Outcome::Unauthorized, T0 + i);
        }
        let d = part(&mut buf);
        assert_eq!(d.activity.len(), 100 + 10 + 10);
        assert_eq!(d.dropped_activity, 50 + 10 + 10);
        assert_eq!(d.requests(), 190, "every request is counted");
        // The per-key allowance starts again with the next flush.
        for i in 0..150 {
            push(&mut buf, 1, Outcome::Success, T0 + i);
        }
        assert_eq!(part(&mut buf).activity.len(), 100);
        // Allowed entries take at most half of a part: denials always have room.
        for key in 0..20u8 {
            for i in 0..100 {
                push(&mut buf, key, Outcome::Success, T0 + i);
            }
        }
        for key in 0..100u8 {
            for i in 0..12 {
                push(&mut buf, key, Outcome::RateLimited, T0 + i);
            }
        }
        let d = part(&mut buf);
        assert_eq!(d.activity.len(), MAX_ACTIVITY_PER_BATCH);
        let denials = d.activity.iter().filter(|a| a.outcome.is_denial()).count();
        assert_eq!(denials, 500);
        assert_eq!(d.dropped_activity, 1500 + 700);
        assert_eq!(d.requests(), 2000 + 1200);
    }

    #[test]
    fn the_object_applies_the_caps_over_the_whole_batch() {
        // Two isolates' parts, each within its own caps: the batch still keeps 100 allowed
        // entries per key and 10 denials per key and outcome.
        let mut agg = Aggregate::default();
        let mut kept = 0;
        for isolate in 0..2 {
            let mut buf = Buffer::default();
            for i in 0..80 {
                push(&mut buf, 1, Outcome::Success, T0 + i);
            }
            for i in 0..10 {
                push(&mut buf, 1, Outcome::RateLimited, T0 + isolate * 100 + i);
            }
            kept += agg.merge(part(&mut buf)).len();
        }
        let batch = seal(&mut agg);
        assert_eq!(kept, 110);
        assert_eq!(batch.activity.len(), 110);
        assert_eq!(batch.dropped_activity, 70);
        assert_eq!(batch.counts.iter().map(|c| c.n).sum::<u64>(), 180);
        // Allowed entries of many keys fill half a batch; denials the other half.
        let mut agg = Aggregate::default();
        for key in 0..20u8 {
            let mut buf = Buffer::default();
            for i in 0..100 {
                push(&mut buf, key, Outcome::Success, T0 + i);
            }
            agg.merge(part(&mut buf));
        }
        for key in 0..100u8 {
            let mut buf = Buffer::default();
            for i in 0..10 {
                push(&mut buf, key, Outcome::RateLimited, T0 + i);
            }
            agg.merge(part(&mut buf));
        }
        let batch = seal(&mut agg);
        assert_eq!(batch.activity.len(), MAX_ACTIVITY_PER_BATCH);
        let denials = batch
            .activity
            .iter()
            .filter(|a| a.outcome.is_denial())
            .count();
        assert_eq!(denials, 500);
        assert_eq!(batch.dropped_activity, 1500 + 500);
        // The sampling state survives a restart of the object.
        let mut buf = Buffer::default();
        push(&mut buf, 1, Outcome::Forbidden, T0);
        let mut agg = Aggregate::default();
        agg.merge(part(&mut buf));
        let reloaded: Aggregate =
            serde_json::from_str(&serde_json::to_string(&agg).unwrap()).unwrap();
        assert_eq!(reloaded.sampled, agg.sampled);
    }

    #[test]
    fn chunks_belong_to_exactly_one_batch() {
        let mut agg = Aggregate::default();
        let mut stored: Vec<(u64, Vec<Activity>)> = Vec::new();
        let mut buf = Buffer::default();
        for delivery in 0..3 {
            for i in 0..4 {
                push(
                    &mut buf,
                    delivery as u8,
                    Outcome::Forbidden,
                    T0 + delivery * 10 + i,
                );
            }
            let kept = agg.merge(part(&mut buf));
            stored.push((agg.next_chunk(), kept));
        }
        // A restart: the aggregate comes back from storage, its activity from the chunks.
        let mut reloaded: Aggregate =
            serde_json::from_str(&serde_json::to_string(&agg).unwrap()).unwrap();
        assert!(reloaded.restore_chunks(stored.clone()).is_empty());
        let (batch, chunks) = reloaded.seal("s", 1);
        assert_eq!(batch.activity.len(), 12);
        assert_eq!(chunks, 0..3);
        assert_eq!((reloaded.chunk_floor, reloaded.chunk_next), (3, 3));
        // Chunks of the sealed batch left in storage are not counted again.
        push(&mut buf, 1, Outcome::Forbidden, T0 + 99);
        reloaded.merge(part(&mut buf));
        let n = reloaded.next_chunk();
        let mut later = stored;
        later.push((n, vec![]));
        let mut again: Aggregate =
            serde_json::from_str(&serde_json::to_string(&reloaded).unwrap()).unwrap();
        assert_eq!(again.restore_chunks(later), [0, 1, 2]);
        assert_eq!(chunk_number(&chunk_key(12)), Some(12));
        assert_eq!(chunk_number("batch/1"), None);
    }

    #[test]
    fn the_buffer_flushes_by_timer_or_size_and_keeps_failed_deliveries() {
        let mut buf = Buffer::default();
        assert_eq!(
            push(&mut buf, 1, Outcome::Success, T0),
            Flush::After(FLUSH_AFTER_MS)
        );
        // Allowed requests of one key add no entry once its sample is full: only the timer.
        for i in 1..10_000 {
            assert_eq!(
                push(&mut buf, 1, Outcome::Success, T0 + i % 100),
                Flush::Pending
            );
        }
        // A flood of denials of one key is sampled too: only the timer.
        for i in 0..1_000 {
            assert_eq!(
                push(&mut buf, 1, Outcome::RateLimited, T0 + i),
                Flush::Pending
            );
        }
        // Denials of many keys fill the activity log: flush at once, once.
        let mut now = Vec::new();
        for i in 0..1_000_u64 {
            let caller = Caller {
                key_id: KeyId(u128::from(1 + i / 10).to_be_bytes()),
                ..caller(0)
            };
            if buf.push(1, &caller, &seen(), answered(Outcome::Forbidden, T0), nl) == Flush::Now {
                now.push(i);
            }
        }
        let room = MAX_ACTIVITY_PER_BATCH as u64
            - ALLOWED_ACTIVITY_PER_KEY as u64
            - DENIED_ACTIVITY_PER_KEY as u64;
        assert_eq!(now, [room - 1]);
        let deliveries = buf.take(T0, "n1");
        assert!(buf.is_empty());
        assert_eq!(buf.len(), 0);
        assert_eq!(deliveries.len(), 1, "one shard: one delivery");
        assert_eq!(deliveries[0].requests(), 10_000 + 2_000);
        // Allowed requests of many keys fill their sample, not the buffer; their counts do.
        let mut now = Vec::new();
        for i in 0..FLUSH_AT as u64 {
            let key = KeyId(u128::from(i).to_be_bytes());
            let caller = Caller {
                key_id: key,
                ..caller(0)
            };
            if buf.push(1, &caller, &seen(), answered(Outcome::Success, T0), nl) == Flush::Now {
                now.push(i);
            }
        }
        assert_eq!(now, [FLUSH_AT as u64 - 1]);
        buf.take(T0, "n1");
        let mut buf = Buffer::default();
        for key in 0..8 {
            buf.push(4, &caller(key), &seen(), answered(Outcome::Success, T0), nl);
        }
        let deliveries = buf.take(T0, "n1");
        let shards: Vec<u16> = deliveries.iter().map(|d| d.shard).collect();
        assert_eq!(shards, [0, 1, 2, 3]);
        for d in &deliveries {
            assert!(d.counts.iter().all(|c| shard_of(c.key_id, 4) == d.shard));
        }
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "1800000000000-n1-1",
                "1800000000000-n1-2",
                "1800000000000-n1-3",
                "1800000000000-n1-4"
            ]
        );
        // A new request after a flush starts a new timer.
        assert_eq!(
            buf.push(4, &caller(3), &seen(), answered(Outcome::Success, T0), nl),
            Flush::After(FLUSH_AFTER_MS)
        );
        // A failed delivery is kept whole and sent again first, under the same name.
        let failed = deliveries[0].clone();
        assert!(
            !buf.restore(failed.clone()),
            "the pushed request already armed a timer"
        );
        assert_eq!(buf.len(), failed.counts.len() + failed.activity.len() + 2);
        let again = buf.take(T0 + 5_000, "n1");
        assert_eq!(again[0], failed);
        assert!(again[1].id.starts_with("1800000005000-n1-"));
        let mut empty = Buffer::default();
        assert!(empty.restore(failed));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_failed_deliveries() {
        let mut buf = Buffer::default();
        let mut failed = Vec::new();
        // Failed deliveries of 1 count and 100 activity entries each, one past the cap.
        for round in 0..(MAX_BUFFERED / 101) as u64 + 1 {
            let mut other = Buffer::default();
            for i in 0..100 {
                push(&mut other, 1, Outcome::Success, T0 + round * 1_000 + i);
            }
            let d = part(&mut other);
            failed.push(d.clone());
            buf.restore(d);
        }
        assert!(buf.len() <= MAX_BUFFERED);
        assert_eq!(buf.take_dropped(), 100, "one delivery of 100 requests went");
        // A new part is never dropped for an old one.
        push(&mut buf, 2, Outcome::Success, T0);
        let left = buf.take(T0, "n");
        assert_eq!(left.len(), failed.len());
        assert_eq!(left[0].activity[0].at_ms, T0 + 1_000, "the oldest went");
        assert_eq!(left.last().unwrap().requests(), 1);
    }

    #[test]
    fn delivery_names_sort_by_time() {
        let a = seen_key(&delivery_id(T0, "zz", 9));
        let b = seen_key(&delivery_id(T0 + 1, "aa", 1));
        assert!(a < b);
        assert!(a < seen_cutoff(T0 + DEDUPE_MS + 1));
        assert!(a >= seen_cutoff(T0 + DEDUPE_MS));
    }

    #[test]
    fn shards_and_names() {
        assert_eq!(shard_of(KeyId([0; 16]), 4), 0);
        let one = KeyId(1_u128.to_be_bytes());
        assert_eq!(shard_of(one, 4), 1);
        assert_eq!(shard_of(one, 0), 0);
        assert_eq!(object_name(3), "meter-3");
        assert_eq!(source_name(3, "00ff"), "meter-3-00ff");
        assert_eq!(batch_key(12), "batch/00000000000000000012");
        assert!(batch_key(9) < batch_key(10));
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=7).map(backoff_ms).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(u32::MAX), 30_000);
    }
}
