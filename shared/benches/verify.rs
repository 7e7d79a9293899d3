//! The full verify path against the two designs a user would otherwise pick, in one run.
//!
//! - `lynxo_v2_full`: what the edge runs for every request with a key of the current format:
//!   decode, checksum, SIV open (three SHA-256 compressions), expiry, revocation lookup in
//!   1,000,000 ids, scope.
//! - `lynxo_v1_full`: the same with a version 1 key (claims in clear, two compressions).
//! - `jsonwebtoken_hs256`: decode + validate (signature, `exp`) of a JWT with the same claims.
//! - `sha256_hashmap`: the store-a-hash design: SHA-256 of a random 32-byte key and a lookup in a
//!   map of 1,000,000 hashes.
//!
//! Plus the steps of the full path alone, to see where its time goes. Run: `cargo bench -p shared`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::key::Environment;
use shared::mac::{PrfPurpose, Purpose};
use shared::{gate, key, scope, testkit};

const REVOKED: usize = 1_000_000;
const NOW: u64 = 1_700_000_100;

#[derive(Serialize, Deserialize)]
struct JwtClaims {
    kid: u8,
    sub: u64,
    jti: String,
    env: String,
    scp: u32,
    iat: u64,
    exp: u64,
}

fn verify_path(c: &mut Criterion) {
    let keyring = testkit::keyring();
    let mut rng = testkit::SplitMix(7);
    let mut claims = testkit::claims(rng.key_id());
    claims.expires_at = Some(2_000_000_000);
    let text = shared::issue(&claims, &keyring).unwrap().into_inner();
    let text_v1 = key::issue_v1(&claims, &keyring).unwrap().into_inner();
    let shard = testkit::revoked_shard(REVOKED, 99);
    let revoked_id = shard.ids().nth(REVOKED / 2).unwrap();

    let jwt_claims = JwtClaims {
        kid: claims.kid,
        sub: claims.account_id,
        jti: claims.key_id.to_string(),
        env: claims.environment.name().to_owned(),
        scp: claims.scopes.bits(),
        iat: claims.issued_at,
        exp: 2_000_000_000,
    };
    let jwt_secret = [0x11_u8; 32];
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &jwt_claims,
        &EncodingKey::from_secret(&jwt_secret),
    )
    .unwrap();
    let jwt_key = DecodingKey::from_secret(&jwt_secret);
    let validation = Validation::new(Algorithm::HS256);

    let mut hashes: HashMap<[u8; 32], u64> = HashMap::with_capacity(REVOKED + 1);
    let random_key = |rng: &mut testkit::SplitMix| {
        let mut k = [0_u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        k
    };
    for i in 0..REVOKED as u64 {
        hashes.insert(Sha256::digest(random_key(&mut rng)).into(), i);
    }
    let stored_key = random_key(&mut rng);
    hashes.insert(Sha256::digest(stored_key).into(), u64::MAX);

    let mut group = c.benchmark_group("verify");
    for (name, text) in [("lynxo_v2_full", &text), ("lynxo_v1_full", &text_v1)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                gate::decide(
                    black_box(text),
                    &keyring,
                    Some(Environment::Production),
                    NOW,
                    |id| shard.contains(id).into(),
                    "GET",
                    "/v1/jobs",
                )
                .unwrap()
            })
        });
    }
    group.bench_function("jsonwebtoken_hs256", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<JwtClaims>(black_box(&jwt), &jwt_key, &validation).unwrap()
        })
    });
    group.bench_function("sha256_hashmap", |b| {
        b.iter(|| {
            let digest: [u8; 32] = Sha256::digest(black_box(&stored_key)).into();
            *hashes.get(&digest).unwrap()
        })
    });
    group.finish();

    let mut steps = c.benchmark_group("steps");
    steps.bench_function("parse_and_checksum", |b| {
        b.iter(|| key::parse(black_box(&text)).unwrap())
    });
    steps.bench_function("key_verify_v2", |b| {
        b.iter(|| key::verify(black_box(&text), &keyring, NOW).unwrap())
    });
    steps.bench_function("key_verify_v1", |b| {
        b.iter(|| key::verify(black_box(&text_v1), &keyring, NOW).unwrap())
    });
    let payload_text = key::parse(&text).unwrap().payload;
    steps.bench_function("base62_decode_payload", |b| {
        b.iter(|| {
            let mut out = [0_u8; key::PAYLOAD_LEN];
            shared::base62::decode_into(black_box(payload_text), &mut out).unwrap();
            out
        })
    });
    let mac = keyring.active_mac(Purpose::KeyTag);
    steps.bench_function("hmac_48_bytes", |b| {
        b.iter(|| mac.sign(black_box(&[0_u8; 48])))
    });
    let prf = keyring
        .prf(keyring.active_kid(), PrfPurpose::KeySiv)
        .unwrap();
    steps.bench_function("prf_one_compression", |b| {
        b.iter(|| prf.eval(black_box(&[0_u8; 48])))
    });
    steps.bench_function("revocation_lookup_miss", |b| {
        b.iter(|| shard.contains(black_box(claims.key_id)))
    });
    steps.bench_function("revocation_lookup_hit", |b| {
        b.iter(|| shard.contains(black_box(revoked_id)))
    });
    steps.bench_function("scope_check", |b| {
        b.iter(|| {
            scope::authorize(black_box(claims.scopes), "GET", black_box("/v1/jobs/job_1")).unwrap()
        })
    });
    steps.finish();
}

criterion_group!(benches, verify_path);
criterion_main!(benches);
