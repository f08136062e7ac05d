//! The stored Stripe event record (`STRIPE#{evt}` / `EVENT`): its key, attribute names, typed id,
//! [`StripeEventRecord`], and the operator's reads of it.
//!
//! The raw payload is kept so any event can be reprocessed: gzip-compressed (binary), or as text
//! when gzip would not make it smaller. Events are listed through `gsi2` (`STRIPE_EVENTS`,
//! `{received_ms:013}#{evt}`), newest first, never by scanning the table; the index holds only
//! [`INDEX_ATTRIBUTES`] (what the listing shows), not the payload.
//!
//! Invariants: `id` equals the id in the key; `gsi2sk` is `{received_ms:013}#{id}`, so the index
//! orders by first arrival; `attempts` counts processing rounds and only grows; `waiting_sk`
//! is present only while the event waits for its customer. Only [`super::process`] writes the
//! record. AWS requests: [`get_item`]/[`get_record`] one `GetItem`; [`list`] one to ten `Query`s
//! of the index.

use std::io::{Read, Write};

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, DeleteRequest, WriteRequest},
};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use serde::Serialize;
use serde_json::Value;

use crate::{
    ApiError, clock,
    table::{self, Item, ItemExt, n, s},
};

/// `gsi2pk` of every Stripe event.
pub const GSI2_STRIPE_EVENTS: &str = "STRIPE_EVENTS";

/// The attributes `gsi2` projects (template.yaml `NonKeyAttributes`, kept equal by a test):
/// everything [`EventView`] shows in a listing, nothing it shows only for one event (the
/// payload).
pub const INDEX_ATTRIBUTES: [&str; 13] = [
    attr::ID,
    attr::TYPE,
    attr::STATUS,
    attr::CREATED,
    attr::RECEIVED_MS,
    attr::ATTEMPTS,
    attr::ERROR,
    attr::NOTE,
    attr::TENANT_ID,
    attr::CUSTOMER_ID,
    attr::LIVEMODE,
    attr::API_VERSION,
    attr::NOTIFICATIONS,
];
/// Sort key of the event item.
pub const EVENT_SK: &str = "EVENT";
/// DynamoDB items are limited to 400 KB; a payload that does not fit even compressed is dropped
/// (the event keeps its status, but can no longer be reprocessed).
const MAX_STORED_PAYLOAD_BYTES: usize = 350 * 1024;

/// Status of a stored event (SPEC §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[schema(as = StripeEventStatus)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, not yet processed (only seen if processing stopped half-way).
    Received,
    /// Its effects are applied.
    Processed,
    /// Its type is not handled.
    Ignored,
    /// No tenant found yet: waits for its customer's link, or for an operator.
    Unmatched,
    /// Processing failed: error text stored, attempts counted.
    Failed,
}

impl EventStatus {
    /// Every status, for validating filters.
    pub const ALL: [EventStatus; 5] = [
        EventStatus::Received,
        EventStatus::Processed,
        EventStatus::Ignored,
        EventStatus::Unmatched,
        EventStatus::Failed,
    ];

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Processed => "processed",
            EventStatus::Ignored => "ignored",
            EventStatus::Unmatched => "unmatched",
            EventStatus::Failed => "failed",
        }
    }

    /// Reads a stored value.
    pub fn parse(s: &str) -> Option<EventStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A redelivery of an event in one of these is a duplicate; the others are processed again.
    pub fn is_final(self) -> bool {
        matches!(self, EventStatus::Processed | EventStatus::Ignored)
    }

    /// The status stored on an event item (`received` when absent or unknown).
    pub fn of_item(item: &Item) -> EventStatus {
        item.get_s(attr::STATUS)
            .and_then(Self::parse)
            .unwrap_or(EventStatus::Received)
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attribute names of the event item.
pub mod attr {
    pub const ID: &str = "id";
    pub const TYPE: &str = "type";
    pub const STATUS: &str = "status";
    pub const CREATED: &str = "created";
    pub const RECEIVED_MS: &str = "received_ms";
    pub const ATTEMPTS: &str = "attempts";
    pub const ERROR: &str = "error";
    pub const NOTE: &str = "note";
    pub const TENANT_ID: &str = "tenant_id";
    pub const CUSTOMER_ID: &str = "customer_id";
    pub const API_VERSION: &str = "api_version";
    pub const LIVEMODE: &str = "livemode";
    pub const PAYLOAD: &str = "payload";
    pub const PAYLOAD_ENCODING: &str = "payload_encoding";
    /// Sort key of the `UNMATCHED#{cus}` item while the event waits for its customer.
    pub const WAITING_SK: &str = "waiting_sk";
    /// The customer this event linked (a checkout): its waiting events are processed after it.
    pub const LINKED_CUSTOMER: &str = "linked_customer";
    /// Ids (`msg_…`) of the notifications this event published.
    pub const NOTIFICATIONS: &str = "notifications";
    pub const UPDATED_AT: &str = "updated_at";
}

/// The raw payload of a stored event, if it was kept.
pub fn read_payload(item: &Item) -> Option<Vec<u8>> {
    StoredPayload::from_item(item).raw()
}

/// A Stripe event id, `evt_…`, checked once where it enters (a path, an item).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct StripeEventId(String);

impl StripeEventId {
    /// `Some` if `raw` looks like a Stripe event id: `evt_` and letters, digits or `_`, at most
    /// 254 bytes (lets handlers answer 404 without a request).
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.starts_with("evt_")
            && raw.len() <= 254
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// An id reads as its text wherever a `&str` key part is asked for.
impl std::ops::Deref for StripeEventId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StripeEventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The payload as stored ([`StoredPayload::of`], [`StoredPayload::attributes`]); decoded only
/// when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredPayload {
    /// UTF-8 text too small for gzip to make it smaller.
    Text(String),
    /// gzip of the raw bytes.
    Gzip(Vec<u8>),
    /// Too large even compressed: not kept, the event cannot be processed again.
    Dropped,
}

impl StoredPayload {
    /// How a raw payload is stored: gzip, unless that would not be smaller (a tiny payload), then
    /// text.
    ///
    /// Every payload is compressed, not only large ones, because DynamoDB bills every started KB
    /// of an item, twice inside the event's transaction: a 5 KB Checkout Session event stored as
    /// text makes a ≈ 5.5 KB item (12 write units), gzipped (≈ 1.45 KB) a ≈ 1.9 KB one (4 units).
    /// The default level, not the fastest: level 1 leaves that item just over 2 KB (6 units) for a
    /// few microseconds of CPU saved (README "Cost per million").
    pub fn of(raw: &[u8]) -> Self {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let compressed = gz.write_all(raw).and_then(|()| gz.finish());
        match (compressed, std::str::from_utf8(raw)) {
            (Ok(bytes), Ok(text)) if bytes.len() >= raw.len() => {
                StoredPayload::Text(text.to_owned())
            }
            (Ok(bytes), _) if bytes.len() <= MAX_STORED_PAYLOAD_BYTES => StoredPayload::Gzip(bytes),
            _ => StoredPayload::Dropped,
        }
    }

    /// Its attributes (`payload`, `payload_encoding`).
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        match self {
            StoredPayload::Text(text) => vec![
                (attr::PAYLOAD, s(text.as_str())),
                (attr::PAYLOAD_ENCODING, s("identity")),
            ],
            StoredPayload::Gzip(bytes) => vec![
                (attr::PAYLOAD, table::bin(bytes.clone())),
                (attr::PAYLOAD_ENCODING, s("gzip")),
            ],
            StoredPayload::Dropped => vec![(attr::PAYLOAD_ENCODING, s("dropped"))],
        }
    }

    /// Reads the attributes of an item (a text payload without an encoding is text).
    pub fn from_item(item: &Item) -> Self {
        match item.get_s(attr::PAYLOAD_ENCODING) {
            Some("gzip") => item
                .get_bin(attr::PAYLOAD)
                .map_or(StoredPayload::Dropped, |b| StoredPayload::Gzip(b.to_vec())),
            _ => item
                .get_s(attr::PAYLOAD)
                .map_or(StoredPayload::Dropped, |p| {
                    StoredPayload::Text(p.to_owned())
                }),
        }
    }

    /// The raw payload, if it was kept (and decompresses).
    pub fn raw(&self) -> Option<Vec<u8>> {
        match self {
            StoredPayload::Text(text) => Some(text.as_bytes().to_vec()),
            StoredPayload::Gzip(bytes) => {
                let mut out = Vec::new();
                GzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut out)
                    .ok()?;
                Some(out)
            }
            StoredPayload::Dropped => None,
        }
    }
}

/// A stored Stripe event.
#[derive(Clone, Debug, PartialEq)]
pub struct StripeEventRecord {
    pub id: StripeEventId,
    pub event_type: String,
    pub status: EventStatus,
    /// Stripe's `created` (Unix seconds).
    pub created: i64,
    /// When Sluice first received it (epoch milliseconds).
    pub received_ms: i64,
    /// Processing rounds so far.
    pub attempts: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    pub customer_id: Option<String>,
    /// The tenant its effects went to.
    pub tenant_id: Option<String>,
    /// Why it failed (status `failed`).
    pub error: Option<String>,
    /// What processing noted (e.g. an effect left out).
    pub note: Option<String>,
    /// Sort key of its `UNMATCHED#{cus}` item while it waits for its customer.
    pub waiting_sk: Option<String>,
    /// The customer this event linked.
    pub linked_customer: Option<String>,
    /// Ids (`msg_…`) of the notifications it published.
    pub notifications: Vec<String>,
    /// Epoch seconds of the last write.
    pub updated_at: Option<i64>,
    /// Epoch seconds at which DynamoDB may remove it (`ttl`).
    pub expires_at: Option<i64>,
    pub payload: StoredPayload,
}

impl StripeEventRecord {
    /// `{received_ms:013}#{evt}`: the index orders events by first arrival.
    pub fn gsi2sk(&self) -> String {
        format!("{:013}#{}", self.received_ms, self.id)
    }

    /// The item, key and index attributes included.
    pub fn to_item(&self) -> Item {
        let mut item = event_key(&self.id);
        item.insert(attr::ID.into(), s(self.id.as_str()));
        item.insert(attr::TYPE.into(), s(&self.event_type));
        item.insert(attr::STATUS.into(), s(self.status.as_str()));
        item.insert(attr::CREATED.into(), n(self.created));
        item.insert(attr::RECEIVED_MS.into(), n(self.received_ms));
        item.insert(attr::ATTEMPTS.into(), n(self.attempts));
        item.insert(attr::LIVEMODE.into(), table::b(self.livemode));
        item.insert(table::GSI2PK.into(), s(GSI2_STRIPE_EVENTS));
        item.insert(table::GSI2SK.into(), s(self.gsi2sk()));
        for (name, value) in [
            (attr::API_VERSION, &self.api_version),
            (attr::CUSTOMER_ID, &self.customer_id),
            (attr::TENANT_ID, &self.tenant_id),
            (attr::ERROR, &self.error),
            (attr::NOTE, &self.note),
            (attr::WAITING_SK, &self.waiting_sk),
            (attr::LINKED_CUSTOMER, &self.linked_customer),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        if !self.notifications.is_empty() {
            item.insert(
                attr::NOTIFICATIONS.into(),
                table::string_list(&self.notifications),
            );
        }
        if let Some(at) = self.updated_at {
            item.insert(attr::UPDATED_AT.into(), n(at));
        }
        if let Some(at) = self.expires_at {
            item.insert(table::TTL.into(), n(at));
        }
        for (name, value) in self.payload.attributes() {
            item.insert(name.into(), value);
        }
        item
    }

    /// Reads an event item; `None` without a valid `id` or a known `status`. Other missing
    /// attributes read as empty/0, as the operator API has always shown them.
    pub fn from_item(item: &Item) -> Option<Self> {
        let opt = |name| item.get_s(name).map(String::from);
        Some(StripeEventRecord {
            id: StripeEventId::parse(item.get_s(attr::ID)?)?,
            event_type: item.get_s(attr::TYPE).unwrap_or_default().to_owned(),
            status: EventStatus::parse(item.get_s(attr::STATUS)?)?,
            created: item.get_i64(attr::CREATED).unwrap_or_default(),
            received_ms: item.get_i64(attr::RECEIVED_MS).unwrap_or_default(),
            attempts: item.get_i64(attr::ATTEMPTS).unwrap_or_default(),
            livemode: item.get_bool(attr::LIVEMODE).unwrap_or(false),
            api_version: opt(attr::API_VERSION),
            customer_id: opt(attr::CUSTOMER_ID),
            tenant_id: opt(attr::TENANT_ID),
            error: opt(attr::ERROR),
            note: opt(attr::NOTE),
            waiting_sk: opt(attr::WAITING_SK),
            linked_customer: opt(attr::LINKED_CUSTOMER),
            notifications: item.get_string_list(attr::NOTIFICATIONS),
            updated_at: item.get_i64(attr::UPDATED_AT),
            expires_at: item.get_i64(table::TTL),
            payload: StoredPayload::from_item(item),
        })
    }
}

/// A stored event as the operator API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StripeEvent)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: String,
    /// Stripe's `created` (Unix seconds).
    pub created: i64,
    /// When Sluice first received it (RFC 3339).
    pub received_at: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub note: Option<String>,
    pub tenant_id: Option<String>,
    pub customer_id: Option<String>,
    pub livemode: bool,
    pub api_version: Option<String>,
    pub notifications: Vec<String>,
    /// The stored payload, only on `GET /admin/stripe-events/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl EventView {
    /// The operator's view of a record (the payload decoded as JSON only when asked for).
    pub fn of(record: StripeEventRecord, with_payload: bool) -> EventView {
        let payload = with_payload
            .then(|| record.payload.raw())
            .flatten()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        EventView {
            received_at: clock::rfc3339(record.received_ms / 1000),
            id: record.id.into_string(),
            event_type: record.event_type,
            status: record.status.as_str().to_owned(),
            created: record.created,
            attempts: record.attempts,
            error: record.error,
            note: record.note,
            tenant_id: record.tenant_id,
            customer_id: record.customer_id,
            livemode: record.livemode,
            api_version: record.api_version,
            notifications: record.notifications,
            payload,
        }
    }

    /// Reads an event item; `None` if it is not one.
    pub fn from_item(item: &Item, with_payload: bool) -> Option<EventView> {
        StripeEventRecord::from_item(item).map(|r| Self::of(r, with_payload))
    }
}

/// Key of the event item.
pub fn event_key(event_id: &str) -> Item {
    table::key(table::stripe_event_pk(event_id), EVENT_SK)
}

/// Reads one event item (strongly consistent).
pub async fn get_item(
    db: &Client,
    table_name: &str,
    event_id: &str,
) -> Result<Option<Item>, ApiError> {
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(event_key(event_id)))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out.item)
}

/// Reads one event record (strongly consistent); `None` if absent or not a record.
pub async fn get_record(
    db: &Client,
    table_name: &str,
    event_id: &StripeEventId,
) -> Result<Option<StripeEventRecord>, ApiError> {
    Ok(get_item(db, table_name, event_id)
        .await?
        .as_ref()
        .and_then(StripeEventRecord::from_item))
}

/// Filters of `GET /admin/stripe-events`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<EventStatus>,
    pub event_type: Option<String>,
}

fn encode_cursor(key: &Item) -> String {
    table::encode_key_cursor(key)
}

/// The key of an index entry: the table's and `gsi2`'s (what a cursor holds).
const INDEX_KEY: [&str; 4] = [table::PK, table::SK, table::GSI2PK, table::GSI2SK];

fn decode_cursor(cursor: &str) -> Result<Item, ApiError> {
    table::decode_key_cursor(cursor, &INDEX_KEY)
        .filter(|item| item.get_s(table::GSI2PK) == Some(GSI2_STRIPE_EVENTS))
        .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor this API returned"))
}

/// One page of events, newest first, and the cursor of the next page (if any). Filters are
/// applied by DynamoDB to the index query; short pages are topped up by a bounded number of
/// further queries.
pub async fn list(
    db: &Client,
    table_name: &str,
    filter: &ListFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<EventView>, Option<String>), ApiError> {
    let mut start = cursor.map(decode_cursor).transpose()?;
    let mut events = Vec::new();
    let mut conditions = Vec::new();
    let mut values = std::collections::HashMap::from([(":pk".to_owned(), s(GSI2_STRIPE_EVENTS))]);
    let mut names = std::collections::HashMap::new();
    if let Some(st) = &filter.status {
        conditions.push("#status = :status");
        names.insert("#status".to_owned(), attr::STATUS.to_owned());
        values.insert(":status".to_owned(), s(st.as_str()));
    }
    if let Some(t) = &filter.event_type {
        conditions.push("#type = :type");
        names.insert("#type".to_owned(), attr::TYPE.to_owned());
        values.insert(":type".to_owned(), s(t));
    }
    for _ in 0..10 {
        let out = db
            .query()
            .table_name(table_name)
            .index_name(table::GSI2)
            .key_condition_expression("gsi2pk = :pk")
            .set_filter_expression((!conditions.is_empty()).then(|| conditions.join(" AND ")))
            .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
            .set_expression_attribute_values(Some(values.clone()))
            .scan_index_forward(false)
            .limit((limit - events.len()) as i32)
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        events.extend(
            out.items()
                .iter()
                .filter_map(|i| EventView::from_item(i, false)),
        );
        start = out.last_evaluated_key;
        if events.len() >= limit || start.is_none() {
            break;
        }
    }
    let next = start.map(|k| {
        // The index key alone is what the next query starts after.
        let key: Item = k
            .into_iter()
            .filter(|(name, _)| INDEX_KEY.contains(&name.as_str()))
            .collect();
        encode_cursor(&key)
    });
    Ok((events, next))
}

/// Deletes `processed`/`ignored` events received more than `older_than_days` ago, at most
/// `max_deletes` per call; returns (deleted, whether more may remain).
pub async fn cleanup(
    db: &Client,
    table_name: &str,
    older_than_days: u32,
    max_deletes: usize,
) -> Result<(usize, bool), ApiError> {
    let cutoff_ms = clock::now_epoch_millis() - clock::days(older_than_days) * 1000;
    let mut start: Option<Item> = None;
    let mut keys: Vec<Item> = Vec::new();
    let mut more = false;
    loop {
        let out = db
            .query()
            .table_name(table_name)
            .index_name(table::GSI2)
            .key_condition_expression("gsi2pk = :pk AND gsi2sk < :cutoff")
            .filter_expression("#status IN (:processed, :ignored)")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":pk", s(GSI2_STRIPE_EVENTS))
            .expression_attribute_values(":cutoff", s(format!("{cutoff_ms:013}")))
            .expression_attribute_values(":processed", s(EventStatus::Processed.as_str()))
            .expression_attribute_values(":ignored", s(EventStatus::Ignored.as_str()))
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        for item in out.items() {
            if keys.len() == max_deletes {
                more = true;
                break;
            }
            keys.push(
                item.iter()
                    .filter(|(k, _)| *k == table::PK || *k == table::SK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
        }
        start = out.last_evaluated_key;
        if more || start.is_none() {
            more |= start.is_some() && keys.len() == max_deletes;
            break;
        }
    }
    for chunk in keys.chunks(25) {
        let mut pending: Vec<WriteRequest> = chunk
            .iter()
            .map(|key| {
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key.clone()))
                            .build()
                            .expect("key set"),
                    )
                    .build()
            })
            .collect();
        // Unprocessed writes (throttling) are sent again, a bounded number of times.
        for _ in 0..5 {
            if pending.is_empty() {
                break;
            }
            let out = db
                .batch_write_item()
                .request_items(table_name, pending)
                .send()
                .await?;
            pending = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table_name))
                .unwrap_or_default();
        }
        if !pending.is_empty() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "cleanup: deletes left unprocessed after retries"
            )));
        }
    }
    Ok((keys.len(), more))
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    #[test]
    fn payloads_are_compressed_unless_gzip_would_not_be_smaller() {
        // A real Stripe event (5 KB, pretty-printed as Stripe sends it) is stored gzipped, and
        // small enough for a 2 KB item.
        let checkout = include_bytes!(
            "../../../../tests/fixtures/stripe/checkout.session.completed.payment.json"
        );
        let item: Item = StoredPayload::of(checkout)
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(item.get_s(attr::PAYLOAD_ENCODING), Some("gzip"));
        assert!(item.get_bin(attr::PAYLOAD).unwrap().len() < 1500);
        assert_eq!(read_payload(&item).unwrap(), checkout);

        // gzip's header alone outweighs a tiny payload: kept as text.
        let small = br#"{"id":"evt_1"}"#;
        let item: Item = StoredPayload::of(small)
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(item.get_s(attr::PAYLOAD), Some(r#"{"id":"evt_1"}"#));
        assert_eq!(read_payload(&item).unwrap(), small);

        let large = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000)).into_bytes();
        let item: Item = StoredPayload::of(&large)
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(item.get_s(attr::PAYLOAD_ENCODING), Some("gzip"));
        assert!(item.get_bin(attr::PAYLOAD).unwrap().len() < 10_000);
        assert_eq!(read_payload(&item).unwrap(), large);
    }

    fn record() -> StripeEventRecord {
        StripeEventRecord {
            id: StripeEventId::parse("evt_1").unwrap(),
            event_type: "invoice.paid".into(),
            status: EventStatus::Processed,
            created: 1_700_000_000,
            received_ms: 1_700_000_000_123,
            attempts: 1,
            livemode: false,
            api_version: None,
            customer_id: None,
            tenant_id: None,
            error: None,
            note: None,
            waiting_sk: None,
            linked_customer: None,
            notifications: Vec::new(),
            updated_at: None,
            expires_at: None,
            payload: StoredPayload::of(br#"{"id":"evt_1"}"#),
        }
    }

    #[test]
    fn a_record_round_trips_through_its_item() {
        let bare = record();
        let item = bare.to_item();
        assert_eq!(item.get_s(table::PK), Some("STRIPE#evt_1"));
        assert_eq!(item.get_s(table::SK), Some(EVENT_SK));
        assert_eq!(item.get_s(table::GSI2PK), Some(GSI2_STRIPE_EVENTS));
        assert_eq!(item.get_s(table::GSI2SK), Some("1700000000123#evt_1"));
        assert_eq!(StripeEventRecord::from_item(&item), Some(bare));
        let full = StripeEventRecord {
            status: EventStatus::Failed,
            livemode: true,
            api_version: Some("2024-06-20".into()),
            customer_id: Some("cus_1".into()),
            tenant_id: Some("tnt_1".into()),
            error: Some("boom".into()),
            note: Some("left out".into()),
            waiting_sk: Some("0001#evt_1".into()),
            linked_customer: Some("cus_1".into()),
            notifications: vec!["msg_1".into(), "msg_2".into()],
            updated_at: Some(5),
            expires_at: Some(6),
            payload: StoredPayload::of(&vec![b'x'; 20_000]),
            ..record()
        };
        assert!(matches!(full.payload, StoredPayload::Gzip(_)));
        assert_eq!(StripeEventRecord::from_item(&full.to_item()), Some(full));
    }

    #[test]
    fn an_item_without_a_valid_id_or_status_is_not_a_record() {
        let mut item = record().to_item();
        item.insert(attr::STATUS.into(), s("done"));
        assert_eq!(StripeEventRecord::from_item(&item), None);
        let mut item = record().to_item();
        item.insert(attr::ID.into(), s("ch_1"));
        assert_eq!(StripeEventRecord::from_item(&item), None);
    }

    #[test]
    fn stripe_event_ids_are_parsed_once() {
        assert!(StripeEventId::parse("evt_1Abc_d").is_some());
        assert!(StripeEventId::parse("ch_1").is_none());
        assert!(StripeEventId::parse("evt_a#b").is_none());
        assert!(StripeEventId::parse(&format!("evt_{}", "a".repeat(251))).is_none());
    }

    #[test]
    fn the_view_shows_the_record_and_its_payload_only_when_asked() {
        let view = EventView::of(record(), true);
        assert_eq!(view.id, "evt_1");
        assert_eq!(view.status, "processed");
        assert_eq!(view.received_at, "2023-11-14T22:13:20Z");
        assert_eq!(view.payload, Some(serde_json::json!({"id": "evt_1"})));
        assert_eq!(EventView::of(record(), false).payload, None);
    }

    #[test]
    fn a_listing_reads_from_the_index_entry_what_it_reads_from_the_item() {
        // Every optional attribute set, so a field the projection missed would show.
        let full = StripeEventRecord {
            api_version: Some("2024-06-20".into()),
            customer_id: Some("cus_1".into()),
            tenant_id: Some("tnt_1".into()),
            error: Some("boom".into()),
            note: Some("n".into()),
            livemode: true,
            notifications: vec!["msg_1".into()],
            status: EventStatus::Failed,
            attempts: 3,
            ..record()
        }
        .to_item();
        let entry: Item = full
            .iter()
            .filter(|(k, _)| {
                INDEX_KEY.contains(&k.as_str()) || INDEX_ATTRIBUTES.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(!entry.contains_key(attr::PAYLOAD));
        assert_eq!(
            EventView::from_item(&entry, false),
            EventView::from_item(&full, false)
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = Item::from([
            (table::PK.to_owned(), s("STRIPE#evt_1")),
            (table::SK.to_owned(), s(EVENT_SK)),
            (table::GSI2PK.to_owned(), s(GSI2_STRIPE_EVENTS)),
            (table::GSI2SK.to_owned(), s("0000000000001#evt_1")),
        ]);
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode(r#"{"pk":"TENANT#x"}"#)).is_err());
    }
}

#[cfg(test)]
mod status_tests {
    use super::EventStatus;

    #[test]
    fn statuses_round_trip_and_only_processed_or_ignored_are_final() {
        for st in EventStatus::ALL {
            assert_eq!(EventStatus::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert_eq!(EventStatus::parse("done"), None);
        let finals: Vec<_> = EventStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(finals, [EventStatus::Processed, EventStatus::Ignored]);
    }
}
