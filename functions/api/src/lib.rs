//! The API function: tenant API (`/v1`), operator API (`/admin`) and `/health`, as one axum
//! router that `lambda_http` serves in Lambda and the local runner serves on 127.0.0.1.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::{Router, middleware, routing::get};
use sluice::{ApiError, Config, aws::AwsClients, config::ConfigError};

pub mod admin;
pub mod auth_layer;
pub mod health;
pub mod v1;

/// Everything a request handler needs, built once per cold start.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
    /// SHA-256 of the admin key (required by this function).
    pub admin_key_sha256: [u8; 32],
}

impl AppState {
    /// Checks the settings this function cannot run without.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        let admin_key_sha256 = config.require_admin_key()?;
        Ok(AppState {
            config: Arc::new(config),
            aws,
            admin_key_sha256,
        })
    }

    /// The table every handler reads and writes.
    pub fn table(&self) -> &str {
        &self.config.table_name
    }
}

/// The whole API, ready for `lambda_http::run` or a local server.
pub fn router(state: AppState) -> Router {
    // `layer` (not `route_layer`): unknown paths under /v1 and /admin answer 401 before 404, so
    // an unauthenticated caller learns nothing about which routes exist.
    let v1 = v1::routes()
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth_layer::require_tenant,
        ));
    let admin = admin::routes()
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth_layer::require_admin,
        ));
    Router::new()
        .route("/health", get(health::health))
        .nest("/v1", v1)
        .nest("/admin", admin)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}
