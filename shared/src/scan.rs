//! What anyone can tell about key texts without a secret: whether a text is a Lynxo key (its
//! environment, its checksum, its hint) or why not, and which keys a longer text contains.
//!
//! The one idea: a key's public CRC32 checksum confirms a match offline, so a secret scanner, a
//! support tool and the edge's hints all stop at [`key::parse`] and never need the keyring. The
//! edge's problem documents take their hints from [`error_hint`]; the JavaScript package
//! (`js/`) exposes [`inspect`] and [`find_keys`] as `inspectKey` and `findKeys`.

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
}
