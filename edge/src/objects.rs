//! The worker's two Durable Object classes, as thin glue around pure modules:
//!
//! - [`KeyLimiter`] (binding `RATE_LIMITER`, one object per budget: a key's, named by its id in
//!   hex, or a refused key's, `refused-<id>`): the [`Counter`](crate::limit::Counter), persisted
//!   after every change, or the route to the key's chain's budget;
//! - [`UsageMeter`] (binding `METER`, objects `meter-0` .. `meter-<METER_SHARDS - 1>`): the open
//!   [`Aggregate`](crate::meter::Aggregate), sealed batches and their delivery to the control
//!   plane. What to write and delete is [`MeterState`]'s pure storage protocol; this only
//!   carries it out.
//!
//! Every runtime error becomes an error response or a log line, never a panic.

use std::cell::RefCell;

use shared::usage::{INGEST_PATH, sign_batch};
use worker::{
    DurableObject, Env, Fetch, Headers, ListOptions, Method, Request, RequestInit, Response, State,
    console_error, console_log, console_warn, durable_object, js_sys,
};

use crate::isolate::now_ms;
use crate::limit::{Call, Counter, SetOutcome, Taken};
use crate::meter::{self, Delivery, MeterState, Stored};

/// Storage key of a limiter's counter.
const COUNTER_KEY: &str = "counter";

/// A 200 JSON answer from a serialized body.
fn json(body: String) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::from_bytes(body.into_bytes())?.with_headers(headers))
}

/// One key's rate-limit counter.
#[durable_object]
pub struct KeyLimiter {
    state: State,
    counter: RefCell<Option<Counter>>,
}

impl DurableObject for KeyLimiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            counter: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let call: Call = match serde_json::from_str(&req.text().await?) {
            Ok(call) => call,
            Err(_) => return Response::error("not a limiter call", 400),
        };
        let storage = self.state.storage();
        if self.counter.borrow().is_none() {
            let stored: Option<String> = storage.get(COUNTER_KEY).await?;
            let loaded = match stored.map(|s| serde_json::from_str::<Counter>(&s)) {
                Some(Ok(counter)) => counter,
                Some(Err(e)) => {
                    // Never seen in practice; counting from zero under-protects one window.
                    console_error!("lynxo-edge: limiter state unreadable, starting over: {e}");
                    Counter::default()
                }
                None => Counter::default(),
            };
            // Another call may have loaded it while this one waited: keep that one.
            self.counter.borrow_mut().get_or_insert(loaded);
        }
        let now = now_ms();
        // Decided synchronously: no other call can interleave between reading and counting.
        let (answer, snapshot) = {
            let mut slot = self.counter.borrow_mut();
            let counter = slot.get_or_insert_with(Counter::default);
            let answer = match call {
                Call::Take {
                    default,
                    want,
                    returned,
                } => match counter.budget {
                    // This key's requests count at its chain's first key: send the isolate
                    // there (tokens it hands back here were granted here).
                    Some(budget) => {
                        counter.take_back(&returned, now);
                        serde_json::to_string(&Taken::Redirect { budget })?
                    }
                    None => serde_json::to_string(&Taken::Granted(
                        counter.take(default, want, &returned, now),
                    ))?,
                },
                Call::Set {
                    policy,
                    version,
                    per_minute,
                    returned,
                } => {
                    let applied = counter.set(policy, version, per_minute, &returned, now);
                    serde_json::to_string(&SetOutcome { applied })?
                }
                Call::Route { budget } => {
                    counter.route(budget);
                    serde_json::to_string(&SetOutcome { applied: true })?
                }
            };
            (answer, counter.clone())
        };
        storage
            .put(COUNTER_KEY, serde_json::to_string(&snapshot)?)
            .await?;
        json(answer)
    }
}

/// One shard's usage aggregation and delivery.
#[durable_object]
pub struct UsageMeter {
    state: State,
    env: Env,
    mem: RefCell<Option<MeterState>>,
}

/// 128 random bits in hex (`Math.random`, seeded by the runtime: unique, not secret).
pub(crate) fn random_hex() -> String {
    (0..4)
        .map(|_| format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u32))
        .collect()
}

/// Writes `values` (storage key, JSON text) in one atomic call.
async fn put_all(storage: &worker::Storage, values: &[(String, String)]) -> worker::Result<()> {
    let object = js_sys::Object::new();
    for (key, value) in values {
        js_sys::Reflect::set(&object, &key.into(), &value.into())?;
    }
    storage.put_multiple_raw(object).await
}

/// Every `(key, string value)` under `prefix`, in key order.
async fn list_strings(
    storage: &worker::Storage,
    prefix: &str,
) -> worker::Result<Vec<(String, String)>> {
    let listed = storage
        .list_with_options(ListOptions::new().prefix(prefix))
        .await?;
    let mut entries: Vec<(String, String)> = Vec::new();
    listed.for_each(&mut |value, key| {
        if let (Some(k), Some(v)) = (key.as_string(), value.as_string()) {
            entries.push((k, v));
        }
    });
    entries.sort();
    Ok(entries)
}

impl UsageMeter {
    async fn load(&self) -> worker::Result<()> {
        if self.mem.borrow().is_some() {
            return Ok(());
        }
        let storage = self.state.storage();
        let stored = Stored {
            open: storage.get(meter::OPEN_KEY).await?,
            seq: storage.get(meter::SEQ_KEY).await?,
            source: storage.get(meter::SOURCE_KEY).await?,
            chunks: list_strings(&storage, meter::CHUNK_PREFIX).await?,
        };
        let (state, stale) = MeterState::load(stored)?;
        if !stale.is_empty() {
            // Chunks of batches already sealed, left by an interrupted clean-up.
            storage.delete_multiple(stale).await?;
        }
        self.mem.borrow_mut().get_or_insert(state);
        Ok(())
    }

    async fn record(&self, delivery: Delivery) -> worker::Result<()> {
        self.load().await?;
        let storage = self.state.storage();
        if storage
            .get::<String>(&meter::seen_key(&delivery.id))
            .await?
            .is_some()
        {
            // A retry of a delivery stored before (its answer was lost): counted already.
            return Ok(());
        }
        let writes = match self.mem.borrow_mut().as_mut() {
            Some(mem) => mem.record(delivery, random_hex, now_ms()),
            None => return Err("meter state not loaded".into()),
        };
        // The merged counts, the activity chunk, the delivery's name and (the first time) the
        // source: one atomic write.
        let written = match writes {
            Ok(writes) => put_all(&storage, &writes).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            // Memory is ahead of storage: read it back, so the worker's retry counts once.
            *self.mem.borrow_mut() = None;
            return Err(e);
        }
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(meter::SEAL_AFTER_MS as i64).await?;
        }
        Ok(())
    }

    /// Seals the open aggregate (if any) as the next batch.
    async fn seal(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        let sealed = match self.mem.borrow_mut().as_mut() {
            Some(mem) => mem.seal()?,
            None => return Err("meter state not loaded".into()),
        };
        let Some(sealed) = sealed else {
            return Ok(());
        };
        put_all(&storage, &sealed.writes).await?;
        if !sealed.delete.is_empty() {
            if let Err(e) = storage.delete_multiple(sealed.delete).await {
                // Harmless: below the floor, the next load deletes them.
                console_warn!("lynxo-edge: meter: deleting sealed chunks failed: {e}");
            }
        }
        Ok(())
    }

    /// Deletes delivery names older than [`meter::DEDUPE_MS`].
    async fn forget_old_deliveries(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        let cutoff = meter::seen_cutoff(now_ms());
        let listed = storage
            .list_with_options(ListOptions::new().start("seen/").end(&cutoff).limit(512))
            .await?;
        let mut old: Vec<String> = Vec::new();
        listed.for_each(&mut |_, key| {
            if let Some(k) = key.as_string() {
                old.push(k);
            }
        });
        for chunk in old.chunks(128) {
            storage.delete_multiple(chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Posts every sealed batch in order; returns whether all were acknowledged.
    async fn deliver(&self, control_url: &str, keyring: &shared::mac::Keyring) -> bool {
        let storage = self.state.storage();
        let batches = match list_strings(&storage, meter::BATCH_PREFIX).await {
            Ok(batches) => batches,
            Err(e) => {
                console_error!("lynxo-edge: meter: listing batches failed: {e}");
                return false;
            }
        };
        let url = format!("{control_url}{INGEST_PATH}");
        for (key, body) in batches {
            let signature = sign_batch(keyring, body.as_bytes(), now_ms() / 1000);
            let sent = async {
                let headers = Headers::new();
                headers.set("content-type", "application/json")?;
                headers.set(shared::envelope::SYNC_HEADER, &signature)?;
                let mut init = RequestInit::new();
                init.with_method(Method::Post)
                    .with_headers(headers)
                    .with_body(Some(body.clone().into()));
                let response = Fetch::Request(Request::new_with_init(&url, &init)?)
                    .send()
                    .await?;
                Ok::<u16, worker::Error>(response.status_code())
            }
            .await;
            match sent {
                Ok(200..=299) => {
                    if let Err(e) = storage.delete(&key).await {
                        // Sent again later under the same seq: the control plane acknowledges
                        // it without counting it twice.
                        console_error!("lynxo-edge: meter: deleting sent {key} failed: {e}");
                        return false;
                    }
                }
                Ok(status) => {
                    console_warn!("lynxo-edge: meter: control plane answered {status} to {key}");
                    return false;
                }
                Err(e) => {
                    console_warn!("lynxo-edge: meter: control plane unreachable for {key}: {e}");
                    return false;
                }
            }
        }
        true
    }
}

impl DurableObject for UsageMeter {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            mem: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let delivery: Delivery = match serde_json::from_str(&req.text().await?) {
            Ok(delivery) => delivery,
            Err(_) => return Response::error("not a meter delivery", 400),
        };
        self.record(delivery).await?;
        Ok(Response::empty()?.with_status(204))
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let storage = self.state.storage();
        let cfg = match crate::isolate::load_config(&self.env) {
            Ok(cfg) => cfg,
            Err(_) => {
                // Logged by load_config; try again later, keeping every batch.
                storage.set_alarm(meter::MAX_BACKOFF_MS as i64).await?;
                return Response::empty();
            }
        };
        let Some(control_url) = cfg.control_url.clone() else {
            console_log!("lynxo-edge: meter: CONTROL_URL unset; batches kept, not sent");
            return Response::empty();
        };
        if let Err(e) = self.load().await {
            console_error!("lynxo-edge: meter: loading state failed: {e}");
        } else if let Err(e) = self.seal().await {
            // Storage still holds the open aggregate and seq as they were: read them again.
            console_error!("lynxo-edge: meter: sealing failed: {e}");
            *self.mem.borrow_mut() = None;
        }
        let delivered = self.deliver(&control_url, &cfg.keyring).await;
        if let Err(e) = self.forget_old_deliveries().await {
            console_warn!("lynxo-edge: meter: forgetting old delivery names failed: {e}");
        }
        let delay = {
            let mut mem = self.mem.borrow_mut();
            match mem.as_mut() {
                Some(mem) if !delivered => {
                    mem.failures = mem.failures.saturating_add(1);
                    mem.retries = mem.retries.saturating_add(1);
                    Some(meter::backoff_ms(mem.failures))
                }
                Some(mem) => {
                    mem.failures = 0;
                    // Events that arrived while this alarm ran.
                    (!mem.open.is_empty()).then_some(meter::SEAL_AFTER_MS)
                }
                None => Some(meter::MIN_BACKOFF_MS),
            }
        };
        if let Some(delay) = delay {
            storage.set_alarm(delay as i64).await?;
        }
        Response::empty()
    }
}
