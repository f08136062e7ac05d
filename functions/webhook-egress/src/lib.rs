//! Webhook egress (SPEC §6): one SQS batch in, signed deliveries out, failures reported per
//! message.
//!
//! - [`handle_batch`] processes every record of a batch concurrently, each under its own span,
//!   and reports only the records that must come back (`ReportBatchItemFailures`);
//!   [`handle_invocation`] does the same within the invocation's deadline (no request outlives
//!   it, see [`delivery::request_timeout`]).
//! - The table's DynamoDB Stream (outbox items only, by the event source mapping's filter)
//!   comes in through [`stream::handle_stream_batch`]: each committed outbound event is expanded
//!   and its `Deliver` messages sent ([`sluice::fanout::relay`]). [`handle_any`] tells the two
//!   event sources apart.
//! - A `Deliver` message is claimed, signed, sent and recorded ([`delivery`]); a failed attempt
//!   comes back after the [`retry`] schedule's delay, set as the message's visibility timeout.
//! - [`http`] is the client (connect-time address checks, no redirects, timeout);
//!   [`secret_cache`] keeps decrypted signing keys for a few minutes.
//!
//! A body that is not a delivery message can never succeed; it is reported as failed every time,
//! so the queue's redrive policy moves it to the dead-letter queue, where the DLQ alarm shows it
//! to an operator (dropping it would hide a producer's bug).
#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use sluice::{
    Config, aws::AwsClients, config::ConfigError, fanout::DeliveryMessage, sealing::Sealer,
    ssrf::UrlPolicy, telemetry,
};
use tracing::{Instrument, field::Empty};

pub mod delivery;
pub mod http;
pub mod retry;
pub mod secret_cache;
pub mod stream;

use delivery::{Disposition, MessageMeta, Target};

/// Everything the handler needs, built once per cold start. Cheap to clone.
#[derive(Clone)]
pub struct EgressState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
    pub http: http::EndpointClient,
    pub sealer: Sealer,
    pub secrets: Arc<secret_cache::SecretCache>,
    pub retry: Arc<retry::RetryPolicy>,
}

impl EgressState {
    /// Builds the state: the endpoint client from the URL policy and timeout of `config`.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        let http =
            http::EndpointClient::new(UrlPolicy::from_config(&config), config.egress_timeout)
                // Building fails only without a TLS provider, which `EndpointClient::new` installs.
                .expect("the delivery HTTP client builds");
        Ok(EgressState {
            sealer: Sealer::new(aws.kms.clone(), config.kms_key_id.clone()),
            config: Arc::new(config),
            aws,
            http,
            secrets: Arc::new(secret_cache::SecretCache::default()),
            retry: Arc::new(retry::RetryPolicy::default()),
        })
    }

    /// The same state with another jitter source (tests seed it to predict delays).
    pub fn with_retry_policy(mut self, policy: retry::RetryPolicy) -> Self {
        self.retry = Arc::new(policy);
        self
    }
}

/// One Lambda invocation: [`handle_batch`] within the invocation's deadline.
pub async fn handle_invocation(
    state: &EgressState,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse {
    // `Context::default()` (tests, local runners) has no deadline: 0.
    let deadline_ms = i64::try_from(event.context.deadline)
        .ok()
        .filter(|d| *d > 0);
    handle_batch_until(state, event.payload, deadline_ms).await
}

/// One invocation from either event source: a DynamoDB Stream batch (records with
/// `eventSource: aws:dynamodb`) or an SQS batch. Both answer `{batchItemFailures}`.
pub async fn handle_any(
    state: &EgressState,
    event: LambdaEvent<serde_json::Value>,
) -> Result<SqsBatchResponse, serde_json::Error> {
    if is_stream_event(&event.payload) {
        let batch = serde_json::from_value(event.payload)?;
        Ok(stream::handle_stream_batch(state, batch).await)
    } else {
        let batch = serde_json::from_value(event.payload)?;
        Ok(handle_invocation(state, LambdaEvent::new(batch, event.context)).await)
    }
}

/// Whether an invocation's payload is a DynamoDB Stream batch (else it is an SQS one). Lambda
/// never mixes sources in one batch, so the first record says it.
pub fn is_stream_event(payload: &serde_json::Value) -> bool {
    payload["Records"][0]["eventSource"] == "aws:dynamodb"
}

/// Processes one batch; only the messages that must come back are reported as failures.
pub async fn handle_batch(state: &EgressState, event: SqsEvent) -> SqsBatchResponse {
    handle_batch_until(state, event, None).await
}

/// [`handle_batch`] with the invocation's deadline (epoch milliseconds), if known.
async fn handle_batch_until(
    state: &EgressState,
    event: SqsEvent,
    deadline_ms: Option<i64>,
) -> SqsBatchResponse {
    let results = futures::future::join_all(
        event
            .records
            .into_iter()
            .map(|r| handle_record(state, r, deadline_ms)),
    )
    .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = results
        .into_iter()
        .flatten()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Handles one record; returns its message id if it must be reported as failed.
async fn handle_record(
    state: &EgressState,
    record: SqsMessage,
    deadline_ms: Option<i64>,
) -> Option<String> {
    let message_id = record.message_id.clone().unwrap_or_default();
    let span = tracing::info_span!(
        "message",
        message_id = message_id.as_str(),
        tenant_id = Empty,
        event_id = Empty,
        endpoint_id = Empty,
        outcome = Empty,
    );
    async move {
        let disposition = process(state, &record, deadline_ms).await;
        let outcome = disposition.outcome();
        tracing::Span::current().record("outcome", outcome);
        telemetry::emit(&telemetry::DELIVERIES, 1.0, &[("Outcome", outcome)]);
        match disposition {
            Disposition::Done(_) => {
                tracing::info!("message done");
                None
            }
            Disposition::Retry { delay, .. } => {
                if let (Some(delay), Some(handle)) = (delay, record.receipt_handle.as_deref()) {
                    set_visibility(state, handle, delay).await;
                }
                tracing::info!(
                    delay_secs = delay.map(|d| d.as_secs()),
                    "message kept for a retry"
                );
                if message_id.is_empty() {
                    // Without an id it cannot be reported; SQS redelivers it after its timeout.
                    tracing::error!("a record without a message id");
                    return None;
                }
                Some(message_id)
            }
        }
    }
    .instrument(span)
    .await
}

async fn process(
    state: &EgressState,
    record: &SqsMessage,
    deadline_ms: Option<i64>,
) -> Disposition {
    let message = match record.body.as_deref().map(DeliveryMessage::from_body) {
        Some(Ok(message)) => message,
        _ => {
            tracing::error!("not a delivery message; it will end in the dead-letter queue");
            return Disposition::Retry {
                delay: None,
                outcome: "malformed",
            };
        }
    };
    let meta = MessageMeta {
        deadline_ms,
        ..message_meta(record)
    };
    let span = tracing::Span::current();
    match message {
        DeliveryMessage::Deliver {
            tenant_id,
            event_id,
            endpoint_id,
            generation,
        } => {
            span.record("tenant_id", tenant_id.as_str());
            span.record("event_id", event_id.as_str());
            span.record("endpoint_id", endpoint_id.as_str());
            let target = Target {
                tenant_id: &tenant_id,
                event_id: &event_id,
                endpoint_id: &endpoint_id,
                generation,
            };
            delivery::deliver(state, &meta, target)
                .await
                .unwrap_or_else(|err| {
                    tracing::error!(error = %format!("{err:#}"), "delivery failed before or after sending");
                    Disposition::Retry {
                        delay: None,
                        outcome: "error",
                    }
                })
        }
    }
}

fn message_meta(record: &SqsMessage) -> MessageMeta {
    let attr = |name: &str| record.attributes.get(name).map(String::as_str);
    MessageMeta {
        receive_count: attr("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        deadline_ms: None,
    }
}

/// Makes the message visible again after `delay`. If SQS refuses, the queue's own visibility
/// timeout brings it back (earlier than planned, which the claim makes harmless).
async fn set_visibility(state: &EgressState, receipt_handle: &str, delay: Duration) {
    let secs = delay
        .as_secs()
        .min(retry::SQS_MAX_VISIBILITY.as_secs())
        .try_into()
        .unwrap_or(i32::MAX);
    let result = state
        .aws
        .sqs
        .change_message_visibility()
        .queue_url(&state.config.queue_url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(secs)
        .send()
        .await;
    if let Err(err) = result {
        tracing::warn!(
            error = %aws_sdk_sqs::error::DisplayErrorContext(err),
            "changing the message's visibility failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_source_is_told_by_the_first_record() {
        let stream = serde_json::json!({"Records": [{"eventSource": "aws:dynamodb"}]});
        let sqs = serde_json::json!({"Records": [{"eventSource": "aws:sqs"}]});
        assert!(is_stream_event(&stream));
        assert!(!is_stream_event(&sqs));
        assert!(!is_stream_event(&serde_json::json!({"Records": []})));
    }
}
