//! Fixtures for tests (this crate's, and the control plane's parity test, behind the `testkit`
//! feature): one production configuration with test-only secrets. Not API.
#![doc(hidden)]
#![allow(clippy::panic)]

use crate::config::Config;

/// A production configuration: key-signing kid 1 (`0x11` bytes), identity kid 7 (`0x77` bytes).
pub fn config() -> Config {
    let ring = format!("active=1;1:{}", "11".repeat(32));
    let origin_ring = format!("active=7;7:{}", "77".repeat(32));
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
