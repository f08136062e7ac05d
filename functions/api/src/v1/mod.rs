//! Tenant API (`/v1/*`), behind a tenant API key.

use axum::Router;

use crate::AppState;

/// Routes mounted under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
