//! Any text as an API key: `verify` must never panic, and a text it accepts must be the one
//! canonical encoding of its claims (re-issuing in its format gives the same text back).
//!
//! A random text almost never passes the checksum, and never the tag, so the first byte picks a
//! mode: `0` reads the rest as a v1 claims layout, signs it with a kid of the test keyring, and
//! wraps it in a key with a valid checksum; `1` seals the rest as a v2 claims layout the same way;
//! `2` takes a genuine v2 key and flips the payload bits the rest names, under a recomputed
//! checksum. Modes 0 and 1 reach the claims decoder behind the tag, which a forger controls only
//! through a leaked signing key but which must still never panic; mode 2 is the forger without
//! one, who must never get a key accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::key::{self, CLAIMS_LEN, PAYLOAD_LEN, TAG_LEN};
use shared::mac::Purpose;
use shared::testkit;

const ENV_TAGS: [&str; 4] = ["dev", "stage", "live", "prod"];

fuzz_target!(|data: &[u8]| {
    let ring = testkit::keyring();
    let kid_of = |b: u8| if ring.contains(b) { b } else { ring.active_kid() };
    let mut tampered = false;
    let text = match data.split_first() {
        Some((0, rest)) if rest.len() > CLAIMS_LEN => {
            let (env, claims) = (rest[0], &rest[1..=CLAIMS_LEN]);
            let mut payload = claims.to_vec();
            let mac = ring.mac(kid_of(claims[1]), Purpose::KeyTag).unwrap();
            payload.extend_from_slice(&mac.sign(claims)[..TAG_LEN]);
            key::encode_raw(ENV_TAGS[usize::from(env % 4)], &payload)
        }
        Some((1, rest)) if rest.len() > CLAIMS_LEN => {
            let env = rest[0];
            let mut claims = [0_u8; CLAIMS_LEN];
            claims.copy_from_slice(&rest[1..=CLAIMS_LEN]);
            claims[0] = claims[0].max(2);
            claims[1] = kid_of(claims[1]);
            let payload = key::seal_raw(&claims, &ring).unwrap();
            key::encode_raw(ENV_TAGS[usize::from(env % 4)], &payload)
        }
        Some((2, rest)) if rest.len() >= 16 => {
            let mut rng = testkit::SplitMix(u64::from_le_bytes(rest[..8].try_into().unwrap()));
            let claims = testkit::claims(rng.key_id());
            let genuine = key::issue(&claims, &ring).unwrap().into_inner();
            let mut payload = payload_of(&genuine);
            for pair in rest[8..].chunks_exact(2) {
                payload[usize::from(pair[0]) % PAYLOAD_LEN] ^= pair[1];
            }
            tampered = payload != payload_of(&genuine);
            key::encode_raw(claims.environment.tag(), &payload)
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
    };
    let _ = key::parse(&text);
    let _ = key::hint(&text);
    match key::verify(&text, &ring, 1_750_000_000) {
        Ok(claims) => {
            assert!(!tampered, "a tampered v2 key verified");
            let reissued = if payload_of(&text)[0] == 1 {
                key::issue_v1(&claims, &ring)
            } else {
                key::issue(&claims, &ring)
            };
            assert_eq!(reissued.unwrap().expose(), text);
        }
        Err(e) => assert!(!tampered || e.is_forgery_class(), "{e:?}"),
    }
});

/// The payload bytes of a key text that passed `verify` or came from `encode_raw`.
fn payload_of(text: &str) -> Vec<u8> {
    let start = text.rfind('_').unwrap() + 1;
    shared::base62::decode(&text[start..start + key::PAYLOAD_CHARS]).unwrap()
}
