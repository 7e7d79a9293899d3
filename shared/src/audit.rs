//! The audit trail's keys and its checkpoints: what makes the control plane's audit chain
//! tamper-evident to someone who can write its database.
//!
//! The control plane chains its audit events with HMAC-SHA256 under a secret of its own, the
//! audit keyring ([`AuditKeyring`], `LYNXO_AUDIT_KEYRING`): it is never in the database, and the
//! edge never holds it. Without it, an edited row cannot be given a matching chain value, however
//! every other value is recomputed. Rows cut off the end leave a shorter chain that is still
//! valid, so the chain's head is anchored outside the database: a [`Checkpoint`] states "event
//! `seq` has chain value `head`", tagged with the audit keyring's checkpoint subkey, and is pushed
//! to the edge ([`SYNC_PATH`], signed like every sync push with the key-signing keyring), which
//! keeps the newest in KV under [`KV_KEY`] and hands it back to a signed read. The edge cannot
//! check a checkpoint's tag (it lacks the audit secret) and needs not: it only refuses one older
//! than the one it holds. A checkpoint is 96 bytes (big-endian integers):
//!
//! ```text
//! offset size field
//!      0    4 magic "LNXA"
//!      4    1 format version (1)
//!      5    1 kid of the audit key that tagged it
//!      6    2 reserved, zero
//!      8    8 seq: the anchored event's sequence number
//!     16    8 legacy_upto: the last event chained by unkeyed SHA-256 (0: none)
//!     24    8 at: Unix seconds when the checkpoint was made
//!     32   32 head: the anchored event's chain value
//!     64   32 HMAC-SHA256 of bytes 0..64, keyed by the kid's checkpoint subkey
//! ```

use crate::envelope::{self, EnvelopeError};
use crate::mac::{Keyring, KeyringError, MacKey, Purpose, TAG_LEN, parse_config};

/// First bytes of every checkpoint.
pub const MAGIC: &[u8; 4] = b"LNXA";
/// The checkpoint format this crate writes.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of an encoded checkpoint.
pub const CHECKPOINT_LEN: usize = 96;
/// The edge's endpoint for checkpoints: `PUT` stores one, `GET` reads the stored one back.
pub const SYNC_PATH: &str = "/_lynxo/sync/audit-checkpoint";
/// The Workers KV key under which the edge keeps the newest checkpoint. Part of the deployed
/// format: never change it.
pub const KV_KEY: &str = "audit/v1/checkpoint";

/// Subkey labels: part of the derivation, never to change.
const CHAIN_LABEL: &[u8] = b"lynxo-keys/v1/audit-chain";
const CHECKPOINT_LABEL: &[u8] = b"lynxo-keys/v1/audit-checkpoint";
/// Domain separation of the two signed sync messages.
const PUSH_KIND: &[u8] = b"audit-checkpoint";
const READ_KIND: &[u8] = b"audit-checkpoint-read";

/// The subkeys of one audit secret.
#[derive(Clone)]
struct AuditKey {
    kid: u8,
    chain: MacKey,
    checkpoint: MacKey,
}

/// The control plane's audit secrets by kid, one of them active for new events. Old kids stay
/// in the ring after a rotation so the events they chained keep verifying.
#[derive(Clone)]
pub struct AuditKeyring {
    active: u8,
    keys: Vec<AuditKey>,
}

impl AuditKeyring {
    /// Parses `active=KID;KID:HEX,...`, the form of every keyring (secrets of at least 32
    /// bytes).
    pub fn from_config(text: &str) -> Result<Self, KeyringError> {
        let (active, secrets) = parse_config(text)?;
        let mut keys: Vec<AuditKey> = Vec::with_capacity(secrets.len());
        for (kid, secret) in &secrets {
            if keys.iter().any(|k| k.kid == *kid) {
                return Err(KeyringError::DuplicateKid(*kid));
            }
            let root = MacKey::new(secret.expose());
            keys.push(AuditKey {
                kid: *kid,
                chain: MacKey::new(&root.sign(CHAIN_LABEL)),
                checkpoint: MacKey::new(&root.sign(CHECKPOINT_LABEL)),
            });
        }
        if !keys.iter().any(|k| k.kid == active) {
            return Err(KeyringError::MissingActive(active));
        }
        Ok(Self { active, keys })
    }

    /// The kid that chains new events and tags new checkpoints.
    pub fn active_kid(&self) -> u8 {
        self.active
    }

    fn key(&self, kid: u8) -> Option<&AuditKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The chain subkey of `kid`: `chain value = HMAC(it, previous value || canonical row)`.
    pub fn chain(&self, kid: u8) -> Option<&MacKey> {
        self.key(kid).map(|k| &k.chain)
    }
}

impl core::fmt::Debug for AuditKeyring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kids: Vec<u8> = self.keys.iter().map(|k| k.kid).collect();
        f.debug_struct("AuditKeyring")
            .field("active", &self.active)
            .field("kids", &kids)
            .finish()
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not exactly [`CHECKPOINT_LEN`] bytes.
    #[error("audit checkpoint has the wrong length")]
    InvalidLength,
    /// The bytes do not start with `LNXA`.
    #[error("not an audit checkpoint")]
    BadMagic,
    /// A checkpoint format this build does not know.
    #[error("unsupported audit checkpoint format {0}")]
    UnsupportedVersion(u8),
    /// Reserved bytes set, or `legacy_upto` beyond `seq`.
    #[error("audit checkpoint is malformed")]
    Malformed,
    /// Tagged by a kid that is not in the audit keyring.
    #[error("audit checkpoint tagged by unknown kid {0}")]
    UnknownKid(u8),
    /// The tag does not match: forged or altered.
    #[error("audit checkpoint tag does not match")]
    BadTag,
}

impl CheckpointError {
    /// A stable, machine-readable code for the error.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidLength => "invalid_length",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::Malformed => "malformed",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadTag => "bad_tag",
        }
    }
}

/// Where the audit chain stood at a moment: an anchor kept outside the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The audit kid whose checkpoint subkey tags it.
    pub kid: u8,
    /// The anchored event's sequence number.
    pub seq: u64,
    /// The last event chained by unkeyed SHA-256, from before the chain was keyed (0: none).
    pub legacy_upto: u64,
    /// Unix seconds when it was made.
    pub at: u64,
    /// The anchored event's chain value.
    pub head: [u8; 32],
}

impl Checkpoint {
    fn body(&self) -> [u8; CHECKPOINT_LEN - TAG_LEN] {
        let mut out = [0_u8; CHECKPOINT_LEN - TAG_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = self.kid;
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..24].copy_from_slice(&self.legacy_upto.to_be_bytes());
        out[24..32].copy_from_slice(&self.at.to_be_bytes());
        out[32..64].copy_from_slice(&self.head);
        out
    }

    /// Encodes and tags the checkpoint with `keyring`'s checkpoint subkey for `self.kid`.
    pub fn encode(&self, keyring: &AuditKeyring) -> Result<[u8; CHECKPOINT_LEN], CheckpointError> {
        if self.legacy_upto > self.seq {
            return Err(CheckpointError::Malformed);
        }
        let key = keyring
            .key(self.kid)
            .ok_or(CheckpointError::UnknownKid(self.kid))?;
        let body = self.body();
        let mut out = [0_u8; CHECKPOINT_LEN];
        out[..body.len()].copy_from_slice(&body);
        out[body.len()..].copy_from_slice(&key.checkpoint.sign(&body));
        Ok(out)
    }

    /// Reads a checkpoint's fields without checking its tag: what the edge can do, lacking the
    /// audit secret. Checks length, magic, format and the reserved bytes.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, CheckpointError> {
        if bytes.len() != CHECKPOINT_LEN {
            return Err(CheckpointError::InvalidLength);
        }
        if &bytes[..4] != MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion(bytes[4]));
        }
        if bytes[6..8] != [0, 0] {
            return Err(CheckpointError::Malformed);
        }
        let be64 = |i: usize| {
            let mut x = [0; 8];
            x.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(x)
        };
        let mut head = [0; 32];
        head.copy_from_slice(&bytes[32..64]);
        let checkpoint = Self {
            kid: bytes[5],
            seq: be64(8),
            legacy_upto: be64(16),
            at: be64(24),
            head,
        };
        if checkpoint.legacy_upto > checkpoint.seq {
            return Err(CheckpointError::Malformed);
        }
        Ok(checkpoint)
    }

    /// Decodes a checkpoint and checks its tag with the audit keyring.
    pub fn open(bytes: &[u8], keyring: &AuditKeyring) -> Result<Self, CheckpointError> {
        let checkpoint = Self::parse_unverified(bytes)?;
        let key = keyring
            .key(checkpoint.kid)
            .ok_or(CheckpointError::UnknownKid(checkpoint.kid))?;
        let (body, tag) = bytes.split_at(CHECKPOINT_LEN - TAG_LEN);
        if !key.checkpoint.verify(body, tag, TAG_LEN) {
            return Err(CheckpointError::BadTag);
        }
        Ok(checkpoint)
    }
}

/// Signs a push of checkpoint `body` to [`SYNC_PATH`] at `now`: the `Lynxo-Signature` header,
/// made with the key-signing keyring's sync subkey like the other sync pushes.
pub fn sign_push(keyring: &Keyring, body: &[u8], now: u64) -> String {
    envelope::sign(keyring, Purpose::Sync, now, &[PUSH_KIND, body])
}

/// Checks a checkpoint push's `Lynxo-Signature` header within `tolerance` seconds of `now`.
pub fn verify_push(
    keyring: &Keyring,
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    envelope::verify(
        keyring,
        Purpose::Sync,
        header,
        &[PUSH_KIND, body],
        now,
        tolerance,
    )
}

/// Signs a read of the stored checkpoint (`GET` [`SYNC_PATH`]) at `now`.
pub fn sign_read(keyring: &Keyring, now: u64) -> String {
    envelope::sign(keyring, Purpose::Sync, now, &[READ_KIND])
}

/// Checks a checkpoint read's `Lynxo-Signature` header within `tolerance` seconds of `now`.
pub fn verify_read(
    keyring: &Keyring,
    header: &str,
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    envelope::verify(keyring, Purpose::Sync, header, &[READ_KIND], now, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(byte: u8) -> AuditKeyring {
        AuditKeyring::from_config(&format!("active=2;2:{}", format!("{byte:02x}").repeat(32)))
            .unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            kid: 2,
            seq: 41,
            legacy_upto: 7,
            at: 1_800_000_000,
            head: [0xab; 32],
        }
    }

    #[test]
    fn round_trip_and_each_refusal() {
        let ring = ring(5);
        let bytes = checkpoint().encode(&ring).unwrap();
        assert_eq!(Checkpoint::open(&bytes, &ring), Ok(checkpoint()));
        assert_eq!(Checkpoint::parse_unverified(&bytes), Ok(checkpoint()));
        assert_eq!(
            Checkpoint::open(&bytes, &self::ring(6)),
            Err(CheckpointError::BadTag)
        );
        let other_kid =
            AuditKeyring::from_config(&format!("active=3;3:{}", "05".repeat(32))).unwrap();
        assert_eq!(
            Checkpoint::open(&bytes, &other_kid),
            Err(CheckpointError::UnknownKid(2))
        );
        let open = |b: &[u8]| Checkpoint::open(b, &ring);
        assert_eq!(open(&bytes[..95]), Err(CheckpointError::InvalidLength));
        let mut b = bytes;
        b[0] = b'X';
        assert_eq!(open(&b), Err(CheckpointError::BadMagic));
        let mut b = bytes;
        b[4] = 2;
        assert_eq!(open(&b), Err(CheckpointError::UnsupportedVersion(2)));
        let mut b = bytes;
        b[7] = 1;
        assert_eq!(open(&b), Err(CheckpointError::Malformed));
        // Every field is under the tag.
        for i in [8, 23, 24, 32, 63] {
            let mut b = bytes;
            b[i] ^= 1;
            assert_eq!(open(&b), Err(CheckpointError::BadTag), "byte {i}");
        }
        let beyond = Checkpoint {
            legacy_upto: 42,
            ..checkpoint()
        };
        assert_eq!(beyond.encode(&ring), Err(CheckpointError::Malformed));
    }

    #[test]
    fn the_chain_and_checkpoint_subkeys_differ_from_the_secret_and_each_other() {
        let ring = ring(5);
        let chain = ring.chain(2).unwrap().sign(b"x");
        let raw = MacKey::new(&[5; 32]).sign(b"x");
        assert_ne!(chain, raw);
        assert_ne!(chain, ring.key(2).unwrap().checkpoint.sign(b"x"));
        assert!(ring.chain(3).is_none());
        assert!(format!("{ring:?}").contains("kids: [2]"));
        assert_eq!(
            AuditKeyring::from_config(&format!("active=1;2:{}", "05".repeat(32))).unwrap_err(),
            KeyringError::MissingActive(1)
        );
        assert_eq!(
            AuditKeyring::from_config(&format!("active=2;2:{0},2:{0}", "05".repeat(32)))
                .unwrap_err(),
            KeyringError::DuplicateKid(2)
        );
    }

    #[test]
    fn pushes_and_reads_are_signed_apart() {
        let keys = crate::testkit::keyring();
        let push = sign_push(&keys, b"body", 1_000);
        assert_eq!(verify_push(&keys, &push, b"body", 1_000, 300), Ok(1_000));
        assert!(verify_push(&keys, &push, b"bodz", 1_000, 300).is_err());
        let read = sign_read(&keys, 1_000);
        assert_eq!(verify_read(&keys, &read, 1_100, 300), Ok(1_000));
        assert!(verify_read(&keys, &push, 1_000, 300).is_err());
        assert!(verify_push(&keys, &read, b"", 1_000, 300).is_err());
        // A revocation or limits push signature never passes as a checkpoint push.
        let limits = crate::limits::sign_push(&keys, b"body", 1_000);
        assert!(verify_push(&keys, &limits, b"body", 1_000, 300).is_err());
    }
}
