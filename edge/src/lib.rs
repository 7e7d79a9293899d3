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
//! - [`sync`]: the control plane's signed pushes of revocation shards and rate limits;
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
use crate::limit::{Call, Decision, Grant, Leases, Local, SetOutcome, Status};
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
    /// Anything else: an API request to authenticate and forward.
    Api,
}

/// Routes a request by method and path.
pub fn endpoint<'a>(method: &str, path: &'a str) -> Endpoint<'a> {
    if method == "GET" && path == HEALTH_PATH {
        Endpoint::Health
    } else if path == shared::limits::SYNC_PATH {
        Endpoint::SyncLimits
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
        Answer::Reply(reply) => (reply.status, meter::outcome_of_edge_status(reply.status)),
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

/// Asks `key`'s limiter object for a lease.
async fn call_limiter<T: serde::de::DeserializeOwned>(
    env: &Env,
    key: KeyId,
    call: &Call,
) -> worker::Result<T> {
    let ns = env.durable_object(RATE_LIMITER_BINDING)?;
    let stub = ns.id_from_name(&key.to_string())?.get_stub()?;
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

/// The rate-limit decision for an admitted request of `key`: a local token when there is one,
/// else a lease from the key's object. `None` when the object failed: fail open (the key itself
/// was verified), logged, without RateLimit headers.
async fn rate_limit(
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    key: KeyId,
    now_ms: u64,
) -> Option<Decision> {
    let want = match LEASES.with_borrow_mut(|l| l.take(key, now_ms)) {
        Local::Allowed { status, refill } => {
            if let Some(want) = refill {
                let call = Call::Take {
                    default: cfg.rate_limit_default,
                    want,
                };
                let env = env.clone();
                // After the response: the next lease arrives before this one runs out.
                ctx.wait_until(async move {
                    match call_limiter::<Grant>(&env, key, &call).await {
                        Ok(grant) => {
                            LEASES.with_borrow_mut(|l| l.refilled(key, &grant, crate::now_ms()))
                        }
                        Err(e) => {
                            limiter_failed(&format!("refill failed: {e}"));
                            LEASES.with_borrow_mut(|l| l.refill_failed(key));
                        }
                    }
                });
            }
            return Some(Decision::Allowed(status));
        }
        Local::Limited(status) => return Some(Decision::Limited(status)),
        Local::Ask { want } => want,
    };
    let call = Call::Take {
        default: cfg.rate_limit_default,
        want,
    };
    match call_limiter::<Grant>(env, key, &call).await {
        // The clock after the call: a lease is void once its window is over.
        Ok(grant) => Some(LEASES.with_borrow_mut(|l| l.record(key, &grant, crate::now_ms()))),
        Err(e) => {
            limiter_failed(&format!("unavailable, request let through: {e}"));
            None
        }
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
    let body_length = match body::api_body_length(method, framing, has_body) {
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
                if metering && reply.status == 401 {
                    if let Some(claims) = decide::owner(&incoming, cfg) {
                        attribute(attributed, &claims);
                    }
                }
                return Ok(reply.into());
            }
        };
        attribute(attributed, &verified.claims);
        let key_id = verified.claims.key_id;
        let index = shard_of(key_id, cfg.shard_count);
        refresh_shard(env, cfg, index, now_ms).await;
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
                // A refusal after the key verified still says what this isolate knows of the
                // key's window (no call to its object for a refused request).
                let known = if LIMITS && reply.status != 401 {
                    LEASES.with_borrow(|l| l.status(key_id, now_ms))
                } else {
                    None
                };
                return Ok(with_rate_headers(reply, known, now_ms).into());
            }
        }
    };
    if let Some(a) = attributed.as_mut() {
        a.caller.scope = Some(admitted.route.scope.name());
    }
    // Only requests that would be forwarded count against the key's limit.
    let rate = if LIMITS {
        match rate_limit(env, ctx, cfg, admitted.identity.key_id, now_ms).await {
            Some(Decision::Allowed(status)) => Some(status),
            Some(Decision::Limited(status)) => {
                return Ok(limit::exceeded(&status, now_ms).into());
            }
            None => None,
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

/// The signature header and body of a sync push: every check that needs no body first
/// (`sync::check_before_body`), then the body read as a stream that stops at `SYNC_MAX_BYTES`.
async fn read_push(
    req: &Request,
    cfg: &Config,
    method: &str,
) -> worker::Result<Result<(Option<String>, Vec<u8>), Reply>> {
    let (content_length, transfer_encoding) = framing_headers(req)?;
    let signature = req.headers().get(sync::SIGNATURE_HEADER)?;
    let framing = body::Framing {
        content_length: content_length.as_deref(),
        transfer_encoding: transfer_encoding.as_deref(),
    };
    let checked =
        sync::check_before_body(cfg, method, framing, signature.as_deref(), now_ms() / 1000);
    if let Err(reply) = checked {
        return Ok(Err(reply));
    }
    let body = body::read_capped(req, cfg.sync_max_bytes, "A sync push").await?;
    Ok(body.map(|body| (signature, body)))
}

/// `PUT /_lynxo/sync/limits`: applies each entry to its key's limiter object. This isolate
/// first gives back the unspent tokens of its lease for the key, so the new limit counts what
/// was really admitted here.
async fn push_limits(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
) -> worker::Result<Answer> {
    let (signature, body) = match read_push(&req, cfg, method).await? {
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
        let (returned, lease_reset_ms) = LEASES
            .with_borrow_mut(|l| l.surrender(entry.key_id, now_ms))
            .unwrap_or((0, 0));
        let call = Call::Set {
            policy: entry.policy,
            version: entry.version,
            returned,
            lease_reset_ms,
        };
        let (env, key) = (env.clone(), entry.key_id);
        calls.push(&wasm_bindgen_futures::future_to_promise(async move {
            match call_limiter::<SetOutcome>(&env, key, &call).await {
                Ok(_) => Ok(JsValue::TRUE),
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
    if method == "PUT" {
        if let Err(reply) = sync::parse_index(index_text, cfg) {
            return Ok(reply.into());
        }
    }
    let (signature, body) = match read_push(&req, cfg, method).await? {
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
        assert_eq!(endpoint("PUT", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(endpoint("GET", "/_lynxo/sync/limits"), Endpoint::SyncLimits);
        assert_eq!(endpoint("GET", "/v1/jobs"), Endpoint::Api);
    }
}
