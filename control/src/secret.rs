//! Secrets by type: a management token, its stored hash, a session id, and secret settings
//! (keyrings, API tokens, passwords). None prints itself: each `Debug` is redacted, so a secret
//! inside a struct that derives `Debug` (a log line, a panic message) shows no more than its
//! hint. The text leaves only through `expose`, at the one place that must send or use it.
//! `tests/no_key_leak.rs` hunts for them where they must not be.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::auth::{TOKEN_PREFIX, random_bytes};
use crate::error::Result;

/// A management token (`lnxm_` + 64 hex digits): shown to its owner once, then only its hash is
/// kept.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken(String);

impl PlainToken {
    /// A new random token (256 bits).
    pub fn generate() -> Result<Self> {
        Ok(Self(format!(
            "{TOKEN_PREFIX}{}",
            hex::encode(random_bytes()?)
        )))
    }

    /// A token a caller presented (not checked: its hash is looked up).
    pub fn presented(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The token text, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores.
    pub fn hash(&self) -> HashedToken {
        HashedToken::of(&self.0)
    }

    /// A non-secret reminder: the prefix and the last four digits.
    pub fn hint(&self) -> String {
        let tail = self.0.get(self.0.len().saturating_sub(4)..).unwrap_or("");
        format!("{TOKEN_PREFIX}…{tail}")
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainToken({})", self.hint())
    }
}

/// Serialized in full: only the response that creates a token serializes one.
impl Serialize for PlainToken {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The SHA-256 of a token or a session id: what the database keeps and looks up. Not the
/// secret, but whoever holds it can match a stolen copy of the table: not printed either.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedToken([u8; 32]);

impl HashedToken {
    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The bytes stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HashedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedToken(..)")
    }
}

/// A dashboard session's id: the cookie's value (256 random bits).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// A new random session id.
    pub fn generate() -> Result<Self> {
        Ok(Self(hex::encode(random_bytes()?)))
    }

    /// The id a request's cookie carries (not checked: its hash is looked up).
    pub fn from_cookie(value: &str) -> Self {
        Self(value.to_owned())
    }

    /// The id, for the `Set-Cookie` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores.
    pub fn hash(&self) -> HashedToken {
        HashedToken::of(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(..)")
    }
}

/// A secret setting: a keyring's text, an API token, a password given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The text, where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_secret() {
        let token = PlainToken::generate().unwrap();
        let session = SessionId::generate().unwrap();
        let secret: Secret = "active=1;1:00ff".parse().unwrap();
        let printed = format!(
            "{token:?} {:?} {session:?} {:?} {secret:?}",
            token.hash(),
            session.hash()
        );
        for hidden in [
            &token.expose()[TOKEN_PREFIX.len()..token.expose().len() - 4],
            session.expose(),
            &hex::encode(token.hash().as_bytes()),
            &hex::encode(session.hash().as_bytes()),
            secret.expose(),
        ] {
            assert!(!printed.contains(hidden), "{printed}");
        }
        assert!(printed.contains(&token.hint()));
        assert_eq!(
            serde_json::to_value(&token).unwrap(),
            token.expose(),
            "the creating response shows it"
        );
    }
}
