//! `GET /admin/stats` (hourly counters summed, no scan) and `POST /admin/cleanup`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use sluice::{ApiError, ApiResult, stats, stripe::store};
use utoipa::ToSchema;

use super::stripe_events::query_params;
use crate::{AppState, json_body::OptionalJsonBody};

/// Most events one cleanup call deletes; `more: true` says to call again.
const MAX_DELETES_PER_CALL: usize = 1000;
const DEFAULT_CLEANUP_DAYS: i64 = 30;

/// Routes mounted under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stats", get(window))
        .route("/cleanup", post(cleanup))
}

/// `GET /admin/stats?hours=`: sums of the hourly counters (one `BatchGetItem` per 100 of the
/// window's `hours` × 4 counter items, no scan) and the reconciliation sweep's state (one
/// `GetItem`, sent at the same time).
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    summary = "Stripe events, deliveries and reconciliation sweeps of the last hours, from the hourly counters",
    params(("hours" = Option<u32>, Query, minimum = 1, maximum = 720, description = "Hours summed, ending with the current one (default 24)")),
    responses(
        (status = 200, description = "The window's sums", body = stats::WindowStats),
        (status = 400, description = "`hours` is not an integer in range"),
    ),
    security(("admin_key" = [])),
)]
pub async fn window(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<stats::WindowStats>> {
    let q = query_params(query)?;
    let hours = match q.get("hours") {
        None => 24,
        Some(h) => h
            .parse::<u32>()
            .ok()
            .filter(|h| (1..=stats::MAX_WINDOW_HOURS).contains(h))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`hours` must be an integer from 1 to {}",
                    stats::MAX_WINDOW_HOURS
                ))
            })?,
    };
    let db = &state.aws.dynamodb;
    let (mut window, sweep) = futures::try_join!(
        stats::read_window(db, state.table(), hours),
        super::reconcile::read_state(db, state.table()),
    )?;
    window.reconcile.last_run_at = sweep.last_run_at;
    window.reconcile.checkpoint = sweep.checkpoint;
    Ok(Json(window))
}

/// The body of `POST /admin/cleanup` (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Deletes processed and ignored Stripe events received longer ago (0–3650, default 30).
    #[schema(minimum = 0, maximum = 3650)]
    older_than_days: Option<i64>,
}

/// The answer of `POST /admin/cleanup`.
#[derive(Serialize, ToSchema)]
pub struct CleanupOut {
    /// Events deleted by this call.
    pub deleted: usize,
    /// `true` when more remain: call again.
    pub more: bool,
    pub older_than_days: i64,
}

/// `POST /admin/cleanup {older_than_days?}`: at most 1000 deletions per call.
#[utoipa::path(
    post,
    path = "/admin/cleanup",
    tag = "admin",
    summary = "Delete processed and ignored Stripe events sooner than their retention",
    request_body(content = Option<Cleanup>, description = "Optional; an empty body means the defaults"),
    responses(
        (status = 200, description = "Deleted; `more` says whether to call again", body = CleanupOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 422, description = "`older_than_days` is out of range"),
    ),
    security(("admin_key" = [])),
)]
pub async fn cleanup(
    State(state): State<AppState>,
    OptionalJsonBody(req): OptionalJsonBody<Cleanup>,
) -> ApiResult<Json<CleanupOut>> {
    let days = req.older_than_days.unwrap_or(DEFAULT_CLEANUP_DAYS);
    if !(0..=3650).contains(&days) {
        return Err(ApiError::invalid_field(
            "`older_than_days` must be an integer from 0 to 3650",
        ));
    }
    let (deleted, more) = store::cleanup(
        &state.aws.dynamodb,
        state.table(),
        days as u32,
        MAX_DELETES_PER_CALL,
    )
    .await?;
    Ok(Json(CleanupOut {
        deleted,
        more,
        older_than_days: days,
    }))
}
