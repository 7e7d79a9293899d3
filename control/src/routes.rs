//! The HTTP surface: [`app`] builds the router from an [`AppState`], from one table of the API's
//! operations ([`operations`]), which the OpenAPI test also reads, so a route cannot exist
//! undocumented or be documented without existing.

use std::convert::Infallible;

use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use crate::auth::grant::{Access, AdminScope, RoutePath};
use crate::error::{self, AppError, InternalCause, Json};
use crate::openapi::OPENAPI;
use crate::state::AppState;
use crate::{
    account, audit, auth, body, dashboard, keys, leaks, metrics, skew, tokens, usage, verify,
};

/// One operation of the API: its method, its path as the OpenAPI document spells it, who may
/// call it, and its handler.
pub struct Operation {
    /// The HTTP method.
    pub method: Method,
    /// The full path (`/v1/keys/{id}`).
    pub path: &'static str,
    /// Who may call it: the admin scope a management token needs, or sessions only. The
    /// caller extractor (`auth::Caller`) enforces it; the OpenAPI document states it.
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn op(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Operation {
    Operation {
        method,
        path,
        access,
        handler,
    }
}

/// Every operation the OpenAPI document ([`crate::openapi`]) describes, and so every route of the API; [`app`] routes
/// exactly these. Not here: the dashboard's pages (HTML for a browser, `dashboard::routes`) and
/// the edge's internal usage ingestion (`usage::ingest_routes`, signed with the keyring).
pub fn operations() -> Vec<Operation> {
    use AdminScope::{
        AccountRead, AuditRead, KeysRead, KeysVerify, KeysWrite, TokensRead, UsageRead,
    };
    use Method as M;
    let needs = Access::Scope;
    vec![
        op(
            M::POST,
            "/v1/keys",
            needs(KeysWrite),
            post(keys::create_key),
        ),
        op(M::GET, "/v1/keys", needs(KeysRead), get(keys::list_keys)),
        op(
            M::POST,
            "/v1/keys/verify",
            needs(KeysVerify),
            post(verify::verify_key),
        ),
        op(
            M::POST,
            "/v1/keys/revoke",
            Access::Any,
            post(leaks::revoke_held_key),
        ),
        op(
            M::POST,
            "/v1/keys/bulk-revoke",
            needs(KeysWrite),
            post(keys::bulk_revoke_keys),
        ),
        op(M::GET, "/v1/keys/{id}", needs(KeysRead), get(keys::get_key)),
        op(
            M::PATCH,
            "/v1/keys/{id}",
            needs(KeysWrite),
            patch(keys::update_key),
        ),
        op(
            M::POST,
            "/v1/keys/{id}/revoke",
            needs(KeysWrite),
            post(keys::revoke_key),
        ),
        op(
            M::POST,
            "/v1/keys/{id}/rotate",
            needs(KeysWrite),
            post(keys::rotate_key),
        ),
        op(
            M::GET,
            "/v1/keys/{id}/usage",
            needs(UsageRead),
            get(usage::get_key_usage),
        ),
        op(
            M::GET,
            "/v1/keys/{id}/activity",
            needs(UsageRead),
            get(usage::list_key_activity),
        ),
        op(
            M::GET,
            "/v1/usage",
            needs(UsageRead),
            get(usage::get_account_usage),
        ),
        op(
            M::GET,
            "/v1/account",
            needs(AccountRead),
            get(account::get_account),
        ),
        op(
            M::GET,
            "/v1/audit-events",
            needs(AuditRead),
            get(audit::list_audit_events),
        ),
        op(
            M::GET,
            "/v1/audit-events/export",
            needs(AuditRead),
            get(audit::export_audit_events),
        ),
        op(
            M::POST,
            "/v1/management-tokens",
            Access::Session,
            post(tokens::create_token),
        ),
        op(
            M::GET,
            "/v1/management-tokens",
            needs(TokensRead),
            get(tokens::list_tokens),
        ),
        op(
            M::GET,
            "/v1/keys/{id}/leaks",
            needs(KeysRead),
            get(leaks::list_key_leaks),
        ),
        op(
            M::PUT,
            "/v1/account/leak-response",
            needs(KeysWrite),
            put(leaks::set_leak_response),
        ),
        op(M::GET, "/v1/leaks", needs(KeysRead), get(leaks::list_leaks)),
        op(
            M::POST,
            "/v1/management-tokens/{id}/revoke",
            Access::Session,
            post(tokens::revoke_token),
        ),
        op(
            M::POST,
            "/v1/sessions",
            Access::Any,
            post(auth::create_session),
        ),
        op(
            M::DELETE,
            "/v1/sessions/current",
            Access::Any,
            delete(auth::delete_session),
        ),
        op(
            M::GET,
            "/v1/sessions",
            Access::Session,
            get(auth::sessions::list_sessions),
        ),
        op(
            M::DELETE,
            "/v1/sessions/others",
            Access::Session,
            delete(auth::sessions::end_other_sessions),
        ),
        op(
            M::DELETE,
            "/v1/sessions/{id}",
            Access::Session,
            delete(auth::sessions::end_session),
        ),
        op(
            M::POST,
            "/v1/user/password",
            Access::Session,
            post(auth::change_password),
        ),
        op(
            M::POST,
            "/secret-scanning/github",
            Access::Any,
            post(leaks::report_github_leaks),
        ),
        op(
            M::POST,
            "/secret-scanning/gitlab",
            Access::Any,
            post(leaks::report_gitlab_leaks),
        ),
        op(M::GET, "/healthz", Access::Any, get(healthz)),
        op(M::GET, "/readyz", Access::Any, get(readyz)),
        op(M::GET, "/openapi.json", Access::Any, get(openapi)),
        op(
            M::GET,
            metrics::PATH,
            Access::Any,
            get(metrics::get_metrics),
        ),
    ]
}

/// The whole HTTP service.
pub fn app(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let (mut api, mut root) = (Router::new(), Router::new());
    let scanning = state.settings.secret_scanning_path.clone();
    for Operation {
        path: route,
        handler,
        access,
        ..
    } in operations()
    {
        let handler: MethodRouter<AppState> = handler
            .layer::<_, Infallible>(Extension(access))
            .layer(Extension(RoutePath(route)));
        // The report endpoints live where the operator registered them with the providers.
        let path = match route.strip_prefix(leaks::DEFAULT_PATH) {
            Some(rest) => format!("{scanning}{rest}"),
            None => route.to_owned(),
        };
        // Two operations on one path merge into one method router.
        match path.strip_prefix("/v1") {
            Some(rest) => api = api.route(rest, handler),
            None => root = root.route(&path, handler),
        }
    }
    let api = api
        // After routing: a method no route has is 405 before any body check.
        .route_layer(middleware::from_fn(body::refuse_unexpected_body))
        .route_layer(middleware::from_fn(metrics::tag_route))
        .method_not_allowed_fallback(error::method_not_allowed);
    root.merge(usage::ingest_routes())
        .merge(dashboard::routes())
        .route_layer(middleware::from_fn(body::refuse_unexpected_body))
        .route_layer(middleware::from_fn(metrics::tag_route))
        .nest("/v1", api)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(log_requests))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .with_state(state)
}

/// The answer of the health checks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (alive) or `ready`.
    pub status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "Alive.", body = crate::routes::Status),
    ),
    security(),
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready.", body = crate::routes::Status),
        (status = 503, description = "`not_ready`: the database is not reachable, or does not take a write (a full or failing disk); carries Retry-After. `clock_skew`: the edge's clock is too far from this one.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(),
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, AppError> {
    state.store.ping().await.map_err(|_| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The database is not reachable",
        )
    })?;
    write_probe(&state).await?;
    skew::check_ready(&state)?;
    Ok(Json(Status { status: "ready" }))
}

/// Readiness's write probe: not ready while a write does not commit (`store::health`: a real
/// write, at most one a second however many calls arrive).
async fn write_probe(state: &AppState) -> Result<(), AppError> {
    use crate::store::ProbeFailure;
    state.store.probe_write().await.map_err(|e| {
        let detail = match e {
            ProbeFailure::Unwritable(_) => "the disk refuses writes (full or failing)",
            ProbeFailure::TimedOut => "a write did not commit in time",
            _ => "a write failed",
        };
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The database does not take writes",
        )
        .with_detail(detail)
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(error::STORAGE_FULL_RETRY_AFTER),
        )
    })
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1.", body = Object),
    ),
    security(),
)]
async fn openapi() -> Result<Response, AppError> {
    let text = OPENAPI.as_deref().map_err(AppError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response())
}

/// Logs one line per request: method, path (never the query or a body, so never a key),
/// status and duration; and the cause of any 500, once.
async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, path, status, elapsed_ms, cause, "request failed");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, "request");
    }
    response
}
