//! Why a usage operation refused: [`UsageError`], one variant per refusal, and its one
//! conversion to the API's answer.

use axum::http::StatusCode;

use crate::error::AppError;
use crate::store::StoreError;

/// A usage ingestion's or query's refusal or failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A field of the batch or the query is invalid (422 naming the field).
    #[error("{field}: {detail}")]
    Invalid {
        /// The field's path, as `counts[3].key_id`.
        field: String,
        /// What it must be.
        detail: String,
    },
    /// The query's range holds more buckets than one answer may.
    #[error("the range holds {buckets} {granularity} buckets; at most {max}")]
    TooManyBuckets {
        /// Buckets in the range asked for.
        buckets: u64,
        /// Their granularity's name.
        granularity: &'static str,
        /// The most one answer holds.
        max: u64,
    },
    /// The batch's signature is missing, malformed or does not verify.
    #[error("bad batch signature: {0}")]
    BadSignature(&'static str),
    /// No key with this id in the caller's account (another account's key included).
    #[error("no such key")]
    NotFound,
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<UsageError> for AppError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::Invalid { field, detail } => {
                AppError::validation(detail).with_field("field", field)
            }
            UsageError::TooManyBuckets {
                buckets,
                granularity,
                max,
            } => AppError::validation(format!(
                "the range holds {buckets} {granularity} buckets; at most {max}"
            ))
            .with_field("field", "from")
            .with_field("max_buckets", max),
            UsageError::BadSignature(detail) => AppError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "The batch signature is missing or invalid",
            )
            .with_detail(detail),
            UsageError::NotFound => AppError::not_found(),
            UsageError::Store(e) => e.into(),
        }
    }
}
