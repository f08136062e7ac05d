//! Provider secrets (a tenant's LLM/TTS/… API keys): `/v1/secrets[/{provider}]`.
//!
//! Item: `TENANT#{tnt}` / `SECRET#{provider}` with `provider`, `ciphertext` (KMS, context
//! `{tenant_id, purpose: provider-key}`), `hint` (`…last4`), `created_at`, `updated_at`. The
//! plaintext is never returned; server code reads it with [`sluice::sealing::provider_key`].

use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, TransactWriteItem};
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    clock,
    idempotency::{CommitError, StoredResponse, commit_with_response},
    sealing::{self, SealContext, Secret},
    table::{self, Item, ItemExt, bin, n, s},
};

use utoipa::ToSchema;

use super::{Lock, invalid, lock_ref};
use crate::{AppState, json_body::JsonBody};

const MAX_PROVIDER_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 8192;

mod attr {
    pub const PROVIDER: &str = "provider";
    pub const HINT: &str = "hint";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
}

/// Provider names are short lowercase identifiers (`openai`, `eleven-labs`, …).
fn valid_provider(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PROVIDER_LEN
        && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn check_provider(p: &str) -> ApiResult<()> {
    if valid_provider(p) {
        Ok(())
    } else {
        Err(invalid(format!(
            "`provider` must be 1–{MAX_PROVIDER_LEN} lowercase letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn check_value(v: &str) -> ApiResult<Secret> {
    if v.is_empty() || v.len() > MAX_VALUE_LEN || v.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`value` must be 1–{MAX_VALUE_LEN} bytes without control characters"
        )));
    }
    Ok(Secret::new(v))
}

/// A provider secret as the tenant sees it: never its value.
#[derive(Serialize, ToSchema)]
#[schema(as = ProviderSecret)]
pub struct SecretOut {
    #[schema(example = "openai")]
    pub provider: String,
    /// The value's last characters (`…last4`), to recognise it.
    #[schema(example = "…x7Qa")]
    pub hint: String,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds.
    pub updated_at: i64,
}

/// The answer of `GET /v1/secrets`.
#[derive(Serialize, ToSchema)]
pub struct SecretListOut {
    pub data: Vec<SecretOut>,
}

fn view(item: &Item) -> SecretOut {
    SecretOut {
        provider: item.get_s(attr::PROVIDER).unwrap_or_default().to_owned(),
        hint: item.get_s(attr::HINT).unwrap_or_default().to_owned(),
        created_at: item.get_i64(attr::CREATED_AT).unwrap_or_default(),
        updated_at: item.get_i64(attr::UPDATED_AT).unwrap_or_default(),
    }
}

fn secret_key(tenant_id: &str, provider: &str) -> Item {
    table::key(
        table::tenant_pk(tenant_id),
        table::provider_secret_sk(provider),
    )
}

/// The body of `POST /v1/secrets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// 1–64 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit.
    #[schema(example = "openai", max_length = 64)]
    provider: String,
    /// The key: 1–8192 bytes without control characters. Stored KMS-sealed, never returned.
    #[schema(max_length = 8192)]
    value: String,
}

/// `POST /v1/secrets {provider, value}`: `201 {provider, hint, created_at}`; `409` if that
/// provider exists. The write and the stored answer commit in one transaction.
#[utoipa::path(
    post,
    path = "/v1/secrets",
    tag = "secrets",
    summary = "Store a provider's API key, sealed with KMS",
    request_body = CreateSecret,
    responses(
        (status = 201, description = "Stored; the value is never returned", body = SecretOut,
            headers(("Location" = String, description = "`/v1/secrets/{provider}`"))),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 409, description = "A secret for this provider exists (replace it with `PUT`)"),
        (status = 422, description = "`provider` or `value` is unacceptable, or the value cannot be sealed"),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    JsonBody(req): JsonBody<CreateSecret>,
) -> ApiResult<Response> {
    check_provider(&req.provider)?;
    let value = check_value(&req.value)?;
    let ciphertext = state
        .sealer()
        .seal_secret(SealContext::provider_key(&tenant_id), &value)
        .await?;
    let now = clock::now_epoch();
    let mut item = secret_key(&tenant_id, &req.provider);
    item.insert(attr::PROVIDER.into(), s(&req.provider));
    item.insert(sealing::CIPHERTEXT.into(), bin(ciphertext));
    item.insert(attr::HINT.into(), s(value.hint()));
    item.insert(attr::CREATED_AT.into(), n(now));
    item.insert(attr::UPDATED_AT.into(), n(now));
    let response = StoredResponse::json(StatusCode::CREATED, &view(&item))
        .with_location(format!("/v1/secrets/{}", req.provider));
    let put = Put::builder()
        .table_name(state.table())
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table and item set");
    let items = vec![TransactWriteItem::builder().put(put).build()];
    match commit_with_response(&state.aws.dynamodb, items, lock_ref(&lock), response).await {
        Ok(res) => Ok(res),
        Err(CommitError::Cancelled(_)) => Err(ApiError::conflict(format!(
            "a secret for provider `{}` exists; replace it with PUT /v1/secrets/{}",
            req.provider, req.provider
        ))),
        Err(err) => Err(err.into()),
    }
}

/// The body of `PUT /v1/secrets/{provider}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSecret {
    /// The key: 1–8192 bytes without control characters.
    #[schema(max_length = 8192)]
    value: String,
}

/// `PUT /v1/secrets/{provider} {value}`: replaces (or creates) the provider's key.
#[utoipa::path(
    put,
    path = "/v1/secrets/{provider}",
    tag = "secrets",
    summary = "Replace (or create) a provider's API key",
    params(("provider" = String, Path, description = "Provider name (`openai`, …)")),
    request_body = ReplaceSecret,
    responses(
        (status = 200, description = "Stored; the value is never returned", body = SecretOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 422, description = "`provider` or `value` is unacceptable, or the value cannot be sealed"),
    ),
    security(("bearer" = [])),
)]
pub async fn replace(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(provider): Path<String>,
    JsonBody(req): JsonBody<ReplaceSecret>,
) -> ApiResult<Json<SecretOut>> {
    check_provider(&provider)?;
    let value = check_value(&req.value)?;
    let ciphertext = state
        .sealer()
        .seal_secret(SealContext::provider_key(&tenant_id), &value)
        .await?;
    let now = clock::now_epoch();
    let out = state
        .aws
        .dynamodb
        .update_item()
        .table_name(state.table())
        .set_key(Some(secret_key(&tenant_id, &provider)))
        .update_expression(
            "SET #provider = :provider, #ct = :ct, #hint = :hint, #updated = :now, \
             #created = if_not_exists(#created, :now)",
        )
        .expression_attribute_names("#provider", attr::PROVIDER)
        .expression_attribute_names("#ct", sealing::CIPHERTEXT)
        .expression_attribute_names("#hint", attr::HINT)
        .expression_attribute_names("#updated", attr::UPDATED_AT)
        .expression_attribute_names("#created", attr::CREATED_AT)
        .expression_attribute_values(":provider", s(&provider))
        .expression_attribute_values(":ct", bin(ciphertext))
        .expression_attribute_values(":hint", s(value.hint()))
        .expression_attribute_values(":now", n(now))
        .return_values(ReturnValue::AllNew)
        .send()
        .await?;
    Ok(Json(view(&out.attributes.unwrap_or_default())))
}

/// `GET /v1/secrets`: every provider, redacted to a hint.
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "secrets",
    summary = "The tenant's provider keys, redacted to a hint",
    responses((status = 200, description = "Every provider secret", body = SecretListOut)),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
) -> ApiResult<Json<SecretListOut>> {
    let mut data = Vec::new();
    let mut start = None;
    loop {
        let out = state
            .aws
            .dynamodb
            .query()
            .table_name(state.table())
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(table::tenant_pk(&tenant_id)))
            .expression_attribute_values(":prefix", s(table::provider_secret_sk("")))
            // The ciphertext never leaves the table on this path.
            .projection_expression("#provider, #hint, #created, #updated")
            .expression_attribute_names("#provider", attr::PROVIDER)
            .expression_attribute_names("#hint", attr::HINT)
            .expression_attribute_names("#created", attr::CREATED_AT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        data.extend(out.items().iter().map(view));
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(Json(SecretListOut { data }))
}

/// `DELETE /v1/secrets/{provider}`: `204`, `404` if absent.
#[utoipa::path(
    delete,
    path = "/v1/secrets/{provider}",
    tag = "secrets",
    summary = "Delete a provider's API key",
    params(("provider" = String, Path, description = "Provider name (`openai`, …)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(provider): Path<String>,
    lock: Lock,
) -> ApiResult<Response> {
    if !valid_provider(&provider) {
        return Err(ApiError::not_found("secret"));
    }
    let delete = Delete::builder()
        .table_name(state.table())
        .set_key(Some(secret_key(&tenant_id, &provider)))
        .condition_expression("attribute_exists(pk)")
        .build()
        .expect("table and key set");
    let response = StoredResponse::empty(StatusCode::NO_CONTENT);
    let items = vec![TransactWriteItem::builder().delete(delete).build()];
    match commit_with_response(&state.aws.dynamodb, items, lock_ref(&lock), response).await {
        Ok(res) => Ok(res),
        Err(CommitError::Cancelled(_)) => Err(ApiError::not_found("secret")),
        Err(err) => Err(err.into()),
    }
}
