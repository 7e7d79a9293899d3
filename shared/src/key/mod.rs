//! The API key format: `lnx_<env>_<body>`, versions 1 and 2.
//!
//! A key is self-verifying: its body carries the claims (who, which environment, which scopes,
//! when), a 128-bit tag over them, and a public CRC32 checksum, so the edge decides a key's
//! validity with no network call. Version 2, which [`issue`] writes, seals the claims with
//! deterministic authenticated encryption (SIV), so the body reads as random digits and tells
//! nothing without the keyring; version 1 keys (claims in clear, HMAC tag) keep verifying. Both
//! share one text form, specified with the secret-scanner regex in `docs/key-format.md`:
//!
//! ```text
//! lnx_live_<88 base62 digits: 64 payload bytes><6 digits: CRC32>
//! v1 payload: claims (48 bytes, first byte 1) | HMAC tag (16)
//! v2 payload: version and kid, whitened (2) | SIV tag (16) | sealed claims (46)
//! ```
//!
//! Checks run cheapest first and stop at the first failure, so typos and random strings never
//! reach the crypto: length, whitespace, prefix, shape, checksum, then version, kid, tag, claims,
//! expiry.
//!
//! - `id`: the environments and the key id (its hex wire and storage form);
//! - `text`: the text form: encoding, and the checks that need no secret.

use core::fmt;

use crate::base62;

mod id;
mod text;

use crate::mac::{self, Keyring, Prf, PrfPurpose, Purpose};
use crate::scope::ScopeSet;
pub use id::{Environment, KeyId};
pub use text::{ParsedKey, diagnose, encode_raw, parse, with_checksum};
use text::{all_base62, diagnosis, fast_shape};

/// The product prefix every key starts with. Secret scanners match on it: it must never change.
pub const PREFIX: &str = "lnx_";

/// The format version [`issue`] writes.
pub const FORMAT_VERSION: u8 = V2;

/// The first version, claims in clear: its payload starts with this byte, which no later
/// version writes there.
const V1: u8 = 1;

/// The sealed version.
const V2: u8 = 2;

/// Bytes of a key's payload, in every version: what its 88 base62 digits decode to.
pub const PAYLOAD_LEN: usize = CLAIMS_LEN + TAG_LEN;

/// Bytes of the claims layout: version, kid, then the claim fields. Version 1 carries it in
/// clear; version 2 authenticates it and seals the fields.
pub const CLAIMS_LEN: usize = 48;

/// Bytes of the tag kept in a key (128 bits), in every version.
pub const TAG_LEN: usize = 16;

/// Bytes of the claim fields a v2 key seals: the claims layout after version and kid.
pub const SEALED_LEN: usize = CLAIMS_LEN - 2;

/// Bytes of a v2 key's public header (whitened version and kid), before its tag.
const HEADER_LEN: usize = PAYLOAD_LEN - TAG_LEN - SEALED_LEN;

/// How many versions the whitened header byte can name: `2..=255`. Byte 0 is kept for a future
/// layout and byte 1 is version 1's.
const HEADER_VERSIONS: u16 = 254;

/// Base62 digits of the payload.
pub const PAYLOAD_CHARS: usize = base62::encoded_len(PAYLOAD_LEN);

/// Base62 digits of the CRC32 checksum.
pub const CHECKSUM_CHARS: usize = 6;

/// Characters after `lnx_<env>_`.
pub const BODY_CHARS: usize = PAYLOAD_CHARS + CHECKSUM_CHARS;

/// Longest key text of any environment.
pub const MAX_KEY_LEN: usize = PREFIX.len() + 6 + BODY_CHARS;

/// Longer input is refused before it is scanned: no key is this long even with stray spaces.
/// [`parse`] answers such a text by its length in bytes alone ([`too_long`]).
pub const MAX_INPUT_LEN: usize = 512;

/// What [`parse`] answers for a text of `len` bytes, if its length alone decides it (longer than
/// [`MAX_INPUT_LEN`]): a caller that holds the text elsewhere (the JavaScript package) need not
/// copy it to learn the answer.
pub fn too_long(len: usize) -> Option<KeyError> {
    (len > MAX_INPUT_LEN).then_some(KeyError::InvalidLength {
        expected: MAX_KEY_LEN,
        found: len,
    })
}

const FLAG_EXPIRES: u8 = 0b0000_0001;

/// What a key says about itself. Everything here is authenticated by the key's tag; in a v2 key
/// everything but `kid` is also sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Signing-key id: which keyring entry signed this key.
    pub kid: u8,
    /// The account (tenant) that owns the key.
    pub account_id: u64,
    /// The key's own id, 128 random bits from the issuer.
    pub key_id: KeyId,
    /// Where the key works.
    pub environment: Environment,
    /// What the key may do.
    pub scopes: ScopeSet,
    /// Unix seconds when the key was issued.
    pub issued_at: u64,
    /// Unix seconds from which the key is refused; `None` (the default) never expires.
    pub expires_at: Option<u64>,
}

impl Claims {
    /// The claims layout under `version`: what a v1 key carries and what a v2 key's tag covers.
    fn to_bytes(self, version: u8) -> [u8; CLAIMS_LEN] {
        let mut b = [0_u8; CLAIMS_LEN];
        b[0] = version;
        b[1] = self.kid;
        b[2] = self.environment.code();
        b[3] = if self.expires_at.is_some() {
            FLAG_EXPIRES
        } else {
            0
        };
        b[4..8].copy_from_slice(&self.scopes.bits().to_be_bytes());
        b[8..16].copy_from_slice(&self.account_id.to_be_bytes());
        b[16..32].copy_from_slice(&self.key_id.0);
        b[32..40].copy_from_slice(&self.issued_at.to_be_bytes());
        b[40..48].copy_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        b
    }

    /// Reads claims whose tag has already been checked (byte 0, the version, is the caller's).
    /// Anything an issuer never writes is refused, so each claims value has exactly one byte
    /// form.
    fn from_bytes(b: &[u8; CLAIMS_LEN]) -> Result<Self, KeyError> {
        let u64_at = |i: usize| {
            let mut x = [0; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(x)
        };
        let environment = Environment::from_code(b[2]).ok_or(KeyError::Malformed)?;
        let scopes = ScopeSet::from_bits(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
            .ok_or(KeyError::Malformed)?;
        let expires = u64_at(40);
        let expires_at = match b[3] {
            0 if expires == 0 => None,
            FLAG_EXPIRES => Some(expires),
            _ => return Err(KeyError::Malformed),
        };
        let mut key_id = [0; 16];
        key_id.copy_from_slice(&b[16..32]);
        Ok(Self {
            kid: b[1],
            account_id: u64_at(8),
            key_id: KeyId(key_id),
            environment,
            scopes,
            issued_at: u64_at(32),
            expires_at,
        })
    }
}

/// A full API key. Shown to its owner once; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// The key text, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key text, consuming the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// A non-secret reminder of the key for lists: `lnx_live_…` and its last four characters.
    pub fn hint(&self) -> String {
        hint(&self.0)
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainKey({})", self.hint())
    }
}

/// A non-secret reminder of a key text: its prefix and environment, then its last four
/// characters (part of the public checksum).
pub fn hint(text: &str) -> String {
    if !text.is_ascii() {
        return "…".to_owned();
    }
    let head_len = text[PREFIX.len().min(text.len())..]
        .find('_')
        .map_or(0, |i| PREFIX.len() + i + 1);
    let tail_start = text.len().saturating_sub(4).max(head_len);
    let (head, tail) = (&text[..head_len], &text[tail_start..]);
    format!("{head}…{tail}")
}

/// Why [`issue`] refused claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The claims name a kid the keyring does not hold.
    #[error("kid {0} is not in the keyring")]
    UnknownKid(u8),
}

/// Why a key text was refused. The first five variants are found without any secret and may be
/// told to the caller as hints; `UnknownKid`, `BadTag` and `UnsupportedVersion` must look the same
/// to a caller as a revoked key (see [`KeyError::is_forgery_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text has spaces, tabs or newlines before or after the key (a copy-paste slip).
    #[error("the key has whitespace around it")]
    SurroundingWhitespace,
    /// The text does not start with `lnx_`: not a Lynxo key (or a key with its start cut off).
    #[error("the key does not start with `lnx_`")]
    MissingPrefix,
    /// The text has a character that no key contains (only letters, digits and `_`).
    #[error("the key has an invalid character at position {position}")]
    InvalidCharacter {
        /// Zero-based offset of the first such character.
        position: usize,
    },
    /// The text is too long or too short for a key: characters were lost or added.
    #[error("the key has {found} characters; a key has {expected}")]
    InvalidLength {
        /// Length of a key of this environment (or the longest key, without one).
        expected: usize,
        /// Length of the text.
        found: usize,
    },
    /// The checksum does not match: the key was mis-copied or mistyped.
    #[error("the key's checksum does not match; it was probably mis-copied")]
    InvalidChecksum,
    /// The key's environment tag is not one of `dev`, `stage`, `live`.
    #[error("the key names an unknown environment")]
    UnknownEnvironment,
    /// The checksum is right but the body is no key's encoding: a chunk out of range, claims
    /// no issuer writes, or an environment tag that disagrees with the authenticated one.
    #[error("the key is malformed")]
    Malformed,
    /// The claims are of a format version this build does not know.
    #[error("unsupported key format version {0}")]
    UnsupportedVersion(u8),
    /// No signing key with this id is in the keyring.
    #[error("unknown signing key id {0}")]
    UnknownKid(u8),
    /// The tag does not match the claims (v1) or the sealed claims (v2): forged or tampered.
    #[error("the key's signature does not match")]
    BadTag,
    /// The key expired at this Unix time.
    #[error("the key expired at {expired_at}")]
    Expired {
        /// Unix seconds of expiry.
        expired_at: u64,
    },
    /// The key is of another environment than the endpoint serves (found without a secret,
    /// after the public checks).
    #[error("a {key} key, but the endpoint serves {endpoint}")]
    WrongEnvironment {
        /// The environment named in the key.
        key: Environment,
        /// The environment the endpoint serves.
        endpoint: Environment,
    },
}

impl KeyError {
    /// A stable, machine-readable code for the error.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::SurroundingWhitespace => "surrounding_whitespace",
            Self::MissingPrefix => "missing_prefix",
            Self::InvalidCharacter { .. } => "invalid_character",
            Self::InvalidLength { .. } => "invalid_length",
            Self::InvalidChecksum => "invalid_checksum",
            Self::UnknownEnvironment => "unknown_environment",
            Self::Malformed => "malformed",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadTag => "bad_tag",
            Self::Expired { .. } => "expired",
            Self::WrongEnvironment { .. } => "wrong_environment",
        }
    }

    /// Errors that only a key which passed its public checksum can produce: forged, tampered, or
    /// signed by a retired signing key. Callers must answer these exactly like a revoked key, so
    /// a prober learns nothing about which check failed.
    pub const fn is_forgery_class(&self) -> bool {
        matches!(
            self,
            Self::UnknownEnvironment
                | Self::Malformed
                | Self::UnsupportedVersion(_)
                | Self::UnknownKid(_)
                | Self::BadTag
        )
    }
}

/// Seals `claims` as a v2 key under the keyring entry `claims.kid` and returns the key text.
pub fn issue(claims: &Claims, keyring: &Keyring) -> Result<PlainKey, IssueError> {
    let payload = seal(&claims.to_bytes(V2), keyring).ok_or(IssueError::UnknownKid(claims.kid))?;
    Ok(PlainKey(encode_raw(claims.environment.tag(), &payload)))
}

/// Signs `claims` as a version 1 key (claims in clear), as keys were issued before v2. Only for
/// tests that hold v1 keys to verifying: nothing issues v1 keys any more.
#[cfg(feature = "testkit")]
pub fn issue_v1(claims: &Claims, keyring: &Keyring) -> Result<PlainKey, IssueError> {
    let mac = keyring
        .mac(claims.kid, Purpose::KeyTag)
        .ok_or(IssueError::UnknownKid(claims.kid))?;
    let mut payload = [0_u8; PAYLOAD_LEN];
    payload[..CLAIMS_LEN].copy_from_slice(&claims.to_bytes(V1));
    let tag = mac.sign(&payload[..CLAIMS_LEN]);
    payload[CLAIMS_LEN..].copy_from_slice(&tag[..TAG_LEN]);
    Ok(PlainKey(encode_raw(claims.environment.tag(), &payload)))
}

/// Seals any claims layout, as [`issue`] does but without checking its fields, under version
/// `claims[0]` (at least 2) and kid `claims[1]`: for tests and fuzzers that need a genuine tag
/// on claims no issuer writes. `None` for a version below 2 or a kid not in the ring.
#[cfg(feature = "testkit")]
pub fn seal_raw(claims: &[u8; CLAIMS_LEN], keyring: &Keyring) -> Option<[u8; PAYLOAD_LEN]> {
    (claims[0] >= V2).then(|| seal(claims, keyring)).flatten()
}

/// The v2 payload of a claims layout whose version byte is at least 2: SIV.
///
/// `tag = PRF_siv(claims)[..16]`, then `sealed = fields ^ PRF_stream(tag || 0) || PRF_stream(tag
/// || 1)`, where `fields` is the layout after version and kid; the header carries version and
/// kid, whitened with the tag so it too reads as random. Three SHA-256 compressions.
fn seal(claims: &[u8; CLAIMS_LEN], keyring: &Keyring) -> Option<[u8; PAYLOAD_LEN]> {
    let (version, kid) = (claims[0], claims[1]);
    let siv = keyring.prf(kid, PrfPurpose::KeySiv)?;
    let stream = keyring.prf(kid, PrfPurpose::KeyStream)?;
    let mut tag = [0_u8; TAG_LEN];
    tag.copy_from_slice(&siv.eval(claims)[..TAG_LEN]);
    let mut payload = [0_u8; PAYLOAD_LEN];
    payload[..HEADER_LEN].copy_from_slice(&write_header(version, kid, &tag));
    payload[HEADER_LEN..HEADER_LEN + TAG_LEN].copy_from_slice(&tag);
    let mut sealed = [0_u8; SEALED_LEN];
    sealed.copy_from_slice(&claims[2..]);
    xor_keystream(&mut sealed, stream, &tag);
    payload[HEADER_LEN + TAG_LEN..].copy_from_slice(&sealed);
    Some(payload)
}

/// Reverses [`seal`] and checks the tag: the claims layout of a genuine v2 payload.
fn open(payload: &[u8; PAYLOAD_LEN], keyring: &Keyring) -> Result<[u8; CLAIMS_LEN], KeyError> {
    let (header, rest) = payload.split_at(HEADER_LEN);
    let (tag, sealed) = rest.split_at(TAG_LEN);
    let mut tag_bytes = [0_u8; TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    let (version, kid) = read_header([header[0], header[1]], &tag_bytes);
    if version != V2 {
        return Err(KeyError::UnsupportedVersion(version));
    }
    let (Some(siv), Some(stream)) = (
        keyring.prf(kid, PrfPurpose::KeySiv),
        keyring.prf(kid, PrfPurpose::KeyStream),
    ) else {
        return Err(KeyError::UnknownKid(kid));
    };
    let mut fields = [0_u8; SEALED_LEN];
    fields.copy_from_slice(sealed);
    xor_keystream(&mut fields, stream, &tag_bytes);
    let mut claims = [0_u8; CLAIMS_LEN];
    claims[0] = version;
    claims[1] = kid;
    claims[2..].copy_from_slice(&fields);
    if !mac::tag_matches(&siv.eval(&claims), tag, TAG_LEN) {
        return Err(KeyError::BadTag);
    }
    Ok(claims)
}

/// Checks a v1 payload's HMAC tag: its claims layout, in clear.
fn open_v1(payload: &[u8; PAYLOAD_LEN], keyring: &Keyring) -> Result<[u8; CLAIMS_LEN], KeyError> {
    let (claims, tag) = payload.split_at(CLAIMS_LEN);
    let kid = claims[1];
    let mac = keyring
        .mac(kid, Purpose::KeyTag)
        .ok_or(KeyError::UnknownKid(kid))?;
    if !mac.verify(claims, tag, TAG_LEN) {
        return Err(KeyError::BadTag);
    }
    let mut fixed = [0_u8; CLAIMS_LEN];
    fixed.copy_from_slice(claims);
    Ok(fixed)
}

/// XORs the 46 sealed bytes with the keystream of `tag`: `PRF(tag || 0) || PRF(tag || 1)`.
fn xor_keystream(bytes: &mut [u8; SEALED_LEN], stream: &Prf, tag: &[u8; TAG_LEN]) {
    let mut input = [0_u8; TAG_LEN + 1];
    input[..TAG_LEN].copy_from_slice(tag);
    let first = stream.eval(&input);
    input[TAG_LEN] = 1;
    let second = stream.eval(&input);
    let (head, tail) = bytes.split_at_mut(32);
    head.iter_mut().zip(first).for_each(|(b, k)| *b ^= k);
    tail.iter_mut().zip(second).for_each(|(b, k)| *b ^= k);
}

/// The public whitening a v2 header takes from its tag: an offset in `0..254` for the version
/// byte and a mask for the kid byte. Public on purpose: version and kid are read before any
/// secret is chosen; the whitening only keeps them from showing as fixed digits.
fn whitening(tag: &[u8; TAG_LEN]) -> (u16, u8) {
    (
        u16::from_be_bytes([tag[0], tag[1]]) % HEADER_VERSIONS,
        tag[2],
    )
}

/// The header of a v2-family payload: `2 + (version - 2 + offset) mod 254`, then `kid ^ mask`.
/// Byte 0 is never 0 or 1, so a v1 key (byte 0 is 1) is told apart without any secret.
fn write_header(version: u8, kid: u8, tag: &[u8; TAG_LEN]) -> [u8; HEADER_LEN] {
    let (offset, mask) = whitening(tag);
    let v = (u16::from(version - V2) + offset) % HEADER_VERSIONS;
    [V2 + v as u8, kid ^ mask]
}

/// The version and kid of a header [`write_header`] wrote. Byte 0 is at least 2 ([`verify`]
/// sends 0 and 1 elsewhere); the subtraction wraps rather than panic on the hot path.
fn read_header(header: [u8; HEADER_LEN], tag: &[u8; TAG_LEN]) -> (u8, u8) {
    let (offset, mask) = whitening(tag);
    let v = (u16::from(header[0].wrapping_sub(V2)) + HEADER_VERSIONS - offset) % HEADER_VERSIONS;
    (V2 + v as u8, header[1] ^ mask)
}

/// Every check of a key text that needs no secret: [`parse`] (shape, length, checksum), then
/// the payload's encoding (each chunk in range: `Malformed`) and its format version, which the
/// header tells without a secret (`UnsupportedVersion`). What a secret scanner can confirm
/// offline: a text that passes was written by an issuer, or forged by someone who computed a
/// checksum on purpose; only the keyring tells those apart ([`check`] runs the same steps first).
pub fn check_public(text: &str) -> Result<ParsedKey<'_>, KeyError> {
    let parsed = parse(text)?;
    public_version(&decode_payload(text, &parsed)?)?;
    Ok(parsed)
}

/// The payload bytes of a text whose shape and checksum passed.
fn decode_payload(text: &str, parsed: &ParsedKey<'_>) -> Result<[u8; PAYLOAD_LEN], KeyError> {
    let mut payload = [0_u8; PAYLOAD_LEN];
    base62::decode_into(parsed.payload, &mut payload).map_err(|e| match e {
        // A non-digit that the checksum let through: report it as `parse` would.
        base62::DecodeError::InvalidCharacter(_) => diagnosis(text),
        _ => KeyError::Malformed,
    })?;
    Ok(payload)
}

/// The format version of a payload, read with no secret: the first byte tells the versions
/// apart (`1`: v1; `0`: reserved), and a v2-family header names its version through the public
/// whitening. Only 1 and 2 pass.
fn public_version(payload: &[u8; PAYLOAD_LEN]) -> Result<u8, KeyError> {
    match payload[0] {
        V1 => Ok(V1),
        0 => Err(KeyError::UnsupportedVersion(0)),
        _ => {
            let mut tag = [0_u8; TAG_LEN];
            tag.copy_from_slice(&payload[HEADER_LEN..HEADER_LEN + TAG_LEN]);
            match read_header([payload[0], payload[1]], &tag) {
                (V2, _) => Ok(V2),
                (version, _) => Err(KeyError::UnsupportedVersion(version)),
            }
        }
    }
}

/// Verifies a key text at time `now` (Unix seconds) and returns its claims.
///
/// This does not consult revocation: the caller checks [`Claims::key_id`] against its list.
pub fn verify(text: &str, keyring: &Keyring, now: u64) -> Result<Claims, KeyError> {
    let claims = check(text, keyring, None)?;
    if let Some(expired_at) = claims.expires_at {
        if now >= expired_at {
            return Err(KeyError::Expired { expired_at });
        }
    }
    Ok(claims)
}

/// [`verify`] without the clock: the public checks, then (if `endpoint` names one) the
/// environment, then the tag. The claims come back whatever their expiry, so a caller that
/// refuses an expired key still knows, from this one check, whose key it was.
pub fn check(
    text: &str,
    keyring: &Keyring,
    endpoint: Option<Environment>,
) -> Result<Claims, KeyError> {
    let parsed = fast_shape(text).ok_or_else(|| diagnosis(text))?;
    // Another environment's key is named before any secret is used (a person can fix that),
    // once every public check has passed: those come first, as `parse` orders them.
    if let Some(endpoint) = endpoint.filter(|e| *e != parsed.environment) {
        if !all_base62(parsed.payload) {
            return Err(diagnosis(text));
        }
        return Err(KeyError::WrongEnvironment {
            key: parsed.environment,
            endpoint,
        });
    }
    let payload = decode_payload(text, &parsed)?;
    let claims_bytes = match public_version(&payload)? {
        V1 => open_v1(&payload, keyring)?,
        _ => open(&payload, keyring)?,
    };
    let claims = Claims::from_bytes(&claims_bytes)?;
    if claims.environment != parsed.environment {
        return Err(KeyError::Malformed);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;
    use crate::scope::{Permission, Scope};

    #[test]
    fn a_text_past_the_input_limit_is_answered_by_its_length() {
        let key = issue(&claims(), &keyring()).unwrap().into_inner();
        for text in [
            "a".repeat(MAX_INPUT_LEN + 1),
            format!("{key}{}", " ".repeat(MAX_INPUT_LEN)),
            "é".repeat(MAX_INPUT_LEN),
        ] {
            assert_eq!(parse(&text).map(|_| ()), Err(too_long(text.len()).unwrap()));
        }
        assert_eq!(too_long(MAX_INPUT_LEN), None);
    }

    fn keyring() -> Keyring {
        Keyring::new(
            1,
            &[
                (1, Secret::new(vec![1; 32]).unwrap()),
                (2, Secret::new(vec![2; 32]).unwrap()),
            ],
        )
        .unwrap()
    }

    fn claims() -> Claims {
        Claims {
            kid: 1,
            account_id: 42,
            key_id: KeyId([7; 16]),
            environment: Environment::Production,
            scopes: Permission::ReadOnly.scopes(),
            issued_at: 1_700_000_000,
            expires_at: None,
        }
    }

    #[test]
    fn issued_key_has_the_documented_shape() {
        let key = issue(&claims(), &keyring()).unwrap();
        let text = key.expose();
        assert!(text.starts_with("lnx_live_"));
        assert_eq!(text.len(), "lnx_live_".len() + BODY_CHARS);
        assert_eq!(BODY_CHARS, 94);
        assert!(text.len() <= MAX_KEY_LEN);
        assert!(!format!("{key:?}").contains(&text[20..40]));
        assert_eq!(key.hint(), format!("lnx_live_…{}", &text[text.len() - 4..]));
    }

    #[test]
    fn round_trips_and_checks_in_order() {
        let ring = keyring();
        let mut c = claims();
        c.expires_at = Some(1_800_000_000);
        c.scopes = ScopeSet::EMPTY.with(Scope::JobsWrite);
        let text = issue(&c, &ring).unwrap().into_inner();
        assert_eq!(verify(&text, &ring, 1_799_999_999), Ok(c));
        assert_eq!(
            verify(&text, &ring, 1_800_000_000),
            Err(KeyError::Expired {
                expired_at: 1_800_000_000
            })
        );
        assert_eq!(
            verify(&format!(" {text}"), &ring, 0),
            Err(KeyError::SurroundingWhitespace)
        );
        assert_eq!(verify(&text[4..], &ring, 0), Err(KeyError::MissingPrefix));
        let only_kid2 = Keyring::new(2, &[(2, Secret::new(vec![2; 32]).unwrap())]).unwrap();
        assert_eq!(verify(&text, &only_kid2, 0), Err(KeyError::UnknownKid(1)));
        let other_secret = Keyring::new(1, &[(1, Secret::new(vec![9; 32]).unwrap())]).unwrap();
        assert_eq!(verify(&text, &other_secret, 0), Err(KeyError::BadTag));
    }

    #[test]
    fn v2_header_reads_back_without_any_secret_and_never_looks_like_v1() {
        for seed in 0_u8..40 {
            let tag: [u8; TAG_LEN] =
                core::array::from_fn(|i| seed.wrapping_mul(97) ^ (i as u8).wrapping_mul(31));
            for version in V2..=u8::MAX {
                for kid in [0, 1, 2, 127, 255] {
                    let header = write_header(version, kid, &tag);
                    assert!(header[0] >= V2, "{header:?}");
                    assert_eq!(read_header(header, &tag), (version, kid));
                }
            }
        }
    }

    #[test]
    fn v2_payload_is_sealed() {
        let ring = keyring();
        let c = claims();
        let text = issue(&c, &ring).unwrap().into_inner();
        let start = text.rfind('_').unwrap() + 1;
        let payload = base62::decode(&text[start..start + PAYLOAD_CHARS]).unwrap();
        let v1_layout = c.to_bytes(V1);
        for field in [&v1_layout[8..16], &v1_layout[16..32], &v1_layout[32..40]] {
            assert!(!payload.windows(field.len()).any(|w| w == field));
        }
        assert_ne!(payload[0], V1);
        // Same claims, same key: sealing is deterministic.
        assert_eq!(issue(&c, &ring).unwrap().into_inner(), text);
    }

    #[test]
    fn unknown_kid_is_refused_at_issue() {
        let mut c = claims();
        c.kid = 77;
        assert_eq!(issue(&c, &keyring()), Err(IssueError::UnknownKid(77)));
    }

    #[test]
    fn key_id_hex_round_trips() {
        let id = KeyId([0xAB; 16]);
        assert_eq!(KeyId::parse_hex(&id.to_string()), Some(id));
        assert_eq!(KeyId::parse_hex("AB"), None);
        assert_eq!(KeyId::parse_hex(&"AB".repeat(16)), None);
    }
}
