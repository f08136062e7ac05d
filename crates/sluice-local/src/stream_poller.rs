//! Feeds the egress function from the table's DynamoDB Stream as Lambda's stream event source
//! mapping does (the `Outbox` event of `WebhookEgressFunction` in `template.yaml`, whose
//! `BatchSize`, `MaximumRetryAttempts` and `FilterCriteria` it reads):
//!
//! - per shard, in order, batches of up to `BatchSize` records (`GetRecords`);
//! - records not matching the filter are dropped before the function sees them, as Lambda does
//!   (they count as done);
//! - the handler gets a real stream event (Lambda's JSON shape); a reported failure
//!   (`ReportBatchItemFailures`) makes the next batch start *at* that record, the ones before it
//!   being done; after `MaximumRetryAttempts` retries of one record the batch is given up (Lambda
//!   then describes it on the on-failure destination; here it is logged);
//! - the checkpoint (per shard, the last record done) only moves past records that are done, and
//!   a poller restarted from a saved checkpoint ([`StreamPoller::resume`]) continues after it —
//!   what a crash of the consumer between commit and relay looks like.
//!
//! Not emulated: `BisectBatchOnFunctionError` (the retry starts at the reported record instead),
//! shard splits (moto serves one shard), the batching window. A fresh shard iterator is taken per
//! batch (`AFTER_SEQUENCE_NUMBER` of the checkpoint): moto restores a table, stream included,
//! after a cancelled transaction, which leaves older iterators reading a stale copy.
//!
//! AWS requests per [`StreamPoller::drain`]: one `DescribeStream`, then per batch one
//! `GetShardIterator` and one `GetRecords` (and one more pair to find the shard drained).

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;
use tokio::sync::watch;
use webhook_egress::EgressState;

/// The event source mapping's settings, from the template.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub batch_size: usize,
    pub max_retries: u32,
    /// The `FilterCriteria` patterns (a record passes when any matches).
    pub filters: Vec<Json>,
}

impl Mapping {
    /// The DynamoDB event of `WebhookEgressFunction` in the compiled-in template.
    pub fn from_template() -> anyhow::Result<Mapping> {
        Self::parse(crate::provision::TEMPLATE_YAML)
    }

    pub fn parse(yaml: &str) -> anyhow::Result<Mapping> {
        let doc: Yaml = serde_yaml::from_str(yaml).context("template.yaml is not YAML")?;
        let events = doc["Resources"]["WebhookEgressFunction"]["Properties"]["Events"]
            .as_mapping()
            .ok_or_else(|| anyhow!("WebhookEgressFunction has no Events"))?;
        let props = events
            .values()
            .find(|e| e["Type"].as_str() == Some("DynamoDB"))
            .map(|e| &e["Properties"])
            .ok_or_else(|| anyhow!("WebhookEgressFunction has no DynamoDB event"))?;
        let filters = props["FilterCriteria"]["Filters"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|f| {
                let pattern = f["Pattern"]
                    .as_str()
                    .ok_or_else(|| anyhow!("a filter without a Pattern string"))?;
                serde_json::from_str(pattern).context("a filter Pattern is not JSON")
            })
            .collect::<anyhow::Result<Vec<Json>>>()?;
        Ok(Mapping {
            batch_size: props["BatchSize"].as_u64().unwrap_or(100) as usize,
            // Lambda's default is -1 (retry until the record expires).
            max_retries: props["MaximumRetryAttempts"].as_u64().unwrap_or(10_000) as u32,
            filters,
        })
    }

    /// Whether a record (Lambda's JSON shape) passes the filter criteria (none: every record).
    pub fn passes(&self, record: &Json) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|p| matches(p, record))
    }
}

/// Lambda's event filtering, the subset the template uses: an object pattern matches when each
/// of its keys matches the value's; an array lists alternatives, each a literal or
/// `{"prefix": "…"}`. Any other rule matches nothing (a template using one fails its test).
pub fn matches(pattern: &Json, value: &Json) -> bool {
    match pattern {
        Json::Object(fields) => fields
            .iter()
            .all(|(k, sub)| value.get(k).is_some_and(|v| matches(sub, v))),
        Json::Array(options) => options.iter().any(|option| match option {
            Json::Object(rule) => match (rule.len(), rule.get("prefix")) {
                (1, Some(Json::String(prefix))) => {
                    value.as_str().is_some_and(|v| v.starts_with(prefix))
                }
                _ => false,
            },
            literal => literal == value,
        }),
        _ => false,
    }
}

/// A stream attribute value as DynamoDB JSON (what Lambda puts in a stream event).
pub fn attribute_json(v: &AttributeValue) -> Json {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| STANDARD.encode(b.as_ref());
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Ss(l) => json!({"SS": l}),
        AttributeValue::Ns(l) => json!({"NS": l}),
        AttributeValue::Bs(l) => json!({"BS": l.iter().map(b64).collect::<Vec<_>>()}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(b) => json!({"NULL": b}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attribute_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": image_json(m)}),
        _ => Json::Null,
    }
}

fn image_json(m: &HashMap<String, AttributeValue>) -> Json {
    Json::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect(),
    )
}

/// A stream record in the JSON shape Lambda hands the function.
pub fn lambda_record(r: &Record, stream_arn: &str) -> Json {
    let change = r.dynamodb.as_ref();
    let mut dynamodb = serde_json::Map::new();
    if let Some(c) = change {
        if let Some(t) = c.approximate_creation_date_time {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
        }
        if let Some(k) = &c.keys {
            dynamodb.insert("Keys".into(), image_json(k));
        }
        if let Some(i) = &c.new_image {
            dynamodb.insert("NewImage".into(), image_json(i));
        }
        if let Some(i) = &c.old_image {
            dynamodb.insert("OldImage".into(), image_json(i));
        }
        dynamodb.insert("SequenceNumber".into(), json!(c.sequence_number));
        dynamodb.insert("SizeBytes".into(), json!(c.size_bytes));
        if let Some(v) = &c.stream_view_type {
            dynamodb.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    json!({
        "eventID": r.event_id,
        "eventName": r.event_name.as_ref().map(|n| n.as_str()),
        "eventVersion": r.event_version,
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region.as_deref().unwrap_or("us-east-1"),
        "eventSourceARN": stream_arn,
        "dynamodb": dynamodb,
    })
}

/// Per shard id, the sequence number of the last record done.
pub type Checkpoint = HashMap<String, String>;

/// What one [`StreamPoller::drain`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records read from the stream (filtered out ones included).
    pub records: usize,
    /// Handler invocations.
    pub invocations: usize,
    /// Invocations that reported a failure.
    pub failures: usize,
    /// Batches given up after the retries.
    pub given_up: usize,
}

/// The stream consumer of one table (see the module docs).
pub struct StreamPoller {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    mapping: Mapping,
    checkpoint: Checkpoint,
}

impl StreamPoller {
    /// A poller of `stream_arn` starting at the stream's beginning (`TRIM_HORIZON`), its calls
    /// recorded as `<function>@event-source` for the IAM check.
    pub fn new(sdk: &SdkConfig, function: &str, stream_arn: &str) -> anyhow::Result<Self> {
        let client = crate::iam::tag_streams(
            &aws_sdk_dynamodbstreams::Client::new(sdk),
            &format!("{function}{}", crate::iam::EVENT_SOURCE_SUFFIX),
        );
        Ok(StreamPoller {
            client,
            stream_arn: stream_arn.to_owned(),
            mapping: Mapping::from_template()?,
            checkpoint: Checkpoint::new(),
        })
    }

    /// The same poller continuing after `checkpoint` (a restarted consumer).
    pub fn resume(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// Where it stands.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Processes every record in the stream now, then returns.
    pub async fn drain(&mut self, state: &EgressState) -> anyhow::Result<Drained> {
        let stream = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await?;
        let shards: Vec<String> = stream
            .stream_description
            .map(|d| d.shards.unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.shard_id)
            .collect();
        let mut drained = Drained::default();
        for shard in shards {
            self.drain_shard(state, &shard, &mut drained).await?;
        }
        Ok(drained)
    }

    async fn drain_shard(
        &mut self,
        state: &EgressState,
        shard: &str,
        drained: &mut Drained,
    ) -> anyhow::Result<()> {
        // Retries of the record at the head of the next batch.
        let mut retries = 0u32;
        loop {
            let done = self.checkpoint.get(shard).cloned();
            let mut request = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(shard);
            request = match &done {
                Some(seq) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(seq),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let iterator = request.send().await?.shard_iterator;
            let Some(iterator) = iterator else {
                return Ok(()); // a closed shard, read to its end
            };
            let records = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(self.mapping.batch_size as i32)
                .send()
                .await?
                .records
                .unwrap_or_default();
            if records.is_empty() {
                return Ok(());
            }
            drained.records += records.len();
            let all: Vec<Json> = records
                .iter()
                .map(|r| lambda_record(r, &self.stream_arn))
                .collect();
            let sequence = |r: &Json| r["dynamodb"]["SequenceNumber"].as_str().map(str::to_owned);
            let last = all.last().and_then(sequence);
            let passing: Vec<Json> = all
                .iter()
                .filter(|r| self.mapping.passes(r))
                .cloned()
                .collect();
            if passing.is_empty() {
                self.advance(shard, last);
                continue;
            }
            let event = serde_json::from_value(json!({ "Records": passing }))
                .context("a stream event the egress function cannot read")?;
            drained.invocations += 1;
            let response = webhook_egress::stream::handle_stream_batch(state, event).await;
            let Some(failed) = response.batch_item_failures.first() else {
                retries = 0;
                self.advance(shard, last);
                continue;
            };
            drained.failures += 1;
            let failed = failed.item_identifier.clone();
            let position = all
                .iter()
                .position(|r| sequence(r).as_deref() == Some(failed.as_str()))
                .ok_or_else(|| anyhow!("the handler reported {failed}, not in its batch"))?;
            if position > 0 {
                // Records before the failed one are done; the retry starts at it.
                retries = 0;
                self.advance(shard, sequence(&all[position - 1]));
                continue;
            }
            retries += 1;
            if retries > self.mapping.max_retries {
                tracing::error!(
                    shard,
                    sequence_number = failed.as_str(),
                    "stream batch given up after the retries (Lambda: to the on-failure destination)"
                );
                drained.given_up += 1;
                retries = 0;
                self.advance(shard, last);
            }
        }
    }

    fn advance(&mut self, shard: &str, to: Option<String>) {
        if let Some(seq) = to {
            self.checkpoint.insert(shard.to_owned(), seq);
        }
    }
}

/// Polls until `shutdown` turns true (what `make dev` runs beside the SQS poller).
pub async fn run(
    mut poller: StreamPoller,
    state: EgressState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(err) = poller.drain(&state).await {
            tracing::warn!(error = %format!("{err:#}"), "reading the table's stream failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event_name: &str, sk: &str) -> Json {
        json!({"eventName": event_name, "eventSource": "aws:dynamodb",
            "dynamodb": {"Keys": {"pk": {"S": "TENANT#t"}, "sk": {"S": sk}}, "SequenceNumber": "1"}})
    }

    #[test]
    fn the_templates_filter_passes_only_inserted_outbox_items() {
        let m = Mapping::from_template().unwrap();
        assert_eq!(m.batch_size, 10);
        assert_eq!(m.max_retries, 10);
        assert!(m.passes(&record("INSERT", "EVENT#msg_1")));
        assert!(!m.passes(&record("MODIFY", "EVENT#msg_1")));
        assert!(!m.passes(&record("REMOVE", "EVENT#msg_1")));
        assert!(!m.passes(&record("INSERT", "DELIVERY#msg_1#ep_1")));
        assert!(!m.passes(&record("INSERT", "LEDGER#x")));
        assert!(m.passes(&record("INSERT", "OUTBOX#rdl_1")));
        assert!(!m.passes(&record("MODIFY", "OUTBOX#rdl_1")));
    }

    #[test]
    fn filter_rules_are_literals_or_prefixes_and_nothing_else() {
        let value = json!({"a": "xyz", "n": 3});
        assert!(matches(&json!({"a": ["xyz"]}), &value));
        assert!(matches(&json!({"a": ["q", {"prefix": "xy"}]}), &value));
        assert!(matches(&json!({"n": [3]}), &value));
        assert!(!matches(&json!({"a": [{"prefix": "z"}]}), &value));
        assert!(!matches(&json!({"missing": ["x"]}), &value));
        assert!(!matches(&json!({"a": [{"anything-but": "q"}]}), &value));
    }

    #[test]
    fn stream_values_become_dynamodb_json() {
        let v = AttributeValue::M(HashMap::from([(
            "l".to_owned(),
            AttributeValue::L(vec![
                AttributeValue::S("s".into()),
                AttributeValue::N("1".into()),
                AttributeValue::Bool(true),
            ]),
        )]));
        assert_eq!(
            attribute_json(&v),
            json!({"M": {"l": {"L": [{"S": "s"}, {"N": "1"}, {"BOOL": true}]}}})
        );
    }
}
