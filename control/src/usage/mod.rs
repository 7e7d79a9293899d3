//! Usage, activity and rate limits: the edge's usage batches in, the usage and activity API out.
//!
//! - `POST /_lynxo/usage` (internal, signed by the edge with the keyring's usage subkey): one
//!   batch per request, applied exactly once per `(source, seq)` in one transaction. Entries for
//!   a key the database does not know, or naming another account than the key's, are skipped
//!   and counted in the answer: usage is never attributed to the wrong account.
//! - `GET /v1/keys/{id}/usage`, `GET /v1/usage`: dense series of request counts per outcome,
//!   with totals and per-scope counts; `GET /v1/keys/{id}/activity`: recent requests.
//!
//! Rate-limit policies are part of the key record (`keys`) and reach the edge through the limits
//! outbox and `publish::LimitPublisher`.
//!
//! - [`ingest`]: the edge's signed batches in.
//! - [`query`]: the usage and activity API out.
//! - [`UsageError`] (`error`): why either refused, which becomes the API's answer in one place.

mod error;
pub mod ingest;
pub mod query;

pub use self::error::UsageError;

pub use self::ingest::{
    IngestAnswer, MAX_BATCH_BYTES, SIGNATURE_TOLERANCE, ingest_routes, ingest_usage,
};
pub use self::query::{
    AccountUsage, ActivityEntry, ActivityPage, ActivityQuery, Bucket, KeyUsage, MAX_BUCKETS,
    OutcomeCounts, TOP_KEYS, TopKey, Totals, UsageQuery, UsageReport, get_account_usage,
    get_key_usage, list_key_activity,
};
/// A 422 naming the field.
fn invalid(field: String, detail: &str) -> UsageError {
    UsageError::Invalid {
        field,
        detail: detail.to_owned(),
    }
}
