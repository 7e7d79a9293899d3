//! The API key format, version 1: `lnx_<env>_<body>`.
//!
//! A key is self-verifying: its body carries the claims (who, which environment, which scopes,
//! when), an HMAC-SHA256 tag over them, and a public CRC32 checksum, so the edge decides a key's
//! validity with no network call. The layout is specified, with the secret-scanner regex, in
//! `docs/key-format.md`:
//!
//! ```text
//! lnx_live_<88 base62 digits: 48 bytes of claims + 16 bytes of tag><6 digits: CRC32>
//! ```
//!
//! Checks run cheapest first and stop at the first failure, so typos and random strings never
//! reach the HMAC: length, whitespace, prefix, shape, checksum, then version, kid, tag, expiry.

use core::fmt;

use crate::base62;
use crate::mac::{Keyring, Purpose};
use crate::scope::ScopeSet;

/// The product prefix every key starts with. Secret scanners match on it: it must never change.
pub const PREFIX: &str = "lnx_";

/// The claims layout this crate issues.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of signed claims.
pub const CLAIMS_LEN: usize = 48;

/// Bytes of the HMAC-SHA256 tag kept in a key (128 bits).
pub const TAG_LEN: usize = 16;

/// Base62 digits of the claims and tag.
pub const PAYLOAD_CHARS: usize = base62::encoded_len(CLAIMS_LEN + TAG_LEN);

/// Base62 digits of the CRC32 checksum.
pub const CHECKSUM_CHARS: usize = 6;

/// Characters after `lnx_<env>_`.
pub const BODY_CHARS: usize = PAYLOAD_CHARS + CHECKSUM_CHARS;

/// Longest key text of any environment.
pub const MAX_KEY_LEN: usize = PREFIX.len() + 6 + BODY_CHARS;

/// Longer input is refused before it is scanned: no key is this long even with stray spaces.
const MAX_INPUT_LEN: usize = 512;

const FLAG_EXPIRES: u8 = 0b0000_0001;

/// The environment a key belongs to. A key works only in its own environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Environment {
    /// For local work and CI: `lnx_dev_`.
    Development,
    /// For pre-production: `lnx_stage_`.
    Staging,
    /// For real traffic: `lnx_live_`.
    Production,
}

impl Environment {
    /// Every environment, in a stable order.
    pub const ALL: [Self; 3] = [Self::Development, Self::Staging, Self::Production];

    /// The tag written in a key's text: `dev`, `stage` or `live`.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Development => "dev",
            Self::Staging => "stage",
            Self::Production => "live",
        }
    }

    /// The name used in configuration and APIs: `development`, `staging` or `production`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    /// Parses a key-text tag (`live`, ...).
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.tag() == tag)
    }

    /// Parses a name (`production`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    const fn code(self) -> u8 {
        match self {
            Self::Development => 0,
            Self::Staging => 1,
            Self::Production => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's public identifier: 128 random bits chosen by the issuer. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The id as one big-endian number (how revocation lists sort it).
    pub fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Parses the 32-digit lowercase hex form that [`fmt::Display`] writes.
    pub fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u128::from_str_radix(text, 16)
            .ok()
            .map(|v| Self(v.to_be_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What a key says about itself. Everything here is signed.
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
    fn to_bytes(self) -> [u8; CLAIMS_LEN] {
        let mut b = [0_u8; CLAIMS_LEN];
        b[0] = FORMAT_VERSION;
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

    /// Reads claims whose tag has already been checked. Anything a v1 issuer never writes is
    /// refused, so each claims value has exactly one byte form.
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
    /// The checksum is right but the body is not a v1 encoding.
    #[error("the key is malformed")]
    Malformed,
    /// The claims are of a format version this build does not know.
    #[error("unsupported key format version {0}")]
    UnsupportedVersion(u8),
    /// No signing key with this id is in the keyring.
    #[error("unknown signing key id {0}")]
    UnknownKid(u8),
    /// The HMAC tag does not match the claims: forged or tampered.
    #[error("the key's signature does not match")]
    BadTag,
    /// The key expired at this Unix time.
    #[error("the key expired at {expired_at}")]
    Expired {
        /// Unix seconds of expiry.
        expired_at: u64,
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

/// Signs `claims` under the keyring entry `claims.kid` and returns the key text.
pub fn issue(claims: &Claims, keyring: &Keyring) -> Result<PlainKey, IssueError> {
    let mac = keyring
        .mac(claims.kid, Purpose::KeyTag)
        .ok_or(IssueError::UnknownKid(claims.kid))?;
    let mut payload = [0_u8; CLAIMS_LEN + TAG_LEN];
    payload[..CLAIMS_LEN].copy_from_slice(&claims.to_bytes());
    let tag = mac.sign(&payload[..CLAIMS_LEN]);
    payload[CLAIMS_LEN..].copy_from_slice(&tag[..TAG_LEN]);

    let text = encode_raw(claims.environment.tag(), &payload);
    Ok(PlainKey(text))
}

/// Writes `lnx_<env_tag>_<base62 payload><checksum>` for any bytes: [`issue`] uses it with signed
/// claims; tests and fuzzers use it to build keys that pass the checksum but not later checks.
pub fn encode_raw(env_tag: &str, payload: &[u8]) -> String {
    let mut text = String::with_capacity(PREFIX.len() + env_tag.len() + 1 + BODY_CHARS);
    text.push_str(PREFIX);
    text.push_str(env_tag);
    text.push('_');
    base62::encode_into(payload, &mut text);
    with_checksum(text)
}

/// Appends the checksum of `text` to it: the CRC32 (IEEE) of every byte before the checksum,
/// as [`CHECKSUM_CHARS`] base62 digits.
pub fn with_checksum(mut text: String) -> String {
    let crc = crc32fast::hash(text.as_bytes());
    base62::write_digits(u64::from(crc), CHECKSUM_CHARS, &mut text);
    text
}

/// A key text that passed every check that needs no secret: shape, length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The environment named in the text.
    pub environment: Environment,
    /// The base62 digits of claims and tag (all known to be digits).
    pub payload: &'a [u8],
}

/// Checks a key text's shape, length and checksum: what a secret scanner or the edge can tell
/// with no secret. [`verify`] calls this first.
///
/// A well-formed key takes a fast path with no early exits to predict; anything else is handed
/// to [`diagnose`], which runs the checks one by one to name the first that fails. Both accept
/// exactly the same texts (a property test holds them to it).
pub fn parse(text: &str) -> Result<ParsedKey<'_>, KeyError> {
    fast_parse(text).ok_or(()).or_else(|()| diagnose(text))
}

fn fast_parse(text: &str) -> Option<ParsedKey<'_>> {
    let parsed = fast_shape(text)?;
    all_base62(parsed.payload).then_some(parsed)
}

/// Prefix, environment, length and checksum, but not the payload's digits: [`verify`] checks
/// those while decoding them, [`fast_parse`] in a separate pass.
fn fast_shape(text: &str) -> Option<ParsedKey<'_>> {
    let rest = text.as_bytes().strip_prefix(PREFIX.as_bytes())?;
    // The longest environment tag is 5 characters: the separator is within the first 6.
    let sep = rest.iter().take(6).position(|&b| b == b'_')?;
    let environment = Environment::from_tag(core::str::from_utf8(&rest[..sep]).ok()?)?;
    let body = &rest[sep + 1..];
    if body.len() != BODY_CHARS {
        return None;
    }
    // `read_digits` refuses a non-digit among the checksum's characters.
    let (signed, checksum) = text.as_bytes().split_at(text.len() - CHECKSUM_CHARS);
    let crc = base62::read_digits(checksum).ok()?;
    (crc == u64::from(crc32fast::hash(signed))).then(|| ParsedKey {
        environment,
        payload: &body[..PAYLOAD_CHARS],
    })
}

/// The error [`diagnose`] names for a text the fast path refused.
fn diagnosis(text: &str) -> KeyError {
    // `diagnose` accepts only texts the fast path accepts too, so it always finds an error.
    diagnose(text).err().unwrap_or(KeyError::Malformed)
}

/// Whether every byte is a base62 digit; branch-free so the compiler can vectorise it.
fn all_base62(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'A') < 26 || b.wrapping_sub(b'a') < 26)
    })
}

/// Runs the text checks one at a time, cheapest and most helpful first, and returns the first
/// failure: the error a person sees for a malformed key.
pub fn diagnose(text: &str) -> Result<ParsedKey<'_>, KeyError> {
    let bytes = text.as_bytes();
    if bytes.len() > MAX_INPUT_LEN {
        return Err(KeyError::InvalidLength {
            expected: MAX_KEY_LEN,
            found: bytes.len(),
        });
    }
    if text.trim() != text {
        return Err(KeyError::SurroundingWhitespace);
    }
    if !text.starts_with(PREFIX) {
        return Err(KeyError::MissingPrefix);
    }
    if let Some(position) = bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
    {
        return Err(KeyError::InvalidCharacter { position });
    }
    let rest = &text[PREFIX.len()..];
    let Some((env, body)) = rest.split_once('_') else {
        return Err(KeyError::InvalidLength {
            expected: MAX_KEY_LEN,
            found: bytes.len(),
        });
    };
    // An underscore in the body means one was added: the body has none.
    if body.len() != BODY_CHARS || body.contains('_') {
        let expected = PREFIX.len() + env.len() + 1 + BODY_CHARS;
        return Err(KeyError::InvalidLength {
            expected,
            found: bytes.len(),
        });
    }
    let (signed, checksum) = bytes.split_at(bytes.len() - CHECKSUM_CHARS);
    let crc = base62::read_digits(checksum).map_err(|_| KeyError::InvalidChecksum)?;
    if crc != u64::from(crc32fast::hash(signed)) {
        return Err(KeyError::InvalidChecksum);
    }
    let environment = Environment::from_tag(env).ok_or(KeyError::UnknownEnvironment)?;
    Ok(ParsedKey {
        environment,
        payload: &body.as_bytes()[..PAYLOAD_CHARS],
    })
}

/// Verifies a key text at time `now` (Unix seconds) and returns its claims.
///
/// This does not consult revocation: the caller checks [`Claims::key_id`] against its list.
pub fn verify(text: &str, keyring: &Keyring, now: u64) -> Result<Claims, KeyError> {
    let parsed = fast_shape(text).ok_or_else(|| diagnosis(text))?;
    let mut payload = [0_u8; CLAIMS_LEN + TAG_LEN];
    base62::decode_into(parsed.payload, &mut payload).map_err(|e| match e {
        // A non-digit that the checksum let through: report it as `parse` would.
        base62::DecodeError::InvalidCharacter(_) => diagnosis(text),
        _ => KeyError::Malformed,
    })?;
    let (claims_bytes, tag) = payload.split_at(CLAIMS_LEN);
    if claims_bytes[0] != FORMAT_VERSION {
        return Err(KeyError::UnsupportedVersion(claims_bytes[0]));
    }
    let kid = claims_bytes[1];
    let mac = keyring
        .mac(kid, Purpose::KeyTag)
        .ok_or(KeyError::UnknownKid(kid))?;
    if !mac.verify(claims_bytes, tag, TAG_LEN) {
        return Err(KeyError::BadTag);
    }
    let mut fixed = [0_u8; CLAIMS_LEN];
    fixed.copy_from_slice(claims_bytes);
    let claims = Claims::from_bytes(&fixed)?;
    if claims.environment != parsed.environment {
        return Err(KeyError::Malformed);
    }
    if let Some(expired_at) = claims.expires_at {
        if now >= expired_at {
            return Err(KeyError::Expired { expired_at });
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;
    use crate::scope::{Permission, Scope};

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
