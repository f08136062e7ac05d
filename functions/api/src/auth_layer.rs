//! Authentication middleware: bearer keys on `/v1`, the admin key on `/admin`.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use sluice::{ApiError, auth};

use crate::AppState;

/// Resolves `Authorization: Bearer <key>` to a tenant and puts its [`auth::TenantId`] in the
/// request extensions; `401` otherwise.
pub async fn require_tenant(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = auth::bearer_token(req.headers()).ok_or_else(|| {
        ApiError::unauthorized("missing or malformed Authorization: Bearer header")
    })?;
    let tenant = state
        .api_keys
        .tenant_for(&state.aws.dynamodb, state.table(), key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    tracing::Span::current().record("tenant_id", tenant.0.as_str());
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
}

/// Checks `X-Admin-Key` against the configured digest, in constant time; `401` otherwise.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    auth::check_admin(req.headers(), &state.admin_key_sha256)?;
    Ok(next.run(req).await)
}
