//! Operator API (`/admin/*`), behind the admin key.

use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::{
    ApiError, ApiResult,
    idempotency::SealStoredBody,
    ids,
    tenants::{self, NewTenant},
};

use crate::AppState;

pub mod reconcile;
pub mod secrets;
pub mod stats;
pub mod stripe_events;

/// Routes mounted under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", post(create_tenant))
        .route("/tenants/{id}/api-keys", post(add_api_key))
        .route("/tenants/{id}/api-keys/{key_id}", delete(revoke_api_key))
        .merge(stripe_events::routes())
        .route("/stripe/reconcile", post(reconcile::run))
        .merge(stats::routes())
        .route("/secrets/rewrap", post(secrets::rewrap))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    monthly_budget_minor: Option<i64>,
    currency: Option<String>,
}

/// Parses a JSON body into `T`, answering a `400` that names the cause (axum's default is text/plain).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn create_tenant(
    State(state): State<AppState>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Extension<SealStoredBody>, Json<Value>)> {
    let req: CreateTenant = parse_json(&body)?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid_field("`name` must be 1–200 characters"));
    }
    let monthly_budget_minor = tenants::validate_monthly_budget(req.monthly_budget_minor)?;
    let currency = req
        .currency
        .unwrap_or_else(|| tenants::DEFAULT_CURRENCY.to_owned())
        .to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::invalid_field(
            "`currency` must be a three-letter ISO 4217 code",
        ));
    }
    let new = NewTenant {
        name: name.to_owned(),
        monthly_budget_minor,
        currency,
    };
    let (tenant, key) = tenants::create_tenant(&state.aws.dynamodb, state.table(), new).await?;
    // The answer carries the new API key: its idempotent copy is stored only sealed.
    Ok((
        StatusCode::CREATED,
        Extension(SealStoredBody),
        Json(json!({
            "id": tenant.id,
            "name": tenant.name,
            "currency": tenant.currency,
            "monthly_budget_minor": tenant.monthly_budget_minor,
            "api_key": key.api_key,
            "key_id": key.key_id,
        })),
    ))
}

async fn add_api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<SealStoredBody>, Json<Value>)> {
    if !ids::has_prefix(&id, "tnt") {
        return Err(ApiError::not_found("tenant"));
    }
    let key = tenants::add_api_key(&state.aws.dynamodb, state.table(), &id).await?;
    Ok((
        StatusCode::CREATED,
        Extension(SealStoredBody),
        Json(json!({ "key_id": key.key_id, "api_key": key.api_key })),
    ))
}

async fn revoke_api_key(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if !ids::has_prefix(&id, "tnt") || !ids::has_prefix(&key_id, "key") {
        return Err(ApiError::not_found("api key"));
    }
    let digest = tenants::revoke_api_key(&state.aws.dynamodb, state.table(), &id, &key_id).await?;
    state.api_keys.forget(&digest);
    Ok(StatusCode::NO_CONTENT)
}
