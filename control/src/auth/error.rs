//! Why sign-in or `init`'s bootstrap refused: [`SignInError`] and [`BootstrapError`], one
//! variant per refusal, each with its one conversion to the API's answer.

use axum::http::{HeaderValue, StatusCode, header};

use super::caller::cross_site;
use super::limit::Refusal;
use super::reauth::wrong_password;
use crate::error::AppError;
use crate::store::StoreError;

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignInError {
    /// A browser sent it from another site (login CSRF).
    #[error("cross-site sign-in")]
    CrossSite,
    /// The email is not an address of at most 254 bytes.
    #[error("email must be an address of at most 254 bytes")]
    InvalidEmail,
    /// The password is empty or over 1024 bytes.
    #[error("password must be 1 to 1024 bytes")]
    InvalidPassword,
    /// Every place to hash a password is taken, or the budgets could not be reached in time.
    #[error("too many sign-ins at once")]
    Busy,
    /// A failure budget this attempt draws on is spent.
    #[error("too many failed sign-ins; retry after {retry_after} s")]
    Locked {
        /// Seconds until the budget allows another attempt.
        retry_after: u64,
    },
    /// No such user, or the password does not match (one answer for both).
    #[error("the email or password is wrong")]
    WrongCredentials,
}

impl From<Refusal> for SignInError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Locked { retry_after } => Self::Locked { retry_after },
            Refusal::Busy => Self::Busy,
        }
    }
}

impl From<SignInError> for AppError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::CrossSite => cross_site(),
            SignInError::InvalidEmail => {
                AppError::validation("email must be an address of at most 254 bytes")
                    .with_field("field", "email")
            }
            SignInError::InvalidPassword => {
                AppError::validation("password must be 1 to 1024 bytes")
                    .with_field("field", "password")
            }
            SignInError::Busy => AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "sign_in_busy",
                "Too many sign-ins at once",
            )
            .with_detail("try again in a moment")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            SignInError::Locked { retry_after } => AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sign_in_attempts",
                "Too many failed sign-ins",
            )
            .with_detail("wait before trying again")
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))),
            SignInError::WrongCredentials => {
                AppError::unauthenticated().with_detail("the email or password is wrong")
            }
        }
    }
}

/// Why `init`'s bootstrap (the first account, user and token) refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The account name holds a control, format or invisible character (`crate::text`).
    #[error("{}", .0.describe("the account name"))]
    InvalidAccountName(crate::text::Refused),
    /// The email is not an address.
    #[error("invalid email")]
    InvalidEmail,
    /// The password is shorter than 12 characters or over 1024 bytes.
    #[error("password must be at least 12 characters and at most 1024 bytes")]
    InvalidPassword,
    /// A user with this email exists.
    #[error("a user with this email exists")]
    EmailTaken,
    /// Hashing the password or generating the token failed.
    #[error("generating the credentials")]
    Credentials(#[source] AppError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<BootstrapError> for AppError {
    fn from(e: BootstrapError) -> Self {
        match e {
            BootstrapError::InvalidAccountName(r) => {
                AppError::validation(r.describe("the account name"))
            }
            BootstrapError::InvalidEmail => AppError::validation("invalid email"),
            BootstrapError::InvalidPassword => AppError::validation(
                "password must be at least 12 characters and at most 1024 bytes",
            ),
            BootstrapError::EmailTaken => AppError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "A user with this email exists",
            ),
            BootstrapError::Credentials(e) => e,
            BootstrapError::Store(e) => e.into(),
        }
    }
}

/// Why [`super::reauth::check_password`] refused a signed-in user's password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordCheckError {
    /// The password is not the user's.
    #[error("the password is not correct")]
    Wrong,
    /// The user is gone, or not of the caller's account.
    #[error("no such signed-in user")]
    Gone,
    /// No hashing slot, or a spent failure budget: answered as sign-in answers it.
    #[error(transparent)]
    Refused(#[from] SignInError),
    /// Hashing failed.
    #[error("checking the password")]
    Credentials(#[source] AppError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<PasswordCheckError> for AppError {
    fn from(e: PasswordCheckError) -> Self {
        match e {
            PasswordCheckError::Wrong => wrong_password(),
            PasswordCheckError::Gone => AppError::unauthenticated(),
            PasswordCheckError::Refused(e) => e.into(),
            PasswordCheckError::Credentials(e) => e,
            PasswordCheckError::Store(e) => e.into(),
        }
    }
}

impl From<PasswordCheckError> for PasswordChangeError {
    fn from(e: PasswordCheckError) -> Self {
        match e {
            PasswordCheckError::Wrong => Self::WrongPassword,
            PasswordCheckError::Gone => Self::Ended,
            PasswordCheckError::Refused(e) => Self::Refused(e),
            PasswordCheckError::Credentials(e) => Self::Credentials(e),
            PasswordCheckError::Store(e) => Self::Store(e),
        }
    }
}

/// Why a password change was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordChangeError {
    /// The caller used a management token: only the signed-in user changes their password.
    #[error("only a signed-in user can change their password")]
    SessionRequired,
    /// The current password is empty or over 1024 bytes.
    #[error("current_password must be 1 to 1024 bytes")]
    InvalidCurrent,
    /// The new password breaks the password rule.
    #[error("new_password must be at least 12 characters and at most 1024 bytes")]
    InvalidNew,
    /// The new password is the current one.
    #[error("new_password must differ from the current one")]
    Unchanged,
    /// No hashing slot, or a spent failure budget: answered as sign-in answers it.
    #[error(transparent)]
    Refused(#[from] SignInError),
    /// The current password is wrong (or was changed meanwhile).
    #[error("the current password is wrong")]
    WrongPassword,
    /// The session that asked was ended while the request was on its way.
    #[error("this session has ended")]
    Ended,
    /// Hashing failed.
    #[error("hashing the password")]
    Credentials(#[source] AppError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

impl From<PasswordChangeError> for AppError {
    fn from(e: PasswordChangeError) -> Self {
        match e {
            PasswordChangeError::SessionRequired => AppError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "Sign in to the dashboard to change your password",
            )
            .with_detail(e.to_string()),
            PasswordChangeError::InvalidCurrent => {
                AppError::validation(e.to_string()).with_field("field", "current_password")
            }
            PasswordChangeError::InvalidNew | PasswordChangeError::Unchanged => {
                AppError::validation(e.to_string()).with_field("field", "new_password")
            }
            PasswordChangeError::Refused(e) => e.into(),
            PasswordChangeError::WrongPassword => wrong_password(),
            PasswordChangeError::Ended => AppError::unauthenticated(),
            PasswordChangeError::Credentials(e) => e,
            PasswordChangeError::Store(e) => e.into(),
        }
    }
}

/// Why `reset-password` refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetPasswordError {
    /// The email is not an address.
    #[error("invalid email")]
    InvalidEmail,
    /// The new password breaks the password rule.
    #[error("the password must be at least 12 characters and at most 1024 bytes")]
    InvalidPassword,
    /// No user has this email.
    #[error("no user has this email")]
    UnknownUser,
    /// Hashing the password failed.
    #[error("hashing the password")]
    Credentials(#[source] AppError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}
