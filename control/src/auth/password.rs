//! Passwords: argon2id hashing, and `init`'s first account, user and management token.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Version};

use axum::extract::State;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::error::{BootstrapError, PasswordChangeError, ResetPasswordError};
use super::grant::AdminScopes;
use super::hasher::MAX_PASSWORD_BYTES;
use super::limit::Outcome;
use super::random_bytes;
use super::reauth::{Checked, Purpose, check_password};
use super::sessions::cli_actor;
use crate::error::{AppError, Json, Result};
use crate::events::Event;
use crate::secret::PlainToken;
use crate::state::{AppState, Settings};
use crate::store::{Store, accounts, audit, sessions, tokens};
use shared::scope::ScopeSet;

/// Fewest characters a new password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The rule every password set meets (`init`, a change, a reset): at least
/// [`MIN_PASSWORD_CHARS`] characters and at most [`MAX_PASSWORD_BYTES`] bytes.
pub fn acceptable_password(password: &str) -> bool {
    password.chars().count() >= MIN_PASSWORD_CHARS && password.len() <= MAX_PASSWORD_BYTES
}

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
    if !acceptable_password(password) {
        return Err(BootstrapError::InvalidPassword);
    }
    let password_hash = hash_password(password, settings).map_err(BootstrapError::Credentials)?;
    let token = PlainToken::generate().map_err(BootstrapError::Credentials)?;
    let (token_hash, hint) = (token.hash(), token.hint());
    let cli = cli_actor();
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

/// Body of `POST /v1/user/password`. Its `Debug` shows neither password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password the user signs in with now, 1 to 1024 bytes.
    #[schema(min_length = 1)]
    pub current_password: String,
    /// The new password: at least 12 characters, at most 1024 bytes, not the current one.
    #[schema(min_length = 12)]
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePassword").finish_non_exhaustive()
    }
}

/// What a password change did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    /// The user's other sessions it ended, oldest first (the one that asked stays signed in).
    pub sessions_ended: Vec<u64>,
}

/// `POST /v1/user/password`: the signed-in user changes their password, given the current one;
/// every other session of theirs ends.
#[utoipa::path(
    post,
    path = "/v1/user/password",
    summary = "Change your password (dashboard session only)",
    request_body = crate::auth::password::ChangePassword,
    responses(
        (status = 200, description = "Changed; every other session of yours has ended.", body = crate::auth::password::PasswordChanged),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        (status = 403, description = "`wrong_password`: the current password is wrong (it counts against the sign-in limits); `session_required`: called with a management token; `cross_site_request`.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_sign_in_attempts` or `sign_in_busy`, as for sign-in; Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    parts: Parts,
    Json(body): Json<ChangePassword>,
) -> Result<Json<PasswordChanged>> {
    Ok(Json(change(&state, caller, &parts, body).await?))
}

async fn change(
    state: &AppState,
    caller: Caller,
    parts: &Parts,
    body: ChangePassword,
) -> Result<PasswordChanged, PasswordChangeError> {
    let me = caller.session.ok_or(PasswordChangeError::SessionRequired)?;
    let ChangePassword {
        current_password: current,
        new_password: new,
    } = body;
    if current.is_empty() || current.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordChangeError::InvalidCurrent);
    }
    if !acceptable_password(&new) {
        return Err(PasswordChangeError::InvalidNew);
    }
    if new == current {
        return Err(PasswordChangeError::Unchanged);
    }
    let user_id = me.user_id;
    let (account, actor) = (caller.account_id, caller.actor);
    let Checked {
        reservation,
        password_hash: old_hash,
    } = check_password(
        state,
        parts,
        account,
        user_id,
        &actor,
        current,
        Purpose::ChangePassword,
    )
    .await?;
    let settings = std::sync::Arc::clone(&state.settings);
    let new_hash = tokio::task::spawn_blocking(move || hash_password(&new, &settings))
        .await
        .map_err(|e| PasswordChangeError::Credentials(AppError::internal(e)))?
        .map_err(PasswordChangeError::Credentials)?;
    let now = state.clock.now();
    let changed = state
        .store
        .write(move |tx| -> Result<_, PasswordChangeError> {
            // The session that asked may have been ended meanwhile: then it changes nothing.
            if !sessions::exists(tx, me.session_id)? {
                return Err(PasswordChangeError::Ended);
            }
            // Only over the hash that was checked: a change or reset that committed meanwhile
            // wins, and this one is refused as a wrong password.
            if !accounts::set_password_hash(tx, user_id, &new_hash, Some(&old_hash))? {
                return Err(PasswordChangeError::WrongPassword);
            }
            let ended = sessions::end_all_but(tx, user_id, Some(me.session_id))?;
            let event = Event::PasswordChanged {
                user_id,
                session_ids: ended.clone(),
            };
            audit::record(tx, now, Some(account), &actor, &event)?;
            Ok(ended)
        })
        .await;
    let outcome = if changed.is_ok() {
        Outcome::Succeeded
    } else {
        Outcome::Abandoned
    };
    reservation.settle(outcome, now).await;
    Ok(PasswordChanged {
        sessions_ended: changed?,
    })
}

/// What [`reset_password`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// Whose password.
    pub user_id: u64,
    /// The sessions it ended, oldest first.
    pub sessions_ended: Vec<u64>,
}

/// Sets a new password for the user with `email` and ends every session of theirs, with a
/// `user.password_reset` event by `cli`: the operator's way back in for a user who lost their
/// password (there is no email to send a reset link). Blocking: the CLI's.
pub fn reset_password(
    store: &Store,
    settings: &Settings,
    email: &str,
    password: &str,
    now: u64,
) -> Result<Reset, ResetPasswordError> {
    let email = normalize_email(email).ok_or(ResetPasswordError::InvalidEmail)?;
    if !acceptable_password(password) {
        return Err(ResetPasswordError::InvalidPassword);
    }
    let lookup = email.clone();
    let user = store
        .read_blocking(move |c| accounts::user_by_email(c, &lookup))?
        .ok_or(ResetPasswordError::UnknownUser)?;
    let hash = hash_password(password, settings).map_err(ResetPasswordError::Credentials)?;
    store.write_blocking(move |tx| {
        accounts::set_password_hash(tx, user.id, &hash, None)?;
        let ended = sessions::end_all_but(tx, user.id, None)?;
        let event = Event::PasswordReset {
            user_id: user.id,
            session_ids: ended.clone(),
        };
        audit::record(tx, now, Some(user.account_id), &cli_actor(), &event)?;
        Ok(Reset {
            user_id: user.id,
            sessions_ended: ended,
        })
    })
}
