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

pub mod device;
pub mod hasher;
pub mod limit;

use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::mac::{Keyring, MacKey, Purpose};

use self::device::DeviceId;
use self::hasher::{Hasher, MAX_PASSWORD_BYTES};
use self::limit::{
    Attempt, AttemptLedger, Budget, BudgetKey, MemoryLedger, Outcome, Refusal, Reservation,
};
use crate::client_addr::{self, TrustedProxies};
use crate::error::{AppError, Json, Result};
use crate::events::Event;
use crate::secret::{PlainToken, SessionId};
use crate::state::{AppState, Settings};
use crate::store::audit::{self, Actor};
use crate::store::{Store, accounts};

/// Prefix of management tokens. Never `lnx_`: the edge must not mistake one for an API key.
pub const TOKEN_PREFIX: &str = "lnxm_";
/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-lynxo_session";
/// A token's use is audited at most this often (seconds), so reads do not each write a row.
const TOKEN_USE_AUDIT_INTERVAL: u64 = 3600;

/// 32 random bytes from the operating system.
pub fn random_bytes() -> Result<[u8; 32]> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AppError::internal(format!("getrandom: {e}")))?;
    Ok(bytes)
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
) -> Result<Bootstrap> {
    let email = normalize_email(email).ok_or_else(|| AppError::validation("invalid email"))?;
    if password.chars().count() < 12 || password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation(
            "password must be at least 12 characters and at most 1024 bytes",
        ));
    }
    let password_hash = hash_password(password, settings)?;
    let token = PlainToken::generate()?;
    let (token_hash, hint) = (token.hash(), token.hint());
    let cli = Actor {
        actor: "cli".into(),
        source: None,
    };
    let account_name = account_name.to_owned();
    store.write_blocking(move |tx| {
        let account_id = accounts::create_account(tx, &account_name, now)?;
        let user_id = accounts::create_user(tx, account_id, &email, &password_hash, now)?
            .ok_or_else(|| {
                AppError::new(
                    StatusCode::CONFLICT,
                    "email_taken",
                    "A user with this email exists",
                )
            })?;
        let token_id = accounts::create_token(tx, account_id, "initial", &token_hash, &hint, now)?;
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

fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control()))
    .then(|| email.to_lowercase())
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer lnxm_...`.
    Token,
    /// The session cookie.
    Session,
}

/// An authenticated caller, acting for one account.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account every call acts for.
    pub account_id: u64,
    /// For the audit trail.
    pub actor: Actor,
    /// Token or session.
    pub via: Via,
}

/// The client address for the audit trail, if the server recorded one: the TCP peer, or what a
/// trusted proxy says the client was.
pub fn source(parts: &Parts, proxies: &TrustedProxies) -> Option<String> {
    client_addr::client_ip(parts, proxies).map(|ip| ip.to_string())
}

fn invalid_token(detail: &str) -> AppError {
    AppError::unauthenticated()
        .with_detail(detail.to_owned())
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="lynxo-control", error="invalid_token""#),
        )
}

/// The value of the cookie `name`, if the request sent one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn session_cookie(headers: &HeaderMap) -> Option<SessionId> {
    cookie(headers, SESSION_COOKIE).map(SessionId::from_cookie)
}

/// Whether a cookie-authenticated request comes from the dashboard's own origin.
pub fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.eq_ignore_ascii_case(public_origin))
}

fn cross_site() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "cross_site_request",
        "Cross-site request refused",
    )
    .with_detail("state-changing requests with a session cookie must come from the dashboard")
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let source = source(parts, &state.settings.proxies);
        let now = state.clock.now();
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or_default();
            let token = match value.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                _ => return Err(invalid_token("use `Authorization: Bearer lnxm_...`")),
            };
            if !token.starts_with(TOKEN_PREFIX) {
                return Err(invalid_token(
                    "the admin API takes a management token (`lnxm_...`), not an API key",
                ));
            }
            let hash = PlainToken::presented(token).hash();
            let owner = state
                .store
                .read(move |c| accounts::token_by_hash(c, &hash))
                .await?
                .ok_or_else(|| invalid_token("the management token is not valid"))?;
            let actor = Actor {
                actor: format!("token:{}", owner.token_id),
                source,
            };
            if owner
                .last_used_at
                .is_none_or(|t| now >= t + TOKEN_USE_AUDIT_INTERVAL)
            {
                let who = actor.clone();
                state
                    .store
                    .write(move |tx| {
                        accounts::touch_token(tx, owner.token_id, now)?;
                        audit::record(
                            tx,
                            now,
                            Some(owner.account_id),
                            &who,
                            &Event::TokenUsed {
                                token_id: owner.token_id,
                            },
                        )?;
                        Ok(())
                    })
                    .await?;
            }
            return Ok(Self {
                account_id: owner.account_id,
                actor,
                via: Via::Token,
            });
        }
        if let Some(session) = session_cookie(&parts.headers) {
            if !is_safe(&parts.method)
                && !same_origin(&parts.headers, &state.settings.public_origin)
            {
                return Err(cross_site());
            }
            let hash = session.hash();
            if let Some((user_id, account_id)) = state
                .store
                .read(move |c| accounts::session_by_hash(c, &hash, now))
                .await?
            {
                return Ok(Self {
                    account_id,
                    actor: Actor {
                        actor: format!("user:{user_id}"),
                        source,
                    },
                    via: Via::Session,
                });
            }
        }
        Err(AppError::unauthenticated())
    }
}

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
    /// Attempt budgets (in memory; a database later, shared by replicas).
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

    /// The device cookie value to set after a successful sign-in to `email`.
    pub fn device_cookie(&self, email: &str, device: DeviceId, now: u64) -> String {
        device::issue(&self.mac, email, device, now)
    }
}

fn too_many_attempts(retry_after: u64) -> AppError {
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sign_in_attempts",
        "Too many failed sign-ins",
    )
    .with_detail("wait before trying again")
    .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)))
}

fn sign_in_busy() -> AppError {
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "sign_in_busy",
        "Too many sign-ins at once",
    )
    .with_detail("try again in a moment")
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Sign-in body. Its `Debug` leaves the password out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The user's email.
    pub email: String,
    /// Their password.
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
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The account the session acts for.
    pub account_id: u64,
    /// The signed-in user.
    pub user_id: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// `POST /v1/sessions`: email + password sign-in; sets the session cookie (and the device
/// cookie that marks this browser as known for this email).
pub async fn create_session(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(body): Json<SignIn>,
) -> Result<Response> {
    // Login CSRF: a cross-site form could sign the victim in to the attacker's account.
    let browser_sent =
        parts.headers.contains_key("sec-fetch-site") || parts.headers.contains_key(header::ORIGIN);
    if browser_sent && !same_origin(&parts.headers, &state.settings.public_origin) {
        return Err(cross_site());
    }
    // Shape first: what can never be a user costs nothing and is never a budget's name.
    let email = normalize_email(&body.email).ok_or_else(|| {
        AppError::validation("email must be an address of at most 254 bytes")
            .with_field("field", "email")
    })?;
    if body.password.is_empty() || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::validation("password must be 1 to 1024 bytes")
            .with_field("field", "password"));
    }
    let now = state.clock.now();
    let guard = &state.sign_in;
    let client_ip = client_addr::client_ip(&parts, &state.settings.proxies);
    let device = guard.device(&parts.headers, &email, now);
    let client = device.map_or(Client::Address(client_ip), Client::Device);
    // A place to hash, then a guess from the budgets: both refuse rather than queue, and
    // neither counts anything when it refuses.
    let ticket = guard
        .hasher
        .admit(client_ip.map(client_addr::network))
        .ok_or_else(sign_in_busy)?;
    let reservation = Reservation::take(
        Arc::clone(&guard.ledger),
        guard.attempt(&email, client),
        now,
    )
    .await
    .map_err(|refusal| match refusal {
        Refusal::Locked { retry_after } => too_many_attempts(retry_after),
        Refusal::Busy => sign_in_busy(),
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
            return Err(e);
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
        return Err(AppError::unauthenticated().with_detail("the email or password is wrong"));
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
    let u = user.clone();
    state
        .store
        .write(move |tx| {
            accounts::create_session(tx, &hash, &u, now, expires_at)?;
            audit::record(
                tx,
                now,
                Some(u.account_id),
                &actor,
                &Event::SignedIn { user_id: u.id },
            )?;
            Ok(())
        })
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        session.expose(),
        state.settings.session_ttl
    );
    let device_cookie = device::set_cookie(&guard.device_cookie(&email, device, now));
    let mut response = Json(SessionView {
        account_id: user.account_id,
        user_id: user.id,
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
            .write(move |tx| {
                accounts::delete_session(tx, &hash)?;
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
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .map_err(AppError::internal)?,
    );
    Ok(response)
}
