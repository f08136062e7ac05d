//! `POST /admin/stripe/reconcile {since?}`: the reconciliation sweep. Lists Stripe's events since
//! a stored checkpoint and feeds each through the same exactly-once [`Processor`] the ingress
//! uses, so events whose webhook never arrived (endpoint down past Stripe's retries, disabled,
//! a wrong secret) still become account state.
//!
//! Invariants:
//! - Never twice: an event already stored is a duplicate to the processor (one read, no effect).
//! - Oldest first, and the checkpoint (`STRIPE_RECONCILE` / `CHECKPOINT`, attribute `created`)
//!   only moves forward, to the `created` of the last event processed: everything listed before
//!   it is done. Listing uses `created[gte]`, so events of that same second are listed again next
//!   time (duplicates). A run that reaches its time budget ([`BUDGET`]) stores the checkpoint and
//!   answers `done: false`; the next run resumes there. A listing that takes more than half the
//!   budget is cut short and moves no checkpoint (Stripe lists newest first, so the oldest events
//!   would be missing): a backlog that large needs `since` windows, or paging oldest first with
//!   `ending_before` (not done).
//! - Without a checkpoint or `since`, the sweep starts 30 days back (what Stripe keeps).
//!
//! Cost per run: `ceil(events / 100)` Stripe `GET /v1/events`, one `GetItem` and one
//! `UpdateItem` (the checkpoint), plus the processor's requests per event (one read for a
//! duplicate).
//!
//! Not yet (issue 15 item 4): the scheduled function (EventBridge Scheduler every 15 minutes),
//! the `make dev` timer, `/admin/stats` counters and a metric; `types[]` filtering (localstripe
//! does not accept it), so unhandled types are stored `ignored` like any webhook of theirs.

use std::time::{Duration, Instant};

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice::{
    ApiError, ApiResult, clock,
    stripe::{Outcome, Processor, decode, store::EventStatus},
    table::{self, ItemExt, n},
};
use utoipa::ToSchema;

use crate::AppState;

/// A run stops processing after this long (the API function's timeout is 29 s).
pub const BUDGET: Duration = Duration::from_secs(18);
/// Stripe keeps events this long.
const STRIPE_EVENT_DAYS: i64 = 30;
const CHECKPOINT_PK: &str = "STRIPE_RECONCILE";
const CHECKPOINT_SK: &str = "CHECKPOINT";

/// The body of `POST /admin/stripe/reconcile` (may be empty).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Epoch seconds to sweep from instead of the stored checkpoint.
    pub since: Option<i64>,
}

/// What one sweep found.
#[derive(Serialize, ToSchema)]
pub struct Reconciled {
    /// Epoch seconds the listing started at.
    pub since: i64,
    /// Events Stripe listed.
    pub listed: u64,
    /// Events stored by this run (processed, ignored, unmatched, or failed).
    pub recovered: u64,
    /// Events already stored (their webhook had arrived).
    pub duplicates: u64,
    /// Of `recovered`, those stored `failed`.
    pub failed: u64,
    /// The stored checkpoint after the run.
    pub checkpoint: Option<i64>,
    /// `false`: the time budget ran out; run again to continue from `checkpoint`.
    pub done: bool,
}

/// The checkpoint to store after a run, if it moves: the `created` of the last event processed,
/// only when the listing was complete (else older events may be missing) and only forward.
pub fn next_checkpoint(stored: Option<i64>, reached: Option<i64>, listed_all: bool) -> Option<i64> {
    reached
        .filter(|_| listed_all)
        .filter(|c| stored.is_none_or(|s| *c > s))
}

#[derive(Deserialize)]
struct EventList {
    data: Vec<Value>,
    has_more: bool,
}

/// `POST /admin/stripe/reconcile`.
#[utoipa::path(
    post,
    path = "/admin/stripe/reconcile",
    tag = "admin",
    summary = "Sweep Stripe's events since the checkpoint through the ingress's processor",
    request_body(content = Reconcile, description = "Optional; `{}` or empty sweeps from the checkpoint"),
    responses(
        (status = 200, description = "What the sweep found", body = Reconciled),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 502, description = "Stripe did not answer the listing; safe to retry"),
        (status = 503, description = "Billing (the Stripe API key) is not configured"),
    ),
    security(("admin_key" = [])),
)]
pub async fn run(
    State(state): State<AppState>,
    crate::json_body::OptionalJsonBody(req): crate::json_body::OptionalJsonBody<Reconcile>,
) -> ApiResult<Json<Reconciled>> {
    let started = Instant::now();
    let stripe = crate::v1::billing::stripe(&state)?;
    let db = &state.aws.dynamodb;
    let key = table::key(CHECKPOINT_PK, CHECKPOINT_SK);
    let stored = db
        .get_item()
        .table_name(state.table())
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .send()
        .await
        .map_err(ApiError::internal)?
        .item
        .and_then(|i| i.get_i64("created"));
    let since = req
        .since
        .or(stored)
        .unwrap_or_else(|| clock::now_epoch() - STRIPE_EVENT_DAYS * 24 * 3600);

    // Stripe lists newest first; collect everything since `since`, then process oldest first.
    let mut events: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    // Listing is newest first: a listing cut short lacks the oldest events, so the checkpoint
    // must not move past them (the events listed are still processed: exactly once anyway).
    let mut listed_all = true;
    loop {
        if started.elapsed() > BUDGET / 2 {
            listed_all = false;
            break;
        }
        // Event ids are `evt_` and alphanumerics: nothing to escape but the brackets.
        let mut query = format!("created%5Bgte%5D={since}&limit=100");
        if let Some(a) = after
            .as_deref()
            .filter(|a| a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            query.push_str(&format!("&starting_after={a}"));
        }
        let page: EventList = stripe.get(&format!("/v1/events?{query}")).await?;
        after = page
            .data
            .last()
            .and_then(|e| e["id"].as_str())
            .map(String::from);
        let more = page.has_more && after.is_some();
        events.extend(page.data);
        if !more {
            break;
        }
    }
    events.sort_by_key(|e| e["created"].as_i64().unwrap_or_default());

    let processor = Processor {
        aws: &state.aws,
        table: state.table(),
        retention_days: state.config.stripe_event_retention_days,
    };
    let mut out = Reconciled {
        since,
        listed: events.len() as u64,
        recovered: 0,
        duplicates: 0,
        failed: 0,
        checkpoint: stored,
        done: listed_all,
    };
    let mut reached: Option<i64> = None;
    for raw in &events {
        if started.elapsed() > BUDGET {
            out.done = false;
            break;
        }
        let bytes = serde_json::to_vec(raw).map_err(ApiError::internal)?;
        match decode(&bytes) {
            Ok(event) => match processor.ingest(&event, &bytes).await? {
                Outcome::Duplicate { .. } => out.duplicates += 1,
                Outcome::Done { status, .. } => {
                    out.recovered += 1;
                    if status == EventStatus::Failed {
                        out.failed += 1;
                    }
                }
                Outcome::Failed { .. } => {
                    out.recovered += 1;
                    out.failed += 1;
                }
            },
            // Not an event this ingress can read: skipped, as the ingress would refuse it.
            Err(err) => tracing::warn!(error = %err, "a listed Stripe event does not decode"),
        }
        reached = raw["created"].as_i64().or(reached);
    }

    if let Some(created) = next_checkpoint(stored, reached, listed_all) {
        let moved = db
            .update_item()
            .table_name(state.table())
            .set_key(Some(key))
            .update_expression("SET created = :c")
            .condition_expression("attribute_not_exists(created) OR created < :c")
            .expression_attribute_values(":c", n(created))
            .send()
            .await;
        match moved {
            Ok(_) => out.checkpoint = Some(created),
            // A concurrent run went further: its checkpoint stands.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(err) => return Err(ApiError::internal(err)),
        }
    }
    tracing::info!(
        listed = out.listed,
        recovered = out.recovered,
        duplicates = out.duplicates,
        failed = out.failed,
        done = out.done,
        "stripe reconciliation"
    );
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::next_checkpoint;

    #[test]
    fn the_checkpoint_moves_only_forward_and_only_after_a_complete_listing() {
        assert_eq!(next_checkpoint(None, Some(10), true), Some(10));
        assert_eq!(next_checkpoint(Some(5), Some(10), true), Some(10));
        assert_eq!(next_checkpoint(Some(10), Some(10), true), None);
        assert_eq!(next_checkpoint(Some(12), Some(10), true), None);
        assert_eq!(next_checkpoint(Some(5), Some(10), false), None);
        assert_eq!(next_checkpoint(Some(5), None, true), None);
    }
}
