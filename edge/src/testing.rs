//! Fixtures for tests (this crate's, and the control plane's parity test, behind the `testkit`
//! feature): one production configuration with test-only secrets. Not API.
#![doc(hidden)]
#![allow(clippy::panic)]

use crate::config::Config;

/// A production configuration with the test keyrings of `shared::testkit`.
pub fn config() -> Config {
    let ring = shared::testkit::KEYRING.to_owned();
    let origin_ring = shared::testkit::ORIGIN_KEYRING.to_owned();
    Config::from_lookup(|name| {
        Some(match name {
            "LYNXO_ENV" => "production".to_owned(),
            "LYNXO_KEYRING" => ring.clone(),
            "ORIGIN_KEYRING" => origin_ring.clone(),
            "ORIGIN_URL" => "http://origin.test".to_owned(),
            _ => return None,
        })
    })
    .unwrap_or_else(|e| panic!("test config: {e}"))
}
