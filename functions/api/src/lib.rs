//! The API function: tenant API (`/v1`), operator API (`/admin`) and `/health`, as one axum
//! router that `lambda_http` serves in Lambda and the local runner serves on 127.0.0.1.
#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use axum::{Router, middleware, routing::get};
use sluice::{
    ApiError, Config,
    aws::AwsClients,
    clock,
    config::ConfigError,
    idempotency::{IdempotencyLayer, Scope},
};

pub mod admin;
pub mod auth_layer;
pub mod docs;
pub mod health;
pub mod json_body;
pub mod lambda;
pub mod openapi;
pub mod portal;
pub mod v1;

/// Idempotency scope of operator requests (tenant scopes are tenant ids, which never collide).
pub const ADMIN_SCOPE: &str = "admin";

/// Everything a request handler needs, built once per cold start.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
    /// SHA-256 of the admin key (required by this function).
    pub admin_key_sha256: [u8; 32],
    /// Tenant API keys this instance looked up recently.
    pub api_keys: Arc<sluice::auth::ApiKeyCache>,
    /// The Stripe API (`/v1/billing/*`); `None` when no key is configured. Its key is decrypted
    /// on first use and cached for the instance's life.
    pub stripe: Option<Arc<sluice::stripe::client::StripeClient>>,
}

impl AppState {
    /// Checks the settings this function cannot run without.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        let admin_key_sha256 = config.require_admin_key()?;
        let stripe = match &config.billing.stripe_key {
            None => None,
            Some(source) => Some(Arc::new(
                sluice::stripe::client::StripeClient::new(
                    &config.billing.stripe_api_base,
                    source.clone(),
                    aws.kms.clone(),
                    &config.kms_key_id,
                )
                .map_err(|e| ConfigError {
                    name: "STRIPE_API_BASE",
                    reason: format!("no HTTP client for it: {e}"),
                })?,
            )),
        };
        Ok(AppState {
            stripe,
            api_keys: Arc::new(sluice::auth::ApiKeyCache::new(config.api_key_cache)),
            config: Arc::new(config),
            aws,
            admin_key_sha256,
        })
    }

    /// Seals and opens secrets at rest under the configured KMS key.
    pub fn sealer(&self) -> sluice::sealing::Sealer {
        sluice::sealing::Sealer::new(self.aws.kms.clone(), &self.config.kms_key_id)
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
    // Idempotency runs inside authentication, so that the tenant (its scope) is known.
    let idempotency = |scope| {
        IdempotencyLayer::new(state.aws.dynamodb.clone(), state.table(), scope)
            .ttl(Duration::from_secs(
                clock::days(state.config.idempotency_ttl_days) as u64,
            ))
            .required(state.config.idempotency_required)
            .sealer(state.sealer())
    };
    // Framework rejections become problems inside the idempotency layer too, so that a stored
    // refusal is the problem the client saw.
    let problems = || middleware::map_response(sluice::error::problem_for_rejection);
    // The portal calls this router in-process with the session's tenant (see `portal`).
    let v1_unauthenticated = v1::routes()
        .fallback(not_found)
        .layer(problems())
        .layer(idempotency(Scope::tenant()));
    let portal = portal::routes(
        state.clone(),
        v1_unauthenticated.clone().with_state(state.clone()),
    );
    let v1 = v1_unauthenticated.layer(middleware::from_fn_with_state(
        state.clone(),
        auth_layer::require_tenant,
    ));
    let admin = admin::routes()
        .fallback(not_found)
        .layer(problems())
        .layer(idempotency(Scope::fixed(ADMIN_SCOPE)))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth_layer::require_admin,
        ));
    Router::new()
        .route("/health", get(health::health))
        .merge(openapi::routes())
        .nest("/v1", v1)
        .nest("/admin", admin)
        .merge(portal)
        .fallback(not_found)
        // Every refusal is problem+json, also those axum makes (405, 413, extractor rejections).
        .layer(problems())
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// One span per request, carrying the ids a reader of the logs needs (the tenant id is recorded
/// once authentication has found it). Bodies and headers are never logged.
async fn request_span(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let request_id = lambda_http::RequestExt::lambda_context_ref(&req)
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        request_id,
        tenant_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    async move {
        let res = next.run(req).await;
        tracing::Span::current().record("status", res.status().as_u16());
        tracing::info!("handled");
        res
    }
    .instrument(span)
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}
