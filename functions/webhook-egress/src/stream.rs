//! The outbox relay: a batch of the table's DynamoDB Stream records in (only `INSERT`s of outbound
//! event items and of replays' `OUTBOX#` items reach it: the event source mapping's
//! `FilterCriteria` in `template.yaml`), each event published ([`sluice::fanout::relay`]) and
//! each replay sent ([`sluice::replay::relay`]), failures reported per record.
//!
//! Lambda's stream semantics: records of a shard arrive in order, and a reported failure makes
//! the mapping retry the batch *from that record* (everything before it counts as done). So the
//! records are relayed concurrently (they are independent events), and only the first failed
//! one, in stream order, is reported. Relaying is idempotent (see `sluice::fanout`), so records
//! after it that succeeded may be relayed again without harm.
//!
//! The record types are written here (a few serde structs and the DynamoDB JSON → SDK
//! `AttributeValue` conversion) rather than taken from `aws_lambda_events`' `dynamodb` feature,
//! which would add `serde_dynamo` and `chrono` to the build for the three fields read.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;
use serde_json::Value as Json;
use sluice::{fanout::OutboundEvent, replay::Redelivery};
use tracing::Instrument;

use crate::EgressState;

/// A DynamoDB Stream event as Lambda hands it to the function.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

/// One record of a stream batch (the fields the relay reads).
#[derive(Clone, Debug, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub dynamodb: StreamChange,
}

/// The change a record carries.
#[derive(Clone, Debug, Deserialize)]
pub struct StreamChange {
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_json::Map<String, Json>>,
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
}

/// A DynamoDB JSON value (`{"S": "…"}`, `{"N": "1"}`, `{"L": […]}`, …) as the SDK's type;
/// `None` for a shape it is not (binary values are not used by outbound events).
pub fn attribute_value(v: &Json) -> Option<AttributeValue> {
    let (kind, inner) = v.as_object()?.iter().next()?;
    let strings = |x: &Json| -> Option<Vec<String>> {
        x.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    Some(match kind.as_str() {
        "S" => AttributeValue::S(inner.as_str()?.to_owned()),
        "N" => AttributeValue::N(inner.as_str()?.to_owned()),
        "BOOL" => AttributeValue::Bool(inner.as_bool()?),
        "NULL" => AttributeValue::Null(inner.as_bool()?),
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()?
                .iter()
                .map(attribute_value)
                .collect::<Option<_>>()?,
        ),
        "M" => AttributeValue::M(image(inner.as_object()?)?),
        _ => return None,
    })
}

/// A record's image as an item.
pub fn image(map: &serde_json::Map<String, Json>) -> Option<HashMap<String, AttributeValue>> {
    map.iter()
        .map(|(k, v)| Some((k.clone(), attribute_value(v)?)))
        .collect()
}

/// What one record asks for.
#[derive(Debug, PartialEq)]
pub enum Outbox {
    /// Publish this event.
    Event(OutboundEvent),
    /// Send a replay's deliveries.
    Replay(Redelivery),
}

/// What to do with one record: relay this event or replay, or skip it (not an outbox insert: the
/// filter should not have let it through; an expired event is not delivered).
pub fn outbox_entry(record: &StreamRecord) -> Option<Outbox> {
    if record.event_name != "INSERT" {
        return None;
    }
    let item = image(record.dynamodb.new_image.as_ref()?)?;
    if let Some(replay) = Redelivery::from_item(&item) {
        return Some(Outbox::Replay(replay));
    }
    OutboundEvent::from_item(&item).map(Outbox::Event)
}

/// Relays a batch; reports the first record (in stream order) that must be retried.
pub async fn handle_stream_batch(state: &EgressState, event: StreamEvent) -> SqsBatchResponse {
    let results =
        futures::future::join_all(event.records.iter().map(|r| relay_record(state, r))).await;
    let mut response = SqsBatchResponse::default();
    if let Some((record, _)) = event.records.iter().zip(results).find(|(_, ok)| !ok) {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = record.dynamodb.sequence_number.clone();
        response.batch_item_failures.push(failure);
    }
    response
}

/// Relays one record; `false` when it must be retried.
async fn relay_record(state: &EgressState, record: &StreamRecord) -> bool {
    let sequence_number = record.dynamodb.sequence_number.as_str();
    let (table, queue) = (&state.config.table_name, &state.config.queue_url);
    match outbox_entry(record) {
        None => {
            tracing::warn!(
                sequence_number,
                "a stream record that is not a live outbox insert; skipped"
            );
            true
        }
        Some(Outbox::Event(event)) => {
            let span = tracing::info_span!(
                "outbox",
                sequence_number,
                tenant_id = event.tenant_id.as_str(),
                event_id = event.id.as_str(),
            );
            let result = sluice::fanout::relay(&state.aws, table, queue, &event)
                .instrument(span.clone())
                .await;
            span.in_scope(|| match result {
                Ok(endpoints) => {
                    tracing::info!(endpoints = endpoints.len(), "event relayed");
                    true
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "relaying the event failed");
                    false
                }
            })
        }
        Some(Outbox::Replay(replay)) => {
            let span = tracing::info_span!(
                "outbox",
                sequence_number,
                tenant_id = replay.tenant_id.as_str(),
                replay_id = replay.id.as_str(),
            );
            let result = sluice::replay::relay(&state.aws.sqs, queue, &replay)
                .instrument(span.clone())
                .await;
            span.in_scope(|| match result {
                Ok(()) => {
                    tracing::info!(deliveries = replay.targets.len(), "replay relayed");
                    true
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "relaying the replay failed");
                    false
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event_name: &str, image: Json) -> StreamRecord {
        serde_json::from_value(json!({
            "eventID": "1", "eventName": event_name, "eventSource": "aws:dynamodb",
            "dynamodb": {"Keys": {}, "NewImage": image, "SequenceNumber": "100"}
        }))
        .unwrap()
    }

    #[test]
    fn an_inserted_event_item_reads_as_its_outbound_event() {
        let mut e = OutboundEvent::new("tnt_a", "credits.added", json!({"amount": 5}));
        e.endpoint_ids = Some(vec!["ep_1".into()]);
        let image = json!({
            "pk": {"S": "TENANT#tnt_a"}, "sk": {"S": format!("EVENT#{}", e.id)},
            "id": {"S": e.id}, "type": {"S": "credits.added"}, "data": {"S": "{\"amount\":5}"},
            "created_at": {"N": e.created_at.to_string()},
            "ttl": {"N": (e.created_at + 86_400).to_string()},
            "endpoint_ids": {"L": [{"S": "ep_1"}]},
        });
        assert_eq!(
            outbox_entry(&record("INSERT", image.clone())),
            Some(Outbox::Event(e))
        );
        assert_eq!(outbox_entry(&record("MODIFY", image)), None);
        let replay = json!({
            "pk": {"S": "TENANT#tnt_a"}, "sk": {"S": "OUTBOX#rdl_1"}, "kind": {"S": "redeliver"},
            "id": {"S": "rdl_1"}, "created_at": {"N": "5"}, "ttl": {"N": "9"},
            "targets": {"L": [{"M": {"event_id": {"S": "msg_1"}, "endpoint_id": {"S": "ep_1"},
                "generation": {"N": "2"}}}]},
        });
        let Some(Outbox::Replay(r)) = outbox_entry(&record("INSERT", replay)) else {
            panic!("a replay's outbox item reads as one")
        };
        assert_eq!(
            (r.tenant_id.as_str(), r.targets[0].generation),
            ("tnt_a", 2)
        );
    }

    #[test]
    fn dynamodb_json_converts_every_used_shape() {
        let v = json!({"M": {"a": {"L": [{"N": "1"}, {"BOOL": true}, {"NULL": true},
            {"SS": ["x"]}]}}});
        let AttributeValue::M(m) = attribute_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(
            m["a"],
            AttributeValue::L(vec![
                AttributeValue::N("1".into()),
                AttributeValue::Bool(true),
                AttributeValue::Null(true),
                AttributeValue::Ss(vec!["x".into()]),
            ])
        );
        assert_eq!(attribute_value(&json!({"B": "AA=="})), None);
    }
}
