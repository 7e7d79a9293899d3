//! Asking a signed-in user for their password again: before something that could entrench an
//! attacker who holds only the session (creating a management token), and before changing the
//! password. [`check_password`] is the one check both use. It runs under the same defences as
//! sign-in: the bounded hasher, and the attempt budgets of the user's email, counted before the
//! hash; a wrong password spends them as a failed sign-in does, is recorded once (the event
//! names what the password was asked for) and is answered 403 `wrong_password`.

use axum::http::StatusCode;
use axum::http::request::Parts;

use super::error::PasswordCheckError;
use super::hasher::{Hasher, MAX_PASSWORD_BYTES};
use super::limit::{Outcome, Reservation};
use crate::client_addr;
use crate::error::{AppError, Result};
use crate::events::Event;
use crate::state::AppState;
use crate::store::accounts;
use crate::store::audit::{self, Actor};

/// 403 `wrong_password`: the one answer to a wrong password typed by a signed-in user. Not a
/// 401: the session stays valid (and the dashboard would take a 401 for a signed-out session).
pub fn wrong_password() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "wrong_password",
        "The password is not correct",
    )
    .with_detail(
        "enter your current sign-in password; failures count against the same limits as sign-in",
    )
}

/// What the password is asked for; it picks the audit event a wrong one is recorded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Changing the password: `user.password_change_failed`.
    ChangePassword,
    /// Creating a management token: `user.password_check_failed` with purpose
    /// `management_token.create`.
    CreateToken,
}

impl Purpose {
    fn failure_event(self, user_id: u64) -> Event {
        match self {
            Self::ChangePassword => Event::PasswordChangeFailed { user_id },
            Self::CreateToken => Event::PasswordCheckFailed {
                user_id,
                purpose: "management_token.create",
            },
        }
    }
}

/// A password that matched: the attempt it spent, still reserved, and the hash it matched.
pub struct Checked {
    /// Settle it when the guarded action is done (`Succeeded`, or `Abandoned` if it was not);
    /// dropped unsettled, it counts as a failure.
    pub reservation: Reservation,
    /// The password hash the password matched (for a compare-and-set on it).
    pub password_hash: String,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").finish_non_exhaustive()
    }
}

/// Checks `password` (1 to 1024 bytes: callers refuse other lengths under their own field
/// name) against the signed-in user `user_id` of `account_id`, acting as `actor`. A wrong one
/// settles its attempt as failed, records `purpose`'s failure event and is
/// [`PasswordCheckError::Wrong`]; a user who is gone, or not of this account, is
/// [`PasswordCheckError::Gone`].
pub async fn check_password(
    state: &AppState,
    parts: &Parts,
    account_id: u64,
    user_id: u64,
    actor: &Actor,
    password: String,
    purpose: Purpose,
) -> Result<Checked, PasswordCheckError> {
    let (email, user) = state
        .store
        .read(move |c| accounts::user_by_id(c, user_id))
        .await?
        .filter(|(_, user)| user.account_id == account_id)
        .ok_or(PasswordCheckError::Gone)?;
    let now = state.clock.now();
    let guard = &state.sign_in;
    let client_ip = client_addr::client_ip(parts, &state.settings.proxies);
    let device = guard.device(&parts.headers, &email, now);
    // Counted before the hash; a client that hangs up mid-hash drops its reservation, which
    // counts as a failure.
    let (ticket, reservation) = guard.admit(&email, client_ip, device, now).await?;
    let password_hash = user.password_hash;
    let matched = Hasher::check(ticket, password, Some(password_hash.clone())).await;
    let now = state.clock.now();
    match matched {
        Ok(true) => Ok(Checked {
            reservation,
            password_hash,
        }),
        Ok(false) => {
            reservation.settle(Outcome::Failed, now).await;
            let (actor, event) = (actor.clone(), purpose.failure_event(user_id));
            state
                .store
                .write(move |tx| audit::record(tx, now, Some(account_id), &actor, &event))
                .await?;
            Err(PasswordCheckError::Wrong)
        }
        Err(e) => {
            reservation.settle(Outcome::Failed, now).await;
            Err(PasswordCheckError::Credentials(e))
        }
    }
}

/// [`check_password`] for creating a management token, settled at once. Refusals: 422 (empty
/// or over 1024 bytes), 403 `wrong_password`, 429 `too_many_sign_in_attempts` / `sign_in_busy`
/// as at sign-in.
pub async fn confirm_password(
    state: &AppState,
    parts: &Parts,
    account_id: u64,
    user_id: u64,
    actor: &Actor,
    password: String,
) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation("password must be 1 to 1024 bytes")
            .with_field("field", "password"));
    }
    let checked = check_password(
        state,
        parts,
        account_id,
        user_id,
        actor,
        password,
        Purpose::CreateToken,
    )
    .await?;
    checked
        .reservation
        .settle(Outcome::Succeeded, state.clock.now())
        .await;
    Ok(())
}
