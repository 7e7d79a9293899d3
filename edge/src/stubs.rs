//! Calls to the Durable Objects: the usage buffer's deliveries to the `UsageMeter` objects and
//! the rate-limit leases from the `KeyLimiter` objects. The decisions are pure code in
//! [`crate::meter`] and [`crate::limit`]; this module only carries their calls out and logs
//! what failed (a limiter outage fails open, logged at most once a second).

use std::time::Duration;

use worker::{Context, Delay, Env, Request, RequestInit, console_error, web_sys};

use crate::config::Config;
use crate::isolate::{LEASES, LIMITER_LOG, METER, NONCE, now_ms};
use crate::limit::{self, Budget, Call, Decision, Local, Status, Taken};
use crate::meter::{self, Answered, Caller, Delivery, Flush, Seen};
use crate::respond::Answer;
use crate::{METER_BINDING, RATE_LIMITER_BINDING};

/// A request that belongs to a key: what its usage record says besides the answer, borrowed
/// from the request being answered (the buffer copies only what it keeps), so counting a
/// request allocates nothing and takes no handle of the runtime's request.
pub(crate) struct Attributed<'a> {
    /// The key, its account and the scope the request was about.
    pub(crate) caller: Caller,
    /// The request's details for the activity log.
    pub(crate) seen: Seen<'a>,
    /// The client's request, for `request.cf` ([`crate::request::place`]): read only if the
    /// activity entry is kept.
    pub(crate) request: &'a web_sys::Request,
    /// `METER_SHARDS`.
    pub(crate) shards: u16,
}

/// Counts a request, answered with `answer`, in the isolate's buffer and schedules its flush
/// after the response.
pub(crate) fn record(ctx: &Context, env: &Env, a: &Attributed<'_>, answer: &Answer) {
    let answered = match answer {
        Answer::Origin(response) => Answered::origin(response.status(), now_ms()),
        Answer::Reply(reply) => Answered::edge(reply, now_ms()),
    };
    let place = || crate::request::place(a.request);
    match METER.with_borrow_mut(|b| b.push(a.shards, &a.caller, &a.seen, answered, place)) {
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
        let mut deliveries = METER.with_borrow_mut(|b| b.take(now_ms(), &nonce));
        for delivery in &mut deliveries {
            delivery.health = Some(crate::health::report(now_ms()));
        }
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
pub(crate) fn limiter_failed(what: &str) {
    let now = now_ms();
    crate::health::limiter_failed();
    let (last, quiet) = LIMITER_LOG.get();
    if now.saturating_sub(last) >= 1_000 {
        LIMITER_LOG.set((now, 0));
        console_error!("lynxo-edge: rate limiter {what} ({quiet} more since the last report)");
    } else {
        LIMITER_LOG.set((last, quiet + 1));
    }
}

/// Calls `budget`'s limiter object.
pub(crate) async fn call_limiter<T: serde::de::DeserializeOwned>(
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
pub(crate) async fn rate_limit(
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
        let want = match LEASES.with_borrow_mut(|l| l.take(budget, crate::isolate::now_ms())) {
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
        let sent = crate::isolate::now_ms();
        match call_limiter::<Taken>(env, budget, &call).await {
            // The clock after the call: a lease is void once it has ended.
            Ok(Taken::Granted(grant)) => {
                match LEASES
                    .with_borrow_mut(|l| l.record(budget, &grant, sent, crate::isolate::now_ms()))
                {
                    Decision::Void => continue,
                    decision => return Some(decision),
                }
            }
            Ok(Taken::Redirect { budget: to }) => {
                let Some(key) = key else {
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
