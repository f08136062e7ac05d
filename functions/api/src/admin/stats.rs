//! `GET /admin/stats` (hourly counters summed, no scan) and `POST /admin/cleanup`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::{ApiError, ApiResult, stats, stripe::store};

use super::{parse_json, stripe_events::query_params};
use crate::AppState;

/// Most events one cleanup call deletes; `more: true` says to call again.
const MAX_DELETES_PER_CALL: usize = 1000;
const DEFAULT_CLEANUP_DAYS: i64 = 30;

/// Routes mounted under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stats", get(window))
        .route("/cleanup", post(cleanup))
}

async fn window(
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
    Ok(Json(
        stats::read_window(&state.aws.dynamodb, state.table(), hours).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Cleanup {
    older_than_days: Option<i64>,
}

async fn cleanup(State(state): State<AppState>, body: bytes::Bytes) -> ApiResult<Json<Value>> {
    let req: Cleanup = if body.iter().all(u8::is_ascii_whitespace) {
        Cleanup::default()
    } else {
        parse_json(&body)?
    };
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
    Ok(Json(json!({
        "deleted": deleted,
        "more": more,
        "older_than_days": days,
    })))
}
