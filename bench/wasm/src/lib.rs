//! The shared crate's verify path, exported to JavaScript so `bench/wasm-verify.sh` can time it
//! under Node: the same code the edge worker runs, measured in the same engine family.
//!
//! Each export runs a loop of `n` iterations inside wasm and returns a count that depends on every
//! iteration, so the work cannot be optimised away and the JS<->wasm call cost is amortised.

use shared::mac::Purpose;
use shared::revocation::RevocationShard;
use shared::{Keyring, gate, testkit};
use wasm_bindgen::prelude::*;

/// Fixtures built once, outside the timed loops.
#[wasm_bindgen]
pub struct Bench {
    keyring: Keyring,
    key: String,
    shard: RevocationShard,
    now: u64,
}

#[wasm_bindgen]
impl Bench {
    /// A keyring, one valid Read/Write key, and a shard of `revoked` revoked ids.
    #[wasm_bindgen(constructor)]
    pub fn new(revoked: u32) -> Self {
        let keyring = testkit::keyring();
        let mut rng = testkit::SplitMix(7);
        let claims = testkit::claims(rng.key_id());
        let key = shared::issue(&claims, &keyring)
            .map(shared::PlainKey::into_inner)
            .unwrap_or_default();
        let shard = testkit::revoked_shard(revoked as usize, 99);
        Self {
            keyring,
            key,
            shard,
            now: 1_700_000_100,
        }
    }

    /// Full path `n` times: decode, checksum, tag, expiry, revocation lookup, scope check.
    pub fn verify(&self, n: u32) -> u32 {
        (0..n)
            .filter(|_| {
                gate::authenticate(
                    &self.key,
                    &self.keyring,
                    self.now,
                    |id| self.shard.contains(id),
                    "GET",
                    "/v1/jobs",
                )
                .is_ok()
            })
            .count() as u32
    }

    /// Only the pre-keyed HMAC-SHA256 of the 48 signed bytes, `n` times: the floor of `verify`.
    pub fn hmac(&self, n: u32) -> u32 {
        let mac = self.keyring.active_mac(Purpose::KeyTag);
        let mut message = [0_u8; shared::key::CLAIMS_LEN];
        let mut acc = 0_u32;
        for i in 0..n {
            message[0] = i as u8;
            acc = acc.wrapping_add(u32::from(mac.sign(&message)[0]));
        }
        acc
    }
}
