//! The account API: who the caller acts for, its plan, and how much of it is in use.

use axum::extract::State;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::{Json, Result};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::{self, AccountInfo};
use crate::store::keys;
use crate::store::leaks::{self, LeakResponse};

/// `GET /v1/account`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    /// The account, its plan and the plan's limits.
    #[serde(flatten)]
    pub account: AccountInfo,
    /// Keys that work now, counted against `plan.max_active_keys`: active ones and ones in a
    /// rotation's grace period.
    pub active_keys: u32,
    /// Of those, keys in a rotation's grace period.
    pub rotating_keys: u32,
    /// What happens when GitHub or GitLab reports one of the account's live keys in public:
    /// `revoke` (the default) or `notify` only (`PUT /v1/account/leak-response`).
    pub leak_response: LeakResponse,
    /// Keys of the account reported leaked (or revoked by their holder), in all
    /// (`GET /v1/leaks` lists them).
    pub leaks: u64,
}

/// `GET /v1/account`.
#[utoipa::path(
    get,
    path = "/v1/account",
    summary = "The caller's account: name, plan and keys in use",
    responses(
        (status = 200, description = "The account.", body = crate::account::AccountView),
        crate::openapi::Unauthenticated,
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AccountView>> {
    let id = caller.account_id;
    let now = state.clock.now();
    let view = state
        .store
        .read(move |c| -> Result<_, StoreError> {
            let counts = keys::count_working(c, id, now)?;
            Ok(AccountView {
                account: accounts::account(c, id)?,
                active_keys: counts.working,
                rotating_keys: counts.rotating,
                leak_response: leaks::leak_response(c, id)?,
                leaks: leaks::count(c, id)?,
            })
        })
        .await?;
    Ok(Json(view))
}
