//! Who a request is: a management token (`Authorization: Bearer lnxm_...`) or a dashboard
//! session cookie, and the CSRF check a cookie-authenticated write must pass.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::{SESSION_COOKIE, TOKEN_PREFIX};
use crate::client_addr::{self, TrustedProxies};
use crate::error::{AppError, Result};
use crate::events::Event;
use crate::secret::{PlainToken, SessionId};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::{accounts, sessions};

/// A token's use is audited at most this often (seconds), so reads do not each write a row.
const TOKEN_USE_AUDIT_INTERVAL: u64 = 3600;

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
    /// The session and its user, when signed in (`None` for a management token).
    pub session: Option<SignedIn>,
}

/// The session a signed-in caller used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn {
    /// The session's id.
    pub session_id: u64,
    /// Its user.
    pub user_id: u64,
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

pub(super) fn session_cookie(headers: &HeaderMap) -> Option<SessionId> {
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

pub(super) fn cross_site() -> AppError {
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
                    .write(move |tx| -> Result<_, StoreError> {
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
                session: None,
            });
        }
        if let Some(session) = session_cookie(&parts.headers) {
            if !is_safe(&parts.method)
                && !same_origin(&parts.headers, &state.settings.public_origin)
            {
                return Err(cross_site());
            }
            let hash = session.hash();
            let idle = state.settings.session_idle;
            if let Some(live) = state
                .store
                .read(move |c| sessions::find(c, &hash, now, idle))
                .await?
            {
                // A session's use is written at most once per interval: reads stay reads. A
                // failed write only leaves the idle timer running (the session ends sooner, never
                // later), so it fails no request.
                let every = state.settings.session_touch_every();
                if now >= live.last_seen_at + every {
                    let ip = source.clone();
                    let touched = state
                        .store
                        .write(move |tx| sessions::touch(tx, live.id, now, ip.as_deref(), every))
                        .await;
                    if let Err(e) = touched {
                        tracing::error!(error = %e, "recording a session's use");
                    }
                }
                return Ok(Self {
                    account_id: live.account_id,
                    actor: Actor {
                        actor: format!("user:{}", live.user_id),
                        source,
                    },
                    via: Via::Session,
                    session: Some(SignedIn {
                        session_id: live.id,
                        user_id: live.user_id,
                    }),
                });
            }
        }
        Err(AppError::unauthenticated())
    }
}
