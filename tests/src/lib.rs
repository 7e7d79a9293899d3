//! End-to-end test harness for Lynxo Keys: the real worker under `wrangler dev` (workerd) in
//! front of the demo origin, on loopback, started and stopped by the tests themselves.
//!
//! - [`stack`]: starts and stops the processes, writes local KV;
//! - [`control`]: the real control plane (binary `control`) publishing to the stack's worker;
//! - [`http`]: a raw HTTP/1.1 client that can send what ordinary clients refuse to;
//! - [`origin`]: the demo origin (binary `demo_origin`), which checks the edge's signed identity;
//! - [`keys`]: keys and revocation shards signed with the test keyring;
//! - [`attack`]: what a hostile client sends (no length, slow, from many addresses) and what it
//!   measures (`/proc` memory of the processes under attack);
//! - [`capture`]: a wiretap between the worker and the origin;
//! - [`browser`]: runs a browser script (`tests/browser/*.mjs`) with node, bounded in time.
//! - [`scrape`]: the control plane's `/metrics`, parsed with an OpenMetrics parser
//!   ([`exposition`]).
//! - [`standalone`]: the control plane alone (`serve --no-publish`), for tests that need no edge;
//! - [`provider`]: a secret-scanning provider (GitHub, GitLab): its signing key and the public-key
//!   document it serves.
//! - [`database`]: the control plane's database as tests read and tamper with it, on SQLite or
//!   PostgreSQL alike;
//! - [`postgres`]: a private PostgreSQL server (`initdb` + `pg_ctl` on a temporary directory),
//!   stopped and deleted when dropped.

pub mod attack;
pub mod browser;
pub mod capture;
pub mod control;
pub mod database;
pub mod exposition;
pub mod http;
pub mod keys;
pub mod origin;
pub mod postgres;
pub mod provider;
pub mod scrape;
pub mod stack;
pub mod standalone;

/// A named step of an end-to-end test that shares one context with the others.
pub type Scenario<C> = (&'static str, fn(&mut C));

/// Runs named scenarios in order against one context, printing each one's name and time.
pub fn run_scenarios<C>(ctx: &mut C, scenarios: &[Scenario<C>]) {
    for (name, scenario) in scenarios {
        let t = std::time::Instant::now();
        eprintln!("scenario: {name}");
        scenario(ctx);
        eprintln!("scenario: {name}: ok in {:?}", t.elapsed());
    }
}
