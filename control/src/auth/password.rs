//! Passwords: argon2id hashing, and `init`'s first account, user and management token.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Version};

use super::error::BootstrapError;
use super::grant::AdminScopes;
use super::hasher::MAX_PASSWORD_BYTES;
use super::random_bytes;
use crate::error::{AppError, Result};
use crate::events::Event;
use crate::secret::PlainToken;
use crate::state::Settings;
use crate::store::audit::{self, Actor};
use crate::store::{Store, accounts, tokens};
use shared::scope::ScopeSet;

fn argon2(settings: &Settings) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, settings.argon2.clone())
}

/// Hashes a password with argon2id (PHC string). Blocking: call from `spawn_blocking`.
pub fn hash_password(password: &str, settings: &Settings) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes()?[..16])
        .map_err(|e| AppError::internal(format!("salt: {e}")))?;
    argon2(settings)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(format!("argon2: {e}")))
}

/// What [`bootstrap`] created. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct Bootstrap {
    /// The new account.
    pub account_id: u64,
    /// Its first user.
    pub user_id: u64,
    /// A management token for it (shown once).
    pub token: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("account_id", &self.account_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Creates an account, its first user and a management token, in one transaction with their
/// audit events. Used by the `init` command and by tests.
pub fn bootstrap(
    store: &Store,
    settings: &Settings,
    account_name: &str,
    email: &str,
    password: &str,
    now: u64,
) -> Result<Bootstrap, BootstrapError> {
    crate::text::check(account_name).map_err(BootstrapError::InvalidAccountName)?;
    let email = normalize_email(email).ok_or(BootstrapError::InvalidEmail)?;
    if password.chars().count() < 12 || password.len() > MAX_PASSWORD_BYTES {
        return Err(BootstrapError::InvalidPassword);
    }
    let password_hash = hash_password(password, settings).map_err(BootstrapError::Credentials)?;
    let token = PlainToken::generate().map_err(BootstrapError::Credentials)?;
    let (token_hash, hint) = (token.hash(), token.hint());
    let cli = Actor {
        actor: "cli".into(),
        source: None,
    };
    let account_name = account_name.to_owned();
    store.write_blocking(move |tx| {
        let account_id = accounts::create_account(tx, &account_name, now)?;
        let user_id = accounts::create_user(tx, account_id, &email, &password_hash, now)?
            .ok_or(BootstrapError::EmailTaken)?;
        // The operator's first token: every admin scope, a Full Access grant, and the plan's
        // longest lifetime (`docs/security.md`); people sign in and make narrower ones.
        let plan = tokens::plan(tx, account_id)?;
        let expires_at = plan.max_ttl.map(|ttl| now.saturating_add(ttl));
        let token_id = tokens::create(
            tx,
            &tokens::NewToken {
                account_id,
                name: "initial",
                hash: &token_hash,
                hint: &hint,
                scopes: AdminScopes::ALL,
                key_grant: ScopeSet::FULL_ACCESS,
                expires_at,
            },
            now,
        )?;
        let grant = serde_json::json!({
            "scopes": AdminScopes::ALL.names(),
            "key_grant": "full_access",
            "expires_at": expires_at,
        });
        let events = [
            Event::AccountCreated {
                account_id,
                name: account_name,
            },
            Event::UserCreated { user_id, email },
            Event::TokenCreated {
                token_id,
                name: None,
                hint,
                grant: Some(grant),
            },
        ];
        for event in &events {
            audit::record(tx, now, Some(account_id), &cli, event)?;
        }
        Ok(Bootstrap {
            account_id,
            user_id,
            token: token.expose().to_owned(),
        })
    })
}

pub(super) fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && crate::text::check(email).is_ok())
    .then(|| email.to_lowercase())
}
