//! Creates the local table, queues and KMS key from the definitions in `template.yaml`.
//!
//! The template is the one source: this module reads the `SluiceTable`, `DeliveryQueue`,
//! `DeliveryDeadLetterQueue` and `SecretsKey` resources from it, so the local stack cannot drift
//! from what `sam deploy` creates (and a test compares both with the code's own constants).

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;
use sluice::aws::AwsClients;

/// The SAM template, compiled in.
pub const TEMPLATE_YAML: &str = include_str!("../../../template.yaml");

/// The resources the template defines, as the provisioner needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct StackDefinition {
    pub table: TableDefinition,
    pub queue_visibility_timeout_secs: i64,
    pub queue_retention_secs: i64,
    pub dlq_retention_secs: i64,
    pub max_receive_count: i64,
    pub key_spec: String,
    pub key_usage: String,
    pub key_rotation: bool,
}

/// (attribute name, HASH|RANGE) pairs.
pub type KeySchema = Vec<(String, String)>;

/// One global secondary index of `SluiceTable`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDefinition {
    pub name: String,
    pub key_schema: KeySchema,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// With `INCLUDE`: the attributes projected besides the keys.
    pub non_key_attributes: Vec<String>,
}

/// `SluiceTable`'s shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDefinition {
    /// (name, type) pairs.
    pub attributes: Vec<(String, String)>,
    pub key_schema: KeySchema,
    pub indexes: Vec<IndexDefinition>,
    pub ttl_attribute: String,
    pub ttl_enabled: bool,
    /// `StreamSpecification.StreamViewType` (the outbox's stream), if any.
    pub stream_view_type: Option<String>,
}

/// What was provisioned, by name.
#[derive(Debug, Clone)]
pub struct Resources {
    pub table_name: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub kms_key_id: String,
    /// The table's stream (`SluiceTable.StreamArn`), when the template enables one.
    pub stream_arn: Option<String>,
}

impl Resources {
    /// The environment the functions would get from the template for these resources.
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("TABLE_NAME".into(), self.table_name.clone()),
            ("QUEUE_URL".into(), self.queue_url.clone()),
            ("KMS_KEY_ID".into(), self.kms_key_id.clone()),
        ])
    }
}

fn resource<'a>(doc: &'a Value, logical_id: &str) -> anyhow::Result<&'a Value> {
    doc.get("Resources")
        .and_then(|r| r.get(logical_id))
        .and_then(|r| r.get("Properties"))
        .ok_or_else(|| anyhow!("template.yaml: resource {logical_id} has no Properties"))
}

fn string_at(v: &Value, path: &[&str]) -> anyhow::Result<String> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(*p)
            .ok_or_else(|| anyhow!("template.yaml: missing {}", path.join(".")))?;
    }
    match cur {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(anyhow!(
            "template.yaml: {} is not a literal",
            path.join(".")
        )),
    }
}

fn int_at(v: &Value, path: &[&str]) -> anyhow::Result<i64> {
    string_at(v, path)?
        .parse()
        .with_context(|| format!("template.yaml: {} is not an integer", path.join(".")))
}

fn pairs(list: Option<&Value>, a: &str, b: &str) -> anyhow::Result<Vec<(String, String)>> {
    list.and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("template.yaml: expected a list with {a}/{b}"))?
        .iter()
        .map(|e| Ok((string_at(e, &[a])?, string_at(e, &[b])?)))
        .collect()
}

impl StackDefinition {
    /// Reads the definitions from the compiled-in `template.yaml`.
    pub fn from_template() -> anyhow::Result<Self> {
        Self::parse(TEMPLATE_YAML)
    }

    /// Reads the definitions from a SAM template's text.
    pub fn parse(yaml: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_yaml::from_str(yaml).context("template.yaml is not YAML")?;
        let table = resource(&doc, "SluiceTable")?;
        let indexes = table
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .map(|list| {
                list.iter()
                    .map(|gsi| {
                        Ok(IndexDefinition {
                            name: string_at(gsi, &["IndexName"])?,
                            key_schema: pairs(gsi.get("KeySchema"), "AttributeName", "KeyType")?,
                            projection: string_at(gsi, &["Projection", "ProjectionType"])?,
                            non_key_attributes: gsi["Projection"]
                                .get("NonKeyAttributes")
                                .and_then(Value::as_sequence)
                                .into_iter()
                                .flatten()
                                .filter_map(|a| a.as_str().map(str::to_owned))
                                .collect(),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let queue = resource(&doc, "DeliveryQueue")?;
        let dlq = resource(&doc, "DeliveryDeadLetterQueue")?;
        let key = resource(&doc, "SecretsKey")?;
        Ok(StackDefinition {
            table: TableDefinition {
                attributes: pairs(
                    table.get("AttributeDefinitions"),
                    "AttributeName",
                    "AttributeType",
                )?,
                key_schema: pairs(table.get("KeySchema"), "AttributeName", "KeyType")?,
                indexes,
                ttl_attribute: string_at(table, &["TimeToLiveSpecification", "AttributeName"])?,
                ttl_enabled: string_at(table, &["TimeToLiveSpecification", "Enabled"])? == "true",
                stream_view_type: string_at(table, &["StreamSpecification", "StreamViewType"]).ok(),
            },
            queue_visibility_timeout_secs: int_at(queue, &["VisibilityTimeout"])?,
            queue_retention_secs: int_at(queue, &["MessageRetentionPeriod"])?,
            dlq_retention_secs: int_at(dlq, &["MessageRetentionPeriod"])?,
            max_receive_count: int_at(queue, &["RedrivePolicy", "maxReceiveCount"])?,
            key_spec: string_at(key, &["KeySpec"])?,
            key_usage: string_at(key, &["KeyUsage"])?,
            key_rotation: string_at(key, &["EnableKeyRotation"])? == "true",
        })
    }
}

fn key_schema(pairs: &[(String, String)]) -> Vec<KeySchemaElement> {
    pairs
        .iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .expect("name and type set")
        })
        .collect()
}

/// Creates every resource of the definition, names prefixed with `prefix` (each test uses its own).
pub async fn provision(
    aws: &AwsClients,
    def: &StackDefinition,
    prefix: &str,
) -> anyhow::Result<Resources> {
    let table_name = format!("{prefix}-table");
    let t = &def.table;
    let created = aws
        .dynamodb
        .create_table()
        .table_name(&table_name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            t.attributes
                .iter()
                .map(|(name, kind)| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::from(kind.as_str()))
                        .build()
                        .expect("name and type set")
                })
                .collect(),
        ))
        .set_key_schema(Some(key_schema(&t.key_schema)))
        .set_global_secondary_indexes(Some(
            t.indexes
                .iter()
                .map(|index| {
                    GlobalSecondaryIndex::builder()
                        .index_name(&index.name)
                        .set_key_schema(Some(key_schema(&index.key_schema)))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::from(index.projection.as_str()))
                                .set_non_key_attributes(
                                    (!index.non_key_attributes.is_empty())
                                        .then(|| index.non_key_attributes.clone()),
                                )
                                .build(),
                        )
                        .build()
                        .expect("name and schema set")
                })
                .collect(),
        ))
        .set_stream_specification(t.stream_view_type.as_deref().map(|view| {
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .expect("enabled flag set")
        }))
        .send()
        .await
        .context("creating the table")?;
    let stream_arn = created.table_description.and_then(|d| d.latest_stream_arn);
    aws.dynamodb
        .update_time_to_live()
        .table_name(&table_name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&t.ttl_attribute)
                .enabled(t.ttl_enabled)
                .build()
                .expect("attribute and flag set"),
        )
        .send()
        .await
        .context("enabling TTL")?;

    let dlq_url = aws
        .sqs
        .create_queue()
        .queue_name(format!("{prefix}-dlq"))
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            def.dlq_retention_secs.to_string(),
        )
        .send()
        .await
        .context("creating the DLQ")?
        .queue_url
        .context("DLQ has a URL")?;
    let dlq_arn = queue_arn(aws, &dlq_url).await?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": def.max_receive_count }).to_string();
    let queue_url = aws
        .sqs
        .create_queue()
        .queue_name(format!("{prefix}-deliveries"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            def.queue_visibility_timeout_secs.to_string(),
        )
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            def.queue_retention_secs.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .context("creating the delivery queue")?
        .queue_url
        .context("queue has a URL")?;
    let queue_arn = queue_arn(aws, &queue_url).await?;

    let key = aws
        .kms
        .create_key()
        .key_spec(KeySpec::from(def.key_spec.as_str()))
        .key_usage(KeyUsageType::from(def.key_usage.as_str()))
        .description(format!("{prefix} secrets"))
        .send()
        .await
        .context("creating the KMS key")?;
    let key_id = key.key_metadata.context("key metadata")?.key_id;
    if def.key_rotation {
        aws.kms
            .enable_key_rotation()
            .key_id(&key_id)
            .send()
            .await
            .context("enabling key rotation")?;
    }
    Ok(Resources {
        table_name,
        queue_url,
        queue_arn,
        dlq_url,
        kms_key_id: key_id,
        stream_arn,
    })
}

async fn queue_arn(aws: &AwsClients, url: &str) -> anyhow::Result<String> {
    aws.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading a queue ARN")?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .context("queue has an ARN")
}
