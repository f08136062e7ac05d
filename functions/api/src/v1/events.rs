//! Outbound events: `POST /v1/events`, `GET /v1/events` (newest first, filtered),
//! `GET /v1/events/{id}`, `POST /v1/events/{id}/replay`.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    event_list::{self, EventFilter, EventStatus},
    fanout,
    idempotency::{self, CommitError, StoredResponse},
    ids,
    outbound::{Attempt, Delivery, EventId},
    table,
};
use utoipa::ToSchema;

use super::{Lock, invalid, lock_ref};
use crate::{
    AppState,
    json_body::{JsonBody, OptionalJsonBody},
};

const MAX_TYPE_LEN: usize = 100;
/// The event item holds `data` as JSON text; DynamoDB items are at most 400 KB.
const MAX_DATA_BYTES: usize = 256 * 1024;

/// The body of `POST /v1/events`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    /// Your event type: 1–100 letters, digits, `.`, `_`, `-`, `:`.
    #[serde(rename = "type")]
    #[schema(example = "invoice.paid", max_length = 100)]
    event_type: String,
    /// Any JSON (at most 256 KiB), delivered as is.
    data: Value,
}

/// The answer of `POST /v1/events` and `POST /v1/events/{id}/replay`.
#[derive(Serialize, ToSchema)]
pub struct EventAccepted {
    /// `msg_…`
    pub id: String,
    /// The endpoints (`ep_…`) a delivery was queued for.
    pub endpoints: Vec<String>,
}

/// An outbound event with its deliveries.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventOut {
    /// `msg_…`
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Value,
    /// Epoch seconds.
    pub created_at: i64,
    /// The endpoints it was fanned out to; `null` until a deferred event is expanded.
    pub endpoints: Option<Vec<String>>,
    pub deliveries: Vec<DeliveryOut>,
}

/// One endpoint's delivery of an event. Fields the egress function has not written yet are `null`.
#[derive(Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryOut {
    pub endpoint_id: Option<String>,
    /// `pending`, `succeeded`, `failed` (retrying) or `exhausted`.
    pub status: Option<String>,
    /// Incremented by each replay.
    pub generation: Option<i64>,
    pub attempt_count: i64,
    /// Every attempt, oldest first (status or error class, duration, response excerpt).
    pub attempts: Vec<Attempt>,
    /// Epoch seconds.
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    /// Epoch seconds of the next retry, while one is scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
}

fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// `POST /v1/events`: `202 {id, endpoints}` — one delivery per enabled endpoint whose
/// `event_types` match (an empty list matches everything).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    summary = "Publish an event to the tenant's endpoints",
    request_body = CreateEvent,
    responses(
        (status = 202, description = "Stored and queued for every matching enabled endpoint", body = EventAccepted),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 409, description = "The event exists already"),
        (status = 413, description = "`data` is over 256 KiB"),
        (status = 422, description = "`type` is invalid"),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    JsonBody(req): JsonBody<CreateEvent>,
) -> ApiResult<Response> {
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
    let publication = fanout::plan_publish(
        &state.aws,
        state.table(),
        &tenant_id,
        &req.event_type,
        req.data,
    )
    .await?;
    let accepted = EventAccepted {
        id: publication.event.id.to_string(),
        endpoints: publication.endpoint_ids.clone(),
    };
    if publication.fits_one_transaction_with_one_more() {
        // The event, its deliveries and the idempotency completion commit together: the lock and
        // this transaction are the request's only writes.
        let response = StoredResponse::json(StatusCode::ACCEPTED, &accepted);
        return idempotency::commit_with_response(
            &state.aws.dynamodb,
            publication.into_items(),
            lock_ref(&lock),
            response,
        )
        .await
        .map_err(|err| match err {
            // The only condition is the new event id's: taken only by a concurrent twin.
            CommitError::Cancelled(_) => ApiError::conflict("the event exists already"),
            other => other.into(),
        });
    }
    publication.commit(&state.aws.dynamodb).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

fn valid_event_id(id: &str) -> ApiResult<()> {
    if EventId::parse(id).is_some() {
        Ok(())
    } else {
        Err(ApiError::not_found("event"))
    }
}

fn delivery_view(delivery: Delivery) -> DeliveryOut {
    DeliveryOut {
        endpoint_id: Some(delivery.id.endpoint_id),
        status: Some(delivery.status.as_str().to_owned()),
        generation: Some(delivery.generation.into()),
        attempt_count: delivery.attempt_count.into(),
        attempts: delivery.attempts,
        created_at: Some(delivery.created_at),
        updated_at: delivery.updated_at,
        next_attempt_at: delivery.next_attempt_at,
    }
}

/// `GET /v1/events/{id}`: the event and, per endpoint, its delivery status and every attempt.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    summary = "An outbound event with its deliveries and every attempt",
    params(("id" = String, Path, description = "Event id (`msg_…`)")),
    responses(
        (status = 200, description = "The event", body = EventOut),
        (status = 404, description = "No such event for this tenant"),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<EventOut>> {
    valid_event_id(&id)?;
    let db = &state.aws.dynamodb;
    let event = fanout::get_event(db, state.table(), &tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries: Vec<DeliveryOut> = table::query_prefix(
        db,
        state.table(),
        &table::tenant_pk(&tenant_id),
        &table::delivery_sk(&id, ""),
    )
    .await?
    .iter()
    .filter_map(Delivery::from_item)
    .map(delivery_view)
    .collect();
    Ok(Json(EventOut {
        id: event.id.into_string(),
        event_type: event.event_type,
        data: event.data,
        created_at: event.created_at,
        endpoints: event.endpoint_ids,
        deliveries,
    }))
}

/// The body of `POST /v1/events/{id}/replay` (optional).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Only this endpoint (`ep_…`); every endpoint of the event when absent.
    endpoint_id: Option<String>,
}

/// `POST /v1/events/{id}/replay {endpoint_id?}`: deliver again (also after exhaustion or after
/// the endpoint was re-enabled). One round trip of two reads, then one transaction that bumps the
/// deliveries' generations and writes the outbox item the egress function relays: no SQS call.
#[utoipa::path(
    post,
    path = "/v1/events/{id}/replay",
    tag = "events",
    summary = "Deliver an event again (also after exhaustion)",
    params(("id" = String, Path, description = "Event id (`msg_…`)")),
    request_body(content = Option<Replay>, description = "Optional; an empty body replays to every endpoint"),
    responses(
        (status = 202, description = "Queued again", body = EventAccepted),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 404, description = "No such event or endpoint for this tenant"),
        (status = 409, description = "Another replay changed the deliveries meanwhile; retry (`Retry-After`)"),
    ),
    security(("bearer" = [])),
)]
pub async fn replay(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<Replay>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
    valid_event_id(&id)?;
    if let Some(ep) = &req.endpoint_id
        && !ids::has_prefix(ep, "ep")
    {
        return Err(ApiError::not_found("endpoint"));
    }
    let endpoints = sluice::replay::replay(
        &state.aws.dynamodb,
        state.table(),
        &tenant_id,
        &id,
        req.endpoint_id.as_deref(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(EventAccepted { id, endpoints })))
}

/// A page of `GET /v1/events`.
#[derive(Serialize, ToSchema)]
pub struct EventPageOut {
    /// Newest first. With a filter on `type`, `endpoint_id` or `status`, a page can hold fewer
    /// than `limit` events (even none) and still have a `next_cursor`.
    pub data: Vec<EventSummaryOut>,
    pub has_more: bool,
    /// Pass as `cursor` (with the same filters) for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// An outbound event in a list: its status and each delivery's (details: `GET /v1/events/{id}`).
#[derive(Serialize, ToSchema)]
#[schema(as = EventSummary)]
pub struct EventSummaryOut {
    /// `msg_…`
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Epoch seconds.
    pub created_at: i64,
    /// `pending` (not fanned out yet, or a delivery pending or retrying), `failed` (nothing
    /// pending, a delivery failed for good or its endpoint is disabled), `delivered` (every
    /// delivery succeeded), `no_endpoints` (fanned out to none).
    pub status: EventStatus,
    /// The endpoints it was fanned out to; `null` until a deferred event is expanded.
    pub endpoints: Option<Vec<String>>,
    pub deliveries: Vec<DeliveryStatusOut>,
}

/// One delivery's status in a list.
#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryStatus)]
pub struct DeliveryStatusOut {
    pub endpoint_id: String,
    /// `pending`, `succeeded`, `failed` or `endpoint_disabled`.
    pub status: String,
}

fn epoch_param(query: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    query
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|t| (0..=9_999_999_999).contains(t))
                .ok_or_else(|| ApiError::bad_request(format!("`{name}` must be epoch seconds")))
        })
        .transpose()
}

/// The filters of `GET /v1/events` from its query string (`400` naming a malformed one).
pub fn event_filter(query: &HashMap<String, String>) -> ApiResult<EventFilter> {
    let non_empty = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let filter = EventFilter {
        since: epoch_param(query, "since")?,
        until: epoch_param(query, "until")?,
        event_type: non_empty("type"),
        endpoint_id: non_empty("endpoint_id"),
        status: non_empty("status")
            .map(|s| {
                EventStatus::parse(&s).ok_or_else(|| {
                    ApiError::bad_request(
                        "`status` must be one of pending, failed, delivered, no_endpoints",
                    )
                })
            })
            .transpose()?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        return Err(ApiError::bad_request("`since` must not be after `until`"));
    }
    if filter.event_type.as_deref().is_some_and(|t| !valid_type(t)) {
        return Err(ApiError::bad_request(format!(
            "`type` must be 1–{MAX_TYPE_LEN} characters of letters, digits, `.`, `_`, `-`, `:`"
        )));
    }
    if filter
        .endpoint_id
        .as_deref()
        .is_some_and(|ep| !ids::has_prefix(ep, "ep"))
    {
        return Err(ApiError::bad_request(
            "`endpoint_id` must be an endpoint id (`ep_…`)",
        ));
    }
    Ok(filter)
}

/// One page of the tenant's events (the portal's Events page calls this too).
pub async fn list_page(
    state: &AppState,
    tenant_id: &str,
    query: &HashMap<String, String>,
) -> ApiResult<EventPageOut> {
    let limit = match query.get("limit") {
        None => event_list::DEFAULT_PAGE_SIZE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=event_list::MAX_PAGE_SIZE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be an integer from 1 to {}",
                    event_list::MAX_PAGE_SIZE
                ))
            })?,
    };
    let filter = event_filter(query)?;
    let cursor = query
        .get("cursor")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let page = event_list::list(
        &state.aws.dynamodb,
        state.table(),
        tenant_id,
        &filter,
        limit,
        cursor,
    )
    .await?
    .map_err(|_| ApiError::bad_request("`cursor` is not one this listing handed out"))?;
    Ok(EventPageOut {
        data: page
            .events
            .into_iter()
            .map(|listed| EventSummaryOut {
                id: listed.event.id.into_string(),
                event_type: listed.event.event_type,
                created_at: listed.event.created_at,
                status: listed.status,
                endpoints: listed.event.endpoint_ids,
                deliveries: listed
                    .deliveries
                    .into_iter()
                    .map(|d| DeliveryStatusOut {
                        endpoint_id: d.endpoint_id,
                        status: d.status,
                    })
                    .collect(),
            })
            .collect(),
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
    })
}

/// `GET /v1/events?limit=&cursor=&type=&status=&endpoint_id=&since=&until=`: newest first.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "The tenant's outbound events, newest first, filtered",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Events read per page (default 20); filters may return fewer"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("type" = Option<String>, Query, description = "Only this event type"),
        ("status" = Option<String>, Query, description = "Only events in this status: `pending`, `failed`, `delivered`, `no_endpoints`"),
        ("endpoint_id" = Option<String>, Query, description = "Only events fanned out to this endpoint (`ep_…`)"),
        ("since" = Option<i64>, Query, description = "Created at or after (epoch seconds)"),
        ("until" = Option<i64>, Query, description = "Created at or before (epoch seconds)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventPageOut),
        (status = 400, description = "A parameter or the cursor is invalid"),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<EventPageOut>> {
    Ok(Json(list_page(&state, &tenant_id, &query).await?))
}
