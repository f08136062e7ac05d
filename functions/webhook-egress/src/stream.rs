//! The outbox relay: a batch of the table's DynamoDB Stream records in (only `INSERT`s of outbound
//! event items reach it: the event source mapping's `FilterCriteria` in `template.yaml`), each
//! event published ([`sluice::fanout::relay`]), failures reported per record.
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
use sluice::fanout::OutboundEvent;
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

/// What to do with one record: relay this event, or skip it (not an outbound event insert: the
/// filter should not have let it through; an expired event is not delivered).
pub fn outbound_event(record: &StreamRecord) -> Option<OutboundEvent> {
    if record.event_name != "INSERT" {
        return None;
    }
    OutboundEvent::from_item(&image(record.dynamodb.new_image.as_ref()?)?)
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
    let Some(event) = outbound_event(record) else {
        tracing::warn!(
            sequence_number = record.dynamodb.sequence_number.as_str(),
            "a stream record that is not a live outbound event insert; skipped"
        );
        return true;
    };
    let span = tracing::info_span!(
        "outbox",
        sequence_number = record.dynamodb.sequence_number.as_str(),
        tenant_id = event.tenant_id.as_str(),
        event_id = event.id.as_str(),
    );
    async {
        match sluice::fanout::relay(
            &state.aws,
            &state.config.table_name,
            &state.config.queue_url,
            &event,
        )
        .await
        {
            Ok(endpoints) => {
                tracing::info!(endpoints = endpoints.len(), "event relayed");
                true
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "relaying the event failed");
                false
            }
        }
    }
    .instrument(span)
    .await
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
        assert_eq!(outbound_event(&record("INSERT", image.clone())), Some(e));
        assert_eq!(outbound_event(&record("MODIFY", image)), None);
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
