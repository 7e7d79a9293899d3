//! What anyone can tell about key texts without a secret: whether a text is a Lynxo key (its
//! environment, its checksum, its hint) or why not, and which keys a longer text contains.
//!
//! The one idea: a key's public CRC32 checksum confirms a match offline, so a secret scanner, a
//! support tool and the edge's hints all stop at [`key::parse`] and never need the keyring. The
//! edge's problem documents take their hints from [`error_hint`]; the JavaScript package
//! (`js/`) exposes [`inspect`] and [`find_keys`] as `inspectKey` and `findKeys`; the
//! `lynxo-keys scan` command (`cli/`) finds its candidates itself and confirms each with
//! [`key_at`], which also joins a key split across string literals.

use crate::key::{self, Environment, KeyError};

/// A text that is a well-formed Lynxo key: everything known about it without the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The environment its text names.
    pub environment: Environment,
    /// Its non-secret reminder, `lnx_live_…abcd` ([`key::hint`]).
    pub hint: String,
}

/// Checks `text` as the edge does before any secret: length, whitespace, prefix, characters,
/// checksum and environment tag. An error is one of the checks the text failed; only a key
/// that passes them all can still fail with the keyring (forged, revoked, expired).
pub fn inspect(text: &str) -> Result<Inspection, KeyError> {
    let parsed = key::parse(text)?;
    Ok(Inspection {
        environment: parsed.environment,
        hint: key::hint(text),
    })
}

/// How a person fixes a key that failed a check needing no secret: the `hint` the edge puts in
/// its problem document. `None` for the errors that must look like a revoked key
/// ([`KeyError::is_forgery_class`]): naming them would tell a prober which check failed.
pub fn error_hint(error: &KeyError) -> Option<String> {
    Some(match error {
        KeyError::SurroundingWhitespace => "The key has spaces or line breaks around it. Remove them: exactly one space after `Bearer`, nothing after the key.".to_owned(),
        KeyError::MissingPrefix => "Lynxo keys start with `lnx_`. Check that you copied the whole key and sent it as `Authorization: Bearer <key>`.".to_owned(),
        KeyError::InvalidCharacter { position } => format!("The key has a character no Lynxo key contains, at position {position}: keys are letters, digits and `_` only. It was probably mis-copied."),
        KeyError::InvalidLength { expected, found } => format!("The key has {found} characters but a key has {expected}: part of it was lost or added while copying. Copy it again."),
        KeyError::InvalidChecksum => "The key's checksum does not match: it was mis-copied or mistyped. Copy it again from where you stored it.".to_owned(),
        KeyError::Expired { expired_at } => format!("The key expired at {expired_at} (Unix time). Create a new key in the dashboard."),
        _ => return None,
    })
}

/// A key found in a text by [`find_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// The key text.
    pub text: &'a str,
    /// Its byte offset in the scanned text.
    pub start: usize,
    /// The environment its text names.
    pub environment: Environment,
}

/// Whether `b` is a character of a key's text (`\w` in the scanner regex).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the run of word characters that starts at `from`, looking at most `limit` bytes:
/// `None` when the run is longer (then it is no key, nor part of one).
fn word_run_end(bytes: &[u8], from: usize, limit: usize) -> Option<usize> {
    let window = &bytes[from..bytes.len().min(from.saturating_add(limit + 1))];
    match window.iter().position(|&b| !is_word(b)) {
        Some(len) => Some(from + len),
        None if window.len() <= limit => Some(from + window.len()),
        None => None,
    }
}

/// Quote characters a key may be split at: string literals of C, Python, JavaScript, Go,
/// shell.
const SPLIT_QUOTES: &[u8] = b"\"'`";

/// Longest gap between two pieces of a split key: closing quote, whitespace (line breaks too),
/// an optional `+` or line-continuation `\`, opening quote.
pub const MAX_SPLIT_GAP: usize = 64;

/// Most pieces a split key is joined from.
pub const MAX_SPLIT_PIECES: usize = 16;

/// The most bytes a key found by [`key_at`] spans, split or not: a scanner reading a stream in
/// chunks keeps this much of one chunk for the next.
pub const MAX_SPAN: usize = key::MAX_KEY_LEN + (MAX_SPLIT_PIECES - 1) * MAX_SPLIT_GAP;

/// Where the gap that starts at `from` ends, if it is one a split key may have: only quotes,
/// whitespace, `+` and `\`, starting and ending with a quote, at most [`MAX_SPLIT_GAP`] bytes,
/// and followed by a word character.
fn split_gap_end(bytes: &[u8], from: usize) -> Option<usize> {
    let allowed = |b: u8| SPLIT_QUOTES.contains(&b) || b" \t\r\n+\\".contains(&b);
    let window = &bytes[from..bytes.len().min(from + MAX_SPLIT_GAP + 1)];
    let len = window.iter().position(|&b| !allowed(b))?;
    let gap = &window[..len];
    let quoted = |b: Option<&u8>| b.is_some_and(|b| SPLIT_QUOTES.contains(b));
    (len <= MAX_SPLIT_GAP && quoted(gap.first()) && quoted(gap.last()) && is_word(window[len]))
        .then_some(from + len)
}

/// A key found by [`key_at`]. Its `Debug` shows only the hint.
#[derive(Clone, PartialEq, Eq)]
pub struct Hit {
    /// Byte offset of the key's first character (its `lnx_`).
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
    /// The environment its text names.
    pub environment: Environment,
    /// How many pieces it was joined from: 1 for a key written whole, more for one split
    /// across string literals (`"lnx_live_AB" "CD"`).
    pub pieces: usize,
    text: [u8; key::MAX_KEY_LEN],
    len: usize,
}

impl Hit {
    /// The key's text, its pieces joined: for a caller that must send it somewhere (to ask
    /// whether it is still active), never to print.
    pub fn expose(&self) -> &str {
        // Every byte was checked to be a word character, so the text is ASCII.
        core::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }

    /// Its non-secret reminder, `lnx_live_…abcd` ([`key::hint`]).
    pub fn hint(&self) -> String {
        key::hint(self.expose())
    }
}

impl core::fmt::Debug for Hit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hit")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("environment", &self.environment)
            .field("pieces", &self.pieces)
            .field("hint", &self.hint())
            .finish()
    }
}

/// The key that starts at `start` in `bytes`, if one does: `bytes[start..]` begins with `lnx_`
/// after a non-word character, and the word from there, or the words joined across quote
/// splits (`"lnx_live_AB" "CD"`, `'AB''CD'`, `"AB" +\n "CD"`), passes every check that needs no
/// secret ([`key::check_public`]: shape, checksum, encoding, version). The checksum is what
/// keeps a look-alike out: a random text of the right shape passes with odds of one in 62^6.
/// Looks at no more than [`MAX_SPAN`] bytes from `start`.
pub fn key_at(bytes: &[u8], start: usize) -> Option<Hit> {
    if !bytes.get(start..)?.starts_with(key::PREFIX.as_bytes())
        || (start > 0 && is_word(bytes[start - 1]))
    {
        return None;
    }
    let mut text = [0_u8; key::MAX_KEY_LEN];
    let (mut len, mut pos) = (0, start);
    for pieces in 1..=MAX_SPLIT_PIECES {
        let end = word_run_end(bytes, pos, key::MAX_KEY_LEN - len)?;
        let piece = &bytes[pos..end];
        text[len..len + piece.len()].copy_from_slice(piece);
        len += piece.len();
        let joined = core::str::from_utf8(&text[..len]).ok()?;
        if let Ok(parsed) = key::check_public(joined) {
            return Some(Hit {
                start,
                end,
                environment: parsed.environment,
                pieces,
                text,
                len,
            });
        }
        pos = split_gap_end(bytes, end)?;
    }
    None
}

/// The keys in `text`, in order: every match of the scanner regex of `docs/key-format.md`
/// (`\blnx_(?:live|stage|dev)_[0-9A-Za-z]{94}\b`) whose checksum holds. Linear in the text's
/// length: each byte is looked at a bounded number of times, and no match is backtracked into.
pub fn find_keys(text: &str) -> Vec<Found<'_>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find(key::PREFIX) {
        let start = from + offset;
        // The whole run of word characters from here: a key is a whole word, never a part.
        let end = bytes[start..]
            .iter()
            .position(|&b| !is_word(b))
            .map_or(bytes.len(), |len| start + len);
        from = end.max(start + key::PREFIX.len());
        if start > 0 && is_word(bytes[start - 1]) {
            continue;
        }
        let candidate = &text[start..end];
        if let Ok(parsed) = key::parse(candidate) {
            found.push(Found {
                text: candidate,
                start,
                environment: parsed.environment,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Claims, KeyId, issue};
    use crate::mac::{Keyring, Secret};
    use crate::scope::Permission;

    fn key(environment: Environment, n: u8) -> String {
        let ring = Keyring::new(1, &[(1, Secret::new(vec![1; 32]).unwrap())]).unwrap();
        let claims = Claims {
            kid: 1,
            account_id: 42,
            key_id: KeyId([n; 16]),
            environment,
            scopes: Permission::ReadOnly.scopes(),
            issued_at: 1_700_000_000,
            expires_at: None,
        };
        issue(&claims, &ring).unwrap().into_inner()
    }

    #[test]
    fn inspect_tells_the_environment_and_the_hint() {
        let live = key(Environment::Production, 1);
        let found = inspect(&live).unwrap();
        assert_eq!(found.environment, Environment::Production);
        assert!(found.hint.starts_with("lnx_live_…"), "{}", found.hint);
        assert_eq!(found.hint.len(), "lnx_live_…".len() + 4);
        let mut typo = live.clone();
        typo.replace_range(20..21, if &live[20..21] == "A" { "B" } else { "A" });
        assert_eq!(inspect(&typo), Err(KeyError::InvalidChecksum));
        assert_eq!(
            inspect(&format!(" {live}")),
            Err(KeyError::SurroundingWhitespace)
        );
        assert_eq!(inspect("sk_live_abc"), Err(KeyError::MissingPrefix));
    }

    #[test]
    fn hints_only_where_they_leak_nothing() {
        for (error, hinted) in [
            (KeyError::SurroundingWhitespace, true),
            (KeyError::MissingPrefix, true),
            (KeyError::InvalidCharacter { position: 3 }, true),
            (
                KeyError::InvalidLength {
                    expected: 103,
                    found: 9,
                },
                true,
            ),
            (KeyError::InvalidChecksum, true),
            (KeyError::Expired { expired_at: 5 }, true),
            (KeyError::UnknownEnvironment, false),
            (KeyError::Malformed, false),
            (KeyError::UnsupportedVersion(9), false),
            (KeyError::UnknownKid(9), false),
            (KeyError::BadTag, false),
        ] {
            assert_eq!(error_hint(&error).is_some(), hinted, "{error:?}");
            assert!(!(hinted && error.is_forgery_class()), "{error:?}");
        }
        let hint = error_hint(&KeyError::InvalidCharacter { position: 17 }).unwrap();
        assert!(hint.contains("position 17"), "{hint}");
    }

    #[test]
    fn find_keys_finds_whole_confirmed_keys_only() {
        let live = key(Environment::Production, 1);
        let dev = key(Environment::Development, 2);
        let mut typo = dev.clone();
        typo.replace_range(30..31, if &dev[30..31] == "A" { "B" } else { "A" });
        let text = format!(
            "config:\n  LIVE={live}\n  typo={typo} x{dev} {dev}_more\n  \"{dev}\", é {live}."
        );
        let found = find_keys(&text);
        let got: Vec<(&str, usize)> = found.iter().map(|f| (f.text, f.start)).collect();
        let live_at = text.find(&live).unwrap();
        let dev_at = text.find(&format!("\"{dev}")).unwrap() + 1;
        let last_at = text.rfind(&live).unwrap();
        assert_eq!(
            got,
            [
                (live.as_str(), live_at),
                (dev.as_str(), dev_at),
                (live.as_str(), last_at)
            ]
        );
        assert_eq!(found[1].environment, Environment::Development);
        for text in ["", "lnx_", "lnx_lnx_live_", "é", "lnx_live_é"] {
            assert_eq!(find_keys(text), [], "{text:?}");
        }
    }

    /// Every key `key_at` finds in `text`, as (start, end, pieces, text).
    fn hits(text: &str) -> Vec<(usize, usize, usize, String)> {
        (0..text.len())
            .filter_map(|i| key_at(text.as_bytes(), i))
            .map(|h| (h.start, h.end, h.pieces, h.expose().to_owned()))
            .collect()
    }

    #[test]
    fn key_at_joins_keys_split_only_by_quotes() {
        let live = key(Environment::Production, 3);
        let (a, b, c) = (&live[..40], &live[40..90], &live[90..]);
        for (text, pieces) in [
            (format!("x = \"{live}\";"), 1),
            (format!("x = \"{a}\" \"{b}{c}\";"), 2),
            (format!("K='{a}''{b}'\"{c}\""), 3),
            (format!("K={a}'{b}{c}'"), 2),
            (format!("k = (\"{a}\"\n     \"{b}{c}\")"), 2),
            (format!("k = \"{a}\" +\r\n  \"{b}\" + `{c}`"), 3),
            (format!("k = '{a}' \\\n '{b}{c}'"), 2),
        ] {
            let found = hits(&text);
            assert_eq!(found.len(), 1, "{text}");
            let (start, end, got_pieces, got) = &found[0];
            assert_eq!((got, *got_pieces), (&live, pieces), "{text}");
            assert_eq!(*start, text.find("lnx_").unwrap(), "{text}");
            assert_eq!(&text[end - c.len()..*end], c, "{text}");
        }
    }

    #[test]
    fn key_at_refuses_what_is_not_a_whole_confirmed_key() {
        let live = key(Environment::Production, 4);
        let (a, b) = live.split_at(50);
        let mut typo = live.clone();
        typo.replace_range(60..61, if &live[60..61] == "A" { "B" } else { "A" });
        let filler = "\"\" ".repeat(MAX_SPLIT_GAP / 3);
        for text in [
            typo.clone(),
            format!("x{live}"),
            format!("{live}x"),
            format!("{live}_"),
            format!("\"{a}\" x \"{b}\""),
            format!("\"{a}\"{}\"{b}\"", " ".repeat(MAX_SPLIT_GAP)),
            format!("{a} {b}"),
            format!("\"{a}\" {filler}\"{b}\""),
            format!("{a}é{b}"),
            "lnx_".repeat(200),
        ] {
            assert_eq!(hits(&text), [], "{text}");
        }
        // A split with the most pieces allowed is found, one more piece is not.
        let split = |n: usize| {
            let pieces: Vec<&str> = (0..n)
                .map(|i| &live[i * 6..if i + 1 == n { live.len() } else { i * 6 + 6 }])
                .collect();
            format!("'{}'", pieces.join("''"))
        };
        assert_eq!(hits(&split(MAX_SPLIT_PIECES)).len(), 1);
        assert_eq!(hits(&split(MAX_SPLIT_PIECES + 1)), []);
        assert!(format!("{:?}", key_at(live.as_bytes(), 0).unwrap()).contains("…"));
        assert!(!format!("{:?}", key_at(live.as_bytes(), 0).unwrap()).contains(&live[20..60]));
    }

    #[test]
    fn the_public_check_refuses_what_no_issuer_writes() {
        use crate::key::{PAYLOAD_LEN, check_public, encode_raw};
        let live = key(Environment::Production, 5);
        assert!(check_public(&live).is_ok());
        // Valid checksums over payloads no issuer writes: reserved version byte, a chunk out
        // of range, a v2 header naming another version.
        let mut reserved = [7_u8; PAYLOAD_LEN];
        reserved[0] = 0;
        let text = encode_raw("live", &reserved);
        assert!(inspect(&text).is_ok());
        assert_eq!(
            check_public(&text).map(|_| ()),
            Err(KeyError::UnsupportedVersion(0))
        );
        let mut overflow = encode_raw("live", &[9_u8; PAYLOAD_LEN]);
        overflow.replace_range(9..10, "z");
        let overflow = key::with_checksum(overflow[..overflow.len() - 6].to_owned());
        assert!(inspect(&overflow).is_ok());
        assert_eq!(
            check_public(&overflow).map(|_| ()),
            Err(KeyError::Malformed)
        );
        let mut other = [0_u8; PAYLOAD_LEN];
        other[0] = 200;
        let other = encode_raw("live", &other);
        assert!(matches!(check_public(&other), Err(KeyError::UnsupportedVersion(v)) if v != 2));
    }
}
