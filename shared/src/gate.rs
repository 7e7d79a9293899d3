//! The whole admission decision for one API request, as the edge and the control plane's
//! verify endpoint both make it: key, then revocation, then route policy.
//!
//! Revocation is a closure so each caller brings its own store (the edge's cached shards, the
//! control plane's database) while the order of checks, and so the answer, stays the same.

use crate::key::{self, Claims, KeyError, KeyId};
use crate::mac::Keyring;
use crate::scope::{self, PolicyError, Route};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The key itself is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key is genuine but revoked.
    #[error("the key has been revoked")]
    Revoked,
    /// The key may not call this route.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A request that may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The verified claims of the caller's key.
    pub claims: Claims,
    /// The route being called.
    pub route: &'static Route,
}

/// Decides whether the key `text` may call `method path` at `now`.
pub fn authenticate(
    text: &str,
    keyring: &Keyring,
    now: u64,
    is_revoked: impl FnOnce(KeyId) -> bool,
    method: &str,
    path: &str,
) -> Result<Admitted, Denial> {
    let claims = key::verify(text, keyring, now)?;
    admit(claims, is_revoked(claims.key_id), method, path)
}

/// The second half of [`authenticate`], for callers that verified the key already and looked up
/// its revocation status themselves (asynchronously, by its key id).
pub fn admit(claims: Claims, revoked: bool, method: &str, path: &str) -> Result<Admitted, Denial> {
    if revoked {
        return Err(Denial::Revoked);
    }
    let route = scope::authorize(claims.scopes, method, path)?;
    Ok(Admitted { claims, route })
}
