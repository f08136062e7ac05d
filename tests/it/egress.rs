//! Webhook egress (SPEC §6) against the local stack, with receivers on 127.0.0.1.
//!
//! Messages are produced the way production produces them (`fanout::publish`, `replay`,
//! `Deferred`), received from the test's own queue with every system attribute, handed to
//! `handle_batch` as Lambda would, and the successes deleted — the event source mapping's
//! contract. Endpoint items are written in their documented shape (`table.rs`), with secrets
//! sealed by KMS.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use axum::{
    Router,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use sluice::{
    clock,
    fanout::{self, DeliveryMessage},
    outbound::{self, Attempt},
    sealing::{SealContext, SealedEndpointSecret, Sealer, Secret},
    table::{self, Item, ItemExt},
    webhook_signature::SigningKey,
};
use sluice_local::{
    counting::CallCounter,
    poller,
    provision::StackDefinition,
    receiver::{self, Verification},
};
use tokio::net::TcpListener;
use webhook_egress::{EgressState, handle_batch, retry};

use crate::support::{Stack, emulator};

// ---------------------------------------------------------------------------------------------
// Receivers

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn verify(&self, secrets: &[&str]) -> Verification {
        let keys: Vec<SigningKey> = secrets
            .iter()
            .map(|s| SigningKey::from_secret(s).unwrap())
            .collect();
        receiver::inspect(&self.headers, &self.body, &keys, clock::now_epoch()).verification
    }
}

/// A webhook endpoint on 127.0.0.1 answering with `respond(nth request, request)`.
struct Receiver {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start<F, Fut>(respond: F) -> Receiver
    where
        F: Fn(usize, Received) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let app = Router::new().fallback(move |uri: http::Uri, headers: HeaderMap, body: Bytes| {
            let respond = respond.clone();
            let log = log.clone();
            async move {
                let request = Received {
                    path: uri.path().to_owned(),
                    headers,
                    body,
                };
                let nth = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len()
                };
                respond(nth, request).await
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, received }
    }

    /// A receiver answering every request with `status`.
    async fn answering(status: u16) -> Receiver {
        Self::start(
            move |_, _| async move { StatusCode::from_u16(status).unwrap().into_response() },
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A local port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// A tenant with endpoints, and the event source mapping

fn new_secret() -> String {
    format!(
        "whsec_{}",
        STANDARD.encode(sluice::ids::random_bytes::<32>())
    )
}

struct World {
    stack: Stack,
    tenant: String,
    egress: EgressState,
}

impl World {
    async fn new() -> World {
        Self::with_stack(Stack::new().await).await
    }

    async fn with_settings(settings: &[(&str, &str)]) -> World {
        Self::with_stack(Stack::with_settings(settings).await).await
    }

    async fn with_stack(stack: Stack) -> World {
        let (tenant, _) = stack.create_tenant("Acme").await;
        let egress = stack.egress();
        World {
            stack,
            tenant,
            egress,
        }
    }

    fn table(&self) -> &str {
        &self.stack.resources.table_name
    }

    fn db(&self) -> &aws_sdk_dynamodb::Client {
        &self.stack.aws.dynamodb
    }

    /// Writes an enabled endpoint with one signing secret; returns (id, secret).
    async fn endpoint(&self, url: &str) -> (String, String) {
        let secret = new_secret();
        let id = self.endpoint_with_secrets(url, &[(&secret, None)]).await;
        (id, secret)
    }

    /// Writes an enabled endpoint whose `secrets` list is `secrets` (newest first, each with
    /// its `expires_at`), sealed with KMS under the tenant's context.
    async fn endpoint_with_secrets(&self, url: &str, secrets: &[(&str, Option<i64>)]) -> String {
        let sealed = self.sealed_secrets(secrets).await;
        let now = clock::now_epoch();
        let id = sluice::ids::new_id("ep");
        let mut item = table::key(table::tenant_pk(&self.tenant), table::endpoint_sk(&id));
        item.insert("id".into(), table::s(&id));
        item.insert("url".into(), table::s(url));
        item.insert("event_types".into(), AttributeValue::L(Vec::new()));
        item.insert("enabled".into(), table::b(true));
        item.insert("secrets".into(), sealed);
        item.insert("created_at".into(), table::n(now));
        self.db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
        id
    }

    /// The endpoint item's `secrets` list for `secrets` (newest first, each with its
    /// `expires_at`), sealed with KMS under the tenant's context.
    async fn sealed_secrets(&self, secrets: &[(&str, Option<i64>)]) -> AttributeValue {
        let sealer = Sealer::new(
            self.stack.aws.kms.clone(),
            self.stack.config.kms_key_id.clone(),
        );
        let now = clock::now_epoch();
        let mut sealed = Vec::new();
        for (i, (secret, expires_at)) in secrets.iter().enumerate() {
            let ciphertext = sealer
                .seal_secret(
                    SealContext::endpoint_secret(&self.tenant),
                    &Secret::new(*secret),
                )
                .await
                .unwrap();
            sealed.push(
                SealedEndpointSecret {
                    ciphertext,
                    created_at: now - i as i64,
                    expires_at: *expires_at,
                }
                .to_attribute(),
            );
        }
        AttributeValue::L(sealed)
    }

    /// Rotates as `POST /v1/endpoints/{id}/rotate-secret` does: a new secret first, the old one
    /// signing beside it for 24 h. Returns the new secret.
    async fn rotate(&self, endpoint_id: &str, old: &str) -> String {
        let new = new_secret();
        let list = self
            .sealed_secrets(&[(&new, None), (old, Some(clock::now_epoch() + 86_400))])
            .await;
        self.db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(table::key(
                table::tenant_pk(&self.tenant),
                table::endpoint_sk(endpoint_id),
            )))
            .update_expression("SET secrets = :s")
            .expression_attribute_values(":s", list)
            .send()
            .await
            .unwrap();
        new
    }

    /// `POST /v1/events` as the API does it; returns the event id and its endpoints.
    async fn publish(&self, event_type: &str) -> (String, Vec<String>) {
        let (event, endpoints) = fanout::publish(
            &self.stack.aws,
            self.table(),
            &self.tenant,
            event_type,
            json!({"object": "credit", "amount_minor": 2500, "currency": "usd"}),
        )
        .await
        .unwrap();
        // The outbox relay (the stream consumer) sends the Deliver messages after the commit.
        self.stack.relay_outbox().await;
        (event.id.into_string(), endpoints)
    }

    async fn replay(&self, event_id: &str, endpoint_id: Option<&str>) {
        sluice::replay::replay(
            &self.stack.aws.dynamodb,
            self.table(),
            &self.tenant,
            event_id,
            endpoint_id,
        )
        .await
        .unwrap();
        // The outbox relay sends the replay's Deliver messages after its commit.
        self.stack.relay_outbox().await;
    }

    /// Receives until `n` messages are in hand (or a few empty long polls), with every system
    /// attribute, as the event source mapping does.
    async fn receive(&self, n: usize) -> SqsEvent {
        self.receive_from(&self.stack.resources.queue_url, n, None)
            .await
    }

    async fn receive_from(&self, queue_url: &str, n: usize, visibility: Option<i32>) -> SqsEvent {
        let mut messages = Vec::new();
        let mut empty_polls = 0;
        while messages.len() < n && empty_polls < 8 {
            let out = self
                .stack
                .aws
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages((n - messages.len()).min(10) as i32)
                .wait_time_seconds(2)
                .set_visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                empty_polls += 1;
            }
            messages.extend(got);
        }
        poller::sqs_event(messages, &self.stack.resources.queue_arn)
    }

    /// One invocation: `handle_batch`, then the successes deleted (failures stay on the queue).
    async fn invoke(&self, event: SqsEvent) -> SqsBatchResponse {
        let records = event.records.clone();
        let response = handle_batch(&self.egress, event).await;
        let failed: Vec<&str> = failures(&response);
        let entries: Vec<_> = records
            .iter()
            .filter(|r| !failed.contains(&r.message_id.as_deref().unwrap()))
            .filter_map(|r| r.receipt_handle.clone())
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .unwrap()
            })
            .collect();
        if !entries.is_empty() {
            self.stack
                .aws
                .sqs
                .delete_message_batch()
                .queue_url(&self.stack.resources.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
        }
        response
    }

    /// Receives `n` messages and invokes the function with them.
    async fn run(&self, n: usize) -> SqsBatchResponse {
        let event = self.receive(n).await;
        assert_eq!(event.records.len(), n, "messages on the queue");
        self.invoke(event).await
    }

    async fn item(&self, sk: String) -> Item {
        self.db()
            .get_item()
            .table_name(self.table())
            .set_key(Some(table::key(table::tenant_pk(&self.tenant), sk)))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .expect("item exists")
    }

    async fn delivery(&self, event_id: &str, endpoint_id: &str) -> Item {
        self.item(table::delivery_sk(event_id, endpoint_id)).await
    }

    async fn endpoint_item(&self, endpoint_id: &str) -> Item {
        self.item(table::endpoint_sk(endpoint_id)).await
    }

    /// Re-enables an endpoint as `PATCH /v1/endpoints/{id} {enabled: true}` does.
    async fn re_enable(&self, endpoint_id: &str) {
        self.db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(table::key(
                table::tenant_pk(&self.tenant),
                table::endpoint_sk(endpoint_id),
            )))
            .update_expression("SET enabled = :t REMOVE failing_since, disabled_reason")
            .expression_attribute_values(":t", table::b(true))
            .send()
            .await
            .unwrap();
    }

    /// True if no message of the queue is visible now.
    async fn queue_is_quiet(&self) -> bool {
        let out = self
            .stack
            .aws
            .sqs
            .receive_message()
            .queue_url(&self.stack.resources.queue_url)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        out.messages.unwrap_or_default().is_empty()
    }
}

fn failures(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

fn attempts(delivery: &Item) -> Vec<Attempt> {
    outbound::attempts_of(delivery)
}

fn status(delivery: &Item) -> &str {
    delivery.get_s("status").unwrap()
}

fn message_id_for(event: &SqsEvent, endpoint_id: &str) -> String {
    event
        .records
        .iter()
        .find(|r| r.body.as_deref().unwrap().contains(endpoint_id))
        .and_then(|r| r.message_id.clone())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_retry_budget_matches_the_queue_redrive_policy_and_the_policy_allows_what_egress_calls() {
    let def = StackDefinition::from_template().unwrap();
    assert_eq!(i64::from(retry::MAX_ATTEMPTS), def.max_receive_count);
    let template = sluice_local::provision::TEMPLATE_YAML;
    let start = template.find("  WebhookEgressFunction:").unwrap();
    let block = &template[start..];
    let block = &block[..block[3..].find("\n  Alarm").map_or(block.len(), |i| i + 3)];
    for action in [
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "kms:Decrypt",
        "ReportBatchItemFailures",
    ] {
        assert!(block.contains(action), "egress policy allows {action}");
    }
}

#[test]
fn the_egress_timeout_parameter_lease_function_timeout_and_visibility_are_consistent() {
    use sluice::config::{EGRESS_BOOKKEEPING, EGRESS_FUNCTION_TIMEOUT, EGRESS_TIMEOUT_MAX};
    let doc: serde_yaml::Value =
        serde_yaml::from_str(sluice_local::provision::TEMPLATE_YAML).unwrap();
    let int = |path: &[&str]| {
        let mut v = &doc;
        for p in path {
            v = &v[*p];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("{} is an integer", path.join(".")))
    };
    let max_timeout = int(&["Parameters", "EgressTimeoutSecs", "MaxValue"]);
    let function_timeout = int(&[
        "Resources",
        "WebhookEgressFunction",
        "Properties",
        "Timeout",
    ]);
    let visibility = int(&[
        "Resources",
        "DeliveryQueue",
        "Properties",
        "VisibilityTimeout",
    ]);
    // The parameter can only hold what start-up accepts …
    assert_eq!(max_timeout, EGRESS_TIMEOUT_MAX.as_secs());
    assert!(int(&["Parameters", "EgressTimeoutSecs", "Default"]) <= max_timeout);
    // … which leaves the bookkeeping within the function's timeout, so the longest lease ends
    // with the invocation, before the message can come back.
    assert_eq!(function_timeout, EGRESS_FUNCTION_TIMEOUT.as_secs());
    assert!(max_timeout + EGRESS_BOOKKEEPING.as_secs() <= function_timeout);
    assert!(function_timeout <= visibility);
}

#[tokio::test]
async fn an_invocation_without_time_left_sends_nothing_and_leaves_the_message_for_later() {
    // GIVEN a pending delivery and an invocation whose deadline is 2 s away (less than the
    // time kept to record an attempt)
    let world = World::new().await;
    let receiver = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("invoice.paid").await;
    let event = world.receive(1).await;
    let mut context = lambda_runtime::Context::default();
    context.deadline = (clock::now_epoch_millis() + 2_000) as u64;

    // WHEN the function handles it
    let response = webhook_egress::handle_invocation(
        &world.egress,
        lambda_runtime::LambdaEvent::new(event, context),
    )
    .await;

    // THEN nothing was sent, no attempt is logged and the message is reported to come back
    assert_eq!(failures(&response).len(), 1);
    assert!(receiver.requests().is_empty());
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "pending");
    assert!(attempts(&delivery).is_empty());
}

#[tokio::test]
async fn deliveries_follow_standard_webhooks_and_verify_with_every_active_secret() {
    // GIVEN an endpoint mid-rotation: a new secret, the old one still inside its 24 h, and an
    // older one already expired. The old one is a Standard Webhooks test-vector secret.
    let world = World::new().await;
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            sluice_local::repo_root().join("tests/fixtures/signature-vectors.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let vector = &vectors["standard_webhooks"][0];
    let vector_secret = vector["secret"].as_str().unwrap();
    // The signer egress uses agrees with the vector.
    let key = SigningKey::from_secret(vector_secret).unwrap();
    assert_eq!(
        sluice::webhook_signature::sign(
            std::slice::from_ref(&key),
            vector["msg_id"].as_str().unwrap(),
            vector["timestamp"].as_i64().unwrap(),
            vector["payload"].as_str().unwrap().as_bytes(),
        ),
        vector["signature"].as_str().unwrap()
    );
    let (new, expired) = (new_secret(), new_secret());
    let now = clock::now_epoch();
    let receiver = Receiver::answering(200).await;
    let ep = world
        .endpoint_with_secrets(
            &receiver.url("/hooks/sluice"),
            &[
                (&new, None),
                (vector_secret, Some(now + 86_400)),
                (&expired, Some(now - 1)),
            ],
        )
        .await;

    // WHEN an event is published and the function runs
    let (event_id, endpoints) = world.publish("credits.added").await;
    assert_eq!(endpoints, vec![ep.clone()]);
    let response = world.run(1).await;

    // THEN the endpoint got one Standard Webhooks request
    assert!(failures(&response).is_empty());
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/hooks/sluice");
    assert_eq!(req.header("webhook-id"), event_id);
    assert!((req.header("webhook-timestamp").parse::<i64>().unwrap() - now).abs() < 60);
    assert_eq!(req.header("content-type"), "application/json");
    assert!(req.header("user-agent").starts_with("Sluice-Webhooks/"));
    let body = req.json();
    assert_eq!(body["type"], "credits.added");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["amount_minor"], 2500);
    // … signed with both active secrets, each verifying on its own; the expired one is gone.
    let signatures: Vec<&str> = req.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    assert_eq!(req.verify(&[&new]), Verification::Verified);
    assert_eq!(req.verify(&[vector_secret]), Verification::Verified);
    assert!(matches!(req.verify(&[&expired]), Verification::Invalid(_)));
    assert!(matches!(
        req.verify(&[&new_secret()]),
        Verification::Invalid(_)
    ));

    // … and the attempt is logged on the delivery.
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "succeeded");
    assert_eq!(delivery.get_i64("succeeded_generation"), Some(1));
    assert!(!delivery.contains_key("lease_id"), "the lease is released");
    let log = attempts(&delivery);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status_code, Some(200));
    assert_eq!(log[0].attempt, 1);
    assert_eq!(log[0].error, None);
    assert!(world.queue_is_quiet().await, "the message was deleted");
}

#[tokio::test]
async fn a_batch_of_ten_is_sent_concurrently_and_only_the_failure_is_reported() {
    // GIVEN ten endpoints, one of which answers only once the nine others' deliveries are
    // recorded as succeeded — a sequential sender would wait on it until its timeout.
    let world = World::with_settings(&[("EGRESS_TIMEOUT_SECS", "30")]).await;
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let (db, table, tenant) = (
        world.db().clone(),
        world.table().to_owned(),
        world.tenant.clone(),
    );
    let log = order.clone();
    let receiver = Receiver::start(move |_, req| {
        let (db, table, tenant, log) = (db.clone(), table.clone(), tenant.clone(), log.clone());
        async move {
            if req.path != "/slow" {
                log.lock().unwrap().push(format!("received {}", req.path));
                return StatusCode::OK.into_response();
            }
            let event_id = req.header("webhook-id").to_owned();
            for _ in 0..150 {
                let deliveries = fanout::deliveries_of(&db, &table, &tenant, &event_id)
                    .await
                    .unwrap();
                let done = deliveries
                    .values()
                    .filter(|d| d.get_s("status") == Some("succeeded"))
                    .count();
                if done == 9 {
                    log.lock().unwrap().push("slow answered".into());
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            log.lock().unwrap().push("slow gave up waiting".into());
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    })
    .await;
    let slow = world.endpoint(&receiver.url("/slow")).await.0;
    let mut fast = Vec::new();
    for i in 0..9 {
        fast.push(world.endpoint(&receiver.url(&format!("/fast{i}"))).await.0);
    }
    let (event_id, endpoints) = world.publish("payment.succeeded").await;
    assert_eq!(endpoints.len(), 10);

    // WHEN the ten messages arrive in one batch, the slow endpoint's first
    let mut event = world.receive(10).await;
    assert_eq!(event.records.len(), 10);
    let slow_message = message_id_for(&event, &slow);
    event
        .records
        .sort_by_key(|r| r.message_id.as_deref() != Some(slow_message.as_str()));
    let response = world.invoke(event).await;

    // THEN the batch completed with exactly the slow endpoint's message reported …
    assert_eq!(failures(&response), vec![slow_message.as_str()]);
    // … the nine were received and recorded before the slow one answered …
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 10, "{order:?}");
    assert_eq!(order.last().unwrap(), "slow answered", "{order:?}");
    for ep in &fast {
        assert_eq!(status(&world.delivery(&event_id, ep).await), "succeeded");
    }
    // … and the slow one's attempt is its 503, not a timeout.
    let slow_delivery = world.delivery(&event_id, &slow).await;
    assert_eq!(status(&slow_delivery), "pending");
    assert_eq!(attempts(&slow_delivery)[0].status_code, Some(503));
}

#[tokio::test]
async fn a_500_is_retried_after_the_scheduled_delay_and_the_success_ends_the_streak() {
    // GIVEN an endpoint that fails once, and an egress function with a seeded jitter source
    let mut world = World::new().await;
    world.egress = world
        .egress
        .clone()
        .with_retry_policy(retry::RetryPolicy::seeded(5));
    let expected = match retry::RetryPolicy::seeded(5).after_failure(1, None) {
        retry::Next::RetryAfter(d) => d,
        other => panic!("{other:?}"),
    };
    let receiver = Receiver::start(|nth, _| async move {
        if nth == 1 {
            (StatusCode::INTERNAL_SERVER_ERROR, "database is down").into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    })
    .await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("payment.failed").await;

    // WHEN the first attempt gets a 500
    let first = world.receive(1).await;
    let message_id = first.records[0].message_id.clone().unwrap();
    let response = world.invoke(first).await;

    // THEN the message is reported, pending, due after the schedule's first (jittered) delay
    assert_eq!(failures(&response), vec![message_id.as_str()]);
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "pending");
    let log = attempts(&delivery);
    assert_eq!(log[0].status_code, Some(500));
    assert_eq!(log[0].response, "database is down");
    assert_eq!(
        delivery.get_i64("next_attempt_at"),
        Some(log[0].at + expected.as_secs() as i64)
    );
    assert!((4..=6).contains(&expected.as_secs()), "{expected:?}");
    assert!(
        world
            .endpoint_item(&ep)
            .await
            .get_i64("failing_since")
            .is_some(),
        "the failure streak started"
    );
    // … and hidden until then.
    assert!(world.queue_is_quiet().await);

    // WHEN it comes back (after the delay) and the endpoint answers 204
    let second = world.receive(1).await;
    assert_eq!(second.records.len(), 1);
    assert_eq!(
        second.records[0].message_id.as_deref(),
        Some(message_id.as_str())
    );
    let response = world.invoke(second).await;

    // THEN the second attempt succeeded and the streak is over
    assert!(failures(&response).is_empty());
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "succeeded");
    let log = attempts(&delivery);
    assert_eq!(
        log.iter()
            .map(|a| (a.attempt, a.status_code))
            .collect::<Vec<_>>(),
        vec![(1, Some(500)), (2, Some(204))]
    );
    assert_eq!(delivery.get_i64("attempt_count"), Some(2));
    assert!(!delivery.contains_key("next_attempt_at"));
    assert!(!world.endpoint_item(&ep).await.contains_key("failing_since"));
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn retry_after_on_429_and_503_lengthens_the_delay_but_never_below_the_schedule() {
    // GIVEN an endpoint answering 429 `Retry-After: 1`, then 503 with an absurd Retry-After,
    // and an egress function with a seeded jitter source
    let mut world = World::new().await;
    world.egress = world
        .egress
        .clone()
        .with_retry_policy(retry::RetryPolicy::seeded(9));
    let scheduled = match retry::RetryPolicy::seeded(9).after_failure(1, None) {
        retry::Next::RetryAfter(d) => d,
        other => panic!("{other:?}"),
    };
    let receiver = Receiver::start(|nth, _| async move {
        match nth {
            1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "9999999")],
            )
                .into_response(),
        }
    })
    .await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("invoice.uncollectible").await;

    // WHEN the 429 asks to come back after 1 s
    let response = world.run(1).await;

    // THEN the schedule's first step (5 s ± jitter) still applies: 1 s would let an endpoint
    // burn all nine attempts within seconds
    assert_eq!(failures(&response).len(), 1);
    let delivery = world.delivery(&event_id, &ep).await;
    let at = attempts(&delivery)[0].at;
    assert_eq!(attempts(&delivery)[0].status_code, Some(429));
    assert!(scheduled >= Duration::from_secs(4));
    assert_eq!(
        delivery.get_i64("next_attempt_at"),
        Some(at + scheduled.as_secs() as i64)
    );

    // WHEN the message comes back (after those few seconds) and the 503 asks for more than SQS
    // can hold
    let response = world.run(1).await;

    // THEN it is honoured up to the cap
    assert_eq!(failures(&response).len(), 1);
    let delivery = world.delivery(&event_id, &ep).await;
    let last = attempts(&delivery).pop().unwrap();
    assert_eq!(last.status_code, Some(503));
    assert_eq!(
        delivery.get_i64("next_attempt_at"),
        Some(last.at + retry::RETRY_AFTER_MAX.as_secs() as i64)
    );
    assert!(world.queue_is_quiet().await);
}

#[tokio::test]
async fn timeouts_connection_refusals_and_blocked_addresses_are_retried() {
    // GIVEN a 1 s timeout, an endpoint slower than that and one nobody listens on
    let world = World::with_settings(&[("EGRESS_TIMEOUT_SECS", "1")]).await;
    let receiver = Receiver::start(|_, _| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (slow, _) = world.endpoint(&receiver.url("/slow")).await;
    let (refused, _) = world
        .endpoint(&format!("http://127.0.0.1:{}/", closed_port().await))
        .await;
    let (event_id, _) = world.publish("subscription.updated").await;

    let response = world.run(2).await;

    // THEN both are reported and pending, their attempts naming the error class
    assert_eq!(failures(&response).len(), 2);
    for (ep, class) in [(&slow, "timeout"), (&refused, "connect")] {
        let delivery = world.delivery(&event_id, ep).await;
        assert_eq!(status(&delivery), "pending");
        let log = attempts(&delivery);
        assert_eq!(log[0].error.as_deref(), Some(class));
        assert_eq!(log[0].status_code, None);
        assert!(delivery.get_i64("next_attempt_at").is_some());
    }
}

#[tokio::test]
async fn addresses_are_checked_again_at_connect_time() {
    // GIVEN a deployment without the local loopback allowance, and endpoints that point at
    // loopback: by name (as after a DNS rebinding) and by literal.
    let world = World::with_settings(&[("EGRESS_ALLOW_CIDRS", "")]).await;
    let receiver = Receiver::answering(200).await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    let (by_name, _) = world
        .endpoint(&format!("http://localhost:{port}/hook"))
        .await;
    let (by_literal, _) = world.endpoint(&receiver.url("/hook")).await;
    let (event_id, _) = world.publish("payment.succeeded").await;

    let response = world.run(2).await;

    // THEN nothing reached the receiver and each attempt says why
    assert_eq!(failures(&response).len(), 2);
    assert!(receiver.requests().is_empty());
    for (ep, class) in [(&by_name, "dns_blocked"), (&by_literal, "address_blocked")] {
        let log = attempts(&world.delivery(&event_id, ep).await);
        assert_eq!(log[0].error.as_deref(), Some(class));
    }
}

#[tokio::test]
async fn a_410_disables_the_endpoint_which_then_gets_nothing_until_re_enabled_and_replayed() {
    let world = World::new().await;
    let receiver = Receiver::start(|nth, _| async move {
        if nth == 1 {
            StatusCode::GONE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("subscription.canceled").await;

    // WHEN the endpoint answers 410
    let response = world.run(1).await;

    // THEN it is disabled at once, the delivery failed and the message is done with
    assert!(failures(&response).is_empty());
    let endpoint = world.endpoint_item(&ep).await;
    assert_eq!(endpoint.get_bool("enabled"), Some(false));
    assert!(endpoint.get_s("disabled_reason").unwrap().contains("410"));
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "failed");
    assert_eq!(attempts(&delivery)[0].status_code, Some(410));

    // WHEN the event is replayed while the endpoint is disabled
    world.replay(&event_id, Some(&ep)).await;
    let response = world.run(1).await;

    // THEN nothing is sent
    assert!(failures(&response).is_empty());
    assert_eq!(receiver.requests().len(), 1);
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "endpoint_disabled");
    assert_eq!(attempts(&delivery).len(), 1);

    // WHEN it is re-enabled and the event replayed
    world.re_enable(&ep).await;
    world.replay(&event_id, None).await;
    let response = world.run(1).await;

    // THEN it is delivered under the new generation
    assert!(failures(&response).is_empty());
    assert_eq!(receiver.requests().len(), 2);
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "succeeded");
    let log = attempts(&delivery);
    assert_eq!(
        log.iter()
            .map(|a| (a.generation, a.status_code))
            .collect::<Vec<_>>(),
        vec![(1, Some(410)), (3, Some(200))]
    );
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_the_configured_hours_is_disabled() {
    let world = World::with_settings(&[("EGRESS_DISABLE_AFTER_HOURS", "72")]).await;
    let receiver = Receiver::answering(500).await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (recent, _) = world.endpoint(&receiver.url("/recent")).await;
    // One endpoint has failed for 73 hours, the other for 71.
    for (id, hours) in [(&ep, 73), (&recent, 71)] {
        world
            .db()
            .update_item()
            .table_name(world.table())
            .set_key(Some(table::key(
                table::tenant_pk(&world.tenant),
                table::endpoint_sk(id),
            )))
            .update_expression("SET failing_since = :t")
            .expression_attribute_values(":t", table::n(clock::now_epoch() - hours * 3600))
            .send()
            .await
            .unwrap();
    }
    let (event_id, _) = world.publish("payment.failed").await;

    let event = world.receive(2).await;
    let recent_message = message_id_for(&event, &recent);
    let response = world.invoke(event).await;

    // THEN the 73 h one is disabled (its delivery failed, its message done); the other retries.
    assert_eq!(failures(&response), vec![recent_message.as_str()]);
    let endpoint = world.endpoint_item(&ep).await;
    assert_eq!(endpoint.get_bool("enabled"), Some(false));
    assert!(
        endpoint
            .get_s("disabled_reason")
            .unwrap()
            .contains("72 hours")
    );
    assert_eq!(status(&world.delivery(&event_id, &ep).await), "failed");
    assert_eq!(
        world.endpoint_item(&recent).await.get_bool("enabled"),
        Some(true)
    );
    assert_eq!(status(&world.delivery(&event_id, &recent).await), "pending");
}

#[tokio::test]
async fn the_last_failure_marks_the_delivery_failed_and_the_message_lands_in_the_dlq() {
    let world = World::new().await;
    let receiver = Receiver::answering(500).await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("payment.failed").await;

    // GIVEN the message has been received eight times already (its earlier attempts)
    for _ in 1..retry::MAX_ATTEMPTS {
        let seen = world
            .receive_from(&world.stack.resources.queue_url, 1, Some(0))
            .await;
        assert_eq!(seen.records.len(), 1);
    }

    // WHEN the ninth attempt fails too
    let event = world.receive(1).await;
    assert_eq!(
        event.records[0].attributes["ApproximateReceiveCount"],
        retry::MAX_ATTEMPTS.to_string()
    );
    let response = world.invoke(event).await;

    // THEN the delivery is failed (replayable), the message reported …
    assert_eq!(failures(&response).len(), 1);
    let delivery = world.delivery(&event_id, &ep).await;
    assert_eq!(status(&delivery), "failed");
    assert!(!delivery.contains_key("next_attempt_at"));
    assert_eq!(attempts(&delivery)[0].attempt, retry::MAX_ATTEMPTS);
    // … and the queue's redrive policy moves it to the dead-letter queue.
    assert!(world.queue_is_quiet().await);
    let dlq = world
        .receive_from(&world.stack.resources.dlq_url, 1, None)
        .await;
    assert_eq!(dlq.records.len(), 1);
    assert!(dlq.records[0].body.as_deref().unwrap().contains(&event_id));

    // A replay after exhaustion delivers again.
    world.replay(&event_id, Some(&ep)).await;
    world.run(1).await;
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_message_delivered_again_after_a_success_is_not_sent_again() {
    let world = World::new().await;
    let receiver = Receiver::start(|_, _| async {
        // Slow enough that concurrent copies overlap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (ep, _) = world.endpoint(&receiver.url("/")).await;
    let (event_id, _) = world.publish("credits.added").await;

    // WHEN the same SQS message is handled, then handled again (a redelivery)
    let event = world.receive(1).await;
    assert!(failures(&handle_batch(&world.egress, event.clone()).await).is_empty());
    let again = handle_batch(&world.egress, event).await;

    // THEN one request reached the receiver and the redelivery is simply done
    assert!(failures(&again).is_empty());
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(attempts(&world.delivery(&event_id, &ep).await).len(), 1);

    // WHEN two copies of one message are handled concurrently (SQS is at-least-once)
    let (second_event, _) = world.publish("credits.added").await;
    let mut event = world.receive(1).await;
    let mut copy: SqsMessage = event.records[0].clone();
    copy.message_id = Some("copy-of-the-message".into());
    copy.receipt_handle = None;
    event.records.push(copy);
    handle_batch(&world.egress, event).await;

    // THEN one of them sent it
    let for_second: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.header("webhook-id") == second_event)
        .collect();
    assert_eq!(for_second.len(), 1);

    // WHEN a replay supersedes a message still on the queue
    world.replay(&second_event, None).await;
    let stale = DeliveryMessage::Deliver {
        tenant_id: world.tenant.clone(),
        event_id: second_event.clone(),
        endpoint_id: ep.clone(),
        generation: 1,
    };
    let response = handle_batch(&world.egress, synthetic(&[("stale", &stale.to_body(), 0)])).await;
    // THEN the stale generation sends nothing; the replay's message does.
    assert!(failures(&response).is_empty());
    world.run(1).await;
    let for_second = receiver
        .requests()
        .into_iter()
        .filter(|r| r.header("webhook-id") == second_event)
        .count();
    assert_eq!(for_second, 2);
}

/// Records as SQS would hand them over, without a receipt handle (never on the queue);
/// `(id, body, sent seconds ago)`.
fn synthetic(records: &[(&str, &str, i64)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for (id, body, age) in records {
        let mut r = SqsMessage::default();
        r.message_id = Some((*id).to_owned());
        r.body = Some((*body).to_owned());
        r.attributes.insert(
            "SentTimestamp".into(),
            (clock::now_epoch_millis() - age * 1000).to_string(),
        );
        r.attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        event.records.push(r);
    }
    event
}

#[tokio::test]
async fn malformed_messages_fail_alone_and_a_deliver_without_its_item_is_dropped() {
    let world = World::new().await;
    let deliver = |event: &str| {
        DeliveryMessage::Deliver {
            tenant_id: world.tenant.clone(),
            event_id: event.to_owned(),
            endpoint_id: "ep_nothere".into(),
            generation: 1,
        }
        .to_body()
    };
    let response = handle_batch(
        &world.egress,
        synthetic(&[
            ("garbage", "{not json", 0),
            ("unknown-kind", r#"{"kind":"teleport"}"#, 0),
            // Never sent by Sluice (the outbox writes the item first): dropped at once.
            ("no-item", &deliver("msg_gone"), 1),
            // Fan-out is the stream consumer's: a `fanout` message is malformed now.
            (
                "fanout",
                r#"{"kind":"fanout","tenant_id":"t","event_id":"msg_x"}"#,
                0,
            ),
        ]),
    )
    .await;
    let mut failed = failures(&response);
    failed.sort();
    // Malformed bodies come back until the redrive policy parks them in the DLQ; a message
    // without its delivery item is done (there are no orphans to wait for any more).
    assert_eq!(failed, vec!["fanout", "garbage", "unknown-kind"]);
    // No delivery item was created as a side effect.
    let items = world
        .db()
        .query()
        .table_name(world.table())
        .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
        .expression_attribute_values(":pk", table::s(table::tenant_pk(&world.tenant)))
        .expression_attribute_values(":d", table::s("DELIVERY#"))
        .send()
        .await
        .unwrap();
    assert_eq!(items.count(), 0);
}

#[tokio::test]
async fn a_deferred_event_is_fanned_out_then_delivered() {
    let world = World::new().await;
    let receiver = Receiver::answering(200).await;
    let (ep, secret) = world.endpoint(&receiver.url("/")).await;

    // GIVEN an event published the deferred way (as Stripe ingress does)
    let deferred = fanout::Deferred::new(&world.tenant, "budget.warning", json!({"used": 80}));
    world
        .db()
        .transact_write_items()
        .transact_items(deferred.transact_item(world.table()))
        .send()
        .await
        .unwrap();

    // WHEN the function relays it from the table's stream, then handles the delivery it sent
    assert_eq!(world.stack.relay_outbox().await.failures, 0);
    assert!(failures(&world.run(1).await).is_empty());

    // THEN the endpoint got a verifiable webhook
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].verify(&[&secret]), Verification::Verified);
    assert_eq!(got[0].json()["type"], "budget.warning");
    assert_eq!(
        status(&world.delivery(&deferred.event.id, &ep).await),
        "succeeded"
    );
}

#[tokio::test]
async fn a_warm_delivery_makes_no_kms_call() {
    // GIVEN an egress function whose SDK clients count their calls
    let calls = CallCounter::new();
    let aws = calls.clients(&emulator().sdk_config().await);
    let world = World::with_stack(Stack::with_clients(aws, &[]).await).await;
    let receiver = Receiver::answering(200).await;
    let (ep, secret) = world.endpoint(&receiver.url("/")).await;

    // WHEN a first (cold) and a second (warm) event are delivered
    world.publish("credits.added").await;
    let event = world.receive(1).await;
    calls.reset();
    world.invoke(event).await;
    assert_eq!(
        calls.operations("KMS"),
        vec!["Decrypt"],
        "the cold delivery decrypts"
    );

    let (second, _) = world.publish("credits.added").await;
    let event = world.receive(1).await;
    calls.reset();
    let response = handle_batch(&world.egress, event).await;

    // THEN the warm one made no KMS call at all, and four DynamoDB requests: the claim and the
    // endpoint+event read (together), the attempt record and the hourly counter.
    assert!(failures(&response).is_empty());
    assert_eq!(calls.count("KMS"), 0);
    let mut dynamodb = calls.operations("DynamoDB");
    dynamodb.sort();
    assert_eq!(
        dynamodb,
        vec!["BatchGetItem", "UpdateItem", "UpdateItem", "UpdateItem"]
    );
    assert_eq!(
        receiver.requests()[1].verify(&[&secret]),
        Verification::Verified
    );
    assert_eq!(status(&world.delivery(&second, &ep).await), "succeeded");

    // WHEN the secret is rotated (within the cache's lifetime)
    let rotated = world.rotate(&ep, &secret).await;
    world.publish("credits.added").await;
    let event = world.receive(1).await;
    calls.reset();
    world.invoke(event).await;

    // THEN the very next delivery decrypts the new list and signs with both secrets.
    assert_eq!(calls.operations("KMS"), vec!["Decrypt", "Decrypt"]);
    let third = &receiver.requests()[2];
    assert_eq!(third.verify(&[&rotated]), Verification::Verified);
    assert_eq!(third.verify(&[&secret]), Verification::Verified);
}

/// Reads lines of a child's stdout until one satisfies `want` (or `secs` pass).
async fn line_matching(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    secs: u64,
    want: impl Fn(&str) -> bool,
) -> String {
    let search = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if want(&line) {
                return line;
            }
        }
        panic!("the process ended without printing the expected line");
    };
    tokio::time::timeout(Duration::from_secs(secs), search)
        .await
        .expect("the expected line within the time limit")
}

#[tokio::test]
async fn end_to_end_a_signed_stripe_event_in_a_verified_tenant_webhook_out() {
    use tokio::{io::AsyncBufReadExt, process::Command};

    // GIVEN the local runner (`make dev`) with its own emulator
    let exe = env!("CARGO_BIN_EXE_sluice-local");
    let port = sluice_local::emulator::free_port().unwrap();
    let aws_port = sluice_local::emulator::free_port().unwrap();
    let receiver_port = sluice_local::emulator::free_port().unwrap();
    let admin_key = "local-admin-key-for-the-egress-test";
    let stripe_secret = sluice_local::dev::generate_stripe_secret();
    let mut dev = Command::new(exe)
        .arg("dev")
        .env("SLUICE_PORT", port.to_string())
        .env("SLUICE_AWS_PORT", aws_port.to_string())
        .env("SLUICE_ADMIN_KEY", admin_key)
        .env("STRIPE_WEBHOOK_SECRETS", &stripe_secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut dev_out = tokio::io::BufReader::new(dev.stdout.take().unwrap()).lines();
    line_matching(&mut dev_out, 120, |l| l.starts_with("Ctrl-C")).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::support::http_client();

    // … a tenant with an endpoint pointing at `sluice-local receive` (`make receive`)
    let tenant: Value = http
        .post(format!("{base}/admin/tenants"))
        .header("x-admin-key", admin_key)
        .json(&json!({"name": "End to end"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (tenant_id, key) = (
        tenant["id"].as_str().unwrap().to_owned(),
        tenant["api_key"].as_str().unwrap().to_owned(),
    );
    let created = http
        .post(format!("{base}/v1/endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": format!("http://127.0.0.1:{receiver_port}/hook")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let mut receiver = Command::new(exe)
        .args([
            "receive",
            "--port",
            &receiver_port.to_string(),
            "--secret",
            &secret,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut received = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    line_matching(&mut received, 30, |l| l.starts_with("Receiving")).await;

    // WHEN a signed Stripe checkout for that tenant comes in (`make trigger`)
    let fixture = sluice_local::repo_root()
        .join("tests/fixtures/stripe/checkout.session.completed.payment.json");
    let out = Command::new(exe)
        .args(["trigger", "--fresh", "--tenant", &tenant_id])
        .arg(&fixture)
        .env("STRIPE_WEBHOOK_SECRETS", &stripe_secret)
        .env("SLUICE_PORT", port.to_string())
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("200 ") && printed.contains("processed"),
        "{printed}"
    );

    // THEN the receiver gets the tenant's `credits.added` webhook and its signature verifies …
    let line = line_matching(&mut received, 60, |l| l.contains("credits.added")).await;
    assert!(line.ends_with("signature verified"), "{line}");
    let event_id = line.split_whitespace().next().unwrap().to_owned();
    assert!(event_id.starts_with("msg_"), "{line}");

    // … and the attempt is visible through the API.
    let mut shown = Value::Null;
    for _ in 0..50 {
        shown = http
            .get(format!("{base}/v1/events/{event_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if shown["deliveries"][0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown["type"], "credits.added", "{shown}");
    let delivery = &shown["deliveries"][0];
    assert_eq!(delivery["status"], "succeeded", "{shown}");
    assert_eq!(delivery["endpoint_id"], endpoint["id"]);
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["status_code"], 204, "{shown}");
    assert!(attempt["duration_ms"].is_number());

    // The runner stops cleanly on SIGTERM, as on Ctrl-C.
    let _ = receiver.kill().await;
    let pid = dev.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    assert!(dev.wait().await.unwrap().success());
}

/// Issue 14: the outbox consumer is down while a Stripe event with a notification and a
/// `POST /v1/events` commit; restarted from its checkpoint it relays both, and when it crashes
/// again before saving its checkpoint (so the same stream records come again) nothing is
/// delivered twice.
#[tokio::test]
async fn a_consumer_that_crashes_after_the_commit_loses_nothing_and_sends_nothing_twice() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Crashy Co").await;
    let receiver = Receiver::answering(200).await;
    let res = stack
        .send(
            crate::support::Req::post("/v1/endpoints")
                .bearer(&key)
                .json(&json!({"url": receiver.url("/hook")})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    // The consumer stops here.
    let stopped = stack.outbox_checkpoint();

    crate::stripe_ingress::deliver_ok(
        &stack,
        crate::stripe_ingress::fixture("payment_intent.succeeded.credits", &tenant),
        "processed",
    )
    .await;
    let res = stack
        .send(
            crate::support::Req::post("/v1/events")
                .bearer(&key)
                .json(&json!({"type": "invoice.paid", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    assert!(stack.queued_messages().await.is_empty(), "nothing sent yet");

    // Restarted from its checkpoint: both committed events are relayed.
    let (first, saved) = stack.relay_outbox_from(stopped.clone()).await;
    assert_eq!(first.failures, 0, "{first:?}");
    assert!(first.invocations >= 1, "{first:?}");
    assert_ne!(saved, stopped, "the checkpoint moved past them");
    // Crashed before saving that checkpoint: the same records are relayed again.
    let (second, _) = stack.relay_outbox_from(stopped).await;
    assert_eq!(second.failures, 0, "{second:?}");
    // Nothing more to relay from the saved checkpoint.
    let (after, _) = stack.relay_outbox_from(saved).await;
    assert_eq!(after.invocations, 0, "{after:?}");

    // The egress function drains the queue (as its SQS event source does).
    let egress = stack.egress();
    let sqs = &stack.aws.sqs;
    let (url, arn) = (&stack.resources.queue_url, &stack.resources.queue_arn);
    while poller::poll_once(sqs, url, arn, &egress, 0).await.unwrap() > 0 {}

    let got = receiver.requests();
    let mut types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["credits.added", "invoice.paid"], "each once");
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 2);
}

/// Issue 14 item 3, measured: a warm batch of ten deliveries costs 4 DynamoDB requests per
/// message (claim and endpoint+event read together before the send, attempt record and hourly
/// counter together after it): 40 requests, 2 sequential round trips per message.
#[tokio::test]
async fn a_warm_batch_of_ten_deliveries_costs_four_dynamodb_requests_each() {
    let calls = CallCounter::new();
    let aws = calls.clients(&emulator().sdk_config().await);
    let world = World::with_stack(Stack::with_clients(aws, &[]).await).await;
    let receiver = Receiver::answering(200).await;
    world.endpoint(&receiver.url("/")).await;
    // Warm: the first delivery decrypts the signing secret.
    world.publish("credits.added").await;
    let warm_up = world.receive(1).await;
    world.invoke(warm_up).await;
    for _ in 0..10 {
        world.publish("credits.added").await;
    }
    let batch = world.receive(10).await;
    assert_eq!(batch.records.len(), 10);
    calls.reset();
    let response = handle_batch(&world.egress, batch).await;
    assert!(failures(&response).is_empty());
    assert_eq!(calls.count("KMS"), 0);
    assert_eq!(calls.count("SQS"), 0);
    let mut dynamodb = calls.operations("DynamoDB");
    dynamodb.sort();
    dynamodb.dedup_by(|a, b| a == b);
    assert_eq!(dynamodb, ["BatchGetItem", "UpdateItem"]);
    assert_eq!(calls.count("DynamoDB"), 40);
    assert_eq!(receiver.requests().len(), 11);
}
