//! The shared crate's verify path and the edge worker's per-request stages
//! (`edge::testing::stages`), exported to JavaScript so `bench/wasm-verify.sh` can time them
//! under Node: the same code the edge worker runs, measured in the same engine family.
//!
//! Each export runs a loop of `n` iterations inside wasm and returns a count that depends on every
//! iteration, so the work cannot be optimised away and the JS<->wasm call cost is amortised.

use shared::key::{self, Environment};
use shared::mac::{PrfPurpose, Purpose};
use shared::revocation::RevocationShard;
use shared::{Keyring, gate, testkit};
use wasm_bindgen::prelude::*;

/// Fixtures built once, outside the timed loops.
#[wasm_bindgen]
pub struct Bench {
    keyring: Keyring,
    key: String,
    key_v1: String,
    shard: RevocationShard,
    now: u64,
}

#[wasm_bindgen]
impl Bench {
    /// A keyring, one valid Read/Write key in each format (v2 and v1, same claims), and a shard
    /// of `revoked` revoked ids.
    #[wasm_bindgen(constructor)]
    pub fn new(revoked: u32) -> Self {
        let keyring = testkit::keyring();
        let mut rng = testkit::SplitMix(7);
        let claims = testkit::claims(rng.key_id());
        let key = key::issue(&claims, &keyring)
            .map(shared::PlainKey::into_inner)
            .unwrap_or_default();
        let key_v1 = key::issue_v1(&claims, &keyring)
            .map(shared::PlainKey::into_inner)
            .unwrap_or_default();
        let shard = testkit::revoked_shard(revoked as usize, 99);
        Self {
            keyring,
            key,
            key_v1,
            shard,
            now: 1_700_000_100,
        }
    }

    /// Full path `n` times with the v2 key: decode, checksum, SIV open, expiry, revocation
    /// lookup, scope check.
    pub fn verify(&self, n: u32) -> u32 {
        self.full_path(&self.key, n)
    }

    /// Full path `n` times with the v1 key (HMAC tag, claims in clear).
    pub fn verify_v1(&self, n: u32) -> u32 {
        self.full_path(&self.key_v1, n)
    }

    /// Only the pre-keyed HMAC-SHA256 of the 48 signed bytes, `n` times: the crypto of
    /// `verify_v1`.
    pub fn hmac(&self, n: u32) -> u32 {
        let mac = self.keyring.active_mac(Purpose::KeyTag);
        spin(n, |input| mac.sign(input))
    }

    /// One compression of the v2 PRF over 48 bytes, `n` times: a third of v2's crypto.
    pub fn prf(&self, n: u32) -> u32 {
        let kid = self.keyring.active_kid();
        match self.keyring.prf(kid, PrfPurpose::KeySiv) {
            Some(prf) => spin(n, |input| prf.eval(input)),
            None => 0,
        }
    }
}

impl Bench {
    fn full_path(&self, text: &str, n: u32) -> u32 {
        (0..n)
            .filter(|_| {
                gate::decide(
                    text,
                    &self.keyring,
                    Some(Environment::Production),
                    self.now,
                    |id| self.shard.contains(id).into(),
                    "GET",
                    "/v1/jobs",
                )
                .is_ok()
            })
            .count() as u32
    }
}

/// The worker's own work per authenticated request, stage by stage (`edge::testing::stages`):
/// what it costs in wasm, without the runtime's part.
#[wasm_bindgen]
pub struct EdgeStages(edge::testing::stages::Stages);

#[wasm_bindgen]
impl EdgeStages {
    /// The fixtures.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self(edge::testing::stages::Stages::new())
    }

    /// The key checks, `n` times: how many were admitted.
    pub fn key_check(&self, n: u32) -> u32 {
        (0..n).filter(|_| self.0.key_check()).count() as u32
    }

    /// `n` lease takes: the tokens left after the last.
    pub fn lease_take(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |_, _| self.0.lease_take())
    }

    /// `n` meter pushes: how many asked for a flush now.
    pub fn meter(&mut self, n: u32) -> u32 {
        (0..n)
            .filter(|_| self.0.meter() == edge::meter::Flush::Now)
            .count() as u32
    }

    /// The RateLimit field values, `n` times: their total length.
    pub fn rate_fields(&self, n: u32) -> u32 {
        (0..n).map(|_| self.0.rate_fields() as u32).sum()
    }

    /// The origin request's plan, `n` times: its headers in total.
    pub fn forward_plan(&self, n: u32) -> u32 {
        (0..n).map(|_| self.0.forward_plan() as u32).sum()
    }
}

impl Default for EdgeStages {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` on `n` distinct 48-byte inputs and returns a sum of its outputs, so no call can be
/// optimised away.
fn spin(n: u32, f: impl Fn(&[u8; key::CLAIMS_LEN]) -> [u8; 32]) -> u32 {
    let mut input = [0_u8; key::CLAIMS_LEN];
    let mut acc = 0_u32;
    for i in 0..n {
        input[0] = i as u8;
        acc = acc.wrapping_add(u32::from(f(&input)[0]));
    }
    acc
}
