//! The caller identity the edge forwards to the origin, and its signature.
//!
//! After a key passes, the edge sends the origin who is calling in plain headers
//! ([`ACCOUNT_HEADER`], [`KEY_ID_HEADER`], [`ENVIRONMENT_HEADER`], [`SCOPES_HEADER`]) plus
//! [`SIGNATURE_HEADER`]: an [`envelope`](crate::envelope) signature with the identity subkey over
//! those values, the request method and the path. The identity keyring is a secret shared only by
//! the edge and the origin, so a request that bypassed the edge (or a client that sent these
//! headers itself) cannot pose as one the edge admitted. The timestamp bounds replay to the
//! origin's tolerance.
//!
//! Every header name starts with [`HEADER_PREFIX`]: the edge drops every client header with that
//! prefix before adding its own.

use core::fmt;

use crate::envelope::{self, EnvelopeError};
use crate::key::{Environment, KeyId};
use crate::mac::{Keyring, Purpose};
use crate::scope::{Scope, ScopeSet};

/// Prefix of every identity header (lowercase, as HTTP/2 writes header names).
pub const HEADER_PREFIX: &str = "lynxo-";
/// The account id, decimal.
pub const ACCOUNT_HEADER: &str = "lynxo-account-id";
/// The key id, 32 lowercase hex digits.
pub const KEY_ID_HEADER: &str = "lynxo-key-id";
/// The environment name: `development`, `staging` or `production`.
pub const ENVIRONMENT_HEADER: &str = "lynxo-environment";
/// The scopes: `*` for Full Access, else scope names separated by single spaces (OAuth style).
pub const SCOPES_HEADER: &str = "lynxo-scopes";
/// The signature: `t=<unix seconds>,kid=<kid>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "lynxo-identity-signature";

/// Who is calling, as the edge established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The account that owns the key.
    pub account_id: u64,
    /// The key's id.
    pub key_id: KeyId,
    /// The key's environment.
    pub environment: Environment,
    /// The key's scopes.
    pub scopes: ScopeSet,
}

/// Why the origin refused an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A required header is absent (the request did not come through the edge).
    #[error("identity header `{0}` is missing")]
    Missing(&'static str),
    /// A header is present but not in its documented form.
    #[error("identity header `{0}` is malformed")]
    Malformed(&'static str),
    /// The signature is missing, stale, by an unknown kid, or does not match.
    #[error("identity signature refused: {0}")]
    Signature(#[from] EnvelopeError),
}

/// The [`SCOPES_HEADER`] value for `scopes`.
pub fn scopes_value(scopes: ScopeSet) -> String {
    if scopes.is_full_access() {
        return "*".to_owned();
    }
    let mut out = String::new();
    for scope in scopes.iter() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(scope.name());
    }
    out
}

/// Parses a [`SCOPES_HEADER`] value; `None` for an unknown name or a stray separator.
pub fn parse_scopes(value: &str) -> Option<ScopeSet> {
    if value == "*" {
        return Some(ScopeSet::FULL_ACCESS);
    }
    if value.is_empty() {
        return Some(ScopeSet::EMPTY);
    }
    value.split(' ').try_fold(ScopeSet::EMPTY, |set, name| {
        Scope::from_name(name).map(|s| set.with(s))
    })
}

impl Identity {
    /// The identity headers without the signature, as `(name, value)` pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (ACCOUNT_HEADER, self.account_id.to_string()),
            (KEY_ID_HEADER, self.key_id.to_string()),
            (ENVIRONMENT_HEADER, self.environment.name().to_owned()),
            (SCOPES_HEADER, scopes_value(self.scopes)),
        ]
    }

    /// The signed parts: each header value in [`Self::headers`] order, then method and path.
    fn with_parts<R>(&self, method: &str, path: &str, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let [account, key_id, environment, scopes] = self.headers().map(|(_, value)| value);
        f(&[
            account.as_bytes(),
            key_id.as_bytes(),
            environment.as_bytes(),
            scopes.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
        ])
    }

    /// The [`SIGNATURE_HEADER`] value for this identity calling `method path` (the path without
    /// its query string), signed at `now` with the identity keyring's active kid.
    pub fn sign(&self, keyring: &Keyring, method: &str, path: &str, now: u64) -> String {
        self.with_parts(method, path, |parts| {
            envelope::sign(keyring, Purpose::Identity, now, parts)
        })
    }

    /// Reads the identity headers of a request through `header` (a case-insensitive lookup the
    /// caller provides) and checks their signature for `method path` at `now`, allowing
    /// `tolerance` seconds of clock difference. What the origin calls on every request.
    pub fn verify<'a>(
        keyring: &Keyring,
        header: impl Fn(&str) -> Option<&'a str>,
        method: &str,
        path: &str,
        now: u64,
        tolerance: u64,
    ) -> Result<Self, IdentityError> {
        let get = |name: &'static str| header(name).ok_or(IdentityError::Missing(name));
        let signature = get(SIGNATURE_HEADER)?;
        let account_text = get(ACCOUNT_HEADER)?;
        let key_id_text = get(KEY_ID_HEADER)?;
        let environment_text = get(ENVIRONMENT_HEADER)?;
        let scopes_text = get(SCOPES_HEADER)?;
        // Parse strictly: the signature covers the canonical forms, so any other spelling is
        // refused here rather than accepted with a signature over different bytes.
        let identity = Self {
            account_id: account_text
                .parse()
                .ok()
                .filter(|a: &u64| a.to_string() == account_text)
                .ok_or(IdentityError::Malformed(ACCOUNT_HEADER))?,
            key_id: KeyId::parse_hex(key_id_text).ok_or(IdentityError::Malformed(KEY_ID_HEADER))?,
            environment: Environment::from_name(environment_text)
                .ok_or(IdentityError::Malformed(ENVIRONMENT_HEADER))?,
            scopes: parse_scopes(scopes_text)
                .filter(|s| scopes_value(*s) == scopes_text)
                .ok_or(IdentityError::Malformed(SCOPES_HEADER))?,
        };
        identity.with_parts(method, path, |parts| {
            envelope::verify(keyring, Purpose::Identity, signature, parts, now, tolerance)
        })?;
        Ok(identity)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "account {} key {} ({})",
            self.account_id, self.key_id, self.environment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;
    use crate::scope::Permission;
    use std::collections::HashMap;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(5, &[(5, Secret::new(vec![byte; 32]).unwrap())]).unwrap()
    }

    fn identity() -> Identity {
        Identity {
            account_id: 42,
            key_id: KeyId([9; 16]),
            environment: Environment::Staging,
            scopes: Permission::ReadOnly.scopes(),
        }
    }

    fn headers(id: &Identity, ring: &Keyring, now: u64) -> HashMap<&'static str, String> {
        let mut h: HashMap<_, _> = id.headers().into_iter().collect();
        h.insert(SIGNATURE_HEADER, id.sign(ring, "GET", "/v1/jobs", now));
        h
    }

    fn check(
        h: &HashMap<&'static str, String>,
        path: &str,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        Identity::verify(
            &ring(1),
            |n| h.get(n).map(String::as_str),
            "GET",
            path,
            now,
            60,
        )
    }

    #[test]
    fn round_trip() {
        let h = headers(&identity(), &ring(1), 1_000);
        assert_eq!(check(&h, "/v1/jobs", 1_030), Ok(identity()));
    }

    #[test]
    fn each_refusal() {
        let good = headers(&identity(), &ring(1), 1_000);
        assert_eq!(
            check(&good, "/v1/files", 1_000),
            Err(IdentityError::Signature(EnvelopeError::BadSignature))
        );
        assert_eq!(
            check(&good, "/v1/jobs", 1_061),
            Err(IdentityError::Signature(EnvelopeError::OutsideTolerance {
                timestamp: 1_000
            }))
        );
        let other = headers(&identity(), &ring(2), 1_000);
        assert_eq!(
            check(&other, "/v1/jobs", 1_000),
            Err(IdentityError::Signature(EnvelopeError::BadSignature))
        );
        // A changed value under a good signature: a client escalating its own scopes.
        let mut h = good.clone();
        h.insert(SCOPES_HEADER, "*".into());
        assert_eq!(
            check(&h, "/v1/jobs", 1_000),
            Err(IdentityError::Signature(EnvelopeError::BadSignature))
        );
        let mut h = good.clone();
        h.insert(ACCOUNT_HEADER, "042".into());
        assert_eq!(
            check(&h, "/v1/jobs", 1_000),
            Err(IdentityError::Malformed(ACCOUNT_HEADER))
        );
        let mut h = good.clone();
        h.insert(SCOPES_HEADER, "jobs:read  files:read".into());
        assert_eq!(
            check(&h, "/v1/jobs", 1_000),
            Err(IdentityError::Malformed(SCOPES_HEADER))
        );
        for name in [
            SIGNATURE_HEADER,
            ACCOUNT_HEADER,
            KEY_ID_HEADER,
            ENVIRONMENT_HEADER,
            SCOPES_HEADER,
        ] {
            let mut h = good.clone();
            h.remove(name);
            assert_eq!(
                check(&h, "/v1/jobs", 1_000),
                Err(IdentityError::Missing(name))
            );
        }
    }

    #[test]
    fn scopes_round_trip() {
        for set in [
            ScopeSet::EMPTY,
            ScopeSet::FULL_ACCESS,
            Permission::ReadOnly.scopes(),
            Permission::ReadWrite.scopes(),
        ] {
            assert_eq!(parse_scopes(&scopes_value(set)), Some(set));
        }
        assert_eq!(scopes_value(ScopeSet::FULL_ACCESS), "*");
        assert_eq!(parse_scopes("jobs:read nope"), None);
    }
}
