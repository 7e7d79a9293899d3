//! Leaked keys die on their own: the secret-scanning report endpoints (GitHub's and GitLab's
//! formats), self-revocation by whoever holds a key (RFC 7009), and what the account sees.
//!
//! The one idea: `shared` tells a genuine key from a look-alike with no database (format,
//! checksum, environment, tag), so a report's false positives cost nothing but the check, and a
//! genuine key goes through the keys' one revoke path, published to the edge as every revocation
//! is. A report is trusted only once its signature verifies over the raw body, before a byte of
//! it is parsed. `docs/secret-scanning.md` is the operator's and the customer's guide.
//!
//! - [`signature`]: the providers' public keys, fetched and cached, and the signature check.
//! - [`ops`]: the leak transaction (record, audit, revoke unless "notify only"), idempotent.
//! - [`limit`]: token buckets by name, bounded in number.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::key::{self, KeyId};

use crate::auth::Caller;
use crate::client_addr;
use crate::error::{AppError, Json, KeyIdPath, Result, parse_json};
use crate::events::Event;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::keys as db;
use crate::store::leaks::{self as leak_db, Leak, LeakResponse, Reporter};

pub mod limit;
pub mod ops;
pub mod signature;

pub use signature::{ProviderKeys, SignatureError};

/// Where the report endpoints live by default (`--secret-scanning-path` moves them).
pub const DEFAULT_PATH: &str = "/secret-scanning";
/// Largest report body read, bytes: 1,000 tokens with long URLs fit.
pub const MAX_REPORT_BYTES: usize = 1 << 20;
/// Most tokens in one report.
pub const MAX_TOKENS: usize = 1000;
/// Largest self-revocation body read, bytes.
pub const MAX_HOLDER_BYTES: usize = 4096;
/// Default reports a minute per provider key identifier.
pub const DEFAULT_REPORTS_PER_MINUTE: u32 = 600;
/// Default self-revocations a minute per client network.
pub const DEFAULT_HOLDER_PER_MINUTE: u32 = 30;
/// Longest URL or source kept from a report (longer ones are cut).
const MAX_PLACE_CHARS: usize = 2048;
/// Longest token type echoed back.
const MAX_TYPE_CHARS: usize = 100;

/// The secret-scanning and self-revocation state: each provider's keys and the budgets.
#[derive(Debug)]
pub struct LeakGuard {
    /// GitHub's keys (`None`: the GitHub endpoint is not configured, 404).
    pub github: Option<ProviderKeys>,
    /// GitLab's keys.
    pub gitlab: Option<ProviderKeys>,
    /// Reports per (provider, key identifier).
    reports: limit::Buckets<(Reporter, String)>,
    /// Self-revocations per client network.
    holders: limit::Buckets<IpAddr>,
}

impl LeakGuard {
    /// The guard for the providers whose public-key document URLs are given.
    pub fn new(
        github_keys_url: Option<String>,
        gitlab_keys_url: Option<String>,
        reports_per_minute: u32,
        holder_per_minute: u32,
    ) -> Self {
        Self {
            github: github_keys_url.map(|u| ProviderKeys::new("github", u)),
            gitlab: gitlab_keys_url.map(|u| ProviderKeys::new("gitlab", u)),
            reports: limit::Buckets::new(reports_per_minute),
            holders: limit::Buckets::new(holder_per_minute),
        }
    }

    fn provider(&self, reporter: Reporter) -> Option<&ProviderKeys> {
        match reporter {
            Reporter::Github => self.github.as_ref(),
            Reporter::Gitlab => self.gitlab.as_ref(),
            Reporter::Holder => None,
        }
    }
}

/// One token of a report: GitHub sends `{token, type, url, source}`, GitLab `{type, token, url}`.
/// Unknown members are ignored (providers add them).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReportedToken {
    /// The text found.
    pub token: String,
    /// The provider's name for the token's pattern.
    #[serde(rename = "type", default)]
    pub token_type: String,
    /// Where it was found.
    #[serde(default)]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// What kind of place (GitHub: `content`, `commit`, `pull_request_description`, ...).
    #[serde(default)]
    #[schema(nullable = false)]
    pub source: Option<String>,
}

/// The verdict on one reported token, in GitHub's feedback format.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenLabel {
    /// SHA-256 of the token, lowercase hex (the token itself is never sent back).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub token_hash: String,
    /// The reported `type`, echoed.
    pub token_type: String,
    /// `true_positive`: one of our keys (revoked now unless its account chose "notify only");
    /// `false_positive`: not a key we issued.
    #[schema(schema_with = label)]
    pub label: &'static str,
}

fn label() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["true_positive", "false_positive"]))
        .into()
}

fn cut(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bad_signature(e: SignatureError) -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        "The report's signature does not verify",
    )
    .with_detail(e.to_string())
}

fn too_many_requests(retry_after: u64, what: &'static str) -> AppError {
    AppError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", what)
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after))
}

/// A report's whole handling: signature over the raw body, budget of the signing key, then the
/// tokens, checked with `shared` and (the genuine ones only) recorded in one transaction.
async fn handle_report(
    state: &AppState,
    reporter: Reporter,
    request: Request,
) -> Result<Vec<TokenLabel>> {
    let (parts, body) = request.into_parts();
    let (id_header, sig_header) = match reporter {
        Reporter::Gitlab => (
            "gitlab-public-key-identifier",
            "gitlab-public-key-signature",
        ),
        _ => (
            "github-public-key-identifier",
            "github-public-key-signature",
        ),
    };
    let (Some(identifier), Some(signature)) = (
        header_text(&parts.headers, id_header),
        header_text(&parts.headers, sig_header),
    ) else {
        return Err(bad_signature(SignatureError::Missing));
    };
    // Unsigned requests are refused alike whether or not the provider is configured.
    let provider = state
        .leaks
        .provider(reporter)
        .ok_or_else(AppError::not_found)?;
    let bytes = crate::body::read(&parts.headers, body, MAX_REPORT_BYTES).await?;
    let now_ms = state.clock.monotonic_ms();
    if let Err(e) = provider.verify(identifier, signature, &bytes, now_ms).await {
        tracing::warn!(provider = reporter.name(), identifier, error = %e, "secret-scanning report refused");
        return Err(bad_signature(e));
    }
    // Only a verified report spends its key's budget: a forger cannot spend the provider's.
    if let Err(retry_after) = state
        .leaks
        .reports
        .take((reporter, identifier.to_owned()), now_ms)
    {
        return Err(too_many_requests(
            retry_after,
            "Too many reports signed with this key",
        ));
    }
    let tokens: Vec<ReportedToken> = parse_json(&bytes)?;
    if tokens.len() > MAX_TOKENS {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_tokens",
            "The report has too many tokens",
        )
        .with_field("max_tokens", MAX_TOKENS));
    }
    let actor = Actor {
        actor: format!("secret_scanning:{}", reporter.name()),
        source: client_addr::client_ip(&parts, &state.settings.proxies).map(|ip| ip.to_string()),
    };
    Ok(label_tokens(state, reporter, actor, &tokens).await?)
}

/// Labels `tokens`: `shared`'s check first (a look-alike costs no database read), then the
/// genuine ones in one transaction.
pub async fn label_tokens(
    state: &AppState,
    reporter: Reporter,
    actor: Actor,
    tokens: &[ReportedToken],
) -> Result<Vec<TokenLabel>, StoreError> {
    let mut sightings = Vec::new();
    let mut genuine = Vec::with_capacity(tokens.len());
    for t in tokens {
        // Any environment: a leaked staging key is still a leak.
        match key::check(&t.token, &state.keyring, None) {
            Ok(claims) => {
                genuine.push(true);
                sightings.push(ops::Sighting {
                    claims,
                    url: cut(t.url.as_deref().unwrap_or(""), MAX_PLACE_CHARS),
                    source: t.source.as_deref().map(|s| cut(s, MAX_PLACE_CHARS)),
                });
            }
            Err(_) => genuine.push(false),
        }
    }
    let ours = if sightings.is_empty() {
        Vec::new()
    } else {
        let now = state.clock.now();
        let handled = state
            .store
            .write(move |tx| ops::record(tx, reporter, &actor, &sightings, now))
            .await?;
        if handled.revoked > 0 {
            tracing::warn!(
                reporter = reporter.name(),
                revoked = handled.revoked,
                "leaked keys revoked"
            );
            state.publish.wake();
        }
        handled.ours
    };
    let mut ours = ours.into_iter();
    Ok(tokens
        .iter()
        .zip(genuine)
        .map(|(t, genuine)| TokenLabel {
            token_hash: hex::encode(Sha256::digest(t.token.as_bytes())),
            token_type: cut(&t.token_type, MAX_TYPE_CHARS),
            label: if genuine && ours.next().unwrap_or(false) {
                "true_positive"
            } else {
                "false_positive"
            },
        })
        .collect())
}

/// `POST /secret-scanning/github`: GitHub's secret-scanning partner reports.
///
/// The body is verified against `Github-Public-Key-Signature` (ECDSA P-256 / SHA-256, base64 of
/// ASN.1 DER) with the key `Github-Public-Key-Identifier` names, before it is parsed. Each token
/// is checked offline; each genuine key is recorded where it was found and revoked (reason
/// `leaked`) unless its account chose "notify only". A replayed report changes nothing.
#[utoipa::path(
    post,
    path = "/secret-scanning/github",
    summary = "GitHub secret-scanning report",
    description = "GitHub's secret-scanning partner endpoint (the path prefix is `--secret-scanning-path`, `/secret-scanning` by default). The raw body must verify against `Github-Public-Key-Signature` with the key named by `Github-Public-Key-Identifier` from the configured public-key document (`--github-keys-url`); it is parsed only then. At most 1,000 tokens and 1 MiB. Each genuine, active key is revoked at once (reason `leaked`) unless its account chose \"notify only\"; a look-alike is a false positive and changes nothing. Replays change nothing. Answers GitHub's feedback format, one entry per token, in order. 404 when GitHub reports are not configured.",
    request_body(content = Vec<crate::leaks::ReportedToken>, content_type = "application/json"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "The signing key's identifier in GitHub's public-key document."),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature over the raw body."),
    ),
    responses(
        (status = 200, description = "One label per token, in order.", body = Vec<crate::leaks::TokenLabel>),
        (status = 400, description = "Body is not valid JSON (after a valid signature).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing headers, unknown key identifier, or a signature that does not verify (`invalid_signature`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "GitHub reports are not configured.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB, or more than 1,000 tokens (`too_many_tokens`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "JSON of the wrong shape.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reports signed with this key; see Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(),
)]
pub async fn report_github_leaks(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Vec<TokenLabel>>> {
    handle_report(&state, Reporter::Github, request)
        .await
        .map(Json)
}

/// `POST /secret-scanning/gitlab`: GitLab's automatic response to leaked secrets. The same as
/// GitHub's with GitLab's headers; GitLab retries every answer of 400 or more, so the endpoint
/// is idempotent.
#[utoipa::path(
    post,
    path = "/secret-scanning/gitlab",
    summary = "GitLab leaked-secret report",
    description = "GitLab's partner endpoint for leaked secrets: the same handling as the GitHub endpoint, with `Gitlab-Public-Key-Identifier` / `Gitlab-Public-Key-Signature` and the public-key document at `--gitlab-keys-url`. The body is `[{type, token, url}]`. GitLab retries every answer of 400 or more; a repeated report changes nothing. 404 when GitLab reports are not configured.",
    request_body(content = Vec<crate::leaks::ReportedToken>, content_type = "application/json"),
    params(
        ("Gitlab-Public-Key-Identifier" = String, Header, description = "The signing key's identifier in GitLab's public-key document."),
        ("Gitlab-Public-Key-Signature" = String, Header, description = "Base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature over the raw body."),
    ),
    responses(
        (status = 200, description = "Received: one label per token, in order.", body = Vec<crate::leaks::TokenLabel>),
        (status = 400, description = "Body is not valid JSON (after a valid signature).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing headers, unknown key identifier, or a signature that does not verify (`invalid_signature`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "GitLab reports are not configured.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB, or more than 1,000 tokens (`too_many_tokens`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "JSON of the wrong shape.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reports signed with this key; see Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(),
)]
pub async fn report_gitlab_leaks(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Vec<TokenLabel>>> {
    handle_report(&state, Reporter::Gitlab, request)
        .await
        .map(Json)
}

/// The account's leaks, or one key's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeakList {
    /// Newest first, at most 50.
    pub leaks: Vec<Leak>,
    /// How many there are in all.
    pub total: u64,
}

/// `GET /v1/leaks`: where the account's keys were found and what was done (the dashboard's
/// banner).
#[utoipa::path(
    get,
    path = "/v1/leaks",
    summary = "The account's leaked keys",
    description = "Where the account's keys were reported found (GitHub, GitLab) or revoked by their holder, and what was done, newest first (at most 50; `total` counts all).",
    responses(
        (status = 200, description = "The leaks.", body = crate::leaks::LeakList),
        crate::openapi::Unauthenticated,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_leaks(State(state): State<AppState>, caller: Caller) -> Result<Json<LeakList>> {
    let account = caller.account_id;
    let (leaks, total) = state
        .store
        .read(move |c| leak_db::list(c, account, None))
        .await?;
    Ok(Json(LeakList { leaks, total }))
}

/// `GET /v1/keys/{id}/leaks`: where this key was found and what was done.
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/leaks",
    summary = "Where a key was found",
    params(
        crate::error::KeyIdPath,
    ),
    responses(
        (status = 200, description = "The key's leaks, newest first.", body = crate::leaks::LeakList),
        crate::openapi::Unauthenticated,
        crate::openapi::KeyNotFound,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_key_leaks(
    State(state): State<AppState>,
    caller: Caller,
    KeyIdPath(id): KeyIdPath,
) -> Result<Json<LeakList>> {
    let account = caller.account_id;
    let found = state
        .store
        .read(move |c| -> Result<_, StoreError> {
            if db::get(c, account, id)?.is_none() {
                return Ok(None);
            }
            leak_db::list(c, account, Some(id)).map(Some)
        })
        .await?;
    let (leaks, total) = found.ok_or_else(AppError::not_found)?;
    Ok(Json(LeakList { leaks, total }))
}

/// Body of `PUT /v1/account/leak-response`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLeakResponse {
    /// `revoke`: a reported live key is revoked at once (the default). `notify`: it is only
    /// recorded and shown; the key keeps working until someone revokes it.
    pub leak_response: LeakResponse,
}

/// `PUT /v1/account/leak-response`: what happens when a partner reports one of the account's
/// live keys.
#[utoipa::path(
    put,
    path = "/v1/account/leak-response",
    summary = "Revoke leaked keys, or only notify",
    description = "What happens when GitHub or GitLab reports one of the account's live keys in public: `revoke` it at once (the default), or only `notify` (a banner, the key's audit events). A holder's self-revocation always revokes. The change is recorded in the audit trail. It governs every key, so a management token needs a Full Access key grant (else 403 `key_grant_exceeded`).",
    request_body = crate::leaks::SetLeakResponse,
    responses(
        (status = 200, description = "The setting now.", body = crate::leaks::SetLeakResponseAnswer),
        crate::openapi::Unauthenticated,
        crate::openapi::JsonBodyRefused,
        (status = 403, description = "Cross-site request, or a management token without a Full Access key grant (`key_grant_exceeded`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn set_leak_response(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SetLeakResponse>,
) -> Result<Json<SetLeakResponseAnswer>> {
    // The setting decides the fate of every key of the account, Full Access ones included: a
    // token may change it only if it may manage every key (a Full Access key grant).
    caller
        .may_manage(shared::scope::ScopeSet::FULL_ACCESS)
        .map_err(crate::auth::grant::key_grant_exceeded)?;
    let now = state.clock.now();
    let after = body.leak_response;
    state
        .store
        .write(move |tx| -> Result<_, StoreError> {
            let account = caller.account_id;
            let before = leak_db::set_leak_response(tx, account, after)?;
            if before != after {
                audit::record(
                    tx,
                    now,
                    Some(account),
                    &caller.actor,
                    &Event::LeakResponseChanged {
                        account_id: account,
                        before: before.name(),
                        after: after.name(),
                    },
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(Json(SetLeakResponseAnswer {
        leak_response: after,
    }))
}

/// The answer of `PUT /v1/account/leak-response`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SetLeakResponseAnswer {
    /// `revoke` or `notify`.
    pub leak_response: LeakResponse,
}

/// Body of `POST /v1/keys/revoke` as JSON (the form `token=...` is read too).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct HeldKey {
    /// The key to revoke.
    pub token: String,
    /// RFC 7009's hint; ignored (there is one kind of token here).
    #[serde(default)]
    #[schema(nullable = false)]
    pub token_type_hint: Option<String>,
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKey")
            .field("token", &key::hint(&self.token))
            .finish_non_exhaustive()
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn invalid_request() -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Send the key as the form parameter `token` (or JSON `{\"token\": ...}`)",
    )
}

/// The token of a self-revocation body: form `token=...` (RFC 7009) or JSON `{"token": ...}`.
fn held_token(headers: &HeaderMap, bytes: &[u8]) -> Result<String> {
    if is_json(headers) {
        let held: HeldKey = serde_json::from_slice(bytes).map_err(|_| invalid_request())?;
        return Ok(held.token);
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(bytes).map_err(|_| invalid_request())?;
    let mut tokens = pairs.into_iter().filter(|(k, _)| k == "token");
    match (tokens.next(), tokens.next()) {
        (Some((_, token)), None) => Ok(token),
        _ => Err(invalid_request()),
    }
}

/// `POST /v1/keys/revoke`: whoever holds a key can revoke it (RFC 7009 semantics).
///
/// The answer is 200 with the same empty body whatever the key was (genuine, forged, unknown,
/// already revoked), and a forged key runs the same store transaction (one key lookup) as a
/// genuine one, so neither the answer nor much of its timing says which it was. Budgeted per
/// client network; recorded as a revocation by its holder.
#[utoipa::path(
    post,
    path = "/v1/keys/revoke",
    summary = "Revoke a key you hold (RFC 7009)",
    description = "Anyone holding a Lynxo key can revoke it, with no account: send it as the form parameter `token` (`application/x-www-form-urlencoded`, RFC 7009) or as JSON `{\"token\": ...}`. A genuine key is revoked at once (reason `revoked_by_holder`) and the edge refuses it within seconds. The answer is 200 with an empty body whatever the key was, so it tells nothing about the key. Each client network may call it 30 times a minute (`--self-revoke-rate-limit`).",
    request_body(content = crate::leaks::HeldKey, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Received (whatever the key was)."),
        (status = 400, description = "No `token` parameter (`invalid_request`).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many self-revocations from this network; see Retry-After.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(),
)]
pub async fn revoke_held_key(State(state): State<AppState>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let client = client_addr::client_ip(&parts, &state.settings.proxies);
    let network = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), client_addr::network);
    if let Err(retry_after) = state
        .leaks
        .holders
        .take(network, state.clock.monotonic_ms())
    {
        return Err(too_many_requests(
            retry_after,
            "Too many self-revocations from this network",
        ));
    }
    let bytes = crate::body::read(&parts.headers, body, MAX_HOLDER_BYTES).await?;
    let token = held_token(&parts.headers, &bytes)?;
    let claims = key::check(&token, &state.keyring, None).ok();
    drop(token);
    let actor = Actor {
        actor: "holder".into(),
        source: client.map(|ip| ip.to_string()),
    };
    let now = state.clock.now();
    let revoked = state
        .store
        .write(move |tx| -> Result<u32, StoreError> {
            match claims {
                Some(claims) => {
                    let sighting = ops::Sighting {
                        claims,
                        url: String::new(),
                        source: None,
                    };
                    ops::record(tx, Reporter::Holder, &actor, &[sighting], now).map(|h| h.revoked)
                }
                // The same lookup a genuine key costs, for a key no account has.
                None => db::get(tx, 0, KeyId([0; 16])).map(|_| 0),
            }
        })
        .await?;
    if revoked > 0 {
        tracing::warn!("key revoked by its holder");
        state.publish.wake();
    }
    Ok(held_answer())
}

/// The one answer of `POST /v1/keys/revoke`.
fn held_answer() -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Body::empty(),
    )
        .into_response()
}
