//! The sync handlers: the control plane's signed pushes of revocation shards, rate limits and
//! the audit checkpoint. Every check is pure code in [`crate::sync`]; this module reads the
//! push, writes KV, and hands limits to the limiter objects.

use worker::{Env, Request, console_error, js_sys, wasm_bindgen::JsValue, wasm_bindgen_futures};

use crate::REVOCATIONS_BINDING;
use crate::body;
use crate::cache;
use crate::config::Config;
use crate::isolate::{LEASES, SHARDS, now_ms};
use crate::limit::{Budget, Call, SetOutcome};
use crate::problem::{self, Reply};
use crate::respond::Answer;
use crate::stubs::call_limiter;
use crate::sync;

/// The signature header and body of a sync push (a `PUT`: the caller refused other methods):
/// every check that needs no body first (`sync::check_before_body`), then the body read as a
/// stream that stops at `SYNC_MAX_BYTES`.
async fn read_push(
    req: &Request,
    cfg: &Config,
) -> worker::Result<Result<(Option<String>, Vec<u8>), Reply>> {
    let (content_length, transfer_encoding) = body::framing_headers(req)?;
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
pub(crate) async fn push_limits(
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
        let route = entry.budget.map(|to| Call::Route { budget: to });
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
        reason: None,
    }
    .into())
}

/// The signature header of a `GET` to a sync endpoint, which takes no body: one that comes with
/// a body is refused unread.
fn read_get(req: &Request, method: &str) -> worker::Result<Result<Option<String>, Reply>> {
    let (content_length, transfer_encoding) = body::framing_headers(req)?;
    let framing = body::Framing {
        content_length: content_length.as_deref(),
        transfer_encoding: transfer_encoding.as_deref(),
    };
    let has_body = req.inner().body().is_some();
    Ok(match body::request_body_length(method, framing, has_body) {
        Ok(_) => Ok(req.headers().get(sync::SIGNATURE_HEADER)?),
        Err(reply) => Err(reply),
    })
}

/// `GET /_lynxo/sync/revocations/<n>`, signed: the bytes KV holds for the shard, so the control
/// plane can learn every revocation the edge enforces (`sync::check_read`, `sync::shard_reply`).
async fn read_revocations(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
    index_text: &str,
) -> worker::Result<Answer> {
    let signature = match read_get(&req, method)? {
        Ok(signature) => signature,
        Err(reply) => return Ok(reply.into()),
    };
    let index = match sync::check_read(cfg, index_text, signature.as_deref(), now_ms() / 1000) {
        Ok(index) => index,
        Err(reply) => return Ok(reply.into()),
    };
    Ok(match kv_read(env, cfg, &cache::kv_key(index)).await {
        Ok((_, stored)) => sync::shard_reply(stored.as_deref()).into(),
        Err(reply) => reply.into(),
    })
}

/// `PUT` (a signed push of a shard) or `GET` (a signed read of it) at
/// `/_lynxo/sync/revocations/<n>`.
pub(crate) async fn push_revocations(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
    index_text: &str,
) -> worker::Result<Answer> {
    match method {
        "PUT" => {}
        "GET" => return read_revocations(req, env, cfg, method, index_text).await,
        _ => return Ok(sync::get_or_put().into()),
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
        reason: None,
    }
    .into())
}

/// `GET` and `PUT` of the audit checkpoint: a signed read hands the stored one back, a signed
/// push replaces it unless KV holds a later one (`sync::check_checkpoint_*`).
pub(crate) async fn sync_checkpoint(
    req: Request,
    env: &Env,
    cfg: &Config,
    method: &str,
) -> worker::Result<Answer> {
    let read = match method {
        "PUT" => read_push(&req, cfg).await?,
        "GET" => read_get(&req, method)?.map(|signature| (signature, Vec::new())),
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
        reason: None,
    }
    .into())
}

/// The revocations namespace and the value under `key`; a failure is logged and becomes the
/// 503 to answer.
pub(crate) async fn kv_read(
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
pub(crate) async fn kv_write(
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
