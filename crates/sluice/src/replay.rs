//! Replays through the transactional outbox: `POST /v1/events/{id}/replay` and
//! `POST /v1/endpoints/{id}/recover` make deliveries pending again under a new generation and
//! announce them with an outbox item ([`Redelivery`], `OUTBOX#rdl_…`) written in the *same*
//! transaction; the egress function, reading the table's stream, sends the `Deliver` messages
//! ([`relay`]). No request path calls SQS, and a replay exists exactly when its write committed.
//!
//! Invariants:
//! - A bump is conditioned on the generation read (`generation = :read`), so two concurrent
//!   replays never hand out the same generation twice; the loser re-reads and tries again
//!   (at most [`ATTEMPTS`] times, then `409` with `Retry-After`).
//! - The outbox item names each delivery *with its new generation*: the relay reads nothing, and
//!   a `Deliver` of a superseded generation is declined by the egress claim.
//! - An endpoint of the tenant the event never went to gets a delivery (generation 1) in the
//!   same transaction, with a `ConditionCheck` that the endpoint exists (`404` otherwise).
//!
//! AWS requests of [`replay`]: one round trip of two reads (the event `GetItem` and the `Query`
//! of its deliveries, concurrently), then one transaction per 99 deliveries (their updates and
//! one outbox item). The relay of a [`Redelivery`]: one `SendMessageBatch` per 10 deliveries.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};

use crate::{
    ApiError, clock,
    fanout::{self, DeliveryMessage, FanoutError, OutboundEvent, attr, status},
    ids,
    table::{self, Item, ItemExt, n, s},
};

/// How many times a replay re-reads after a concurrent replay changed a generation.
pub const ATTEMPTS: usize = 3;
/// Deliveries per transaction: `TransactWriteItems` takes 100 items, one is the outbox item.
pub const MAX_DELIVERIES_PER_TRANSACTION: usize = 99;
/// Outbox items outlive the stream's 24 h retention, then expire.
const OUTBOX_TTL_DAYS: u32 = 2;
/// `kind` of a replay's outbox item.
pub const KIND: &str = "redeliver";

/// One delivery to send again, under the generation its replay gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub event_id: String,
    pub endpoint_id: String,
    pub generation: u32,
}

/// The outbox item of a replay: the deliveries it made pending again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redelivery {
    /// `rdl_…`
    pub id: String,
    pub tenant_id: String,
    pub targets: Vec<Target>,
    /// Epoch seconds.
    pub created_at: i64,
}

impl Redelivery {
    /// A new outbox entry for these targets.
    pub fn new(tenant_id: &str, targets: Vec<Target>) -> Self {
        Redelivery {
            id: ids::new_id("rdl"),
            tenant_id: tenant_id.to_owned(),
            targets,
            created_at: clock::now_epoch(),
        }
    }

    /// The item (`TENANT#{tnt}` / `OUTBOX#{rdl}`).
    pub fn to_item(&self) -> Item {
        let mut item = table::key(
            table::tenant_pk(&self.tenant_id),
            table::outbox_sk(&self.id),
        );
        item.insert("kind".into(), s(KIND));
        item.insert("id".into(), s(&self.id));
        item.insert(
            "targets".into(),
            AttributeValue::L(
                self.targets
                    .iter()
                    .map(|t| {
                        AttributeValue::M(Item::from([
                            (attr::EVENT_ID.to_owned(), s(&t.event_id)),
                            (attr::ENDPOINT_ID.to_owned(), s(&t.endpoint_id)),
                            (attr::GENERATION.to_owned(), n(t.generation)),
                        ]))
                    })
                    .collect(),
            ),
        );
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(
            table::TTL.into(),
            n(self.created_at + clock::days(OUTBOX_TTL_DAYS)),
        );
        item
    }

    /// Reads the item; `None` if it is not a replay's outbox item.
    pub fn from_item(item: &Item) -> Option<Self> {
        if item.get_s("kind") != Some(KIND) {
            return None;
        }
        let tenant_id = item.get_s(table::PK)?.strip_prefix("TENANT#")?.to_owned();
        let Some(AttributeValue::L(list)) = item.get("targets") else {
            return None;
        };
        let targets = list
            .iter()
            .map(|v| {
                let m = v.as_m().ok()?;
                Some(Target {
                    event_id: m.get_s(attr::EVENT_ID)?.to_owned(),
                    endpoint_id: m.get_s(attr::ENDPOINT_ID)?.to_owned(),
                    generation: m.get_i64(attr::GENERATION)?.try_into().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Redelivery {
            id: item.get_s("id")?.to_owned(),
            tenant_id,
            targets,
            created_at: item.get_i64(attr::CREATED_AT)?,
        })
    }

    /// The `Deliver` messages the relay sends.
    pub fn messages(&self) -> Vec<DeliveryMessage> {
        self.targets
            .iter()
            .map(|t| DeliveryMessage::Deliver {
                tenant_id: self.tenant_id.clone(),
                event_id: t.event_id.clone(),
                endpoint_id: t.endpoint_id.clone(),
                generation: t.generation,
            })
            .collect()
    }

    fn transact_item(&self, table_name: &str) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(table_name)
            .set_item(Some(self.to_item()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }
}

/// Sends a committed replay's messages (the stream consumer's work for one `OUTBOX#` insert).
/// Sending twice is harmless: the egress claim lets one generation succeed once.
pub async fn relay(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    redelivery: &Redelivery,
) -> Result<(), ApiError> {
    fanout::send_messages(sqs, queue_url, &redelivery.messages()).await
}

/// What a replay does to one endpoint's delivery of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The delivery exists with generation `from`: make it pending as `from + 1`.
    Bump {
        event_id: String,
        endpoint_id: String,
        from: u32,
    },
    /// The event never went to this endpoint: create its delivery (generation 1) if the endpoint
    /// exists, and add it to the event's `endpoint_ids`.
    Add { endpoint_id: String },
}

impl Step {
    /// The target the outbox item names after this step.
    pub fn target(&self, event_id: &str) -> Target {
        match self {
            Step::Bump {
                event_id,
                endpoint_id,
                from,
            } => Target {
                event_id: event_id.clone(),
                endpoint_id: endpoint_id.clone(),
                generation: from + 1,
            },
            Step::Add { endpoint_id } => Target {
                event_id: event_id.to_owned(),
                endpoint_id: endpoint_id.clone(),
                generation: 1,
            },
        }
    }
}

/// Decides a replay of `event`: one endpoint, or every endpoint it was fanned out to.
/// `generations` maps the endpoints of its existing deliveries to their generation.
pub fn plan_replay(
    event: &OutboundEvent,
    generations: &HashMap<String, u32>,
    endpoint_id: Option<&str>,
) -> Vec<Step> {
    let bump = |ep: &str, from: u32| Step::Bump {
        event_id: event.id.to_string(),
        endpoint_id: ep.to_owned(),
        from,
    };
    match endpoint_id {
        Some(ep) => match generations.get(ep) {
            Some(&from) => vec![bump(ep, from)],
            None => vec![Step::Add {
                endpoint_id: ep.to_owned(),
            }],
        },
        None => {
            let mut eps: Vec<&String> = event.endpoint_ids.iter().flatten().collect();
            // A delivery added by an earlier single-endpoint replay is in `endpoint_ids` too;
            // a delivery without an entry there (never written so) is replayed all the same.
            for ep in generations.keys() {
                if !eps.contains(&ep) {
                    eps.push(ep);
                }
            }
            eps.into_iter()
                .filter_map(|ep| generations.get(ep).map(|&from| bump(ep, from)))
                .collect()
        }
    }
}

/// The generation of each delivery item, by endpoint.
pub fn generations(deliveries: &HashMap<String, Item>) -> HashMap<String, u32> {
    deliveries
        .iter()
        .map(|(ep, item)| {
            let generation = item
                .get_i64(attr::GENERATION)
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(0);
            (ep.clone(), generation)
        })
        .collect()
}

/// The transaction items of `steps` (all of one tenant) and their outbox item, last.
fn transaction_items(
    table_name: &str,
    tenant_id: &str,
    event: Option<&OutboundEvent>,
    steps: &[Step],
) -> Vec<TransactWriteItem> {
    let now = clock::now_epoch();
    let mut items = Vec::with_capacity(steps.len() + 3);
    let mut targets = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::Bump {
                event_id,
                endpoint_id,
                from,
            } => {
                let update = Update::builder()
                    .table_name(table_name)
                    .set_key(Some(table::key(
                        table::tenant_pk(tenant_id),
                        table::delivery_sk(event_id, endpoint_id),
                    )))
                    .update_expression(
                        "SET #gen = :next, #status = :pending, #updated = :now \
                         REMOVE next_attempt_at",
                    )
                    .condition_expression("#gen = :from")
                    .expression_attribute_names("#gen", attr::GENERATION)
                    .expression_attribute_names("#status", attr::STATUS)
                    .expression_attribute_names("#updated", attr::UPDATED_AT)
                    .expression_attribute_values(":from", n(*from))
                    .expression_attribute_values(":next", n(from + 1))
                    .expression_attribute_values(":pending", s(status::PENDING))
                    .expression_attribute_values(":now", n(now))
                    .build()
                    .expect("table, key and expression are set");
                items.push(TransactWriteItem::builder().update(update).build());
                targets.push(step.target(event_id));
            }
            Step::Add { endpoint_id } => {
                let event = event.expect("an Add step comes with its event");
                let check = ConditionCheck::builder()
                    .table_name(table_name)
                    .set_key(Some(table::key(
                        table::tenant_pk(tenant_id),
                        table::endpoint_sk(endpoint_id),
                    )))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .expect("table, key and condition are set");
                let put = Put::builder()
                    .table_name(table_name)
                    .set_item(Some(fanout::delivery_item(event, endpoint_id)))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("table and item are set");
                let listed = Update::builder()
                    .table_name(table_name)
                    .set_key(Some(table::key(
                        table::tenant_pk(tenant_id),
                        table::event_sk(&event.id),
                    )))
                    .update_expression("SET #ids = list_append(if_not_exists(#ids, :empty), :ep)")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_names("#ids", attr::ENDPOINT_IDS)
                    .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                    .expression_attribute_values(
                        ":ep",
                        AttributeValue::L(vec![s(endpoint_id.as_str())]),
                    )
                    .build()
                    .expect("table, key and expression are set");
                items.push(TransactWriteItem::builder().condition_check(check).build());
                items.push(TransactWriteItem::builder().put(put).build());
                items.push(TransactWriteItem::builder().update(listed).build());
                targets.push(step.target(&event.id));
            }
        }
    }
    items.push(Redelivery::new(tenant_id, targets).transact_item(table_name));
    items
}

/// Why a replay's transaction did not commit.
enum Cancelled {
    /// The `ConditionCheck` of an added endpoint failed: it is not the tenant's.
    EndpointMissing,
    /// A generation or delivery changed since it was read: read again.
    Raced,
}

/// Commits `steps` in transactions of at most [`MAX_DELIVERIES_PER_TRANSACTION`] deliveries,
/// each with its outbox item.
async fn commit(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    event: Option<&OutboundEvent>,
    steps: &[Step],
) -> Result<Result<(), Cancelled>, ApiError> {
    for chunk in steps.chunks(MAX_DELIVERIES_PER_TRANSACTION) {
        let items = transaction_items(table_name, tenant_id, event, chunk);
        let result = db
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(err) = result else { continue };
        let Some(reasons) = table::cancellation_reasons(&err).filter(|r| !r.is_empty()) else {
            return Err(err.into());
        };
        // An Add is the only step in its transaction (a single-endpoint replay): its check is
        // item 0.
        let add = matches!(chunk.first(), Some(Step::Add { .. }));
        let failed_at_0 = matches!(
            table::item_outcome(reasons, 0),
            table::ItemOutcome::ConditionFailed(_)
        );
        return Ok(Err(if add && failed_at_0 {
            Cancelled::EndpointMissing
        } else {
            Cancelled::Raced
        }));
    }
    Ok(Ok(()))
}

/// Replays an event to one endpoint or to every endpoint it was fanned out to — also after the
/// retries were exhausted or the endpoint was re-enabled. An endpoint of the tenant that the
/// event never went to gets a new delivery. Returns the endpoints queued again.
pub async fn replay(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    event_id: &str,
    endpoint_id: Option<&str>,
) -> Result<Vec<String>, FanoutError> {
    for _ in 0..ATTEMPTS {
        let (event, deliveries) = tokio::join!(
            fanout::get_event(db, table_name, tenant_id, event_id),
            fanout::deliveries_of(db, table_name, tenant_id, event_id),
        );
        let event = event?.ok_or(FanoutError::EventNotFound)?;
        let steps = plan_replay(&event, &generations(&deliveries?), endpoint_id);
        let endpoints = steps
            .iter()
            .map(|step| step.target(&event.id).endpoint_id)
            .collect();
        if steps.is_empty() {
            return Ok(endpoints);
        }
        match commit(db, table_name, tenant_id, Some(&event), &steps).await? {
            Ok(()) => return Ok(endpoints),
            Err(Cancelled::EndpointMissing) => return Err(FanoutError::EndpointNotFound),
            Err(Cancelled::Raced) => continue,
        }
    }
    Err(FanoutError::Aws(raced()))
}

fn raced() -> ApiError {
    ApiError::conflict("the deliveries changed concurrently (another replay); retry")
        .with_retry_after(1)
}

/// Replays deliveries already read (their generation as read), e.g. those a recover found:
/// one transaction per [`MAX_DELIVERIES_PER_TRANSACTION`]. A delivery changed since it was
/// read fails its transaction: `409` with `Retry-After`, nothing of that chunk applied.
pub async fn replay_deliveries(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    tenant_id: &str,
    steps: &[Step],
) -> Result<(), ApiError> {
    debug_assert!(steps.iter().all(|s| matches!(s, Step::Bump { .. })));
    match commit(db, table_name, tenant_id, None, steps).await? {
        Ok(()) => Ok(()),
        Err(_) => Err(raced()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(endpoints: Option<&[&str]>) -> OutboundEvent {
        let mut e = OutboundEvent::new("tnt_a", "x.y", json!({}));
        e.endpoint_ids = endpoints.map(|eps| eps.iter().map(|s| s.to_string()).collect());
        e
    }

    #[test]
    fn a_replay_bumps_each_known_delivery_once() {
        let e = event(Some(&["ep_1", "ep_2"]));
        let gens = HashMap::from([("ep_1".to_owned(), 1), ("ep_2".to_owned(), 3)]);
        let mut targets: Vec<Target> = plan_replay(&e, &gens, None)
            .iter()
            .map(|s| s.target(&e.id))
            .collect();
        targets.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        assert_eq!(
            targets
                .iter()
                .map(|t| (t.endpoint_id.as_str(), t.generation))
                .collect::<Vec<_>>(),
            [("ep_1", 2), ("ep_2", 4)]
        );
        assert_eq!(plan_replay(&e, &gens, Some("ep_2")).len(), 1);
    }

    #[test]
    fn a_replay_to_a_new_endpoint_adds_it_and_an_unexpanded_event_has_nothing_to_replay() {
        let e = event(Some(&["ep_1"]));
        let gens = HashMap::from([("ep_1".to_owned(), 1)]);
        assert_eq!(
            plan_replay(&e, &gens, Some("ep_9")),
            [Step::Add {
                endpoint_id: "ep_9".into()
            }]
        );
        assert_eq!(
            Step::Add {
                endpoint_id: "ep_9".into()
            }
            .target(&e.id)
            .generation,
            1
        );
        assert!(plan_replay(&event(None), &HashMap::new(), None).is_empty());
    }

    #[test]
    fn the_outbox_item_round_trips_and_names_each_generation() {
        let r = Redelivery::new(
            "tnt_a",
            vec![Target {
                event_id: "msg_1".into(),
                endpoint_id: "ep_1".into(),
                generation: 3,
            }],
        );
        assert!(r.id.starts_with("rdl_"));
        let item = r.to_item();
        assert!(item.get_s(table::SK).unwrap().starts_with("OUTBOX#"));
        assert_eq!(Redelivery::from_item(&item), Some(r.clone()));
        assert_eq!(
            r.messages(),
            [DeliveryMessage::Deliver {
                tenant_id: "tnt_a".into(),
                event_id: "msg_1".into(),
                endpoint_id: "ep_1".into(),
                generation: 3
            }]
        );
        assert_eq!(Redelivery::from_item(&Item::new()), None);
    }
}
