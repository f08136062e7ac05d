//! Feeds the egress function from SQS as Lambda's event source mapping does: receive up to 10
//! messages, invoke the handler with a real `SqsEvent`, delete the successes, and leave the
//! reported failures on the queue for redelivery (after whatever visibility the handler set).

use std::collections::{HashMap, HashSet};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use tokio::sync::watch;
use webhook_egress::EgressState;

/// One receive → invoke → delete round; returns how many messages were received.
pub async fn poll_once(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    queue_arn: &str,
    state: &EgressState,
    wait_secs: i32,
) -> anyhow::Result<usize> {
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let receipts: HashMap<String, String> = messages
        .iter()
        .filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?)))
        .collect();
    let event = sqs_event(messages, queue_arn);
    let count = event.records.len();
    let response = webhook_egress::handle_batch(state, event).await;
    let failed: HashSet<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    let entries: Vec<_> = receipts
        .into_iter()
        .filter(|(id, _)| !failed.contains(id))
        .enumerate()
        .map(|(i, (_, handle))| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .expect("id and handle set")
        })
        .collect();
    if !entries.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(count)
}

/// The `SqsEvent` Lambda's event source mapping builds from received messages (which must have
/// been received with all system attributes: the handler reads `ApproximateReceiveCount` and
/// `SentTimestamp`).
pub fn sqs_event(messages: Vec<aws_sdk_sqs::types::Message>, queue_arn: &str) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in messages {
        let mut record = SqsMessage::default();
        record.message_id = m.message_id;
        record.receipt_handle = m.receipt_handle;
        record.body = m.body;
        record.md5_of_body = m.md5_of_body;
        record.attributes = m
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_owned(), v))
            .collect();
        record.event_source = Some("aws:sqs".into());
        record.event_source_arn = Some(queue_arn.to_owned());
        record.aws_region = Some("us-east-1".into());
        event.records.push(record);
    }
    event
}

/// Polls until `shutdown` turns true.
pub async fn run(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    state: EgressState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            result = poll_once(&sqs, &queue_url, &queue_arn, &state, 1) => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "polling the delivery queue failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
