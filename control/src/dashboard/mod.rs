//! The web dashboard: pages and assets served by the control plane itself.
//!
//! Pages are small server-rendered HTML shells (one function per page in [`pages`], every
//! user-provided string escaped); plain ES modules under `control/assets/` call the JSON API
//! (`/v1/...`, same origin, session cookie) and render into them. There is no build step and
//! nothing is fetched from anywhere else: the assets are compiled into the binary.
//!
//! Every response here carries a strict Content-Security-Policy (scripts and styles only from
//! this origin, no inline code, no framing, forms post only here), `nosniff` and
//! `Referrer-Policy: no-referrer`. Pages are `no-store`: the create and rotate dialogs show a
//! key once, and a page that holds one must never be cached. Assets live under a path that
//! names a hash of their contents, so they can be cached for a year.

mod assets;
mod pages;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use shared::key::KeyId;

use crate::AppState;
use crate::auth::Caller;
use crate::error::AppError;
use crate::store::accounts;

pub use pages::escape;

/// The policy of every dashboard response: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The dashboard's routes, at the root.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/dashboard", get(home))
        .route("/sign-in", get(sign_in_page))
        .route("/dashboard/keys", get(keys_page))
        .route("/dashboard/keys/{id}", get(key_page))
        .route("/dashboard/audit", get(audit_page))
        .route("/dashboard/tokens", get(tokens_page))
        .route("/assets/{version}/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// Adds the security headers to every dashboard response, and `no-store` to all but assets.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What every signed-in page shows in its header.
pub(crate) struct Account {
    /// The account's id.
    pub id: u64,
    /// Its plan's limits.
    pub plan: accounts::Plan,
}

/// The signed-in account, or a redirect to the sign-in page.
async fn signed_in(
    state: &AppState,
    caller: Result<Caller, AppError>,
) -> Result<Account, Response> {
    let Ok(caller) = caller else {
        return Err(Redirect::to("/sign-in").into_response());
    };
    let id = caller.account_id;
    match state.store.read(move |c| accounts::plan(c, id)).await {
        Ok(plan) => Ok(Account { id, plan }),
        Err(e) => Err(e.into_response()),
    }
}

fn html(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `GET /`: the keys page when signed in, else the sign-in page.
async fn home(caller: Result<Caller, AppError>) -> Response {
    if caller.is_ok() {
        Redirect::to("/dashboard/keys").into_response()
    } else {
        Redirect::to("/sign-in").into_response()
    }
}

/// `GET /sign-in`.
async fn sign_in_page(caller: Result<Caller, AppError>) -> Response {
    if caller.is_ok() {
        return Redirect::to("/dashboard/keys").into_response();
    }
    html(pages::sign_in())
}

/// `GET /dashboard/keys`: Developers → API Keys.
async fn keys_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(pages::keys(&account)),
        Err(redirect) => redirect,
    }
}

/// `GET /dashboard/keys/{id}`: one key.
async fn key_page(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
) -> Response {
    let account = match signed_in(&state, caller).await {
        Ok(account) => account,
        Err(redirect) => return redirect,
    };
    match KeyId::parse_hex(&id) {
        Some(id) => html(pages::key(&account, &id.to_string())),
        None => (
            StatusCode::NOT_FOUND,
            html(pages::not_found(&account, "No key has this id.")),
        )
            .into_response(),
    }
}

/// `GET /dashboard/audit`: the account's audit log.
async fn audit_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(pages::audit(&account)),
        Err(redirect) => redirect,
    }
}

/// `GET /dashboard/tokens`: management tokens.
async fn tokens_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(pages::tokens(&account)),
        Err(redirect) => redirect,
    }
}

/// `GET /assets/{version}/{file}`: an embedded asset, cached for a year under its version.
async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let Some(asset) = assets::find(&file).filter(|_| version == assets::version()) else {
        return AppError::not_found().into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_only_existing_assets() {
        let account = Account {
            id: 7,
            plan: accounts::Plan {
                max_active_keys: 50,
                default_rate_limit: 600,
                max_rate_limit: 6000,
            },
        };
        let pages = [
            pages::sign_in(),
            pages::keys(&account),
            pages::key(&account, "00112233445566778899aabbccddeeff"),
            pages::audit(&account),
            pages::tokens(&account),
        ];
        let prefix = format!("/assets/{}/", assets::version());
        for page in pages {
            let mut rest = page.as_str();
            let mut seen = 0;
            while let Some(at) = rest.find("/assets/") {
                rest = &rest[at..];
                assert!(rest.starts_with(&prefix), "stale asset path in {rest:.80}");
                let name: String = rest[prefix.len()..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                assert!(assets::find(&name).is_some(), "no asset {name}");
                rest = &rest[prefix.len()..];
                seen += 1;
            }
            assert!(seen >= 2, "a page without its stylesheet and script");
            assert!(!page.contains("style="), "inline style: the CSP refuses it");
            assert!(
                !page.contains("<script>"),
                "inline script: the CSP refuses it"
            );
        }
    }
}
