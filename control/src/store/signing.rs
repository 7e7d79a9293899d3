//! Signing kids: which are retired, and what the keys they signed look like from there (the SQL
//! of `crate::signing`).

use crate::store::db::{Db, OptionalExtension, params};
use shared::key::KeyId;

use super::{Result, to_i64, to_u64};

/// Why a kid was retired. The names are stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RetireReason {
    /// Its secret leaked, or may have: every key it signed stopped working at once.
    Compromised,
    /// A planned end of life: the keys still on it stopped working at the announced time.
    Scheduled,
}

impl RetireReason {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compromised => "compromised",
            Self::Scheduled => "scheduled",
        }
    }

    /// The reason stored as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Compromised, Self::Scheduled]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// A retired kid, as `retired_kids` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKid {
    /// The kid.
    pub kid: u8,
    /// Unix seconds.
    pub retired_at: u64,
    /// Why.
    pub reason: RetireReason,
    /// The operator's own note (never shown to accounts).
    pub note: Option<String>,
    /// Working keys the retirement revoked.
    pub keys_revoked: u64,
}

fn retired_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<RetiredKid> {
    let reason: String = r.get(2)?;
    Ok(RetiredKid {
        kid: r.get(0)?,
        retired_at: to_u64(r.get(1)?)?,
        reason: RetireReason::from_name(&reason)
            .ok_or_else(|| crate::store::db::Error::column(2, "retire reason"))?,
        note: r.get(3)?,
        keys_revoked: to_u64(r.get(4)?)?,
    })
}

const RETIRED: &str = "SELECT kid, retired_at, reason, note, keys_revoked FROM retired_kids";

/// Every retired kid, ascending.
pub fn retired(conn: &Db<'_>) -> Result<Vec<RetiredKid>> {
    let mut stmt = conn.prepare_cached(&format!("{RETIRED} ORDER BY kid"))?;
    let rows = stmt.query_map([], retired_row)?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// The retirement of `kid`, if it is retired.
pub fn get_retired(conn: &Db<'_>, kid: u8) -> Result<Option<RetiredKid>> {
    Ok(conn
        .prepare_cached(&format!("{RETIRED} WHERE kid = ?1"))?
        .query_row([kid], retired_row)
        .optional()?)
}

/// Records a retirement.
pub fn insert_retired(tx: &Db<'_>, r: &RetiredKid) -> Result<()> {
    tx.execute(
        "INSERT INTO retired_kids (kid, retired_at, reason, note, keys_revoked) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            r.kid,
            to_i64(r.retired_at),
            r.reason.name(),
            r.note,
            to_i64(r.keys_revoked)
        ],
    )?;
    Ok(())
}

/// Keys that work at the edge at `?2` (active, or in a rotation's grace; not expired).
const WORKING: &str = "(revoked_at IS NULL OR (revoked_at > ?2 AND revocation_in_force = 0)) \
    AND (expires_at IS NULL OR expires_at > ?2)";

/// A working key of a kid about to be retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingKey {
    /// Its owner.
    pub account_id: u64,
    /// The key.
    pub id: KeyId,
    /// The end of its rotation grace, if it is in one.
    pub grace_until: Option<u64>,
}

/// The keys signed by `kid` that work at `now`, by account.
pub fn working_keys_of(conn: &Db<'_>, kid: u8, now: u64) -> Result<Vec<WorkingKey>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT account_id, id, grace_until FROM api_keys WHERE kid = ?1 AND {WORKING} \
         ORDER BY account_id, created_at, id"
    ))?;
    let rows = stmt.query_map(params![kid, to_i64(now)], |r| {
        let id: String = r.get(1)?;
        Ok((to_u64(r.get(0)?)?, id, r.get::<_, Option<i64>>(2)?))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (account_id, id, grace) = row?;
        let id =
            KeyId::parse_hex(&id).ok_or_else(|| crate::store::db::Error::column(1, "key id"))?;
        keys.push(WorkingKey {
            account_id,
            id,
            grace_until: grace.map(to_u64).transpose()?,
        });
    }
    Ok(keys)
}

/// How many keys work at `now`, per kid that signed them, ascending by kid.
pub fn working_by_kid(conn: &Db<'_>, now: u64) -> Result<Vec<(u8, u64)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT kid, count(*) FROM api_keys WHERE {} GROUP BY kid ORDER BY kid",
        WORKING.replace("?2", "?1")
    ))?;
    let rows = stmt.query_map(params![to_i64(now)], |r| {
        Ok((r.get(0)?, to_u64(r.get(1)?)?))
    })?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// How many of the account's keys work at `now` and were signed by a kid other than `active`
/// that is not retired: keys to rotate onto the current signing key.
pub fn count_on_previous(conn: &Db<'_>, account_id: u64, active: u8, now: u64) -> Result<u32> {
    Ok(conn.query_row(
        &format!(
            "SELECT count(*) FROM api_keys WHERE account_id = ?1 AND {WORKING} AND kid != ?3 \
             AND kid NOT IN (SELECT kid FROM retired_kids)"
        ),
        params![to_i64(account_id), to_i64(now), active],
        |r| r.get(0),
    )?)
}

/// A key a retirement revoked, as its account's notice lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    /// The retired kid that signed it.
    pub kid: u8,
    /// When the kid was retired.
    pub retired_at: u64,
    /// Why.
    pub reason: RetireReason,
    /// The key.
    pub id: KeyId,
    /// Its name.
    pub name: String,
    /// Its hint.
    pub hint: String,
    /// The replacement made from it, if any.
    pub replaced_by: Option<KeyId>,
}

/// The account's keys that retirements revoked, newest retirement first, at most `limit`.
pub fn retired_keys_of(conn: &Db<'_>, account_id: u64, limit: u32) -> Result<Vec<RetiredKey>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.kid, r.retired_at, r.reason, k.id, k.name, k.hint, k.rotated_to \
         FROM api_keys k JOIN retired_kids r ON r.kid = k.kid \
         WHERE k.account_id = ?1 AND k.revoke_reason = ?2 \
         ORDER BY r.retired_at DESC, r.kid, k.created_at DESC, k.id LIMIT ?3",
    )?;
    let bad = |i: usize, what: &str| crate::store::db::Error::column(i, what.to_owned());
    let rows = stmt.query_map(params![to_i64(account_id), REVOKE_REASON, limit], |r| {
        let reason: String = r.get(2)?;
        let id: String = r.get(3)?;
        let to: Option<String> = r.get(6)?;
        Ok(RetiredKey {
            kid: r.get(0)?,
            retired_at: to_u64(r.get(1)?)?,
            reason: RetireReason::from_name(&reason).ok_or_else(|| bad(2, "reason"))?,
            id: KeyId::parse_hex(&id).ok_or_else(|| bad(3, "key id"))?,
            name: r.get(4)?,
            hint: r.get(5)?,
            replaced_by: to
                .map(|t| KeyId::parse_hex(&t).ok_or_else(|| bad(6, "key id")))
                .transpose()?,
        })
    })?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// The `revoke_reason` of a key its kid's retirement revoked.
pub const REVOKE_REASON: &str = "signing_key_retired";
