//! Lynxo Keys edge: the Cloudflare Worker in front of the Lynxo API.
//!
//! Every API request is authenticated here before it reaches the origin. The worker is thin
//! glue around pure functions that are unit- and property-tested on the host, where `worker`'s
//! JavaScript-backed types cannot be built:
//!
//! - [`config`]: the typed configuration, read from the bindings once per isolate;
//! - [`decide`]: credentials, key, revocation, route and scope: the whole admission decision;
//! - [`cache`]: revocation shards read from KV, trusted in isolate memory for a short time;
//! - [`forward`]: the request the origin receives, with the signed caller identity;
//! - [`sync`]: the control plane's signed push of revocation shards;
//! - [`problem`]: every answer the edge makes itself, as RFC 9457 problem documents.
//!
//! Every decision is a call into `shared`. The glue below only moves bytes between the runtime
//! and those functions, and turns every runtime error into a 5xx problem, never a panic (a panic
//! resets the module and aborts every request in flight). The design note is `docs/edge.md`.

// The benchmark baseline skips authentication, leaving its helpers unused.
#![cfg_attr(feature = "bench-no-auth", allow(dead_code, unused_imports))]

pub mod cache;
pub mod config;
pub mod decide;
pub mod forward;
pub mod problem;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;

use std::cell::RefCell;
use std::rc::Rc;

use shared::revocation::shard_of;
use worker::{
    Context, Date, Env, Fetch, Headers, Request, RequestInit, RequestRedirect, Response,
    ResponseBuilder, Url, console_error, console_warn, event,
};

use crate::cache::{Outcome, ShardCache};
use crate::config::{BINDINGS, Config};
use crate::decide::Incoming;
use crate::problem::{Problem, Reply};

/// Path of the liveness probe, answered without reading any binding.
pub const HEALTH_PATH: &str = "/healthz";

/// The KV namespace binding holding the revocation shards.
pub const REVOCATIONS_BINDING: &str = "REVOCATIONS";

/// Which handler serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET /healthz`.
    Health,
    /// The sync endpoint for the shard index (as text) in the path.
    SyncRevocations(&'a str),
    /// Anything else: an API request to authenticate and forward.
    Api,
}

/// Routes a request by method and path.
pub fn endpoint<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    if method == "GET" && path == HEALTH_PATH {
        Endpoint::Health
    } else if let Some(index) = path.strip_prefix(sync::PATH_PREFIX) {
        Endpoint::SyncRevocations(index)
    } else {
        Endpoint::Api
    }
}

/// The raw binding values (in [`BINDINGS`] order) and the configuration built from them.
type CachedConfig = Option<(Vec<Option<String>>, Rc<Config>)>;

thread_local! {
    /// The configuration and the raw binding values it was built from: rebuilt only when those
    /// change, since building keyrings derives subkeys.
    static CONFIG: RefCell<CachedConfig> = const { RefCell::new(None) };
    /// Revocation shards read from KV or pushed through the sync endpoint.
    static SHARDS: RefCell<ShardCache> = RefCell::new(ShardCache::default());
}

/// An answer: decided by the edge, or the origin's response passed through.
enum Answer {
    Reply(Reply),
    Origin(Response),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self::Reply(reply)
    }
}

/// Workers entry point for HTTP requests.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let answer = match handle(req, &env).await {
        Ok(answer) => answer,
        Err(e) => {
            // Logged once, here; the caller learns nothing about the edge's internals.
            console_error!("lynxo-edge: internal error: {e}");
            Answer::Reply(problem::internal())
        }
    };
    Ok(match answer {
        Answer::Origin(response) => response,
        Answer::Reply(reply) => to_response(&reply),
    })
}

/// Builds a response that cannot fail: a header the runtime refuses is logged and left out.
fn to_response(reply: &Reply) -> Response {
    let headers = Headers::new();
    for (name, value) in &reply.headers {
        if headers.append(name, value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    ResponseBuilder::new()
        .with_status(reply.status)
        .with_headers(headers)
        .fixed(reply.body.as_bytes().to_vec())
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

async fn handle(req: Request, env: &Env) -> worker::Result<Answer> {
    let url = req.url()?;
    // The method exactly as sent: `worker::Method` would read an unknown method as GET.
    let method = req.inner().method();
    match endpoint(&method, url.path()) {
        Endpoint::Health => Ok(Reply::text(200, "ok").into()),
        Endpoint::SyncRevocations(index) => {
            let index = index.to_owned();
            match load_config(env) {
                Ok(cfg) => push_revocations(req, env, &cfg, &method, &index).await,
                Err(reply) => Ok(reply.into()),
            }
        }
        Endpoint::Api => match load_config(env) {
            Ok(cfg) => api(req, env, &cfg, &method, &url).await,
            Err(reply) => Ok(reply.into()),
        },
    }
}

/// The configuration, rebuilt only when a binding's value changed.
fn load_config(env: &Env) -> Result<Rc<Config>, Reply> {
    let raw: Vec<Option<String>> = BINDINGS
        .iter()
        .map(|name| env.var(name).ok().map(|v| v.to_string()))
        .collect();
    CONFIG.with_borrow_mut(|slot| {
        if let Some((seen, cfg)) = slot.as_ref() {
            if *seen == raw {
                return Ok(Rc::clone(cfg));
            }
        }
        let lookup = |name: &str| {
            BINDINGS
                .iter()
                .position(|b| *b == name)
                .and_then(|i| raw[i].clone())
        };
        match Config::from_lookup(lookup) {
            Ok(cfg) => {
                let cfg = Rc::new(cfg);
                *slot = Some((raw.clone(), Rc::clone(&cfg)));
                Ok(cfg)
            }
            Err(e) => {
                console_error!("lynxo-edge: configuration refused: {e}");
                Err(Problem::new(
                    500,
                    "edge_misconfigured",
                    "Internal Server Error",
                    "The edge is not configured correctly, so it refuses every request.",
                )
                .reply())
            }
        }
    })
}

/// Makes sure the isolate's copy of shard `index` is at most one cache period old.
async fn refresh_shard(env: &Env, cfg: &Config, index: u16, now_ms: u64) {
    if !SHARDS.with_borrow(|c| c.needs_read(index, now_ms, cfg.cache_ms)) {
        return;
    }
    let read = match env.kv(REVOCATIONS_BINDING) {
        Ok(kv) => kv.get(&cache::kv_key(index)).bytes().await,
        Err(e) => {
            console_error!("lynxo-edge: KV binding {REVOCATIONS_BINDING} unavailable: {e}");
            return;
        }
    };
    match read {
        Ok(bytes) => {
            let outcome = SHARDS.with_borrow_mut(|c| {
                c.record_read(
                    index,
                    cfg.shard_count,
                    bytes.as_deref(),
                    &cfg.keyring,
                    now_ms,
                )
            });
            match outcome {
                Outcome::Accepted(_) => {}
                Outcome::Missing => {
                    console_warn!("lynxo-edge: revocation shard {index} missing in KV")
                }
                Outcome::Ignored(why) => {
                    console_warn!("lynxo-edge: revocation shard {index} in KV ignored: {why}");
                }
            }
        }
        // The last good shard (if any) stays in use; the next request reads again.
        Err(e) => console_error!("lynxo-edge: KV read of shard {index} failed: {e}"),
    }
}

async fn api(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
    url: &Url,
) -> worker::Result<Answer> {
    let now_ms = now_ms();
    let now = now_ms / 1000;
    let authorization = req.headers().get("authorization")?;
    let incoming = Incoming {
        method,
        path: url.path(),
        query: url.query(),
        authorization: authorization.as_deref(),
    };
    #[cfg(feature = "bench-no-auth")]
    let admitted = {
        let _ = (env, now_ms);
        unauthenticated(cfg)
    };
    #[cfg(not(feature = "bench-no-auth"))]
    let admitted = {
        let verified = match decide::authenticate(&incoming, cfg, now) {
            Ok(verified) => verified,
            Err(reply) => return Ok(reply.into()),
        };
        let key_id = verified.claims.key_id;
        let index = shard_of(key_id, cfg.shard_count);
        refresh_shard(env, cfg, index, now_ms).await;
        let status = SHARDS.with_borrow(|c| c.status(index, key_id, now));
        match decide::admit(&verified, &incoming, status, cfg) {
            Ok(admitted) => admitted,
            Err(reply) => return Ok(reply.into()),
        }
    };

    let plan = forward::plan(cfg, &incoming, &admitted, req.headers().entries(), now);
    let headers = Headers::new();
    for (name, value) in &plan.headers {
        headers.append(name, value)?;
    }
    let body = match method {
        "GET" | "HEAD" => None,
        _ => req.inner().body().map(Into::into),
    };
    let mut init = RequestInit::new();
    init.with_method(worker::Method::from(method.to_owned()))
        .with_headers(headers)
        .with_body(body)
        .with_redirect(RequestRedirect::Manual);
    let origin_request = Request::new_with_init(&plan.url, &init)?;
    match Fetch::Request(origin_request).send().await {
        Ok(response) => Ok(Answer::Origin(response)),
        Err(e) => {
            console_error!("lynxo-edge: origin unreachable: {e}");
            Ok(Problem::new(
                502,
                "origin_unavailable",
                "Bad Gateway",
                "The Lynxo API could not be reached. Please retry.",
            )
            .reply()
            .into())
        }
    }
}

async fn push_revocations(
    mut req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
    index_text: &str,
) -> worker::Result<Answer> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|n| n.trim().parse::<usize>().ok());
    if let Err(reply) = sync::check_length(declared, cfg) {
        return Ok(reply.into());
    }
    let signature = req.headers().get(sync::SIGNATURE_HEADER)?;
    let body = if method == "PUT" {
        req.bytes().await?
    } else {
        Vec::new()
    };
    let now_ms = now_ms();
    let push = match sync::check_push(
        cfg,
        method,
        index_text,
        signature.as_deref(),
        &body,
        now_ms / 1000,
    ) {
        Ok(push) => push,
        Err(reply) => return Ok(reply.into()),
    };
    let kv = match env.kv(REVOCATIONS_BINDING) {
        Ok(kv) => kv,
        Err(e) => {
            console_error!("lynxo-edge: KV binding {REVOCATIONS_BINDING} unavailable: {e}");
            return Ok(kv_unavailable(cfg).into());
        }
    };
    let key = cache::kv_key(push.index);
    let stored = match kv.get(&key).bytes().await {
        Ok(stored) => stored,
        Err(e) => {
            console_error!("lynxo-edge: KV read of {key} failed: {e}");
            return Ok(kv_unavailable(cfg).into());
        }
    };
    if let Err(reply) = sync::check_against_stored(&push, stored.as_deref(), &cfg.keyring) {
        return Ok(reply.into());
    }
    let written = match kv.put_bytes(&key, &body) {
        Ok(put) => put.execute().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        console_error!("lynxo-edge: KV write of {key} failed: {e}");
        return Ok(kv_unavailable(cfg).into());
    }
    // This isolate uses the new shard at once; others within one cache period.
    let version = push.shard.header().version;
    SHARDS.with_borrow_mut(|c| c.offer(push.index, cfg.shard_count, push.shard));
    Ok(Reply {
        status: 204,
        headers: vec![
            ("cache-control", "no-store".to_owned()),
            ("lynxo-shard-version", version.to_string()),
        ],
        body: String::new(),
    }
    .into())
}

/// The benchmark baseline's stand-in for an admitted caller: no key was checked.
#[cfg(feature = "bench-no-auth")]
fn unauthenticated(cfg: &Config) -> decide::Admitted {
    decide::Admitted {
        identity: shared::identity::Identity {
            account_id: 0,
            key_id: shared::key::KeyId([0; 16]),
            environment: cfg.environment,
            scopes: shared::scope::ScopeSet::EMPTY,
        },
        route: &shared::scope::ROUTES[0],
        source: decide::Source::Header,
    }
}

fn kv_unavailable(cfg: &Config) -> Reply {
    problem::unavailable(
        "storage_unavailable",
        "The edge's storage could not be reached. Please retry.",
        cfg.retry_after(),
    )
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
        assert_eq!(endpoint("GET", "/v1/jobs"), Endpoint::Api);
    }
}
