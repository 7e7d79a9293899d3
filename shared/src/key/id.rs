//! The environments a key names and the key id, with the key id's hex form on the wire and in
//! storage.

use core::fmt;

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

    pub(super) const fn code(self) -> u8 {
        match self {
            Self::Development => 0,
            Self::Staging => 1,
            Self::Production => 2,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Self> {
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
    /// What a reader of the wire form expects.
    pub const EXPECTED: &str = "a key id (32 lowercase hex digits)";

    /// How a reader's error message for a refused key id starts.
    pub const REFUSED: &str = "key id refused: not 32 lowercase hex digits";

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

/// On the wire a key id is its 32-digit lowercase hex form, checked when read.
impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = KeyId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(KeyId::EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<KeyId, E> {
                KeyId::parse_hex(text).ok_or_else(|| E::custom(KeyId::REFUSED))
            }
        }
        deserializer.deserialize_str(Hex)
    }
}

/// In SQLite a key id is its hex text, as on the wire.
#[cfg(feature = "sqlite")]
impl rusqlite::types::ToSql for KeyId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

#[cfg(feature = "sqlite")]
impl rusqlite::types::FromSql for KeyId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        KeyId::parse_hex(text).ok_or(rusqlite::types::FromSqlError::InvalidType)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The big-endian bytes in hex: what `{:032x}` of `as_u128` writes, without a digit at a
        // time through `core::fmt`.
        crate::lowerhex::write(f, &self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}
