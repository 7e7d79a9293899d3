//! The worker's configuration, read from its bindings (vars and secrets) and validated once per
//! isolate: a bad value fails every request closed with a 500, never half-works.
//!
//! | binding | kind | meaning |
//! |---|---|---|
//! | `LYNXO_ENV` | var | `development`, `staging` or `production`: the only environment whose keys pass |
//! | `LYNXO_KEYRING` | secret | `active=KID;KID:HEX,...`: key-signing keyring (key tags, revocation shards, sync pushes) |
//! | `ORIGIN_KEYRING` | secret | same form: the identity keyring shared with the origin |
//! | `ORIGIN_URL` | var | where admitted requests go, e.g. `https://origin.lynxo.ai` |
//! | `REVOCATION_SHARDS` | var | shard count of the revocation list (default 16) |
//! | `REVOCATION_CACHE_MS` | var | how long a shard read from KV is trusted in memory (default 2000) |
//! | `FORWARD_AUTHORIZATION` | var | `true` forwards the client's `Authorization` header (default `false`) |
//! | `SYNC_MAX_BYTES` | var | largest shard the sync endpoint accepts (default 8 MiB) |

use shared::key::Environment;
use shared::mac::Keyring;

/// Default number of revocation shards.
pub const DEFAULT_SHARDS: u16 = 16;
/// Default time a shard read from KV is trusted in isolate memory, in milliseconds.
pub const DEFAULT_CACHE_MS: u64 = 2_000;
/// Default largest sync body, in bytes.
pub const DEFAULT_SYNC_MAX_BYTES: usize = 8 << 20;

/// The names of every binding [`Config::from_lookup`] reads, in a fixed order.
pub const BINDINGS: [&str; 8] = [
    "LYNXO_ENV",
    "LYNXO_KEYRING",
    "ORIGIN_KEYRING",
    "ORIGIN_URL",
    "REVOCATION_SHARDS",
    "REVOCATION_CACHE_MS",
    "FORWARD_AUTHORIZATION",
    "SYNC_MAX_BYTES",
];

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The environment this deployment serves.
    pub environment: Environment,
    /// Verifies key tags, revocation shards and sync pushes.
    pub keyring: Keyring,
    /// Signs the identity forwarded to the origin.
    pub identity_keyring: Keyring,
    /// The origin's base URL, without a trailing slash.
    pub origin: String,
    /// Shard count of the revocation list.
    pub shard_count: u16,
    /// How long a shard read from KV is trusted, in milliseconds.
    pub cache_ms: u64,
    /// Whether the client's `Authorization` header goes to the origin.
    pub forward_authorization: bool,
    /// Largest sync body accepted, in bytes.
    pub sync_max_bytes: usize,
}

/// Why the configuration is unusable. Names the binding, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required binding is absent.
    #[error("binding {0} is not set")]
    Missing(&'static str),
    /// A binding's value is invalid.
    #[error("binding {0} is invalid")]
    Invalid(&'static str),
}

impl Config {
    /// Reads and validates every binding through `get`.
    pub fn from_lookup(get: impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name| get(name).ok_or(ConfigError::Missing(name));
        let optional = |name, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        let environment = Environment::from_name(required("LYNXO_ENV")?.trim())
            .ok_or(ConfigError::Invalid("LYNXO_ENV"))?;
        let keyring = Keyring::from_config(&required("LYNXO_KEYRING")?)
            .map_err(|_| ConfigError::Invalid("LYNXO_KEYRING"))?;
        let identity_keyring = Keyring::from_config(&required("ORIGIN_KEYRING")?)
            .map_err(|_| ConfigError::Invalid("ORIGIN_KEYRING"))?;
        let origin = required("ORIGIN_URL")?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(ConfigError::Invalid("ORIGIN_URL"));
        }
        let shard_count: u16 = optional("REVOCATION_SHARDS", "16")
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ConfigError::Invalid("REVOCATION_SHARDS"))?;
        let cache_ms: u64 = optional("REVOCATION_CACHE_MS", "2000")
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid("REVOCATION_CACHE_MS"))?;
        let forward_authorization = match optional("FORWARD_AUTHORIZATION", "false").trim() {
            "true" => true,
            "false" | "" => false,
            _ => return Err(ConfigError::Invalid("FORWARD_AUTHORIZATION")),
        };
        let sync_max_bytes: usize = optional("SYNC_MAX_BYTES", "8388608")
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid("SYNC_MAX_BYTES"))?;
        Ok(Self {
            environment,
            keyring,
            identity_keyring,
            origin,
            shard_count,
            cache_ms,
            forward_authorization,
            sync_max_bytes,
        })
    }

    /// Seconds a caller should wait before retrying a 503: one cache period, at least a second.
    pub fn retry_after(&self) -> u64 {
        self.cache_ms.div_ceil(1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        let ring = format!("active=1;1:{}", "11".repeat(32));
        HashMap::from([
            ("LYNXO_ENV", "development".to_owned()),
            ("LYNXO_KEYRING", ring.clone()),
            ("ORIGIN_KEYRING", ring),
            ("ORIGIN_URL", "http://127.0.0.1:9/".to_owned()),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|n| vars.get(n).cloned())
    }

    #[test]
    fn defaults() {
        let cfg = load(&base()).unwrap();
        assert_eq!(cfg.environment, Environment::Development);
        assert_eq!(cfg.origin, "http://127.0.0.1:9");
        assert_eq!(cfg.shard_count, DEFAULT_SHARDS);
        assert_eq!(cfg.cache_ms, DEFAULT_CACHE_MS);
        assert_eq!(cfg.sync_max_bytes, DEFAULT_SYNC_MAX_BYTES);
        assert!(!cfg.forward_authorization);
        assert_eq!(cfg.retry_after(), 2);
    }

    #[test]
    fn each_bad_binding_is_named() {
        for name in ["LYNXO_ENV", "LYNXO_KEYRING", "ORIGIN_KEYRING", "ORIGIN_URL"] {
            let mut vars = base();
            vars.remove(name);
            assert_eq!(load(&vars).unwrap_err(), ConfigError::Missing(name));
        }
        for (name, value) in [
            ("LYNXO_ENV", "prod"),
            ("LYNXO_KEYRING", "active=1;1:00"),
            ("ORIGIN_URL", "ftp://x"),
            ("REVOCATION_SHARDS", "0"),
            ("REVOCATION_CACHE_MS", "-1"),
            ("FORWARD_AUTHORIZATION", "yes"),
            ("SYNC_MAX_BYTES", "lots"),
        ] {
            let mut vars = base();
            vars.insert(name, value.to_owned());
            assert_eq!(
                load(&vars).unwrap_err(),
                ConfigError::Invalid(name),
                "{name}"
            );
        }
    }
}
