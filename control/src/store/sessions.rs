//! Dashboard sessions: opened at sign-in, found by the hash of their secret, ended by sign-out,
//! by their user (one, or every other), by a password change, by the per-user cap, or by time
//! (an absolute end and an idle timeout).
//!
//! A session ends by time when `expires_at <= now` or `last_seen_at + idle <= now`; rows that
//! ended so are purged in bounded batches. A user never has more than the cap's rows: opening a
//! session deletes the user's ended rows and, past the cap, their oldest live ones, in the same
//! transaction as the insert, so parallel sign-ins cannot exceed it either.

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;

use super::Result;
use super::{to_i64, to_u64};
use crate::secret::HashedToken;

/// Ended sessions deleted by one purge: the work a sign-in adds is bounded whatever the backlog.
pub const PURGE_BATCH: usize = 100;

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The hash of its secret.
    pub token_hash: &'a HashedToken,
    /// Whose.
    pub user_id: u64,
    /// Their account.
    pub account_id: u64,
    /// Now, Unix seconds.
    pub now: u64,
    /// The absolute end.
    pub expires_at: u64,
    /// The client's address, if known.
    pub ip: Option<&'a str>,
    /// The browser's user agent, already cut and cleaned (`auth::sessions::user_agent`).
    pub user_agent: &'a str,
}

/// What opening a session did besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The new session's id.
    pub id: u64,
    /// The user's live sessions ended to keep them within the cap, oldest first.
    pub ended_by_cap: Vec<u64>,
}

/// Opens a session. In the same transaction: the session the browser presented (`replaces`)
/// ends, so a sign-in never leaves the previous id working; the user's ended rows go; past `cap`
/// the user's oldest sessions end; and up to [`PURGE_BATCH`] ended rows of anyone are purged.
pub fn create(
    tx: &Db<'_>,
    new: &NewSession<'_>,
    idle: u64,
    cap: u32,
    replaces: Option<&HashedToken>,
) -> Result<Opened> {
    if let Some(old) = replaces {
        end_by_hash(tx, old)?;
    }
    let (now, idle_cut) = (to_i64(new.now), to_i64(new.now.saturating_sub(idle)));
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND (expires_at <= ?2 OR last_seen_at <= ?3)",
        params![to_i64(new.user_id), now, idle_cut],
    )?;
    let id = tx.query_row(
        "INSERT INTO sessions (token_hash, user_id, account_id, created_at, expires_at, \
                               last_seen_at, created_ip, last_seen_ip, user_agent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?6, ?6, ?7) RETURNING id",
        params![
            new.token_hash.as_bytes(),
            to_i64(new.user_id),
            to_i64(new.account_id),
            now,
            to_i64(new.expires_at),
            new.ip,
            new.user_agent,
        ],
        |r| to_u64(r.get(0)?),
    )?;
    // Ids only grow, so the newest `cap` have the highest ones.
    let ended_by_cap = ids(
        tx,
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE user_id = ?1 \
                                           ORDER BY id DESC LIMIT 9223372036854775807 OFFSET ?2) \
         RETURNING id",
        params![to_i64(new.user_id), cap.max(1)],
    )?;
    purge(tx, new.now, idle, PURGE_BATCH)?;
    Ok(Opened { id, ended_by_cap })
}

/// The ids a statement returns, in ascending order.
fn ids(tx: &Db<'_>, sql: &str, params: impl crate::store::db::Params) -> Result<Vec<u64>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| to_u64(r.get(0)?))?;
    let mut ids = rows.collect::<crate::store::db::Result<Vec<_>>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Deletes up to `limit` sessions that ended by time (absolute or idle); returns how many.
pub fn purge(tx: &Db<'_>, now: u64, idle: u64, limit: usize) -> Result<usize> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let expired = tx.execute(
        "DELETE FROM sessions WHERE id IN \
         (SELECT id FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
        params![to_i64(now), limit],
    )?;
    let idle = tx.execute(
        "DELETE FROM sessions WHERE id IN \
         (SELECT id FROM sessions WHERE last_seen_at <= ?1 LIMIT ?2)",
        params![to_i64(now.saturating_sub(idle)), limit],
    )?;
    Ok(expired + idle)
}

/// A live session, as authentication needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    /// The session's id.
    pub id: u64,
    /// Its user.
    pub user_id: u64,
    /// Their account.
    pub account_id: u64,
    /// When it was last recorded as used.
    pub last_seen_at: u64,
}

/// The session with this hash, if it has not ended by time.
pub fn find(
    conn: &Db<'_>,
    token_hash: &HashedToken,
    now: u64,
    idle: u64,
) -> Result<Option<LiveSession>> {
    Ok(conn
        .query_row(
            "SELECT id, user_id, account_id, last_seen_at FROM sessions \
             WHERE token_hash = ?1 AND expires_at > ?2 AND last_seen_at > ?3",
            params![
                token_hash.as_bytes(),
                to_i64(now),
                to_i64(now.saturating_sub(idle))
            ],
            |r| {
                Ok(LiveSession {
                    id: to_u64(r.get(0)?)?,
                    user_id: to_u64(r.get(1)?)?,
                    account_id: to_u64(r.get(2)?)?,
                    last_seen_at: to_u64(r.get(3)?)?,
                })
            },
        )
        .optional()?)
}

/// Records a use of session `id`, unless one was recorded less than `every` seconds ago (a
/// request that raced another's write changes nothing).
pub fn touch(tx: &Db<'_>, id: u64, now: u64, ip: Option<&str>, every: u64) -> Result<()> {
    tx.execute(
        "UPDATE sessions SET last_seen_at = ?2, last_seen_ip = coalesce(?3, last_seen_ip) \
         WHERE id = ?1 AND last_seen_at <= ?4",
        params![
            to_i64(id),
            to_i64(now),
            ip,
            to_i64(now.saturating_sub(every))
        ],
    )?;
    Ok(())
}

/// A session as its user sees it (never its secret nor the secret's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ActiveSession)]
pub struct SessionRecord {
    /// The session's id.
    #[schema(minimum = 1)]
    pub id: u64,
    /// Whether it is the session that made this request.
    pub current: bool,
    /// When it was opened (the sign-in), Unix seconds.
    pub created_at: u64,
    /// When it was last recorded as used, Unix seconds (recorded at most once a minute).
    pub last_seen_at: u64,
    /// When it ends whatever its use (the absolute timeout), Unix seconds.
    pub expires_at: u64,
    /// When it ends if it is not used before (the idle timeout), Unix seconds.
    pub idle_expires_at: u64,
    /// The client's address at sign-in, if known.
    #[schema(required = true)]
    pub created_ip: Option<String>,
    /// The client's address at the last recorded use, if known.
    #[schema(required = true)]
    pub last_seen_ip: Option<String>,
    /// The browser's `User-Agent` at sign-in: printable ASCII, at most 256 bytes (other bytes
    /// shown as `?`); empty if none was sent.
    #[schema(max_length = 256)]
    pub user_agent: String,
}

/// The user's live sessions, newest first; `current` marks the caller's.
pub fn list(
    conn: &Db<'_>,
    user_id: u64,
    current: Option<u64>,
    now: u64,
    idle: u64,
) -> Result<Vec<SessionRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, created_at, last_seen_at, expires_at, created_ip, last_seen_ip, user_agent \
         FROM sessions WHERE user_id = ?1 AND expires_at > ?2 AND last_seen_at > ?3 \
         ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(
        params![
            to_i64(user_id),
            to_i64(now),
            to_i64(now.saturating_sub(idle))
        ],
        |r| {
            let id = to_u64(r.get(0)?)?;
            let last_seen_at = to_u64(r.get(2)?)?;
            let expires_at = to_u64(r.get(3)?)?;
            Ok(SessionRecord {
                id,
                current: current == Some(id),
                created_at: to_u64(r.get(1)?)?,
                last_seen_at,
                expires_at,
                idle_expires_at: (last_seen_at + idle).min(expires_at),
                created_ip: r.get(4)?,
                last_seen_ip: r.get(5)?,
                user_agent: r.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// Ends the user's session `id`; `false` if the user has no such session (another user's
/// included).
pub fn end(tx: &Db<'_>, user_id: u64, id: u64) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM sessions WHERE id = ?1 AND user_id = ?2",
        params![to_i64(id), to_i64(user_id)],
    )? == 1)
}

/// Ends every session of the user but `keep`; returns the ids ended, oldest first.
pub fn end_all_but(tx: &Db<'_>, user_id: u64, keep: Option<u64>) -> Result<Vec<u64>> {
    ids(
        tx,
        "DELETE FROM sessions WHERE user_id = ?1 AND id IS DISTINCT FROM ?2 RETURNING id",
        params![to_i64(user_id), keep.map(to_i64)],
    )
}

/// Whether session `id` still exists (it may have been ended since the request was
/// authenticated).
pub fn exists(tx: &Db<'_>, id: u64) -> Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM sessions WHERE id = ?1", [to_i64(id)], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Ends the session with this hash (sign-out).
pub fn end_by_hash(tx: &Db<'_>, token_hash: &HashedToken) -> Result<()> {
    tx.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        [token_hash.as_bytes()],
    )?;
    Ok(())
}
