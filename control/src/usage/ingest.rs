//! `POST /_lynxo/usage`: the edge's usage batches, signed with the keyring's usage subkey,
//! applied exactly once per `(source, seq)`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use shared::envelope;
use shared::key::KeyId;
use shared::usage::{self as wire, Batch};

use super::{UsageError, invalid};
use crate::error::{AppError, Json, Result, json_refused};
use crate::state::AppState;
use crate::store::usage as db;

/// Largest usage batch body, in bytes (a batch of 1000 activity entries is about 1 MiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How far a batch's signature time may be from ours, in seconds.
pub const SIGNATURE_TOLERANCE: u64 = 300;
/// How far ahead of our clock a batch's times may be (the edge's clock may run ahead).
const FUTURE_SLACK_SECS: u64 = 3600;

/// Routes at the root: the edge's signed usage ingestion, with its own body limit
/// ([`MAX_BATCH_BYTES`], applied by [`ingest_usage`]).
pub fn ingest_routes() -> Router<AppState> {
    Router::new().route(wire::INGEST_PATH, post(ingest_usage))
}

/// Answer of the ingestion endpoint.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestAnswer {
    /// False: this batch (`source`, `seq`) was applied before and nothing changed.
    pub applied: bool,
    /// Count entries applied.
    pub counts: u64,
    /// Activity entries stored.
    pub activity: u64,
    /// Entries skipped: unknown key, not the key's account, or dated over an hour ahead.
    pub skipped: u64,
    /// Denial entries not stored because their key, minute and outcome had their sample
    /// already (they are counted).
    #[serde(default)]
    pub sampled_out: u64,
}

/// Reads a batch. Key ids are checked as they are read (`shared`'s [`KeyId`]); one that is not
/// 32 lowercase hex digits is a 422 naming where it is (`counts[3].key_id`), as it was when
/// the ids were checked after reading.
fn parse_batch(body: &[u8]) -> Result<Batch, AppError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let batch = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        if e.inner().is_data() && e.inner().to_string().starts_with(KeyId::REFUSED) {
            AppError::from(invalid(
                e.path().to_string(),
                "must be 32 lowercase hex digits",
            ))
        } else {
            json_refused(e.into_inner())
        }
    })?;
    reader.end().map_err(json_refused)?;
    Ok(batch)
}

/// Refuses a batch that no retry can fix: a bad name, an impossible count or status (a key id
/// that is not one was refused as the batch was read, by [`parse_batch`]). Everything else is
/// repaired by [`sanitize`] instead, because the edge keeps retrying a refused batch and would
/// stall behind it.
fn validate(batch: &Batch) -> Result<(), UsageError> {
    let source = &batch.source;
    if source.is_empty() || source.len() > 128 || source.chars().any(char::is_control) {
        return Err(invalid(
            "source".into(),
            "must be 1 to 128 bytes without control characters",
        ));
    }
    if batch.seq == 0 {
        return Err(invalid("seq".into(), "must be at least 1"));
    }
    if batch.activity.len() > wire::MAX_ACTIVITY_PER_BATCH {
        return Err(invalid(
            "activity".into(),
            &format!("at most {} entries", wire::MAX_ACTIVITY_PER_BATCH),
        ));
    }
    for (i, c) in batch.counts.iter().enumerate() {
        if c.n == 0 || c.n > 1 << 40 {
            return Err(invalid(format!("counts[{i}].n"), "must be 1 to 2^40"));
        }
    }
    for (i, a) in batch.activity.iter().enumerate() {
        if !(100..=599).contains(&a.status) {
            return Err(invalid(
                format!("activity[{i}].status"),
                "must be 100 to 599",
            ));
        }
    }
    Ok(())
}

/// Truncates strings to what the store keeps and drops entries dated more than an hour ahead
/// of our clock (a sender's broken clock must not pin `last_used_at` in the future). Returns
/// how many entries it dropped.
fn sanitize(batch: &mut Batch, now: u64) -> u64 {
    let latest_minute = (now + FUTURE_SLACK_SECS) / 60;
    let latest_ms = (now + FUTURE_SLACK_SECS) * 1000;
    let before = batch.counts.len() + batch.last_used.len() + batch.activity.len();
    batch.counts.retain(|c| c.minute <= latest_minute);
    batch.last_used.retain(|l| l.at_ms <= latest_ms);
    batch.activity.retain(|a| a.at_ms <= latest_ms);
    // The field lengths are `shared`'s, the ones the edge cuts to.
    batch.clip();
    let after = batch.counts.len() + batch.last_used.len() + batch.activity.len();
    (before - after) as u64
}

/// `POST /_lynxo/usage`: one signed batch from an edge meter. Answers `200` once the batch is
/// committed (so an acknowledged batch survives a crash), `applied: false` for a batch applied
/// before. 401 for a bad signature, 400 for a body that is not JSON, 422 for a batch that no
/// retry can fix.
pub async fn ingest_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>> {
    let answer = ingest(&state, &headers, body).await;
    if answer.is_err() {
        state.metrics.usage_batch("refused");
    }
    answer
}

/// Measures the skew on a batch whose signature time is outside the tolerance: its body is
/// read (bounded, as any batch's) and its signature checked with no bound on time, so only
/// the edge's own batch moves the gauge; and one already applied (a replay of an old batch)
/// says nothing about the edge's clock now.
async fn measure_refused(state: &AppState, headers: &HeaderMap, signature: &str, body: Body) {
    let Ok(body) = crate::body::read(headers, body, MAX_BATCH_BYTES).await else {
        return;
    };
    let now_ms = state.clock.now_ms();
    let Ok(signed_at) =
        wire::verify_batch(&state.keyring, signature, &body, now_ms / 1000, u64::MAX)
    else {
        return;
    };
    let Ok(batch) = parse_batch(&body) else {
        return;
    };
    let applied = state
        .store
        .read(move |c| crate::store::metrics::batch_applied(c, &batch.source, batch.seq))
        .await;
    if let Ok(false) = applied {
        state.metrics.skew.observe(signed_at, now_ms);
    }
}

async fn ingest(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Json<IngestAnswer>> {
    let now_ms = state.clock.now_ms();
    let now = now_ms / 1000;
    let signature = headers
        .get(envelope::SYNC_HEADER)
        .ok_or(UsageError::BadSignature("send the Lynxo-Signature header"))?
        .to_str()
        .map_err(|_| UsageError::BadSignature("the Lynxo-Signature header is malformed"))?;
    // Everything the signature header says without the body first: an outsider's body is read
    // only behind a header that could be genuine.
    if let Err(e) = envelope::check_header(
        &state.keyring,
        envelope::SCHEME_V1,
        signature,
        now,
        SIGNATURE_TOLERANCE,
    ) {
        tracing::warn!(error = %e, "usage batch refused before its body: bad signature header");
        if let envelope::EnvelopeError::OutsideTolerance { .. } = e {
            measure_refused(state, headers, signature, body).await;
        }
        return Err(UsageError::BadSignature("the signature does not verify").into());
    }
    let body = crate::body::read(headers, body, MAX_BATCH_BYTES).await?;
    let signed_at =
        match wire::verify_batch(&state.keyring, signature, &body, now, SIGNATURE_TOLERANCE) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "usage batch refused: bad signature");
                return Err(UsageError::BadSignature("the signature does not verify").into());
            }
        };
    let mut batch = parse_batch(&body)?;
    validate(&batch)?;
    let dropped = sanitize(&mut batch, now);
    let (source, seq) = (batch.source.clone(), batch.seq);
    let retention = state.settings.retention;
    let oldest_minute = batch.counts.iter().map(|c| c.minute).min();
    let health = batch.health.take();
    let mut applied = state
        .store
        .write(move |tx| db::apply_batch(tx, &batch, now_ms, &retention))
        .await?;
    if applied.applied {
        applied.skipped += dropped;
        let metrics = &state.metrics;
        // Only a batch applied now: one applied before may be a replay signed long ago (the
        // edge's own retry is signed when sent, but nothing tells the two apart).
        metrics.skew.observe(signed_at, now_ms);
        metrics.usage_batch("applied");
        if let Some(minute) = oldest_minute {
            metrics.ingest_lag((now_ms as f64 / 1000.0) - (minute * 60) as f64);
        }
        if let Some(health) = &health {
            metrics.edge_reported(health, now_ms);
        }
    } else {
        state.metrics.usage_batch("duplicate");
    }
    tracing::info!(
        source,
        seq,
        applied = applied.applied,
        counts = applied.counts,
        activity = applied.activity,
        skipped = applied.skipped,
        sampled_out = applied.sampled_out,
        "usage batch"
    );
    Ok(Json(IngestAnswer {
        applied: applied.applied,
        counts: applied.counts,
        activity: applied.activity,
        skipped: applied.skipped,
        sampled_out: applied.sampled_out,
    }))
}
