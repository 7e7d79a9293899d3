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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{AppError, Json, Result};
use crate::store::audit::{self, Actor};
use crate::store::{Store, accounts};
use crate::{AppState, Settings};

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

/// SHA-256 of a token or session id: what the database stores.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new management token: `(token, hash, hint)`. The token is shown once.
pub fn new_management_token() -> Result<(String, Vec<u8>, String)> {
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes()?));
    let hash = hash_secret(&token);
    let hint = format!("{TOKEN_PREFIX}…{}", &token[token.len() - 4..]);
    Ok((token, hash, hint))
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

fn password_matches(password: &str, phc: &str, settings: &Settings) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        argon2(settings)
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// What [`bootstrap`] created.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The new account.
    pub account_id: u64,
    /// Its first user.
    pub user_id: u64,
    /// A management token for it (shown once).
    pub token: String,
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
    if password.chars().count() < 12 {
        return Err(AppError::validation(
            "password must be at least 12 characters",
        ));
    }
    let password_hash = hash_password(password, settings)?;
    let (token, token_hash, hint) = new_management_token()?;
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
        audit::append(
            tx,
            now,
            Some(account_id),
            &cli,
            "account.created",
            Some(&account_id.to_string()),
            &json!({ "name": account_name }),
        )?;
        audit::append(
            tx,
            now,
            Some(account_id),
            &cli,
            "user.created",
            Some(&user_id.to_string()),
            &json!({ "email": email }),
        )?;
        audit::append(
            tx,
            now,
            Some(account_id),
            &cli,
            "management_token.created",
            Some(&token_id.to_string()),
            &json!({ "hint": hint }),
        )?;
        Ok(Bootstrap {
            account_id,
            user_id,
            token,
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

/// The client address, if the server recorded one.
pub fn source(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().to_string())
}

fn invalid_token(detail: &str) -> AppError {
    AppError::unauthenticated()
        .with_detail(detail.to_owned())
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="lynxo-control", error="invalid_token""#),
        )
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
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
        let source = source(parts);
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
            let hash = hash_secret(token);
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
                        audit::append(
                            tx,
                            now,
                            Some(owner.account_id),
                            &who,
                            "management_token.used",
                            Some(&owner.token_id.to_string()),
                            &json!({}),
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
            let hash = hash_secret(&session);
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

/// Failed sign-ins per email and per client address, in fixed windows. In memory: a restart
/// resets it, which costs an attacker a restart per window.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<String, (u64, u32)>>,
}

/// Failures allowed per email in a window.
const MAX_FAILURES_PER_EMAIL: u32 = 5;
/// Failures allowed per address in a window.
const MAX_FAILURES_PER_SOURCE: u32 = 20;
/// Window length, seconds.
const FAILURE_WINDOW: u64 = 15 * 60;

impl SignInLimiter {
    /// Seconds until `keys` may try again, if any is over its limit.
    fn blocked(&self, keys: &[(String, u32)], now: u64) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|(key, max)| {
                let (start, count) = map.get(key)?;
                (now < start + FAILURE_WINDOW && count >= max).then(|| start + FAILURE_WINDOW - now)
            })
            .max()
    }

    fn record_failure(&self, keys: &[(String, u32)], now: u64) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (start, _)| now < *start + FAILURE_WINDOW);
            }
            for (key, _) in keys {
                let entry = map.entry(key.clone()).or_insert((now, 0));
                if now >= entry.0 + FAILURE_WINDOW {
                    *entry = (now, 0);
                }
                entry.1 += 1;
            }
        }
    }

    fn clear(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

/// Sign-in body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The user's email.
    pub email: String,
    /// Their password.
    pub password: String,
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

/// `POST /v1/sessions`: email + password sign-in; sets the session cookie.
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
    let now = state.clock.now();
    let source_addr = source(&parts);
    let email = normalize_email(&body.email).unwrap_or_else(|| body.email.trim().to_lowercase());
    let limits = vec![
        (format!("email:{email}"), MAX_FAILURES_PER_EMAIL),
        (
            format!("source:{}", source_addr.as_deref().unwrap_or("unknown")),
            MAX_FAILURES_PER_SOURCE,
        ),
    ];
    if let Some(retry_after) = state.sign_in_limiter.blocked(&limits, now) {
        return Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sign_in_attempts",
            "Too many failed sign-ins",
        )
        .with_detail("wait before trying again")
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after)));
    }
    let lookup = email.clone();
    let user = state
        .store
        .read(move |c| accounts::user_by_email(c, &lookup))
        .await?;
    let settings = state.settings.clone();
    let password = body.password;
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    // Hash even for an unknown email, so timing does not reveal which emails exist.
    let matched = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password_matches(&password, &phc, &settings),
        None => {
            let _ = hash_password(&password, &settings);
            false
        }
    })
    .await
    .map_err(AppError::internal)?;
    let actor = Actor {
        actor: user
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |u| format!("user:{}", u.id)),
        source: source_addr,
    };
    // A failure against a real user belongs to that user's account, so its owners see it.
    let account_id = user.as_ref().map(|u| u.account_id);
    let Some(user) = user.filter(|_| matched) else {
        state.sign_in_limiter.record_failure(&limits, now);
        let details = json!({ "email": email });
        state
            .store
            .write(move |tx| {
                audit::append(
                    tx,
                    now,
                    account_id,
                    &actor,
                    "user.sign_in_failed",
                    None,
                    &details,
                )
            })
            .await?;
        return Err(AppError::unauthenticated().with_detail("the email or password is wrong"));
    };
    state.sign_in_limiter.clear(&limits[0].0);
    let session = hex::encode(random_bytes()?);
    let hash = hash_secret(&session);
    let expires_at = now + state.settings.session_ttl;
    let u = user.clone();
    state
        .store
        .write(move |tx| {
            accounts::create_session(tx, &hash, &u, now, expires_at)?;
            audit::append(
                tx,
                now,
                Some(u.account_id),
                &actor,
                "user.signed_in",
                Some(&u.id.to_string()),
                &json!({}),
            )?;
            Ok(())
        })
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        state.settings.session_ttl
    );
    let mut response = Json(SessionView {
        account_id: user.account_id,
        user_id: user.id,
        expires_at,
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(AppError::internal)?,
    );
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
        let hash = hash_secret(&session);
        let now = state.clock.now();
        state
            .store
            .write(move |tx| {
                accounts::delete_session(tx, &hash)?;
                audit::append(
                    tx,
                    now,
                    Some(caller.account_id),
                    &caller.actor,
                    "user.signed_out",
                    None,
                    &json!({}),
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
