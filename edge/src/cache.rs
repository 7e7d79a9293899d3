//! The isolate's memory of revocation shards read from KV.
//!
//! Each shard is trusted for the configured cache time, then read again. What a read brings is
//! only accepted if it opens with the keyring (tag), is the shard asked for, and is not older than
//! a version this isolate has already accepted; anything else is ignored and the last good shard
//! stays. Freshness (next-update) is checked on every lookup, so a shard that goes stale while
//! cached fails closed at once. Pure: time and KV results come in as arguments.

use std::collections::HashMap;

use shared::key::KeyId;
use shared::mac::Keyring;
use shared::revocation::RevocationShard;

use crate::decide::RevocationStatus;

/// The KV key of shard `index` (shared with the control plane, which writes it).
pub use shared::revocation::kv_key;

#[derive(Debug, Default)]
struct Entry {
    good: Option<RevocationShard>,
    read_at_ms: Option<u64>,
}

/// What happened to a shard read from KV, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the version now in use.
    Accepted(u64),
    /// KV holds nothing for the shard.
    Missing,
    /// Ignored: bad tag, malformed, another shard, or older than one accepted before.
    Ignored(&'static str),
}

/// Shards by index.
#[derive(Debug, Default)]
pub struct ShardCache {
    entries: HashMap<u16, Entry>,
}

impl ShardCache {
    /// Whether shard `index` must be read from KV at `now_ms`.
    pub fn needs_read(&self, index: u16, now_ms: u64, cache_ms: u64) -> bool {
        self.entries
            .get(&index)
            .and_then(|e| e.read_at_ms)
            .is_none_or(|at| now_ms.saturating_sub(at) >= cache_ms || now_ms < at)
    }

    /// Records a read of shard `index` from KV at `now_ms` (`None`: KV holds nothing).
    pub fn record_read(
        &mut self,
        index: u16,
        shard_count: u16,
        bytes: Option<&[u8]>,
        keyring: &Keyring,
        now_ms: u64,
    ) -> Outcome {
        let entry = self.entries.entry(index).or_default();
        entry.read_at_ms = Some(now_ms);
        let Some(bytes) = bytes else {
            return Outcome::Missing;
        };
        match RevocationShard::open(bytes, keyring) {
            Ok(shard) => self.offer(index, shard_count, shard),
            Err(e) => Outcome::Ignored(e.code()),
        }
    }

    /// Offers a verified shard (from KV or the sync endpoint) for index `index`.
    pub fn offer(&mut self, index: u16, shard_count: u16, shard: RevocationShard) -> Outcome {
        let header = *shard.header();
        if header.shard != index || header.shard_count != shard_count {
            return Outcome::Ignored("shard_mismatch");
        }
        let entry = self.entries.entry(index).or_default();
        if let Some(good) = &entry.good {
            if header.version < good.header().version {
                return Outcome::Ignored("rollback");
            }
        }
        entry.good = Some(shard);
        Outcome::Accepted(header.version)
    }

    /// Whether `key_id` (in shard `index`) is revoked, by the last good shard, at `now` seconds.
    pub fn status(&self, index: u16, key_id: KeyId, now: u64) -> RevocationStatus {
        match self.entries.get(&index).and_then(|e| e.good.as_ref()) {
            Some(shard) if shard.check(now, None).is_ok() => {
                if shard.contains(key_id) {
                    RevocationStatus::Revoked
                } else {
                    RevocationStatus::Clear
                }
            }
            _ => RevocationStatus::Unavailable,
        }
    }

    /// The version of the last good shard `index`, if any.
    pub fn version(&self, index: u16) -> Option<u64> {
        self.entries
            .get(&index)
            .and_then(|e| e.good.as_ref())
            .map(|s| s.header().version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::revocation::{ShardHeader, shard_of};

    fn ring() -> Keyring {
        Keyring::from_config(&format!("active=1;1:{}", "11".repeat(32))).unwrap()
    }

    fn id(first: u8) -> KeyId {
        KeyId([first; 16])
    }

    fn shard(version: u64, next_update: u64, ids: &[KeyId]) -> Vec<u8> {
        let index = shard_of(ids.first().copied().unwrap_or(id(0)), 16);
        let header = ShardHeader {
            shard: index,
            shard_count: 16,
            version,
            issued_at: 1_000,
            next_update,
        };
        RevocationShard::new(header, 1, ids.iter().copied())
            .unwrap()
            .encode(&ring())
            .unwrap()
    }

    #[test]
    fn ttl_decides_when_to_read() {
        let mut cache = ShardCache::default();
        assert!(cache.needs_read(0, 10_000, 2_000));
        cache.record_read(0, 16, None, &ring(), 10_000);
        assert!(!cache.needs_read(0, 11_999, 2_000));
        assert!(cache.needs_read(0, 12_000, 2_000));
        // A clock that went backwards reads again rather than trusting forever.
        assert!(cache.needs_read(0, 9_000, 2_000));
    }

    #[test]
    fn keeps_the_last_good_shard() {
        let ring = ring();
        let revoked = id(0);
        let mut cache = ShardCache::default();
        assert_eq!(
            cache.status(0, revoked, 1_500),
            RevocationStatus::Unavailable
        );
        assert_eq!(cache.record_read(0, 16, None, &ring, 0), Outcome::Missing);
        assert_eq!(
            cache.status(0, revoked, 1_500),
            RevocationStatus::Unavailable
        );

        let v2 = shard(2, 2_000, &[revoked]);
        assert_eq!(
            cache.record_read(0, 16, Some(&v2), &ring, 0),
            Outcome::Accepted(2)
        );
        assert_eq!(cache.status(0, revoked, 1_500), RevocationStatus::Revoked);
        assert_eq!(cache.status(0, id(1), 1_500), RevocationStatus::Clear);

        // Older version, bad tag, another shard: ignored, the revocation stays in force.
        let v1 = shard(1, 5_000, &[]);
        assert_eq!(
            cache.record_read(0, 16, Some(&v1), &ring, 0),
            Outcome::Ignored("rollback")
        );
        let mut tampered = shard(3, 5_000, &[]);
        tampered[41] ^= 1;
        assert!(matches!(
            cache.record_read(0, 16, Some(&tampered), &ring, 0),
            Outcome::Ignored(_)
        ));
        let other = shard(9, 5_000, &[id(0x80)]);
        assert_eq!(
            cache.record_read(0, 16, Some(&other), &ring, 0),
            Outcome::Ignored("shard_mismatch")
        );
        assert_eq!(cache.version(0), Some(2));
        assert_eq!(cache.status(0, revoked, 1_500), RevocationStatus::Revoked);
        // Missing after a good read: the good one stays.
        cache.record_read(0, 16, None, &ring, 0);
        assert_eq!(cache.version(0), Some(2));

        // Past next-update with nothing fresher: fail closed.
        assert_eq!(cache.status(0, id(1), 2_000), RevocationStatus::Unavailable);
        let v3 = shard(3, 9_000, &[]);
        assert_eq!(
            cache.record_read(0, 16, Some(&v3), &ring, 0),
            Outcome::Accepted(3)
        );
        assert_eq!(cache.status(0, revoked, 2_000), RevocationStatus::Clear);
    }
}
