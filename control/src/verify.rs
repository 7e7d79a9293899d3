//! `POST /v1/keys/verify`: the edge's decision, for origins not behind the edge.
//!
//! - [`guard`]: the endpoint's per-account budget and the trace each account's calls leave.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use shared::gate::{self, Denial, Revocation};
use shared::key::{self, Claims};

use crate::auth::Caller;
use crate::error::{AppError, Json, Result};
use crate::events::Event;
use crate::keys::{parse_environment, scope_names};
use crate::state::AppState;
use crate::store::audit;
use crate::store::keys as db;

pub mod guard;

pub use guard::{DEFAULT_PER_MINUTE, MAX_TRACES_PER_HOUR, VerifyGuard};

/// Body of `POST /v1/keys/verify`.
// Its `Debug` shows only the key's hint.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// The API key to check.
    pub key: String,
    /// The method of the request the key came with.
    pub method: String,
    /// The path of that request (without query string).
    pub path: String,
    /// The environment the calling origin serves; a key of another environment is refused.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::environment_or_null)]
    pub environment: Option<String>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("key", &key::hint(&self.key))
            .field("method", &self.method)
            .field("path", &self.path)
            .field("environment", &self.environment)
            .finish()
    }
}

/// The verdict: what the edge would have answered.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Verdict {
    /// Whether the request may go ahead.
    pub valid: bool,
    /// The status the edge answers with when refusing (401, 403, 404, 405).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<u16>,
    /// `invalid_token`, `insufficient_scope`, `not_found`, `method_not_allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<&'static str>,
    /// For a key mistake that is safe to name (typo, expiry, environment): which one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<&'static str>,
    /// For `insufficient_scope`: the scope needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<&'static str>,
    /// The key's account (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub account_id: Option<u64>,
    /// The key's id (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_id: Option<String>,
    /// The key's environment (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub environment: Option<&'static str>,
    /// The key's scopes (valid keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scopes: Option<Vec<&'static str>>,
}

impl Verdict {
    fn refuse(status: u16, code: &'static str) -> Self {
        Self {
            valid: false,
            status: Some(status),
            code: Some(code),
            reason: None,
            scope: None,
            account_id: None,
            key_id: None,
            environment: None,
            scopes: None,
        }
    }
}

/// The edge's answer to a denial, as a verdict: `shared`'s mapping, the one the edge uses.
fn verdict_of(denial: &Denial) -> Verdict {
    let answer = denial.answer();
    Verdict {
        reason: answer.reason,
        scope: answer.scope.map(|s| s.name()),
        ..Verdict::refuse(answer.status, answer.code)
    }
}

/// `POST /v1/keys/verify`: for origins not behind the edge. Runs `shared::gate::authenticate`
/// and `admit`, the edge's decision, with the database's revocation state (which includes
/// revocations not yet published), and answers with `shared::gate::Denial::answer`, the edge's
/// mapping (`tests/verify_parity.rs` runs both on the same inputs).
///
/// It answers only about the caller's own keys: a genuine key of another account gets exactly
/// the answer of a forged one, before anything about it (expiry, revocation, scopes) can show,
/// and that account's audit trail records who presented it. Each account has a budget of calls
/// (`guard::VerifyGuard`, 429 with `Retry-After`), and calls about a real key leave a trace in
/// the audit trail, at most once per key per hour and within a cap per caller.
#[utoipa::path(
    post,
    path = "/v1/keys/verify",
    summary = "Verify a key as the edge would",
    description = "Runs the edge's decision (`shared::gate::authenticate`) with the database's revocation state. Answers only about the caller's own keys: another account's key gets exactly the answer of a forged one. Each account may call it 600 times a minute (a burst of 60; `--verify-rate-limit`), and calls about a real key are recorded in the audit trail (`key.verified`, or `key.verified_by_other_account` in the owner's trail), at most once per key per hour.",
    request_body = crate::verify::VerifyKey,
    responses(
        (status = 200, description = "The verdict.", body = crate::verify::Verdict),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
        (status = 429, description = "The account's verify budget is spent (`rate_limit_exceeded`); see Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until the budget has room again."))),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn verify_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<VerifyKey>,
) -> Result<Json<Verdict>> {
    if let Err(retry_after) = state
        .verify_guard
        .take(caller.account_id, state.clock.monotonic_ms())
    {
        return Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Too many verify requests",
        )
        .with_detail(format!(
            "This account may verify {} keys a minute. Retry after {retry_after} s.",
            state.settings.verify_per_minute
        ))
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after)));
    }
    let endpoint_env = body
        .environment
        .as_deref()
        .map(parse_environment)
        .transpose()?;
    let now = state.clock.now();
    // The key checks, the edge's: public checks, environment, tag, expiry.
    let authenticated = gate::authenticate(&body.key, &state.keyring, endpoint_env, now);
    // Whose key it is, from that one check (an expired key's tag verified too): another
    // account's key is answered as a forgery is, and the trace goes to its owner.
    let owner = match &authenticated {
        Ok(verified) => Some(verified.claims),
        Err(Denial::Expired(claims)) => Some(*claims),
        Err(_) => None,
    };
    if let Some(foreign) = owner.filter(|o| o.account_id != caller.account_id) {
        trace_verify(&state, &caller, foreign, now, None);
        return Ok(Json(Verdict::refuse(401, gate::INVALID_TOKEN)));
    }
    // The revocation lookup needs the key id, which only a verified key gives, and runs on the
    // store's threads; `admit` then finishes the same decision the edge makes.
    let admission = match authenticated {
        Ok(verified) => {
            let id = verified.key_id();
            let revoked = state
                .store
                .read(move |c| db::is_revoked(c, id, now))
                .await?;
            verified.admit(Revocation::from(revoked), &body.method, &body.path)
        }
        Err(denial) => Err(denial),
    };
    let verdict = match admission {
        Ok(admitted) => {
            let c = admitted.claims;
            Verdict {
                valid: true,
                status: None,
                code: None,
                reason: None,
                scope: None,
                account_id: Some(c.account_id),
                key_id: Some(c.key_id.to_string()),
                environment: Some(c.environment.name()),
                scopes: Some(scope_names(c.scopes)),
            }
        }
        Err(denial) => verdict_of(&denial),
    };
    if let Some(own) = owner {
        trace_verify(&state, &caller, own, now, Some(&verdict));
    }
    Ok(Json(verdict))
}

/// Writes the audit trace of a verify call about the genuine key `key`, if the guard allows one
/// now: `key.verified` in the caller's trail for its own key (with the verdict), else
/// `key.verified_by_other_account` in the owner's. Written after the answer, so the answer's
/// timing does not depend on it (another account's key must look like a forged one).
fn trace_verify(
    state: &AppState,
    caller: &Caller,
    key: Claims,
    now: u64,
    verdict: Option<&Verdict>,
) {
    if !state
        .verify_guard
        .should_trace(caller.account_id, key.key_id, now)
    {
        return;
    }
    let event = match verdict {
        Some(v) => Event::KeyVerified {
            key_id: key.key_id,
            valid: v.valid,
            status: v.status,
        },
        None => {
            tracing::warn!(
                key_id = %key.key_id,
                owner_account_id = key.account_id,
                caller_account_id = caller.account_id,
                "another account's key presented to the verify endpoint"
            );
            Event::KeyVerifiedByOtherAccount {
                key_id: key.key_id,
                caller_account_id: caller.account_id,
            }
        }
    };
    let (store, who) = (state.store.clone(), caller.actor.clone());
    tokio::spawn(async move {
        let action = event.action();
        let written = store
            .write(move |tx| audit::record(tx, now, Some(key.account_id), &who, &event))
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, action, "verify trace not written");
        }
    });
}
