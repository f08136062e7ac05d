//! `GET /health`: live checks of DynamoDB, SQS and KMS, run concurrently with a short timeout,
//! and the last 24 hours of Stripe events from the hourly counters (no scan).
//!
//! Status: `unhealthy` (HTTP 503) when a dependency is down or more than 20 % of the last 24 h's
//! Stripe events are `failed`; `degraded` (HTTP 200) above 10 %; `healthy` otherwise.

use std::time::Duration;

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Failure rates (failed / received Stripe events, last 24 h) above which health degrades.
pub const DEGRADED_ABOVE: f64 = 0.10;
pub const UNHEALTHY_ABOVE: f64 = 0.20;

/// The overall status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// The outcome of one dependency check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    Ok,
    Error,
}

impl From<bool> for CheckOutcome {
    fn from(ok: bool) -> Self {
        if ok {
            CheckOutcome::Ok
        } else {
            CheckOutcome::Error
        }
    }
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthOut {
    pub status: HealthStatus,
    pub checks: HealthChecks,
    /// The last 24 hours of Stripe events and deliveries; `null` when the counters could not
    /// be read in time.
    pub last_24h: Option<Last24h>,
}

/// One live call per dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecks {
    pub dynamodb: CheckOutcome,
    pub sqs: CheckOutcome,
    pub kms: CheckOutcome,
}

/// Sums of the hourly counters of the last 24 hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct Last24h {
    /// Stripe events received.
    pub events: i64,
    /// Of those, `failed`.
    pub failed: i64,
    /// `failed` / `events` (0 when there were none).
    pub failure_rate: f64,
    pub events_by_status: BTreeMap<String, i64>,
    pub deliveries_by_outcome: BTreeMap<String, i64>,
    /// `failed` / (`succeeded` + `failed`) deliveries.
    pub delivery_failure_rate: f64,
}

/// The overall status from the dependency checks and the 24 h failure rate.
pub fn overall(dependencies_ok: bool, failure_rate: f64) -> HealthStatus {
    if !dependencies_ok || failure_rate > UNHEALTHY_ABOVE {
        HealthStatus::Unhealthy
    } else if failure_rate > DEGRADED_ABOVE {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    }
}

async fn check<F, T, E>(name: &str, call: F) -> bool
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!(dependency = name, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "health check failed");
            false
        }
        Err(_) => {
            tracing::warn!(dependency = name, "health check timed out");
            false
        }
    }
}

/// Answers `200` when healthy or degraded, `503` when unhealthy.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Live checks of DynamoDB, SQS and KMS, and the last 24 hours of Stripe events",
    responses(
        (status = 200, description = "Healthy, or degraded (more than 10 % of the last 24 h's Stripe events failed)", body = HealthOut),
        (status = 503, description = "Unhealthy: a dependency is down, or more than 20 % of the last 24 h's Stripe events failed", body = HealthOut),
    ),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthOut>) {
    let aws = &state.aws;
    let (dynamodb, sqs, kms, window) = tokio::join!(
        check(
            "dynamodb",
            aws.dynamodb
                .describe_table()
                .table_name(state.table())
                .send()
        ),
        check(
            "sqs",
            aws.sqs
                .get_queue_attributes()
                .queue_url(&state.config.queue_url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages
                )
                .send()
        ),
        check(
            "kms",
            aws.kms
                .describe_key()
                .key_id(&state.config.kms_key_id)
                .send()
        ),
        tokio::time::timeout(
            CHECK_TIMEOUT,
            sluice::stats::read_window(&state.aws.dynamodb, state.table(), 24)
        ),
    );
    let window = window.ok().and_then(Result::ok);
    let failure_rate = window.as_ref().map_or(0.0, |w| w.failure_rate);
    let status = overall(dynamodb && sqs && kms, failure_rate);
    let last_24h = window.map(|w| Last24h {
        events: w.events,
        failed: w.events_by_status.get("failed").copied().unwrap_or(0),
        failure_rate: w.failure_rate,
        events_by_status: w.events_by_status,
        deliveries_by_outcome: w.deliveries_by_outcome,
        delivery_failure_rate: w.delivery_failure_rate,
    });
    let code = if status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(HealthOut {
            status,
            checks: HealthChecks {
                dynamodb: dynamodb.into(),
                sqs: sqs.into(),
                kms: kms.into(),
            },
            last_24h,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_spec() {
        use HealthStatus::*;
        assert_eq!(overall(true, 0.0), Healthy);
        assert_eq!(overall(true, 0.10), Healthy);
        assert_eq!(overall(true, 0.1001), Degraded);
        assert_eq!(overall(true, 0.20), Degraded);
        assert_eq!(overall(true, 0.2001), Unhealthy);
        assert_eq!(overall(false, 0.0), Unhealthy);
    }
}
