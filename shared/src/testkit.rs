//! Deterministic fixtures for tests and benchmarks: the test keyrings with published secrets,
//! sample claims, and pseudo-random key ids. Never use these secrets outside tests.
//!
//! The keyrings are here once, as the text their environment variable or Worker binding takes,
//! so every test, benchmark and test stack (the control plane, the worker under `wrangler dev`
//! or `workerd`) signs and checks with the same secrets. Behind the `testkit` feature: no
//! production build contains them.

use crate::audit::AuditKeyring;
use crate::key::{Claims, Environment, KeyId};
use crate::mac::Keyring;
use crate::revocation::{RevocationShard, ShardHeader};
use crate::scope::Permission;

/// The key-signing keyring of the tests (`LYNXO_KEYRING`): kid 1 (active), secret `[0x11; 32]`,
/// and kid 2, secret `[0x22; 32]`.
pub const KEYRING: &str = "active=1;\
    1:1111111111111111111111111111111111111111111111111111111111111111,\
    2:2222222222222222222222222222222222222222222222222222222222222222";

/// The identity keyring of the tests (`ORIGIN_KEYRING`), which the worker signs the identity it
/// forwards with and the test origins check: kid 3, secret `[0x33; 32]`.
pub const ORIGIN_KEYRING: &str =
    "active=3;3:3333333333333333333333333333333333333333333333333333333333333333";

/// The control plane's audit keyring of the tests (`LYNXO_AUDIT_KEYRING`): kid 1, secret
/// `[0xa5; 32]`, not the signing keyring's.
pub const AUDIT_KEYRING: &str =
    "active=1;1:a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// [`KEYRING`], parsed.
pub fn keyring() -> Keyring {
    Keyring::from_config(KEYRING).unwrap_or_else(|_| unreachable!())
}

/// [`AUDIT_KEYRING`], parsed.
pub fn audit_keyring() -> AuditKeyring {
    AuditKeyring::from_config(AUDIT_KEYRING).unwrap_or_else(|_| unreachable!())
}

/// SplitMix64: a tiny, well-mixed deterministic generator for fixture ids.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A pseudo-random key id.
    pub fn key_id(&mut self) -> KeyId {
        let hi = u128::from(self.next_u64()) << 64;
        KeyId((hi | u128::from(self.next_u64())).to_be_bytes())
    }
}

/// Read/Write production claims for account 42, issued at 1,700,000,000, never expiring.
pub fn claims(key_id: KeyId) -> Claims {
    Claims {
        kid: 1,
        account_id: 42,
        key_id,
        environment: Environment::Production,
        scopes: Permission::ReadWrite.scopes(),
        issued_at: 1_700_000_000,
        expires_at: None,
    }
}

/// A look-alike of the key `claims` would make: the same claims and kid, signed with a secret
/// that is not [`KEYRING`]'s, so its checksum holds (a scanner matches it) but its tag does not
/// (`KeyError::BadTag`): what a forger, or a random string that happens to check out, looks like.
pub fn forged(claims: &Claims) -> crate::key::PlainKey {
    use crate::mac::Secret;
    let secret = Secret::new(vec![0x99; 32]).unwrap_or_else(|_| unreachable!());
    let ring = Keyring::new(claims.kid, &[(claims.kid, secret)]).unwrap_or_else(|_| unreachable!());
    crate::key::issue(claims, &ring).unwrap_or_else(|_| unreachable!())
}

/// One shard revoking `n` pseudo-random ids (seeded), valid from 1,700,000,000 for a day.
pub fn revoked_shard(n: usize, seed: u64) -> RevocationShard {
    let mut rng = SplitMix(seed);
    let header = ShardHeader {
        shard: 0,
        shard_count: 1,
        version: 1,
        issued_at: 1_700_000_000,
        next_update: 1_700_086_400,
    };
    RevocationShard::new(header, 1, (0..n).map(|_| rng.key_id())).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyrings_are_the_documented_secrets() {
        use crate::mac::{Purpose, Secret};
        let ring = keyring();
        assert_eq!(ring.active_kid(), 1);
        assert_eq!(ring.kids().collect::<Vec<_>>(), [1, 2]);
        let expected = |byte: u8| {
            let secret = Secret::new(vec![byte; 32]).unwrap();
            Keyring::new(1, &[(1, secret)]).unwrap()
        };
        for (kid, byte) in [(1, 0x11), (2, 0x22)] {
            let tag = |r: &Keyring, k: u8| r.mac(k, Purpose::KeyTag).unwrap().sign(b"x");
            assert_eq!(tag(&ring, kid), tag(&expected(byte), 1), "kid {kid}");
        }
        let origin = Keyring::from_config(ORIGIN_KEYRING).unwrap();
        assert_eq!(origin.kids().collect::<Vec<_>>(), [3]);
        assert_eq!(audit_keyring().active_kid(), 1);
    }
}
