//! Cost per million operations, as AWS bills them: DynamoDB read/write units computed from the
//! items each request really touched, SQS and KMS requests, and Lambda requests and GB-seconds at
//! 128, 192 and 256 MB — beside the Python peer's.
//!
//! Write units are not guessed: each operation runs once more on the loopback emulator with the
//! [`crate::timeline`] interceptor keeping request bodies; the table is scanned (through a client
//! no interceptor sees) before and after, and every item a write names is sized by DynamoDB's
//! rules ([`item_size`]) in its larger state, before or after — what DynamoDB charges for a
//! write, also a failed conditional one. A transactional write counts double; every started KB of
//! each item counts (reads: every started 4 KB; eventually consistent reads half).
//!
//! Lambda's duration model: an instance of `m` MB gets `m / 1769` of a vCPU, so handler CPU
//! measured on one full core takes `1769 / m` times as long; to it come the AWS round trips on
//! the critical path at the latency model's figures ([`crate::aws_like`]). It assumes one core
//! here is as fast as a Graviton core and that the CPU share throttles evenly (short bursts may
//! run faster), so it errs towards more duration at small sizes.

use std::collections::HashMap;

use anyhow::Context;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use base64::Engine;
use serde_json::{Value, json};
use sluice_local::provision::IndexDefinition;

use crate::{
    aws_like::Figures,
    in_process::{Sample, Scenario},
    scenarios, timeline,
};

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;
/// The table's items by (pk, sk).
pub type Snapshot = HashMap<(String, String), Item>;

/// AWS's public on-demand prices, US East (N. Virginia), USD.
pub struct Prices {
    pub as_of: &'static str,
    /// Lambda, arm64, first tier, per GB-second.
    pub lambda_gb_s: f64,
    pub lambda_request: f64,
    /// DynamoDB on-demand, Standard table class, per write / read request unit.
    pub wru: f64,
    pub rru: f64,
    /// SQS standard queue, per request (64 KB chunk), beyond the free tier.
    pub sqs_request: f64,
    /// KMS, per API request beyond the free tier.
    pub kms_request: f64,
    /// API Gateway HTTP API, per request (first 300 million a month): the same for both sides.
    pub http_api_request: f64,
}

pub const PRICES: Prices = Prices {
    as_of: "us-east-1, AWS price pages as of 2026-12-02 (DynamoDB on-demand since its 2024-11-01 \
            reduction)",
    lambda_gb_s: 0.000_013_333_4,
    lambda_request: 0.20 / 1e6,
    wru: 0.625 / 1e6,
    rru: 0.125 / 1e6,
    sqs_request: 0.40 / 1e6,
    kms_request: 3.0 / 1e6,
    http_api_request: 1.0 / 1e6,
};

/// Memory sizes compared (MB) and the one at which Lambda gives a whole vCPU.
pub const MEMORY_SIZES: [u32; 3] = [128, 192, 256];
const FULL_VCPU_MB: f64 = 1769.0;

/// A function's `MemorySize` in template.yaml (its own, else the `Globals` one).
pub fn memory_mb(function: &str) -> anyhow::Result<u32> {
    let doc: serde_yaml::Value = serde_yaml::from_str(sluice_local::provision::TEMPLATE_YAML)?;
    doc["Resources"][function]["Properties"]["MemorySize"]
        .as_u64()
        .or(doc["Globals"]["Function"]["MemorySize"].as_u64())
        .and_then(|m| u32::try_from(m).ok())
        .with_context(|| format!("no MemorySize for {function} in template.yaml"))
}

/// The table's indexes as template.yaml defines them (an index entry's size follows from its
/// projection).
pub fn indexes() -> anyhow::Result<Vec<IndexDefinition>> {
    Ok(sluice_local::provision::StackDefinition::from_template()?
        .table
        .indexes)
}

/// The entry `index` holds for `item` (`None` if the item does not carry the index's partition
/// key): the whole item (`ALL`), or the table's and the index's keys plus the listed attributes.
fn index_entry(index: &IndexDefinition, item: &Item) -> Option<Item> {
    let (index_pk, _) = index.key_schema.first()?;
    item.get(index_pk)?;
    if index.projection == "ALL" {
        return Some(item.clone());
    }
    let keys = index.key_schema.iter().map(|(a, _)| a.as_str());
    let wanted: Vec<&str> = ["pk", "sk"]
        .into_iter()
        .chain(keys)
        .chain(index.non_key_attributes.iter().map(String::as_str))
        .collect();
    Some(
        item.iter()
            .filter(|(k, _)| wanted.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

// ---- DynamoDB's sizing rules ---------------------------------------------------------------

/// An item's size as DynamoDB bills it: per attribute, its name's UTF-8 length plus its value's
/// size (strings and binaries their length; numbers 1 byte per 2 significant digits + 1; booleans
/// and nulls 1; lists and maps 3 bytes + 1 per element, plus the elements and, for maps, their
/// names).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    significant.len().div_ceil(2) + 1
}

/// A DynamoDB JSON value (`{"S": "…"}`, as on the wire) as an attribute value.
fn attribute(v: &Value) -> Option<AttributeValue> {
    let (tag, x) = v.as_object()?.iter().next()?;
    let strings = |x: &Value| -> Option<Vec<String>> {
        x.as_array()?
            .iter()
            .map(|s| s.as_str().map(String::from))
            .collect()
    };
    let blob = |x: &Value| -> Option<Blob> {
        Some(Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(x.as_str()?)
                .ok()?,
        ))
    };
    Some(match tag.as_str() {
        "S" => AttributeValue::S(x.as_str()?.into()),
        "N" => AttributeValue::N(x.as_str()?.into()),
        "B" => AttributeValue::B(blob(x)?),
        "BOOL" => AttributeValue::Bool(x.as_bool()?),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(x.as_array()?.iter().filter_map(attribute).collect()),
        "M" => AttributeValue::M(item_of(x)?),
        "SS" => AttributeValue::Ss(strings(x)?),
        "NS" => AttributeValue::Ns(strings(x)?),
        "BS" => AttributeValue::Bs(x.as_array()?.iter().filter_map(blob).collect()),
        _ => return None,
    })
}

fn item_of(v: &Value) -> Option<Item> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), attribute(v)?)))
        .collect()
}

fn key_of(item: &Item) -> Option<(String, String)> {
    let s = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    Some((s("pk")?, s("sk").unwrap_or_default()))
}

// ---- units of one request ------------------------------------------------------------------

/// One item a request wrote (or read), as billed.
#[derive(Clone, Debug, PartialEq)]
pub struct Touch {
    /// e.g. `TransactWriteItems/Put`.
    pub action: String,
    /// `pk / sk` (no `|`: it would split a markdown table's cell), ids shortened to their kind (`STRIPE#evt_… | EVENT`).
    pub key: String,
    pub bytes: usize,
    pub units: f64,
    pub write: bool,
}

/// Read and write units of requests, with every item behind them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Units {
    pub wru: f64,
    pub rru: f64,
    pub touches: Vec<Touch>,
    /// Requests of other services, by service.
    pub others: std::collections::BTreeMap<String, f64>,
    /// What could not be sized (e.g. a query of an index).
    pub unsized_reads: Vec<String>,
    /// The table's indexes (their entries are billed too).
    pub indexes: Vec<IndexDefinition>,
}

impl Units {
    /// No units yet, with the indexes template.yaml defines.
    pub fn new() -> Units {
        Units {
            indexes: indexes().expect("the compiled-in template.yaml defines the table"),
            ..Units::default()
        }
    }

    fn touch(
        &mut self,
        action: String,
        key: &(String, String),
        bytes: usize,
        units: f64,
        write: bool,
    ) {
        if write {
            self.wru += units;
        } else {
            self.rru += units;
        }
        self.touches.push(Touch {
            action,
            key: format!("{} / {}", shorten(&key.0), shorten(&key.1)),
            bytes,
            units,
            write,
        });
    }

    /// The units of a run's requests, the table as it was `before` and `after`.
    pub fn of(requests: &[timeline::Request], before: &Snapshot, after: &Snapshot) -> Units {
        let mut units = Units::new();
        for r in requests {
            if r.service != "DynamoDB" {
                *units.others.entry(r.service.clone()).or_insert(0.0) += 1.0;
                continue;
            }
            let body: Value = r
                .body
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            units.request(&r.operation, &body, before, after);
        }
        units
    }

    /// Adds one DynamoDB request's units.
    pub fn request(&mut self, op: &str, body: &Value, before: &Snapshot, after: &Snapshot) {
        let size = |key: &(String, String), snap: &Snapshot| snap.get(key).map_or(0, item_size);
        let write = |units: &mut Units, action: String, spec: &Value, factor: f64| {
            let new = spec.get("Item").and_then(item_of);
            let Some(key) = new
                .as_ref()
                .or(spec.get("Key").and_then(item_of).as_ref())
                .and_then(key_of)
            else {
                units.unsized_reads.push(format!("{action}: no key"));
                return;
            };
            let bytes = size(&key, before)
                .max(size(&key, after))
                .max(new.as_ref().map_or(0, item_size));
            let billed = factor * (bytes.max(1).div_ceil(1024)) as f64;
            units.touch(action.clone(), &key, bytes, billed, true);
            // An item carrying an index's key is written to that index too, billed like a plain
            // write (not doubled by a transaction) at the size of its entry there.
            for index in units.indexes.clone() {
                let entry_bytes = [before.get(&key), after.get(&key), new.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|item| index_entry(&index, item))
                    .map(|entry| item_size(&entry))
                    .max();
                if let Some(entry_bytes) = entry_bytes {
                    let index_units = (entry_bytes.max(1).div_ceil(1024)) as f64;
                    units.touch(
                        format!("{action} → {}", index.name),
                        &key,
                        entry_bytes,
                        index_units,
                        true,
                    );
                }
            }
        };
        let read = |units: &mut Units, action: String, key_json: &Value, factor: f64| {
            let Some(key) = item_of(key_json).as_ref().and_then(key_of) else {
                return;
            };
            let bytes = size(&key, before);
            let billed = factor * (bytes.max(1).div_ceil(4096)) as f64;
            units.touch(action, &key, bytes, billed, false);
        };
        let consistency = |spec: &Value| {
            if spec["ConsistentRead"].as_bool() == Some(true) {
                1.0
            } else {
                0.5
            }
        };
        match op {
            "TransactWriteItems" => {
                for ti in body["TransactItems"].as_array().into_iter().flatten() {
                    if let Some((kind, spec)) = ti.as_object().and_then(|o| o.iter().next()) {
                        write(self, format!("{op}/{kind}"), spec, 2.0);
                    }
                }
            }
            "PutItem" | "UpdateItem" | "DeleteItem" => write(self, op.into(), body, 1.0),
            "BatchWriteItem" => {
                for reqs in body["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    for r in reqs.as_array().into_iter().flatten() {
                        if let Some((kind, spec)) = r.as_object().and_then(|o| o.iter().next()) {
                            write(self, format!("{op}/{kind}"), spec, 1.0);
                        }
                    }
                }
            }
            "GetItem" => read(self, op.into(), &body["Key"], consistency(body)),
            "BatchGetItem" => {
                for spec in body["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    for key in spec["Keys"].as_array().into_iter().flatten() {
                        read(self, op.into(), key, consistency(spec));
                    }
                }
            }
            "TransactGetItems" => {
                for ti in body["TransactItems"].as_array().into_iter().flatten() {
                    read(self, op.into(), &ti["Get"]["Key"], 2.0);
                }
            }
            "Query" => self.query(body, before, consistency(body)),
            other => self.unsized_reads.push(other.into()),
        }
    }

    /// A `pk = :v [AND begins_with(sk, :p)]` query of the table: the partition's matching items
    /// (read before any filter, as DynamoDB bills); an index query is counted as one unit.
    fn query(&mut self, body: &Value, before: &Snapshot, factor: f64) {
        let condition = body["KeyConditionExpression"].as_str().unwrap_or("");
        let value = |placeholder: Option<&str>| -> Option<String> {
            let p = placeholder?.trim().trim_end_matches(')');
            body["ExpressionAttributeValues"][p]["S"]
                .as_str()
                .map(String::from)
        };
        let pk = value(
            condition
                .split("pk = ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()),
        );
        let prefix = value(condition.split("begins_with(sk,").nth(1));
        let Some(pk) = pk.filter(|_| body.get("IndexName").is_none()) else {
            self.unsized_reads.push(format!(
                "Query of {} counted as 1 unit",
                body["IndexName"].as_str().unwrap_or("the table")
            ));
            self.rru += factor;
            return;
        };
        let bytes: usize = before
            .iter()
            .filter(|((p, s), _)| *p == pk && prefix.as_ref().is_none_or(|x| s.starts_with(x)))
            .map(|(_, item)| item_size(item))
            .sum();
        let billed = factor * (bytes.max(1).div_ceil(4096)) as f64;
        let key = (pk, prefix.map_or("*".into(), |p| format!("{p}*")));
        self.touch("Query".into(), &key, bytes, billed, false);
    }
}

/// `STRIPE#evt_8f…` → `STRIPE#evt_…`: keys name the kind of item, not the instance.
fn shorten(part: &str) -> String {
    part.split('#')
        .map(|seg| match seg.split_once('_') {
            Some((kind, _)) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase()) => {
                format!("{kind}_…")
            }
            // A timestamp or an hour bucket: its digits say nothing about the kind.
            _ if seg.starts_with(|c: char| c.is_ascii_digit()) => "…".into(),
            _ => seg.into(),
        })
        .collect::<Vec<_>>()
        .join("#")
}

// ---- measuring ------------------------------------------------------------------------------

/// Scans the whole (small) table through a client without interceptors.
pub struct Snapshotter {
    db: aws_sdk_dynamodb::Client,
    table: String,
}

impl Snapshotter {
    pub fn new(sdk: &SdkConfig, s: &Scenario) -> Snapshotter {
        Snapshotter {
            db: aws_sdk_dynamodb::Client::new(sdk),
            table: s.stack.config.table_name.clone(),
        }
    }

    pub async fn take(&self) -> anyhow::Result<Snapshot> {
        let mut out = Snapshot::new();
        let mut start = None;
        loop {
            let page = self
                .db
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items.unwrap_or_default() {
                if let Some(key) = key_of(&item) {
                    out.insert(key, item);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}

/// One operation's measured units (and the CPU of the measured call, for parts the AWS-like
/// table does not time).
pub struct Measured {
    pub units: Units,
    pub sample: Sample,
}

async fn measure_one(
    s: &Scenario,
    snap: &Snapshotter,
    call: impl std::future::Future<Output = anyhow::Result<Sample>>,
) -> anyhow::Result<Measured> {
    let before = snap.take().await?;
    s.timeline.keep_bodies(true);
    let sample = call.await;
    s.timeline.keep_bodies(false);
    let sample = sample?;
    let after = snap.take().await?;
    if std::env::var_os("SLUICE_BENCH_DEBUG_COST").is_some() {
        for r in &sample.requests {
            eprintln!(
                "cost: {} {} {}",
                r.service,
                r.operation,
                String::from_utf8_lossy(r.body.as_deref().unwrap_or_default())
            );
        }
    }
    Ok(Measured {
        units: Units::of(&sample.requests, &before, &after),
        sample,
    })
}

/// The operations costed, measured once each on the loopback emulator.
pub struct Operations {
    pub new_event: Measured,
    pub duplicate: Measured,
    pub first_write: Measured,
    pub replay: Measured,
    /// A delivery is the outbox relay's part (stream record → deliveries → SQS) and egress's.
    pub relay: Measured,
    pub delivery: Measured,
    /// Size of the Stripe payload used.
    pub payload_bytes: usize,
    /// The event item as the peer writes it, for the same payload.
    pub peer_event_item_bytes: usize,
}

/// The Stripe event of the cost table: the repository's `checkout.session.completed` fixture
/// (a real Checkout Session, ≈ 5 KB, pretty-printed as Stripe sends it), as a new top-up for
/// `tenant` (new event id and payment intent). `sluice_created`: as Sluice's
/// `POST /v1/billing/checkout-sessions` makes it, naming in `metadata.sluice_customer` the
/// customer it linked before creating the session (so the event confirms the link, not writes it).
pub fn checkout_fixture(tenant: &str, sluice_created: bool) -> anyhow::Result<Vec<u8>> {
    let path = sluice_local::repo_root()
        .join("tests/fixtures/stripe/checkout.session.completed.payment.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let mut event: Value =
        serde_json::from_slice(&sluice_local::trigger::prepare(&text, true, Some(tenant))?)?;
    let object = &mut event["data"]["object"];
    object["payment_intent"] = Value::String(sluice::ids::new_id("pi"));
    if sluice_created {
        object["metadata"][sluice::stripe::event::SLUICE_CUSTOMER_KEY] = object["customer"].clone();
    }
    Ok(serde_json::to_vec_pretty(&event)?)
}

pub async fn measure(sdk: &SdkConfig) -> anyhow::Result<Operations> {
    let s = Scenario::new(sdk, "cost").await?;
    let snap = Snapshotter::new(sdk, &s);
    let (addr, _receiver) = scenarios::start_receiver().await?;
    scenarios::add_endpoint(&s, &format!("http://{addr}/hook/0")).await?;
    let state = webhook_egress::EgressState::new(s.stack.config.clone(), s.aws.clone())?;
    let queue_arn = s.stack.resources.queue_arn.clone();
    let deliver = |messages| {
        let event = sluice_local::poller::sqs_event(messages, &queue_arn);
        let state = &state;
        async move {
            let response = webhook_egress::handle_batch(state, event).await;
            anyhow::ensure!(
                response.batch_item_failures.is_empty(),
                "the delivery failed"
            );
            Ok(())
        }
    };
    // One poller throughout (a new one would start at the stream's horizon again).
    let stream_arn = s
        .stack
        .resources
        .stream_arn
        .as_deref()
        .context("no stream")?;
    let poller = tokio::sync::Mutex::new(sluice_local::stream_poller::StreamPoller::new(
        sdk,
        "webhook-egress",
        stream_arn,
    )?);
    let relay = || async {
        let drained = poller.lock().await.drain(&state).await?;
        anyhow::ensure!(drained.failures == 0, "relaying failed: {drained:?}");
        Ok(())
    };
    // One delivery first, unmeasured: a warm egress instance has the endpoint's secret (no KMS).
    scenarios::publish(&s, 0).await?;
    relay().await?;
    deliver(s.receive_all(1).await?).await?;

    // The tenant's first checkout links its customer (unmeasured); the measured one is a top-up
    // through Sluice's checkout API, whose customer Sluice linked when it created the session.
    s.sample_http(s.stripe_request(&checkout_fixture(&s.tenant_id, false)?))
        .await?;
    relay().await?;
    deliver(s.receive_all(1).await?).await?;
    let body = checkout_fixture(&s.tenant_id, true)?;
    let new_event = measure_one(&s, &snap, s.sample_http(s.stripe_request(&body))).await?;
    let duplicate = measure_one(&s, &snap, s.sample_http(s.stripe_request(&body))).await?;
    let relay = measure_one(&s, &snap, s.sample(relay())).await?;
    let messages = s.receive_all(1).await?;
    let delivery = measure_one(&s, &snap, s.sample(deliver(messages))).await?;

    let usage = |key: &str| {
        s.tenant_request(
            "POST",
            "/v1/usage",
            Some(key),
            json!({"amount_minor": 1, "description": "bench"}),
        )
    };
    // The tenant's first write of the month opens its budget month (one more transaction):
    // done first, unmeasured, so that the measured one is an ordinary write.
    s.sample_http(usage("cost-0")).await?;
    let first_write = measure_one(&s, &snap, s.sample_http(usage("cost-1"))).await?;
    let replay = measure_one(&s, &snap, s.sample_http(usage("cost-1"))).await?;

    let event: Value = serde_json::from_slice(&body)?;
    Ok(Operations {
        new_event,
        duplicate,
        first_write,
        replay,
        relay,
        delivery,
        payload_bytes: body.len(),
        peer_event_item_bytes: item_size(&peer_event_item(&event, &body)),
    })
}

/// The item the peer's `stripe_ingress` writes for `event` (its `handler.py`: the raw payload as
/// text, always).
pub fn peer_event_item(event: &Value, raw: &[u8]) -> Item {
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let now = sluice::clock::now_epoch();
    Item::from([
        (
            "pk".into(),
            s(&format!(
                "stripe_event#{}",
                event["id"].as_str().unwrap_or("")
            )),
        ),
        ("type".into(), s(event["type"].as_str().unwrap_or(""))),
        ("created".into(), n(event["created"].as_i64().unwrap_or(0))),
        ("status".into(), s("processed")),
        (
            "tenant_id".into(),
            s(event["data"]["object"]["metadata"]["tenant_id"]
                .as_str()
                .or(event["data"]["object"]["client_reference_id"].as_str())
                .unwrap_or("")),
        ),
        ("received_at".into(), n(now)),
        ("expires_at".into(), n(now + 30 * 86_400)),
        ("payload".into(), s(&String::from_utf8_lossy(raw))),
    ])
}

// ---- pricing --------------------------------------------------------------------------------

/// One side's bill for one operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bill {
    pub wru: f64,
    pub rru: f64,
    pub sqs: f64,
    pub kms: f64,
    pub invocations: f64,
    /// API Gateway requests (the HTTP-triggered operations).
    pub http: f64,
    /// Handler CPU on one full core, ms (per operation).
    pub cpu_ms: f64,
    /// Waiting for AWS on the critical path, ms (per operation).
    pub wait_ms: f64,
}

impl Bill {
    /// Billed duration of one invocation at `mb`: CPU stretched by the vCPU share, plus the
    /// waits, rounded up to the millisecond (per invocation).
    pub fn billed_ms(&self, mb: u32) -> f64 {
        let per = self.invocations.max(1.0);
        let stretch = (FULL_VCPU_MB / f64::from(mb)).max(1.0);
        ((self.cpu_ms * stretch + self.wait_ms) / per).ceil() * per
    }

    /// Dollars per million operations at `mb`: (Lambda, DynamoDB, SQS + KMS).
    pub fn per_million(&self, mb: u32, p: &Prices) -> (f64, f64, f64) {
        let gb_s = f64::from(mb) / 1024.0 * self.billed_ms(mb) / 1000.0;
        let lambda = gb_s * p.lambda_gb_s + self.invocations * p.lambda_request;
        let dynamodb = self.wru * p.wru + self.rru * p.rru;
        let other =
            self.sqs * p.sqs_request + self.kms * p.kms_request + self.http * p.http_api_request;
        (lambda * 1e6, dynamodb * 1e6, other * 1e6)
    }

    pub fn total(&self, mb: u32, p: &Prices) -> f64 {
        let (a, b, c) = self.per_million(mb, p);
        a + b + c
    }
}

/// Sluice's bill for a measured operation, its CPU and waits from the AWS-like figures.
pub fn bill(units: &Units, figures: Option<&Figures>, invocations: f64) -> Bill {
    Bill {
        wru: units.wru,
        rru: units.rru,
        sqs: units.others.get("SQS").copied().unwrap_or(0.0),
        kms: units.others.get("KMS").copied().unwrap_or(0.0),
        invocations,
        http: 0.0,
        cpu_ms: figures.map_or(0.0, |f| f.cpu_ms),
        wait_ms: figures.map_or(0.0, |f| f.modelled_ms - f.cpu_ms),
    }
}

/// Adds two bills (parts of one operation).
pub fn add(a: &Bill, b: &Bill) -> Bill {
    Bill {
        wru: a.wru + b.wru,
        rru: a.rru + b.rru,
        sqs: a.sqs + b.sqs,
        kms: a.kms + b.kms,
        invocations: a.invocations + b.invocations,
        http: a.http + b.http,
        cpu_ms: a.cpu_ms + b.cpu_ms,
        wait_ms: a.wait_ms + b.wait_ms,
    }
}

/// The bills of both sides, per operation, with the notes a reader needs.
pub struct Table {
    pub rows: Vec<CostRow>,
    pub ops: Operations,
}

/// One operation's bills; both sides priced at the memory size of the Sluice function serving it.
pub struct CostRow {
    pub op: &'static str,
    /// The template's resource, e.g. `StripeIngressFunction`.
    pub function: &'static str,
    pub mb: u32,
    pub sluice: Bill,
    pub peer: Option<Bill>,
}

/// The operations' bills: Sluice's measured units with the AWS-like figures (`aws`: new event,
/// duplicate, first write, replay, delivery, in [`crate::aws_like`]'s order), the peer's from its
/// code's items and its figures.
pub fn table(ops: Operations, aws: &[crate::aws_like::Row]) -> anyhow::Result<Table> {
    let fig = |i: usize| aws.get(i).and_then(|r| r.sluice.as_ref().ok());
    let peer_fig = |i: usize| aws.get(i).and_then(|r| r.peer.as_ref());
    let peer = |i: usize, wru: f64| {
        peer_fig(i).map(|f| Bill {
            wru,
            invocations: 1.0,
            http: 1.0,
            cpu_ms: f.cpu_ms,
            wait_ms: f.modelled_ms - f.cpu_ms,
            ..Bill::default()
        })
    };
    // The peer's tenant item: `pk` "tenant#tnt_…" and `balance_minor`: well under 1 KB.
    let peer_new = transactional_wru(&[ops.peer_event_item_bytes, 40]);
    // Powertools' record (< 1 KB): PutItem INPROGRESS, UpdateItem of the balance, UpdateItem
    // COMPLETED with the response; a replay is the PutItem failing its condition.
    let (peer_first, peer_replay) = (3.0, 1.0);
    // The relay's invocation is one per stream batch (filter criteria let only notification
    // records through); egress one per SQS batch, plus Lambda's SQS poller's ReceiveMessage and
    // DeleteMessageBatch per batch: here batches of one, the most a delivery costs.
    // The relay's CPU is not timed alone (the local stream poller runs around it): taken as the
    // egress delivery's, per AWS request, times its own requests. Its waits: the endpoints'
    // query, the deliveries' transaction, then the SQS send, one after the other.
    let mut relay = bill(&ops.relay.units, None, 1.0);
    if let Some(f) = fig(4) {
        let relay_requests = ops.relay.sample.requests.len() as f64;
        relay.cpu_ms = f.cpu_ms / f.requests.max(1.0) * relay_requests;
    }
    relay.wait_ms = 4.0 + 4.0 + 8.0;
    let mut egress = bill(&ops.delivery.units, fig(4), 1.0);
    egress.sqs += 2.0;
    let http = |units: &Units, figures| Bill {
        http: 1.0,
        ..bill(units, figures, 1.0)
    };
    let (ingress, api, egress_fn) = (
        "StripeIngressFunction",
        "ApiFunction",
        "WebhookEgressFunction",
    );
    let rows = [
        (
            "new Stripe event (with its notification)",
            ingress,
            http(&ops.new_event.units, fig(0)),
            peer(0, peer_new),
        ),
        (
            "duplicate Stripe event (if a cancelled transaction is billed as written)",
            ingress,
            http(&ops.duplicate.units, fig(1)),
            peer(1, peer_new),
        ),
        (
            "first usage write (POST /v1/usage)",
            api,
            http(&ops.first_write.units, fig(2)),
            peer(2, peer_first),
        ),
        (
            "idempotent replay",
            api,
            http(&ops.replay.units, fig(3)),
            peer(3, peer_replay),
        ),
        (
            "delivery (outbox relay + egress, batches of one)",
            egress_fn,
            add(&relay, &egress),
            None,
        ),
    ];
    let rows = rows
        .into_iter()
        .map(|(op, function, sluice, peer)| {
            Ok(CostRow {
                op,
                function,
                mb: memory_mb(function)?,
                sluice,
                peer,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Table { rows, ops })
}

fn money(x: f64) -> String {
    format!("${x:.3}")
}

impl Table {
    /// The tables, in markdown: units per operation with every item, then dollars per million
    /// at each function's memory size, then billed duration and total at each of
    /// [`MEMORY_SIZES`].
    pub fn markdown(&self) -> String {
        let p = &PRICES;
        let mut out = format!(
            "Cost per million operations ({}; Lambda arm64 ${}/GB-s + $0.20/M requests, DynamoDB \
             on-demand $0.625/M WRU + $0.125/M RRU, SQS $0.40/M requests, KMS $3/M requests, API \
             Gateway HTTP API $1/M requests). \
             Stripe payload: the checkout.session.completed fixture, {} bytes; the peer's event \
             item for it: {} bytes.\n\n",
            p.as_of, p.lambda_gb_s, self.ops.payload_bytes, self.ops.peer_event_item_bytes
        );
        out.push_str("| operation | DynamoDB items written: bytes → write units | WRU | RRU | SQS | KMS |\n|---|---|---|---|---|---|\n");
        let parts: [(&str, &Measured); 6] = [
            ("new Stripe event", &self.ops.new_event),
            ("duplicate Stripe event", &self.ops.duplicate),
            ("first usage write", &self.ops.first_write),
            ("idempotent replay", &self.ops.replay),
            ("delivery: outbox relay", &self.ops.relay),
            ("delivery: egress", &self.ops.delivery),
        ];
        for (name, m) in parts {
            let u = &m.units;
            let items = u
                .touches
                .iter()
                .map(|t| format!("{} `{}` {} B → {}", t.action, t.key, t.bytes, t.units))
                .collect::<Vec<_>>()
                .join("; ");
            out.push_str(&format!(
                "| {name} | {items}{} | {} | {} | {} | {} |\n",
                if u.unsized_reads.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", u.unsized_reads.join(", "))
                },
                u.wru,
                u.rru,
                u.others.get("SQS").copied().unwrap_or(0.0),
                u.others.get("KMS").copied().unwrap_or(0.0),
            ));
        }
        out.push_str(
            "\n| operation (function, MemorySize) | Sluice: Lambda + DynamoDB + SQS/KMS/API Gateway = total per million | \
             peer: Lambda + DynamoDB + API Gateway = total per million | peer ÷ Sluice |\n|---|---|---|---|\n",
        );
        for CostRow {
            op,
            function,
            mb,
            sluice,
            peer,
        } in &self.rows
        {
            let (mb, op) = (*mb, format!("{op} ({function}, {mb} MB)"));
            let (a, b, c) = sluice.per_million(mb, p);
            let side = format!(
                "{} + {} + {} = **{}**",
                money(a),
                money(b),
                money(c),
                money(a + b + c)
            );
            let (peer_side, ratio) = match peer {
                Some(pb) => {
                    let (pa, pd, pc) = pb.per_million(mb, p);
                    (
                        format!(
                            "{} + {} + {} = **{}**",
                            money(pa),
                            money(pd),
                            money(pc),
                            money(pa + pd + pc)
                        ),
                        format!("{:.2}×", (pa + pd + pc) / (a + b + c)),
                    )
                }
                None => ("–".into(), "–".into()),
            };
            out.push_str(&format!("| {op} | {side} | {peer_side} | {ratio} |\n"));
        }
        out.push_str("\n| operation | CPU ms (one core) + waits ms |");
        for m in MEMORY_SIZES {
            out.push_str(&format!(" {m} MB: billed ms, $ per million |"));
        }
        out.push_str("\n|---|---|");
        for _ in MEMORY_SIZES {
            out.push_str("---|");
        }
        out.push('\n');
        for CostRow { op, sluice, .. } in &self.rows {
            out.push_str(&format!(
                "| {op} | {:.3} + {:.1} |",
                sluice.cpu_ms, sluice.wait_ms
            ));
            for m in MEMORY_SIZES {
                out.push_str(&format!(
                    " {} ms, {} |",
                    sluice.billed_ms(m),
                    money(sluice.total(m, p))
                ));
            }
            out.push('\n');
        }
        out
    }
}

/// Write units of a transaction of items of these sizes (bytes): 2 per started KB of each.
pub fn transactional_wru(sizes: &[usize]) -> f64 {
    sizes
        .iter()
        .map(|b| 2.0 * b.max(&1).div_ceil(1024) as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn items_are_sized_by_dynamodbs_rules() {
        // "pk" (2) + "TENANT#a" (8); "n" (1) + 12345 (3 digits pairs + 1 = 4); "b" (1) + true (1).
        let item = Item::from([
            ("pk".into(), s("TENANT#a")),
            ("n".into(), AttributeValue::N("12345".into())),
            ("b".into(), AttributeValue::Bool(true)),
        ]);
        assert_eq!(item_size(&item), 10 + 5 + 2);
        // Leading and trailing zeros are not significant.
        assert_eq!(number_size("1000"), 2);
        assert_eq!(number_size("-0.0012"), 2);
        // A list: 3 + per element 1 + its size.
        assert_eq!(
            value_size(&AttributeValue::L(vec![s("ab"), s("c")])),
            3 + 3 + 2
        );
        assert_eq!(
            value_size(&AttributeValue::M(HashMap::from([("k".into(), s("vv"))]))),
            3 + 1 + 1 + 2
        );
    }

    fn snapshot(items: &[Item]) -> Snapshot {
        items
            .iter()
            .map(|i| (key_of(i).unwrap(), i.clone()))
            .collect()
    }

    #[test]
    fn a_transaction_counts_every_started_kb_of_every_item_twice() {
        let big = "x".repeat(1500);
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "STRIPE#evt_1"}, "sk": {"S": "EVENT"},
                     "payload": {"S": big}}}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "TENANT#tnt_1"}, "sk": {"S": "PROFILE"}}}},
        ]});
        let tenant = Item::from([
            ("pk".into(), s("TENANT#tnt_1")),
            ("sk".into(), s("PROFILE")),
        ]);
        let mut units = Units::new();
        units.request(
            "TransactWriteItems",
            &body,
            &snapshot(std::slice::from_ref(&tenant)),
            &snapshot(&[tenant]),
        );
        // The 1.5 KB event: 2 KB × 2; the small tenant item: 1 KB × 2.
        assert_eq!(units.wru, 6.0);
        assert_eq!(units.touches[0].key, "STRIPE#evt_… / EVENT");
        assert_eq!(transactional_wru(&[1500, 30]), 6.0);
    }

    #[test]
    fn an_indexed_item_is_billed_once_more_for_its_index_entry_as_projected() {
        let body = json!({"TransactItems": [
            // gsi1 projects ALL: the outbound event's entry is the whole item.
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "TENANT#tnt_1"}, "sk": {"S": "EVENT#msg_1"},
                     "gsi1pk": {"S": "EVENTS#tnt_1"}, "data": {"S": "x".repeat(1500)}}}},
            // gsi2 projects the listing's attributes: the Stripe event's entry has no payload.
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "STRIPE#evt_1"}, "sk": {"S": "EVENT"},
                     "gsi2pk": {"S": "STRIPE_EVENTS"}, "status": {"S": "processed"},
                     "payload": {"S": "x".repeat(1500)}}}},
        ]});
        let mut units = Units::new();
        units.request("TransactWriteItems", &body, &snapshot(&[]), &snapshot(&[]));
        let actions: Vec<(&str, f64)> = units
            .touches
            .iter()
            .map(|t| (t.action.as_str(), t.units))
            .collect();
        assert_eq!(
            actions,
            [
                ("TransactWriteItems/Put", 4.0),
                ("TransactWriteItems/Put → gsi1", 2.0),
                ("TransactWriteItems/Put", 4.0),
                ("TransactWriteItems/Put → gsi2", 1.0),
            ]
        );
        let stripe_entry = &units.touches[3];
        assert!(stripe_entry.bytes < 100, "{stripe_entry:?}");
    }

    #[test]
    fn a_write_is_billed_at_the_larger_of_its_states_and_reads_by_4_kb() {
        let old = Item::from([
            ("pk".into(), s("IDEM#a")),
            ("sk".into(), s("K")),
            ("response".into(), s(&"r".repeat(3000))),
        ]);
        // A failed conditional put of a small item over a 3 KB one: 3 units.
        let body = json!({"Item": {"pk": {"S": "IDEM#a"}, "sk": {"S": "K"}}});
        let mut units = Units::new();
        let snap = snapshot(&[old]);
        units.request("PutItem", &body, &snap, &snap);
        assert_eq!(units.wru, 3.0);
        let get = json!({"Key": {"pk": {"S": "IDEM#a"}, "sk": {"S": "K"}}, "ConsistentRead": true});
        units.request("GetItem", &get, &snap, &snap);
        assert_eq!(units.rru, 1.0);
        let get = json!({"Key": {"pk": {"S": "IDEM#a"}, "sk": {"S": "K"}}});
        units.request("GetItem", &get, &snap, &snap);
        assert_eq!(units.rru, 1.5);
    }

    #[test]
    fn a_query_reads_the_matching_part_of_its_partition() {
        let item = |sk: &str| {
            Item::from([
                ("pk".into(), s("TENANT#t")),
                ("sk".into(), s(sk)),
                ("pad".into(), s(&"p".repeat(3000))),
            ])
        };
        let snap = snapshot(&[item("ENDPOINT#1"), item("ENDPOINT#2"), item("LEDGER#1")]);
        let body = json!({"KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": "TENANT#t"}, ":prefix": {"S": "ENDPOINT#"}}});
        let mut units = Units::new();
        units.request("Query", &body, &snap, &snap);
        // Two 3 KB items, eventually consistent: 2 × 4 KB blocks, halved.
        assert_eq!(units.rru, 1.0);
    }

    #[test]
    fn billed_duration_stretches_cpu_by_the_vcpu_share() {
        let b = Bill {
            invocations: 1.0,
            cpu_ms: 1.0,
            wait_ms: 4.0,
            wru: 10.0,
            ..Bill::default()
        };
        // 1769/128 = 13.8 ms of CPU + 4 ms, rounded up.
        assert_eq!(b.billed_ms(128), 18.0);
        assert_eq!(b.billed_ms(256), 11.0);
        let (lambda, dynamodb, other) = b.per_million(128, &PRICES);
        assert!((dynamodb - 6.25).abs() < 1e-9);
        assert!((lambda - (0.125 * 0.018 * 13.3334 + 0.2)).abs() < 1e-6);
        assert_eq!(other, 0.0);
    }

    #[test]
    fn memory_sizes_come_from_the_template() {
        assert_eq!(memory_mb("ApiFunction").unwrap(), 256);
        assert_eq!(memory_mb("WebhookEgressFunction").unwrap(), 128);
    }

    #[test]
    fn keys_are_shortened_to_their_kind() {
        assert_eq!(shorten("STRIPE#evt_8fa9"), "STRIPE#evt_…");
        assert_eq!(shorten("TENANT#tnt_1#x"), "TENANT#tnt_…#x");
        assert_eq!(shorten("STATS#2026-12-02T15"), "STATS#…");
        assert_eq!(shorten("EVENT"), "EVENT");
    }
}
