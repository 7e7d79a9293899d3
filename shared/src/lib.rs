//! Lynxo Keys core: everything that decides whether an API key is valid.
//!
//! This crate is compiled into the edge worker (wasm32) and into the control plane (native), so
//! the two can never disagree about a key. It is deliberately pure: no clock, no randomness and
//! no I/O. Time comes in as `now` (Unix seconds), key ids and secrets come in as arguments.
//!
//! - [`key`]: the key format (`lnx_<env>_<body>`; v2 sealed, v1 still read), [`key::issue`] and
//!   [`key::verify`].
//! - [`mac`]: HMAC-SHA256 signing keys, the v2 sealing PRF, the [`mac::Keyring`] and
//!   exact-length tag checks.
//! - [`scope`]: the closed scope catalog, permission levels and the route policy.
//! - [`revocation`]: the signed, versioned, sharded revocation-list format.
//! - [`gate`]: the whole admission decision: key, revocation, route policy.
//! - [`envelope`]: signed headers for sync pushes and forwarded identities.
//! - [`identity`]: the caller identity the edge forwards to the origin, and its signature.
//! - [`limits`]: per-key rate-limit policies and their signed push to the edge.
//! - [`usage`]: the usage batches the edge reports to the control plane.
//! - [`audit`]: the audit keyring and the checkpoints that anchor the audit chain at the edge.
//! - [`base62`]: the linear-time text encoding the key body uses.
//! - [`scan`]: what is known about key texts without a secret: inspection, hints, the scanner.
//!
//! The formats are specified in `docs/key-format.md` and `docs/revocation-list.md`.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod base62;
pub mod envelope;
pub mod gate;
pub mod identity;
pub mod key;
pub mod limits;
pub mod lowerhex;
pub mod mac;
pub mod revocation;
pub mod scan;
pub mod scope;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod usage;

pub use key::{Claims, Environment, KeyError, KeyId, PlainKey, issue, verify};
pub use mac::{Keyring, Secret};
pub use revocation::{ListError, RevocationShard};
pub use scope::{Permission, PolicyError, Scope, ScopeSet};
