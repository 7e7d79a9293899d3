//! The web dashboard: pages and assets served by the control plane itself.

use axum::Router;

use crate::AppState;

/// The dashboard's routes, at the root.
pub fn routes() -> Router<AppState> {
    Router::new()
}
