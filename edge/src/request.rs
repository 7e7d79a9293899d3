//! The request path of an API call: framing, the admission decision ([`crate::decide`]), the
//! revocation shard it needs, the rate limit, and the forward to the origin. Every request the
//! decision attributes to a key comes back with its [`Attributed`] record for the meter.

use shared::key::KeyId;
use shared::revocation::shard_of;
use worker::{
    Context, Env, Headers, Request, RequestInit, RequestRedirect, Url, console_error, console_log,
    console_warn, js_sys,
    wasm_bindgen::{JsCast, JsValue},
    wasm_bindgen_futures::JsFuture,
    web_sys,
};

use crate::body;
use crate::cache::{self, Outcome};
use crate::config::Config;
use crate::decide::{self, Decided, Incoming};
use crate::forward;
use crate::isolate::{METER_OFF_LOGGED, SHARDS, now_ms};
use crate::limit::{self, Budget, Decision};
use crate::meter::{Caller, Place, Seen};
use crate::problem::{Problem, Reply};
use crate::respond::{Answer, origin_with_rate_headers, with_rate_headers};
use crate::stubs::{self, Attributed, rate_limit};
use crate::{LIMITS, ORIGIN_MTLS_BINDING, RATE_FIELDS, REVOCATIONS_BINDING};

/// An API request: the decision, its attribution for the meter (made once, from the decision,
/// whatever happens after it), the answer, and the meter's count of it.
pub(crate) async fn api(
    req: &Request,
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    method: &str,
    url: &Url,
) -> Answer {
    let now_ms = now_ms();
    // Every header the path reads (framing, credentials, the activity log's, the forwarded
    // ones) from one copy, taken in one pass: each `get` would cross into the runtime.
    let client = ClientHeaders(req.headers().entries().collect());
    // The body is never read here: it streams to the origin. Its framing is checked first.
    let body_length = match framed_length(req, &client, method) {
        Ok(n) => n,
        Err(reply) => return reply.into(),
    };
    let incoming = Incoming {
        method,
        path: url.path(),
        query: url.query(),
        authorization: client.get("authorization"),
    };
    let decided = decide_request(env, cfg, &incoming, now_ms).await;
    let attributed = attribution(req, &client, cfg, &incoming, &decided);
    let answer = answer(
        req,
        &client,
        env,
        ctx,
        cfg,
        &incoming,
        decided,
        body_length,
        now_ms,
    )
    .await
    .unwrap_or_else(crate::internal_error);
    if let Some(a) = attributed {
        stubs::record(ctx, env, &a, &answer);
    }
    answer
}

/// The client's headers as the runtime lists them: names lowercase, the values of a repeated
/// name joined by `, ` (what `Headers.get` answers).
pub(crate) struct ClientHeaders(pub(crate) Vec<(String, String)>);

impl ClientHeaders {
    /// The value of header `name` (lowercase).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The length of the request's body, from its framing headers, or the answer refusing them.
fn framed_length(req: &Request, client: &ClientHeaders, method: &str) -> Result<u64, Reply> {
    let framing = body::Framing {
        content_length: client.get("content-length"),
        transfer_encoding: client.get("transfer-encoding"),
    };
    let has_body = req.inner().body().is_some();
    body::request_body_length(method, framing, has_body)
}

/// The admission decision, with the key's revocation shard read in between its two steps.
#[cfg(not(feature = "bench-no-auth"))]
async fn decide_request(env: &Env, cfg: &Config, incoming: &Incoming<'_>, now_ms: u64) -> Decided {
    let now = now_ms / 1000;
    let verified = match decide::authenticate(incoming, cfg, now) {
        Ok(verified) => verified,
        Err(decided) => return decided,
    };
    let key_id = verified.claims.key_id;
    let index = shard_of(key_id, cfg.shard_count);
    refresh_shard(env, cfg, index, now_ms).await;
    if let Some(age) = SHARDS.with_borrow_mut(|c| c.stale_alarm(index, now)) {
        console_error!(
            "lynxo-edge: ALARM revocation shard {index} is {age} s old: heartbeats from the control plane are missing"
        );
    }
    let status = SHARDS.with_borrow(|c| c.status(index, key_id, now));
    decide::admit(&verified, incoming, status, cfg)
}

/// The benchmark baseline's decision: every request is admitted, attributed to nobody.
#[cfg(feature = "bench-no-auth")]
async fn decide_request(_: &Env, cfg: &Config, _: &Incoming<'_>, _: u64) -> Decided {
    Decided {
        owner: None,
        scope: None,
        answer: Ok(unauthenticated(cfg)),
    }
}

/// The usage record of a request whose key has an owner, when metering is on.
fn attribution<'a>(
    req: &'a Request,
    client: &'a ClientHeaders,
    cfg: &Config,
    incoming: &Incoming<'a>,
    decided: &Decided,
) -> Option<Attributed<'a>> {
    let metering = LIMITS && cfg.control_url.is_some();
    if LIMITS && !metering && !METER_OFF_LOGGED.replace(true) {
        console_log!("lynxo-edge: CONTROL_URL is not set: usage metering is off");
    }
    let claims = decided.owner.filter(|_| metering)?;
    Some(Attributed {
        caller: Caller {
            key_id: claims.key_id,
            account_id: claims.account_id,
            scope: decided.scope.map(|s| s.name()),
        },
        seen: Seen {
            method: incoming.method,
            path: incoming.path,
            client_ip: client.get("cf-connecting-ip"),
            user_agent: client.get("user-agent"),
        },
        request: req.inner(),
        shards: cfg.meter_shards,
    })
}

/// The answer to a decided request: a refusal (rate-limited when the key has an owner), or the
/// rate limit and the origin's response.
#[allow(clippy::too_many_arguments)]
async fn answer(
    req: &Request,
    client: &ClientHeaders,
    env: &Env,
    ctx: &Context,
    cfg: &Config,
    incoming: &Incoming<'_>,
    decided: Decided,
    body_length: u64,
    now_ms: u64,
) -> worker::Result<Answer> {
    let method = incoming.method;
    let admitted = match decided.answer {
        Ok(admitted) => admitted,
        // A key with an owner (an expired one too) is throttled even when refused.
        Err(reply) => {
            return Ok(match decided.owner {
                Some(claims) => refusal(env, ctx, cfg, reply, claims.key_id, now_ms).await,
                None => reply,
            }
            .into());
        }
    };
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
        incoming,
        &admitted,
        client.0.iter().map(|(name, value)| (name, value)),
        body_length,
        random_request_id()?,
        now_ms / 1000,
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
    match send(env, &origin_request).await {
        Ok(response) => Ok(Answer::Origin(match rate {
            Some(status) if RATE_FIELDS => origin_with_rate_headers(response, &status, now_ms),
            _ => response,
        })),
        Err(e) => {
            console_error!("lynxo-edge: origin unreachable: {e}");
            let reply = Problem::new(
                502,
                "origin_unavailable",
                "Bad Gateway",
                "The Lynxo API could not be reached. Please retry.",
            )
            .because(shared::usage::Reason::OriginUnavailable)
            .reply();
            Ok(with_rate_headers(reply, rate, now_ms).into())
        }
    }
}

/// Sends the request to the origin; its response comes back as the runtime's object, unread
/// (`worker::Response` would take it apart with a call per field, to be put together again).
async fn send(env: &Env, request: &Request) -> worker::Result<web_sys::Response> {
    // With an mTLS certificate binding, the origin can require the worker's own client
    // certificate (docs/edge.md, "Locking the origin to the edge").
    let promise = match env.service(ORIGIN_MTLS_BINDING) {
        Ok(client_certificate) => {
            let fetcher: &worker::worker_sys::Fetcher = client_certificate.as_ref().unchecked_ref();
            fetcher.fetch(request.inner())?
        }
        Err(_) => {
            let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            global.fetch_with_request(request.inner())
        }
    };
    Ok(JsFuture::from(promise).await?.dyn_into()?)
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

/// Where the request came from (`request.cf`), for an activity entry the meter keeps: three
/// calls into the runtime, so made only then ([`crate::meter::Buffer::push`]).
pub(crate) fn place(req: &web_sys::Request) -> Place {
    // `request.cf` is a getter of the runtime's request: one call for both fields.
    let cf = js_sys::Reflect::get(req, &JsValue::from_str("cf"))
        .ok()
        .filter(JsValue::is_object);
    let cf_field = |name: &str| {
        js_sys::Reflect::get(cf.as_ref()?, &JsValue::from_str(name))
            .ok()?
            .as_string()
    };
    Place {
        country: cf_field("country"),
        colo: cf_field("colo"),
    }
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
