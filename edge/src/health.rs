//! The isolate's own health, for the control plane's `/metrics`: the edge has no endpoint to
//! scrape, so each isolate puts a small report ([`IsolateHealth`]) on every delivery to its
//! meter objects, the meter keeps the latest per isolate in its open batch
//! (`meter::Aggregate`), and the signed usage batch carries them (`shared::usage::EdgeHealth`).
//! A report says who the isolate is (a random id, made once), how many rate-limiter calls
//! failed since it started, and how old the oldest revocation shard it holds is.

use std::cell::Cell;

use shared::usage::{IsolateHealth, MAX_ISOLATE_ID};

use crate::isolate::{NONCE, SHARDS};

thread_local! {
    /// Rate-limiter calls that failed in this isolate.
    static LIMITER_FAILURES: Cell<u64> = const { Cell::new(0) };
}

/// Counts a failed rate-limiter call.
pub(crate) fn limiter_failed() {
    LIMITER_FAILURES.set(LIMITER_FAILURES.get().saturating_add(1));
}

/// This isolate's report at `now_ms`.
pub(crate) fn report(now_ms: u64) -> IsolateHealth {
    let oldest = SHARDS.with_borrow(|c| c.oldest_issued_at());
    IsolateHealth {
        isolate: NONCE.with(|n| n.get(..MAX_ISOLATE_ID / 2).unwrap_or(n).to_owned()),
        at_ms: now_ms,
        limiter_failures: LIMITER_FAILURES.get(),
        shard_age_secs: oldest.map(|issued_at| (now_ms / 1000).saturating_sub(issued_at)),
    }
}
