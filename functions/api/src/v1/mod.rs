//! Tenant API (`/v1/*`), behind a tenant API key; every write idempotent (the layer is applied
//! in [`crate::router`]).
//!
//! Every handler reads and writes only under the caller's own partition (`TENANT#{id}`), so an id
//! of another tenant answers `404` exactly as a missing one does.

use axum::{
    Extension, Router,
    routing::{get, post},
};
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
        .route("/usage/summary", get(account::usage_summary))
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
        .route("/endpoints/{id}/test", post(endpoints::test))
        .route("/endpoints/{id}/recover", post(endpoints::recover))
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
