//! Any text as an API key: `verify` must never panic, and a text it accepts must be the one
//! canonical encoding of its claims (re-issuing gives the same text back).
//!
//! A random text almost never passes the checksum, and never the tag, so the first byte picks a
//! mode: `0` reads the rest as claims bytes, signs them with a kid of the test keyring, and wraps
//! them in a key with a valid checksum. That reaches the claims decoder, which a forger controls
//! only through a leaked signing key but which must still never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::key::{self, CLAIMS_LEN, TAG_LEN};
use shared::mac::Purpose;
use shared::testkit;

fuzz_target!(|data: &[u8]| {
    let ring = testkit::keyring();
    let text = match data.split_first() {
        Some((0, rest)) if rest.len() >= CLAIMS_LEN + 1 => {
            let (env, claims) = (rest[0], &rest[1..=CLAIMS_LEN]);
            let mut payload = claims.to_vec();
            let kid = if ring.contains(claims[1]) { claims[1] } else { ring.active_kid() };
            payload.extend_from_slice(&ring.mac(kid, Purpose::KeyTag).unwrap().sign(claims)[..TAG_LEN]);
            let tag = ["dev", "stage", "live", "prod"][usize::from(env % 4)];
            key::encode_raw(tag, &payload)
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
    };
    let _ = key::parse(&text);
    let _ = key::hint(&text);
    if let Ok(claims) = key::verify(&text, &ring, 1_750_000_000) {
        assert_eq!(key::issue(&claims, &ring).unwrap().expose(), text);
    }
});
