//! Usage, activity and rate limits: the edge's usage batches in, the usage and activity API out.

use axum::Router;

use crate::AppState;

/// Routes under `/v1` (usage and activity of keys and of the account).
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// Routes at the root: the edge's signed usage ingestion.
pub fn ingest_routes() -> Router<AppState> {
    Router::new()
}
