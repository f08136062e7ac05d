//! Tenant API (`/v1/*`), behind a tenant API key; every write idempotent (the layer is applied
//! in [`crate::router`]).
//!
//! Every handler reads and writes only under the caller's own partition (`TENANT#{id}`), so an id
//! of another tenant answers `404` exactly as a missing one does.

use aws_sdk_dynamodb::types::AttributeValue;
use axum::{
    Extension, Router,
    routing::{get, post},
};
use serde_json::Value;
use sluice::{ApiError, idempotency::IdempotencyLock};

use crate::AppState;

pub mod account;
pub mod billing;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod secrets;

/// Routes mounted under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account", get(account::show))
        .route("/billing/checkout-sessions", post(billing::create_checkout))
        .route("/billing/portal-sessions", post(billing::create_portal))
        .route("/portal-sessions", post(crate::portal::access::mint_own))
        .route("/usage", post(account::usage))
        .route("/ledger", get(account::ledger))
        .route("/endpoints", post(endpoints::create).get(endpoints::list))
        .route(
            "/endpoints/{id}",
            get(endpoints::show)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/endpoints/{id}/secret", get(endpoints::secret))
        .route(
            "/endpoints/{id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route("/event-types", get(event_types::list))
        .route("/events", post(events::create).get(events::list))
        .route("/events/{id}", get(events::show))
        .route("/events/{id}/replay", post(events::replay))
        .route("/secrets", post(secrets::create).get(secrets::list))
        .route(
            "/secrets/{provider}",
            axum::routing::put(secrets::replace).delete(secrets::delete),
        )
}

/// The idempotency record the request holds, when it carries a key.
pub type Lock = Option<Extension<IdempotencyLock>>;

/// The lock as a reference, for [`sluice::idempotency::commit_with_response`].
pub fn lock_ref(lock: &Lock) -> Option<&IdempotencyLock> {
    lock.as_ref().map(|Extension(lock)| lock)
}

/// A `422` for a well-formed request body whose field is unacceptable; `detail` names the field.
pub fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::invalid_field(detail)
}

/// A DynamoDB attribute as JSON (for logs of attempts whose shape the egress function owns).
pub fn attr_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => n
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| n.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(n.clone())),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(list) => Value::Array(list.iter().map(attr_to_json).collect()),
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), attr_to_json(v)))
                .collect(),
        ),
        AttributeValue::Ss(set) => Value::from(set.clone()),
        AttributeValue::Ns(set) => Value::from(set.clone()),
        // Binary attributes never carry anything a tenant should see here.
        _ => Value::Null,
    }
}
