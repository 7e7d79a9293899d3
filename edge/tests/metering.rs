//! Property tests of usage metering end to end, natively: requests counted in isolates'
//! buffers, flushed as named parts (some lost, some stored without an answer, all retried),
//! merged by the meter object's own storage protocol run against a map (it remembers the names
//! it stored, restarts from its storage and seals batches) give exactly the counts of the
//! requests sent: none lost, none counted twice, every request either in the activity log or
//! counted as dropped, and the denials of each key sampled up to their cap.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use edge::meter::{
    self, Answered, Buffer, Caller, DENIED_ACTIVITY_PER_KEY, Delivery, MeterState, Seen, Stored,
};
use proptest::prelude::*;
use shared::key::KeyId;
use shared::usage::{Batch, MAX_ACTIVITY_PER_BATCH, Outcome};

const T0: u64 = 1_800_000_000_000;
const SHARDS: u16 = 3;
/// Answers: the origin's (200, 302, 404) and the edge's own (404, 502, 401, 403, 429).
const ANSWERS: [(u16, Outcome); 8] = [
    (200, Outcome::Success),
    (302, Outcome::Redirect),
    (404, Outcome::ClientError),
    (404, Outcome::EdgeRefused),
    (502, Outcome::EdgeError),
    (401, Outcome::Unauthorized),
    (403, Outcome::Forbidden),
    (429, Outcome::RateLimited),
];
const SCOPES: [Option<&str>; 3] = [None, Some("jobs:read"), Some("jobs:write")];

/// What happens to one delivery attempt.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Stored and acknowledged.
    Stored,
    /// Never reached the object.
    Lost,
    /// Stored, but the answer was lost: the isolate retries it.
    Unanswered,
}

#[derive(Debug, Clone)]
enum Op {
    /// A request of key `key` from isolate `isolate`, `at` ms after T0.
    Request {
        isolate: usize,
        key: u8,
        scope: usize,
        status: usize,
        at: u64,
    },
    /// Isolate `isolate` flushes; its deliveries meet `fates` in turn (cycled).
    Flush { isolate: usize, fates: Vec<Fate> },
    /// A meter object's alarm seals its open batch.
    Seal { shard: u16 },
    /// A meter object is evicted and loads again from its storage.
    Restart { shard: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    let fate = prop_oneof![Just(Fate::Stored), Just(Fate::Lost), Just(Fate::Unanswered)];
    prop_oneof![
        8 => (0..2_usize, 0..5_u8, 0..3_usize, 0..ANSWERS.len(), 0..180_000_u64).prop_map(
            |(isolate, key, scope, status, at)| Op::Request { isolate, key, scope, status, at }
        ),
        2 => (0..2_usize, proptest::collection::vec(fate, 1..4))
            .prop_map(|(isolate, fates)| Op::Flush { isolate, fates }),
        1 => (0..SHARDS).prop_map(|shard| Op::Seal { shard }),
        1 => (0..SHARDS).prop_map(|shard| Op::Restart { shard }),
    ]
}

/// A meter object: its memory, and its storage as a map, run by the object's own storage
/// protocol (`MeterState`): the writes it returns are what `objects::UsageMeter` puts.
#[derive(Default)]
struct Object {
    mem: Option<MeterState>,
    storage: BTreeMap<String, String>,
}

impl Object {
    /// The values under `prefix`, in key order, as `list` returns them.
    fn list(&self, prefix: &str) -> Vec<(String, String)> {
        self.storage
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn loaded(&mut self) -> &mut MeterState {
        if self.mem.is_none() {
            self.restart();
        }
        self.mem.as_mut().unwrap()
    }

    /// `UsageMeter::record`: a name it stored is acknowledged without counting it again.
    fn record(&mut self, delivery: Delivery) {
        if self.storage.contains_key(&meter::seen_key(&delivery.id)) {
            return;
        }
        let writes = self.loaded().record(delivery, || "x".into(), T0).unwrap();
        self.storage.extend(writes);
    }

    fn seal(&mut self) {
        if let Some(sealed) = self.loaded().seal().unwrap() {
            self.storage.extend(sealed.writes);
            for key in sealed.delete {
                self.storage.remove(&key);
            }
        }
    }

    /// An eviction: memory is gone, the object loads from its storage.
    fn restart(&mut self) {
        let stored = Stored {
            open: self.storage.get(meter::OPEN_KEY).cloned(),
            seq: self.storage.get(meter::SEQ_KEY).cloned(),
            source: self.storage.get(meter::SOURCE_KEY).cloned(),
            chunks: self.list(meter::CHUNK_PREFIX),
        };
        let (state, stale) = MeterState::load(stored).unwrap();
        assert!(
            stale.is_empty(),
            "sealed chunks are deleted with their seal"
        );
        self.mem = Some(state);
    }

    /// The sealed batches, in order.
    fn batches(&self) -> Vec<Batch> {
        self.list(meter::BATCH_PREFIX)
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect()
    }
}

type CountKey = (KeyId, u64, Option<String>, Outcome);

fn flush(buffer: &mut Buffer, objects: &mut [Object], fates: &[Fate], now_ms: u64, nonce: &str) {
    for (i, delivery) in buffer.take(now_ms, nonce).into_iter().enumerate() {
        let object = &mut objects[usize::from(delivery.shard)];
        match fates[i % fates.len()] {
            Fate::Stored => object.record(delivery),
            Fate::Lost => {
                buffer.restore(delivery);
            }
            Fate::Unanswered => {
                object.record(delivery.clone());
                buffer.restore(delivery);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_counted_exactly_once(ops in proptest::collection::vec(op(), 0..400)) {
        let mut buffers = [Buffer::default(), Buffer::default()];
        let mut objects: Vec<Object> = (0..SHARDS).map(|_| Object::default()).collect();
        let mut expected: HashMap<CountKey, u64> = HashMap::new();
        let mut latest: HashMap<KeyId, u64> = HashMap::new();
        let mut requests = 0_u64;
        let mut clock = T0;
        for op in ops {
            clock += 1;
            match op {
                Op::Request { isolate, key, scope, status, at } => {
                    let (status, outcome) = ANSWERS[status];
                    let caller = Caller {
                        key_id: KeyId([key; 16]),
                        account_id: u64::from(key) + 100,
                        scope: SCOPES[scope],
                    };
                    let (path, client_ip) = (format!("/v1/jobs/{at}"), format!("192.0.2.{}", at % 7));
                    let seen = Seen {
                        method: "GET",
                        path: &path,
                        client_ip: Some(&client_ip),
                        ..Seen::default()
                    };
                    let at_ms = T0 + at;
                    buffers[isolate].push(SHARDS, &caller, &seen, Answered { status, outcome, reason: None, at_ms }, meter::Place::default);
                    let id = caller.key_id;
                    *expected
                        .entry((id, at_ms / 60_000, caller.scope.map(str::to_owned), outcome))
                        .or_default() += 1;
                    let last = latest.entry(id).or_default();
                    *last = (*last).max(at_ms);
                    requests += 1;
                }
                Op::Flush { isolate, fates } => {
                    flush(&mut buffers[isolate], &mut objects, &fates, clock, &format!("i{isolate}"));
                }
                Op::Seal { shard } => objects[usize::from(shard)].seal(),
                Op::Restart { shard } => objects[usize::from(shard)].restart(),
            }
        }
        // Everything left is eventually delivered.
        for (isolate, buffer) in buffers.iter_mut().enumerate() {
            flush(buffer, &mut objects, &[Fate::Stored], clock, &format!("i{isolate}"));
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(buffer.take_dropped(), 0);
        }
        let mut counted: HashMap<CountKey, u64> = HashMap::new();
        let mut last_used: HashMap<KeyId, u64> = HashMap::new();
        let (mut in_activity, mut dropped) = (0_u64, 0_u64);
        for object in &mut objects {
            object.seal();
            for batch in &object.batches() {
                let mut keys = BTreeSet::new();
                for c in &batch.counts {
                    prop_assert!(c.n >= 1);
                    let key = (c.key_id, c.minute, c.scope.clone(), c.outcome);
                    prop_assert!(keys.insert(key.clone()), "one entry per count key in a batch");
                    *counted.entry(key).or_default() += c.n;
                }
                for l in &batch.last_used {
                    let at = last_used.entry(l.key_id).or_default();
                    *at = (*at).max(l.at_ms);
                }
                prop_assert!(batch.activity.len() <= MAX_ACTIVITY_PER_BATCH);
                in_activity += batch.activity.len() as u64;
                dropped += batch.dropped_activity;
                // Denials are sampled per key and outcome: as many as the batch counted, up to
                // the cap (fewer requests than a batch's room for them).
                let mut denied: HashMap<(KeyId, Outcome), u64> = HashMap::new();
                for c in batch.counts.iter().filter(|c| c.outcome.is_denial()) {
                    *denied.entry((c.key_id, c.outcome)).or_default() += c.n;
                }
                for ((key, outcome), n) in denied {
                    let kept = batch
                        .activity
                        .iter()
                        .filter(|a| a.key_id == key && a.outcome == outcome)
                        .count() as u64;
                    prop_assert_eq!(kept, n.min(u64::from(DENIED_ACTIVITY_PER_KEY)));
                }
            }
        }
        prop_assert_eq!(counted, expected);
        prop_assert_eq!(last_used, latest);
        prop_assert_eq!(in_activity + dropped, requests);
    }
}
