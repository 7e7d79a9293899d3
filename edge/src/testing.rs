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

/// One authenticated request's own work in the worker, stage by stage, on fixtures made once:
/// what `cargo bench -p edge` times natively and `bash bench/wasm-verify.sh` in wasm under V8.
/// Each method is one request's share of its stage, the runtime's part (calls into JavaScript,
/// the origin's fetch) left out.
pub mod stages {
    use shared::identity::RequestId;
    use shared::key::{self, Claims, Environment, KeyId};
    use shared::scope::Permission;

    use crate::config::Config;
    use crate::decide::{self, Admitted, Incoming, RevocationStatus};
    use crate::forward;
    use crate::limit::{Budget, Grant, Leases, Local, Status};
    use crate::meter::{Answered, Buffer, Caller, Flush, Seen};
    use crate::request::ClientHeaders;

    /// The isolate's clock in the fixtures.
    pub const NOW_MS: u64 = 1_800_000_000_000;
    /// The path requested (a `jobs:read` route).
    const PATH: &str = "/v1/jobs/9";
    /// A meter flush takes the buffer every this many requests (once a second at 5,000
    /// requests a second).
    pub const FLUSH_EVERY: u64 = 5_000;

    /// The fixtures: a configuration, a Read/Write key and a client's headers (read as the
    /// worker reads them, `request::ClientHeaders`), a lease with
    /// tokens to spare, a meter buffer.
    pub struct Stages {
        cfg: Config,
        client: ClientHeaders,
        admitted: Admitted,
        caller: Caller,
        leases: Leases,
        buffer: Buffer,
        requests: u64,
        status: Status,
    }

    impl Default for Stages {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Stages {
        /// Builds the fixtures.
        pub fn new() -> Self {
            let cfg = super::config();
            let claims = Claims {
                kid: 1,
                account_id: 7,
                key_id: KeyId([1; 16]),
                environment: Environment::Production,
                scopes: Permission::ReadWrite.scopes(),
                issued_at: NOW_MS / 1000 - 86_400,
                expires_at: None,
            };
            let key = key::issue(&claims, &cfg.keyring)
                .map(shared::PlainKey::into_inner)
                .unwrap_or_else(|e| panic!("bench key: {e}"));
            let client = ClientHeaders(
                [
                    ("accept", "application/json"),
                    ("authorization", &format!("Bearer {key}")),
                    ("cf-connecting-ip", "203.0.113.9"),
                    ("host", "api.lynxo.ai"),
                    ("user-agent", "lynxo-python/2.4.1 (CPython 3.12; linux)"),
                    ("x-forwarded-proto", "https"),
                ]
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            );
            let incoming = Incoming {
                method: "GET",
                path: PATH,
                query: None,
                authorization: client.get("authorization"),
            };
            let admitted =
                decide::decide(&incoming, &cfg, NOW_MS / 1000, |_| RevocationStatus::Clear)
                    .answer
                    .unwrap_or_else(|_| panic!("the bench key is refused"));
            let mut stages = Self {
                cfg,
                client,
                admitted,
                caller: Caller {
                    key_id: claims.key_id,
                    account_id: claims.account_id,
                    scope: Some("jobs:read"),
                },
                leases: Leases::default(),
                buffer: Buffer::default(),
                requests: 0,
                // The documentation's example: `"default";q=600;w=60`, `"default";r=417;t=23`.
                status: Status {
                    limit: 600,
                    window: 60,
                    remaining: 417,
                    reset_ms: NOW_MS + 23_000,
                    retry_ms: NOW_MS + 23_000,
                    per_minute: None,
                },
            };
            let plenty = u64::MAX / 4;
            let grant = Grant {
                granted: u32::MAX / 2,
                limit: u32::MAX,
                window: 3_600,
                reset_ms: plenty,
                remaining_after: u32::MAX / 2,
                serial: 1,
                lease_end_ms: plenty,
                lifetime_ms: plenty,
                retry_ms: 0,
                by_cap: false,
                per_minute: None,
            };
            stages
                .leases
                .record(stages.budget(), &grant, NOW_MS, NOW_MS);
            stages
        }

        fn incoming(&self) -> Incoming<'_> {
            Incoming {
                method: "GET",
                path: PATH,
                query: None,
                authorization: self.client.get("authorization"),
            }
        }

        fn budget(&self) -> Budget {
            Budget::Key(self.caller.key_id)
        }

        /// The key checks: the credential, the key (HMAC tag), the revocation status given,
        /// route and scope (`decide::authenticate`, then `decide::admit`). Whether admitted.
        pub fn key_check(&self) -> bool {
            let incoming = self.incoming();
            decide::authenticate(&incoming, &self.cfg, NOW_MS / 1000).is_ok_and(|verified| {
                decide::admit(&verified, &incoming, RevocationStatus::Clear, &self.cfg)
                    .answer
                    .is_ok()
            })
        }

        /// The rate limit: one token of the isolate's lease. The tokens left.
        pub fn lease_take(&mut self) -> u32 {
            match self.leases.take(self.budget(), NOW_MS) {
                Local::Allowed { status, .. } => status.remaining,
                _ => panic!("the bench lease ran out"),
            }
        }

        /// The meter: the request's details and one `Buffer::push`, with a flush's take every
        /// [`FLUSH_EVERY`] requests.
        pub fn meter(&mut self) -> Flush {
            self.requests += 1;
            let seen = Seen {
                method: "GET",
                path: PATH,
                client_ip: self.client.get("cf-connecting-ip"),
                user_agent: self.client.get("user-agent"),
            };
            let at_ms = NOW_MS + self.requests / 5;
            let flush = self.buffer.push(
                4,
                &self.caller,
                &seen,
                Answered::origin(200, at_ms),
                Default::default,
            );
            if self.requests % FLUSH_EVERY == 0 {
                drop(self.buffer.take(at_ms, "nonce"));
            }
            flush
        }

        /// The two RateLimit field values. Their length.
        pub fn rate_fields(&self) -> usize {
            let [(_, policy), (_, rate)] = self.status.headers(NOW_MS);
            policy.len() + rate.len()
        }

        /// The origin's request (allow-listed headers, identity signature): in every build, the
        /// bare proxy's too. The number of headers.
        pub fn forward_plan(&self) -> usize {
            forward::plan(
                &self.cfg,
                &self.incoming(),
                &self.admitted,
                self.client.0.iter().map(|(n, v)| (n, v)),
                0,
                RequestId([7; 16]),
                NOW_MS / 1000,
            )
            .map_or(0, |plan| plan.headers.len())
        }
    }
}
