//! Leaked keys: where each was found and what was done, and each account's choice of response.

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;
use shared::key::KeyId;

use super::Result;
use super::{to_i64, to_u64};

/// Most leak records an answer lists (newest first); a key or an account with more still shows
/// the count.
pub const LIST_LIMIT: u32 = 50;

/// What an account wants done when a partner reports one of its live keys in public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakResponse {
    /// Revoke the key at once (the default).
    Revoke,
    /// Only record it and show it (banner, audit event): the key keeps working.
    Notify,
}

impl LeakResponse {
    /// Its stored and shown name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Notify => "notify",
        }
    }

    fn parse(text: &str) -> Self {
        // The column's CHECK allows only the two; anything else is read as the safe default.
        if text == "notify" {
            Self::Notify
        } else {
            Self::Revoke
        }
    }
}

/// The account's leak response.
pub fn leak_response(conn: &Db<'_>, account_id: u64) -> Result<LeakResponse> {
    let text: String = conn
        .prepare_cached("SELECT leak_response FROM accounts WHERE id = ?1")?
        .query_row([to_i64(account_id)], |r| r.get(0))?;
    Ok(LeakResponse::parse(&text))
}

/// Sets the account's leak response; returns the previous one.
pub fn set_leak_response(
    tx: &Db<'_>,
    account_id: u64,
    response: LeakResponse,
) -> Result<LeakResponse> {
    let before = leak_response(tx, account_id)?;
    tx.execute(
        "UPDATE accounts SET leak_response = ?2 WHERE id = ?1",
        params![to_i64(account_id), response.name()],
    )?;
    Ok(before)
}

/// Who found the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// GitHub's secret-scanning partner programme.
    Github,
    /// GitLab's automatic response to leaked secrets.
    Gitlab,
    /// Someone holding the key revoked it (`POST /v1/keys/revoke`).
    Holder,
}

impl Reporter {
    /// Its stored and shown name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Holder => "holder",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "github" => Self::Github,
            "gitlab" => Self::Gitlab,
            _ => Self::Holder,
        }
    }
}

/// What the service did about a leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakAction {
    /// The key was active and is now revoked.
    Revoked,
    /// The account chose "notify only": the key still works.
    Notified,
    /// The key was revoked before.
    AlreadyRevoked,
    /// The key had expired: nothing to revoke.
    Expired,
}

impl LeakAction {
    /// Its stored and shown name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Notified => "notified",
            Self::AlreadyRevoked => "already_revoked",
            Self::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "revoked" => Self::Revoked,
            "notified" => Self::Notified,
            "expired" => Self::Expired,
            _ => Self::AlreadyRevoked,
        }
    }
}

/// One place a key was found, and what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Leak {
    /// The key (32 hex digits).
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub key_id: String,
    /// Who reported it: `github`, `gitlab` or `holder`.
    pub reporter: Reporter,
    /// Where it was found (a commit, a file, an issue), as the reporter gave it; empty when none.
    pub url: String,
    /// What kind of place (GitHub's `source`: `content`, `commit`, `issue_comment`, ...).
    #[schema(required = true)]
    pub source: Option<String>,
    /// Unix seconds.
    pub reported_at: u64,
    /// What was done: `revoked`, `notified`, `already_revoked` or `expired`.
    pub action: LeakAction,
}

/// A new leak record.
#[derive(Debug, Clone)]
pub struct NewLeak<'a> {
    /// The key.
    pub key_id: KeyId,
    /// Its account.
    pub account_id: u64,
    /// Who reported it.
    pub reporter: Reporter,
    /// Where ('' when none).
    pub url: &'a str,
    /// What kind of place.
    pub source: Option<&'a str>,
    /// Unix seconds.
    pub at: u64,
}

/// Whether this key was already reported found at this place by this reporter.
pub fn seen(tx: &Db<'_>, leak: &NewLeak<'_>) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM key_leaks WHERE key_id = ?1 AND reporter = ?2 AND url = ?3")?
        .query_row(
            params![leak.key_id.to_string(), leak.reporter.name(), leak.url],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Records a leak (the caller checked [`seen`] in the same transaction).
pub fn insert(tx: &Db<'_>, leak: &NewLeak<'_>, action: LeakAction) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO key_leaks (key_id, account_id, reporter, url, source, reported_at, action) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        leak.key_id.to_string(),
        to_i64(leak.account_id),
        leak.reporter.name(),
        leak.url,
        leak.source,
        to_i64(leak.at),
        action.name()
    ])?;
    Ok(())
}

/// How many leak records the account has.
pub fn count(conn: &Db<'_>, account_id: u64) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM key_leaks WHERE account_id = ?1")?
        .query_row([to_i64(account_id)], |r| r.get(0))?;
    to_u64(n).map_err(Into::into)
}

fn from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Leak> {
    Ok(Leak {
        key_id: r.get(0)?,
        reporter: Reporter::parse(&r.get::<_, String>(1)?),
        url: r.get(2)?,
        source: r.get(3)?,
        reported_at: to_u64(r.get(4)?)?,
        action: LeakAction::parse(&r.get::<_, String>(5)?),
    })
}

/// The account's leaks (`key`: of that key only), newest first, at most [`LIST_LIMIT`], and how
/// many there are in all.
pub fn list(conn: &Db<'_>, account_id: u64, key: Option<KeyId>) -> Result<(Vec<Leak>, u64)> {
    let key = key.map(|k| k.to_string());
    let leaks = conn
        .prepare_cached(
            "SELECT key_id, reporter, url, source, reported_at, action FROM key_leaks \
             WHERE account_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR key_id = ?2) \
             ORDER BY reported_at DESC, id DESC LIMIT ?3",
        )?
        .query_map(params![to_i64(account_id), key, LIST_LIMIT], from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    let total: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM key_leaks WHERE account_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR key_id = ?2)",
        )?
        .query_row(params![to_i64(account_id), key], |r| r.get(0))?;
    Ok((leaks, to_u64(total)?))
}
