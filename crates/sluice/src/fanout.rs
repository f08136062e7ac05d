//! Outbound events and their fan-out: one delivery (and one SQS message) per matching endpoint.
//! The event and delivery items themselves (keys, attributes, ids) belong to [`crate::outbound`].
//!
//! A transactional outbox: no writer sends to SQS. An outbound event is an item (`EVENT#msg_…`,
//! see [`crate::table`]) written in the *same transaction* as its cause; the egress function,
//! triggered by the table's DynamoDB Stream (filtered to `INSERT`s of event items), publishes it
//! ([`relay`]). So a notification exists exactly when its cause committed: nothing is announced
//! for a transaction that was cancelled, and nothing committed is left unannounced.
//!
//! Three ways in, one item layout:
//! - [`publish`] (`POST /v1/events`): one `Query` of the tenant's endpoints (the answer names
//!   them), then one transaction: the event (with `endpoint_ids`) and its delivery items — the
//!   API adds its idempotency completion to that same transaction ([`plan_publish`]).
//! - [`Deferred`] (Stripe ingress, usage budget alerts): a writer that must stay at one DynamoDB
//!   transaction puts the event item (without `endpoint_ids`) into *its* transaction; [`relay`]
//!   later does the endpoint lookup and writes the deliveries. No request of the writer's own.
//! - Replays (`crate::replay`): a transaction bumps the deliveries' generations and writes an
//!   outbox item (`OUTBOX#rdl_…`) that the stream consumer relays the same way.
//!
//! [`relay`] is idempotent under the stream's at-least-once redelivery: deliveries are written
//! with `attribute_not_exists` and the event's `endpoint_ids` is set once (a second expansion
//! finds it and reuses it), and the `Deliver` messages it sends (generation 1) may be sent twice:
//! the egress claim ([`DeliveryMessage::Deliver`]) makes a delivery send at most once
//! successfully. Writes come before the `Deliver` sends, so every message names a delivery item
//! that exists.
//!
//! AWS requests of [`relay`] per event: already expanded (from `publish`) one `SendMessageBatch`
//! per 10 endpoints; deferred: one `Query`, one transaction, the sends (a redelivery adds a
//! `GetItem`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::TransactWriteItem;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};

// The event and delivery items live in `outbound`; these names stay here for the callers.
pub use crate::outbound::{OutboundEvent, RETENTION_DAYS, attr, delivery_item, status};
use crate::{
    ApiError,
    aws::AwsClients,
    outbound::EventId,
    table::{self, Condition, Item, ItemExt, UpdateBuilder, string_list},
};

/// `TransactWriteItems` takes at most 100 items.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// `SendMessageBatch` takes at most 10 entries.
const MAX_SQS_BATCH: usize = 10;

/// Body of a message on the delivery queue (JSON, tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeliveryMessage {
    /// Deliver one event to one endpoint; `generation` is bumped by every replay.
    Deliver {
        tenant_id: String,
        event_id: String,
        endpoint_id: String,
        generation: u32,
    },
}

impl DeliveryMessage {
    /// The JSON body sent to SQS.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a delivery message always serializes")
    }

    /// Decodes a message body.
    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// An outbound event whose fan-out is left to the egress function, so that publishing it costs
/// the writer no DynamoDB request of its own.
///
/// Use: commit `d.transact_item(..)` inside the writer's own transaction; the table's stream
/// hands the committed item to [`relay`]. A cancelled transaction leaves nothing to relay.
#[derive(Clone, Debug)]
pub struct Deferred {
    pub event: OutboundEvent,
}

impl Deferred {
    /// A new event for the tenant, to be fanned out later.
    pub fn new(tenant_id: &str, event_type: &str, data: serde_json::Value) -> Deferred {
        Deferred {
            event: OutboundEvent::new(tenant_id, event_type, data),
        }
    }

    /// The event derived from `source` (e.g. a Stripe event id): its id is a function of
    /// (tenant, source, type), so every delivery of the source names the same outbound event.
    /// A redelivered source's transaction then finds the event its first delivery committed
    /// (its condition fails: published already), and the event's `webhook-id` is stable for
    /// receivers that deduplicate.
    pub fn derived(
        tenant_id: &str,
        event_type: &str,
        data: serde_json::Value,
        source: &str,
    ) -> Deferred {
        let id = EventId::derived(&[tenant_id, source, event_type]);
        Deferred {
            event: OutboundEvent::with_id(id, tenant_id, event_type, data),
        }
    }

    /// The `Put` of the event item, for the writer's transaction.
    pub fn transact_item(&self, table: &str) -> TransactWriteItem {
        new_item(table, self.event.to_item())
    }
}

/// Publishes an event now (`POST /v1/events`): [`plan_publish`], then [`Publication::commit`].
pub async fn publish(
    aws: &AwsClients,
    table: &str,
    tenant_id: &str,
    event_type: &str,
    data: serde_json::Value,
) -> Result<(OutboundEvent, Vec<String>), ApiError> {
    plan_publish(aws, table, tenant_id, event_type, data)
        .await?
        .commit(&aws.dynamodb)
        .await
}

/// An event to publish with the endpoints it goes to, and the items of its transaction: the
/// event (with `endpoint_ids`) and one delivery per endpoint. No SQS call: the stream's consumer
/// ([`relay`]) sends the `Deliver` messages once they commit.
pub struct Publication {
    pub event: OutboundEvent,
    pub endpoint_ids: Vec<String>,
    items: Vec<TransactWriteItem>,
}

/// Finds the endpoints (one `Query`: the answer `202 {id, endpoints}` names them) and builds the
/// publication's items.
pub async fn plan_publish(
    aws: &AwsClients,
    table: &str,
    tenant_id: &str,
    event_type: &str,
    data: serde_json::Value,
) -> Result<Publication, ApiError> {
    let mut event = OutboundEvent::new(tenant_id, event_type, data);
    let endpoint_ids = matching_endpoints(&aws.dynamodb, table, tenant_id, event_type).await?;
    event.endpoint_ids = Some(endpoint_ids.clone());
    let event_put = new_item(table, event.to_item());
    let items = transaction_items(table, &event, &endpoint_ids, event_put);
    Ok(Publication {
        event,
        endpoint_ids,
        items,
    })
}

/// Builds the publication of an event to one endpoint of the tenant only (a test event): no
/// `Query`; the transaction checks that the endpoint exists (item 2, see [`ENDPOINT_CHECK_INDEX`]).
pub fn plan_publish_to(
    table: &str,
    tenant_id: &str,
    event_type: &str,
    data: serde_json::Value,
    endpoint_id: &str,
) -> Publication {
    let mut event = OutboundEvent::new(tenant_id, event_type, data);
    let endpoint_ids = vec![endpoint_id.to_owned()];
    event.endpoint_ids = Some(endpoint_ids.clone());
    let event_put = new_item(table, event.to_item());
    let mut items = transaction_items(table, &event, &endpoint_ids, event_put);
    items.push(table::condition_check(
        table,
        table::key(table::tenant_pk(tenant_id), table::endpoint_sk(endpoint_id)),
        Condition::new("attribute_exists(pk)"),
    ));
    Publication {
        event,
        endpoint_ids,
        items,
    }
}

/// The index of the endpoint's `ConditionCheck` in a [`plan_publish_to`] transaction.
pub const ENDPOINT_CHECK_INDEX: usize = 2;

impl Publication {
    /// Whether its items and one more (an idempotency completion) fit one transaction.
    pub fn fits_one_transaction_with_one_more(&self) -> bool {
        self.items.len() < MAX_TRANSACTION_ITEMS
    }

    /// The items, the event's put first (for the caller's own transaction).
    pub fn into_items(self) -> Vec<TransactWriteItem> {
        self.items
    }

    /// Writes it: one transaction when it fits, else the first carries the event.
    pub async fn commit(
        self,
        db: &aws_sdk_dynamodb::Client,
    ) -> Result<(OutboundEvent, Vec<String>), ApiError> {
        commit_chunks(db, self.items).await?;
        Ok((self.event, self.endpoint_ids))
    }
}

/// Error of [`expand`] and `crate::replay` callers can act on.
#[derive(Debug)]
pub enum FanoutError {
    /// The event item does not exist (yet, or any more).
    EventNotFound,
    /// The endpoint is not one of the tenant's.
    EndpointNotFound,
    /// AWS failed: retry.
    Aws(ApiError),
}

impl From<ApiError> for FanoutError {
    fn from(err: ApiError) -> Self {
        FanoutError::Aws(err)
    }
}

impl From<FanoutError> for ApiError {
    fn from(err: FanoutError) -> Self {
        match err {
            FanoutError::EventNotFound => ApiError::not_found("event"),
            FanoutError::EndpointNotFound => ApiError::not_found("endpoint"),
            FanoutError::Aws(err) => err,
        }
    }
}

/// Expands a stored event by id: [`relay`] of the item read (strongly consistent).
pub async fn expand(
    aws: &AwsClients,
    table: &str,
    queue_url: &str,
    tenant_id: &str,
    event_id: &str,
) -> Result<Vec<String>, FanoutError> {
    let event = get_event(&aws.dynamodb, table, tenant_id, event_id)
        .await?
        .ok_or(FanoutError::EventNotFound)?;
    Ok(relay(aws, table, queue_url, &event).await?)
}

/// Publishes a committed outbound event (the stream consumer's work for one `INSERT` of an event
/// item, whose new image is `event`): a deferred event is expanded first (endpoint lookup, one
/// transaction writing its deliveries and `endpoint_ids`), then one `Deliver` per endpoint is
/// sent. Idempotent (see the module docs): a redelivered record finds the expansion done and
/// sends the same messages again, which the egress claim makes harmless.
pub async fn relay(
    aws: &AwsClients,
    table: &str,
    queue_url: &str,
    event: &OutboundEvent,
) -> Result<Vec<String>, ApiError> {
    let endpoint_ids = match &event.endpoint_ids {
        Some(ids) => ids.clone(),
        None => expand_deferred(aws, table, event).await?,
    };
    send_deliveries(&aws.sqs, queue_url, event, &endpoint_ids).await?;
    Ok(endpoint_ids)
}

/// Writes a deferred event's deliveries and marks it expanded; returns its endpoints (those of
/// an earlier expansion when there was one).
async fn expand_deferred(
    aws: &AwsClients,
    table: &str,
    event: &OutboundEvent,
) -> Result<Vec<String>, ApiError> {
    let (tenant_id, event_id) = (&event.tenant_id, &event.id);
    let endpoint_ids =
        matching_endpoints(&aws.dynamodb, table, tenant_id, &event.event_type).await?;
    let mut mark_expanded = UpdateBuilder::default();
    mark_expanded.set(attr::ENDPOINT_IDS, string_list(&endpoint_ids));
    let ids = mark_expanded.expr.name(attr::ENDPOINT_IDS);
    mark_expanded.condition(format!(
        "attribute_exists(pk) AND attribute_not_exists({ids})"
    ));
    match write_deliveries(
        &aws.dynamodb,
        table,
        event,
        &endpoint_ids,
        mark_expanded.transact_item(
            table,
            table::key(table::tenant_pk(tenant_id), table::event_sk(event_id)),
        ),
    )
    .await
    {
        Ok(()) => Ok(endpoint_ids),
        // Expanded before (a redelivered record, or a concurrent consumer): its deliveries stand.
        // An event gone since (retention) has nothing left to deliver.
        Err(WriteError::Conflict) => Ok(get_event(&aws.dynamodb, table, tenant_id, event_id)
            .await?
            .and_then(|e| e.endpoint_ids)
            .unwrap_or_default()),
        Err(WriteError::Aws(err)) => Err(err),
    }
}

/// Reads an outbound event (strongly consistent; expired reads as absent).
pub async fn get_event(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant_id: &str,
    event_id: &str,
) -> Result<Option<OutboundEvent>, ApiError> {
    let out = db
        .get_item()
        .table_name(table)
        .set_key(Some(table::key(
            table::tenant_pk(tenant_id),
            table::event_sk(event_id),
        )))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out.item().and_then(OutboundEvent::from_item))
}

/// The ids of the tenant's enabled endpoints subscribed to `event_type` (an empty
/// `event_types` list subscribes to everything).
pub async fn matching_endpoints(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant_id: &str,
    event_type: &str,
) -> Result<Vec<String>, ApiError> {
    let endpoints = table::query_prefix(
        db,
        table,
        &table::tenant_pk(tenant_id),
        &table::endpoint_sk(""),
    )
    .await?;
    Ok(endpoints
        .iter()
        .filter_map(crate::endpoints::Endpoint::from_item)
        .filter(|endpoint| endpoint.accepts(event_type))
        .map(|endpoint| endpoint.id.into_string())
        .collect())
}

async fn send_deliveries(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    event: &OutboundEvent,
    endpoint_ids: &[String],
) -> Result<(), ApiError> {
    let messages: Vec<_> = endpoint_ids
        .iter()
        .map(|ep| event.deliver_message(ep, 1))
        .collect();
    send_messages(sqs, queue_url, &messages).await
}

/// Sends messages in batches of 10; any entry SQS did not accept fails the whole call (the
/// caller answers 5xx and its client retries; duplicates are harmless to the egress function).
pub async fn send_messages(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[DeliveryMessage],
) -> Result<(), ApiError> {
    for chunk in messages.chunks(MAX_SQS_BATCH) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.to_body())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
        if let Some(failed) = out.failed().first() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "SQS rejected a delivery message: {}",
                failed.code()
            )));
        }
    }
    Ok(())
}

enum WriteError {
    /// The first item's condition failed.
    Conflict,
    Aws(ApiError),
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Conflict => ApiError::conflict("the event exists already"),
            WriteError::Aws(err) => err,
        }
    }
}

/// `first` (the event's put or update) followed by one conditional put per delivery.
fn transaction_items(
    table: &str,
    event: &OutboundEvent,
    endpoint_ids: &[String],
    first: TransactWriteItem,
) -> Vec<TransactWriteItem> {
    let mut items = vec![first];
    items.extend(
        endpoint_ids
            .iter()
            .map(|ep| new_item(table, delivery_item(event, ep))),
    );
    items
}

/// The `Put` of an item that must not exist yet (the event, a delivery).
fn new_item(table: &str, item: Item) -> TransactWriteItem {
    table::put(
        table,
        item,
        Some(Condition::new("attribute_not_exists(pk)")),
    )
}

/// Writes `first` with the delivery items: one transaction when they fit, else the first
/// transaction carries `first` and later ones the remaining deliveries.
async fn write_deliveries(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    event: &OutboundEvent,
    endpoint_ids: &[String],
    first: TransactWriteItem,
) -> Result<(), WriteError> {
    commit_chunks(db, transaction_items(table, event, endpoint_ids, first)).await
}

/// Commits items in transactions of at most 100; a failed condition on the first item of the
/// first one is [`WriteError::Conflict`].
async fn commit_chunks(
    db: &aws_sdk_dynamodb::Client,
    items: Vec<TransactWriteItem>,
) -> Result<(), WriteError> {
    let mut first_chunk = true;
    for chunk in items.chunks(MAX_TRANSACTION_ITEMS) {
        let result = db
            .transact_write_items()
            .set_transact_items(Some(chunk.to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(err) if first_chunk && table::is_condition_failure_at(&err, 0) => {
                return Err(WriteError::Conflict);
            }
            Err(err) => return Err(WriteError::Aws(err.into())),
        }
        first_chunk = false;
    }
    Ok(())
}

/// Delivery items of one event, keyed by endpoint id.
pub async fn deliveries_of(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant_id: &str,
    event_id: &str,
) -> Result<HashMap<String, Item>, ApiError> {
    let deliveries = table::query_prefix(
        db,
        table,
        &table::tenant_pk(tenant_id),
        &table::delivery_sk(event_id, ""),
    )
    .await?;
    Ok(deliveries
        .into_iter()
        .filter_map(|item| Some((item.get_s(attr::ENDPOINT_ID)?.to_owned(), item)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let m = DeliveryMessage::Deliver {
            tenant_id: "tnt_a".into(),
            event_id: "msg_b".into(),
            endpoint_id: "ep_c".into(),
            generation: 2,
        };
        let body = m.to_body();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"kind": "deliver", "tenant_id": "tnt_a", "event_id": "msg_b",
                "endpoint_id": "ep_c", "generation": 2})
        );
        assert_eq!(DeliveryMessage::from_body(&body).unwrap(), m);
        // Fan-out is the stream consumer's now: no `Fanout` message exists any more.
        assert!(
            DeliveryMessage::from_body(r#"{"kind":"fanout","tenant_id":"t","event_id":"e"}"#)
                .is_err()
        );
        assert!(DeliveryMessage::from_body(r#"{"kind":"other"}"#).is_err());
    }
}
