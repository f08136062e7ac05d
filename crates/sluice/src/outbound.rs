//! The outbound event entity and its deliveries: keys, attribute names, typed ids, item shapes
//! and the attempt log.
//!
//! Items (see the table in [`crate::table`]): the event `TENANT#{tnt}` / `EVENT#{msg}` and one
//! delivery per endpoint it goes to, `TENANT#{tnt}` / `DELIVERY#{msg}#{ep}`. Writers: the fan-out
//! ([`crate::fanout`]: events, new deliveries, replays) and the egress function (claims, attempts,
//! statuses). Readers: the fan-out, the egress function and `GET /v1/events/{id}`.
//!
//! Invariants: both items expire (`ttl`) [`RETENTION_DAYS`] after the event's `created_at`, and a
//! reader treats an expired item as absent; `endpoint_ids` is absent on an event until it is fanned
//! out; a delivery's `generation` only grows (each replay bumps it) and `lease_id`/`lease_until`
//! are present only while the egress sender holds it; `attempts` is oldest first, at most
//! `MAX_LOGGED_ATTEMPTS` (egress) long. Pure code: no AWS request is made here.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::{
    clock, ids,
    table::{self, Item, ItemExt, n, s},
    tenants::TenantId,
};

/// Outbound events and delivery logs are kept this long (SPEC §6: attempts kept 30 days).
pub const RETENTION_DAYS: u32 = 30;

/// Attribute names of the event and delivery items.
pub mod attr {
    /// Event: its id.
    pub const ID: &str = "id";
    /// Event: its type.
    pub const TYPE: &str = "type";
    /// Event: its `data`, as JSON text.
    pub const DATA: &str = "data";
    /// Event: the endpoints it was fanned out to (L of S; absent until expanded).
    pub const ENDPOINT_IDS: &str = "endpoint_ids";
    /// Both: epoch seconds (a delivery carries its event's).
    pub const CREATED_AT: &str = "created_at";
    pub const EVENT_ID: &str = "event_id";
    pub const ENDPOINT_ID: &str = "endpoint_id";
    /// A [`super::DeliveryStatus`].
    pub const STATUS: &str = "status";
    /// Bumped by every replay; a `Deliver` message names the generation it was sent for.
    pub const GENERATION: &str = "generation";
    pub const SUCCEEDED_GENERATION: &str = "succeeded_generation";
    pub const ATTEMPT_COUNT: &str = "attempt_count";
    /// L of M, one [`super::Attempt`] each, oldest first.
    pub const ATTEMPTS: &str = "attempts";
    pub const UPDATED_AT: &str = "updated_at";
    /// Epoch seconds of the next retry, while one is scheduled.
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    pub const LAST_ATTEMPT_AT: &str = "last_attempt_at";
    /// The egress sender's claim: held while a request is in flight.
    pub const LEASE_ID: &str = "lease_id";
    /// Epoch seconds.
    pub const LEASE_UNTIL: &str = "lease_until";
}

/// Prefix of every event's sort key.
pub const EVENT_SK_PREFIX: &str = "EVENT#";

/// The key map of an event item.
pub fn event_key(tenant_id: &str, event_id: &str) -> Item {
    table::key(table::tenant_pk(tenant_id), table::event_sk(event_id))
}

/// The key map of a delivery item.
pub fn delivery_key(tenant_id: &str, event_id: &str, endpoint_id: &str) -> Item {
    table::key(
        table::tenant_pk(tenant_id),
        table::delivery_sk(event_id, endpoint_id),
    )
}

/// An outbound event id, `msg_…`, checked once where it enters (a path, an item).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

crate::prefixed_id!(EventId, "msg");

impl EventId {
    /// The id of the event derived from `parts` (see [`ids::derived_id`]): every arrival of the
    /// same cause names the same event.
    pub fn derived(parts: &[&str]) -> Self {
        Self(ids::derived_id(Self::PREFIX, parts))
    }
}

/// A delivery is named by its event and its endpoint (one delivery per pair).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    pub event_id: EventId,
    /// `ep_…`
    pub endpoint_id: String,
}

impl DeliveryId {
    /// `DELIVERY#{msg}#{ep}` under the tenant.
    pub fn sk(&self) -> String {
        table::delivery_sk(&self.event_id, &self.endpoint_id)
    }
}

/// An event a tenant's endpoints receive (`{"type", "timestamp", "data"}` on the wire).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundEvent {
    /// `msg_…`.
    pub id: EventId,
    pub tenant_id: TenantId,
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
        Self::with_id(EventId::new(), tenant_id, event_type, data)
    }

    /// A new event with the given id, created now.
    pub fn with_id(
        id: EventId,
        tenant_id: &str,
        event_type: &str,
        data: serde_json::Value,
    ) -> Self {
        OutboundEvent {
            id,
            tenant_id: TenantId(tenant_id.to_owned()),
            event_type: event_type.to_owned(),
            data,
            created_at: clock::now_epoch(),
            endpoint_ids: None,
        }
    }

    /// The event's item (with `endpoint_ids` when known).
    pub fn to_item(&self) -> Item {
        let mut item = event_key(&self.tenant_id, &self.id);
        item.insert(attr::ID.into(), s(self.id.as_str()));
        item.insert(attr::TYPE.into(), s(&self.event_type));
        item.insert(attr::DATA.into(), s(self.data.to_string()));
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(table::TTL.into(), n(expires_at(self.created_at)));
        if let Some(ids) = &self.endpoint_ids {
            item.insert(attr::ENDPOINT_IDS.into(), table::string_list(ids));
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
            id: EventId::parse(item.get_s(attr::ID)?)?,
            tenant_id: TenantId(tenant_id),
            event_type: item.get_s(attr::TYPE)?.to_owned(),
            data: serde_json::from_str(item.get_s(attr::DATA)?).ok()?,
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

    /// The queue message that asks the egress function to deliver it to one endpoint.
    pub fn deliver_message(
        &self,
        endpoint_id: &str,
        generation: u32,
    ) -> crate::fanout::DeliveryMessage {
        crate::fanout::DeliveryMessage::Deliver {
            tenant_id: self.tenant_id.as_str().to_owned(),
            event_id: self.id.as_str().to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            generation,
        }
    }
}

/// When an item made at `created_at` expires (its `ttl`).
fn expires_at(created_at: i64) -> i64 {
    created_at + clock::days(RETENTION_DAYS)
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    Succeeded,
    /// Retries exhausted (a replay makes it pending again).
    Failed,
    /// Not sent: the endpoint is disabled (or gone).
    EndpointDisabled,
}

impl DeliveryStatus {
    /// The stored (and shown) value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::EndpointDisabled => "endpoint_disabled",
        }
    }

    /// The status a stored value names.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
            DeliveryStatus::EndpointDisabled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// The stored status values, for expressions and metric labels.
pub mod status {
    use super::DeliveryStatus;

    pub const PENDING: &str = DeliveryStatus::Pending.as_str();
    pub const SUCCEEDED: &str = DeliveryStatus::Succeeded.as_str();
    pub const FAILED: &str = DeliveryStatus::Failed.as_str();
    pub const ENDPOINT_DISABLED: &str = DeliveryStatus::EndpointDisabled.as_str();
}

/// One HTTP attempt of a delivery (time, status code or error class, duration, first 4 KiB of
/// the response).
// An entry of the delivery's `attempts` list (SPEC §6). `GET /v1/events/{id}` shows it as stored,
// so the fields are declared in alphabetical order (the order the stored map's JSON had before
// this type existed): keep it that way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct Attempt {
    /// When the request was sent (epoch seconds).
    pub at: i64,
    /// 1-based attempt number within its generation.
    pub attempt: u32,
    /// From sending to the end of the (excerpted) answer.
    pub duration_ms: u64,
    /// Why no answer arrived: `timeout`, `connect`, `dns`, `dns_blocked`, `address_blocked`,
    /// `url_rejected`, `request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delivery generation it belonged to (replays start a new one).
    pub generation: u32,
    /// The first 4 KiB of the response body.
    pub response: String,
    /// The HTTP status, when an answer arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

impl Attempt {
    /// The list entry (a map attribute).
    pub fn to_attribute(&self) -> AttributeValue {
        let mut m = Item::from([
            ("at".to_owned(), n(self.at)),
            ("generation".to_owned(), n(self.generation)),
            ("attempt".to_owned(), n(self.attempt)),
            ("duration_ms".to_owned(), n(self.duration_ms)),
            ("response".to_owned(), s(self.response.as_str())),
        ]);
        if let Some(code) = self.status_code {
            m.insert("status_code".to_owned(), n(code));
        }
        if let Some(error) = &self.error {
            m.insert("error".to_owned(), s(error.as_str()));
        }
        AttributeValue::M(m)
    }

    /// Reads a list entry; `None` if it is not an attempt map.
    pub fn from_attribute(value: &AttributeValue) -> Option<Self> {
        let m = value.as_m().ok()?;
        Some(Attempt {
            at: m.get_i64("at")?,
            generation: m.get_i64("generation").unwrap_or(1).try_into().ok()?,
            attempt: m.get_i64("attempt").unwrap_or(1).try_into().ok()?,
            status_code: m.get_i64("status_code").and_then(|c| c.try_into().ok()),
            error: m.get_s("error").map(str::to_owned),
            duration_ms: m
                .get_i64("duration_ms")
                .unwrap_or(0)
                .try_into()
                .unwrap_or(0),
            response: m.get_s("response").unwrap_or_default().to_owned(),
        })
    }
}

/// The attempts of a delivery item, oldest first.
pub fn attempts_of(delivery_item: &Item) -> Vec<Attempt> {
    match delivery_item.get(attr::ATTEMPTS) {
        Some(AttributeValue::L(list)) => list.iter().filter_map(Attempt::from_attribute).collect(),
        _ => Vec::new(),
    }
}

/// One endpoint's delivery of an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub tenant_id: TenantId,
    pub id: DeliveryId,
    pub status: DeliveryStatus,
    pub generation: u32,
    /// The generation that succeeded, once one did.
    pub succeeded_generation: Option<u32>,
    pub attempt_count: u32,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
    /// Epoch seconds (the event's).
    pub created_at: i64,
    /// Epoch seconds of the last status change; `None` until the first.
    pub updated_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
}

impl Delivery {
    /// A new delivery of `event` to an endpoint: `pending`, generation 1, no attempts yet.
    pub fn pending(event: &OutboundEvent, endpoint_id: &str) -> Self {
        Delivery {
            tenant_id: event.tenant_id.clone(),
            id: DeliveryId {
                event_id: event.id.clone(),
                endpoint_id: endpoint_id.to_owned(),
            },
            status: DeliveryStatus::Pending,
            generation: 1,
            succeeded_generation: None,
            attempt_count: 0,
            attempts: Vec::new(),
            created_at: event.created_at,
            updated_at: None,
            next_attempt_at: None,
            last_attempt_at: None,
        }
    }

    /// The item (key and `ttl` included). The egress sender's lease is not part of it.
    pub fn to_item(&self) -> Item {
        let mut item = table::key(table::tenant_pk(&self.tenant_id), self.id.sk());
        item.insert(attr::EVENT_ID.into(), s(self.id.event_id.as_str()));
        item.insert(attr::ENDPOINT_ID.into(), s(&self.id.endpoint_id));
        item.insert(attr::STATUS.into(), s(self.status.as_str()));
        item.insert(attr::GENERATION.into(), n(self.generation));
        item.insert(attr::ATTEMPT_COUNT.into(), n(self.attempt_count));
        item.insert(
            attr::ATTEMPTS.into(),
            AttributeValue::L(self.attempts.iter().map(Attempt::to_attribute).collect()),
        );
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(table::TTL.into(), n(expires_at(self.created_at)));
        for (name, value) in [
            (
                attr::SUCCEEDED_GENERATION,
                self.succeeded_generation.map(i64::from),
            ),
            (attr::UPDATED_AT, self.updated_at),
            (attr::NEXT_ATTEMPT_AT, self.next_attempt_at),
            (attr::LAST_ATTEMPT_AT, self.last_attempt_at),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), n(v));
            }
        }
        item
    }

    /// Reads a delivery item; `None` if it is not one (no key, ids, known status or generation).
    /// Expiry is not checked here: a delivery is read with its event, which is.
    pub fn from_item(item: &Item) -> Option<Self> {
        let tenant_id = item.get_s(table::PK)?.strip_prefix("TENANT#")?.to_owned();
        let u32_of = |name| item.get_i64(name).and_then(|v| u32::try_from(v).ok());
        Some(Delivery {
            tenant_id: TenantId(tenant_id),
            id: DeliveryId {
                event_id: EventId(item.get_s(attr::EVENT_ID)?.to_owned()),
                endpoint_id: item.get_s(attr::ENDPOINT_ID)?.to_owned(),
            },
            status: DeliveryStatus::parse(item.get_s(attr::STATUS)?)?,
            generation: u32_of(attr::GENERATION)?,
            succeeded_generation: u32_of(attr::SUCCEEDED_GENERATION),
            attempt_count: u32_of(attr::ATTEMPT_COUNT).unwrap_or(0),
            attempts: attempts_of(item),
            created_at: item.get_i64(attr::CREATED_AT)?,
            updated_at: item.get_i64(attr::UPDATED_AT),
            next_attempt_at: item.get_i64(attr::NEXT_ATTEMPT_AT),
            last_attempt_at: item.get_i64(attr::LAST_ATTEMPT_AT),
        })
    }
}

/// A new delivery item: `pending`, generation 1, no attempts yet.
pub fn delivery_item(event: &OutboundEvent, endpoint_id: &str) -> Item {
    Delivery::pending(event, endpoint_id).to_item()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            at: 0,
            generation: 2,
            attempt: 3,
            status_code: Some(500),
            error: None,
            duration_ms: 12,
            response: "oops".into(),
        }
    }

    #[test]
    fn event_items_round_trip_and_expire() {
        let mut e = OutboundEvent::new("tnt_a", "credits.added", serde_json::json!({"amount": 5}));
        assert!(EventId::parse(&e.id).is_some());
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

    #[test]
    fn event_ids_are_parsed_once_and_derived_stably() {
        assert!(EventId::parse("msg_abc").is_some());
        assert!(EventId::parse("ep_abc").is_none());
        assert_eq!(EventId::derived(&["a", "b"]), EventId::derived(&["a", "b"]));
        assert!(EventId::parse(EventId::derived(&["a"]).as_str()).is_some());
    }

    #[test]
    fn a_new_delivery_item_is_pending_generation_one_and_expires_with_its_event() {
        let e = OutboundEvent::new("tnt_a", "credits.added", serde_json::json!({}));
        let item = delivery_item(&e, "ep_1");
        assert_eq!(item.get_s(table::PK), Some("TENANT#tnt_a"));
        assert_eq!(
            item.get_s(table::SK).unwrap(),
            format!("DELIVERY#{}#ep_1", e.id)
        );
        assert_eq!(item.get_s(attr::STATUS), Some("pending"));
        assert_eq!(item.get_i64(attr::GENERATION), Some(1));
        assert_eq!(item.get_i64(table::TTL), Some(expires_at(e.created_at)));
        let mut names: Vec<_> = item.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "attempt_count",
                "attempts",
                "created_at",
                "endpoint_id",
                "event_id",
                "generation",
                "pk",
                "sk",
                "status",
                "ttl"
            ]
        );
    }

    #[test]
    fn a_delivery_round_trips_through_its_item() {
        let e = OutboundEvent::new("tnt_a", "credits.added", serde_json::json!({}));
        let mut d = Delivery::pending(&e, "ep_1");
        assert_eq!(Delivery::from_item(&d.to_item()), Some(d.clone()));
        d.status = DeliveryStatus::Succeeded;
        d.succeeded_generation = Some(1);
        d.attempt_count = 1;
        d.attempts = vec![attempt()];
        d.updated_at = Some(9);
        d.next_attempt_at = Some(10);
        d.last_attempt_at = Some(8);
        assert_eq!(Delivery::from_item(&d.to_item()), Some(d.clone()));
        let mut unknown = d.to_item();
        unknown.insert(attr::STATUS.into(), s("exploded"));
        assert_eq!(Delivery::from_item(&unknown), None);
    }

    #[test]
    fn statuses_read_back_what_they_store() {
        for st in [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
            DeliveryStatus::EndpointDisabled,
        ] {
            assert_eq!(DeliveryStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(status::ENDPOINT_DISABLED, "endpoint_disabled");
    }

    #[test]
    fn attempts_round_trip_through_the_item() {
        let a = attempt();
        let b = Attempt {
            status_code: None,
            error: Some("timeout".into()),
            response: String::new(),
            ..a.clone()
        };
        let item = Item::from([(
            attr::ATTEMPTS.to_owned(),
            AttributeValue::L(vec![a.to_attribute(), b.to_attribute()]),
        )]);
        assert_eq!(attempts_of(&item), vec![a, b]);
        assert!(attempts_of(&Item::new()).is_empty());
    }

    #[test]
    fn an_attempt_is_shown_as_its_stored_map_was() {
        // The API used to render the stored map as JSON (keys sorted); the typed view must not
        // change a byte of it.
        let b = Attempt {
            status_code: None,
            error: Some("timeout".into()),
            ..attempt()
        };
        assert_eq!(
            serde_json::to_string(&attempt()).unwrap(),
            r#"{"at":0,"attempt":3,"duration_ms":12,"generation":2,"response":"oops","status_code":500}"#
        );
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"at":0,"attempt":3,"duration_ms":12,"error":"timeout","generation":2,"response":"oops"}"#
        );
    }
}
