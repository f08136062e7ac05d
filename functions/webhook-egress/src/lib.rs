//! Webhook egress: one SQS batch in, signed deliveries out, failures reported per message.
#![forbid(unsafe_code)]

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use sluice::{Config, aws::AwsClients, config::ConfigError};

/// Everything the handler needs, built once per cold start.
#[derive(Clone)]
pub struct EgressState {
    pub config: Arc<Config>,
    pub aws: AwsClients,
}

impl EgressState {
    /// Builds the state.
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, ConfigError> {
        Ok(EgressState {
            config: Arc::new(config),
            aws,
        })
    }
}

/// Processes one batch; every message not delivered is reported as a failure.
pub async fn handle_batch(_state: &EgressState, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = event
        .records
        .into_iter()
        .filter_map(|r| r.message_id)
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
