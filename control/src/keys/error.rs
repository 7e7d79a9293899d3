//! Why a keys transaction refused: [`KeyOpError`], one variant per refusal, and its one
//! conversion to the API's answer.

use axum::http::StatusCode;
use serde_json::json;

use super::view::{KeyStatus, rotation_due};
use crate::error::AppError;
use crate::store::StoreError;
use crate::store::keys::{KeyCounts, KeyRow};

/// A keys transaction's refusal or failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOpError {
    /// No key with this id in the caller's account (another account's key included).
    #[error("no such key")]
    NotFound,
    /// Some ids of a bulk request name no key of the caller's account (carried, in the order
    /// given): the same answer whether they exist elsewhere or nowhere.
    #[error("no such keys")]
    NotFoundAmong(Vec<shared::key::KeyId>),
    /// The `Idempotency-Key` was used before with another request body.
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// The account already has its plan's number of working keys.
    #[error("active key limit reached ({} of {max_active_keys})", counts.working)]
    LimitReached {
        /// The account's working and rotating keys.
        counts: KeyCounts,
        /// The plan's limit.
        max_active_keys: u32,
        /// Idle and oldest keys, the candidates to retire.
        candidates: Vec<KeyRow>,
        /// When it was counted.
        now: u64,
    },
    /// The rate limit is outside what the plan allows for the window.
    #[error("rate limit {limit} per {window} s is outside the plan")]
    RateLimitOutsidePlan {
        /// Requests asked for.
        limit: u32,
        /// Per this many seconds.
        window: u32,
        /// The plan's cap, per minute.
        max_rate_limit: u32,
    },
    /// Only an active key can be rotated.
    #[error("only an active key can be rotated; this one is {0}")]
    RotateNotActive(KeyStatus),
    /// Only an active key's rate limit can change (a rotating key shares its successor's).
    #[error("only an active key's rate limit can change; this one is {0}")]
    LimitOfNotActive(KeyStatus),
    /// A revoked key's settings are a record of what it was: they no longer change.
    #[error("a revoked key's settings cannot change")]
    UpdateRevoked,
    /// The caller is a management token and the key lies beyond its key grant (the grant is
    /// carried).
    #[error("the key is beyond the token's key grant")]
    BeyondGrant(shared::scope::ScopeSet),
    /// The active kid is retired: this control plane runs with the keyring of before a
    /// retirement and must restart with the new one.
    #[error("the active signing kid {0} is retired")]
    SignerRetired(u8),
    /// The key string could not be issued (the active kid has no key).
    #[error("issuing the key")]
    Issue(#[source] shared::key::IssueError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

/// The plan's cap for `window`: `max_rate_limit` per minute, scaled.
fn max_for_window(max_rate_limit: u32, window: u32) -> u64 {
    u64::from(max_rate_limit) * u64::from(window) / 60
}

impl From<KeyOpError> for AppError {
    fn from(e: KeyOpError) -> Self {
        match e {
            KeyOpError::NotFound => AppError::not_found(),
            KeyOpError::NotFoundAmong(ids) => AppError::not_found()
                .with_detail("Some of these keys do not exist in this account; none was revoked.")
                .with_field(
                    "unknown_ids",
                    ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                ),
            KeyOpError::BeyondGrant(grant) => crate::auth::grant::key_grant_exceeded(grant),
            KeyOpError::IdempotencyKeyReused => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request",
            ),
            KeyOpError::LimitReached {
                counts,
                max_active_keys,
                candidates,
                now,
            } => limit_reached(counts, max_active_keys, &candidates, now),
            KeyOpError::RateLimitOutsidePlan {
                limit,
                window,
                max_rate_limit,
            } => {
                let max = max_for_window(max_rate_limit, window);
                AppError::validation(format!(
                    "rate_limit must be between 1 and {max} requests per {window} s on this \
                     plan (at most {max_rate_limit} per minute)",
                ))
                .with_field("field", "rate_limit")
                .with_field("max_rate_limit", max_rate_limit)
                .with_field("max_rate_limit_for_window", max)
                .with_field("rate_limit", limit)
                .with_field("rate_limit_window", window)
            }
            KeyOpError::RotateNotActive(status) => AppError::new(
                StatusCode::CONFLICT,
                "key_not_active",
                "Only an active key can be rotated",
            )
            .with_field("key_status", status),
            // A rotating key's budget is its successor's, and the limit pushed for a key is its
            // whole chain's: only the chain's active key sets it.
            KeyOpError::LimitOfNotActive(status) => AppError::new(
                StatusCode::CONFLICT,
                "key_not_active",
                "Only an active key's rate limit can be changed",
            )
            .with_detail(
                "A key in its rotation grace period shares the rate limit of the key that \
                 replaced it: change that key's limit.",
            )
            .with_field("key_status", status),
            KeyOpError::SignerRetired(kid) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing_key_retired",
                "The control plane's signing key is retired",
            )
            .with_detail(
                "The control plane is restarting with its new signing keyring; nothing was \
                 created. Retry shortly.",
            )
            .with_field("kid", kid)
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            ),
            KeyOpError::UpdateRevoked => AppError::new(
                StatusCode::CONFLICT,
                "key_revoked",
                "A revoked key's settings cannot be changed",
            )
            .with_detail("Its name, description and rate limit stay as they were when it stopped.")
            .with_field("key_status", KeyStatus::Revoked),
            KeyOpError::Issue(e) => AppError::internal_error(e),
            KeyOpError::Store(e) => e.into(),
        }
    }
}

/// Checks `limit` per `window` against the plan, whose cap is per minute: at most
/// `max_rate_limit * window / 60` requests per window.
pub(super) fn check_rate_limit(
    limit: u32,
    window: u32,
    max_rate_limit: u32,
) -> Result<(), KeyOpError> {
    if limit == 0 || u64::from(limit) * 60 > u64::from(max_rate_limit) * u64::from(window) {
        return Err(KeyOpError::RateLimitOutsidePlan {
            limit,
            window,
            max_rate_limit,
        });
    }
    Ok(())
}

fn limit_reached(
    counts: KeyCounts,
    max_active_keys: u32,
    candidates: &[KeyRow],
    now: u64,
) -> AppError {
    let listed: Vec<_> = candidates
        .iter()
        .map(|k| {
            json!({
                "id": k.id.to_string(),
                "name": k.name,
                "hint": k.hint,
                "environment": k.environment.name(),
                "status": k.status(now),
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "rotation_due": rotation_due(k, now),
            })
        })
        .collect();
    AppError::new(
        StatusCode::CONFLICT,
        "active_key_limit_reached",
        "Active key limit reached",
    )
    .with_detail(format!(
        "{} of {} keys are in use ({} of them in a rotation's grace period, counted until it \
         ends); revoke a key you no longer use before creating another. `candidates` lists the \
         idle and oldest ones made at least a day ago.",
        counts.working, max_active_keys, counts.rotating
    ))
    .with_field("active_keys", counts.working)
    .with_field("rotating_keys", counts.rotating)
    .with_field("max_active_keys", max_active_keys)
    .with_field("candidates", listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_cap_scales_with_the_window() {
        assert!(check_rate_limit(100, 60, 100).is_ok());
        assert!(check_rate_limit(101, 60, 100).is_err());
        assert!(check_rate_limit(0, 60, 100).is_err());
        assert!(check_rate_limit(1000, 600, 100).is_ok());
        assert!(matches!(
            check_rate_limit(1001, 600, 100),
            Err(KeyOpError::RateLimitOutsidePlan { limit: 1001, .. })
        ));
    }
}
