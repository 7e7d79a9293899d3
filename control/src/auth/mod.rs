//! Who is calling: management tokens for scripts, email + password sign-in and sessions for the
//! dashboard, CSRF protection for cookie-authenticated writes, and brute-force limiting.
//!
//! Management tokens are `lnxm_` + 64 hex digits (256 random bits). They are not API keys: the
//! edge accepts only `lnx_` keys, and a token never signs in to the dashboard. Both tokens and
//! session ids are stored as SHA-256 hashes only.
//!
//! A session lives in a `__Host-lynxo_session` cookie (Secure, HttpOnly, SameSite=Strict, Path=/).
//! Because a browser sends that cookie by itself, every state-changing request that carries it
//! must also prove it comes from the dashboard's own origin (`Sec-Fetch-Site: same-origin`, or an
//! `Origin` equal to the configured public origin); anything else is 403. Bearer tokens are not
//! ambient credentials and need no such check.
//!
//! Sign-in is the one door an anonymous caller can make expensive, so it is guarded in order,
//! cheapest first: the body's shape, a bounded number of password hashes at once ([`hasher`]),
//! attempt budgets counted before the hash ([`limit`]) and known-device cookies ([`device`]).
//! `docs/sign-in.md` gives the reasoning.
//!
//! - [`caller`]: who a request is ([`Caller`]): a management token or a session cookie, CSRF.
//! - [`grant`]: what a management token may do: the admin scope catalog, each route's access,
//!   the key grant.
//! - [`reauth`]: asking a signed-in user for their password again, under the sign-in budgets.
//! - [`password`]: the password rule, hashing, and `init`'s first account, user and token.
//! - [`session`]: sign-in (its defences, [`SignInGuard`]) and sign-out.
//! - [`sessions`]: the signed-in user's sessions (list, end one, end every other) and their
//!   purge; [`password`] also holds the password change and the operator's reset.
//! - [`SignInError`], [`BootstrapError`] (`error`): why sign-in or `init` refused, each turned
//!   into the API's answer in one place.

pub mod caller;
pub mod device;
mod error;
pub mod grant;
pub mod hasher;
pub mod limit;
pub mod password;
pub mod reauth;
pub mod session;
pub mod sessions;

pub use self::caller::{Caller, SignedIn, Via, cookie, same_origin, source};
pub use self::error::{
    BootstrapError, PasswordChangeError, PasswordCheckError, ResetPasswordError, SignInError,
};
pub use self::password::{
    Bootstrap, Reset, acceptable_password, bootstrap, change_password, hash_password,
    reset_password,
};
pub use self::session::{
    Client, DEVICE_FAILURES, EMAIL_FAILURES, PAIR_FAILURES, SessionView, SignIn, SignInGuard,
    create_session, delete_session,
};
use crate::error::{AppError, Result};

/// Prefix of management tokens. Never `lnx_`: the edge must not mistake one for an API key.
pub const TOKEN_PREFIX: &str = "lnxm_";
/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-lynxo_session";

/// 32 random bytes from the operating system.
pub fn random_bytes() -> Result<[u8; 32]> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AppError::internal(format!("getrandom: {e}")))?;
    Ok(bytes)
}
