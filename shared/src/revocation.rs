//! The revocation-list format: signed, versioned, sharded.
//!
//! The key id space is cut into `shard_count` contiguous ranges (by the id's top 16 bits) and
//! each range is published as one shard, so a KV value stays small as revocations grow and a
//! revocation rewrites one shard. A shard is bytes (big-endian integers):
//!
//! ```text
//! offset size field
//!      0    4 magic "LNXR"
//!      4    1 format version (1)
//!      5    1 kid of the signing key
//!      6    2 shard index, < shard count
//!      8    2 shard count, 1..=65535
//!     10    2 reserved, zero
//!     12    8 list version: monotonic, never reused
//!     20    8 issued at (Unix seconds)
//!     28    8 next update (Unix seconds): after it, a reader must not trust this shard
//!     36    4 n: number of revoked key ids
//!     40 16*n revoked key ids, strictly ascending, all inside this shard's range
//!   ...    32 HMAC-SHA256 of everything above, keyed by the kid's revocation-list subkey
//! ```
//!
//! A reader checks, in this order: length and shape, kid, tag ([`RevocationShard::open`]), then
//! rollback and staleness against its own state ([`RevocationShard::check`]). Each failure is a
//! distinct [`ListError`]. Membership is a lookup in a bucket index over the sorted ids: one
//! index read and a binary search of a few ids, whatever the list's size.

use crate::envelope::{self, EnvelopeError};
use crate::key::KeyId;
use crate::mac::{Keyring, Purpose, TAG_LEN};

/// Path prefix of the edge's sync endpoint for one shard (`PUT`); the shard index follows.
pub const SYNC_PATH_PREFIX: &str = "/_lynxo/sync/revocations/";

/// The path of the edge's sync endpoint for shard `index`.
pub fn sync_path(index: u16) -> String {
    format!("{SYNC_PATH_PREFIX}{index}")
}

/// First bytes of every shard.
pub const MAGIC: &[u8; 4] = b"LNXR";
/// The shard format this crate writes.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the ids.
pub const HEADER_LEN: usize = 40;
/// Bytes of one revoked id.
pub const ID_LEN: usize = 16;

/// Why a shard was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The bytes are shorter than a header and tag, or their length disagrees with the count.
    #[error("revocation shard has the wrong length")]
    InvalidLength,
    /// The bytes do not start with `LNXR`.
    #[error("not a revocation shard")]
    BadMagic,
    /// A shard format this build does not know.
    #[error("unsupported revocation shard format {0}")]
    UnsupportedVersion(u8),
    /// The signing kid is not in the keyring.
    #[error("revocation shard signed by unknown kid {0}")]
    UnknownKid(u8),
    /// The tag does not match: tampered or forged.
    #[error("revocation shard tag does not match")]
    BadTag,
    /// Signed, but not a valid shard: ids unsorted or outside the shard, bad shard numbers,
    /// reserved bits set, next update before issue.
    #[error("revocation shard is malformed")]
    Malformed,
    /// Older than a version the reader has already accepted: a replay or a stale cache.
    #[error("revocation shard version {found} is older than version {seen} already seen")]
    Rollback {
        /// The highest version the reader accepted before.
        seen: u64,
        /// This shard's version.
        found: u64,
    },
    /// Past its next-update time: the reader must fail closed until a fresher shard arrives.
    #[error("revocation shard expired at {next_update}")]
    Stale {
        /// The shard's next-update time.
        next_update: u64,
    },
}

impl ListError {
    /// A stable, machine-readable code for the error.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidLength => "invalid_length",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadTag => "bad_tag",
            Self::Malformed => "malformed",
            Self::Rollback { .. } => "rollback",
            Self::Stale { .. } => "stale",
        }
    }
}

/// Which shard of `shard_count` holds `key_id`: shards are contiguous ranges of the id's top
/// 16 bits, so each shard's ids stay sorted within one range.
pub fn shard_of(key_id: KeyId, shard_count: u16) -> u16 {
    let top = u32::from(u16::from_be_bytes([key_id.0[0], key_id.0[1]]));
    // top * count < 2^32 and the quotient is < count, so the cast is lossless.
    ((top * u32::from(shard_count.max(1))) >> 16) as u16
}

/// The top-16-bit values of the key ids that shard `shard` of `shard_count` holds: the inverse
/// of [`shard_of`]. Ranges of consecutive shards are contiguous and together cover `0..65536`.
pub fn shard_range(shard: u16, shard_count: u16) -> core::ops::Range<u32> {
    let count = u32::from(shard_count.max(1));
    let start = |s: u32| (s * 65_536).div_ceil(count);
    start(u32::from(shard))..start(u32::from(shard) + 1)
}

/// The Workers KV key under which shard `index` is stored: the control plane writes it, the edge
/// reads it. Part of the deployed format: never change it.
pub fn kv_key(index: u16) -> String {
    format!("revocations/v1/{index}")
}

/// First signed part of a shard push to the edge's sync endpoint.
const PUSH_KIND: &[u8] = b"revocations";

/// Signs a push of shard `index` (its encoded `body`) to the edge's sync endpoint at `now`: the
/// `Lynxo-Signature` header value, made with the key-signing keyring's sync subkey.
pub fn sign_push(keyring: &Keyring, index: u16, body: &[u8], now: u64) -> String {
    let index = index.to_string();
    envelope::sign(
        keyring,
        Purpose::Sync,
        now,
        &[PUSH_KIND, index.as_bytes(), body],
    )
}

/// Checks a push's `Lynxo-Signature` header: made by [`sign_push`] for this `index` and `body`,
/// within `tolerance` seconds of `now`.
pub fn verify_push(
    keyring: &Keyring,
    header: &str,
    index: u16,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    let index = index.to_string();
    envelope::verify(
        keyring,
        Purpose::Sync,
        header,
        &[PUSH_KIND, index.as_bytes(), body],
        now,
        tolerance,
    )
}

/// First signed part of a read of a shard (`GET` of the sync path).
const READ_KIND: &[u8] = b"revocations-read";

/// Signs a read of shard `index` as the edge holds it (`GET` [`sync_path`]) at `now`: what the
/// control plane sends to learn the revocations the edge enforces (after a restore, for one).
pub fn sign_read(keyring: &Keyring, index: u16, now: u64) -> String {
    let index = index.to_string();
    envelope::sign(keyring, Purpose::Sync, now, &[READ_KIND, index.as_bytes()])
}

/// Checks a shard read's `Lynxo-Signature` header: made by [`sign_read`] for this `index`,
/// within `tolerance` seconds of `now`.
pub fn verify_read(
    keyring: &Keyring,
    header: &str,
    index: u16,
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    let index = index.to_string();
    envelope::verify(
        keyring,
        Purpose::Sync,
        header,
        &[READ_KIND, index.as_bytes()],
        now,
        tolerance,
    )
}

/// The metadata of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    /// This shard's index, below `shard_count`.
    pub shard: u16,
    /// How many shards the list has.
    pub shard_count: u16,
    /// The list version: greater than every version published before.
    pub version: u64,
    /// Unix seconds when the shard was signed.
    pub issued_at: u64,
    /// Unix seconds after which a reader must not trust the shard.
    pub next_update: u64,
}

/// A verified revocation shard, indexed for lookups.
#[derive(Debug, Clone)]
pub struct RevocationShard {
    header: ShardHeader,
    kid: u8,
    /// Revoked ids as big-endian numbers, ascending.
    ids: Vec<u128>,
    /// `buckets[b]..buckets[b + 1]` is the range of `ids` whose top `bucket_bits` bits are `b`.
    buckets: Vec<u32>,
    bucket_bits: u32,
}

impl RevocationShard {
    /// Builds a shard from revoked ids (any order, duplicates allowed); every id must belong to
    /// `header.shard`.
    pub fn new(
        header: ShardHeader,
        kid: u8,
        ids: impl IntoIterator<Item = KeyId>,
    ) -> Result<Self, ListError> {
        let mut ids: Vec<u128> = ids.into_iter().map(KeyId::as_u128).collect();
        ids.sort_unstable();
        ids.dedup();
        Self::from_sorted(header, kid, ids)
    }

    fn from_sorted(header: ShardHeader, kid: u8, ids: Vec<u128>) -> Result<Self, ListError> {
        let well_formed = header.shard_count > 0
            && header.shard < header.shard_count
            && header.next_update >= header.issued_at
            && u32::try_from(ids.len()).is_ok()
            && ids.windows(2).all(|w| w[0] < w[1])
            && ids
                .iter()
                .all(|&id| shard_of(KeyId(id.to_be_bytes()), header.shard_count) == header.shard);
        if !well_formed {
            return Err(ListError::Malformed);
        }
        // About one id per bucket: enough to make the binary search a couple of steps.
        let bucket_bits = (usize::BITS - ids.len().leading_zeros()).min(22);
        let mut buckets = vec![0_u32; (1 << bucket_bits) + 1];
        for &id in &ids {
            let b = bucket(id, bucket_bits);
            buckets[b + 1] += 1;
        }
        for b in 1..buckets.len() {
            buckets[b] += buckets[b - 1];
        }
        Ok(Self {
            header,
            kid,
            ids,
            buckets,
            bucket_bits,
        })
    }

    /// The shard's metadata.
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    /// The kid that signed the shard.
    pub fn kid(&self) -> u8 {
        self.kid
    }

    /// Number of revoked ids in the shard.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the shard revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The revoked ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.ids.iter().map(|id| KeyId(id.to_be_bytes()))
    }

    /// Whether `key_id` is revoked.
    pub fn contains(&self, key_id: KeyId) -> bool {
        let id = key_id.as_u128();
        let b = bucket(id, self.bucket_bits);
        let (start, end) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        self.ids[start..end].binary_search(&id).is_ok()
    }

    /// Serializes and signs the shard with the keyring's key for `self.kid()`.
    pub fn encode(&self, keyring: &Keyring) -> Result<Vec<u8>, ListError> {
        let mac = keyring
            .mac(self.kid, Purpose::RevocationList)
            .ok_or(ListError::UnknownKid(self.kid))?;
        let h = &self.header;
        let mut out = Vec::with_capacity(HEADER_LEN + self.ids.len() * ID_LEN + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.kid);
        out.extend_from_slice(&h.shard.to_be_bytes());
        out.extend_from_slice(&h.shard_count.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&h.version.to_be_bytes());
        out.extend_from_slice(&h.issued_at.to_be_bytes());
        out.extend_from_slice(&h.next_update.to_be_bytes());
        // `from_sorted` refuses more than u32::MAX ids.
        out.extend_from_slice(&(self.ids.len() as u32).to_be_bytes());
        for id in &self.ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        let tag = mac.sign(&out);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decodes a shard and checks its tag. Does not check freshness: see [`Self::check`].
    pub fn open(bytes: &[u8], keyring: &Keyring) -> Result<Self, ListError> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(ListError::InvalidLength);
        }
        if &bytes[..4] != MAGIC {
            return Err(ListError::BadMagic);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(ListError::UnsupportedVersion(bytes[4]));
        }
        let be16 = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let be64 = |i: usize| {
            let mut x = [0; 8];
            x.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(x)
        };
        let count = u32::from_be_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]) as usize;
        let expected = count
            .checked_mul(ID_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN + TAG_LEN));
        if expected != Some(bytes.len()) {
            return Err(ListError::InvalidLength);
        }
        let kid = bytes[5];
        let mac = keyring
            .mac(kid, Purpose::RevocationList)
            .ok_or(ListError::UnknownKid(kid))?;
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        if !mac.verify(signed, tag, TAG_LEN) {
            return Err(ListError::BadTag);
        }
        if be16(10) != 0 {
            return Err(ListError::Malformed);
        }
        let header = ShardHeader {
            shard: be16(6),
            shard_count: be16(8),
            version: be64(12),
            issued_at: be64(20),
            next_update: be64(28),
        };
        let ids = signed[HEADER_LEN..]
            .chunks_exact(ID_LEN)
            .map(|c| {
                let mut id = [0; ID_LEN];
                id.copy_from_slice(c);
                u128::from_be_bytes(id)
            })
            .collect();
        Self::from_sorted(header, kid, ids)
    }

    /// Whether a reader may use this shard at `now`, having already accepted `seen_version` for
    /// the same shard (if any). An equal version is accepted: it is the same shard read again.
    pub fn check(&self, now: u64, seen_version: Option<u64>) -> Result<(), ListError> {
        if let Some(seen) = seen_version {
            if self.header.version < seen {
                return Err(ListError::Rollback {
                    seen,
                    found: self.header.version,
                });
            }
        }
        if now >= self.header.next_update {
            return Err(ListError::Stale {
                next_update: self.header.next_update,
            });
        }
        Ok(())
    }
}

fn bucket(id: u128, bits: u32) -> usize {
    // `checked_shr` covers bits == 0 (one bucket for everything), where a shift by 128 overflows.
    id.checked_shr(128 - bits).unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;

    fn keyring() -> Keyring {
        Keyring::new(4, &[(4, Secret::new(vec![4; 32]).unwrap())]).unwrap()
    }

    fn header(shard: u16, shard_count: u16) -> ShardHeader {
        ShardHeader {
            shard,
            shard_count,
            version: 10,
            issued_at: 1_000,
            next_update: 2_000,
        }
    }

    fn id(n: u128) -> KeyId {
        KeyId(n.to_be_bytes())
    }

    #[test]
    fn round_trip_and_membership() {
        let ring = keyring();
        let ids: Vec<KeyId> = (0..500_u128)
            .map(|i| id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)))
            .collect();
        let shard = RevocationShard::new(header(0, 1), 4, ids.iter().copied()).unwrap();
        let bytes = shard.encode(&ring).unwrap();
        let opened = RevocationShard::open(&bytes, &ring).unwrap();
        assert_eq!(opened.len(), 500);
        assert_eq!(opened.header(), &header(0, 1));
        for k in &ids {
            assert!(opened.contains(*k));
        }
        assert!(!opened.contains(id(1)));
        assert!(!opened.contains(id(u128::MAX)));
        let empty = RevocationShard::new(header(0, 1), 4, []).unwrap();
        assert!(
            !RevocationShard::open(&empty.encode(&ring).unwrap(), &ring)
                .unwrap()
                .contains(id(0))
        );
    }

    #[test]
    fn shards_partition_the_id_space() {
        assert_eq!(shard_of(id(0), 16), 0);
        assert_eq!(shard_of(id(u128::MAX), 16), 15);
        assert_eq!(shard_of(id(u128::MAX), 1), 0);
        assert_eq!(shard_of(id(u128::MAX), u16::MAX), u16::MAX - 1);
        assert_eq!(
            RevocationShard::new(header(0, 16), 4, [id(u128::MAX)]).unwrap_err(),
            ListError::Malformed
        );
        assert_eq!(
            RevocationShard::new(header(16, 16), 4, []).unwrap_err(),
            ListError::Malformed
        );
    }

    #[test]
    fn shard_range_inverts_shard_of() {
        for count in [1_u16, 3, 16, 64, 1000, u16::MAX] {
            let mut next = 0;
            for shard in 0..count {
                let range = shard_range(shard, count);
                assert_eq!(range.start, next, "contiguous");
                for top in range.clone().take(3).chain(range.clone().rev().take(3)) {
                    let top = u16::try_from(top).unwrap().to_be_bytes();
                    let mut id = [0; 16];
                    id[..2].copy_from_slice(&top);
                    assert_eq!(shard_of(KeyId(id), count), shard, "count {count}");
                }
                next = range.end;
            }
            assert_eq!(next, 65_536);
        }
    }

    #[test]
    fn pushes_are_bound_to_their_shard_and_body() {
        let ring = keyring();
        let header = sign_push(&ring, 3, b"body", 1_000);
        assert_eq!(
            verify_push(&ring, &header, 3, b"body", 1_100, 300),
            Ok(1_000)
        );
        assert_eq!(
            verify_push(&ring, &header, 4, b"body", 1_100, 300),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            verify_push(&ring, &header, 3, b"bodz", 1_100, 300),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(kv_key(3), "revocations/v1/3");
    }

    #[test]
    fn reads_are_bound_to_their_shard_and_are_no_push() {
        let ring = keyring();
        let read = sign_read(&ring, 3, 1_000);
        assert_eq!(verify_read(&ring, &read, 3, 1_100, 300), Ok(1_000));
        assert_eq!(
            verify_read(&ring, &read, 4, 1_100, 300),
            Err(EnvelopeError::BadSignature)
        );
        assert!(verify_read(&ring, &read, 3, 1_301, 300).is_err());
        // A push's signature (even of an empty body) is not a read's, nor the reverse.
        let push = sign_push(&ring, 3, b"", 1_000);
        assert!(verify_read(&ring, &push, 3, 1_000, 300).is_err());
        assert!(verify_push(&ring, &read, 3, b"", 1_000, 300).is_err());
    }

    #[test]
    fn each_failure_is_distinct() {
        let ring = keyring();
        let bytes = RevocationShard::new(header(0, 1), 4, [id(5), id(9)])
            .unwrap()
            .encode(&ring)
            .unwrap();
        let open = |b: &[u8]| RevocationShard::open(b, &ring).map(|_| ());
        assert_eq!(
            open(&bytes[..bytes.len() - 1]),
            Err(ListError::InvalidLength)
        );
        assert_eq!(open(&bytes[..10]), Err(ListError::InvalidLength));
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(open(&b), Err(ListError::BadMagic));
        let mut b = bytes.clone();
        b[4] = 2;
        assert_eq!(open(&b), Err(ListError::UnsupportedVersion(2)));
        let mut b = bytes.clone();
        b[5] = 5;
        assert_eq!(open(&b), Err(ListError::UnknownKid(5)));
        let mut b = bytes.clone();
        b[HEADER_LEN] ^= 1;
        assert_eq!(open(&b), Err(ListError::BadTag));

        let shard = RevocationShard::open(&bytes, &ring).unwrap();
        assert_eq!(shard.check(1_999, Some(10)), Ok(()));
        assert_eq!(shard.check(1_999, None), Ok(()));
        assert_eq!(
            shard.check(1_999, Some(11)),
            Err(ListError::Rollback {
                seen: 11,
                found: 10
            })
        );
        assert_eq!(
            shard.check(2_000, Some(9)),
            Err(ListError::Stale { next_update: 2_000 })
        );
    }
}
