//! Accounts (tenants), their plans and users (sessions: `sessions`; management tokens: `tokens`).
//!
//! Secrets that authenticate (session ids, management tokens) are stored as SHA-256 hashes
//! only: they are 256-bit random values, so a fast hash is enough and lookup is one index probe.

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;

use super::Result;
use super::{to_i64, to_u64};

/// An account's plan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Plan {
    /// Most keys that may be active at once.
    pub max_active_keys: u32,
    /// Rate limit (requests per minute) a key gets when the caller names none.
    pub default_rate_limit: u32,
    /// Highest rate limit a key may have.
    pub max_rate_limit: u32,
}

/// An account as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountInfo {
    /// The account's id.
    #[schema(minimum = 1)]
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its plan's id (`standard`).
    pub plan_id: String,
    /// Its plan's limits.
    pub plan: Plan,
    /// When it was created, Unix seconds.
    pub created_at: u64,
}

/// The account `account_id`.
pub fn account(conn: &Db<'_>, account_id: u64) -> Result<AccountInfo> {
    Ok(conn.query_row(
        "SELECT a.name, a.plan_id, a.created_at, \
                p.max_active_keys, p.default_rate_limit, p.max_rate_limit \
         FROM accounts a JOIN plans p ON p.id = a.plan_id WHERE a.id = ?1",
        [to_i64(account_id)],
        |r| {
            Ok(AccountInfo {
                id: account_id,
                name: r.get(0)?,
                plan_id: r.get(1)?,
                created_at: to_u64(r.get(2)?)?,
                plan: Plan {
                    max_active_keys: r.get(3)?,
                    default_rate_limit: r.get(4)?,
                    max_rate_limit: r.get(5)?,
                },
            })
        },
    )?)
}

/// The plan every new account gets.
pub const DEFAULT_PLAN: &str = "standard";

/// Creates an account.
pub fn create_account(tx: &Db<'_>, name: &str, now: u64) -> Result<u64> {
    Ok(tx.query_row(
        "INSERT INTO accounts (name, plan_id, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        params![name, DEFAULT_PLAN, to_i64(now)],
        |r| to_u64(r.get(0)?),
    )?)
}

/// The plan of `account_id`.
pub fn plan(conn: &Db<'_>, account_id: u64) -> Result<Plan> {
    Ok(conn.query_row(
        "SELECT p.max_active_keys, p.default_rate_limit, p.max_rate_limit \
         FROM accounts a JOIN plans p ON p.id = a.plan_id WHERE a.id = ?1",
        [to_i64(account_id)],
        |r| {
            Ok(Plan {
                max_active_keys: r.get(0)?,
                default_rate_limit: r.get(1)?,
                max_rate_limit: r.get(2)?,
            })
        },
    )?)
}

/// Creates a user; `None` if the email is taken.
pub fn create_user(
    tx: &Db<'_>,
    account_id: u64,
    email: &str,
    password_hash: &str,
    now: u64,
) -> Result<Option<u64>> {
    Ok(tx
        .query_row(
            "INSERT INTO users (account_id, email, password_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (email) DO NOTHING RETURNING id",
            params![to_i64(account_id), email, password_hash, to_i64(now)],
            |r| to_u64(r.get(0)?),
        )
        .optional()?)
}

/// A user as sign-in needs it. Its `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct UserLogin {
    /// User id.
    pub id: u64,
    /// Their account.
    pub account_id: u64,
    /// PHC-format argon2id hash.
    pub password_hash: String,
}

impl std::fmt::Debug for UserLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLogin")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// Looks a user up by email (case-insensitive).
pub fn user_by_email(conn: &Db<'_>, email: &str) -> Result<Option<UserLogin>> {
    Ok(conn
        .query_row(
            "SELECT id, account_id, password_hash FROM users WHERE email = ?1",
            [email],
            |r| {
                Ok(UserLogin {
                    id: to_u64(r.get(0)?)?,
                    account_id: to_u64(r.get(1)?)?,
                    password_hash: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// The user `user_id` and their email, if they exist.
pub fn user_by_id(conn: &Db<'_>, user_id: u64) -> Result<Option<(String, UserLogin)>> {
    Ok(conn
        .query_row(
            "SELECT email, account_id, password_hash FROM users WHERE id = ?1",
            [to_i64(user_id)],
            |r| {
                Ok((
                    r.get(0)?,
                    UserLogin {
                        id: user_id,
                        account_id: to_u64(r.get(1)?)?,
                        password_hash: r.get(2)?,
                    },
                ))
            },
        )
        .optional()?)
}

/// Replaces a user's password hash; with `expected`, only if it is still that one. Whether it
/// changed.
pub fn set_password_hash(
    tx: &Db<'_>,
    user_id: u64,
    password_hash: &str,
    expected: Option<&str>,
) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1 AND (CAST(?3 AS TEXT) IS NULL OR password_hash = ?3)",
        params![to_i64(user_id), password_hash, expected],
    )? == 1)
}
