//! Who a request is: a management token (`Authorization: Bearer lnxm_...`) or a dashboard
//! session cookie, and the CSRF check a cookie-authenticated write must pass.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use shared::scope::ScopeSet;

use super::grant::{self, Access};
use super::{SESSION_COOKIE, TOKEN_PREFIX};
use crate::client_addr::{self, TrustedProxies};
use crate::error::{AppError, Result};
use crate::events::Event;
use crate::secret::{PlainToken, SessionId};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::sessions;
use crate::store::tokens::{self, TokenOwner};

/// A token's use is audited (`management_token.used`) at most this often (seconds), so reads
/// do not each write a row; every change a token makes has its own event naming it.
pub const TOKEN_USE_AUDIT_INTERVAL: u64 = 3600;
/// A token's `last_used_at` moves at most this often (seconds).
pub const TOKEN_TOUCH_INTERVAL: u64 = 60;

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
    /// For a token, the most the keys it manages may carry (`auth::grant`); a session's user
    /// may manage every key.
    pub key_grant: Option<ScopeSet>,
}

/// The session a signed-in caller used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn {
    /// The session's id.
    pub session_id: u64,
    /// Its user.
    pub user_id: u64,
}

impl Caller {
    /// The signed-in user, for a session.
    pub fn user_id(&self) -> Option<u64> {
        self.session.map(|s| s.user_id)
    }

    /// Whether the caller may create, change, rotate or revoke a key carrying `scopes`: a
    /// token only within its key grant (the grant is the error).
    pub fn may_manage(&self, scopes: ScopeSet) -> Result<(), ScopeSet> {
        match self.key_grant {
            Some(grant) if !scopes.is_within(grant) => Err(grant),
            _ => Ok(()),
        }
    }
}

/// The client address for the audit trail, if the server recorded one: the TCP peer, or what a
/// trusted proxy says the client was.
pub fn source(parts: &Parts, proxies: &TrustedProxies) -> Option<String> {
    client_addr::client_ip(parts, proxies).map(|ip| ip.to_string())
}

/// The access the route asks for (`routes::operations`); a route that names none is open to
/// sessions only.
fn access(parts: &Parts) -> Access {
    parts
        .extensions
        .get::<Access>()
        .copied()
        .unwrap_or(Access::Session)
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
                .read(move |c| tokens::by_hash(c, &hash))
                .await?
                .ok_or_else(|| invalid_token("the management token is not valid"))?;
            if owner.expires_at.is_some_and(|t| t <= now) {
                return Err(invalid_token("the management token has expired"));
            }
            match access(parts) {
                Access::Any => {}
                Access::Session => return Err(grant::session_required()),
                Access::Scope(scope) if owner.scopes.contains(scope) => {}
                Access::Scope(scope) => return Err(grant::insufficient_scope(scope)),
            }
            let actor = Actor {
                actor: format!("token:{}", owner.token_id),
                source,
            };
            if owner
                .last_used_at
                .is_none_or(|t| now >= t.saturating_add(TOKEN_TOUCH_INTERVAL))
            {
                record_use(state, &owner, &actor, parts, now).await?;
            }
            return Ok(Self {
                account_id: owner.account_id,
                actor,
                via: Via::Token,
                session: None,
                key_grant: Some(owner.key_grant),
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
                    key_grant: None,
                });
            }
        }
        Err(AppError::unauthenticated())
    }
}

/// Moves the token's `last_used_at` and, at most once per [`TOKEN_USE_AUDIT_INTERVAL`], writes
/// `management_token.used` with the call that used it.
async fn record_use(
    state: &AppState,
    owner: &TokenOwner,
    actor: &Actor,
    parts: &Parts,
    now: u64,
) -> Result<()> {
    let (token_id, account_id) = (owner.token_id, owner.account_id);
    let who = actor.clone();
    let method = parts.method.to_string();
    // The route as the table names it (`/v1/keys/{id}`): bounded, and no ids in the trail.
    let path: String = parts
        .extensions
        .get::<grant::RoutePath>()
        .map_or(parts.uri.path(), |route| route.0)
        .chars()
        .take(200)
        .collect();
    state
        .store
        .write(move |tx| -> Result<_, StoreError> {
            let audit = tokens::record_use(
                tx,
                token_id,
                now,
                TOKEN_TOUCH_INTERVAL,
                TOKEN_USE_AUDIT_INTERVAL,
            )?;
            if audit {
                audit::record(
                    tx,
                    now,
                    Some(account_id),
                    &who,
                    &Event::TokenUsed {
                        token_id,
                        method,
                        path,
                    },
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}
