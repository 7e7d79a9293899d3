//! Asking a signed-in user for their password again before something that could entrench an
//! attacker who holds only the session (creating a management token). The check runs under
//! the same defences as sign-in: the bounded hasher, and the attempt budgets of the user's
//! email, counted before the hash and refunded on success; a wrong password spends them as a
//! failed sign-in does, and is recorded (`user.password_check_failed`).

use axum::http::StatusCode;
use axum::http::request::Parts;

use super::hasher::{Hasher, MAX_PASSWORD_BYTES};
use super::limit::Outcome;
use crate::client_addr;
use crate::error::{AppError, Result};
use crate::events::Event;
use crate::state::AppState;
use crate::store::accounts;
use crate::store::audit::{self, Actor};

/// 403 `password_incorrect`. Not a 401: the session stays valid (and the dashboard would take a
/// 401 for a signed-out session).
fn incorrect() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "password_incorrect",
        "The password is not correct",
    )
    .with_detail("enter your current sign-in password to confirm")
}

/// Checks `password` against the signed-in user `user_id` of `account_id`; `Ok(())` if it is
/// theirs. Refusals: 422 (empty or over 1024 bytes), 403 `password_incorrect`, 429
/// `too_many_sign_in_attempts` / `sign_in_busy` as at sign-in.
pub async fn confirm_password(
    state: &AppState,
    parts: &Parts,
    account_id: u64,
    user_id: u64,
    password: String,
    purpose: &'static str,
) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation("password must be 1 to 1024 bytes")
            .with_field("field", "password"));
    }
    let (email, user) = state
        .store
        .read(move |c| accounts::user_by_id(c, user_id))
        .await?
        .filter(|(_, user)| user.account_id == account_id)
        .ok_or_else(AppError::unauthenticated)?;
    let now = state.clock.now();
    let guard = &state.sign_in;
    let client_ip = client_addr::client_ip(parts, &state.settings.proxies);
    let device = guard.device(&parts.headers, &email, now);
    let (ticket, reservation) = guard.admit(&email, client_ip, device, now).await?;
    let matched = Hasher::check(ticket, password, Some(user.password_hash)).await;
    let now = state.clock.now();
    let right = matches!(matched, Ok(true));
    let outcome = if right {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    reservation.settle(outcome, now).await;
    matched?;
    if right {
        return Ok(());
    }
    let actor = Actor {
        actor: format!("user:{user_id}"),
        source: client_ip.map(|ip| ip.to_string()),
    };
    state
        .store
        .write(move |tx| {
            audit::record(
                tx,
                now,
                Some(account_id),
                &actor,
                &Event::PasswordCheckFailed { user_id, purpose },
            )
        })
        .await?;
    Err(incorrect())
}
