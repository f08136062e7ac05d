//! Stripe ingress: `POST /webhooks/stripe`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::{Router, routing::post};
use sluice::{ApiError, Config, aws::AwsClients, config::ConfigError};

/// Everything the handler needs, built once per cold start.
#[derive(Clone)]
pub struct IngressState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
}

impl IngressState {
    /// Checks the settings this function cannot run without.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        config.require_stripe_secrets()?;
        Ok(IngressState {
            config: Arc::new(config),
            aws,
        })
    }
}

/// The ingress router, ready for `lambda_http::run` or a local server.
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route(
            "/webhooks/stripe",
            post(|| async { ApiError::internal(anyhow::anyhow!("not built yet")) }),
        )
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}
