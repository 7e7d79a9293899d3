//! Management tokens: their hashes (never the tokens), scopes, key grant, expiry and use, and
//! the plan's limits on them.

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;
use shared::scope::ScopeSet;

use super::{Result, to_i64, to_u64};
use crate::auth::grant::AdminScopes;
use crate::secret::HashedToken;

/// What the plan allows of management tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenPlan {
    /// Tokens that may work at once (unrevoked and unexpired).
    pub max_tokens: u32,
    /// Lifetime of a token whose creator names no expiry, seconds.
    pub default_ttl: u64,
    /// Longest lifetime, seconds; `null`: tokens may never expire.
    #[schema(required = true)]
    pub max_ttl: Option<u64>,
}

/// The token plan of `account_id`.
pub fn plan(conn: &Db<'_>, account_id: u64) -> Result<TokenPlan> {
    Ok(conn.query_row(
        "SELECT p.max_management_tokens, p.token_default_ttl, p.token_max_ttl \
         FROM accounts a JOIN plans p ON p.id = a.plan_id WHERE a.id = ?1",
        [to_i64(account_id)],
        |r| {
            Ok(TokenPlan {
                max_tokens: r.get(0)?,
                default_ttl: to_u64(r.get(1)?)?,
                max_ttl: r.get::<_, Option<i64>>(2)?.map(to_u64).transpose()?,
            })
        },
    )?)
}

/// A token to store.
#[derive(Debug)]
pub struct NewToken<'a> {
    /// Its account.
    pub account_id: u64,
    /// Display name.
    pub name: &'a str,
    /// SHA-256 of the token.
    pub hash: &'a HashedToken,
    /// `lnxm_…abcd`.
    pub hint: &'a str,
    /// What it may call.
    pub scopes: AdminScopes,
    /// The most the keys it manages may carry.
    pub key_grant: ScopeSet,
    /// When it stops working; `None`: never.
    pub expires_at: Option<u64>,
}

/// Stores a new token; returns its id.
pub fn create(tx: &Db<'_>, token: &NewToken<'_>, now: u64) -> Result<u64> {
    Ok(tx.query_row(
        "INSERT INTO management_tokens \
         (account_id, name, token_hash, hint, created_at, scopes, key_grant, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        params![
            to_i64(token.account_id),
            token.name,
            token.hash.as_bytes(),
            token.hint,
            to_i64(now),
            token.scopes.bits(),
            token.key_grant.bits(),
            token.expires_at.map(to_i64),
        ],
        |r| to_u64(r.get(0)?),
    )?)
}

/// Tokens of `account_id` that work at `now`: unrevoked and unexpired.
pub fn count_working(conn: &Db<'_>, account_id: u64, now: u64) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT count(*) FROM management_tokens WHERE account_id = ?1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ?2)",
        params![to_i64(account_id), to_i64(now)],
        |r| r.get(0),
    )?)
}

/// An unrevoked token, as authentication needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOwner {
    /// Token id.
    pub token_id: u64,
    /// The account it acts for.
    pub account_id: u64,
    /// What it may call.
    pub scopes: AdminScopes,
    /// The most the keys it manages may carry.
    pub key_grant: ScopeSet,
    /// When it stops working.
    pub expires_at: Option<u64>,
    /// When it was last used, if ever.
    pub last_used_at: Option<u64>,
}

fn bits<T>(value: u32, read: fn(u32) -> Option<T>) -> crate::store::db::Result<T> {
    read(value)
        .ok_or_else(|| crate::store::db::Error::column(0, format!("unknown scope bits {value:#x}")))
}

/// The unrevoked token with this hash (expired ones included: the caller says why it refuses).
pub fn by_hash(conn: &Db<'_>, token_hash: &HashedToken) -> Result<Option<TokenOwner>> {
    Ok(conn
        .query_row(
            "SELECT id, account_id, scopes, key_grant, expires_at, last_used_at \
             FROM management_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
            [token_hash.as_bytes()],
            |r| {
                Ok(TokenOwner {
                    token_id: to_u64(r.get(0)?)?,
                    account_id: to_u64(r.get(1)?)?,
                    scopes: bits(r.get(2)?, AdminScopes::from_bits)?,
                    key_grant: bits(r.get(3)?, ScopeSet::from_bits)?,
                    expires_at: r.get::<_, Option<i64>>(4)?.map(to_u64).transpose()?,
                    last_used_at: r.get::<_, Option<i64>>(5)?.map(to_u64).transpose()?,
                })
            },
        )
        .optional()?)
}

/// Records a use at `now`: `last_used_at` moves if it is `touch_every` seconds old or more;
/// returns whether the use is due an audit event (none for `audit_every` seconds before). Run
/// in the writer's transaction, so concurrent uses record once.
pub fn record_use(
    tx: &Db<'_>,
    token_id: u64,
    now: u64,
    touch_every: u64,
    audit_every: u64,
) -> Result<bool> {
    let (last_used, audited): (Option<i64>, Option<i64>) = tx.query_row(
        "SELECT last_used_at, used_audited_at FROM management_tokens WHERE id = ?1",
        [to_i64(token_id)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let due = |at: Option<i64>, every: u64| {
        at.is_none_or(|t| now >= u64::try_from(t).unwrap_or(0).saturating_add(every))
    };
    if due(last_used, touch_every) {
        tx.execute(
            "UPDATE management_tokens SET last_used_at = ?2 WHERE id = ?1",
            params![to_i64(token_id), to_i64(now)],
        )?;
    }
    let audit = due(audited, audit_every);
    if audit {
        tx.execute(
            "UPDATE management_tokens SET used_audited_at = ?2 WHERE id = ?1",
            params![to_i64(token_id), to_i64(now)],
        )?;
    }
    Ok(audit)
}

/// A management token's record (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct TokenRow {
    /// Token id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `lnxm_…abcd`.
    pub hint: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, if ever used (recorded at most once a minute).
    #[schema(required = true)]
    pub last_used_at: Option<u64>,
    /// Unix seconds, if revoked.
    #[schema(required = true)]
    pub revoked_at: Option<u64>,
    /// Unix seconds when it stops working; `null`: never.
    #[schema(required = true)]
    pub expires_at: Option<u64>,
    /// What it may call (admin scopes).
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<&'static str>,
    /// The most the keys it manages may carry: `read_only`, `read_write`, `full_access` or
    /// `custom` (then `key_grant_scopes` lists them).
    pub key_grant: &'static str,
    /// The API scopes of the key grant (`*`: Full Access).
    #[schema(value_type = Vec<String>)]
    pub key_grant_scopes: Vec<&'static str>,
    /// Made before tokens had scopes: every admin scope, a Full Access grant, and the plan's
    /// default lifetime from the upgrade.
    pub legacy: bool,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

/// A token row read with the time it is read at (for `status`).
fn token_row(r: &crate::store::db::Row<'_>, now: u64) -> crate::store::db::Result<TokenRow> {
    let expires_at = r.get::<_, Option<i64>>(6)?.map(to_u64).transpose()?;
    let revoked_at = r.get::<_, Option<i64>>(5)?.map(to_u64).transpose()?;
    let scopes = bits(r.get(7)?, AdminScopes::from_bits)?;
    let key_grant = bits(r.get(8)?, ScopeSet::from_bits)?;
    let status = match (revoked_at, expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(t)) if t <= now => "expired",
        _ => "active",
    };
    Ok(TokenRow {
        id: to_u64(r.get(0)?)?,
        name: r.get(1)?,
        hint: r.get(2)?,
        created_at: to_u64(r.get(3)?)?,
        last_used_at: r.get::<_, Option<i64>>(4)?.map(to_u64).transpose()?,
        revoked_at,
        expires_at,
        scopes: scopes.names(),
        key_grant: crate::auth::grant::grant_name(key_grant),
        key_grant_scopes: crate::keys::scope_names(key_grant),
        legacy: r.get(9)?,
        status,
    })
}

const COLUMNS: &str = "id, name, hint, created_at, last_used_at, revoked_at, expires_at, scopes, \
                       key_grant, legacy";

/// A page of the account's tokens, newest first: those with an id below `before`, at most
/// `limit`.
pub fn list(
    conn: &Db<'_>,
    account_id: u64,
    before: Option<u64>,
    limit: u32,
    now: u64,
) -> Result<Vec<TokenRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM management_tokens WHERE account_id = ?1 AND id < ?2 \
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let before = before.map_or(i64::MAX, to_i64);
    let rows = stmt.query_map(params![to_i64(account_id), before, limit], |r| {
        token_row(r, now)
    })?;
    Ok(rows.collect::<crate::store::db::Result<_>>()?)
}

/// One of the account's tokens; another account's is `None`.
pub fn get(conn: &Db<'_>, account_id: u64, id: u64, now: u64) -> Result<Option<TokenRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM management_tokens WHERE account_id = ?1 AND id = ?2"),
            params![to_i64(account_id), to_i64(id)],
            |r| token_row(r, now),
        )
        .optional()?)
}

/// Revokes a token (no-op if already revoked).
pub fn revoke(tx: &Db<'_>, id: u64, now: u64) -> Result<()> {
    tx.execute(
        "UPDATE management_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![to_i64(id), to_i64(now)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::grant::AdminScopes;

    /// Tokens made before schema 7 keep working as legacy tokens: every admin scope of the
    /// catalog, a Full Access grant, and the plan's default lifetime from the upgrade; revoked
    /// ones stay revoked. The migration's literal defaults are the catalog's bits.
    #[test]
    fn tokens_from_before_scopes_become_legacy_tokens_that_expire() {
        assert_eq!(AdminScopes::ALL.bits(), 127, "0007's default for `scopes`");
        assert_eq!(
            ScopeSet::FULL_ACCESS.bits(),
            2_147_483_648,
            "0007's `key_grant`"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let schema_5 = 5;
        let live = HashedToken::of("lnxm_live");
        let gone = HashedToken::of("lnxm_gone");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::super::MIGRATIONS[..schema_5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute(
                "INSERT INTO accounts (id, name, plan_id, created_at) VALUES (1, 'a', 'standard', 1)",
                [],
            )
            .unwrap();
            for (id, hash, revoked) in [(1, &live, None), (2, &gone, Some(5_i64))] {
                conn.execute(
                    "INSERT INTO management_tokens (id, account_id, name, token_hash, hint, \
                     created_at, last_used_at, revoked_at) VALUES (?1, 1, 'old', ?2, 'h', 1, 3, ?3)",
                    rusqlite::params![id, hash.as_bytes(), revoked],
                )
                .unwrap();
            }
        }
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        drop(super::super::Store::open(&path, super::super::test_audit_keyring()).unwrap());
        let sqlite = rusqlite::Connection::open(&path).unwrap();
        let conn = Db::Sqlite(&sqlite);
        let owner = by_hash(&conn, &live).unwrap().unwrap();
        assert_eq!(owner.scopes, AdminScopes::ALL);
        assert_eq!(owner.key_grant, ScopeSet::FULL_ACCESS);
        let expires = owner.expires_at.unwrap();
        let month = 30 * 86_400;
        assert!(
            (before + month..=before + month + 60).contains(&expires),
            "{expires}"
        );
        let row = get(&conn, 1, 1, before).unwrap().unwrap();
        assert!(row.legacy);
        assert_eq!(row.status, "active");
        assert_eq!(row.key_grant, "full_access");
        assert!(by_hash(&conn, &gone).unwrap().is_none());
        let revoked = get(&conn, 1, 2, before).unwrap().unwrap();
        assert_eq!((revoked.status, revoked.expires_at), ("revoked", None));
        let plan = plan(&conn, 1).unwrap();
        assert_eq!(
            plan,
            TokenPlan {
                max_tokens: 25,
                default_ttl: month,
                max_ttl: Some(365 * 86_400),
            }
        );
    }
}
