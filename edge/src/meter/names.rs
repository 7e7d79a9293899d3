//! Names: of the meter objects, of the isolates' deliveries, and of the keys in an object's
//! storage (zero-padded, so a listing is in order).

use shared::key::KeyId;

/// Storage key of the open aggregate (JSON).
pub const OPEN_KEY: &str = "open";
/// Storage key of the number of the last sealed batch.
pub const SEQ_KEY: &str = "seq";
/// Storage key of the object's source name.
pub const SOURCE_KEY: &str = "source";
/// Prefix of the activity chunks' keys ([`chunk_key`]).
pub const CHUNK_PREFIX: &str = "act/";
/// Prefix of the sealed batches' keys ([`batch_key`]).
pub const BATCH_PREFIX: &str = "batch/";

/// The meter shard of a key: `meter-<shard>` aggregates its requests.
pub fn shard_of(key_id: KeyId, shards: u16) -> u16 {
    (key_id.as_u128() % u128::from(shards.max(1))) as u16
}

/// The name of meter object `shard`.
pub fn object_name(shard: u16) -> String {
    format!("meter-{shard}")
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

/// The storage key of activity chunk `n`: zero-padded so a listing is in order.
pub fn chunk_key(n: u64) -> String {
    format!("{CHUNK_PREFIX}{n:020}")
}

/// The chunk number of a storage key made by [`chunk_key`].
pub fn chunk_number(key: &str) -> Option<u64> {
    key.strip_prefix(CHUNK_PREFIX)?.parse().ok()
}

/// The storage key of sealed batch `seq`: zero-padded so a listing is in `seq` order.
pub fn batch_key(seq: u64) -> String {
    format!("{BATCH_PREFIX}{seq:020}")
}

/// The source name of meter `shard` with its persisted random part.
pub fn source_name(shard: u16, random_hex: &str) -> String {
    format!("meter-{shard}-{random_hex}")
}
