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
//! - [`body`]: request bodies: framing rules, and the capped read of a sync push;
//! - [`sync`]: the control plane's signed pushes of revocation shards, rate limits and the audit
//!   checkpoint;
//! - [`limit`]: per-key rate limits: the `KeyLimiter` object's counter and isolate-local leases;
//! - [`meter`]: usage counts pre-aggregated in the isolate, the `UsageMeter` object's batches;
//! - [`objects`]: the two Durable Object classes;
//! - [`problem`]: every answer the edge makes itself, as RFC 9457 problem documents.
//!
//! Every decision is a call into `shared`. The glue below only moves bytes between the runtime
//! and those functions, and turns every runtime error into a 5xx problem, never a panic (a panic
//! resets the module and aborts every request in flight). The design note is `docs/edge.md`.

// The benchmark baselines skip authentication or limits, leaving their helpers unused.
#![cfg_attr(
    any(feature = "bench-no-auth", feature = "bench-no-limits"),
    allow(dead_code, unused_imports)
)]

pub mod body;
pub mod cache;
pub mod config;
pub mod decide;
pub mod forward;
pub mod limit;
pub mod meter;
pub mod objects;
pub mod problem;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use shared::key::KeyId;
use shared::revocation::shard_of;
use worker::{
    Context, Date, Delay, Env, Fetch, Headers, Request, RequestInit, RequestRedirect, Response,
    ResponseBody, ResponseBuilder, Url, console_error, console_log, console_warn, event, js_sys,
    wasm_bindgen::{JsCast, JsValue},
    wasm_bindgen_futures,
};

use crate::cache::{Outcome, ShardCache};
use crate::config::{BINDINGS, Config};
use crate::decide::Incoming;
use crate::limit::{Budget, Call, Decision, Leases, Local, SetOutcome, Status, Taken};
use crate::meter::{Answered, Buffer, Caller, Delivery, Flush, Seen};
use crate::problem::{Problem, Reply};

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
    /// Rate-limit leases of this isolate.
    static LEASES: RefCell<Leases> = RefCell::new(Leases::default());
    /// Usage counts and activity not yet handed to a meter object.
    static METER: RefCell<Buffer> = RefCell::new(Buffer::default());
    /// Names this isolate's meter deliveries (random, made once per isolate).
    static NONCE: String = objects::random_hex();
    /// When a limiter failure was last logged, and how many were not logged since.
    static LIMITER_LOG: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// Whether "metering is off" was logged in this isolate.
    static METER_OFF_LOGGED: Cell<bool> = const { Cell::new(false) };
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

/// A request that belongs to a key: what its usage record says besides the answer.
struct Attributed {
    caller: Caller,
    seen: Seen,
    /// `METER_SHARDS`.
    shards: u16,
}

/// Workers entry point for HTTP requests.
#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let mut attributed = None;
    let answer = match handle(req, &env, &ctx, &mut attributed).await {
        Ok(answer) => answer,
        Err(e) => {
            // Logged once, here; the caller learns nothing about the edge's internals.
            console_error!("lynxo-edge: internal error: {e}");
            Answer::Reply(problem::internal())
        }
    };
    let (status, outcome) = match &answer {
        Answer::Origin(response) => {
            let status = response.status_code();
            (status, shared::usage::Outcome::of_origin_status(status))
        }
        // The edge's own answer: never origin traffic, whatever its status.
        Answer::Reply(reply) => (
            reply.status,
            shared::usage::Outcome::of_edge_status(reply.status),
        ),
    };
    if let Some(a) = attributed {
        let answered = Answered {
            status,
            outcome,
            at_ms: now_ms(),
        };
        record(&ctx, &env, &a, answered);
    }
    Ok(match answer {
        Answer::Origin(response) => response,
        Answer::Reply(reply) => to_response(&reply),
    })
}

/// Counts a request in the isolate's buffer and schedules its flush after the response.
fn record(ctx: &Context, env: &Env, a: &Attributed, answered: Answered) {
    match METER.with_borrow_mut(|b| b.push(a.shards, &a.caller, &a.seen, answered)) {
        Flush::Now => ctx.wait_until(flush(env.clone())),
        Flush::After(ms) => {
            let env = env.clone();
            ctx.wait_until(async move {
                Delay::from(Duration::from_millis(ms)).await;
                flush(env).await;
            });
        }
        Flush::Pending => {}
    }
}

/// Hands the buffered parts to their meter objects; keeps (and retries) what failed.
async fn flush(env: Env) {
    let nonce = NONCE.with(|n| n.clone());
    for attempt in 0..4_u32 {
        let deliveries = METER.with_borrow_mut(|b| b.take(now_ms(), &nonce));
        let mut retry = false;
        for delivery in deliveries {
            if let Err(e) = deliver(&env, &delivery).await {
                console_error!(
                    "lynxo-edge: meter-{} unreachable, {} requests kept: {e}",
                    delivery.shard,
                    delivery.requests()
                );
                retry |= METER.with_borrow_mut(|b| b.restore(delivery));
            }
        }
        let dropped = METER.with_borrow_mut(|b| b.take_dropped());
        if dropped > 0 {
            console_error!("lynxo-edge: meter buffer full: {dropped} requests dropped");
        }
        if !retry {
            return;
        }
        Delay::from(Duration::from_millis(meter::RETRY_AFTER_MS << attempt)).await;
    }
    // Still failing: the next request starts a new timer for what is left.
    METER.with_borrow_mut(|b| b.disarm());
}

async fn deliver(env: &Env, delivery: &Delivery) -> worker::Result<()> {
    let ns = env.durable_object(METER_BINDING)?;
    let stub = ns
        .id_from_name(&meter::object_name(delivery.shard))?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(serde_json::to_string(delivery)?.into()));
    let response = stub
        .fetch_with_request(Request::new_with_init("https://meter/events", &init)?)
        .await?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("meter answered {status}").into()),
    }
}

/// Logs a limiter failure, at most once a second per isolate (an outage fails every request
/// open; one line per request would flood the log), with the count of those not logged.
fn limiter_failed(what: &str) {
    let now = now_ms();
    let (last, quiet) = LIMITER_LOG.get();
    if now.saturating_sub(last) >= 1_000 {
        LIMITER_LOG.set((now, 0));
        console_error!("lynxo-edge: rate limiter {what} ({quiet} more since the last report)");
    } else {
        LIMITER_LOG.set((last, quiet + 1));
    }
}

/// Calls `budget`'s limiter object.
async fn call_limiter<T: serde::de::DeserializeOwned>(
    env: &Env,
    budget: Budget,
    call: &Call,
) -> worker::Result<T> {
    let ns = env.durable_object(RATE_LIMITER_BINDING)?;
    let stub = ns.id_from_name(&budget.object_name())?.get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(serde_json::to_string(call)?.into()));
    let mut response = stub
        .fetch_with_request(Request::new_with_init("https://limiter/", &init)?)
        .await?;
    if response.status_code() != 200 {
        return Err(format!("limiter answered {}", response.status_code()).into());
    }
    Ok(serde_json::from_str(&response.text().await?)?)
}

/// Asks `budget`'s object, in the background, for the next lease of up to `want` tokens.
fn refill(env: &Env, ctx: &Context, budget: Budget, default: shared::limits::Policy, want: u32) {
    let env = env.clone();
    // After the response: the next lease arrives before this one runs out.
    ctx.wait_until(async move {
        let returned = LEASES.with_borrow_mut(|l| l.returns(budget));
        let call = Call::Take {
            default,
            want,
            returned,
        };
        let sent = now_ms();
        match call_limiter::<Taken>(&env, budget, &call).await {
            Ok(Taken::Granted(grant)) => {
                LEASES.with_borrow_mut(|l| l.refilled(budget, &grant, sent, now_ms()))
            }
            Ok(Taken::Redirect { .. }) => LEASES.with_borrow_mut(|l| l.refill_failed(budget)),
            Err(e) => {
                limiter_failed(&format!("refill failed: {e}"));
                LEASES.with_borrow_mut(|l| l.refill_failed(budget));
            }
        }
    });
}

/// The rate-limit decision for a request the edge attributes to a key: `Budget::Key` for a
/// working key (every request, refused ones included), `Budget::Refused` for a revoked or
/// expired one. A local token when there is one, else a lease from the budget's object; a key
/// whose object answers with a redirect counts at its rotation chain's budget from then on.
/// `None` when the object failed: fail open (the key itself was verified), logged, without
/// RateLimit headers.
async fn rate_limit(
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    budget: Budget,
    now_ms: u64,
) -> Option<Decision> {
    let (key, default) = match budget {
        Budget::Key(key) => (Some(key), cfg.rate_limit_default),
        Budget::Refused(_) => (None, limit::REFUSED_KEY_POLICY),
    };
    let mut budget = match key {
        Some(key) => LEASES.with_borrow(|l| l.budget_of(key)),
        None => budget,
    };
    // At most: a redirect, a lease that ended before its answer, and one more try.
    for _ in 0..3 {
        let want = match LEASES.with_borrow_mut(|l| l.take(budget, crate::now_ms())) {
            Local::Allowed { status, refill } => {
                if let Some(want) = refill {
                    self::refill(env, ctx, budget, default, want);
                }
                return Some(Decision::Allowed(status));
            }
            Local::Limited(status) => return Some(Decision::Limited(status)),
            Local::Ask { want } => want,
        };
        let returned = LEASES.with_borrow_mut(|l| l.returns(budget));
        let call = Call::Take {
            default,
            want,
            returned,
        };
        let sent = crate::now_ms();
        match call_limiter::<Taken>(env, budget, &call).await {
            // The clock after the call: a lease is void once it has ended.
            Ok(Taken::Granted(grant)) => {
                match LEASES.with_borrow_mut(|l| l.record(budget, &grant, sent, crate::now_ms())) {
                    Decision::Void => continue,
                    decision => return Some(decision),
                }
            }
            Ok(Taken::Redirect { budget: to }) => {
                let (Some(key), Some(to)) = (key, KeyId::parse_hex(&to)) else {
                    limiter_failed("redirected a budget that has no key");
                    return None;
                };
                LEASES.with_borrow_mut(|l| l.route(key, to));
                budget = Budget::Key(to);
            }
            Err(e) => {
                limiter_failed(&format!("unavailable, request let through: {e}"));
                return None;
            }
        }
    }
    // Every answer came too late to use: refuse this one request, the next asks again.
    Some(Decision::Limited(Status {
        limit: default.limit,
        window: default.window,
        remaining: 0,
        reset_ms: now_ms + limit::EXHAUSTED_RECHECK_MS,
        retry_ms: now_ms + limit::EXHAUSTED_RECHECK_MS,
        per_minute: None,
    }))
}

/// The edge's refusal of a request with `key`, after it spent a token of the key's budget:
/// every request the edge attributes to a key counts, refused ones included. A 401 (revoked or
/// expired key) spends from the key's refused-key budget, so a leaked dead key cannot use up
/// its successor's; a 403, 404 or 405 from the key's own budget, with its RateLimit fields.
/// Over the budget the answer is 429. A 503 (the edge could not check the key) spends nothing:
/// the failure is the edge's.
async fn refusal(
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    reply: Reply,
    key: KeyId,
    now_ms: u64,
) -> Reply {
    let budget = match reply.status {
        401 => Budget::Refused(key),
        403..=499 => Budget::Key(key),
        _ => return reply,
    };
    if !LIMITS {
        return reply;
    }
    match (budget, rate_limit(env, ctx, cfg, budget, now_ms).await) {
        (Budget::Refused(_), Some(Decision::Limited(status))) => {
            limit::refused_exceeded(&status, now_ms)
        }
        (_, Some(Decision::Limited(status))) => limit::exceeded(&status, now_ms),
        (Budget::Key(_), Some(Decision::Allowed(status))) => {
            with_rate_headers(reply, Some(status), now_ms)
        }
        // A 401 never carries RateLimit fields: they would describe a policy the key no longer
        // has.
        _ => reply,
    }
}

/// Adds the RateLimit header fields to a reply.
fn with_rate_headers(mut reply: Reply, status: Option<Status>, now_ms: u64) -> Reply {
    if let Some(status) = status {
        reply.headers.extend(status.headers(now_ms));
    }
    reply
}

/// The origin's response with the RateLimit header fields added. Its headers are immutable in
/// the Workers runtime, so this is a new response around the same body stream.
fn origin_with_rate_headers(response: Response, status: &Status, now_ms: u64) -> Response {
    let code = response.status_code();
    // 101 (a WebSocket) passes through untouched.
    if !(200..=599).contains(&code) {
        return response;
    }
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        if headers.append(&name, &value).is_err() {
            console_warn!("lynxo-edge: origin header {name} not copied");
        }
    }
    for (name, value) in status.headers(now_ms) {
        if headers.set(name, &value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    let (_, body) = response.into_parts();
    // A null-body status must not get a stream (the Response constructor would throw).
    let body = match body {
        ResponseBody::Stream(_) if matches!(code, 204 | 205 | 304) => ResponseBody::Empty,
        body => body,
    };
    ResponseBuilder::new()
        .with_status(code)
        .with_headers(headers)
        .body(body)
}

/// The request details for the activity log and a key's last use.
fn seen(req: &Request, method: &str, path: &str) -> Seen {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let cf_field = |name: &str| {
        let cf = js_sys::Reflect::get(req.inner(), &JsValue::from_str("cf")).ok()?;
        if !cf.is_object() {
            return None;
        }
        js_sys::Reflect::get(&cf, &JsValue::from_str(name))
            .ok()?
            .as_string()
    };
    Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        client_ip: header("cf-connecting-ip"),
        country: cf_field("country"),
        colo: cf_field("colo"),
        user_agent: header("user-agent"),
    }
}

/// Builds a response that cannot fail: a header the runtime refuses is logged and left out.
fn to_response(reply: &Reply) -> Response {
    let headers = Headers::new();
    for (name, value) in &reply.headers {
        if headers.append(name, value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    let builder = ResponseBuilder::new()
        .with_status(reply.status)
        .with_headers(headers);
    if reply.body.is_empty() {
        // A null body: a 204 with a zero-length body draws a runtime warning per response.
        builder.empty()
    } else {
        builder.fixed(reply.body.as_bytes().to_vec())
    }
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// The request's `Content-Length` and `Transfer-Encoding` headers.
fn framing_headers(req: &Request) -> worker::Result<(Option<String>, Option<String>)> {
    Ok((
        req.headers().get("content-length")?,
        req.headers().get("transfer-encoding")?,
    ))
}

/// A fresh request id from the runtime's cryptographic random source.
fn random_request_id() -> worker::Result<shared::identity::RequestId> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))?;
    let fill: js_sys::Function =
        js_sys::Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))?.dyn_into()?;
    let bytes = js_sys::Uint8Array::new_with_length(16);
    fill.call1(&crypto, &bytes)?;
    let mut id = [0_u8; 16];
    bytes.copy_to(&mut id);
    Ok(shared::identity::RequestId(id))
}

async fn handle(
    req: Request,
    env: &Env,
    ctx: &Context,
    attributed: &mut Option<Attributed>,
) -> worker::Result<Answer> {
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
        Endpoint::SyncLimits => match load_config(env) {
            Ok(cfg) => push_limits(req, env, &cfg, &method).await,
            Err(reply) => Ok(reply.into()),
        },
        Endpoint::SyncCheckpoint => match load_config(env) {
            Ok(cfg) => sync_checkpoint(req, env, &cfg, &method).await,
            Err(reply) => Ok(reply.into()),
        },
        Endpoint::Api => match load_config(env) {
            Ok(cfg) => api(req, env, ctx, &cfg, &method, &url, attributed).await,
            Err(reply) => Ok(reply.into()),
        },
    }
}

/// The configuration, rebuilt only when a binding's value changed.
pub(crate) fn load_config(env: &Env) -> Result<Rc<Config>, Reply> {
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
    ctx: &Context,
    cfg: &Config,
    method: &str,
    url: &Url,
    attributed: &mut Option<Attributed>,
) -> worker::Result<Answer> {
    let now_ms = now_ms();
    let now = now_ms / 1000;
    // The body is never read here: it streams to the origin. Its framing is checked first.
    let (content_length, transfer_encoding) = framing_headers(&req)?;
    let framing = body::Framing {
        content_length: content_length.as_deref(),
        transfer_encoding: transfer_encoding.as_deref(),
    };
    let has_body = req.inner().body().is_some();
    let body_length = match body::request_body_length(method, framing, has_body) {
        Ok(n) => n,
        Err(reply) => return Ok(reply.into()),
    };
    let authorization = req.headers().get("authorization")?;
    let incoming = Incoming {
        method,
        path: url.path(),
        query: url.query(),
        authorization: authorization.as_deref(),
    };
    let metering = LIMITS && cfg.control_url.is_some();
    if LIMITS && !metering && !METER_OFF_LOGGED.replace(true) {
        console_log!("lynxo-edge: CONTROL_URL is not set: usage metering is off");
    }
    let attribute = |attributed: &mut Option<Attributed>, claims: &shared::key::Claims| {
        if metering {
            *attributed = Some(Attributed {
                caller: Caller {
                    key_id: claims.key_id,
                    account_id: claims.account_id,
                    scope: None,
                },
                seen: seen(&req, method, url.path()),
                shards: cfg.meter_shards,
            });
        }
    };
    #[cfg(feature = "bench-no-auth")]
    let admitted = {
        let _ = (env, now_ms, &attribute);
        unauthenticated(cfg)
    };
    #[cfg(not(feature = "bench-no-auth"))]
    let admitted = {
        let verified = match decide::authenticate(&incoming, cfg, now) {
            Ok(verified) => verified,
            Err(reply) => {
                // An expired key whose tag verifies belongs to its owner: metered, and
                // throttled at its refused-key budget.
                let owner = if LIMITS && reply.status == 401 {
                    decide::owner(&incoming, cfg)
                } else {
                    None
                };
                let Some(claims) = owner else {
                    return Ok(reply.into());
                };
                attribute(attributed, &claims);
                return Ok(refusal(env, ctx, cfg, reply, claims.key_id, now_ms)
                    .await
                    .into());
            }
        };
        attribute(attributed, &verified.claims);
        let key_id = verified.claims.key_id;
        let index = shard_of(key_id, cfg.shard_count);
        refresh_shard(env, cfg, index, now_ms).await;
        if let Some(age) = SHARDS.with_borrow_mut(|c| c.stale_alarm(index, now)) {
            console_error!(
                "lynxo-edge: ALARM revocation shard {index} is {age} s old: heartbeats from the control plane are missing"
            );
        }
        let status = SHARDS.with_borrow(|c| c.status(index, key_id, now));
        match decide::admit(&verified, &incoming, status, cfg) {
            Ok(admitted) => admitted,
            Err(reply) => {
                if reply.status == 403 {
                    if let Some(a) = attributed.as_mut() {
                        a.caller.scope = shared::scope::find_route(method, url.path())
                            .ok()
                            .map(|r| r.scope.name());
                    }
                }
                return Ok(refusal(env, ctx, cfg, reply, key_id, now_ms).await.into());
            }
        }
    };
    if let Some(a) = attributed.as_mut() {
        a.caller.scope = Some(admitted.route.scope.name());
    }
    let rate = if LIMITS {
        match rate_limit(env, ctx, cfg, Budget::Key(admitted.identity.key_id), now_ms).await {
            Some(Decision::Allowed(status)) => Some(status),
            Some(Decision::Limited(status)) => {
                return Ok(limit::exceeded(&status, now_ms).into());
            }
            Some(Decision::Void) | None => None,
        }
    } else {
        None
    };

    let Some(plan) = forward::plan(
        cfg,
        &incoming,
        &admitted,
        req.headers().entries(),
        body_length,
        random_request_id()?,
        now,
    ) else {
        return Err("the origin URL does not parse".into());
    };
    let headers = Headers::new();
    for (name, value) in &plan.headers {
        headers.append(name, value)?;
    }
    // The body streams through unread, with the length the signature binds.
    let body = match body_length {
        0 => None,
        _ => req.inner().body().map(Into::into),
    };
    let mut init = RequestInit::new();
    init.with_method(worker::Method::from(method.to_owned()))
        .with_headers(headers)
        .with_body(body)
        .with_redirect(RequestRedirect::Manual);
    let origin_request = Request::new_with_init(&plan.url, &init)?;
    // With an mTLS certificate binding, the origin can require the worker's own client
    // certificate (docs/edge.md, "Locking the origin to the edge").
    let sent = match env.service(ORIGIN_MTLS_BINDING) {
        Ok(client_certificate) => client_certificate.fetch_request(origin_request).await,
        Err(_) => Fetch::Request(origin_request).send().await,
    };
    match sent {
        Ok(response) => Ok(Answer::Origin(match rate {
            Some(status) => origin_with_rate_headers(response, &status, now_ms),
            None => response,
        })),
        Err(e) => {
            console_error!("lynxo-edge: origin unreachable: {e}");
            let reply = Problem::new(
                502,
                "origin_unavailable",
                "Bad Gateway",
                "The Lynxo API could not be reached. Please retry.",
            )
            .reply();
            Ok(with_rate_headers(reply, rate, now_ms).into())
        }
    }
}

/// The signature header and body of a sync push (a `PUT`: the caller refused other methods):
/// every check that needs no body first (`sync::check_before_body`), then the body read as a
/// stream that stops at `SYNC_MAX_BYTES`.
async fn read_push(
    req: &Request,
    cfg: &Config,
) -> worker::Result<Result<(Option<String>, Vec<u8>), Reply>> {
    let (content_length, transfer_encoding) = framing_headers(req)?;
    let signature = req.headers().get(sync::SIGNATURE_HEADER)?;
    let framing = body::Framing {
        content_length: content_length.as_deref(),
        transfer_encoding: transfer_encoding.as_deref(),
    };
    let checked = sync::check_before_body(cfg, framing, signature.as_deref(), now_ms() / 1000);
    if let Err(reply) = checked {
        return Ok(Err(reply));
    }
    let body = body::read_capped(req, cfg.sync_max_bytes, "A sync push").await?;
    Ok(body.map(|body| (signature, body)))
}

/// `PUT /_lynxo/sync/limits`: applies each entry to its budget's limiter object (the key's own,
/// or its rotation chain's first key's, after telling the key's own object the route). This
/// isolate first gives back the unspent tokens of its lease of that budget, so the new limit
/// counts what was really admitted here.
async fn push_limits(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
) -> worker::Result<Answer> {
    if method != "PUT" {
        return Ok(sync::put_only().into());
    }
    let (signature, body) = match read_push(&req, cfg).await? {
        Ok(read) => read,
        Err(reply) => return Ok(reply.into()),
    };
    let now_ms = now_ms();
    let entries =
        match sync::check_limits_push(cfg, method, signature.as_deref(), &body, now_ms / 1000) {
            Ok(entries) => entries,
            Err(reply) => return Ok(reply.into()),
        };
    let calls = js_sys::Array::new();
    for entry in &entries {
        // The entry's policy is its budget's: the chain's first key for a rotated key, whose
        // own object learns the route to it. This isolate's lease of that budget goes back.
        let budget = Budget::Key(entry.budget.unwrap_or(entry.key_id));
        let returned = LEASES.with_borrow_mut(|l| l.surrender(budget));
        let set = Call::Set {
            policy: entry.policy,
            version: entry.version,
            per_minute: entry.per_minute,
            returned,
        };
        let route = entry.budget.map(|to| Call::Route {
            budget: to.to_string(),
        });
        let (env, key) = (env.clone(), entry.key_id);
        calls.push(&wasm_bindgen_futures::future_to_promise(async move {
            let routed = match &route {
                Some(route) => call_limiter::<SetOutcome>(&env, Budget::Key(key), route)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            };
            let applied = match routed {
                Ok(()) => call_limiter::<SetOutcome>(&env, budget, &set)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match applied {
                Ok(()) => Ok(JsValue::TRUE),
                Err(e) => {
                    console_error!("lynxo-edge: limit of {key} not applied: {e}");
                    Ok(JsValue::FALSE)
                }
            }
        }));
    }
    let results = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::all(&calls)).await?;
    let failed = js_sys::Array::from(&results)
        .iter()
        .filter(|v| !v.is_truthy())
        .count();
    if failed > 0 {
        return Ok(problem::unavailable(
            "limits_not_applied",
            &format!(
                "{failed} of {} limits could not be applied; retry the whole push.",
                entries.len()
            ),
            1,
        )
        .into());
    }
    Ok(Reply {
        status: 204,
        headers: vec![("cache-control", "no-store".to_owned())],
        body: String::new(),
    }
    .into())
}

async fn push_revocations(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
    index_text: &str,
) -> worker::Result<Answer> {
    if method != "PUT" {
        return Ok(sync::put_only().into());
    }
    if let Err(reply) = sync::parse_index(index_text, cfg) {
        return Ok(reply.into());
    }
    let (signature, body) = match read_push(&req, cfg).await? {
        Ok(read) => read,
        Err(reply) => return Ok(reply.into()),
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
    let key = cache::kv_key(push.index);
    let (kv, stored) = match kv_read(env, cfg, &key).await {
        Ok(read) => read,
        Err(reply) => return Ok(reply.into()),
    };
    if let Err(reply) =
        sync::check_against_stored(&push, stored.as_deref(), &cfg.keyring, now_ms / 1000)
    {
        return Ok(reply.into());
    }
    if let Err(reply) = kv_write(&kv, cfg, &key, &body).await {
        return Ok(reply.into());
    }
    // This isolate uses the new shard at once; others within one cache period.
    let version = push.shard.header().version;
    SHARDS.with_borrow_mut(|c| c.offer(push.index, cfg.shard_count, push.shard, now_ms / 1000));
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

/// `GET` and `PUT` of the audit checkpoint: a signed read hands the stored one back, a signed
/// push replaces it unless KV holds a later one (`sync::check_checkpoint_*`).
async fn sync_checkpoint(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
) -> worker::Result<Answer> {
    let read = match method {
        "PUT" => read_push(&req, cfg).await?,
        // A read takes no body: one that comes with a body is refused unread.
        "GET" => {
            let (content_length, transfer_encoding) = framing_headers(&req)?;
            let framing = body::Framing {
                content_length: content_length.as_deref(),
                transfer_encoding: transfer_encoding.as_deref(),
            };
            let has_body = req.inner().body().is_some();
            match body::request_body_length(method, framing, has_body) {
                Ok(_) => Ok((req.headers().get(sync::SIGNATURE_HEADER)?, Vec::new())),
                Err(reply) => Err(reply),
            }
        }
        _ => return Ok(sync::get_or_put().into()),
    };
    let (signature, body) = match read {
        Ok(read) => read,
        Err(reply) => return Ok(reply.into()),
    };
    let now = now_ms() / 1000;
    let checked = if method == "GET" {
        sync::check_checkpoint_read(cfg, method, signature.as_deref(), now).map(|()| None)
    } else {
        sync::check_checkpoint_push(cfg, method, signature.as_deref(), &body, now).map(Some)
    };
    let pushed = match checked {
        Ok(pushed) => pushed,
        Err(reply) => return Ok(reply.into()),
    };
    let key = shared::audit::KV_KEY;
    let (kv, stored) = match kv_read(env, cfg, key).await {
        Ok(read) => read,
        Err(reply) => return Ok(reply.into()),
    };
    let Some(pushed) = pushed else {
        return Ok(sync::checkpoint_reply(stored.as_deref()).into());
    };
    if let Err(reply) = sync::check_checkpoint_against_stored(&pushed, &body, stored.as_deref()) {
        return Ok(reply.into());
    }
    if let Err(reply) = kv_write(&kv, cfg, key, &body).await {
        return Ok(reply.into());
    }
    Ok(Reply {
        status: 204,
        headers: vec![("cache-control", "no-store".to_owned())],
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

/// The revocations namespace and the value under `key`; a failure is logged and becomes the
/// 503 to answer.
async fn kv_read(
    env: &Env,
    cfg: &Config,
    key: &str,
) -> Result<(worker::kv::KvStore, Option<Vec<u8>>), Reply> {
    let kv = env.kv(REVOCATIONS_BINDING).map_err(|e| {
        console_error!("lynxo-edge: KV binding {REVOCATIONS_BINDING} unavailable: {e}");
        kv_unavailable(cfg)
    })?;
    match kv.get(key).bytes().await {
        Ok(stored) => Ok((kv, stored)),
        Err(e) => {
            console_error!("lynxo-edge: KV read of {key} failed: {e}");
            Err(kv_unavailable(cfg))
        }
    }
}

/// Writes `body` under `key`; a failure is logged and becomes the 503 to answer.
async fn kv_write(
    kv: &worker::kv::KvStore,
    cfg: &Config,
    key: &str,
    body: &[u8],
) -> Result<(), Reply> {
    let written = match kv.put_bytes(key, body) {
        Ok(put) => put.execute().await,
        Err(e) => Err(e),
    };
    written.map_err(|e| {
        console_error!("lynxo-edge: KV write of {key} failed: {e}");
        kv_unavailable(cfg)
    })
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
        assert_eq!(endpoint("PUT", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(endpoint("GET", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(
            endpoint("GET", "/_lynxo/sync/audit-checkpoint"),
            Endpoint::SyncCheckpoint
        );
        assert_eq!(endpoint("GET", "/v1/jobs"), Endpoint::Api);
    }
}
