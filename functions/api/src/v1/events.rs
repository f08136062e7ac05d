//! Outbound events: `POST /v1/events`, `GET /v1/events/{id}`, `POST /v1/events/{id}/replay`.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    fanout::{self, attr},
    ids,
    table::{self, Item, ItemExt},
};

use super::{attr_to_json, invalid, parse_optional_json};
use crate::AppState;

const MAX_TYPE_LEN: usize = 100;
/// The event item holds `data` as JSON text; DynamoDB items are at most 400 KB.
const MAX_DATA_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    #[serde(rename = "type")]
    event_type: String,
    data: Value,
}

fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// `POST /v1/events`: `202 {id, endpoints}` — one delivery per enabled endpoint whose
/// `event_types` match (an empty list matches everything).
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateEvent = crate::admin::parse_json(&body)?;
    if !valid_type(&req.event_type) {
        return Err(invalid(format!(
            "`type` must be 1–{MAX_TYPE_LEN} characters of letters, digits, `.`, `_`, `-`, `:`"
        )));
    }
    if req.data.to_string().len() > MAX_DATA_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "`data` must be at most {MAX_DATA_BYTES} bytes of JSON"
        )));
    }
    let (event, endpoints) = fanout::publish(
        &state.aws,
        state.table(),
        &state.config.queue_url,
        &tenant_id,
        &req.event_type,
        req.data,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": event.id, "endpoints": endpoints })),
    ))
}

fn valid_event_id(id: &str) -> ApiResult<()> {
    if ids::has_prefix(id, "msg") {
        Ok(())
    } else {
        Err(ApiError::not_found("event"))
    }
}

fn delivery_view(item: &Item) -> Value {
    let mut view = json!({
        "endpoint_id": item.get_s(attr::ENDPOINT_ID),
        "status": item.get_s(attr::STATUS),
        "generation": item.get_i64(attr::GENERATION),
        "attempt_count": item.get_i64(attr::ATTEMPT_COUNT).unwrap_or(0),
        "attempts": item.get(attr::ATTEMPTS).map(attr_to_json).unwrap_or_else(|| json!([])),
        "created_at": item.get_i64(attr::CREATED_AT),
        "updated_at": item.get_i64(attr::UPDATED_AT),
    });
    if let Some(next) = item.get_i64("next_attempt_at") {
        view["next_attempt_at"] = json!(next);
    }
    view
}

/// `GET /v1/events/{id}`: the event and, per endpoint, its delivery status and every attempt.
pub async fn show(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    valid_event_id(&id)?;
    let db = &state.aws.dynamodb;
    let event = fanout::get_event(db, state.table(), &tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries: Vec<Value> = table::query_prefix(
        db,
        state.table(),
        &table::tenant_pk(&tenant_id),
        &table::delivery_sk(&id, ""),
    )
    .await?
    .iter()
    .map(delivery_view)
    .collect();
    Ok(Json(json!({
        "id": event.id,
        "type": event.event_type,
        "data": event.data,
        "created_at": event.created_at,
        "endpoints": event.endpoint_ids,
        "deliveries": deliveries,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    endpoint_id: Option<String>,
}

/// `POST /v1/events/{id}/replay {endpoint_id?}`: enqueue again (also after exhaustion or after
/// the endpoint was re-enabled).
pub async fn replay(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    valid_event_id(&id)?;
    let req: Replay = parse_optional_json(&body)?;
    if let Some(ep) = &req.endpoint_id
        && !ids::has_prefix(ep, "ep")
    {
        return Err(ApiError::not_found("endpoint"));
    }
    let endpoints = fanout::replay(
        &state.aws,
        state.table(),
        &state.config.queue_url,
        &tenant_id,
        &id,
        req.endpoint_id.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "endpoints": endpoints })),
    ))
}
