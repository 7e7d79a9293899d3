//! The dashboard's static files (`control/assets/`), compiled into the binary.
//!
//! They are served under `/assets/<version>/<file>`, where the version is a hash of all of them:
//! a new build with any changed asset gets new URLs, so browsers may cache them forever. One
//! version for all files keeps the ES modules' relative imports (`./lib.js`) on the same version.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
pub(crate) struct Asset {
    /// The file name in the URL.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every asset.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("logo.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("lib.js", JS),
    asset!("chart.js", JS),
    asset!("keys.js", JS),
    asset!("key.js", JS),
    asset!("secret.js", JS),
    asset!("account.js", JS),
    asset!("sessions.js", JS),
];

/// The asset called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The first 16 hex digits of SHA-256 over every asset's name and bytes.
pub(crate) fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for a in ASSETS {
            hash.update(a.name.as_bytes());
            hash.update((a.body.len() as u64).to_le_bytes());
            hash.update(a.body);
        }
        hex::encode(&hash.finalize()[..8])
    })
}
