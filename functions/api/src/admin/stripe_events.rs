//! `/admin/stripe-events…`: list (newest first, filtered, paginated), show, retry.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use serde_json::{Value, json};
use sluice::{
    ApiError, ApiResult,
    stripe::{
        Outcome, Processor,
        store::{self, EventStatus, EventView, ListFilter},
    },
};

use crate::AppState;

/// Largest page of `GET /admin/stripe-events`.
const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 50;

/// Routes mounted under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stripe-events", get(list))
        .route("/stripe-events/{id}", get(show))
        .route("/stripe-events/{id}/retry", post(retry))
}

/// Query parameters, with a problem+json `400` instead of axum's text answer.
pub fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<HashMap<String, String>> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

fn processor(state: &AppState) -> Processor<'_> {
    Processor {
        aws: &state.aws,
        table: state.table(),
        queue_url: &state.config.queue_url,
        retention_days: state.config.stripe_event_retention_days,
    }
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query_params(query)?;
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(st) => Some(EventStatus::parse(st).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`status` must be one of {}",
                EventStatus::ALL.map(EventStatus::as_str).join(", ")
            ))
        })?),
    };
    let filter = ListFilter {
        status,
        event_type: q.get("type").filter(|s| !s.is_empty()).cloned(),
    };
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!("`limit` must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let cursor = q.get("cursor").filter(|c| !c.is_empty());
    let (events, next) = store::list(
        &state.aws.dynamodb,
        state.table(),
        &filter,
        limit,
        cursor.map(String::as_str),
    )
    .await?;
    Ok(Json(json!({ "data": events, "next_cursor": next })))
}

fn valid_id(id: &str) -> bool {
    id.starts_with("evt_")
        && id.len() <= 254
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

async fn load(state: &AppState, id: &str) -> ApiResult<EventView> {
    if !valid_id(id) {
        return Err(ApiError::not_found("stripe event"));
    }
    store::get_item(&state.aws.dynamodb, state.table(), id)
        .await?
        .and_then(|item| EventView::from_item(&item, true))
        .ok_or_else(|| ApiError::not_found("stripe event"))
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<EventView>> {
    Ok(Json(load(&state, &id).await?))
}

/// Processes a stored event again from its payload. Safe at any time: effects are exactly-once,
/// so a processed or ignored event answers `already_processed` and changes nothing.
async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if !valid_id(&id) {
        return Err(ApiError::not_found("stripe event"));
    }
    let outcome = processor(&state)
        .retry_stored(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("stripe event"))?;
    let word = match &outcome {
        Outcome::Done { status, .. } => status.as_str(),
        Outcome::Duplicate { .. } => "already_processed",
        Outcome::Failed { .. } => EventStatus::Failed.as_str(),
    };
    let mut view = serde_json::to_value(load(&state, &id).await?).map_err(ApiError::internal)?;
    view["outcome"] = json!(word);
    Ok(Json(view))
}
