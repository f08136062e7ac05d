//! `GET /v1/event-types`: the catalog of event types Sluice itself publishes
//! ([`sluice::event_types`]). The same for every tenant and built in memory: no AWS request.

use axum::Json;
use serde::Serialize;
use sluice::event_types::{self, EventType};
use utoipa::ToSchema;

/// The answer of `GET /v1/event-types`.
#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    /// Every type Sluice publishes (tenants' own types, sent with `POST /v1/events`, are
    /// free-form and not listed).
    pub data: Vec<EventType>,
}

/// `GET /v1/event-types`: `200 {data: [{name, description, version, payload, schema}]}`.
#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "events",
    summary = "The event types Sluice publishes, with the JSON Schema of each payload",
    responses(
        (status = 200, description = "The catalog", body = EventTypeList),
    ),
    security(("bearer" = [])),
)]
pub async fn list() -> Json<EventTypeList> {
    Json(EventTypeList {
        data: event_types::catalog(),
    })
}
