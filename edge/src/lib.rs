//! Lynxo Keys edge: the Cloudflare Worker in front of the Lynxo API.
//!
//! Every API request is authenticated here before it reaches the origin. This file is the
//! entry point only: [`fetch`] routes a request ([`endpoint`]) to its handler and meters the
//! answer. The worker is thin glue around pure functions that are unit- and property-tested on
//! the host, where `worker`'s JavaScript-backed types cannot be built:
//!
//! - [`config`]: the typed configuration, read from the bindings once per isolate;
//! - [`decide`]: credentials, key, revocation, route, scope, and whom the request belongs to;
//! - [`cache`]: revocation shards read from KV, trusted in isolate memory for a short time;
//! - [`forward`]: the request the origin receives, with the signed caller identity;
//! - [`body`]: request bodies: framing rules, and the capped read of a sync push;
//! - [`sync`]: the checks of the control plane's signed pushes (shards, limits, checkpoint);
//! - [`limit`]: per-key rate limits: the `KeyLimiter` object's counter and isolate-local leases;
//! - [`meter`]: usage counts pre-aggregated in the isolate, the `UsageMeter` object's batches;
//! - [`objects`]: the two Durable Object classes;
//! - [`problem`]: every answer the edge makes itself, as RFC 9457 problem documents.
//!
//! The glue, a module per job (`request`, `pushes`, `stubs`, `respond`, `isolate`, `health`), only moves
//! bytes between the runtime and those functions, and turns every runtime error into a 5xx
//! problem, never a panic (a panic resets the module and aborts every request in flight). The
//! design note, with the layout, is `docs/edge.md`.

// The benchmark baselines skip authentication or limits, leaving their helpers unused.
#![cfg_attr(
    any(feature = "bench-no-auth", feature = "bench-no-limits"),
    allow(dead_code, unused_imports)
)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod body;
pub mod cache;
pub mod config;
pub mod decide;
pub mod forward;
mod health;
mod isolate;
pub mod limit;
pub mod meter;
pub mod objects;
pub mod problem;
mod pushes;
mod request;
mod respond;
mod stubs;
pub mod sync;
#[cfg(any(test, feature = "testkit"))]
pub mod testing;

use worker::{Context, Env, Request, console_error, event, web_sys};

use crate::isolate::load_config;
use crate::problem::Reply;
use crate::respond::{Answer, to_response};

pub use crate::objects::{KeyLimiter, UsageMeter};

/// Path of the liveness probe, answered without reading any binding.
pub const HEALTH_PATH: &str = "/healthz";

/// The KV namespace binding holding the revocation shards.
pub const REVOCATIONS_BINDING: &str = "REVOCATIONS";

/// The Durable Object binding of the `KeyLimiter` class.
pub const RATE_LIMITER_BINDING: &str = "RATE_LIMITER";

/// The Durable Object binding of the `UsageMeter` class.
pub const METER_BINDING: &str = "METER";

/// The optional mTLS certificate binding the worker presents to the origin.
pub const ORIGIN_MTLS_BINDING: &str = "ORIGIN_MTLS";

/// Whether this build limits and meters (the benchmark baselines compile both out).
const LIMITS: bool = !cfg!(any(feature = "bench-no-limits", feature = "bench-no-auth"));

/// Whether the origin's response gets the RateLimit fields (a benchmark stage compiles them out).
const RATE_FIELDS: bool = !cfg!(feature = "bench-no-rate-fields");

/// Which handler serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET /healthz`.
    Health,
    /// The sync endpoint for the shard index (as text) in the path.
    SyncRevocations(&'a str),
    /// The limits sync endpoint.
    SyncLimits,
    /// The audit checkpoint's endpoint (`GET` and `PUT`).
    SyncCheckpoint,
    /// Anything else: an API request to authenticate and forward.
    Api,
}

/// Routes a request by method and path.
pub fn endpoint<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    if method == "GET" && path == HEALTH_PATH {
        Endpoint::Health
    } else if path == shared::limits::SYNC_PATH {
        Endpoint::SyncLimits
    } else if path == shared::audit::SYNC_PATH {
        Endpoint::SyncCheckpoint
    } else if let Some(index) = path.strip_prefix(shared::revocation::SYNC_PATH_PREFIX) {
        Endpoint::SyncRevocations(index)
    } else {
        Endpoint::Api
    }
}

/// Workers entry point for HTTP requests.
#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let answer = handle(req, &env, &ctx).await;
    Ok(match answer {
        Answer::Origin(response) => response,
        Answer::Reply(reply) => to_response(&reply).into(),
    })
}

/// The answer to a request that failed inside the edge: logged once, here; the caller learns
/// nothing about the edge's internals.
fn internal_error(e: worker::Error) -> Answer {
    console_error!("lynxo-edge: internal error: {e}");
    Answer::Reply(problem::internal())
}

/// Runs the handler of the request's endpoint. An API request is metered by its handler, which
/// still holds the request the record borrows from.
async fn handle(req: Request, env: &Env, ctx: &Context) -> Answer {
    let url = match req.url() {
        Ok(url) => url,
        Err(e) => return internal_error(e),
    };
    // The method exactly as sent: `worker::Method` would read an unknown method as GET.
    let method = req.inner().method();
    let endpoint = endpoint(&method, url.path());
    if endpoint == Endpoint::Health {
        return Reply::text(200, "ok").into();
    }
    let cfg = match load_config(env) {
        Ok(cfg) => cfg,
        Err(reply) => return reply.into(),
    };
    let handled = match endpoint {
        Endpoint::Api => return request::api(&req, env, ctx, &cfg, &method, &url).await,
        Endpoint::SyncRevocations(index) => {
            pushes::push_revocations(req, env, &cfg, &method, index).await
        }
        Endpoint::SyncLimits => pushes::push_limits(req, env, &cfg, &method).await,
        Endpoint::SyncCheckpoint => pushes::sync_checkpoint(req, env, &cfg, &method).await,
        Endpoint::Health => Ok(Reply::text(200, "ok").into()),
    };
    handled.unwrap_or_else(internal_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("GET", "/healthz"), Endpoint::Health);
        assert_eq!(endpoint("POST", "/healthz"), Endpoint::Api);
        assert_eq!(endpoint("GET", "/healthz/"), Endpoint::Api);
        assert_eq!(
            endpoint("PUT", "/_lynxo/sync/revocations/3"),
            Endpoint::SyncRevocations("3")
        );
        assert_eq!(endpoint("PUT", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(endpoint("GET", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(
            endpoint("GET", "/_lynxo/sync/audit-checkpoint"),
            Endpoint::SyncCheckpoint
        );
        assert_eq!(endpoint("GET", "/v1/jobs"), Endpoint::Api);
    }
}
