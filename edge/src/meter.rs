//! Usage metering: the event the worker records for each request it can attribute to a key, the
//! isolate's buffer of events, and the `UsageMeter` Durable Object's open batch, sealing and
//! delivery schedule. Pure: `lib.rs` moves the events and batches; the wire format of a batch
//! is `shared::usage`.
//!
//! Path of an event: the isolate buffers it in memory and flushes the buffer after the response
//! (in `ctx.wait_until`) to the meter object of the key's shard (`meter-<key id mod shards>`),
//! when it holds [`FLUSH_AT`] events or [`FLUSH_AFTER_MS`] after the first buffered event. The
//! object adds events to its open [`Aggregate`] in durable storage; its alarm seals the open
//! aggregate as the next numbered [`Batch`] and posts the sealed batches in order to the control
//! plane, deleting each only after a 2xx. A batch keeps its `(source, seq)` for ever, so the
//! control plane applies it once however often it is sent.

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::usage::{Activity, Batch, Count, LastUsed, MAX_ACTIVITY_PER_BATCH, Outcome, truncate};

/// The isolate flushes once it holds this many events.
pub const FLUSH_AT: usize = 64;
/// ... or this long after the first event it buffered.
pub const FLUSH_AFTER_MS: u64 = 500;
/// Most events an isolate holds while its meter objects cannot be reached; older ones are
/// dropped (and logged) beyond it.
pub const MAX_BUFFERED: usize = 20_000;
/// Allowed (non-denial) activity entries kept per key per batch; denials are always kept.
pub const ALLOWED_ACTIVITY_PER_KEY: u32 = 100;
/// Allowed activity entries kept per batch in all: the rest of the batch's room is for denials.
pub const MAX_ALLOWED_ACTIVITY_PER_BATCH: usize = MAX_ACTIVITY_PER_BATCH / 2;
/// The meter object seals and sends its open batch this long after the first event in it.
pub const SEAL_AFTER_MS: u64 = 1_000;
/// First retry delay after a failed delivery; doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 1_000;
/// Longest retry delay.
pub const MAX_BACKOFF_MS: u64 = 30_000;
/// Longest path kept in an activity entry, bytes.
pub const MAX_PATH: usize = 512;
/// Longest `User-Agent` kept, bytes.
pub const MAX_USER_AGENT: usize = 256;

/// One request, as the worker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The key id, 32 lowercase hex digits.
    pub key_id: String,
    /// The key's account.
    pub account_id: u64,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The method as sent.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status the client received.
    pub status: u16,
    /// Its class.
    pub outcome: Outcome,
    /// The route's scope, when the route was looked up.
    pub scope: Option<String>,
    /// `CF-Connecting-IP`.
    pub client_ip: Option<String>,
    /// Cloudflare's country code.
    pub country: Option<String>,
    /// Cloudflare's data-center code.
    pub colo: Option<String>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
}

/// Who made a request and what it asked for: the parts of an event known before the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key id.
    pub key_id: KeyId,
    /// The key's account.
    pub account_id: u64,
    /// The route's scope, when the route was looked up.
    pub scope: Option<&'static str>,
}

/// Request details an event carries, read from the request by the glue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The method as sent.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// `CF-Connecting-IP`.
    pub client_ip: Option<String>,
    /// Cloudflare's country code.
    pub country: Option<String>,
    /// Cloudflare's data-center code.
    pub colo: Option<String>,
    /// `User-Agent` as sent.
    pub user_agent: Option<String>,
}

/// How an answer of the edge itself is classified (an origin answer is
/// [`Outcome::of_origin_status`]).
pub fn outcome_of_edge_status(status: u16) -> Outcome {
    match status {
        401 => Outcome::Unauthorized,
        403 => Outcome::Forbidden,
        429 => Outcome::RateLimited,
        other => Outcome::of_origin_status(other),
    }
}

/// The event of `caller`'s request answered with `status` classified as `outcome`.
pub fn event(caller: &Caller, seen: &Seen, status: u16, outcome: Outcome, at_ms: u64) -> Event {
    Event {
        key_id: caller.key_id.to_string(),
        account_id: caller.account_id,
        at_ms,
        method: truncate(&seen.method, 16).to_owned(),
        path: truncate(&seen.path, MAX_PATH).to_owned(),
        status,
        outcome,
        scope: caller.scope.map(str::to_owned),
        client_ip: seen
            .client_ip
            .as_deref()
            .map(|ip| truncate(ip, 64).to_owned()),
        country: seen.country.as_deref().map(|c| truncate(c, 8).to_owned()),
        colo: seen.colo.as_deref().map(|c| truncate(c, 8).to_owned()),
        user_agent: seen
            .user_agent
            .as_deref()
            .map(|ua| truncate(ua, MAX_USER_AGENT).to_owned()),
    }
}

/// The meter shard of a key: `meter-<shard>` aggregates its events.
pub fn shard_of(key_id: &str, shards: u16) -> u16 {
    let id = KeyId::parse_hex(key_id).map_or(0, KeyId::as_u128);
    (id % u128::from(shards.max(1))) as u16
}

/// The name of meter object `shard`.
pub fn object_name(shard: u16) -> String {
    format!("meter-{shard}")
}

/// What the isolate should do after buffering an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Flush now (the buffer is full enough).
    Now,
    /// Start the timer: this is the first buffered event.
    After(u64),
    /// Nothing: a flush is already due.
    Pending,
}

/// The isolate's buffer of events not yet handed to a meter object.
#[derive(Debug, Default)]
pub struct Buffer {
    events: Vec<Event>,
    retry: Vec<Delivery>,
    counter: u64,
    timer: bool,
    dropped: u64,
}

impl Buffer {
    /// Buffers `event` and says when to flush.
    pub fn push(&mut self, event: Event) -> Flush {
        self.events.push(event);
        self.trim();
        if self.events.len() >= FLUSH_AT {
            Flush::Now
        } else if !self.timer {
            self.timer = true;
            Flush::After(FLUSH_AFTER_MS)
        } else {
            Flush::Pending
        }
    }

    /// Drops the oldest events beyond [`MAX_BUFFERED`] (deliveries to retry first).
    fn trim(&mut self) {
        while self.len() > MAX_BUFFERED {
            if let Some(first) = self.retry.first_mut() {
                first.events.remove(0);
                if first.events.is_empty() {
                    self.retry.remove(0);
                }
            } else {
                self.events.remove(0);
            }
            self.dropped += 1;
        }
    }

    /// Takes everything to send: first the deliveries to retry (under their names), then the
    /// new events grouped by meter shard, each group named `delivery_id(now_ms, nonce, n)`.
    /// Also ends the timer: events buffered after this start a new one.
    pub fn take(&mut self, shards: u16, now_ms: u64, nonce: &str) -> Vec<Delivery> {
        self.timer = false;
        let mut out = std::mem::take(&mut self.retry);
        let first_new = out.len();
        for event in self.events.drain(..) {
            let shard = shard_of(&event.key_id, shards);
            match out[first_new..].iter_mut().find(|d| d.shard == shard) {
                Some(d) => d.events.push(event),
                None => {
                    self.counter += 1;
                    out.push(Delivery {
                        shard,
                        id: delivery_id(now_ms, nonce, self.counter),
                        events: vec![event],
                    });
                }
            }
        }
        out
    }

    /// Keeps a delivery that failed, to send again under the same name (the meter object
    /// ignores a name it has stored). Returns whether the caller should arm a timer to retry.
    pub fn restore(&mut self, delivery: Delivery) -> bool {
        self.retry.push(delivery);
        self.trim();
        let arm = !self.timer && !self.is_empty();
        self.timer |= arm;
        arm
    }

    /// Ends the timer without flushing: the next event starts a new one.
    pub fn disarm(&mut self) {
        self.timer = false;
    }

    /// Events dropped so far because the buffer was full (for the log).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Events buffered, new or to retry.
    pub fn len(&self) -> usize {
        self.events.len() + self.retry.iter().map(|d| d.events.len()).sum::<usize>()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a worker sends a meter object (JSON body of its fetch): events for one shard, under a
/// name unique to this isolate and flush, kept when the delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The object's shard number (it names its source after it).
    pub shard: u16,
    /// `<first attempt, ms, 13 digits>-<isolate nonce>-<counter>`.
    pub id: String,
    /// The events.
    pub events: Vec<Event>,
}

/// How long a meter object remembers a delivery's name, so a retry of a delivery it stored
/// (whose answer was lost) is not counted twice.
pub const DEDUPE_MS: u64 = 600_000;

/// The name of a delivery first attempted at `at_ms` by the isolate `nonce`.
pub fn delivery_id(at_ms: u64, nonce: &str, n: u64) -> String {
    format!("{at_ms:013}-{nonce}-{n}")
}

/// The storage key recording that delivery `id` was stored; keys sort by first attempt time.
pub fn seen_key(id: &str) -> String {
    format!("seen/{id}")
}

/// Storage keys of delivery names older than [`DEDUPE_MS`] at `now_ms` sort below this.
pub fn seen_cutoff(now_ms: u64) -> String {
    format!("seen/{:013}", now_ms.saturating_sub(DEDUPE_MS))
}

/// Allowed activity entries kept for one key in the open batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sampled {
    key_id: String,
    n: u32,
}

/// The open batch of a meter object: what its next [`Batch`] will say.
///
/// Stored in two parts so a delivery of a few events does not rewrite a thousand activity
/// entries: the aggregate itself (counts, last use, sampling state: small) under one storage
/// key, and the activity entries each delivery kept as a numbered chunk ([`chunk_key`]).
/// Chunks `chunk_floor..chunk_next` belong to the open batch; sealing moves the floor up in the
/// same write that stores the batch, so a chunk is in exactly one batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Aggregate {
    counts: Vec<Count>,
    last_used: Vec<LastUsed>,
    dropped_activity: u64,
    sampled: Vec<Sampled>,
    allowed_kept: usize,
    /// First activity chunk of this batch.
    pub chunk_floor: u64,
    /// Number of the next activity chunk.
    pub chunk_next: u64,
    /// The activity entries of the chunks, in memory.
    #[serde(skip)]
    activity: Vec<Activity>,
}

impl Aggregate {
    /// Whether no event was added since the last seal.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds one event; returns its activity entry when the activity log keeps it.
    pub fn add(&mut self, e: &Event) -> Option<Activity> {
        let minute = e.at_ms / 60_000;
        match self.counts.iter_mut().find(|c| {
            c.minute == minute
                && c.outcome == e.outcome
                && c.key_id == e.key_id
                && c.scope == e.scope
        }) {
            Some(c) => c.n += 1,
            None => self.counts.push(Count {
                key_id: e.key_id.clone(),
                account_id: e.account_id,
                minute,
                scope: e.scope.clone(),
                outcome: e.outcome,
                n: 1,
            }),
        }
        let last = LastUsed {
            key_id: e.key_id.clone(),
            account_id: e.account_id,
            at_ms: e.at_ms,
            client_ip: e.client_ip.clone(),
            user_agent: e.user_agent.clone(),
        };
        match self.last_used.iter_mut().find(|l| l.key_id == e.key_id) {
            Some(l) if l.at_ms <= e.at_ms => *l = last,
            Some(_) => {}
            None => self.last_used.push(last),
        }
        self.sample(e)
    }

    /// Keeps every denial and up to [`ALLOWED_ACTIVITY_PER_KEY`] other requests per key (at
    /// most [`MAX_ALLOWED_ACTIVITY_PER_BATCH`] in all, so denials always have room), at most
    /// [`MAX_ACTIVITY_PER_BATCH`] entries in all.
    fn sample(&mut self, e: &Event) -> Option<Activity> {
        if self.activity.len() >= MAX_ACTIVITY_PER_BATCH {
            self.dropped_activity += 1;
            return None;
        }
        if e.outcome.is_allowed() {
            let i = match self.sampled.iter().position(|s| s.key_id == e.key_id) {
                Some(i) => i,
                None => {
                    self.sampled.push(Sampled {
                        key_id: e.key_id.clone(),
                        n: 0,
                    });
                    self.sampled.len() - 1
                }
            };
            if self.sampled[i].n >= ALLOWED_ACTIVITY_PER_KEY
                || self.allowed_kept >= MAX_ALLOWED_ACTIVITY_PER_BATCH
            {
                self.dropped_activity += 1;
                return None;
            }
            self.sampled[i].n += 1;
            self.allowed_kept += 1;
        }
        let entry = Activity {
            key_id: e.key_id.clone(),
            account_id: e.account_id,
            at_ms: e.at_ms,
            method: e.method.clone(),
            path: e.path.clone(),
            status: e.status,
            outcome: e.outcome,
            client_ip: e.client_ip.clone(),
            country: e.country.clone(),
            colo: e.colo.clone(),
            user_agent: e.user_agent.clone(),
        };
        self.activity.push(entry.clone());
        Some(entry)
    }

    /// Takes the number for the chunk of activity entries the current delivery kept.
    pub fn next_chunk(&mut self) -> u64 {
        let n = self.chunk_next;
        self.chunk_next += 1;
        n
    }

    /// Puts back, after a restart, the activity entries of stored chunks: those of this batch
    /// (`chunk_floor..chunk_next`), in chunk order. Returns the numbers of chunks that belong
    /// to no open batch (already sealed), for the caller to delete.
    pub fn restore_chunks(&mut self, mut chunks: Vec<(u64, Vec<Activity>)>) -> Vec<u64> {
        chunks.sort_by_key(|(n, _)| *n);
        let mut stale = Vec::new();
        self.activity.clear();
        for (n, entries) in chunks {
            if (self.chunk_floor..self.chunk_next).contains(&n) {
                self.activity.extend(entries);
            } else {
                stale.push(n);
            }
        }
        stale
    }

    /// Seals the aggregate as batch `seq` of `source`, leaving it empty with its chunk floor
    /// past every chunk the batch took. Returns the batch and the chunks to delete once the
    /// seal is stored.
    pub fn seal(&mut self, source: &str, seq: u64) -> (Batch, std::ops::Range<u64>) {
        let chunks = self.chunk_floor..self.chunk_next;
        let open = std::mem::replace(
            self,
            Self {
                chunk_floor: self.chunk_next,
                chunk_next: self.chunk_next,
                ..Self::default()
            },
        );
        let batch = Batch {
            source: source.to_owned(),
            seq,
            counts: open.counts,
            last_used: open.last_used,
            activity: open.activity,
            dropped_activity: open.dropped_activity,
        };
        (batch, chunks)
    }
}

/// The storage key of activity chunk `n`: zero-padded so a listing is in order.
pub fn chunk_key(n: u64) -> String {
    format!("act/{n:020}")
}

/// The chunk number of a storage key made by [`chunk_key`].
pub fn chunk_number(key: &str) -> Option<u64> {
    key.strip_prefix("act/")?.parse().ok()
}

/// The storage key of sealed batch `seq`: zero-padded so a listing is in `seq` order.
pub fn batch_key(seq: u64) -> String {
    format!("batch/{seq:020}")
}

/// The source name of meter `shard` with its persisted random part.
pub fn source_name(shard: u16, random_hex: &str) -> String {
    format!("meter-{shard}-{random_hex}")
}

/// The delay before the next delivery attempt after `failures` failed ones in a row.
pub fn backoff_ms(failures: u32) -> u64 {
    MIN_BACKOFF_MS
        .saturating_mul(1_u64 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn caller(n: u8) -> Caller {
        Caller {
            key_id: KeyId([n; 16]),
            account_id: 9,
            scope: Some("jobs:read"),
        }
    }

    fn seen() -> Seen {
        Seen {
            method: "GET".into(),
            path: "/v1/jobs".into(),
            client_ip: Some("203.0.113.7".into()),
            country: Some("NL".into()),
            colo: Some("AMS".into()),
            user_agent: Some("curl/8".into()),
        }
    }

    fn ev(n: u8, outcome: Outcome, at_ms: u64) -> Event {
        let status = match outcome {
            Outcome::Unauthorized => 401,
            Outcome::Forbidden => 403,
            Outcome::RateLimited => 429,
            _ => 200,
        };
        event(&caller(n), &seen(), status, outcome, at_ms)
    }

    #[test]
    fn edge_statuses_are_classified() {
        assert_eq!(outcome_of_edge_status(401), Outcome::Unauthorized);
        assert_eq!(outcome_of_edge_status(403), Outcome::Forbidden);
        assert_eq!(outcome_of_edge_status(429), Outcome::RateLimited);
        assert_eq!(outcome_of_edge_status(404), Outcome::ClientError);
        assert_eq!(outcome_of_edge_status(503), Outcome::ServerError);
        assert_eq!(outcome_of_edge_status(502), Outcome::ServerError);
    }

    #[test]
    fn events_carry_attribution_and_truncate() {
        let mut s = seen();
        s.user_agent = Some("é".repeat(200));
        let e = event(&caller(1), &s, 429, Outcome::RateLimited, T0);
        assert_eq!(e.key_id, KeyId([1; 16]).to_string());
        assert_eq!(e.account_id, 9);
        assert_eq!(e.scope.as_deref(), Some("jobs:read"));
        assert_eq!(e.user_agent.as_ref().unwrap().len(), 256);
        assert_eq!(e.country.as_deref(), Some("NL"));
        let unscoped = Caller {
            scope: None,
            ..caller(1)
        };
        assert_eq!(
            event(&unscoped, &seen(), 401, Outcome::Unauthorized, T0).scope,
            None
        );
    }

    #[test]
    fn counts_aggregate_by_key_minute_scope_and_outcome() {
        let mut agg = Aggregate::default();
        for at in [T0, T0 + 1, T0 + 59_999, T0 + 60_000] {
            agg.add(&ev(1, Outcome::Success, at));
        }
        agg.add(&ev(1, Outcome::RateLimited, T0 + 2));
        agg.add(&ev(2, Outcome::Success, T0 + 3));
        let (batch, _) = agg.seal("meter-0-ab", 7);
        assert_eq!((batch.source.as_str(), batch.seq), ("meter-0-ab", 7));
        assert!(agg.is_empty());
        let n = |key: u8, minute: u64, outcome| {
            batch
                .counts
                .iter()
                .find(|c| {
                    c.key_id == KeyId([key; 16]).to_string()
                        && c.minute == minute
                        && c.outcome == outcome
                })
                .map_or(0, |c| c.n)
        };
        let m = T0 / 60_000;
        assert_eq!(n(1, m, Outcome::Success), 3);
        assert_eq!(n(1, m + 1, Outcome::Success), 1);
        assert_eq!(n(1, m, Outcome::RateLimited), 1);
        assert_eq!(n(2, m, Outcome::Success), 1);
        assert_eq!(batch.counts.iter().map(|c| c.n).sum::<u64>(), 6);
        assert_eq!(batch.last_used.len(), 2);
        let last1 = batch
            .last_used
            .iter()
            .find(|l| l.key_id == KeyId([1; 16]).to_string())
            .unwrap();
        assert_eq!(last1.at_ms, T0 + 60_000);
        assert_eq!(batch.activity.len(), 6);
    }

    #[test]
    fn activity_keeps_denials_and_samples_the_rest() {
        let mut agg = Aggregate::default();
        let kept = (0..150)
            .filter_map(|i| agg.add(&ev(1, Outcome::Success, T0 + i)))
            .count();
        assert_eq!(kept, 100);
        for i in 0..20 {
            assert!(agg.add(&ev(1, Outcome::Forbidden, T0 + i)).is_some());
        }
        let (batch, _) = agg.clone().seal("s", 1);
        assert_eq!(batch.activity.len(), 120);
        assert_eq!(batch.dropped_activity, 50);
        // Allowed entries take at most half of a batch: denials always have room.
        let mut agg = Aggregate::default();
        for key in 0..20u8 {
            for i in 0..100 {
                agg.add(&ev(key, Outcome::Success, T0 + i));
            }
        }
        let (before, _) = agg.clone().seal("s", 1);
        assert_eq!(before.activity.len(), MAX_ALLOWED_ACTIVITY_PER_BATCH);
        assert_eq!(before.dropped_activity, 1500);
        for i in 0..600 {
            agg.add(&ev(3, Outcome::RateLimited, T0 + i));
        }
        let (batch, _) = agg.seal("s", 1);
        assert_eq!(batch.activity.len(), MAX_ACTIVITY_PER_BATCH);
        let denials = batch
            .activity
            .iter()
            .filter(|a| a.outcome.is_denial())
            .count();
        assert_eq!(denials, 500);
        assert_eq!(batch.dropped_activity, 1500 + 100);
        let total: u64 = batch.counts.iter().map(|c| c.n).sum();
        assert_eq!(total, 2000 + 600);
    }

    #[test]
    fn chunks_belong_to_exactly_one_batch() {
        let mut agg = Aggregate::default();
        let mut stored: Vec<(u64, Vec<Activity>)> = Vec::new();
        for delivery in 0..3 {
            let kept: Vec<Activity> = (0..4)
                .filter_map(|i| agg.add(&ev(1, Outcome::Forbidden, T0 + delivery * 10 + i)))
                .collect();
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
        reloaded.add(&ev(1, Outcome::Forbidden, T0 + 99));
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
    fn the_buffer_flushes_by_size_or_timer_and_keeps_failed_events() {
        let mut buf = Buffer::default();
        assert_eq!(
            buf.push(ev(1, Outcome::Success, T0)),
            Flush::After(FLUSH_AFTER_MS)
        );
        for i in 1..FLUSH_AT - 1 {
            assert_eq!(
                buf.push(ev(1, Outcome::Success, T0 + i as u64)),
                Flush::Pending
            );
        }
        assert_eq!(buf.push(ev(2, Outcome::Success, T0)), Flush::Now);
        let deliveries = buf.take(4, T0, "n1");
        assert!(buf.is_empty());
        let total: usize = deliveries.iter().map(|d| d.events.len()).sum();
        assert_eq!(total, FLUSH_AT);
        for d in &deliveries {
            assert!(d.events.iter().all(|e| shard_of(&e.key_id, 4) == d.shard));
        }
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["1800000000000-n1-1", "1800000000000-n1-2"]);
        // A new event after a flush starts a new timer.
        assert_eq!(
            buf.push(ev(3, Outcome::Success, T0)),
            Flush::After(FLUSH_AFTER_MS)
        );
        // A failed delivery is kept whole and sent again first, under the same name.
        let failed = deliveries[0].clone();
        assert!(
            !buf.restore(failed.clone()),
            "the pushed event already armed a timer"
        );
        assert_eq!(buf.len(), failed.events.len() + 1);
        let again = buf.take(4, T0 + 5_000, "n1");
        assert_eq!(again[0], failed);
        assert!(again[1].id.starts_with("1800000005000-n1-"));
        let mut empty = Buffer::default();
        assert!(empty.restore(failed));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let mut buf = Buffer::default();
        for i in 0..MAX_BUFFERED as u64 {
            buf.push(ev(1, Outcome::Success, T0 + i));
        }
        let mut all = buf.take(1, T0, "n");
        let old = all.remove(0);
        assert!(buf.restore(old));
        buf.push(ev(1, Outcome::Success, T0 + 99_999_999));
        assert_eq!(buf.len(), MAX_BUFFERED);
        assert_eq!(buf.take_dropped(), 1);
        let out = buf.take(1, T0, "n");
        assert_eq!(out[0].events[0].at_ms, T0 + 1, "the oldest event went");
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
        let id = KeyId([0; 16]).to_string();
        assert_eq!(shard_of(&id, 4), 0);
        let one = KeyId(1_u128.to_be_bytes()).to_string();
        assert_eq!(shard_of(&one, 4), 1);
        assert_eq!(shard_of(&one, 0), 0);
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
