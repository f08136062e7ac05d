//! The reconciliation sweep: `POST /admin/stripe/reconcile {since?}`, the scheduled run
//! (EventBridge Scheduler invokes the API function with [`crate::lambda::SCHEDULED_SWEEP`]) and
//! `make dev`'s timer all call [`sweep`]. It lists Stripe's events since a stored checkpoint and
//! feeds each through the same exactly-once [`Processor`] the ingress uses, so events whose
//! webhook never arrived (endpoint down past Stripe's retries, disabled, a wrong secret) still
//! become account state.
//!
//! Invariants:
//! - Never twice: an event already stored is a duplicate to the processor (one read, no effect).
//! - Oldest first, and the checkpoint (the sweep's state item `STRIPE_RECONCILE` / `CHECKPOINT`,
//!   attribute `created`) only moves forward, to the `created` of the last event processed:
//!   everything listed before it is done. Listing uses `created[gte]`, so events of that same
//!   second are listed again next time (duplicates). A run that reaches its time budget
//!   ([`BUDGET`]) stores the checkpoint and answers `done: false`; the next run resumes there. A
//!   listing that takes more than half the budget is cut short and moves no checkpoint (Stripe
//!   lists newest first, so the oldest events would be missing): a backlog that large needs
//!   `since` windows, or paging oldest first with `ending_before` (not done).
//! - Without a checkpoint or `since`, the sweep starts 30 days back (what Stripe keeps).
//! - Every run that ends records itself: `last_run_at` on the state item, the hourly
//!   `reconcile#…` counters (`GET /admin/stats`) and the `ReconcileRecovered` metric. A run that
//!   fails (Stripe or DynamoDB unreachable) records nothing; what it stored stays stored, and the
//!   next run finds it as duplicates.
//!
//! Cost per run: `ceil(events / 100)` Stripe `GET /v1/events`; one `GetItem` (the state item),
//! one `UpdateItem` of the state item (`last_run_at`, and the checkpoint when it moves; a second
//! when a concurrent run moved it further) and one `UpdateItem` of the hourly counters; plus the
//! processor's requests per event (a duplicate costs one: the read, or the transaction its
//! stored event cancels; see `stripe::process`).
//!
//! Not done: `types[]` filtering (localstripe does not accept it), so unhandled types are stored
//! `ignored` like any webhook of theirs.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice::{
    ApiError, ApiResult, clock,
    stats::{StatsDelta, SweepCounts},
    stripe::{Outcome, Processor, decode, store::EventStatus},
    table::{self, ItemExt, n},
    telemetry,
};
use utoipa::ToSchema;

use crate::AppState;

/// A run stops processing after this long (the API function's timeout is 29 s).
pub const BUDGET: Duration = Duration::from_secs(18);
/// Stripe keeps events this long.
const STRIPE_EVENT_DAYS: i64 = 30;
const STATE_PK: &str = "STRIPE_RECONCILE";
const STATE_SK: &str = "CHECKPOINT";
/// Attribute of the state item: the checkpoint (epoch seconds).
const CHECKPOINT: &str = "created";
/// Attribute of the state item: when the last run ended (epoch seconds).
const LAST_RUN_AT: &str = "last_run_at";

/// The body of `POST /admin/stripe/reconcile` (may be empty).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Epoch seconds to sweep from instead of the stored checkpoint.
    pub since: Option<i64>,
}

/// What one sweep found.
#[derive(Serialize, ToSchema, Debug)]
pub struct Reconciled {
    /// Epoch seconds the listing started at.
    pub since: i64,
    /// Events listed, stored by this run (`recovered`: processed, ignored, unmatched, or
    /// failed), already stored (`duplicates`: their webhook had arrived), and of those
    /// recovered, stored `failed`.
    #[serde(flatten)]
    pub found: SweepCounts,
    /// The stored checkpoint after the run.
    pub checkpoint: Option<i64>,
    /// `false`: the time budget ran out; run again to continue from `checkpoint`.
    pub done: bool,
}

/// The sweep's state item: where the next run starts and when the last one ended.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SweepState {
    pub checkpoint: Option<i64>,
    pub last_run_at: Option<i64>,
}

/// The checkpoint to store after a run, if it moves: the `created` of the last event processed,
/// only when the listing was complete (else older events may be missing) and only forward.
pub fn next_checkpoint(stored: Option<i64>, reached: Option<i64>, listed_all: bool) -> Option<i64> {
    reached
        .filter(|_| listed_all)
        .filter(|c| stored.is_none_or(|s| *c > s))
}

/// Counts one processed event's outcome.
pub fn tally(found: &mut SweepCounts, outcome: &Outcome) {
    match outcome {
        Outcome::Duplicate { .. } => found.duplicates += 1,
        Outcome::Done { status, .. } => {
            found.recovered += 1;
            if *status == EventStatus::Failed {
                found.failed += 1;
            }
        }
        Outcome::Failed { .. } => {
            found.recovered += 1;
            found.failed += 1;
        }
    }
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
    Ok(Json(sweep(&state, req.since).await?))
}

/// Reads the sweep's state item (one consistent `GetItem`).
pub async fn read_state(db: &Client, table_name: &str) -> Result<SweepState, ApiError> {
    let item = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(table::key(STATE_PK, STATE_SK)))
        .consistent_read(true)
        .send()
        .await?
        .item;
    Ok(item.map_or_else(SweepState::default, |i| SweepState {
        checkpoint: i.get_i64(CHECKPOINT),
        last_run_at: i.get_i64(LAST_RUN_AT),
    }))
}

/// Records a run's end on the state item, moving the checkpoint to `to` if that is forward;
/// answers the checkpoint now stored.
async fn record_run(
    db: &Client,
    table_name: &str,
    stored: Option<i64>,
    to: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let now = clock::now_epoch();
    let update = || {
        db.update_item()
            .table_name(table_name)
            .set_key(Some(table::key(STATE_PK, STATE_SK)))
            .expression_attribute_names("#run", LAST_RUN_AT)
            .expression_attribute_values(":now", n(now))
    };
    if let Some(created) = to {
        let moved = update()
            .update_expression("SET #run = :now, #c = :c")
            .condition_expression("attribute_not_exists(#c) OR #c < :c")
            .expression_attribute_names("#c", CHECKPOINT)
            .expression_attribute_values(":c", n(created))
            .send()
            .await;
        match moved {
            Ok(_) => return Ok(Some(created)),
            // A concurrent run went further: its checkpoint stands; only the run is recorded.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let out = update()
        .update_expression("SET #run = :now")
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await?;
    Ok(out
        .attributes
        .and_then(|i| i.get_i64(CHECKPOINT))
        .or(stored))
}

/// One sweep (the admin route, the schedule and `make dev`'s timer).
pub async fn sweep(state: &AppState, since: Option<i64>) -> Result<Reconciled, ApiError> {
    let started = Instant::now();
    let stripe = crate::v1::billing::stripe(state)?;
    let db = &state.aws.dynamodb;
    let stored = read_state(db, state.table()).await?.checkpoint;
    let since = since
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
    let mut found = SweepCounts {
        listed: events.len() as i64,
        ..SweepCounts::default()
    };
    let mut done = listed_all;
    let mut reached: Option<i64> = None;
    for raw in &events {
        if started.elapsed() > BUDGET {
            done = false;
            break;
        }
        let bytes = serde_json::to_vec(raw).map_err(ApiError::internal)?;
        match decode(&bytes) {
            Ok(event) => tally(&mut found, &processor.ingest(&event, &bytes).await?),
            // Not an event this ingress can read: skipped, as the ingress would refuse it.
            Err(err) => tracing::warn!(error = %err, "a listed Stripe event does not decode"),
        }
        reached = raw["created"].as_i64().or(reached);
    }

    let checkpoint = record_run(
        db,
        state.table(),
        stored,
        next_checkpoint(stored, reached, listed_all),
    )
    .await?;
    StatsDelta::now()
        .reconcile_run(&found)
        .send(db, state.table())
        .await?;
    telemetry::emit(&telemetry::RECONCILE_RECOVERED, found.recovered as f64, &[]);
    tracing::info!(
        listed = found.listed,
        recovered = found.recovered,
        duplicates = found.duplicates,
        failed = found.failed,
        done,
        "stripe reconciliation"
    );
    Ok(Reconciled {
        since,
        found,
        checkpoint,
        done,
    })
}

#[cfg(test)]
mod tests {
    use sluice::{
        stats::SweepCounts,
        stripe::{Outcome, store::EventStatus},
    };

    use super::{next_checkpoint, tally};

    #[test]
    fn the_checkpoint_moves_only_forward_and_only_after_a_complete_listing() {
        assert_eq!(next_checkpoint(None, Some(10), true), Some(10));
        assert_eq!(next_checkpoint(Some(5), Some(10), true), Some(10));
        assert_eq!(next_checkpoint(Some(10), Some(10), true), None);
        assert_eq!(next_checkpoint(Some(12), Some(10), true), None);
        assert_eq!(next_checkpoint(Some(5), Some(10), false), None);
        assert_eq!(next_checkpoint(Some(5), None, true), None);
    }

    #[test]
    fn a_stored_event_is_recovered_a_known_one_a_duplicate() {
        let mut found = SweepCounts::default();
        for outcome in [
            Outcome::Done {
                status: EventStatus::Processed,
                note: None,
            },
            Outcome::Done {
                status: EventStatus::Failed,
                note: None,
            },
            Outcome::Failed { error: "x".into() },
            Outcome::Duplicate {
                status: EventStatus::Processed,
            },
        ] {
            tally(&mut found, &outcome);
        }
        assert_eq!(
            found,
            SweepCounts {
                listed: 0,
                recovered: 3,
                duplicates: 1,
                failed: 2,
            }
        );
    }
}
