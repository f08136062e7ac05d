//! `GET /health`: live checks of DynamoDB, SQS and KMS, run concurrently with a short timeout,
//! and the last 24 hours of Stripe events from the hourly counters (no scan).
//!
//! Status: `unhealthy` (HTTP 503) when a dependency is down or more than 20 % of the last 24 h's
//! Stripe events are `failed`; `degraded` (HTTP 200) above 10 %; `healthy` otherwise.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Failure rates (failed / received Stripe events, last 24 h) above which health degrades.
pub const DEGRADED_ABOVE: f64 = 0.10;
pub const UNHEALTHY_ABOVE: f64 = 0.20;

/// The overall status from the dependency checks and the 24 h failure rate.
pub fn overall(dependencies_ok: bool, failure_rate: f64) -> &'static str {
    if !dependencies_ok || failure_rate > UNHEALTHY_ABOVE {
        "unhealthy"
    } else if failure_rate > DEGRADED_ABOVE {
        "degraded"
    } else {
        "healthy"
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
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    let last_24h = window.map(|w| {
        json!({
            "events": w.events,
            "failed": w.events_by_status.get("failed").copied().unwrap_or(0),
            "failure_rate": w.failure_rate,
            "events_by_status": w.events_by_status,
            "deliveries_by_outcome": w.deliveries_by_outcome,
            "delivery_failure_rate": w.delivery_failure_rate,
        })
    });
    let word = |ok: bool| if ok { "ok" } else { "error" };
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "status": status,
            "checks": { "dynamodb": word(dynamodb), "sqs": word(sqs), "kms": word(kms) },
            "last_24h": last_24h,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_spec() {
        assert_eq!(overall(true, 0.0), "healthy");
        assert_eq!(overall(true, 0.10), "healthy");
        assert_eq!(overall(true, 0.1001), "degraded");
        assert_eq!(overall(true, 0.20), "degraded");
        assert_eq!(overall(true, 0.2001), "unhealthy");
        assert_eq!(overall(false, 0.0), "unhealthy");
    }
}
