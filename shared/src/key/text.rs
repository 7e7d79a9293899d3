//! The key's text form: how a payload is written, and every check that needs no secret
//! (shape, length, checksum), fast for a well-formed key and one by one to name a mistake.

use super::{
    BODY_CHARS, CHECKSUM_CHARS, Environment, KeyError, MAX_KEY_LEN, PAYLOAD_CHARS, PREFIX,
};
use crate::base62;

/// Writes `lnx_<env_tag>_<base62 payload><checksum>` for any bytes: [`issue`](super::issue) uses it with a
/// sealed payload; tests and fuzzers use it to build keys that pass the checksum but not later
/// checks. Not API: public for those tests and the vector generator.
#[doc(hidden)]
pub fn encode_raw(env_tag: &str, payload: &[u8]) -> String {
    let mut text = String::with_capacity(PREFIX.len() + env_tag.len() + 1 + BODY_CHARS);
    text.push_str(PREFIX);
    text.push_str(env_tag);
    text.push('_');
    base62::encode_into(payload, &mut text);
    with_checksum(text)
}

/// Appends the checksum of `text` to it: the CRC32 (IEEE) of every byte before the checksum,
/// as [`CHECKSUM_CHARS`] base62 digits. Not API: public for the vector generator.
#[doc(hidden)]
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
    /// The base62 digits of the payload (all known to be digits).
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
pub(super) fn fast_shape(text: &str) -> Option<ParsedKey<'_>> {
    let rest = text.as_bytes().strip_prefix(PREFIX.as_bytes())?;
    // The longest environment tag is 5 characters: the separator is within the first 6.
    let sep = rest.iter().take(6).position(|&b| b == b'_')?;
    let environment = Environment::ALL
        .into_iter()
        .find(|e| e.tag().as_bytes() == &rest[..sep])?;
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
pub(super) fn diagnosis(text: &str) -> KeyError {
    // `diagnose` accepts only texts the fast path accepts too, so it always finds an error.
    diagnose(text).err().unwrap_or(KeyError::Malformed)
}

/// Whether every byte is a base62 digit; branch-free so the compiler can vectorise it.
pub(super) fn all_base62(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'A') < 26 || b.wrapping_sub(b'a') < 26)
    })
}

/// Runs the text checks one at a time, cheapest and most helpful first, and returns the first
/// failure: the error a person sees for a malformed key.
pub fn diagnose(text: &str) -> Result<ParsedKey<'_>, KeyError> {
    let bytes = text.as_bytes();
    if let Some(error) = super::too_long(bytes.len()) {
        return Err(error);
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
