//! Lynxo Keys control plane: the admin API, the audit trail and revocation publishing.
//!
//! - [`store`]: SQLite storage, the only module that speaks SQL.
//! - [`error`]: the one error type and the extractors that produce it.
//! - [`body`]: request bodies, read bounded in size, time and number.
//! - [`auth`]: management tokens, sign-in (and its defences), sessions and CSRF.
//! - [`client_addr`]: the client's address, from a trusted proxy's header or the TCP peer.
//! - [`account`]: the account API (name, plan, keys in use).
//! - [`keys`]: the keys API (create, list, get, update, revoke, rotate).
//! - [`audit`]: the audit-trail API.
//! - [`events`]: the audit trail's vocabulary, one typed variant per recorded action.
//! - [`publish`]: revocation publishing (outbox, coalescing, heartbeat, publishers).
//! - [`tokens`]: the management-tokens API.
//! - [`text`]: the one rule for text people give us (no control, format or invisible characters).
//! - [`usage`]: usage ingestion from the edge, the usage and activity API, rate-limit pushes.
//! - [`leaks`]: secret-scanning reports (GitHub, GitLab), self-revocation, the leak records.
//! - [`verify`]: the verify endpoint (`POST /v1/keys/verify`), its per-account budget and trace.
//! - [`dashboard`]: the web dashboard.
//! - [`backup`]: `control backup` and `control restore` (online copy, checks, republish).
//! - [`config`]: flags and environment.
//! - [`state`]: the state every handler reaches, the settings and the clock.
//! - [`secret`]: secrets by type (tokens, their hashes, session ids), never printed.
//! - [`routes`]: the router, built from one table of operations.
//! - [`openapi`]: the OpenAPI document, generated from the handlers and their types.
//! - [`metrics`]: `GET /metrics` (Prometheus), with what the edge reports of itself.
//! - [`signing`]: signing-key rollover: the keyrings to install, a kid's retirement.
//! - [`skew`]: the clock skew between the control plane and the edge, and its readiness rule.
//!
//! [`app`] builds the router from an [`AppState`], so tests call the service without a socket.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod body;
pub mod client_addr;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod keys;
pub mod leaks;
pub mod metrics;
pub mod openapi;
pub mod pg_copy;
pub mod publish;
pub mod routes;
pub mod secret;
pub mod server;
pub mod signing;
pub mod skew;
pub mod state;
pub mod store;
pub mod text;
pub mod tokens;
pub mod usage;
pub mod verify;

pub use openapi::OPENAPI;
pub use routes::app;
pub use state::{AppState, Clock, ManualClock, Settings, SystemClock, default_sign_in_hashes};
