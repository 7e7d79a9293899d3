//! Lynxo Keys control plane: the admin API, the audit trail and revocation publishing.
//!
//! - [`store`]: SQLite storage, the only module that speaks SQL.
//! - [`error`]: the one error type and the extractors that produce it.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod error;
pub mod store;
