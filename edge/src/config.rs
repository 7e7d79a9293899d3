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
//! | `SYNC_MAX_BYTES` | var | largest sync push the edge accepts (default 8 MiB) |
//! | `RATE_LIMIT_DEFAULT` | var | `<limit>/<window seconds>` for keys without their own limit (default `600/60`) |
//! | `METER_SHARDS` | var | number of `UsageMeter` objects (`meter-0` ...), 1 to 1024 (default 4) |
//! | `CONTROL_URL` | var | the control plane's base URL for usage batches; unset: metering off |
//! | `FORWARD_HEADERS` | var | client headers forwarded besides `forward::FORWARDED`, comma-separated (default none) |

use shared::key::Environment;
use shared::limits::Policy;
use shared::mac::Keyring;

/// Default number of revocation shards.
pub const DEFAULT_SHARDS: u16 = 16;
/// Default time a shard read from KV is trusted in isolate memory, in milliseconds.
pub const DEFAULT_CACHE_MS: u64 = 2_000;
/// Default largest sync body, in bytes.
pub const DEFAULT_SYNC_MAX_BYTES: usize = 8 << 20;
/// Default rate limit of a key without its own: 600 requests per 60 s.
pub const DEFAULT_RATE_LIMIT: Policy = Policy {
    limit: 600,
    window: 60,
};
/// Default number of usage meter objects.
pub const DEFAULT_METER_SHARDS: u16 = 4;
/// Most usage meter objects.
pub const MAX_METER_SHARDS: u16 = 1024;

/// The names of every binding [`Config::from_lookup`] reads, in a fixed order.
pub const BINDINGS: [&str; 12] = [
    "LYNXO_ENV",
    "LYNXO_KEYRING",
    "ORIGIN_KEYRING",
    "ORIGIN_URL",
    "REVOCATION_SHARDS",
    "REVOCATION_CACHE_MS",
    "FORWARD_AUTHORIZATION",
    "SYNC_MAX_BYTES",
    "RATE_LIMIT_DEFAULT",
    "METER_SHARDS",
    "CONTROL_URL",
    "FORWARD_HEADERS",
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
    /// The rate limit of keys without their own.
    pub rate_limit_default: Policy,
    /// Number of usage meter objects.
    pub meter_shards: u16,
    /// The control plane's base URL, without a trailing slash; `None` turns metering off.
    pub control_url: Option<String>,
    /// Client headers forwarded besides `forward::FORWARDED`, lowercase.
    pub forward_headers: Vec<String>,
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
        let rate_limit_default = match get("RATE_LIMIT_DEFAULT") {
            Some(text) => {
                Policy::parse(&text).map_err(|_| ConfigError::Invalid("RATE_LIMIT_DEFAULT"))?
            }
            None => DEFAULT_RATE_LIMIT,
        };
        let meter_shards: u16 = optional("METER_SHARDS", "4")
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_METER_SHARDS).contains(n))
            .ok_or(ConfigError::Invalid("METER_SHARDS"))?;
        let control_url =
            match get("CONTROL_URL").map(|u| u.trim().trim_end_matches('/').to_owned()) {
                None => None,
                Some(url) if url.is_empty() => None,
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(url),
                Some(_) => return Err(ConfigError::Invalid("CONTROL_URL")),
            };
        let forward_headers = parse_header_names(&optional("FORWARD_HEADERS", ""))
            .ok_or(ConfigError::Invalid("FORWARD_HEADERS"))?;
        Ok(Self {
            environment,
            keyring,
            identity_keyring,
            origin,
            shard_count,
            cache_ms,
            forward_authorization,
            sync_max_bytes,
            rate_limit_default,
            meter_shards,
            control_url,
            forward_headers,
        })
    }

    /// Seconds a caller should wait before retrying a 503: one cache period, at least a second.
    pub fn retry_after(&self) -> u64 {
        self.cache_ms.div_ceil(1000).max(1)
    }
}

/// Parses `FORWARD_HEADERS`: header names separated by commas, each an RFC 9110 token and not
/// one the edge never forwards (`forward::never_forwarded`). `None` if any is not.
fn parse_header_names(text: &str) -> Option<Vec<String>> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            (name.bytes().all(is_tchar) && !crate::forward::never_forwarded(name))
                .then(|| name.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        let ring = shared::testkit::KEYRING.to_owned();
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
        assert_eq!(cfg.rate_limit_default, DEFAULT_RATE_LIMIT);
        assert_eq!(cfg.meter_shards, DEFAULT_METER_SHARDS);
        assert_eq!(cfg.control_url, None);
        assert!(cfg.forward_headers.is_empty());
    }

    #[test]
    fn forwarded_header_names() {
        let mut vars = base();
        vars.insert("FORWARD_HEADERS", " Demo-Status, x-request-id ,".to_owned());
        assert_eq!(
            load(&vars).unwrap().forward_headers,
            ["demo-status", "x-request-id"]
        );
        for bad in [
            "x-http-method-override",
            "Lynxo_Account_Id",
            "x-lynxo-admin",
            "forwarded",
            "host",
            "authorization",
            "bad name",
        ] {
            vars.insert("FORWARD_HEADERS", bad.to_owned());
            assert_eq!(
                load(&vars).unwrap_err(),
                ConfigError::Invalid("FORWARD_HEADERS"),
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_and_metering() {
        let mut vars = base();
        vars.insert("RATE_LIMIT_DEFAULT", " 5/10 ".to_owned());
        vars.insert("METER_SHARDS", "16".to_owned());
        vars.insert("CONTROL_URL", "http://127.0.0.1:8080/".to_owned());
        let cfg = load(&vars).unwrap();
        assert_eq!(cfg.rate_limit_default, Policy::new(5, 10).unwrap());
        assert_eq!(cfg.meter_shards, 16);
        assert_eq!(cfg.control_url.as_deref(), Some("http://127.0.0.1:8080"));
        vars.insert("CONTROL_URL", String::new());
        assert_eq!(load(&vars).unwrap().control_url, None);
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
            ("RATE_LIMIT_DEFAULT", "600"),
            ("RATE_LIMIT_DEFAULT", "0/60"),
            ("RATE_LIMIT_DEFAULT", "600/0"),
            ("METER_SHARDS", "0"),
            ("METER_SHARDS", "1025"),
            ("CONTROL_URL", "127.0.0.1:8080"),
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
