//! Outbound events and their fan-out: one delivery (and one SQS message) per matching endpoint.
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

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};

use crate::{
    ApiError,
    aws::AwsClients,
    clock, ids,
    table::{self, Item, ItemExt, n, s},
};

/// Outbound events and delivery logs are kept this long (SPEC §6: attempts kept 30 days).
pub const RETENTION_DAYS: u32 = 30;
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

/// Delivery item attribute names (the egress function reads and updates them).
pub mod attr {
    pub const EVENT_ID: &str = "event_id";
    pub const ENDPOINT_ID: &str = "endpoint_id";
    pub const STATUS: &str = "status";
    pub const GENERATION: &str = "generation";
    pub const ATTEMPT_COUNT: &str = "attempt_count";
    pub const ATTEMPTS: &str = "attempts";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    /// On the event item: the endpoints it was fanned out to (absent until expanded).
    pub const ENDPOINT_IDS: &str = "endpoint_ids";
}

/// Delivery status values.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const ENDPOINT_DISABLED: &str = "endpoint_disabled";
}

/// An event a tenant's endpoints receive (`{"type", "timestamp", "data"}` on the wire).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundEvent {
    /// `msg_…`
    pub id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub data: serde_json::Value,
    /// Epoch seconds.
    pub created_at: i64,
    /// The endpoints it was fanned out to; `None` until a deferred event is expanded.
    pub endpoint_ids: Option<Vec<String>>,
}

impl OutboundEvent {
    /// A new event with a fresh id, created now.
    pub fn new(tenant_id: &str, event_type: &str, data: serde_json::Value) -> Self {
        Self::with_id(ids::new_id("msg"), tenant_id, event_type, data)
    }

    /// A new event with the given id, created now.
    fn with_id(id: String, tenant_id: &str, event_type: &str, data: serde_json::Value) -> Self {
        OutboundEvent {
            id,
            tenant_id: tenant_id.to_owned(),
            event_type: event_type.to_owned(),
            data,
            created_at: clock::now_epoch(),
            endpoint_ids: None,
        }
    }

    /// The event's item (with `endpoint_ids` when known).
    pub fn to_item(&self) -> Item {
        let mut item = table::key(table::tenant_pk(&self.tenant_id), table::event_sk(&self.id));
        item.insert("id".into(), s(&self.id));
        item.insert("type".into(), s(&self.event_type));
        item.insert("data".into(), s(self.data.to_string()));
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(
            table::TTL.into(),
            n(self.created_at + clock::days(RETENTION_DAYS)),
        );
        if let Some(ids) = &self.endpoint_ids {
            item.insert(attr::ENDPOINT_IDS.into(), string_list(ids));
        }
        // Listed newest first by tenant (`GET /v1/events`).
        item.extend(crate::event_list::index_attributes(
            &self.tenant_id,
            self.created_at,
            &self.id,
        ));
        item
    }

    /// Reads an event item; `None` if it is not one or has expired.
    pub fn from_item(item: &Item) -> Option<Self> {
        if table::is_expired(item, clock::now_epoch()) {
            return None;
        }
        let tenant_id = item.get_s(table::PK)?.strip_prefix("TENANT#")?.to_owned();
        Some(OutboundEvent {
            id: item.get_s("id")?.to_owned(),
            tenant_id,
            event_type: item.get_s("type")?.to_owned(),
            data: serde_json::from_str(item.get_s("data")?).ok()?,
            created_at: item.get_i64(attr::CREATED_AT)?,
            endpoint_ids: item
                .contains_key(attr::ENDPOINT_IDS)
                .then(|| item.get_string_list(attr::ENDPOINT_IDS)),
        })
    }

    /// The JSON body endpoints receive: `{"type", "timestamp", "data"}`.
    pub fn wire_body(&self) -> String {
        serde_json::json!({
            "type": self.event_type,
            "timestamp": clock::rfc3339(self.created_at),
            "data": self.data,
        })
        .to_string()
    }

    fn deliver_message(&self, endpoint_id: &str, generation: u32) -> DeliveryMessage {
        DeliveryMessage::Deliver {
            tenant_id: self.tenant_id.clone(),
            event_id: self.id.clone(),
            endpoint_id: endpoint_id.to_owned(),
            generation,
        }
    }
}

/// A new delivery item: `pending`, generation 1, no attempts yet.
pub fn delivery_item(event: &OutboundEvent, endpoint_id: &str) -> Item {
    let mut item = table::key(
        table::tenant_pk(&event.tenant_id),
        table::delivery_sk(&event.id, endpoint_id),
    );
    item.insert(attr::EVENT_ID.into(), s(&event.id));
    item.insert(attr::ENDPOINT_ID.into(), s(endpoint_id));
    item.insert(attr::STATUS.into(), s(status::PENDING));
    item.insert(attr::GENERATION.into(), n(1));
    item.insert(attr::ATTEMPT_COUNT.into(), n(0));
    item.insert(attr::ATTEMPTS.into(), AttributeValue::L(Vec::new()));
    item.insert(attr::CREATED_AT.into(), n(event.created_at));
    item.insert(
        table::TTL.into(),
        n(event.created_at + clock::days(RETENTION_DAYS)),
    );
    item
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
        let id = ids::derived_id("msg", &[tenant_id, source, event_type]);
        Deferred {
            event: OutboundEvent::with_id(id, tenant_id, event_type, data),
        }
    }

    /// The `Put` of the event item, for the writer's transaction.
    pub fn transact_item(&self, table: &str) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(self.event.to_item()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
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
    let event_put = Put::builder()
        .table_name(table)
        .set_item(Some(event.to_item()))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table and item are set");
    let items = transaction_items(
        table,
        &event,
        &endpoint_ids,
        TransactWriteItem::builder().put(event_put).build(),
    );
    Ok(Publication {
        event,
        endpoint_ids,
        items,
    })
}

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
    let mark_expanded = Update::builder()
        .table_name(table)
        .set_key(Some(table::key(
            table::tenant_pk(tenant_id),
            table::event_sk(event_id),
        )))
        .update_expression("SET #ids = :ids")
        .condition_expression("attribute_exists(pk) AND attribute_not_exists(#ids)")
        .expression_attribute_names("#ids", attr::ENDPOINT_IDS)
        .expression_attribute_values(":ids", string_list(&endpoint_ids))
        .build()
        .expect("table, key and expression are set");
    match write_deliveries(
        &aws.dynamodb,
        table,
        event,
        &endpoint_ids,
        TransactWriteItem::builder().update(mark_expanded).build(),
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
    items.extend(endpoint_ids.iter().map(|ep| {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(delivery_item(event, ep)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }));
    items
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
            Err(err) if first_chunk && crate::tenants::is_condition_failure_at(&err, 0) => {
                return Err(WriteError::Conflict);
            }
            Err(err) => return Err(WriteError::Aws(err.into())),
        }
        first_chunk = false;
    }
    Ok(())
}

fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.as_str())).collect())
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

    #[test]
    fn event_items_round_trip_and_expire() {
        let mut e = OutboundEvent::new("tnt_a", "credits.added", serde_json::json!({"amount": 5}));
        assert!(e.id.starts_with("msg_"));
        assert_eq!(OutboundEvent::from_item(&e.to_item()).unwrap(), e);
        e.endpoint_ids = Some(vec!["ep_1".into()]);
        assert_eq!(OutboundEvent::from_item(&e.to_item()).unwrap(), e);
        let mut old = e.to_item();
        old.insert(table::TTL.into(), n(clock::now_epoch() - 1));
        assert!(OutboundEvent::from_item(&old).is_none());
    }

    #[test]
    fn wire_body_has_type_timestamp_and_data() {
        let mut e = OutboundEvent::new("tnt_a", "payment.failed", serde_json::json!({"x": 1}));
        e.created_at = 0;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&e.wire_body()).unwrap(),
            serde_json::json!({"type": "payment.failed", "timestamp": "1970-01-01T00:00:00Z", "data": {"x": 1}})
        );
    }
}
