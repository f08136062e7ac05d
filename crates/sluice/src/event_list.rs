//! The tenant's outbound events, newest first (`GET /v1/events`, the portal's Events page and
//! `POST /v1/endpoints/{id}/recover`, which replays [`recover_steps`] of a page).
//!
//! Every event item carries index keys ([`index_attributes`]): `gsi1pk` = `EVENTS#{tnt}`,
//! `gsi1sk` = `{created_at:010}#{msg}`. So a page is one `Query` of `gsi1` (newest first), and
//! the filters are served as follows:
//! - `since`/`until` (epoch seconds): the **key condition** (`gsi1sk BETWEEN`), so only events
//!   in the window are read;
//! - `type` and `endpoint_id`: a **filter expression** on the page read (`type = :t`,
//!   `contains(endpoint_ids, :ep)`): DynamoDB reads `limit` events (the read units of all of
//!   them) and returns those that match, so a page can hold fewer than `limit` (even none) and
//!   still have a `next_cursor`;
//! - `status`: computed from the events' deliveries ([`event_status`]), read with one
//!   `BatchGetItem` per 100 deliveries of the page (projected to endpoint and status), then
//!   filtered in memory — the same short-page rule.
//!
//! AWS requests per page: one `Query` of `gsi1` (eventually consistent: an event committed a
//! moment ago may be missing from the list, never from `GET /v1/events/{id}`) plus
//! `ceil(deliveries on the page / 100)` `BatchGetItem`s. No Scan. The index costs one index
//! write per event item write (its put, and the update that records its endpoints).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Serialize;

use crate::{
    ApiError,
    fanout::{OutboundEvent, attr, status},
    table::{self, Item, ItemExt, s},
};

/// Default and largest page size.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// `BatchGetItem` takes at most 100 keys.
const MAX_BATCH_GET: usize = 100;
/// Attempts at the keys a `BatchGetItem` left unprocessed (throttling) before answering 503.
const BATCH_GET_ROUNDS: usize = 4;

/// `gsi1pk` of the tenant's events.
pub fn index_pk(tenant_id: &str) -> String {
    format!("EVENTS#{tenant_id}")
}

/// `gsi1sk` of an event: sorts by creation time, then id.
pub fn index_sk(created_at: i64, event_id: &str) -> String {
    format!("{:010}#{event_id}", created_at.max(0))
}

/// The index attributes an event item carries, so that it is listed.
pub fn index_attributes(
    tenant_id: &str,
    created_at: i64,
    event_id: &str,
) -> [(String, AttributeValue); 2] {
    [
        (table::GSI1PK.to_owned(), s(index_pk(tenant_id))),
        (table::GSI1SK.to_owned(), s(index_sk(created_at, event_id))),
    ]
}

/// An event's state across its deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Not fanned out yet, or a delivery is still pending (first try or retrying).
    Pending,
    /// Nothing pending and at least one delivery failed for good (retries exhausted, or its
    /// endpoint disabled): a replay or recover sends it again.
    Failed,
    /// Every delivery succeeded.
    Delivered,
    /// Fanned out to no endpoint (none was enabled and subscribed).
    NoEndpoints,
}

impl EventStatus {
    /// Parses the `status` filter.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EventStatus::Pending,
            "failed" => EventStatus::Failed,
            "delivered" => EventStatus::Delivered,
            "no_endpoints" => EventStatus::NoEndpoints,
            _ => return None,
        })
    }
}

/// The event's status from its deliveries' statuses (`None` when not fanned out yet).
pub fn event_status<'a>(
    expanded: bool,
    deliveries: impl IntoIterator<Item = &'a str>,
) -> EventStatus {
    if !expanded {
        return EventStatus::Pending;
    }
    let (mut any, mut failed) = (false, false);
    for st in deliveries {
        any = true;
        match st {
            status::SUCCEEDED => {}
            status::FAILED | status::ENDPOINT_DISABLED => failed = true,
            // Pending, or a state this version does not know: not final.
            _ => return EventStatus::Pending,
        }
    }
    match (any, failed) {
        (false, _) => EventStatus::NoEndpoints,
        (true, true) => EventStatus::Failed,
        (true, false) => EventStatus::Delivered,
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Epoch seconds, inclusive.
    pub since: Option<i64>,
    /// Epoch seconds, inclusive.
    pub until: Option<i64>,
    pub event_type: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<EventStatus>,
}

/// One event of a page, with its deliveries' states.
#[derive(Clone, Debug)]
pub struct ListedEvent {
    pub event: OutboundEvent,
    pub status: EventStatus,
    /// In the order of the event's `endpoint_ids`.
    pub deliveries: Vec<DeliveryState>,
}

/// A delivery's state as a list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub endpoint_id: String,
    /// `pending`, `succeeded`, `failed` or `endpoint_disabled`.
    pub status: String,
    /// Bumped by every replay.
    pub generation: u32,
}

/// A page of events.
#[derive(Clone, Debug)]
pub struct EventPage {
    pub events: Vec<ListedEvent>,
    pub next_cursor: Option<String>,
}

/// A `cursor` that is not one this listing handed out (for this tenant).
#[derive(Debug)]
pub struct BadCursor;

const CURSOR_KEYS: [&str; 4] = [table::PK, table::SK, table::GSI1PK, table::GSI1SK];

/// One page of the tenant's events, newest first (see the module docs for what it reads).
pub async fn list(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    filter: &EventFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Result<EventPage, BadCursor>, ApiError> {
    let start = match cursor {
        None => None,
        Some(c) => match table::decode_key_cursor(c, &CURSOR_KEYS) {
            // Only a position in this tenant's own listing.
            Some(key) if key.get_s(table::GSI1PK) == Some(index_pk(tenant_id).as_str()) => {
                Some(key)
            }
            _ => return Ok(Err(BadCursor)),
        },
    };
    let lo = format!("{:010}#", filter.since.unwrap_or(0).max(0));
    // `~` sorts after every id character.
    let hi = format!(
        "{:010}#~",
        filter
            .until
            .unwrap_or(9_999_999_999)
            .clamp(0, 9_999_999_999)
    );
    let mut query = db
        .query()
        .table_name(table_name)
        .index_name(table::GSI1)
        .key_condition_expression("gsi1pk = :pk AND gsi1sk BETWEEN :lo AND :hi")
        .expression_attribute_values(":pk", s(index_pk(tenant_id)))
        .expression_attribute_values(":lo", s(lo))
        .expression_attribute_values(":hi", s(hi))
        .scan_index_forward(false)
        .limit(limit.clamp(1, MAX_PAGE_SIZE) as i32)
        .set_exclusive_start_key(start);
    let mut conditions = Vec::new();
    if let Some(t) = &filter.event_type {
        conditions.push("#type = :type");
        query = query
            .expression_attribute_names("#type", "type")
            .expression_attribute_values(":type", s(t.as_str()));
    }
    if let Some(ep) = &filter.endpoint_id {
        conditions.push("contains(#eps, :ep)");
        query = query
            .expression_attribute_names("#eps", attr::ENDPOINT_IDS)
            .expression_attribute_values(":ep", s(ep.as_str()));
    }
    if !conditions.is_empty() {
        query = query.filter_expression(conditions.join(" AND "));
    }
    let out = query.send().await?;
    let next_cursor = out
        .last_evaluated_key()
        .filter(|k| !k.is_empty())
        .map(table::encode_key_cursor);
    let events: Vec<OutboundEvent> = out
        .items()
        .iter()
        .filter_map(OutboundEvent::from_item)
        .collect();
    let statuses = delivery_statuses(db, table_name, tenant_id, &events).await?;
    let events = events
        .into_iter()
        .map(|event| {
            let deliveries: Vec<DeliveryState> = event
                .endpoint_ids
                .iter()
                .flatten()
                .filter_map(|ep| statuses.get(&(event.id.to_string(), ep.clone())).cloned())
                .collect();
            let status = event_status(
                event.endpoint_ids.is_some(),
                deliveries.iter().map(|d| d.status.as_str()),
            );
            ListedEvent {
                event,
                status,
                deliveries,
            }
        })
        .filter(|listed| filter.status.is_none_or(|want| listed.status == want))
        .collect();
    Ok(Ok(EventPage {
        events,
        next_cursor,
    }))
}

/// The state of every delivery of these events, by (event, endpoint): `BatchGetItem`s of 100.
async fn delivery_statuses(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    events: &[OutboundEvent],
) -> Result<HashMap<(String, String), DeliveryState>, ApiError> {
    let keys: Vec<Item> = events
        .iter()
        .flat_map(|e| {
            e.endpoint_ids
                .iter()
                .flatten()
                .map(|ep| table::key(table::tenant_pk(tenant_id), table::delivery_sk(&e.id, ep)))
        })
        .collect();
    let mut found = HashMap::new();
    for chunk in keys.chunks(MAX_BATCH_GET) {
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .projection_expression("#ev, #ep, #st, #gen")
                .expression_attribute_names("#gen", attr::GENERATION)
                .expression_attribute_names("#ev", attr::EVENT_ID)
                .expression_attribute_names("#ep", attr::ENDPOINT_ID)
                .expression_attribute_names("#st", attr::STATUS)
                .build()
                .expect("keys are set"),
        );
        for _ in 0..BATCH_GET_ROUNDS {
            let Some(request) = pending.take() else { break };
            let out = db
                .batch_get_item()
                .request_items(table_name, request)
                .send()
                .await?;
            for item in out
                .responses()
                .and_then(|r| r.get(table_name))
                .into_iter()
                .flatten()
            {
                if let (Some(ev), Some(ep), Some(st)) = (
                    item.get_s(attr::EVENT_ID),
                    item.get_s(attr::ENDPOINT_ID),
                    item.get_s(attr::STATUS),
                ) {
                    let generation = item
                        .get_i64(attr::GENERATION)
                        .and_then(|g| u32::try_from(g).ok())
                        .unwrap_or(0);
                    found.insert(
                        (ev.to_owned(), ep.to_owned()),
                        DeliveryState {
                            endpoint_id: ep.to_owned(),
                            status: st.to_owned(),
                            generation,
                        },
                    );
                }
            }
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(table_name))
                .filter(|k| !k.keys().is_empty())
                .cloned();
        }
        if pending.is_some() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "BatchGetItem left deliveries unprocessed after {BATCH_GET_ROUNDS} rounds"
            )));
        }
    }
    Ok(found)
}

/// Events a recover reads per call: their replays fit one transaction with the outbox item.
pub const RECOVER_PAGE: usize = crate::replay::MAX_DELIVERIES_PER_TRANSACTION;

/// The replays a recover makes on a page: every delivery to `endpoint_id` that failed for good
/// (`failed`: retries exhausted; `endpoint_disabled`: not sent while the endpoint was disabled).
pub fn recover_steps(endpoint_id: &str, page: &[ListedEvent]) -> Vec<crate::replay::Step> {
    page.iter()
        .flat_map(|listed| {
            listed
                .deliveries
                .iter()
                .filter(|d| {
                    d.endpoint_id == endpoint_id
                        && matches!(
                            d.status.as_str(),
                            status::FAILED | status::ENDPOINT_DISABLED
                        )
                })
                .map(|d| crate::replay::Step::Bump {
                    event_id: listed.event.id.to_string(),
                    endpoint_id: d.endpoint_id.clone(),
                    from: d.generation,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_status_follows_its_deliveries() {
        use EventStatus::*;
        assert_eq!(event_status(false, []), Pending);
        assert_eq!(event_status(true, []), NoEndpoints);
        assert_eq!(event_status(true, ["succeeded", "succeeded"]), Delivered);
        assert_eq!(event_status(true, ["succeeded", "failed"]), Failed);
        assert_eq!(event_status(true, ["endpoint_disabled"]), Failed);
        assert_eq!(event_status(true, ["failed", "pending"]), Pending);
        assert_eq!(EventStatus::parse("delivered"), Some(Delivered));
        assert_eq!(EventStatus::parse("succeeded"), None);
    }

    #[test]
    fn a_recover_replays_the_endpoints_failed_and_disabled_deliveries_only() {
        let listed = |id: &str, deliveries: &[(&str, &str, u32)]| ListedEvent {
            event: OutboundEvent {
                id: crate::outbound::EventId::parse(id).unwrap(),
                tenant_id: crate::tenants::TenantId::parse("tnt_a").unwrap(),
                event_type: "x".into(),
                data: serde_json::Value::Null,
                created_at: 0,
                endpoint_ids: Some(deliveries.iter().map(|d| d.0.to_owned()).collect()),
            },
            status: EventStatus::Failed,
            deliveries: deliveries
                .iter()
                .map(|(ep, st, g)| DeliveryState {
                    endpoint_id: (*ep).into(),
                    status: (*st).into(),
                    generation: *g,
                })
                .collect(),
        };
        let page = [
            listed("msg_1", &[("ep_a", "failed", 1), ("ep_b", "failed", 1)]),
            listed("msg_2", &[("ep_a", "succeeded", 1)]),
            listed("msg_3", &[("ep_a", "endpoint_disabled", 4)]),
            listed("msg_4", &[("ep_a", "pending", 1)]),
        ];
        assert_eq!(
            recover_steps("ep_a", &page),
            [
                crate::replay::Step::Bump {
                    event_id: "msg_1".into(),
                    endpoint_id: "ep_a".into(),
                    from: 1
                },
                crate::replay::Step::Bump {
                    event_id: "msg_3".into(),
                    endpoint_id: "ep_a".into(),
                    from: 4
                },
            ]
        );
    }

    #[test]
    fn index_keys_sort_by_time_then_id() {
        assert!(index_sk(99, "msg_z") < index_sk(100, "msg_a"));
        assert!(index_sk(100, "msg_a") < index_sk(100, "msg_b"));
        assert!(index_sk(100, "msg_b") < format!("{:010}#~", 100));
        assert_eq!(index_pk("tnt_a"), "EVENTS#tnt_a");
    }
}
