//! The web dashboard: pages and assets served by the control plane itself.
//!
//! Pages are small server-rendered HTML shells (one askama template per page, filled in
//! [`pages`], every value escaped by construction); plain ES modules under `control/assets/`
//! call the JSON API (`/v1/...`, same origin, session cookie) and render into them. There is no
//! build step and nothing is fetched from anywhere else: templates and assets are compiled into
//! the binary.
//!
//! Every response here carries a strict Content-Security-Policy (scripts and styles only from
//! this origin, no inline code, no framing, forms post only here), `nosniff` and
//! `Referrer-Policy: no-referrer`. Pages are `no-store`: the create and rotate dialogs show a
//! key once, and a page that holds one must never be cached. Assets live under a path that
//! names a hash of their contents, so they can be cached for a year.

mod assets;
mod pages;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use shared::key::KeyId;

use crate::auth::Caller;
use crate::auth::grant::{Access, AdminScope};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::accounts;
use crate::store::keys as store_keys;

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
        .route("/dashboard/sessions", get(sessions_page))
        .route("/assets/{version}/{file}", get(asset))
        // The page shells hold no account data beyond the header (the account's name and
        // plan, what `GET /v1/account` shows): a session, or a token that may read the account
        // (the data comes from the API, under its own access rules).
        .layer(axum::Extension(Access::Scope(AdminScope::AccountRead)))
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

/// What every signed-in page shows in its header: the account's name and plan.
pub(crate) type Account = accounts::AccountInfo;

/// The signed-in account, or a redirect to the sign-in page.
async fn signed_in(
    state: &AppState,
    caller: Result<Caller, AppError>,
) -> Result<Account, Response> {
    let Ok(caller) = caller else {
        return Err(Redirect::to("/sign-in").into_response());
    };
    let id = caller.account_id;
    match state.store.read(move |c| accounts::account(c, id)).await {
        Ok(account) => Ok(account),
        Err(e) => Err(e.into_response()),
    }
}

/// A rendered page, or a 500 if the template could not be written out.
fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => AppError::internal(e).into_response(),
    }
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
    html(&pages::sign_in())
}

/// `GET /dashboard/keys`: Developers → API Keys.
async fn keys_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(&pages::keys(&account, &state.settings.api_bases)),
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
    // A key of this account, or a real 404: another account's key looks exactly like a key
    // that never was, and no page with working buttons is served for either.
    let account_id = account.id;
    let found = match KeyId::parse_hex(&id) {
        Some(id) => match state
            .store
            .read(move |c| store_keys::get(c, account_id, id))
            .await
        {
            Ok(row) => row.map(|_| id),
            Err(e) => return AppError::from(e).into_response(),
        },
        None => None,
    };
    match found {
        Some(id) => html(&pages::key(
            &account,
            &id.to_string(),
            &state.settings.api_bases,
        )),
        None => (
            StatusCode::NOT_FOUND,
            html(&pages::not_found(
                &account,
                "No key with this id in your account. It may have been mistyped, or belong to another account.",
            )),
        )
            .into_response(),
    }
}

/// `GET /dashboard/audit`: the account's audit log.
async fn audit_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(&pages::audit(&account)),
        Err(redirect) => redirect,
    }
}

/// `GET /dashboard/tokens`: management tokens.
async fn tokens_page(State(state): State<AppState>, caller: Result<Caller, AppError>) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(&pages::tokens(&account)),
        Err(redirect) => redirect,
    }
}

/// `GET /dashboard/sessions`: the user's sessions and the password change.
async fn sessions_page(
    State(state): State<AppState>,
    caller: Result<Caller, AppError>,
) -> Response {
    match signed_in(&state, caller).await {
        Ok(account) => html(&pages::sessions(&account, &state.settings)),
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
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{HeaderMap, Request as HttpRequest};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::state::ApiBases;
    use crate::store::Store;
    use crate::{ManualClock, Settings, app, auth};

    /// An app with one account; returns it, the account's management token, and the database's
    /// folder (kept alive by the caller).
    fn test_app() -> (Router, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("control.sqlite3"),
            crate::store::test_audit_keyring(),
        )
        .unwrap();
        let settings = Settings {
            argon2: argon2::Params::new(8, 1, 1, None).unwrap(),
            ..Settings::default()
        };
        let boot = auth::bootstrap(
            &store,
            &settings,
            "Acme",
            "a@example.com",
            "long enough password",
            1_700_000_000,
        )
        .unwrap();
        let keyring = shared::testkit::keyring();
        let clock = Arc::new(ManualClock::at(1_700_000_000));
        let state = AppState::new(store, keyring, clock, settings);
        (app(state), boot.token, dir)
    }

    async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut request = HttpRequest::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn assert_hardened(headers: &HeaderMap) {
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    }

    #[tokio::test]
    async fn pages_redirect_to_sign_in_without_a_session() {
        let (app, _token, _dir) = test_app();
        for path in [
            "/",
            "/dashboard/keys",
            "/dashboard/audit",
            "/dashboard/tokens",
            "/dashboard/sessions",
        ] {
            let (status, headers, _) = get(&app, path, None).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(headers[header::LOCATION], "/sign-in", "{path}");
            assert_hardened(&headers);
        }
        let (status, headers, body) = get(&app, "/sign-in", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body.contains(r#"id="sign-in-form""#));
    }

    #[tokio::test]
    async fn signed_in_pages_are_no_store_html() {
        let (app, token, _dir) = test_app();
        let (status, headers, body) = get(&app, "/dashboard/keys", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_hardened(&headers);
        assert!(body.contains("Create New API Key") && body.contains("plan: 50 keys"));
        let (status, _, _) = get(&app, "/sign-in", Some(&token)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        // A key id of no key in the account: a real 404 page, no key page shell.
        let id = "00112233445566778899aabbccddeeff";
        let (status, headers, body) =
            get(&app, &format!("/dashboard/keys/{id}"), Some(&token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body.contains("Not found") && !body.contains("data-key-id"));
        assert!(!body.contains("revoke-open"));
        let (status, _, body) = get(&app, "/dashboard/keys/%3Cscript%3E", Some(&token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!body.contains("<script>"));
    }

    #[tokio::test]
    async fn assets_are_immutable_under_their_version_only() {
        let (app, _token, _dir) = test_app();
        let v = assets::version();
        let (status, headers, body) = get(&app, &format!("/assets/{v}/app.js"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_hardened(&headers);
        assert!(body.contains("data-page") || body.contains("dataset.page"));
        for path in [
            "/assets/0000000000000000/app.js".to_owned(),
            format!("/assets/{v}/missing.js"),
            format!("/assets/{v}/..%2Fsrc%2Flib.rs"),
        ] {
            let (status, headers, _) = get(&app, &path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{path}");
        }
    }

    #[test]
    fn every_page_names_only_existing_assets() {
        let account = Account {
            id: 7,
            name: "<Acme & Co>".into(),
            plan_id: "standard".into(),
            created_at: 0,
            plan: accounts::Plan {
                max_active_keys: 50,
                default_rate_limit: 600,
                max_rate_limit: 6000,
            },
        };
        let pages = [
            pages::sign_in().render().unwrap(),
            pages::keys(&account, &ApiBases::default())
                .render()
                .unwrap(),
            pages::key(
                &account,
                "00112233445566778899aabbccddeeff",
                &ApiBases::default(),
            )
            .render()
            .unwrap(),
            pages::audit(&account).render().unwrap(),
            pages::tokens(&account).render().unwrap(),
            pages::sessions(&account, &Settings::default())
                .render()
                .unwrap(),
        ];
        // The account's name is the customer's text: escaped wherever it is shown.
        for page in &pages[1..] {
            assert!(
                page.contains("&#60;Acme &#38; Co&#62;"),
                "name not shown escaped"
            );
            assert!(!page.contains("<Acme"), "name not escaped");
            assert!(page.contains("Standard plan"), "plan not shown");
        }
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
