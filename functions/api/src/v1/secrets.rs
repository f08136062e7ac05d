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
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    clock,
    idempotency::{CommitError, StoredResponse, commit_with_response},
    sealing::{self, SealContext, Secret},
    table::{self, Item, ItemExt, bin, n, s},
};

use super::{Lock, invalid, lock_ref};
use crate::AppState;

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

fn view(item: &Item) -> Value {
    json!({
        "provider": item.get_s(attr::PROVIDER),
        "hint": item.get_s(attr::HINT),
        "created_at": item.get_i64(attr::CREATED_AT),
        "updated_at": item.get_i64(attr::UPDATED_AT),
    })
}

fn secret_key(tenant_id: &str, provider: &str) -> Item {
    table::key(
        table::tenant_pk(tenant_id),
        table::provider_secret_sk(provider),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    provider: String,
    value: String,
}

/// `POST /v1/secrets {provider, value}`: `201 {provider, hint, created_at}`; `409` if that
/// provider exists. The write and the stored answer commit in one transaction.
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let req: CreateSecret = crate::admin::parse_json(&body)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSecret {
    value: String,
}

/// `PUT /v1/secrets/{provider} {value}`: replaces (or creates) the provider's key.
pub async fn replace(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(provider): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Value>> {
    check_provider(&provider)?;
    let req: ReplaceSecret = crate::admin::parse_json(&body)?;
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
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "data": data })))
}

/// `DELETE /v1/secrets/{provider}`: `204`, `404` if absent.
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
