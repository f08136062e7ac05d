//! `GET /health`: live checks of DynamoDB, SQS and KMS, run concurrently with a short timeout.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

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
    let (dynamodb, sqs, kms) = tokio::join!(
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
    );
    let status = if dynamodb && sqs && kms {
        "healthy"
    } else {
        "unhealthy"
    };
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
        })),
    )
}
