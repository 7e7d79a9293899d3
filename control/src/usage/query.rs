//! The usage and activity API: dense series of request counts per outcome, totals, per-scope
//! counts, top keys, and a key's recent requests.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::usage::Outcome;

use super::{UsageError, invalid};
use crate::auth::Caller;
use crate::error::{Json, KeyIdPath, PageLimit, Query, Result};
use crate::state::AppState;
use crate::store::keys as keys_db;
use crate::store::usage::{self as db, ByOutcome, Granularity, Subject};

/// Most buckets one usage query answers.
pub const MAX_BUCKETS: u64 = 1500;
/// Keys listed in account usage.
pub const TOP_KEYS: u32 = 20;
/// Latest time a query accepts (9999-12-31T23:59:59Z).
const MAX_TIME: u64 = 253_402_300_799;

/// Query of the usage endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Unix seconds; default `to` minus 24 hours. Rounded down to a bucket edge.
    #[param(maximum = 253402300799_i64)]
    pub from: Option<u64>,
    /// Unix seconds, exclusive; rounded up to a bucket edge. Default: the end of the bucket
    /// holding now.
    #[param(maximum = 253402300799_i64)]
    pub to: Option<u64>,
    /// `minute`, `hour` (default) or `day` (UTC days).
    #[param(schema_with = crate::openapi::granularity)]
    pub granularity: Option<String>,
}

/// A resolved range: `[from, to)` in whole buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    from: u64,
    to: u64,
    granularity: Granularity,
}

fn resolve(q: &UsageQuery, now: u64) -> Result<Range, UsageError> {
    let granularity = match q.granularity.as_deref() {
        None => Granularity::Hour,
        Some(name) => Granularity::from_name(name).ok_or_else(|| {
            invalid(
                "granularity".into(),
                "granularity must be minute, hour or day",
            )
        })?,
    };
    for (name, value) in [("from", q.from), ("to", q.to)] {
        if value.is_some_and(|v| v > MAX_TIME) {
            return Err(invalid(
                name.into(),
                "must be a Unix time before the year 10000",
            ));
        }
    }
    let g = granularity.seconds();
    // Default: up to the end of the bucket holding now, so the current bucket is shown.
    let to = q.to.unwrap_or((now / g + 1) * g);
    let from = q.from.unwrap_or(to.saturating_sub(86_400));
    if from > to {
        return Err(invalid("from".into(), "from must not be after to"));
    }
    let (from, to) = (from / g * g, to.div_ceil(g) * g);
    let buckets = (to - from) / g;
    if buckets > MAX_BUCKETS {
        return Err(UsageError::TooManyBuckets {
            buckets,
            granularity: granularity.name(),
            max: MAX_BUCKETS,
        });
    }
    Ok(Range {
        from,
        to,
        granularity,
    })
}

/// Requests per outcome class.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OutcomeCounts {
    /// Forwarded, origin answered 1xx/2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// Forwarded, origin answered 3xx.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// Forwarded, origin answered 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// Forwarded, origin answered 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// Refused by the edge: revoked, expired or wrong environment.
    #[serde(rename = "401")]
    pub unauthorized: u64,
    /// Refused by the edge: missing scope.
    #[serde(rename = "403")]
    pub forbidden: u64,
    /// Refused by the edge: over the rate limit.
    #[serde(rename = "429")]
    pub rate_limited: u64,
    /// Refused by the edge: no such route (404) or method (405). Never reached the origin.
    #[serde(rename = "edge_4xx")]
    pub edge_refused: u64,
    /// Failed at the edge: revocation status unknown (503), origin unreachable (502), or an
    /// internal error. Never answered by the origin.
    #[serde(rename = "edge_5xx")]
    pub edge_error: u64,
}

impl From<ByOutcome> for OutcomeCounts {
    fn from(c: ByOutcome) -> Self {
        let [
            success,
            redirect,
            client_error,
            server_error,
            unauthorized,
            forbidden,
            rate_limited,
            edge_refused,
            edge_error,
        ] = c;
        Self {
            success,
            redirect,
            client_error,
            server_error,
            unauthorized,
            forbidden,
            rate_limited,
            edge_refused,
            edge_error,
        }
    }
}

/// Sums of a range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = UsageTotals)]
pub struct Totals {
    /// Every request.
    pub requests: u64,
    /// 2xx + 3xx + 4xx + 5xx: forwarded and answered by the origin (billable).
    pub allowed: u64,
    /// 401 + 403 + 429 + edge_4xx + edge_5xx: answered by the edge itself.
    pub denied: u64,
    /// Per outcome.
    pub by_outcome: OutcomeCounts,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = UsageBucket)]
pub struct Bucket {
    /// Unix seconds of the bucket's start.
    pub start: u64,
    /// Requests in it.
    pub requests: u64,
    /// Per outcome, zeros included.
    pub by_outcome: OutcomeCounts,
}

/// The part of a usage answer common to a key and an account.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// `minute`, `hour` or `day`.
    #[schema(schema_with = crate::openapi::granularity)]
    pub granularity: &'static str,
    /// Start of the first bucket, Unix seconds.
    pub from: u64,
    /// End of the last bucket (exclusive), Unix seconds.
    pub to: u64,
    /// Sums over the range.
    pub totals: Totals,
    /// Every bucket of the range, oldest first, zeros included.
    pub series: Vec<Bucket>,
    /// Requests per route scope (requests that matched no route, such as most 401s, are not
    /// in it): every outcome, `by_scope_allowed` plus `by_scope_refused`.
    pub by_scope: BTreeMap<String, u64>,
    /// Requests per route scope that the origin answered: the scopes the key really used.
    pub by_scope_allowed: BTreeMap<String, u64>,
    /// Requests per route scope that the edge answered itself: a `403` names the scope the key
    /// lacks (so a scope here may be none of the key's), a `429` one it has but was over its
    /// limit for. Never "used".
    pub by_scope_refused: BTreeMap<String, u64>,
}

fn report(range: Range, usage: &db::Usage) -> UsageReport {
    let g = range.granularity.seconds();
    let mut total: ByOutcome = [0; Outcome::ALL.len()];
    let series = usage
        .series
        .iter()
        .zip(0..)
        .map(|(counts, i)| {
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
            Bucket {
                start: range.from + i * g,
                requests: counts.iter().sum(),
                by_outcome: OutcomeCounts::from(*counts),
            }
        })
        .collect();
    let denied: u64 = Outcome::ALL
        .iter()
        .zip(total)
        .filter(|(o, _)| o.is_denial())
        .map(|(_, n)| n)
        .sum();
    let requests: u64 = total.iter().sum();
    UsageReport {
        granularity: range.granularity.name(),
        from: range.from,
        to: range.to,
        totals: Totals {
            requests,
            allowed: requests - denied,
            denied,
            by_outcome: OutcomeCounts::from(total),
        },
        series,
        by_scope: usage.by_scope.clone(),
        by_scope_allowed: usage.by_scope_allowed.clone(),
        by_scope_refused: usage.by_scope_refused.clone(),
    }
}

/// Answer of `GET /v1/keys/{id}/usage`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyUsage {
    /// The key.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub key_id: String,
    /// The usage.
    #[serde(flatten)]
    pub report: UsageReport,
}

/// A key in the account usage.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TopKey {
    /// Key id.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// Requests in the range.
    pub requests: u64,
}

/// Answer of `GET /v1/usage`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountUsage {
    /// The usage of every key of the account.
    #[serde(flatten)]
    pub report: UsageReport,
    /// The keys with the most requests in the range, at most 20, most first.
    #[schema(max_items = 20)]
    pub keys: Vec<TopKey>,
}

/// `GET /v1/keys/{id}/usage`.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/usage",
    summary = "Usage of one key",
    description = "Requests per bucket and outcome, as reported by the edge (counted once per request, exactly, also across control plane restarts). Dense: every bucket of the range, zeros included.",
    params(
        crate::error::KeyIdPath,
        crate::usage::query::UsageQuery,
    ),
    responses(
        (status = 200, description = "The key's usage.", body = crate::usage::query::KeyUsage),
        crate::openapi::BadQuery,
        crate::openapi::Unauthenticated,
        crate::openapi::KeyNotFound,
        crate::openapi::UsageRangeRefused,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn get_key_usage(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
    Query(q): Query<UsageQuery>,
) -> Result<Json<KeyUsage>> {
    let range = resolve(&q, state.clock.now())?;
    let account = caller.account_id;
    let usage = state
        .store
        .read(move |c| -> Result<_, UsageError> {
            keys_db::get(c, account, id)?.ok_or(UsageError::NotFound)?;
            Ok(db::usage(
                c,
                Subject::Key(account, id),
                range.from,
                range.to,
                range.granularity,
                0,
            )?)
        })
        .await?;
    Ok(Json(KeyUsage {
        key_id: id.to_string(),
        report: report(range, &usage),
    }))
}

/// `GET /v1/usage`: every key of the account.
#[utoipa::path(
    get,
    path = "/v1/usage",
    summary = "Usage of every key of the account",
    params(
        crate::usage::query::UsageQuery,
    ),
    responses(
        (status = 200, description = "The account's usage and its top keys.", body = crate::usage::query::AccountUsage),
        crate::openapi::BadQuery,
        crate::openapi::Unauthenticated,
        crate::openapi::UsageRangeRefused,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn get_account_usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> Result<Json<AccountUsage>> {
    let range = resolve(&q, state.clock.now())?;
    let account = caller.account_id;
    let usage = state
        .store
        .read(move |c| {
            db::usage(
                c,
                Subject::Account(account),
                range.from,
                range.to,
                range.granularity,
                TOP_KEYS,
            )
        })
        .await?;
    let keys = usage
        .top_keys
        .iter()
        .map(|(key_id, name, requests)| TopKey {
            key_id: key_id.clone(),
            name: name.clone(),
            requests: *requests,
        })
        .collect();
    Ok(Json(AccountUsage {
        report: report(range, &usage),
        keys,
    }))
}

/// Query of `GET /v1/keys/{id}/activity`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,19}\.[0-9]{1,19}$")]
    pub before: Option<String>,
    /// Only this outcome (`2xx` ... `edge_5xx`), or `denied` (every answer of the edge itself).
    #[param(schema_with = crate::openapi::outcome_filter)]
    pub outcome: Option<String>,
    /// Only requests at or after this Unix millisecond (e.g. a revoked key's attempts since
    /// its `revoked_at`).
    #[param(minimum = 0)]
    pub from_ms: Option<u64>,
    /// Only requests before this Unix millisecond (e.g. a revoked key's use before it stopped).
    #[param(minimum = 0)]
    pub to_ms: Option<u64>,
}

/// One request in the activity log (the row id, part of the cursor, is not serialized).
pub use db::ActivityRow as ActivityEntry;

/// A page of activity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityPage {
    /// Newest first.
    pub data: Vec<ActivityEntry>,
    /// Pass as `before` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn parse_cursor(cursor: &str) -> Option<(u64, i64)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

/// `GET /v1/keys/{id}/activity` pages: 50 requests by default, at most 500.
type ActivityLimit = PageLimit<50, 500>;

/// `GET /v1/keys/{id}/activity`: the key's recent requests (kept 30 days: the latest 200
/// forwarded ones, and a sample of the edge's own answers: the latest 200, at most 10 per minute
/// and outcome).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/activity",
    summary = "Recent requests of one key",
    description = "Kept 30 days: the latest 200 forwarded requests (2xx-5xx) per key and every denial (401, 403, 429). The edge sends every denial and a bounded sample of forwarded requests.",
    params(
        crate::error::KeyIdPath,
        crate::usage::query::ActivityQuery,
    ),
    responses(
        (status = 200, description = "Requests, newest first.", body = crate::usage::query::ActivityPage),
        crate::openapi::BadQuery,
        crate::openapi::Unauthenticated,
        crate::openapi::KeyNotFound,
        (status = 422, description = "Bad `limit`, `before` or `outcome`.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_key_activity(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
    Query(q): Query<ActivityQuery>,
    PageLimit(limit): ActivityLimit,
) -> Result<Json<ActivityPage>> {
    let before = q
        .before
        .as_deref()
        .map(|c| {
            parse_cursor(c)
                .ok_or_else(|| invalid("before".into(), "before is not a cursor this API returned"))
        })
        .transpose()?;
    let outcomes: Option<Vec<&'static str>> = match q.outcome.as_deref() {
        None => None,
        Some("denied") => Some(
            Outcome::ALL
                .iter()
                .filter(|o| o.is_denial())
                .map(|o| o.name())
                .collect(),
        ),
        Some(name) => Some(vec![
            Outcome::from_name(name)
                .ok_or_else(|| {
                    invalid(
                        "outcome".into(),
                        "outcome must be 2xx, 3xx, 4xx, 5xx, 401, 403, 429, edge_4xx, \
                         edge_5xx or denied",
                    )
                })?
                .name(),
        ]),
    };
    // Past i64 a time means nothing to the database (the documented maximum of both bounds).
    for (field, value) in [("from_ms", q.from_ms), ("to_ms", q.to_ms)] {
        if value.is_some_and(|v| v > i64::MAX as u64) {
            return Err(
                invalid(field.into(), "from_ms and to_ms must be Unix milliseconds").into(),
            );
        }
    }
    let since_ms = state
        .clock
        .now_ms()
        .saturating_sub(db::ACTIVITY_RETENTION * 1000)
        .max(q.from_ms.unwrap_or(0));
    // `to_ms` is a bound like the cursor's: before it (the cursor, when older, still wins).
    let before = match (before, q.to_ms) {
        (Some((at, id)), Some(to)) if at < to => Some((at, id)),
        (_, Some(to)) => Some((to, i64::MIN)),
        (before, None) => before,
    };
    let account = caller.account_id;
    let (key, mut rows) = state
        .store
        .read(move |c| -> Result<_, UsageError> {
            let key = keys_db::get(c, account, id)?.ok_or(UsageError::NotFound)?;
            let rows = db::activity(c, account, id, since_ms, before, outcomes.as_deref(), limit)?;
            Ok((key, rows))
        })
        .await?;
    for row in &mut rows {
        row.reason = refusal_reason(row, key.revoked_at, key.expires_at);
    }
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("{}.{}", r.at_ms, r.id)))
        .flatten();
    Ok(Json(ActivityPage {
        data: rows,
        next_cursor,
    }))
}

/// Why the edge answered a request of a key revoked at `revoked_at` and expiring at
/// `expires_at` (Unix seconds) itself. The edge's own reason, recorded with the entry, when the
/// row has one (every row the edge sent since it records it). Only a row without one (stored
/// before the upgrade) is named from the answer and the key's dates, as it was before: the key's
/// dates tell its 401s apart. The edge answers 401 to a key whose tag verified for three reasons
/// only: revoked (it learns of a revocation after the control plane made it), expired (by the
/// same `expires_at`, on the edge's clock, which also stamped the entry), or of another
/// environment. So a 401 before the key was revoked or expired was an environment mistake. That
/// derivation is inexact where the edge's own reason is not: another environment's key that was
/// also revoked or expired is named `revoked` or `expired` by it, though the edge (which checks
/// the environment first) refused it as `wrong_environment`.
pub fn refusal_reason(
    row: &ActivityEntry,
    revoked_at: Option<u64>,
    expires_at: Option<u64>,
) -> Option<&'static str> {
    if row.reason.is_some() {
        return row.reason;
    }
    let at = row.at_ms / 1000;
    match Outcome::from_name(&row.outcome)? {
        Outcome::Unauthorized => Some(if revoked_at.is_some_and(|r| at >= r) {
            "revoked"
        } else if expires_at.is_some_and(|e| at >= e) {
            "expired"
        } else {
            "wrong_environment"
        }),
        Outcome::Forbidden => Some("insufficient_scope"),
        Outcome::RateLimited => Some("rate_limit_exceeded"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::error::AppError;

    fn q(from: Option<u64>, to: Option<u64>, g: Option<&str>) -> UsageQuery {
        UsageQuery {
            from,
            to,
            granularity: g.map(str::to_owned),
        }
    }

    /// A row at second `at` (its last millisecond) with `outcome` and a stored `reason`.
    fn entry(at: u64, outcome: &str, reason: Option<&'static str>) -> ActivityEntry {
        ActivityEntry {
            id: 1,
            at_ms: at * 1000 + 999,
            method: "GET".into(),
            path: "/v1/jobs".into(),
            status: 0,
            outcome: outcome.into(),
            client_ip: None,
            country: None,
            colo: None,
            user_agent: None,
            reason,
        }
    }

    #[test]
    fn refusals_are_named_from_the_keys_dates() {
        let row = |at: u64, outcome: &str| entry(at, outcome, None);
        let cases = [
            (row(100, "401"), None, None, Some("wrong_environment")),
            (
                row(100, "401"),
                Some(101),
                Some(102),
                Some("wrong_environment"),
            ),
            (row(100, "401"), Some(100), None, Some("revoked")),
            (row(100, "401"), None, Some(100), Some("expired")),
            (row(100, "401"), Some(50), Some(60), Some("revoked")),
            (row(100, "403"), None, None, Some("insufficient_scope")),
            (row(100, "429"), None, None, Some("rate_limit_exceeded")),
            (row(100, "2xx"), Some(50), None, None),
            (row(100, "edge_4xx"), None, None, None),
            (row(100, "bogus"), None, None, None),
        ];
        for (row, revoked, expires, want) in cases {
            assert_eq!(refusal_reason(&row, revoked, expires), want, "{row:?}");
        }
    }

    #[test]
    fn the_edges_own_reason_wins_over_the_dates() {
        let row = |outcome: &str, reason| entry(100, outcome, reason);
        // Revoked and expired before the request, but refused for its environment.
        let other = row("401", Some("wrong_environment"));
        assert_eq!(
            refusal_reason(&other, Some(50), Some(60)),
            Some("wrong_environment")
        );
        let gone = row("edge_4xx", Some("not_found"));
        assert_eq!(refusal_reason(&gone, None, None), Some("not_found"));
    }

    #[test]
    fn ranges_align_to_bucket_edges() {
        let now = 1_767_225_600 + 1800; // half past midnight
        let r = resolve(&q(None, None, None), now).unwrap();
        assert_eq!((r.from, r.to), (now + 1800 - 86_400, now + 1800));
        assert_eq!((r.to - r.from) / 3600, 24, "the current hour is the last");
        let r = resolve(&q(None, None, None), now - 1800).unwrap();
        assert_eq!(r.to, now + 1800, "a bucket that just began is shown");
        let r = resolve(&q(None, Some(now), None), now).unwrap();
        assert_eq!((r.from, r.to), (now - 1800 - 86_400, now + 1800));
        let r = resolve(&q(Some(61), Some(120), Some("minute")), now).unwrap();
        assert_eq!((r.from, r.to), (60, 120));
        let r = resolve(&q(Some(5), Some(5), Some("day")), now).unwrap();
        assert_eq!((r.from, r.to), (0, 86_400));
        let r = resolve(&q(Some(0), Some(0), Some("day")), now).unwrap();
        assert_eq!((r.from, r.to), (0, 0));
    }

    #[test]
    fn ranges_are_bounded() {
        let now = 1_767_225_600;
        let reversed = resolve(&q(Some(10), Some(5), None), now).unwrap_err();
        assert!(matches!(&reversed, UsageError::Invalid { field, .. } if field == "from"));
        assert_eq!(
            AppError::from(reversed).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(resolve(&q(Some(0), Some(1500 * 60), Some("minute")), now).is_ok());
        assert!(matches!(
            resolve(&q(Some(0), Some(1500 * 60 + 1), Some("minute")), now),
            Err(UsageError::TooManyBuckets { buckets: 1501, .. })
        ));
        assert!(resolve(&q(None, None, Some("week")), now).is_err());
        assert!(resolve(&q(Some(MAX_TIME + 1), None, None), now).is_err());
    }
}
