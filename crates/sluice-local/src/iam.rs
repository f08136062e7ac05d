//! IAM, proven locally: which AWS actions each function really uses, against what its policy in
//! `template.yaml` grants — in both directions (a missing grant is a denied request in AWS; an
//! unused grant is privilege no code path needs).
//!
//! - [`tag`] gives a function's clients an interceptor that records, per request, the IAM actions
//!   AWS will authorise and the template resource they act on (`TransactWriteItems` becomes one
//!   `PutItem`/`UpdateItem`/`DeleteItem`/`ConditionCheckItem` per item, as IAM checks it; a
//!   `Query` with `IndexName` acts on the index's ARN; SQS batch calls need the single action).
//!   Moto accepts every call whatever the policy, so this is what stands in for AWS's check.
//! - With `SLUICE_AWS_OPS_DIR` set, each process appends `function<TAB>action<TAB>resource`
//!   lines (each distinct line once) to its own file there; `make test` runs the whole suite with
//!   it set, then `sluice-local iam-check <dir>` runs [`check`] against the template.
//! - The local SQS and stream pollers stand in for Lambda's event source mappings, which call
//!   SQS and DynamoDB Streams with the function's role but under the managed policies SAM
//!   attaches for an SQS event (`AWSLambdaSQSQueueExecutionRole`) and a DynamoDB event
//!   (`AWSLambdaDynamoDBExecutionRole`, plus `sqs:SendMessage` on an SQS on-failure
//!   destination), not the `Policies` we write: they are recorded as `<function>@event-source`
//!   and only checked against that implicit grant.
//!
//! Resources are named by their logical id in the template: every table is `SluiceTable` (the
//! template has one), an index `SluiceTable/index/<name>`, a queue URL ending in `-dlq` (how
//! provisioning names it) `DeliveryDeadLetterQueue`, any other queue `DeliveryQueue`, every KMS
//! key `SecretsKey`. No AWS requests of its own.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    fs::File,
    io::Write,
    path::Path,
    sync::{Mutex, OnceLock},
};

use anyhow::{Context, anyhow, bail};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{Intercept, context::BeforeTransmitInterceptorContextRef},
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value as Json;
use serde_yaml::Value;
use sluice::aws::AwsClients;

/// The environment variable naming the directory the recorder writes to.
pub const OPS_DIR_ENV: &str = "SLUICE_AWS_OPS_DIR";

/// Suffix of the pseudo-function the local SQS poller records as (Lambda's event source mapping).
pub const EVENT_SOURCE_SUFFIX: &str = "@event-source";

/// One IAM action on one template resource, e.g. `dynamodb:Query` on `SluiceTable/index/gsi1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Use {
    pub action: String,
    pub resource: String,
}

impl Use {
    pub fn new(action: &str, resource: &str) -> Use {
        Use {
            action: action.to_owned(),
            resource: resource.to_owned(),
        }
    }
}

/// The IAM actions (and resources) one SDK request needs, from its operation and JSON body.
/// Every service Sluice calls speaks a JSON protocol, so the body names tables, queues and keys.
pub fn actions_for(service: &str, operation: &str, body: &Json) -> Vec<Use> {
    let str_at = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).map(str::to_owned);
    match service.to_ascii_lowercase().as_str() {
        "dynamodb" => {
            let table_or_index = |v: &Json| match str_at(v, "IndexName") {
                Some(index) => format!("SluiceTable/index/{index}"),
                None => "SluiceTable".to_owned(),
            };
            match operation {
                // IAM authorises each item of a transaction by its own action; there is no
                // `dynamodb:TransactWriteItems` action.
                "TransactWriteItems" | "TransactGetItems" => body
                    .get("TransactItems")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|item| {
                        let kind = item.as_object()?.keys().next()?.as_str();
                        let action = match kind {
                            "Put" => "PutItem",
                            "Update" => "UpdateItem",
                            "Delete" => "DeleteItem",
                            "ConditionCheck" => "ConditionCheckItem",
                            "Get" => "GetItem",
                            other => other,
                        };
                        Some(Use::new(&format!("dynamodb:{action}"), "SluiceTable"))
                    })
                    .collect(),
                _ => vec![Use::new(
                    &format!("dynamodb:{operation}"),
                    &table_or_index(body),
                )],
            }
        }
        // The stream's own API (the event source mapping's poller reads it): IAM actions are
        // `dynamodb:*` on the stream's ARN.
        "dynamodb streams" => vec![Use::new(
            &format!("dynamodb:{operation}"),
            "SluiceTable/stream/*",
        )],
        "sqs" => {
            let queue = match str_at(body, "QueueUrl") {
                Some(url) if url.ends_with("-dlq") => "DeliveryDeadLetterQueue",
                _ => "DeliveryQueue",
            };
            // A batch call is authorised by its single-message action.
            let action = operation.strip_suffix("Batch").unwrap_or(operation);
            vec![Use::new(&format!("sqs:{action}"), queue)]
        }
        "kms" => match operation {
            "ReEncrypt" => vec![
                Use::new("kms:ReEncryptFrom", "SecretsKey"),
                Use::new("kms:ReEncryptTo", "SecretsKey"),
            ],
            _ => vec![Use::new(&format!("kms:{operation}"), "SecretsKey")],
        },
        other => vec![Use::new(&format!("{other}:{operation}"), "*")],
    }
}

/// An interceptor recording the IAM actions of one function's requests (see the module docs).
#[derive(Clone, Debug)]
pub struct Recorder {
    function: String,
}

/// The per-process output: a file in `SLUICE_AWS_OPS_DIR` and the lines already in it.
struct Sink {
    file: File,
    seen: HashSet<String>,
}

fn sink() -> Option<&'static Mutex<Sink>> {
    static SINK: OnceLock<Option<Mutex<Sink>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let dir = std::env::var_os(OPS_DIR_ENV)?;
        std::fs::create_dir_all(&dir).ok()?;
        let path = Path::new(&dir).join(format!("ops-{}.tsv", std::process::id()));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{OPS_DIR_ENV}: cannot open {}: {e}", path.display()));
        Some(Mutex::new(Sink {
            file,
            seen: HashSet::new(),
        }))
    })
    .as_ref()
}

impl Recorder {
    fn record(&self, uses: Vec<Use>) {
        let Some(sink) = sink() else { return };
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        for u in uses {
            let line = format!("{}\t{}\t{}\n", self.function, u.action, u.resource);
            if sink.seen.insert(line.clone()) {
                // Written through at once: a test binary exits without running destructors.
                sink.file
                    .write_all(line.as_bytes())
                    .expect("the AWS operations file is writable");
            }
        }
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "IamRecorder"
    }

    // The serialized body is what IAM sees: table, index, queue, transaction items.
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if sink().is_none() {
            return Ok(());
        }
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let body = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Json::Null);
        self.record(actions_for(meta.service(), meta.name(), &body));
        Ok(())
    }
}

/// `clients` (with whatever interceptors they have) plus a recorder for `function`.
pub fn tag(clients: &AwsClients, function: &str) -> AwsClients {
    clients.with_interceptor(Recorder {
        function: function.to_owned(),
    })
}

/// A DynamoDB Streams client (the local stream poller's) with a recorder for `function`.
pub fn tag_streams(
    client: &aws_sdk_dynamodbstreams::Client,
    function: &str,
) -> aws_sdk_dynamodbstreams::Client {
    let recorder = Recorder {
        function: function.to_owned(),
    };
    aws_sdk_dynamodbstreams::Client::from_conf(
        client.config().to_builder().interceptor(recorder).build(),
    )
}

/// One `Allow` of an action on a resource pattern (`SluiceTable`, `SluiceTable/index/*`, `*`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub action: String,
    pub resource: String,
}

impl Grant {
    fn covers(&self, u: &Use) -> bool {
        let action = self.action == u.action
            || self
                .action
                .strip_suffix('*')
                .is_some_and(|p| u.action.starts_with(p));
        let resource = self.resource == u.resource
            || self
                .resource
                .strip_suffix('*')
                .is_some_and(|p| u.resource.starts_with(p));
        action && resource
    }
}

/// What the template grants each function (by its binary's name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policies {
    /// The function's own `Policies` statements.
    pub granted: BTreeMap<String, Vec<Grant>>,
    /// What SAM adds for an SQS event source (`AWSLambdaSQSQueueExecutionRole`), under
    /// `<function>@event-source`; not ours to trim, so never reported as unused.
    pub implicit: BTreeMap<String, Vec<Grant>>,
}

/// What SAM attaches to a function with an SQS event: the managed policy
/// `AWSLambdaSQSQueueExecutionRole` (its SQS part, on every queue), which Lambda's poller uses.
const SQS_POLLER_ACTIONS: &[&str] = &[
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
];

/// What SAM attaches to a function with a DynamoDB stream event: the managed policy
/// `AWSLambdaDynamoDBExecutionRole` (its DynamoDB part, on every stream), which Lambda's poller
/// uses.
const STREAM_POLLER_ACTIONS: &[&str] = &[
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// `!GetAtt X.Arn` → `X`; `!Sub ${X.Arn}/index/*` → `X/index/*`; `"*"` → `*`.
fn resource_name(v: &Value) -> anyhow::Result<String> {
    match v {
        Value::String(s) if s == "*" => Ok("*".to_owned()),
        Value::Tagged(t) => {
            let arg = t
                .value
                .as_str()
                .ok_or_else(|| anyhow!("{} with a non-string argument", t.tag))?;
            if t.tag == "GetAtt" {
                arg.strip_suffix(".Arn")
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("!GetAtt {arg}: only .Arn names a resource"))
            } else if t.tag == "Sub" {
                let rest = arg
                    .strip_prefix("${")
                    .and_then(|r| r.split_once(".Arn}"))
                    .ok_or_else(|| anyhow!("!Sub {arg}: expected ${{X.Arn}}…"))?;
                Ok(format!("{}{}", rest.0, rest.1))
            } else {
                bail!(
                    "!{} {arg}: not a resource ARN this check understands",
                    t.tag
                )
            }
        }
        other => bail!("resource {other:?}: not a resource ARN this check understands"),
    }
}

fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Sequence(list)) => list.iter().collect(),
        Some(one) => vec![one],
        None => Vec::new(),
    }
}

impl Policies {
    /// Every `AWS::Serverless::Function`'s inline policy statements. Anything else in `Policies`
    /// (managed policies, SAM policy templates, `Deny`, conditions) is refused rather than
    /// guessed at.
    pub fn parse(yaml: &str) -> anyhow::Result<Policies> {
        let doc: Value = serde_yaml::from_str(yaml).context("template.yaml is not YAML")?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("template.yaml has no Resources"))?;
        let mut out = Policies::default();
        for (id, res) in resources {
            if res.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let id = id.as_str().unwrap_or_default();
            let function = res
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id}: no Metadata.BuildProperties.Binary"))?
                .to_owned();
            let props = res.get("Properties");
            let grants = out.granted.entry(function.clone()).or_default();
            for policy in one_or_many(props.and_then(|p| p.get("Policies"))) {
                let statements = policy
                    .get("Statement")
                    .ok_or_else(|| anyhow!("{id}: only inline Statement policies are checked"))?;
                for st in one_or_many(Some(statements)) {
                    if st.get("Effect").and_then(Value::as_str) != Some("Allow")
                        || st.get("Condition").is_some()
                    {
                        bail!("{id}: only unconditional Allow statements are checked");
                    }
                    for action in one_or_many(st.get("Action")) {
                        let action = action
                            .as_str()
                            .ok_or_else(|| anyhow!("{id}: an Action is not a string"))?;
                        for resource in one_or_many(st.get("Resource")) {
                            grants.push(Grant {
                                action: action.to_owned(),
                                resource: resource_name(resource).with_context(|| id.to_owned())?,
                            });
                        }
                    }
                }
            }
            let events = props
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping);
            for event in events.into_iter().flat_map(|m| m.values()) {
                let poller = match event.get("Type").and_then(Value::as_str) {
                    Some("SQS") => SQS_POLLER_ACTIONS,
                    Some("DynamoDB") => STREAM_POLLER_ACTIONS,
                    _ => continue,
                };
                let implicit = out
                    .implicit
                    .entry(format!("{function}{EVENT_SOURCE_SUFFIX}"))
                    .or_default();
                implicit.extend(poller.iter().map(|a| Grant {
                    action: (*a).to_owned(),
                    resource: "*".to_owned(),
                }));
                // SAM also grants sending to an SQS on-failure destination.
                let destination = event
                    .get("Properties")
                    .and_then(|p| p.get("DestinationConfig"))
                    .and_then(|d| d.get("OnFailure"));
                if let Some(on_failure) = destination
                    && on_failure.get("Type").and_then(Value::as_str) == Some("SQS")
                {
                    let queue = on_failure
                        .get("Destination")
                        .ok_or_else(|| anyhow!("{id}: OnFailure without a Destination"))?;
                    implicit.push(Grant {
                        action: "sqs:SendMessage".to_owned(),
                        resource: resource_name(queue).with_context(|| id.to_owned())?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The policies of the compiled-in `template.yaml`.
    pub fn from_template() -> anyhow::Result<Policies> {
        Self::parse(crate::provision::TEMPLATE_YAML)
    }
}

/// One disagreement between what the code does and what the template grants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// AWS would deny this request.
    Missing { function: String, used: Use },
    /// No recorded request needs this grant.
    Unused { function: String, grant: Grant },
    /// Requests recorded for a function the template does not define.
    UnknownFunction { function: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Missing { function, used } => write!(
                f,
                "{function}: uses {} on {} but its policy does not grant it (AWS denies the request)",
                used.action, used.resource
            ),
            Finding::Unused { function, grant } => write!(
                f,
                "{function}: policy grants {} on {} but no request of the test suite needs it",
                grant.action, grant.resource
            ),
            Finding::UnknownFunction { function } => {
                write!(
                    f,
                    "{function}: requests recorded, but template.yaml has no such function"
                )
            }
        }
    }
}

/// Compares what each function used with what its policy grants; empty when they agree exactly.
pub fn check(policies: &Policies, used: &BTreeMap<String, BTreeSet<Use>>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let none = BTreeSet::new();
    for (function, uses) in used {
        let grants = policies
            .granted
            .get(function)
            .or_else(|| policies.implicit.get(function));
        let Some(grants) = grants else {
            findings.push(Finding::UnknownFunction {
                function: function.clone(),
            });
            continue;
        };
        for u in uses {
            if !grants.iter().any(|g| g.covers(u)) {
                findings.push(Finding::Missing {
                    function: function.clone(),
                    used: u.clone(),
                });
            }
        }
    }
    for (function, grants) in &policies.granted {
        let uses = used.get(function).unwrap_or(&none);
        for g in grants {
            if !uses.iter().any(|u| g.covers(u)) {
                findings.push(Finding::Unused {
                    function: function.clone(),
                    grant: g.clone(),
                });
            }
        }
    }
    findings.sort();
    findings
}

/// Reads every recorder file in `dir`: function → the actions it used.
pub fn read_ops_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<Use>>> {
    let mut used: BTreeMap<String, BTreeSet<Use>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut parts = line.split('\t');
            let (Some(function), Some(action), Some(resource), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                bail!("{}: malformed line {line:?}", path.display());
            };
            used.entry(function.to_owned())
                .or_default()
                .insert(Use::new(action, resource));
        }
    }
    Ok(used)
}

/// `sluice-local iam-check <dir>`: the recorded operations against `template.yaml`'s policies.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let [dir] = args else {
        bail!("usage: sluice-local iam-check <dir written with {OPS_DIR_ENV}>");
    };
    let used = read_ops_dir(Path::new(dir))?;
    if used.is_empty() {
        bail!("{dir}: no AWS operations recorded (run the tests with {OPS_DIR_ENV}={dir})");
    }
    let findings = check(&Policies::from_template()?, &used);
    for (function, uses) in &used {
        println!("{function}:");
        for u in uses {
            println!("  {} {}", u.action, u.resource);
        }
    }
    if findings.is_empty() {
        println!("IAM check: every function's policy grants exactly what the test suite used.");
        return Ok(());
    }
    for f in &findings {
        eprintln!("IAM check: {f}");
    }
    bail!(
        "IAM check failed: {} finding(s) between template.yaml and the recorded operations",
        findings.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn uses(function: &str, list: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<Use>> {
        BTreeMap::from([(
            function.to_owned(),
            list.iter().map(|(a, r)| Use::new(a, r)).collect(),
        )])
    }

    const TEMPLATE: &str = r#"
Resources:
  T:
    Type: AWS::DynamoDB::Table
  F:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: f
    Properties:
      Events:
        Q:
          Type: SQS
          Properties:
            Queue: !GetAtt DeliveryQueue.Arn
      Policies:
        - Statement:
            - Effect: Allow
              Action:
                - dynamodb:PutItem
                - dynamodb:DeleteItem
              Resource: !GetAtt SluiceTable.Arn
            - Effect: Allow
              Action: dynamodb:Query
              Resource: !Sub ${SluiceTable.Arn}/index/*
"#;

    fn all_used() -> BTreeMap<String, BTreeSet<Use>> {
        uses(
            "f",
            &[
                ("dynamodb:PutItem", "SluiceTable"),
                ("dynamodb:DeleteItem", "SluiceTable"),
                ("dynamodb:Query", "SluiceTable/index/gsi1"),
            ],
        )
    }

    #[test]
    fn parses_inline_statements_and_the_sqs_poller_grant() {
        let p = Policies::parse(TEMPLATE).unwrap();
        assert_eq!(
            p.granted["f"],
            vec![
                Grant {
                    action: "dynamodb:PutItem".into(),
                    resource: "SluiceTable".into()
                },
                Grant {
                    action: "dynamodb:DeleteItem".into(),
                    resource: "SluiceTable".into()
                },
                Grant {
                    action: "dynamodb:Query".into(),
                    resource: "SluiceTable/index/*".into()
                },
            ]
        );
        assert!(p.implicit["f@event-source"].contains(&Grant {
            action: "sqs:ReceiveMessage".into(),
            resource: "*".into()
        }));
    }

    #[test]
    fn exact_agreement_passes() {
        let p = Policies::parse(TEMPLATE).unwrap();
        assert_eq!(check(&p, &all_used()), vec![]);
    }

    #[test]
    fn removing_any_one_grant_fails() {
        let p = Policies::parse(TEMPLATE).unwrap();
        for i in 0..p.granted["f"].len() {
            let mut fewer = p.clone();
            let removed = fewer.granted.get_mut("f").unwrap().remove(i);
            let findings = check(&fewer, &all_used());
            assert!(
                matches!(&findings[..], [Finding::Missing { function, used }]
                    if function == "f" && removed.covers(used)),
                "removing {removed:?}: {findings:?}"
            );
        }
    }

    #[test]
    fn an_unused_grant_fails() {
        let p = Policies::parse(TEMPLATE).unwrap();
        let mut used = all_used();
        used.get_mut("f")
            .unwrap()
            .remove(&Use::new("dynamodb:DeleteItem", "SluiceTable"));
        assert_eq!(
            check(&p, &used),
            vec![Finding::Unused {
                function: "f".into(),
                grant: Grant {
                    action: "dynamodb:DeleteItem".into(),
                    resource: "SluiceTable".into()
                }
            }]
        );
    }

    #[test]
    fn a_table_grant_does_not_cover_an_index_nor_the_reverse() {
        let p = Policies::parse(TEMPLATE).unwrap();
        let mut used = all_used();
        let f = used.get_mut("f").unwrap();
        f.insert(Use::new("dynamodb:PutItem", "SluiceTable/index/gsi1"));
        f.insert(Use::new("dynamodb:Query", "SluiceTable"));
        assert_eq!(check(&p, &used).len(), 2);
    }

    #[test]
    fn the_event_source_is_checked_against_sams_poller_policy_only() {
        let p = Policies::parse(TEMPLATE).unwrap();
        let mut used = all_used();
        used.extend(uses(
            "f@event-source",
            &[
                ("sqs:ReceiveMessage", "DeliveryQueue"),
                ("sqs:DeleteMessage", "DeliveryQueue"),
            ],
        ));
        assert_eq!(check(&p, &used), vec![]);
        used.extend(uses(
            "f@event-source",
            &[("sqs:SendMessage", "DeliveryQueue")],
        ));
        assert_eq!(check(&p, &used).len(), 1);
        // A function the template does not have is a finding, not a pass.
        used.extend(uses("g", &[("sqs:SendMessage", "DeliveryQueue")]));
        assert_eq!(check(&p, &used).len(), 2);
    }

    #[test]
    fn refuses_policies_it_does_not_understand() {
        let managed = TEMPLATE.replace(
            "        - Statement:",
            "        - AmazonDynamoDBFullAccess\n        - Statement:",
        );
        assert!(Policies::parse(&managed).is_err());
        let deny = TEMPLATE.replacen("Effect: Allow", "Effect: Deny", 1);
        assert!(Policies::parse(&deny).is_err());
    }

    #[test]
    fn a_transaction_needs_each_items_action() {
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t"}},
            {"Update": {"TableName": "t"}},
            {"Delete": {"TableName": "t"}},
            {"ConditionCheck": {"TableName": "t"}},
        ]});
        let actions: Vec<String> = actions_for("DynamoDB", "TransactWriteItems", &body)
            .into_iter()
            .map(|u| u.action)
            .collect();
        assert_eq!(
            actions,
            [
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:ConditionCheckItem"
            ]
        );
    }

    #[test]
    fn resources_follow_the_request() {
        assert_eq!(
            actions_for(
                "DynamoDB",
                "Query",
                &json!({"TableName": "t", "IndexName": "gsi1"})
            ),
            vec![Use::new("dynamodb:Query", "SluiceTable/index/gsi1")]
        );
        assert_eq!(
            actions_for("DynamoDB", "Query", &json!({"TableName": "t"})),
            vec![Use::new("dynamodb:Query", "SluiceTable")]
        );
        assert_eq!(
            actions_for(
                "SQS",
                "DeleteMessageBatch",
                &json!({"QueueUrl": "http://x/1/p-dlq"})
            ),
            vec![Use::new("sqs:DeleteMessage", "DeliveryDeadLetterQueue")]
        );
        assert_eq!(
            actions_for("KMS", "ReEncrypt", &json!({})),
            vec![
                Use::new("kms:ReEncryptFrom", "SecretsKey"),
                Use::new("kms:ReEncryptTo", "SecretsKey")
            ]
        );
    }

    #[test]
    fn the_template_parses() {
        let p = Policies::from_template().unwrap();
        for f in ["stripe-ingress", "api", "webhook-egress"] {
            assert!(!p.granted[f].is_empty(), "{f}");
        }
        assert!(p.implicit.contains_key("webhook-egress@event-source"));
    }

    #[test]
    fn the_stream_poller_holds_sams_dynamodb_grant_and_its_on_failure_destination() {
        let p = Policies::from_template().unwrap();
        let implicit = &p.implicit["webhook-egress@event-source"];
        let grant = |action: &str, resource: &str| Grant {
            action: action.into(),
            resource: resource.into(),
        };
        assert!(implicit.contains(&grant("dynamodb:GetRecords", "*")));
        assert!(implicit.contains(&grant("sqs:SendMessage", "DeliveryDeadLetterQueue")));
        let used = actions_for("DynamoDB Streams", "GetShardIterator", &Json::Null);
        assert_eq!(
            used,
            vec![Use::new(
                "dynamodb:GetShardIterator",
                "SluiceTable/stream/*"
            )]
        );
        assert!(implicit.iter().any(|g| g.covers(&used[0])));
        // Ingress no longer sends to SQS at all (the outbox).
        assert!(
            !p.granted["stripe-ingress"]
                .iter()
                .any(|g| g.action.starts_with("sqs:"))
        );
    }
}
