//! What the keys API accepts: the request bodies and query, and their validation. A handler
//! gets a checked value from here (`KeySpec`, `Changes`, a `ListFilter`) or the 422 that names
//! the field.

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::key::{Environment, KeyId};
use shared::scope::{Permission, PermissionError, Scope, ScopeSet};

use super::view::{IDLE_AFTER, KeyStatus};
use crate::error::{AppError, PageLimit, Result};
use crate::store::accounts;
use crate::store::keys::ListFilter;
use crate::text;

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest revoke reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest rotation grace period (seconds).
pub const MAX_GRACE: u64 = 30 * 86_400;
/// The window a rate limit gets when none is given, seconds (plans express limits per minute).
pub const DEFAULT_WINDOW: u32 = 60;

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name (trimmed, 1 to 100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Usage note (up to 1000 characters).
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// `development`, `staging` or `production`.
    #[schema(schema_with = crate::openapi::environment)]
    pub environment: String,
    /// `read_only`, `read_write`, `full_access` or `custom`.
    #[schema(schema_with = crate::openapi::permission)]
    pub permission: String,
    /// For `custom`: the scope names.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::scopes_or_null)]
    pub scopes: Option<Vec<String>>,
    /// Unix seconds, in the future and within ten years (else 422); absent: never expires.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub expires_at: Option<u64>,
    /// Requests per `rate_limit_window`; absent: the plan's default rate (standard: 600 per
    /// minute) scaled to the window.
    /// The plan caps the rate per minute (standard: 6000): `rate_limit * 60` must not exceed
    /// `6000 * rate_limit_window`, else 422 `validation_failed` with `field: rate_limit`,
    /// `max_rate_limit` (per minute), `max_rate_limit_for_window`, `rate_limit` and
    /// `rate_limit_window`.
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[schema(minimum = 1, maximum = 8640000)]
    pub rate_limit: Option<u32>,
    /// Seconds, 1 to 86400; absent: 60.
    // Absent from the idempotency hash when absent, so a request hashes as it did before
    // windows existed.
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 86400)]
    pub rate_limit_window: Option<u32>,
}

/// A validated create request.
#[derive(Debug, Clone)]
pub(super) struct KeySpec {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) environment: Environment,
    pub(super) scopes: ScopeSet,
    pub(super) expires_at: Option<u64>,
    pub(super) rate_limit: Option<u32>,
    pub(super) rate_limit_window: u32,
}

fn clean_name(name: &str) -> Result<String> {
    text::guard("name", name)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::validation("name is required").with_field("field", "name"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::validation(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        ))
        .with_field("field", "name"));
    }
    Ok(name.to_owned())
}

fn clean_description(description: Option<&str>) -> Result<Option<String>> {
    if let Some(d) = description {
        text::guard("description", d)?;
    }
    let Some(d) = description.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::validation(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        ))
        .with_field("field", "description"));
    }
    Ok(Some(d.to_owned()))
}

/// The environment named `name`, or a 422 naming the field.
pub(crate) fn parse_environment(name: &str) -> Result<Environment> {
    Environment::from_name(name).ok_or_else(|| {
        AppError::validation("environment must be development, staging or production")
            .with_field("field", "environment")
    })
}

impl CreateKey {
    /// The request checked: what a new key gets.
    pub(super) fn validate(&self, now: u64) -> Result<KeySpec> {
        let name = clean_name(&self.name)?;
        let description = clean_description(self.description.as_deref())?;
        let environment = parse_environment(&self.environment)?;
        // The rule is `shared`'s (`Permission::parse`); this only names the field at fault.
        let scope_names = self.scopes.as_ref().map(|n| n.iter().map(String::as_str));
        let scopes = match Permission::parse(&self.permission, scope_names) {
            Ok(permission) => permission.scopes(),
            Err(e @ PermissionError::UnknownScope(_)) => {
                return Err(AppError::validation(e.to_string())
                    .with_field("field", "scopes")
                    .with_field(
                        "known_scopes",
                        Scope::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
                    ));
            }
            Err(e @ PermissionError::NoScopes) => {
                return Err(AppError::validation(e.to_string()).with_field("field", "scopes"));
            }
            Err(e) => {
                return Err(AppError::validation(e.to_string()).with_field("field", "permission"));
            }
        };
        if let Some(exp) = self.expires_at {
            if exp <= now {
                return Err(AppError::validation("expires_at must be in the future")
                    .with_field("field", "expires_at"));
            }
            if exp > now + 10 * 365 * 86_400 {
                return Err(AppError::validation("expires_at must be within ten years")
                    .with_field("field", "expires_at"));
            }
        }
        Ok(KeySpec {
            name,
            description,
            environment,
            scopes,
            expires_at: self.expires_at,
            rate_limit: self.rate_limit,
            rate_limit_window: check_window(self.rate_limit_window)?,
        })
    }
}

/// Whole numbers that JSON may spell `5` or `5.0` (JSON Schema calls both integers).
mod whole {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Number;

    fn of(n: &Number) -> Option<u64> {
        n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=9.007_199_254_740_992e15).contains(f))
                .map(|f| f as u64)
        })
    }

    fn expected<E: Error>() -> E {
        E::custom("expected a non-negative whole number")
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        of(&Number::deserialize(d)?).ok_or_else(expected)
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<Number>::deserialize(d)?
            .map(|n| of(&n).ok_or_else(expected))
            .transpose()
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        opt_u64(d)?
            .map(|n| u32::try_from(n).map_err(|_| expected()))
            .transpose()
    }

    /// A PATCH field: absent is `None` (via `default`), `null` is refused.
    pub fn some_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let n = u64(d)?;
        u32::try_from(n).map(Some).map_err(|_| expected())
    }
}

/// The request's `Idempotency-Key`, if it sent one (400 if malformed).
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "The Idempotency-Key header is invalid",
        )
        .with_detail("use 1 to 255 visible ASCII characters, e.g. a UUID"));
    }
    Ok(Some(text.to_owned()))
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys of this environment.
    #[param(schema_with = crate::openapi::environment)]
    pub environment: Option<String>,
    /// Only keys of this status: `active`, `expired`, `rotating`, `revoked`.
    #[param(schema_with = crate::openapi::key_status)]
    pub status: Option<String>,
    /// Only keys whose name, hint (`lnx_live_…abcd`) or id contains this (case-insensitive).
    #[param(max_length = 100)]
    pub search: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    #[param(pattern = r"^[0-9]{1,19}\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
    /// `true`: only idle keys (active, neither used nor created in 30 days); `false`: only the
    /// others.
    pub idle: Option<bool>,
}

impl ListQuery {
    /// The query checked: the store's filter, at `now`.
    pub(super) fn filter(self, limit: ListLimit, now: u64) -> Result<ListFilter> {
        let environment = self
            .environment
            .as_deref()
            .map(parse_environment)
            .transpose()?;
        let status = self
            .status
            .as_deref()
            .map(|name| {
                KeyStatus::from_name(name).ok_or_else(|| {
                    AppError::validation("status must be active, expired, rotating or revoked")
                        .with_field("field", "status")
                })
            })
            .transpose()?;
        let after = self
            .cursor
            .as_deref()
            .map(|c| {
                parse_cursor(c).ok_or_else(|| {
                    AppError::validation("cursor is not one this API returned")
                        .with_field("field", "cursor")
                })
            })
            .transpose()?;
        let search = self
            .search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if search
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_NAME_CHARS)
        {
            return Err(AppError::validation("search is too long").with_field("field", "search"));
        }
        Ok(ListFilter {
            environment,
            search,
            status,
            idle: self.idle.map(|idle| (idle, now.saturating_sub(IDLE_AFTER))),
            after,
            limit: limit.0,
        })
    }
}

/// `GET /v1/keys` pages: 100 keys by default, at most 1000.
pub type ListLimit = PageLimit<100, 1000>;

/// The `(created_at, id)` a `next_cursor` names.
fn parse_cursor(cursor: &str) -> Option<(u64, KeyId)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, KeyId::parse_hex(id)?))
}

/// Body of `PATCH /v1/keys/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// New name (trimmed, 1 to 100 characters, no control characters).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// New description; an empty string clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    /// New rate limit, requests per window (the window stays unless sent too). A change takes a
    /// new policy version that is pushed to the edge: no new key needed.
    /// The plan caps the rate per minute (standard: 6000): `rate_limit * 60` must not exceed
    /// `6000 * rate_limit_window`, else 422 `validation_failed` with `field: rate_limit`,
    /// `max_rate_limit` (per minute), `max_rate_limit_for_window`, `rate_limit` and
    /// `rate_limit_window`.
    #[serde(default, deserialize_with = "whole::some_u32")]
    #[schema(nullable = false, minimum = 1, maximum = 8640000)]
    pub rate_limit: Option<u32>,
    /// New window, seconds (the limit stays unless sent too).
    #[serde(default, deserialize_with = "whole::some_u32")]
    #[schema(nullable = false, minimum = 1, maximum = 86400)]
    pub rate_limit_window: Option<u32>,
}

/// A PATCH field may be absent (unchanged) but not `null`: a client sending `null` to clear a
/// field would otherwise get a `200` with nothing changed. `null` is a 422, as the schema says.
/// The `PATCH` field that is present; see [`UpdateKey`].
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A validated `PATCH`: what changes.
#[derive(Debug, Clone)]
pub(super) struct Changes {
    /// New name.
    pub(super) name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub(super) description: Option<Option<String>>,
    /// New limit.
    pub(super) rate_limit: Option<u32>,
    /// New window.
    pub(super) rate_limit_window: Option<u32>,
}

impl UpdateKey {
    /// The request checked.
    pub(super) fn validate(self) -> Result<Changes> {
        if self.name.is_none()
            && self.description.is_none()
            && self.rate_limit.is_none()
            && self.rate_limit_window.is_none()
        {
            return Err(AppError::validation(
                "send at least one of `name`, `description`, `rate_limit`, `rate_limit_window`",
            ));
        }
        if self.rate_limit_window.is_some() {
            check_window(self.rate_limit_window)?;
        }
        let name = self.name.as_deref().map(clean_name).transpose()?;
        let description = self
            .description
            .as_deref()
            .map(|d| clean_description(Some(d)))
            .transpose()?;
        Ok(Changes {
            name,
            description,
            rate_limit: self.rate_limit,
            rate_limit_window: self.rate_limit_window,
        })
    }
}

/// Body of `POST /v1/keys/{id}/revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Why (recorded in the key and the audit trail): 1 to 500 characters, not only spaces.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl RevokeKey {
    /// The reason, trimmed and checked.
    pub(super) fn reason(&self) -> Result<String> {
        clean_reason(&self.reason)
    }
}

/// Most keys one bulk revoke takes: one write transaction stays short.
pub const MAX_BULK_REVOKE: usize = 100;

/// Body of `POST /v1/keys/bulk-revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevokeKeys {
    /// The keys to revoke: 1 to 100 ids (32 hex digits each), no id twice.
    #[schema(schema_with = crate::openapi::bulk_key_ids)]
    pub ids: Vec<String>,
    /// Why (recorded in every key and its audit event): 1 to 500 characters, not only spaces.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl BulkRevokeKeys {
    /// The ids (parsed, in the order given) and the reason, checked.
    pub(super) fn validate(&self) -> Result<(Vec<KeyId>, String)> {
        let reason = clean_reason(&self.reason)?;
        if self.ids.is_empty() || self.ids.len() > MAX_BULK_REVOKE {
            return Err(
                AppError::validation(format!("ids must list 1 to {MAX_BULK_REVOKE} keys"))
                    .with_field("field", "ids"),
            );
        }
        let mut ids = Vec::with_capacity(self.ids.len());
        for (at, text) in self.ids.iter().enumerate() {
            let id = KeyId::parse_hex(text).ok_or_else(|| {
                AppError::validation("every id must be 32 hex digits")
                    .with_field("field", "ids")
                    .with_field("index", at)
            })?;
            if ids.contains(&id) {
                return Err(AppError::validation("an id is listed twice")
                    .with_field("field", "ids")
                    .with_field("index", at));
            }
            ids.push(id);
        }
        Ok((ids, reason))
    }
}

fn clean_reason(reason: &str) -> Result<String> {
    text::guard("reason", reason)?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::validation(format!(
            "reason is required, up to {MAX_REASON_CHARS} characters"
        ))
        .with_field("field", "reason"));
    }
    Ok(reason.to_owned())
}

/// Body of `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old key keeps working (0: revoked at once; at most 30 days).
    #[serde(deserialize_with = "whole::u64")]
    #[schema(maximum = 2592000)]
    pub grace_period_seconds: u64,
}

impl RotateKey {
    /// The grace period, checked.
    pub(super) fn grace(&self) -> Result<u64> {
        if self.grace_period_seconds > MAX_GRACE {
            return Err(AppError::validation(format!(
                "grace_period_seconds must be at most {MAX_GRACE}"
            ))
            .with_field("field", "grace_period_seconds"));
        }
        Ok(self.grace_period_seconds)
    }
}

/// Checks a requested window (absent: [`DEFAULT_WINDOW`]).
pub(super) fn check_window(window: Option<u32>) -> Result<u32> {
    let window = window.unwrap_or(DEFAULT_WINDOW);
    if shared::limits::check_window(window).is_err() {
        return Err(AppError::validation(format!(
            "rate_limit_window must be between 1 and {} seconds",
            shared::limits::MAX_WINDOW
        ))
        .with_field("field", "rate_limit_window"));
    }
    Ok(window)
}

/// The plan's default rate (per minute) scaled to `window`, at least 1.
pub(super) fn default_limit(plan: &accounts::Plan, window: u32) -> u32 {
    let scaled = u64::from(plan.default_rate_limit) * u64::from(window) / 60;
    u32::try_from(scaled.max(1)).unwrap_or(u32::MAX)
}
