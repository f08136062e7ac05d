//! `/admin/stripe-events…`: list (newest first, filtered, paginated), show, retry.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use serde::Serialize;
use sluice::{
    ApiError, ApiResult,
    stripe::{
        Outcome, Processor,
        store::{self, EventStatus, EventView, ListFilter, StripeEventId},
    },
};
use utoipa::ToSchema;

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
        retention_days: state.config.stripe_event_retention_days,
    }
}

/// A page of `GET /admin/stripe-events`.
#[derive(Serialize, ToSchema)]
pub struct StripeEventPage {
    /// Newest first.
    pub data: Vec<EventView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// What `POST /admin/stripe-events/{id}/retry` did.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    Received,
    Processed,
    Ignored,
    Unmatched,
    Failed,
    /// It was processed or ignored already: nothing changed.
    AlreadyProcessed,
}

/// The event after a retry, and what the retry did.
#[derive(Serialize, ToSchema)]
pub struct RetriedStripeEvent {
    #[serde(flatten)]
    pub event: EventView,
    pub outcome: RetryOutcome,
}

/// `GET /admin/stripe-events?status=&type=&limit=&cursor=`: newest first.
#[utoipa::path(
    get,
    path = "/admin/stripe-events",
    tag = "admin",
    summary = "Stored Stripe events, newest first",
    params(
        ("status" = Option<String>, Query, description = "Only events with this status: received, processed, ignored, unmatched, failed"),
        ("type" = Option<String>, Query, description = "Only events of this Stripe type"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of events (without payloads)", body = StripeEventPage),
        (status = 400, description = "A query parameter is invalid"),
    ),
    security(("admin_key" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<StripeEventPage>> {
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
    Ok(Json(StripeEventPage {
        data: events,
        next_cursor: next,
    }))
}

fn parse_id(id: &str) -> ApiResult<StripeEventId> {
    StripeEventId::parse(id).ok_or_else(|| ApiError::not_found("stripe event"))
}

async fn load(state: &AppState, id: &StripeEventId) -> ApiResult<EventView> {
    store::get_record(&state.aws.dynamodb, state.table(), id)
        .await?
        .map(|record| EventView::of(record, true))
        .ok_or_else(|| ApiError::not_found("stripe event"))
}

/// `GET /admin/stripe-events/{id}`: one event with its stored payload.
#[utoipa::path(
    get,
    path = "/admin/stripe-events/{id}",
    tag = "admin",
    summary = "One stored Stripe event, with its payload",
    params(("id" = String, Path, description = "Stripe event id (`evt_…`)")),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 404, description = "No such event"),
    ),
    security(("admin_key" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(load(&state, &parse_id(&id)?).await?))
}

/// Processes a stored event again from its payload. Safe at any time: effects are exactly-once,
/// so a processed or ignored event answers `already_processed` and changes nothing.
#[utoipa::path(
    post,
    path = "/admin/stripe-events/{id}/retry",
    tag = "admin",
    summary = "Process a stored Stripe event again from its payload",
    params(("id" = String, Path, description = "Stripe event id (`evt_…`)")),
    responses(
        (status = 200, description = "The event after the retry; a `failed` outcome is stored on the event", body = RetriedStripeEvent),
        (status = 404, description = "No such event"),
        (status = 409, description = "The event's payload was not kept; it cannot be processed again"),
    ),
    security(("admin_key" = [])),
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RetriedStripeEvent>> {
    let id = parse_id(&id)?;
    let outcome = processor(&state)
        .retry_stored(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("stripe event"))?;
    let outcome = match &outcome {
        Outcome::Done { status, .. } => retry_outcome(status),
        Outcome::Duplicate { .. } => RetryOutcome::AlreadyProcessed,
        Outcome::Failed { .. } => RetryOutcome::Failed,
    };
    Ok(Json(RetriedStripeEvent {
        event: load(&state, &id).await?,
        outcome,
    }))
}

/// The outcome word of a stored status.
fn retry_outcome(status: &EventStatus) -> RetryOutcome {
    match status {
        EventStatus::Received => RetryOutcome::Received,
        EventStatus::Processed => RetryOutcome::Processed,
        EventStatus::Ignored => RetryOutcome::Ignored,
        EventStatus::Unmatched => RetryOutcome::Unmatched,
        EventStatus::Failed => RetryOutcome::Failed,
    }
}
