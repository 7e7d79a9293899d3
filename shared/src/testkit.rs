//! Deterministic fixtures for tests and benchmarks: a keyring with published test secrets,
//! sample claims, and pseudo-random key ids. Never use these secrets outside tests.

use crate::key::{Claims, Environment, KeyId};
use crate::mac::{Keyring, Secret};
use crate::revocation::{RevocationShard, ShardHeader};
use crate::scope::Permission;

/// A keyring of two test-only kids (1, active, and 2), secrets `[0x11; 32]` and `[0x22; 32]`.
pub fn keyring() -> Keyring {
    let secret = |b: u8| Secret::new(vec![b; 32]).unwrap_or_else(|_| unreachable!());
    Keyring::new(1, &[(1, secret(0x11)), (2, secret(0x22))]).unwrap_or_else(|_| unreachable!())
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
