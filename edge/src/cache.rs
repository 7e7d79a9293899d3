//! The isolate's memory of revocation shards read from KV.
//!
//! Each shard is trusted for the configured cache time, then read again. What a read brings is
//! only accepted if it opens with the keyring (tag), is the shard asked for, is not already past
//! its next-update time, and is not older than a version this isolate has already accepted;
//! anything else is ignored and the last good shard stays (a stale shard never replaces a fresh
//! one, whatever its version). Freshness (next-update) is checked on every lookup, so a shard that
//! goes stale while cached fails closed at once. A shard in use whose heartbeat is overdue (issued
//! more than [`STALE_ALARM_SECS`] ago) raises an alarm, at most once a minute per isolate. Pure:
//! time and KV results come in as arguments.

use std::collections::HashMap;

use shared::key::KeyId;
use shared::mac::Keyring;
use shared::revocation::{ListError, RevocationShard};

use crate::decide::RevocationStatus;

/// The KV key of shard `index` (shared with the control plane, which writes it).
pub use shared::revocation::kv_key;

/// A shard in use issued longer ago than this (seconds) means the control plane's heartbeat
/// (every minute by default) has been missing for five beats: the alarm's threshold.
pub const STALE_ALARM_SECS: u64 = 300;
/// Least time between two alarms of one isolate, seconds.
const ALARM_EVERY_SECS: u64 = 60;

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
    /// When the staleness alarm was last raised, Unix seconds.
    alarmed_at: Option<u64>,
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
            Ok(shard) => self.offer(index, shard_count, shard, now_ms / 1000),
            Err(e) => Outcome::Ignored(e.code()),
        }
    }

    /// Offers a verified shard (from KV or the sync endpoint) for index `index` at `now` (Unix
    /// seconds).
    pub fn offer(
        &mut self,
        index: u16,
        shard_count: u16,
        shard: RevocationShard,
        now: u64,
    ) -> Outcome {
        let header = *shard.header();
        if header.shard != index || header.shard_count != shard_count {
            return Outcome::Ignored("shard_mismatch");
        }
        if let Err(e @ ListError::Stale { .. }) = shard.check(now, None) {
            return Outcome::Ignored(e.code());
        }
        let entry = self.entries.entry(index).or_default();
        if let Some(good) = &entry.good {
            // A good shard that has gone stale protects nothing: a fresh one replaces it.
            if header.version < good.header().version && good.check(now, None).is_ok() {
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

    /// The age in seconds of shard `index` in use at `now`, when its heartbeat is overdue and
    /// the alarm was not raised in the last minute: the caller logs it.
    pub fn stale_alarm(&mut self, index: u16, now: u64) -> Option<u64> {
        let issued_at = self
            .entries
            .get(&index)
            .and_then(|e| e.good.as_ref())?
            .header()
            .issued_at;
        let age = now.saturating_sub(issued_at);
        let quiet = self
            .alarmed_at
            .is_none_or(|t| now >= t + ALARM_EVERY_SECS || now < t);
        (age > STALE_ALARM_SECS && quiet).then(|| {
            self.alarmed_at = Some(now);
            age
        })
    }

    /// The issued-at (Unix seconds) of the oldest good shard held, if any: the edge's
    /// staleness, reported to the control plane (`health`).
    pub fn oldest_issued_at(&self) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|e| e.good.as_ref())
            .map(|s| s.header().issued_at)
            .min()
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
        shared::testkit::keyring()
    }

    fn id(first: u8) -> KeyId {
        KeyId([first; 16])
    }

    fn shard(version: u64, next_update: u64, ids: &[KeyId]) -> Vec<u8> {
        let index = shard_of(ids.first().copied().unwrap_or(id(0)), 16);
        shard_of_index(index, version, 1_000, next_update, ids)
    }

    fn shard_of_index(
        index: u16,
        version: u64,
        issued_at: u64,
        next_update: u64,
        ids: &[KeyId],
    ) -> Vec<u8> {
        let header = ShardHeader {
            shard: index,
            shard_count: 16,
            version,
            issued_at,
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

    fn shard_at(version: u64, issued_at: u64, next_update: u64, ids: &[KeyId]) -> Vec<u8> {
        shard_of_index(0, version, issued_at, next_update, ids)
    }

    #[test]
    fn a_stale_shard_never_replaces_a_fresh_one() {
        let ring = ring();
        let revoked = id(0);
        let mut cache = ShardCache::default();
        let fresh = shard_at(5, 10_000, 20_000, &[revoked]);
        assert_eq!(
            cache.record_read(0, 16, Some(&fresh), &ring, 10_000_000),
            Outcome::Accepted(5)
        );
        // Newer, but already past its next-update (signed by a clock running slow, or held
        // back and replayed): ignored, whether it comes from KV or from a push.
        let stale = shard_at(6, 9_000, 10_500, &[]);
        assert_eq!(
            cache.record_read(0, 16, Some(&stale), &ring, 11_000_000),
            Outcome::Ignored("stale")
        );
        let opened = RevocationShard::open(&stale, &ring).unwrap();
        assert_eq!(
            cache.offer(0, 16, opened, 11_000),
            Outcome::Ignored("stale")
        );
        assert_eq!(cache.version(0), Some(5));
        assert_eq!(cache.status(0, revoked, 11_000), RevocationStatus::Revoked);
        assert_eq!(cache.status(0, id(1), 11_000), RevocationStatus::Clear);
        // Once the good one is stale itself, a fresh shard replaces it, even of a lower version
        // (a control plane whose list was reset): failing closed protects nobody then.
        let reset = shard_at(3, 20_000, 30_000, &[revoked]);
        assert_eq!(
            cache.record_read(0, 16, Some(&reset), &ring, 20_000_000),
            Outcome::Accepted(3)
        );
        assert_eq!(cache.status(0, id(1), 20_000), RevocationStatus::Clear);
    }

    /// The availability policy (`docs/revocation-list.md`): a shard published with the default
    /// lifetime (a day) keeps the edge answering through two hours without a heartbeat, raises
    /// the staleness alarm after five missed beats, and fails closed only when the day is over.
    #[test]
    fn a_two_hour_control_plane_outage_keeps_the_list_in_force() {
        const LIFETIME: u64 = 86_400;
        let ring = ring();
        let revoked = id(0);
        let start = 1_800_000_000;
        let mut cache = ShardCache::default();
        let last = shard_at(5, start, start + LIFETIME, &[revoked]);
        cache.record_read(0, 16, Some(&last), &ring, start * 1000);
        assert_eq!(cache.stale_alarm(0, start + 60), None, "one beat: no alarm");
        let outage = start + 2 * 3600;
        assert_eq!(cache.status(0, id(1), outage), RevocationStatus::Clear);
        assert_eq!(cache.status(0, revoked, outage), RevocationStatus::Revoked);
        assert_eq!(cache.stale_alarm(0, start + 301), Some(301));
        assert_eq!(cache.stale_alarm(0, start + 302), None, "once a minute");
        assert_eq!(cache.stale_alarm(0, start + 361), Some(361));
        assert_eq!(
            cache.status(0, id(1), start + LIFETIME),
            RevocationStatus::Unavailable,
            "fails closed when the lifetime is over"
        );
    }
}
