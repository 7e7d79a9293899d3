//! What an isolate keeps between the requests it serves: the configuration (read from the
//! bindings on the first request and kept), the revocation shards, the rate-limit leases and the
//! usage buffer. Each lives in a `thread_local!`: an isolate runs one request at a time on one
//! thread, and its memory lasts until the runtime evicts it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::{Env, console_error, js_sys};

use crate::cache::ShardCache;
use crate::config::{BINDINGS, Config};
use crate::limit::Leases;
use crate::meter::Buffer;
use crate::objects;
use crate::problem::{Problem, Reply};

thread_local! {
    /// The configuration, built on the first request that finds it valid: bindings change only
    /// with a new deployment, which starts new isolates.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
    /// Revocation shards read from KV or pushed through the sync endpoint.
    pub(crate) static SHARDS: RefCell<ShardCache> = RefCell::new(ShardCache::default());
    /// Rate-limit leases of this isolate.
    pub(crate) static LEASES: RefCell<Leases> = RefCell::new(Leases::default());
    /// Usage counts and activity not yet handed to a meter object.
    pub(crate) static METER: RefCell<Buffer> = RefCell::new(Buffer::default());
    /// Names this isolate's meter deliveries (random, made once per isolate).
    pub(crate) static NONCE: String = objects::random_hex();
    /// When a limiter failure was last logged, and how many were not logged since.
    pub(crate) static LIMITER_LOG: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// Whether "metering is off" was logged in this isolate.
    pub(crate) static METER_OFF_LOGGED: Cell<bool> = const { Cell::new(false) };
}

/// The configuration: read from the bindings and validated once per isolate (building keyrings
/// derives subkeys). A refused configuration is not kept: every request reads it again and
/// fails closed with a 500 until a deployment fixes it.
pub(crate) fn load_config(env: &Env) -> Result<Rc<Config>, Reply> {
    if let Some(cfg) = CONFIG.with_borrow(Option::clone) {
        return Ok(cfg);
    }
    let lookup = |name: &str| {
        debug_assert!(BINDINGS.contains(&name));
        env.var(name).ok().map(|v| v.to_string())
    };
    match Config::from_lookup(lookup) {
        Ok(cfg) => {
            let cfg = Rc::new(cfg);
            CONFIG.set(Some(Rc::clone(&cfg)));
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
}

/// The runtime's clock, in Unix milliseconds: `Date.now()`, one call returning a number
/// (`worker::Date::now` builds a JavaScript `Date` object, reads it and drops it: three calls
/// across the wasm boundary and a garbage-collected object, two or three times per request).
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}
