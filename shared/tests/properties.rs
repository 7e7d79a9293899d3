//! Property tests of the key format (native only: proptest does not run on wasm32).
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use shared::key::{self, CLAIMS_LEN, Claims, Environment, KeyError, KeyId};
use shared::mac::Purpose;
use shared::scope::{Scope, ScopeSet};
use shared::testkit;

fn scope_set() -> impl Strategy<Value = ScopeSet> {
    prop_oneof![
        1 => Just(ScopeSet::FULL_ACCESS),
        9 => proptest::bits::u32::between(0, Scope::ALL.len())
            .prop_map(|bits| ScopeSet::from_bits(bits).unwrap()),
    ]
}

prop_compose! {
    fn claims()(
        kid in prop_oneof![Just(1_u8), Just(2_u8)],
        account_id in any::<u64>(),
        key_id in any::<[u8; 16]>(),
        environment in prop_oneof![
            Just(Environment::Development),
            Just(Environment::Staging),
            Just(Environment::Production),
        ],
        scopes in scope_set(),
        issued_at in any::<u64>(),
        expires_at in proptest::option::of(1_u64..),
    ) -> Claims {
        Claims { kid, account_id, key_id: KeyId(key_id), environment, scopes, issued_at, expires_at }
    }
}

/// Errors found before any secret is used.
fn is_pre_crypto(err: &KeyError) -> bool {
    matches!(
        err,
        KeyError::SurroundingWhitespace
            | KeyError::MissingPrefix
            | KeyError::InvalidCharacter { .. }
            | KeyError::InvalidLength { .. }
            | KeyError::InvalidChecksum
    )
}

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_- .";

proptest! {
    #[test]
    fn verify_inverts_issue(c in claims(), before_expiry in any::<u64>()) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap();
        let now = c.expires_at.map_or(before_expiry, |e| before_expiry % e);
        prop_assert_eq!(key::verify(text.expose(), &ring, now), Ok(c));
        if let Some(e) = c.expires_at {
            prop_assert_eq!(key::verify(text.expose(), &ring, e), Err(KeyError::Expired { expired_at: e }));
        }
    }

    #[test]
    fn verify_never_panics(text in "\\PC{0,200}", now in any::<u64>()) {
        let _ = key::verify(&text, &testkit::keyring(), now);
    }

    /// The fast path of `parse` and the step-by-step `diagnose` agree on every text: random
    /// strings, and keys with a random slip that keeps them close to valid.
    #[test]
    fn parse_agrees_with_diagnose(
        c in claims(),
        noise in "[a-zA-Z0-9_ -]{0,110}",
        pos in any::<proptest::sample::Index>(),
        byte in proptest::sample::select(ALPHABET.to_vec()),
        edit in 0..3_u8,
    ) {
        prop_assert_eq!(key::parse(&noise), key::diagnose(&noise));
        let prefixed = format!("lnx_live_{noise}");
        prop_assert_eq!(key::parse(&prefixed), key::diagnose(&prefixed));
        let text = key::issue(&c, &testkit::keyring()).unwrap().into_inner();
        let mut bytes = text.into_bytes();
        let i = pos.index(bytes.len());
        match edit {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => { bytes.remove(i); }
        }
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(key::parse(&mutated), key::diagnose(&mutated));
        // verify's own fast path fails with the same first error as the step-by-step checks.
        for text in [&noise, &prefixed, &mutated] {
            if let Err(e) = key::diagnose(text) {
                prop_assert_eq!(key::verify(text, &testkit::keyring(), 0), Err(e));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every position, every replacement: rejected before the HMAC, and an alphanumeric slip
    /// anywhere after `lnx_` is caught by the checksum itself.
    #[test]
    fn every_substitution_is_caught_before_crypto(c in claims()) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap().into_inner();
        let separator = text.rfind('_').unwrap();
        for pos in 0..text.len() {
            for &r in ALPHABET {
                if r == text.as_bytes()[pos] {
                    continue;
                }
                let mut bytes = text.clone().into_bytes();
                bytes[pos] = r;
                let mutated = String::from_utf8(bytes).unwrap();
                let err = key::verify(&mutated, &ring, 0).unwrap_err();
                prop_assert!(is_pre_crypto(&err), "{pos} {} -> {err:?}", r as char);
                if pos >= key::PREFIX.len() && pos != separator && r.is_ascii_alphanumeric() {
                    prop_assert_eq!(err, KeyError::InvalidChecksum, "{} {}", pos, r as char);
                }
            }
        }
    }

    #[test]
    fn every_insertion_and_deletion_is_caught_before_crypto(c in claims()) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap().into_inner();
        for pos in 0..=text.len() {
            for &r in ALPHABET {
                let mutated = format!("{}{}{}", &text[..pos], r as char, &text[pos..]);
                let err = key::verify(&mutated, &ring, 0).unwrap_err();
                prop_assert!(is_pre_crypto(&err), "insert {} at {pos}: {err:?}", r as char);
            }
            if pos < text.len() {
                let mutated = format!("{}{}", &text[..pos], &text[pos + 1..]);
                let err = key::verify(&mutated, &ring, 0).unwrap_err();
                prop_assert!(is_pre_crypto(&err), "delete at {pos}: {err:?}");
            }
        }
    }

    /// A tag cut short is refused both in the text (the key's length is fixed) and by the MAC
    /// check itself (no prefix of the tag is accepted).
    #[test]
    fn truncated_tags_are_rejected(c in claims()) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap().into_inner();
        let env_len = c.environment.tag().len();
        let start = key::PREFIX.len() + env_len + 1;
        let payload = shared::base62::decode(&text[start..start + key::PAYLOAD_CHARS]).unwrap();
        let mac = ring.mac(c.kid, Purpose::KeyTag).unwrap();
        let (claims_bytes, tag) = payload.split_at(CLAIMS_LEN);
        prop_assert!(mac.verify(claims_bytes, tag, key::TAG_LEN));
        for len in 0..key::TAG_LEN {
            prop_assert!(!mac.verify(claims_bytes, &tag[..len], key::TAG_LEN), "tag of {len} bytes accepted");
            let short = key::encode_raw(c.environment.tag(), &payload[..CLAIMS_LEN + len]);
            let err = key::verify(&short, &ring, 0).unwrap_err();
            prop_assert!(matches!(err, KeyError::InvalidLength { .. }), "{len}: {err:?}");
        }
    }
}
