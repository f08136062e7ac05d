//! Operator API (`/admin/*`), behind the admin key.

use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, post},
};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    idempotency::SealStoredBody,
    ids,
    tenants::{self, NewTenant},
};

use utoipa::ToSchema;

use crate::{AppState, json_body::JsonBody};

pub mod reconcile;
pub mod secrets;
pub mod stats;
pub mod stripe_events;

/// Routes mounted under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", post(create_tenant))
        .route("/tenants/{id}/api-keys", post(add_api_key))
        .route(
            "/tenants/{id}/portal-sessions",
            post(crate::portal::access::mint_for_tenant),
        )
        .route("/tenants/{id}/api-keys/{key_id}", delete(revoke_api_key))
        .merge(stripe_events::routes())
        .route("/stripe/reconcile", post(reconcile::run))
        .merge(stats::routes())
        .route("/secrets/rewrap", post(secrets::rewrap))
}

/// The body of `POST /admin/tenants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1–200 characters (trimmed).
    #[schema(example = "Acme", min_length = 1, max_length = 200)]
    name: String,
    /// Monthly spending budget in minor units, 1 … 10^12; budget notifications at 80 % and 100 %.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    monthly_budget_minor: Option<i64>,
    /// Three-letter ISO 4217 code (default `usd`).
    #[schema(example = "usd")]
    currency: Option<String>,
}

/// The answer of `POST /admin/tenants`: the tenant and its first API key (shown once).
#[derive(Serialize, ToSchema)]
pub struct TenantCreatedOut {
    /// `tnt_…`
    pub id: String,
    pub name: String,
    /// Lowercase ISO 4217.
    pub currency: String,
    pub monthly_budget_minor: Option<i64>,
    /// `sk_…`: shown once, never again.
    pub api_key: String,
    /// `key_…`: names the key to revoke it.
    pub key_id: String,
}

/// The answer of `POST /admin/tenants/{id}/api-keys`: a new key (shown once).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    /// `key_…`
    pub key_id: String,
    /// `sk_…`: shown once, never again.
    pub api_key: String,
}

/// `POST /admin/tenants`: the tenant and its first API key.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    tag = "admin",
    summary = "Create a tenant and its first API key",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created; the API key is shown only in this answer", body = TenantCreatedOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 422, description = "`name`, `monthly_budget_minor` or `currency` is out of range"),
    ),
    security(("admin_key" = [])),
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateTenant>,
) -> ApiResult<(
    StatusCode,
    Extension<SealStoredBody>,
    Json<TenantCreatedOut>,
)> {
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
        Json(TenantCreatedOut {
            id: tenant.id.into_string(),
            name: tenant.name,
            currency: tenant.currency,
            monthly_budget_minor: tenant.monthly_budget_minor,
            api_key: key.api_key,
            key_id: key.key_id,
        }),
    ))
}

/// `POST /admin/tenants/{id}/api-keys`: another key for the tenant (several may be live at once,
/// for a rotation).
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/api-keys",
    tag = "admin",
    summary = "Issue another API key for a tenant",
    params(("id" = String, Path, description = "Tenant id (`tnt_…`)")),
    responses(
        (status = 201, description = "Issued; the key is shown only in this answer", body = ApiKeyOut),
        (status = 404, description = "No such tenant"),
    ),
    security(("admin_key" = [])),
)]
pub async fn add_api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<SealStoredBody>, Json<ApiKeyOut>)> {
    if !ids::has_prefix(&id, "tnt") {
        return Err(ApiError::not_found("tenant"));
    }
    let key = tenants::add_api_key(&state.aws.dynamodb, state.table(), &id).await?;
    Ok((
        StatusCode::CREATED,
        Extension(SealStoredBody),
        Json(ApiKeyOut {
            key_id: key.key_id,
            api_key: key.api_key,
        }),
    ))
}

/// `DELETE /admin/tenants/{id}/api-keys/{key_id}`: `204`; refused at once on this instance, on
/// other warm instances within `API_KEY_CACHE_SECS`.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}/api-keys/{key_id}",
    tag = "admin",
    summary = "Revoke an API key",
    params(
        ("id" = String, Path, description = "Tenant id (`tnt_…`)"),
        ("key_id" = String, Path, description = "Key id (`key_…`)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key for this tenant"),
    ),
    security(("admin_key" = [])),
)]
pub async fn revoke_api_key(
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
