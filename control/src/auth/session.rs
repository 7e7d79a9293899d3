//! Sign-in and sign-out: the sign-in defences ([`SignInGuard`]: budgets, the bounded hasher,
//! device cookies) and the session they open.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::mac::{Keyring, MacKey, Purpose};

use super::caller::{Caller, Via, same_origin, session_cookie};
use super::device::{self, DeviceId};
use super::error::SignInError;
use super::hasher::{Hasher, MAX_PASSWORD_BYTES, Ticket};
use super::limit::{Attempt, AttemptLedger, Budget, BudgetKey, MemoryLedger, Outcome, Reservation};
use super::password::normalize_email;
use super::{SESSION_COOKIE, random_bytes};
use crate::client_addr;
use crate::error::{AppError, Json, Result};
use crate::events::{Event, SessionsEndedBy};
use crate::secret::SessionId;
use crate::state::{AppState, Settings};
use crate::store::StoreError;
use crate::store::accounts;
use crate::store::audit::{self, Actor};
use crate::store::sessions::{self, NewSession};

/// Failures allowed per window to unknown browsers for one email, from all addresses together:
/// what a distributed guesser gets.
pub const EMAIL_FAILURES: u32 = 10;
/// Failures allowed per window to one address (IPv4, or IPv6 /64) for one email: fewer than
/// [`EMAIL_FAILURES`], so one address cannot spend the owner's share.
pub const PAIR_FAILURES: u32 = 5;
/// Failures allowed per window to one known device for one email.
pub const DEVICE_FAILURES: u32 = 5;

/// Who is trying, as the budgets see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A browser holding a device cookie issued for this email.
    Device(DeviceId),
    /// Anyone else, by address (an IPv4 address or an IPv6 /64; `None` if unknown).
    Address(Option<IpAddr>),
}

/// The sign-in defences: attempt budgets, the bounded hasher, and the keyed names that keep
/// emails out of both.
pub struct SignInGuard {
    /// Attempt budgets: in memory, or in the database replicas share (`limit::ledger_for`).
    pub ledger: Arc<dyn AttemptLedger>,
    /// The bounded password checker.
    pub hasher: Arc<Hasher>,
    /// The keyring's sign-in subkey: budget names, log tags and device cookies.
    mac: MacKey,
}

impl std::fmt::Debug for SignInGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInGuard")
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}

impl SignInGuard {
    /// Budgets in this process's memory, and a hasher bounded by `settings.sign_in_hashes`.
    pub fn new(keyring: &Keyring, settings: &Settings) -> Self {
        Self::with_ledger(keyring, settings, Arc::new(MemoryLedger::default()))
    }

    /// The same, with budgets kept in `ledger`.
    pub fn with_ledger(
        keyring: &Keyring,
        settings: &Settings,
        ledger: Arc<dyn AttemptLedger>,
    ) -> Self {
        Self {
            ledger,
            hasher: Arc::new(Hasher::new(settings.sign_in_hashes, &settings.argon2)),
            mac: keyring.active_mac(Purpose::SignIn).clone(),
        }
    }

    fn name(&self, kind: &[u8], email: &str, client: &[u8]) -> [u8; 32] {
        self.mac
            .sign_parts(&[kind, b"\0", email.as_bytes(), b"\0", client])
    }

    fn budget_key(&self, kind: &[u8], email: &str, client: &[u8]) -> BudgetKey {
        let mut key = [0_u8; 16];
        key.copy_from_slice(&self.name(kind, email, client)[..16]);
        BudgetKey(key)
    }

    /// A short keyed tag of an email, for logs: the same email always gets the same tag, and the
    /// tag does not give the email back.
    pub fn email_tag(&self, email: &str) -> String {
        hex::encode(&self.name(b"log", email, b"")[..6])
    }

    /// The attempt a sign-in to `email` by `client` makes.
    pub fn attempt(&self, email: &str, client: Client) -> Attempt {
        let email_key = self.budget_key(b"email", email, b"");
        let budgets = match client {
            Client::Device(device) => vec![Budget {
                key: self.budget_key(b"device", email, &device.0),
                limit: DEVICE_FAILURES,
                cleared_by_success: true,
            }],
            Client::Address(ip) => {
                let network = match ip.map(client_addr::network) {
                    Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
                    Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
                    None => b"unknown".to_vec(),
                };
                vec![
                    Budget {
                        key: email_key,
                        limit: EMAIL_FAILURES,
                        cleared_by_success: false,
                    },
                    Budget {
                        key: self.budget_key(b"pair", email, &network),
                        limit: PAIR_FAILURES,
                        cleared_by_success: true,
                    },
                ]
            }
        };
        Attempt {
            email: email_key,
            budgets,
        }
    }

    /// The known device a request's cookie names for `email`, if any.
    pub fn device(&self, headers: &HeaderMap, email: &str, now: u64) -> Option<DeviceId> {
        device::verify(&self.mac, device::from_headers(headers)?, email, now)
    }

    /// A password check for `email`: a hashing slot, then a guess from every budget the attempt
    /// draws on (the device's if the browser is a known `device`, else the email's and the
    /// address's). Both refuse at once rather than queue, and neither counts anything when it
    /// refuses. Sign-in and a password change (its current password) both pass here, so a
    /// stolen session guesses no faster than a stranger at the sign-in form.
    pub async fn admit(
        &self,
        email: &str,
        client_ip: Option<IpAddr>,
        device: Option<DeviceId>,
        now: u64,
    ) -> Result<(Ticket, Reservation), SignInError> {
        let client = device.map_or(Client::Address(client_ip), Client::Device);
        let ticket = self
            .hasher
            .admit(client_ip.map(client_addr::network))
            .ok_or(SignInError::Busy)?;
        let reservation =
            Reservation::take(Arc::clone(&self.ledger), self.attempt(email, client), now).await?;
        Ok((ticket, reservation))
    }

    /// The device cookie value to set after a successful sign-in to `email`.
    pub fn device_cookie(&self, email: &str, device: DeviceId, now: u64) -> String {
        device::issue(&self.mac, email, device, now)
    }
}

/// Sign-in body.
// Its `Debug` leaves the password out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The user's email: an address (`local@domain.tld`) of at most 254 bytes; anything else
    /// is 422 before any work.
    #[schema(max_length = 254, pattern = r"^[!-?A-~]+@[!-~]*\.[!-~]*$")]
    pub email: String,
    /// Their password, 1 to 1024 bytes.
    #[schema(min_length = 1)]
    pub password: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Sign-in answer (the session itself is in the cookie).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    /// The account the session acts for.
    pub account_id: u64,
    /// The signed-in user.
    pub user_id: u64,
    /// The session's id (as `GET /v1/sessions` lists it).
    pub session_id: u64,
    /// When the session ends whatever its use, Unix seconds; unused for the idle timeout, it
    /// ends earlier.
    pub expires_at: u64,
}

/// `POST /v1/sessions`: email + password sign-in; sets the session cookie (and the device
/// cookie that marks this browser as known for this email).
#[utoipa::path(
    post,
    path = "/v1/sessions",
    summary = "Sign in with email and password",
    request_body = crate::auth::session::SignIn,
    responses(
        (status = 200, description = "Signed in; the session is in a `__Host-lynxo_session` cookie, and `__Host-lynxo_device` marks this browser as known for this email (it then has a sign-in budget of its own).", body = crate::auth::session::SessionView, headers(("Set-Cookie" = String))),
        (status = 401, description = "Wrong email or password.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_sign_in_attempts`: a budget of failed sign-ins is spent (this address or device for this email, or unknown browsers for this email); `sign_in_busy`: every password-hashing slot is taken, try again in a moment. Both carry Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::JsonBodyRefused,
        crate::openapi::CrossSite,
    ),
    security(),
)]
pub async fn create_session(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(body): Json<SignIn>,
) -> Result<Response> {
    // Login CSRF: a cross-site form could sign the victim in to the attacker's account.
    let browser_sent =
        parts.headers.contains_key("sec-fetch-site") || parts.headers.contains_key(header::ORIGIN);
    if browser_sent && !same_origin(&parts.headers, &state.settings.public_origin) {
        return Err(SignInError::CrossSite.into());
    }
    // Shape first: what can never be a user costs nothing and is never a budget's name.
    let email = normalize_email(&body.email).ok_or(SignInError::InvalidEmail)?;
    if body.password.is_empty() || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(SignInError::InvalidPassword.into());
    }
    let now = state.clock.now();
    let guard = &state.sign_in;
    let client_ip = client_addr::client_ip(&parts, &state.settings.proxies);
    let device = guard.device(&parts.headers, &email, now);
    let (ticket, reservation) = guard
        .admit(&email, client_ip, device, now)
        .await
        .inspect_err(|refused| {
            state
                .metrics
                .sign_in_failed(if matches!(refused, SignInError::Locked { .. }) {
                    "locked"
                } else {
                    "busy"
                });
        })?;
    let lookup = email.clone();
    let user = match state
        .store
        .read(move |c| accounts::user_by_email(c, &lookup))
        .await
    {
        Ok(user) => user,
        Err(e) => {
            reservation.settle(Outcome::Abandoned, now).await;
            return Err(e.into());
        }
    };
    // The check, its settlement, its log line and its audit row run in a task of their own,
    // so a client that hangs up mid-hash is counted and recorded all the same. The answer is
    // sent before the audit row is written: a known email answers as fast as an unknown one,
    // which is checked against a dummy hash of the same cost and leaves no row (it would be
    // nobody's, and the "email" may be a password typed into the wrong box).
    let actor = Actor {
        actor: "anonymous".to_owned(),
        source: client_ip.map(|ip| ip.to_string()),
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let target = user.as_ref().map(|u| (u.id, u.account_id));
    let (store, clock, email_tag) = (
        state.store.clone(),
        Arc::clone(&state.clock),
        guard.email_tag(&email),
    );
    let failure_actor = actor.clone();
    tokio::spawn(async move {
        let matched = Hasher::check(ticket, body.password, phc).await;
        let now = clock.now();
        let succeeded = target.is_some() && matches!(matched, Ok(true));
        let outcome = if succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        reservation.settle(outcome, now).await;
        let _ = answer.send(matched.map(|_| succeeded));
        if succeeded {
            return;
        }
        tracing::info!(
            email = email_tag,
            client = ?client_ip,
            known_device = device.is_some(),
            "sign-in failed"
        );
        let Some((user_id, account_id)) = target else {
            return;
        };
        // The user is the target, in their account's trail; the actor is whoever tried.
        let written = store
            .write(move |tx| {
                audit::record(
                    tx,
                    now,
                    Some(account_id),
                    &failure_actor,
                    &Event::SignInFailed {
                        user_id,
                        known_device: device.is_some(),
                    },
                )
            })
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "recording a failed sign-in");
        }
    });
    let succeeded = answered.await.map_err(AppError::internal)??;
    let Some(user) = user.filter(|_| succeeded) else {
        state.metrics.sign_in_failed("wrong_credentials");
        return Err(SignInError::WrongCredentials.into());
    };
    let now = state.clock.now();
    let actor = Actor {
        actor: format!("user:{}", user.id),
        ..actor
    };
    let device = match device {
        Some(known) => known,
        None => {
            let mut id = [0_u8; 16];
            id.copy_from_slice(&random_bytes()?[..16]);
            DeviceId(id)
        }
    };
    let session = SessionId::generate()?;
    let hash = session.hash();
    let expires_at = now + state.settings.session_ttl;
    // A new id at every sign-in, and the one this browser held (if any) ends with it.
    let replaces = session_cookie(&parts.headers).map(|old| old.hash());
    let ip = client_ip.map(|ip| ip.to_string());
    let agent = super::sessions::user_agent(&parts.headers);
    let (idle, cap) = (
        state.settings.session_idle,
        state.settings.sessions_per_user,
    );
    let u = user.clone();
    let opened = state
        .store
        .write(move |tx| -> Result<_, StoreError> {
            // Only over the hash that was checked: a password change or reset that committed
            // while this sign-in hashed ended every session, and must not be followed by one
            // opened with the old password.
            let still = accounts::user_by_id(tx, u.id)?;
            if still.is_none_or(|(_, user)| user.password_hash != u.password_hash) {
                return Ok(None);
            }
            let new = NewSession {
                token_hash: &hash,
                user_id: u.id,
                account_id: u.account_id,
                now,
                expires_at,
                ip: ip.as_deref(),
                user_agent: &agent,
            };
            let opened = sessions::create(tx, &new, idle, cap, replaces.as_ref())?;
            let id = opened.id;
            let signed_in = Event::SignedIn {
                user_id: u.id,
                session_id: opened.id,
            };
            audit::record(tx, now, Some(u.account_id), &actor, &signed_in)?;
            if !opened.ended_by_cap.is_empty() {
                let ended = Event::SessionsEnded {
                    user_id: u.id,
                    session_ids: opened.ended_by_cap,
                    reason: SessionsEndedBy::Cap,
                };
                audit::record(tx, now, Some(u.account_id), &actor, &ended)?;
            }
            Ok(Some(id))
        })
        .await?;
    let Some(session_id) = opened else {
        state.metrics.sign_in_failed("wrong_credentials");
        return Err(SignInError::WrongCredentials.into());
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        session.expose(),
        state.settings.session_ttl
    );
    let device_cookie = device::set_cookie(&guard.device_cookie(&email, device, now));
    let mut response = Json(SessionView {
        account_id: user.account_id,
        user_id: user.id,
        session_id,
        expires_at,
    })
    .into_response();
    for value in [cookie, device_cookie] {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&value).map_err(AppError::internal)?,
        );
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/sessions/current`: signs out (idempotent).
#[utoipa::path(
    delete,
    path = "/v1/sessions/current",
    summary = "Sign out",
    responses(
        (status = 204, description = "Signed out (a no-op for a management token)."),
        crate::openapi::Unauthenticated,
        (status = 403, description = "Cross-site request.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    // With a management token there is no session to end: signing out is a no-op.
    if let Some(session) = session_cookie(&headers).filter(|_| caller.via == Via::Session) {
        let hash = session.hash();
        let now = state.clock.now();
        state
            .store
            .write(move |tx| -> Result<_, StoreError> {
                sessions::end_by_hash(tx, &hash)?;
                audit::record(
                    tx,
                    now,
                    Some(caller.account_id),
                    &caller.actor,
                    &Event::SignedOut,
                )?;
                Ok(())
            })
            .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, super::sessions::clear_cookie()?);
    Ok(response)
}
