//! Keys and revocation shards for the tests, signed with the stack's keyring exactly as the
//! control plane signs them, and sync pushes signed as the control plane sends them.

use shared::key::{self, Claims, Environment, KeyId};
use shared::mac::Keyring;
use shared::revocation::{RevocationShard, ShardHeader, shard_of};
use shared::scope::ScopeSet;

use crate::stack::unix_now;

/// Shards of the worker's revocation list (its default `REVOCATION_SHARDS`).
pub const SHARDS: u16 = 16;

/// A key id in shard `shard` (of [`SHARDS`]), unique per `n`.
pub fn key_id(shard: u16, n: u64) -> KeyId {
    let top = u16::try_from((u32::from(shard) << 16) / u32::from(SHARDS)).unwrap_or(u16::MAX);
    let mut bytes = [0_u8; 16];
    bytes[..2].copy_from_slice(&top.to_be_bytes());
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    let id = KeyId(bytes);
    assert_eq!(shard_of(id, SHARDS), shard);
    id
}

/// Claims for account 42 with `scopes`, issued a minute ago, never expiring.
pub fn claims(key_id: KeyId, environment: Environment, scopes: ScopeSet) -> Claims {
    Claims {
        kid: 1,
        account_id: 42,
        key_id,
        environment,
        scopes,
        issued_at: unix_now() - 60,
        expires_at: None,
    }
}

/// Issues the key text for `claims`.
pub fn issue(keyring: &Keyring, claims: &Claims) -> String {
    key::issue(claims, keyring)
        .unwrap_or_else(|e| panic!("issue: {e}"))
        .into_inner()
}

/// Signed bytes of shard `shard` at `version`, revoking `revoked`, valid for `valid_for` seconds.
pub fn shard_bytes(
    keyring: &Keyring,
    shard: u16,
    version: u64,
    revoked: &[KeyId],
    valid_for: u64,
) -> Vec<u8> {
    let now = unix_now();
    let header = ShardHeader {
        shard,
        shard_count: SHARDS,
        version,
        issued_at: now,
        next_update: now + valid_for,
    };
    RevocationShard::new(header, keyring.active_kid(), revoked.iter().copied())
        .and_then(|s| s.encode(keyring))
        .unwrap_or_else(|e| panic!("shard: {e}"))
}

/// The `Lynxo-Signature` of a push of `body` as shard `shard`, signed now.
pub fn sign_push(keyring: &Keyring, shard: u16, body: &[u8]) -> String {
    sign_push_at(keyring, shard, body, unix_now())
}

/// The `Lynxo-Signature` of a push of `body` as shard `shard`, signed at `t`.
pub fn sign_push_at(keyring: &Keyring, shard: u16, body: &[u8], t: u64) -> String {
    shared::revocation::sign_push(keyring, shard, body, t)
}
