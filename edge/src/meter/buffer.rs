//! The isolate's buffer: per meter shard, the part of a batch its requests make, counted
//! without an allocation per request, and the named deliveries it flushes as.

use std::collections::BTreeMap;

// Keyed by verified key ids (random, minted by the control plane): the fast unkeyed hash is
// safe, no caller can choose colliding keys.
use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};
use shared::key::KeyId;
use shared::usage::{
    Activity, Count, IsolateHealth, LastUsed, MAX_ACTIVITY_PER_BATCH, MAX_CLIENT_IP, MAX_COLO,
    MAX_COUNTRY, MAX_METHOD, MAX_PATH, MAX_USER_AGENT, Outcome, truncate,
};

use super::{
    Answered, Caller, FLUSH_AFTER_MS, FLUSH_AT, MAX_BUFFERED, Place, Seen, delivery_id, keep,
    shard_of,
};

fn owned(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| truncate(t, max).to_owned())
}

fn replace_if_changed(slot: &mut Option<String>, text: Option<&str>, max: usize) {
    let text = text.map(|t| truncate(t, max));
    if slot.as_deref() != text {
        *slot = text.map(str::to_owned);
    }
}

/// The activity entry of a request (allocates: only for an entry that is kept).
fn activity(caller: &Caller, seen: &Seen<'_>, place: Place, answered: Answered) -> Activity {
    Activity {
        key_id: caller.key_id,
        account_id: caller.account_id,
        at_ms: answered.at_ms,
        method: truncate(seen.method, MAX_METHOD).to_owned(),
        path: truncate(seen.path, MAX_PATH).to_owned(),
        status: answered.status,
        outcome: answered.outcome,
        client_ip: owned(seen.client_ip, MAX_CLIENT_IP),
        country: owned(place.country.as_deref(), MAX_COUNTRY),
        colo: owned(place.colo.as_deref(), MAX_COLO),
        user_agent: owned(seen.user_agent, MAX_USER_AGENT),
        reason: answered.reason,
    }
}

/// What a count is kept under in the isolate: small `Copy` values, no allocation per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CountKey {
    key_id: KeyId,
    account_id: u64,
    minute: u64,
    scope: Option<&'static str>,
    outcome: Outcome,
}

/// A key's latest request in a part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Last {
    account_id: u64,
    at_ms: u64,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

/// One shard's requests not yet handed to its meter object: a batch in miniature.
#[derive(Debug, Default)]
struct Part {
    counts: FxHashMap<CountKey, u64>,
    last_used: FxHashMap<KeyId, Last>,
    activity: Vec<Activity>,
    allowed_of_key: FxHashMap<KeyId, u32>,
    denied_of_key: FxHashMap<(KeyId, Outcome), u32>,
    allowed_kept: usize,
    dropped_activity: u64,
}

impl Part {
    /// Counts one request; returns how many entries (counts and activity) it added. `place` is
    /// called only for a request whose activity entry is kept.
    fn add(
        &mut self,
        caller: &Caller,
        seen: &Seen<'_>,
        answered: Answered,
        place: impl FnOnce() -> Place,
    ) -> usize {
        let mut added = 0;
        let n = self
            .counts
            .entry(CountKey {
                key_id: caller.key_id,
                account_id: caller.account_id,
                minute: answered.at_ms / 60_000,
                scope: caller.scope,
                outcome: answered.outcome,
            })
            .or_insert_with(|| {
                added += 1;
                0
            });
        *n += 1;
        match self.last_used.get_mut(&caller.key_id) {
            Some(last) if last.at_ms > answered.at_ms => {}
            Some(last) => {
                last.account_id = caller.account_id;
                last.at_ms = answered.at_ms;
                // A key's requests mostly come from one client: allocate only on a change.
                replace_if_changed(&mut last.client_ip, seen.client_ip, MAX_CLIENT_IP);
                replace_if_changed(&mut last.user_agent, seen.user_agent, MAX_USER_AGENT);
            }
            None => {
                self.last_used.insert(
                    caller.key_id,
                    Last {
                        account_id: caller.account_id,
                        at_ms: answered.at_ms,
                        client_ip: owned(seen.client_ip, MAX_CLIENT_IP),
                        user_agent: owned(seen.user_agent, MAX_USER_AGENT),
                    },
                );
            }
        }
        let kept_of_key = if answered.outcome.is_allowed() {
            self.allowed_of_key.entry(caller.key_id).or_insert(0)
        } else {
            self.denied_of_key
                .entry((caller.key_id, answered.outcome))
                .or_insert(0)
        };
        if keep(
            self.activity.len(),
            answered.outcome,
            kept_of_key,
            &mut self.allowed_kept,
        ) {
            self.activity
                .push(activity(caller, seen, place(), answered));
            added += 1;
        } else {
            self.dropped_activity += 1;
        }
        added
    }

    fn into_delivery(self, shard: u16, id: String) -> Delivery {
        let mut counts: Vec<Count> = self
            .counts
            .into_iter()
            .map(|(k, n)| Count {
                key_id: k.key_id,
                account_id: k.account_id,
                minute: k.minute,
                scope: k.scope.map(str::to_owned),
                outcome: k.outcome,
                n,
            })
            .collect();
        counts.sort_by(|a, b| {
            (&a.key_id, a.minute, &a.scope, a.outcome)
                .cmp(&(&b.key_id, b.minute, &b.scope, b.outcome))
        });
        let mut last_used: Vec<LastUsed> = self
            .last_used
            .into_iter()
            .map(|(key_id, l)| LastUsed {
                key_id,
                account_id: l.account_id,
                at_ms: l.at_ms,
                client_ip: l.client_ip,
                user_agent: l.user_agent,
            })
            .collect();
        last_used.sort_by_key(|l| l.key_id);
        Delivery {
            shard,
            id,
            counts,
            last_used,
            activity: self.activity,
            dropped_activity: self.dropped_activity,
            health: None,
        }
    }
}

/// What the isolate should do after buffering a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Flush now (the buffer is full enough).
    Now,
    /// Start the timer: this is the first buffered request.
    After(u64),
    /// Nothing: a flush is already due.
    Pending,
}

/// The isolate's requests not yet handed to a meter object: one [`Part`] per shard, and the
/// deliveries that failed, kept whole to be sent again under their names.
#[derive(Debug, Default)]
pub struct Buffer {
    parts: BTreeMap<u16, Part>,
    /// Entries in `parts`.
    entries: usize,
    retry: Vec<Delivery>,
    /// Entries in `retry`.
    retry_entries: usize,
    counter: u64,
    timer: bool,
    now_due: bool,
    dropped: u64,
}

impl Buffer {
    /// Counts `caller`'s request, answered as `answered`, for meter shard
    /// `shard_of(key, shards)`, and says when to flush. `place` is called (the glue reads
    /// `request.cf`) only when the request's activity entry is kept: at most a few per key and
    /// batch, so almost never at a high request rate.
    pub fn push(
        &mut self,
        shards: u16,
        caller: &Caller,
        seen: &Seen<'_>,
        answered: Answered,
        place: impl FnOnce() -> Place,
    ) -> Flush {
        let shard = shard_of(caller.key_id, shards);
        let part = self.parts.entry(shard).or_default();
        self.entries += part.add(caller, seen, answered, place);
        let full = part.counts.len() >= FLUSH_AT || part.activity.len() >= MAX_ACTIVITY_PER_BATCH;
        self.trim();
        if full && !self.now_due {
            self.now_due = true;
            Flush::Now
        } else if !self.timer {
            self.timer = true;
            Flush::After(FLUSH_AFTER_MS)
        } else {
            Flush::Pending
        }
    }

    /// Drops the oldest failed deliveries, whole, while more than [`MAX_BUFFERED`] entries wait.
    /// New parts are never dropped: they flush when full.
    fn trim(&mut self) {
        while self.entries + self.retry_entries > MAX_BUFFERED && !self.retry.is_empty() {
            let old = self.retry.remove(0);
            self.retry_entries -= old.entries();
            self.dropped += old.requests();
        }
    }

    /// Takes everything to send: first the deliveries to retry (under their names), then one
    /// delivery per shard of the new parts, each named `delivery_id(now_ms, nonce, n)`. Also
    /// ends the timer: requests buffered after this start a new one.
    pub fn take(&mut self, now_ms: u64, nonce: &str) -> Vec<Delivery> {
        self.timer = false;
        self.now_due = false;
        self.entries = 0;
        self.retry_entries = 0;
        let mut out = std::mem::take(&mut self.retry);
        for (shard, part) in std::mem::take(&mut self.parts) {
            self.counter += 1;
            out.push(part.into_delivery(shard, delivery_id(now_ms, nonce, self.counter)));
        }
        out
    }

    /// Keeps a delivery that failed, to send again under the same name (the meter object
    /// ignores a name it has stored). Returns whether the caller should arm a timer to retry.
    pub fn restore(&mut self, delivery: Delivery) -> bool {
        self.retry_entries += delivery.entries();
        self.retry.push(delivery);
        self.trim();
        let arm = !self.timer && !self.is_empty();
        self.timer |= arm;
        arm
    }

    /// Ends the timer without flushing: the next request starts a new one.
    pub fn disarm(&mut self) {
        self.timer = false;
    }

    /// Requests dropped so far because the buffer was full (for the log).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Entries (counts and activity entries) buffered, new or to retry.
    pub fn len(&self) -> usize {
        self.entries + self.retry_entries
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.retry.is_empty()
    }
}

/// What a worker sends a meter object (JSON body of its fetch): one shard's part of a batch,
/// under a name unique to this isolate and flush, kept when the delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The object's shard number (it names its source after it).
    pub shard: u16,
    /// `<first attempt, ms, 13 digits>-<isolate nonce>-<counter>`.
    pub id: String,
    /// Requests per (key, minute, scope, outcome), one entry each.
    pub counts: Vec<Count>,
    /// Each key's latest request.
    pub last_used: Vec<LastUsed>,
    /// The activity entries the isolate kept.
    pub activity: Vec<Activity>,
    /// Requests the isolate left out of `activity`.
    pub dropped_activity: u64,
    /// The isolate's health when it sent this (`health`); absent from older isolates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<IsolateHealth>,
}

impl Delivery {
    /// The requests it counts.
    pub fn requests(&self) -> u64 {
        self.counts.iter().map(|c| c.n).sum()
    }

    /// Its size in buffer entries.
    fn entries(&self) -> usize {
        self.counts.len() + self.activity.len()
    }
}
