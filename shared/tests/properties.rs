//! Property tests of the key format, both versions (native only: proptest does not run on
//! wasm32).
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use shared::key::{self, CLAIMS_LEN, Claims, Environment, IssueError, KeyError, KeyId, PlainKey};
use shared::mac::{Keyring, Purpose};
use shared::scope::{Scope, ScopeSet};
use shared::testkit;

type Issuer = fn(&Claims, &Keyring) -> Result<PlainKey, IssueError>;

/// The current format and the one that must keep verifying.
const ISSUERS: [(&str, Issuer); 2] = [("v2", key::issue), ("v1", key::issue_v1)];

fn issuer() -> impl Strategy<Value = (&'static str, Issuer)> {
    proptest::sample::select(ISSUERS.to_vec())
}

/// The payload bytes of a key text.
fn payload_of(text: &str) -> Vec<u8> {
    let start = text.rfind('_').unwrap() + 1;
    shared::base62::decode(&text[start..start + key::PAYLOAD_CHARS]).unwrap()
}

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
    /// `verify(issue(c)) == c` for v2, and v1 keys keep verifying to their claims.
    #[test]
    fn verify_inverts_issue(c in claims(), before_expiry in any::<u64>(), (_, issue) in issuer()) {
        let ring = testkit::keyring();
        let text = issue(&c, &ring).unwrap();
        let now = c.expires_at.map_or(before_expiry, |e| before_expiry % e);
        prop_assert_eq!(key::verify(text.expose(), &ring, now), Ok(c));
        if let Some(e) = c.expires_at {
            prop_assert_eq!(key::verify(text.expose(), &ring, e), Err(KeyError::Expired { expired_at: e }));
        }
    }

    /// Any change to a v2 payload, under a recomputed checksum (what a forger who knows the
    /// format can make), is refused as a forgery. Past the header and the three tag bytes that
    /// whiten it, a change is exactly `BadTag`; there it may read as another version or kid.
    #[test]
    fn tampered_v2_payloads_are_forgeries(
        c in claims(),
        index in 0..key::PAYLOAD_LEN,
        mask in 1..=255_u8,
    ) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap().into_inner();
        let mut payload = payload_of(&text);
        payload[index] ^= mask;
        let tampered = key::encode_raw(c.environment.tag(), &payload);
        let err = key::verify(&tampered, &ring, 0).unwrap_err();
        prop_assert!(err.is_forgery_class(), "byte {index}: {err:?}");
        if index >= 2 + 3 {
            prop_assert_eq!(err, KeyError::BadTag, "byte {}", index);
        }
    }

    /// The same claims under another kid, or relabelled to another environment, never verify
    /// as the original.
    #[test]
    fn v2_binds_kid_and_environment(c in claims()) {
        let ring = testkit::keyring();
        let text = key::issue(&c, &ring).unwrap().into_inner();
        let other = Environment::ALL.into_iter().find(|e| *e != c.environment).unwrap();
        let relabelled = key::encode_raw(other.tag(), &payload_of(&text));
        prop_assert_eq!(key::verify(&relabelled, &ring, 0), Err(KeyError::Malformed));
        let mut payload = payload_of(&text);
        payload[1] ^= 1 ^ 2;
        let rekeyed = key::encode_raw(c.environment.tag(), &payload);
        prop_assert_eq!(key::verify(&rekeyed, &ring, 0), Err(KeyError::BadTag));
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
        (_, issue) in issuer(),
        noise in "[a-zA-Z0-9_ -]{0,110}",
        pos in any::<proptest::sample::Index>(),
        byte in proptest::sample::select(ALPHABET.to_vec()),
        edit in 0..3_u8,
    ) {
        prop_assert_eq!(key::parse(&noise), key::diagnose(&noise));
        let prefixed = format!("lnx_live_{noise}");
        prop_assert_eq!(key::parse(&prefixed), key::diagnose(&prefixed));
        let text = issue(&c, &testkit::keyring()).unwrap().into_inner();
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
    fn every_substitution_is_caught_before_crypto(c in claims(), (_, issue) in issuer()) {
        let ring = testkit::keyring();
        let text = issue(&c, &ring).unwrap().into_inner();
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
    fn every_insertion_and_deletion_is_caught_before_crypto(c in claims(), (_, issue) in issuer()) {
        let ring = testkit::keyring();
        let text = issue(&c, &ring).unwrap().into_inner();
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
        let text = key::issue_v1(&c, &ring).unwrap().into_inner();
        let payload = payload_of(&text);
        let mac = ring.mac(c.kid, Purpose::KeyTag).unwrap();
        let (claims_bytes, tag) = payload.split_at(CLAIMS_LEN);
        prop_assert!(mac.verify(claims_bytes, tag, key::TAG_LEN));
        for len in 0..key::TAG_LEN {
            prop_assert!(!mac.verify(claims_bytes, &tag[..len], key::TAG_LEN), "tag of {len} bytes accepted");
            let short = key::encode_raw(c.environment.tag(), &payload[..CLAIMS_LEN + len]);
            let err = key::verify(&short, &ring, 0).unwrap_err();
            prop_assert!(matches!(err, KeyError::InvalidLength { .. }), "{len}: {err:?}");
        }
        let sealed = payload_of(key::issue(&c, &ring).unwrap().expose());
        for len in 0..key::PAYLOAD_LEN {
            let short = key::encode_raw(c.environment.tag(), &sealed[..len]);
            let err = key::verify(&short, &ring, 0).unwrap_err();
            prop_assert!(matches!(err, KeyError::InvalidLength { .. }), "v2 {len}: {err:?}");
        }
    }
}

/// Keys of one account issued one after another, alike in everything but their random key id:
/// the case of someone reading many of an account's keys (log lines, screenshots). Returns the
/// payload digits of `n` such keys.
fn bodies_of_one_account(issue: Issuer, n: usize) -> Vec<Vec<u8>> {
    let ring = testkit::keyring();
    let mut rng = testkit::SplitMix(2024);
    (0..n)
        .map(|_| {
            let text = issue(&testkit::claims(rng.key_id()), &ring)
                .unwrap()
                .into_inner();
            let start = text.rfind('_').unwrap() + 1;
            text.as_bytes()[start..start + key::PAYLOAD_CHARS].to_vec()
        })
        .collect()
}

/// Pairs of bodies with the same 4 characters at the same position.
fn shared_windows(bodies: &[Vec<u8>]) -> usize {
    let mut count = 0;
    for (i, a) in bodies.iter().enumerate() {
        for b in &bodies[i + 1..] {
            count += a
                .windows(4)
                .zip(b.windows(4))
                .filter(|(x, y)| x == y)
                .count();
        }
    }
    count
}

/// How often the commonest character of each position occurs, at the worst position.
fn worst_position_frequency(bodies: &[Vec<u8>]) -> usize {
    (0..key::PAYLOAD_CHARS)
        .map(|pos| {
            let mut counts = [0_usize; 256];
            bodies.iter().for_each(|b| counts[usize::from(b[pos])] += 1);
            counts.into_iter().max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// v2 bodies carry no trace of the claims their keys share: no two keys of one account share a
/// 4-character window at one position more often than random bytes would, no position has a
/// fixed or favoured character, and no body shows a run of zeros. The same statistics on v1
/// keys (claims in clear) show what the test catches.
#[test]
fn v2_bodies_show_nothing_keys_of_one_account_share() {
    const N: usize = 400;
    let v2 = bodies_of_one_account(key::issue, N);
    let v1 = bodies_of_one_account(key::issue_v1, N);

    // Random payload bytes: each chunk of 11 digits is a uniform u64, whose leading digit takes
    // one of 22 values and the others one of 62. A 4-digit window holds at most one leading
    // digit; 29 of the 85 windows hold one.
    let pairs = (N * (N - 1) / 2) as f64;
    let p = |k: i32| (1.0 / 62.0_f64).powi(k);
    let expected = pairs * (29.0 * p(3) / 22.0 + 56.0 * p(4));
    let (shared_v2, shared_v1) = (shared_windows(&v2), shared_windows(&v1));
    eprintln!("shared 4-digit windows: v2 {shared_v2}, v1 {shared_v1}, random {expected:.2}");
    assert!(
        (shared_v2 as f64) <= expected + 6.0 * expected.sqrt() + 3.0,
        "v2: {shared_v2} shared windows, {expected:.2} expected"
    );
    assert!(shared_v1 as f64 > 1000.0 * expected, "v1: {shared_v1}");

    // A leading digit's commonest value is about N / 22; a fixed digit would be N.
    let (worst_v2, worst_v1) = (worst_position_frequency(&v2), worst_position_frequency(&v1));
    eprintln!("commonest character at one position: v2 {worst_v2}/{N}, v1 {worst_v1}/{N}");
    assert!(
        worst_v2 < N / 8,
        "v2: {worst_v2} of {N} keys share a character"
    );
    assert_eq!(worst_v1, N);

    let has_zero_run = |b: &Vec<u8>| b.windows(4).any(|w| w == b"0000");
    assert_eq!(v2.iter().filter(|b| has_zero_run(b)).count(), 0);
    assert_eq!(v1.iter().filter(|b| has_zero_run(b)).count(), N);
}

proptest! {
    /// A key id's text is the 32-digit lowercase hex of its big-endian value, and parses back.
    #[test]
    fn key_id_text_is_its_value_in_hex(bytes in any::<[u8; 16]>()) {
        let id = KeyId(bytes);
        let text = id.to_string();
        prop_assert_eq!(&text, &format!("{:032x}", id.as_u128()));
        prop_assert_eq!(KeyId::parse_hex(&text), Some(id));
        prop_assert_eq!(shared::lowerhex::encode(&bytes), text);
    }
}
