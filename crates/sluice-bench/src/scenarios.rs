//! The operations SPEC §9 names, each measured in its own [`Scenario`].

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aws_config::SdkConfig;
use serde_json::json;

use crate::{
    events,
    in_process::{Cost, Scenario, measure_cpu},
};

/// Warm-up calls before each measured run (first connections, lazy initialisation).
const WARM_UP: usize = 5;

/// New and duplicate Stripe events (`checkout.session.completed`, paid, tenant in metadata).
pub async fn stripe_events(sdk: &SdkConfig, n: usize) -> anyhow::Result<(Cost, Cost)> {
    let s = Scenario::new(sdk, "stripe").await?;
    let bodies: Vec<Vec<u8>> = (0..n + WARM_UP)
        .map(|_| events::checkout_paid(&s.tenant_id, 100))
        .collect();
    let (warm, measured) = bodies.split_at(WARM_UP);
    s.measure_http(warm.iter().map(|b| s.stripe_request(b)).collect())
        .await?;
    let new = s
        .measure_http(measured.iter().map(|b| s.stripe_request(b)).collect())
        .await
        .context("new Stripe events")?;
    let duplicate = s
        .measure_http(measured.iter().map(|b| s.stripe_request(b)).collect())
        .await
        .context("duplicate Stripe events")?;
    Ok((new, duplicate))
}

/// First idempotent `POST /v1/usage` calls, then the same calls again (replays).
pub async fn idempotent_writes(sdk: &SdkConfig, n: usize) -> anyhow::Result<(Cost, Cost)> {
    let s = Scenario::new(sdk, "idem").await?;
    // Credits to spend, bought the way tenants buy them.
    let credit = events::checkout_paid(&s.tenant_id, 1_000_000);
    s.measure_http(vec![s.stripe_request(&credit)]).await?;
    let keys: Vec<String> = (0..n + WARM_UP)
        .map(|i| format!("bench-usage-{i}"))
        .collect();
    let usage = |key: &String| {
        s.tenant_request(
            "POST",
            "/v1/usage",
            Some(key),
            json!({"amount_minor": 1, "description": "bench"}),
        )
    };
    let (warm, measured) = keys.split_at(WARM_UP);
    s.measure_http(warm.iter().map(usage).collect()).await?;
    let first = s
        .measure_http(measured.iter().map(usage).collect())
        .await
        .context("first idempotent writes")?;
    let replay = s
        .measure_http(measured.iter().map(usage).collect())
        .await
        .context("idempotent replays")?;
    Ok((first, replay))
}

/// A local webhook receiver: `POST /hook/{delay_ms}` answers 204 after that delay.
pub async fn start_receiver() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>
{
    use axum::{Router, extract::Path, routing::post};
    let app = Router::new().route(
        "/hook/{delay_ms}",
        post(|Path(delay): Path<u64>| async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            http::StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}

pub(crate) async fn add_endpoint(s: &Scenario, url: &str) -> anyhow::Result<()> {
    s.call(
        "POST",
        "/v1/endpoints",
        &[("authorization", &format!("Bearer {}", s.tenant_key))],
        json!({"url": url}),
    )
    .await?;
    Ok(())
}

pub(crate) async fn publish(s: &Scenario, i: usize) -> anyhow::Result<()> {
    s.call(
        "POST",
        "/v1/events",
        &[("authorization", &format!("Bearer {}", s.tenant_key))],
        json!({"type": "bench.tick", "data": {"i": i}}),
    )
    .await?;
    Ok(())
}

/// The outbox relay (the egress function fed from the table's stream) until the stream is
/// drained: `POST /v1/events` sends nothing to SQS itself.
pub(crate) async fn relay_outbox(sdk: &SdkConfig, s: &Scenario) -> anyhow::Result<()> {
    let stream_arn = s
        .stack
        .resources
        .stream_arn
        .as_deref()
        .context("the table has no stream")?;
    let mut poller =
        sluice_local::stream_poller::StreamPoller::new(sdk, "webhook-egress", stream_arn)?;
    let state = webhook_egress::EgressState::new(s.stack.config.clone(), s.aws.clone())?;
    let drained = poller.drain(&state).await?;
    ensure!(
        drained.failures == 0,
        "relaying the outbox failed: {drained:?}"
    );
    Ok(())
}

/// One delivery per handler call (one message per `SqsEvent`), warm: the endpoint's secret was
/// decrypted by an earlier delivery.
pub async fn egress_deliveries(sdk: &SdkConfig, n: usize) -> anyhow::Result<Cost> {
    let s = Scenario::new(sdk, "egress").await?;
    let (addr, _receiver) = start_receiver().await?;
    add_endpoint(&s, &format!("http://{addr}/hook/0")).await?;
    for i in 0..n + WARM_UP {
        publish(&s, i).await?;
    }
    relay_outbox(sdk, &s).await?;
    let messages = s.receive_all(n + WARM_UP).await?;
    let state = webhook_egress::EgressState::new(s.stack.config.clone(), s.aws.clone())?;
    let queue_arn = s.stack.resources.queue_arn.clone();
    let batches: Vec<_> = messages
        .into_iter()
        .map(|m| sluice_local::poller::sqs_event(vec![m], &queue_arn))
        .collect();
    let (warm, measured) = batches.split_at(WARM_UP);
    let deliver = |event: aws_lambda_events::event::sqs::SqsEvent| {
        let state = &state;
        async move {
            let response = webhook_egress::handle_batch(state, event).await;
            ensure!(
                response.batch_item_failures.is_empty(),
                "a delivery failed: {:?}",
                response.batch_item_failures
            );
            Ok(())
        }
    };
    s.measure(warm.to_vec(), deliver).await?;
    s.measure(measured.to_vec(), deliver)
        .await
        .context("egress deliveries")
}

/// Wall time of one batch of 10 deliveries to 10 endpoints answering after 100, 200, … 1000 ms.
pub struct Concurrency {
    pub wall: Duration,
    pub slowest: Duration,
    pub sum: Duration,
}

pub async fn egress_concurrency(sdk: &SdkConfig) -> anyhow::Result<Concurrency> {
    let s = Scenario::new(sdk, "fanout").await?;
    let (addr, _receiver) = start_receiver().await?;
    let delays: Vec<u64> = (1..=10).map(|i| i * 100).collect();
    for d in &delays {
        add_endpoint(&s, &format!("http://{addr}/hook/{d}")).await?;
    }
    publish(&s, 0).await?;
    relay_outbox(sdk, &s).await?;
    let messages = s.receive_all(10).await?;
    let state = webhook_egress::EgressState::new(s.stack.config.clone(), s.aws.clone())?;
    let event = sluice_local::poller::sqs_event(messages, &s.stack.resources.queue_arn);
    let started = Instant::now();
    let response = webhook_egress::handle_batch(&state, event).await;
    let wall = started.elapsed();
    ensure!(
        response.batch_item_failures.is_empty(),
        "deliveries failed: {:?}",
        response.batch_item_failures
    );
    Ok(Concurrency {
        wall,
        slowest: Duration::from_millis(*delays.iter().max().unwrap()),
        sum: Duration::from_millis(delays.iter().sum()),
    })
}

/// The floor under every figure: one bare SDK `GetItem` (request building, SigV4 signing, HTTP,
/// JSON parsing) with nothing of Sluice around it.
pub async fn sdk_floor(sdk: &SdkConfig, n: usize) -> anyhow::Result<Cost> {
    let s = Scenario::new(sdk, "floor").await?;
    let key = sluice::table::key(
        sluice::table::tenant_pk(&s.tenant_id),
        sluice::table::TENANT_PROFILE_SK,
    );
    let get = |_: usize| {
        let (db, table, key) = (&s.aws.dynamodb, &s.stack.config.table_name, key.clone());
        async move {
            db.get_item()
                .table_name(table)
                .set_key(Some(key))
                .send()
                .await?;
            Ok(())
        }
    };
    s.measure((0..WARM_UP).collect(), get).await?;
    s.measure((0..n).collect(), get).await
}

/// The GetItem floor taken apart, on the same table and item as [`sdk_floor`]:
/// - `sdk_alone`: the same SDK call (same configuration chain: credentials, signing, retries,
///   timeouts, interceptors) with the network taken away: an in-memory HTTP client answers at
///   once with the emulator's own answer bytes;
/// - `http_alone`: the HTTP round trip without the SDK: a hyper client POSTs the same GetItem
///   body to the emulator on a kept-alive connection and reads the answer.
pub async fn sdk_floor_parts(sdk: &SdkConfig, n: usize) -> anyhow::Result<(Cost, Cost)> {
    use http_body_util::{BodyExt, Full};
    let s = Scenario::new(sdk, "floor-parts").await?;
    let endpoint = sdk.endpoint_url().context("the emulator's endpoint")?;
    let body = json!({
        "TableName": s.stack.config.table_name,
        "Key": {
            "pk": {"S": sluice::table::tenant_pk(&s.tenant_id)},
            "sk": {"S": sluice::table::TENANT_PROFILE_SK},
        },
    })
    .to_string();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let post = |_: usize| {
        let request = http::Request::post(endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "DynamoDB_20120810.GetItem")
            // moto routes by the credential scope; it does not check the signature.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(Full::new(bytes::Bytes::from(body.clone())))
            .expect("a valid request");
        let client = &client;
        async move {
            let res = client.request(request).await?;
            let status = res.status();
            let answer = res.into_body().collect().await?.to_bytes();
            ensure!(
                status.is_success() && answer.starts_with(b"{\"Item\""),
                "GetItem answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
            Ok(answer)
        }
    };
    let answer = post(0).await?;
    let round_trip = |i| {
        let sent = post(i);
        async move { sent.await.map(drop) }
    };
    measure_cpu((0..WARM_UP).collect(), round_trip).await?;
    let http_alone = measure_cpu((0..n).collect(), round_trip).await?;

    let offline = sdk
        .to_builder()
        .http_client(canned::Client::answering(answer))
        .build();
    let db = aws_sdk_dynamodb::Client::new(&offline);
    let key = sluice::table::key(
        sluice::table::tenant_pk(&s.tenant_id),
        sluice::table::TENANT_PROFILE_SK,
    );
    let get = |_: usize| {
        let sent = db
            .get_item()
            .table_name(&s.stack.config.table_name)
            .set_key(Some(key.clone()))
            .send();
        async move {
            let item = sent.await?.item;
            ensure!(item.is_some(), "the canned answer carries the item");
            Ok(())
        }
    };
    measure_cpu((0..WARM_UP).collect(), get).await?;
    let sdk_alone = measure_cpu((0..n).collect(), get).await?;
    Ok((sdk_alone, http_alone))
}

/// An SDK HTTP client that never touches the network: every request gets the same answer.
mod canned {
    use aws_smithy_runtime_api::client::{
        http::{
            HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
            SharedHttpClient, SharedHttpConnector,
        },
        orchestrator::HttpRequest,
        runtime_components::RuntimeComponents,
    };
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    #[derive(Clone, Debug)]
    pub struct Client {
        answer: bytes::Bytes,
    }

    impl Client {
        /// `200` with `answer` as the body, to every request.
        pub fn answering(answer: bytes::Bytes) -> SharedHttpClient {
            SharedHttpClient::new(Client { answer })
        }
    }

    impl HttpConnector for Client {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let status = StatusCode::try_from(200).expect("200 is a status");
            let response = Response::new(status, SdkBody::from(self.answer.clone()));
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    impl HttpClient for Client {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }
}

/// The floor under a first idempotent write: the same shape of AWS calls as `POST /v1/usage`
/// (a conditional PutItem, then a three-item TransactWriteItems: a conditional update, a put and
/// an update carrying a ~300-byte answer), sent with the bare SDK and nothing of Sluice around
/// them.
pub async fn sdk_floor_write(sdk: &SdkConfig, n: usize) -> anyhow::Result<Cost> {
    use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
    let s = Scenario::new(sdk, "floor-write").await?;
    let table = s.stack.config.table_name.clone();
    let s_val = |v: &str| AttributeValue::S(v.to_owned());
    let answer = "x".repeat(300);
    let write = |i: usize| {
        let (db, table, answer) = (&s.aws.dynamodb, &table, &answer);
        async move {
            let pk = format!("FLOOR#{i}");
            db.put_item()
                .table_name(table)
                .item("pk", s_val(&pk))
                .item("sk", s_val("LOCK"))
                .item("status", s_val("in_progress"))
                .item("fingerprint", s_val(&"f".repeat(64)))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await?;
            let balance = Update::builder()
                .table_name(table)
                .key("pk", s_val("FLOOR"))
                .key("sk", s_val("BALANCE"))
                .update_expression("ADD balance :a")
                .condition_expression("attribute_not_exists(balance) OR balance >= :z")
                // A credit, so the condition (a debit's, in shape) always holds.
                .expression_attribute_values(":a", AttributeValue::N("1".into()))
                .expression_attribute_values(":z", AttributeValue::N("0".into()))
                .build()?;
            let entry = Put::builder()
                .table_name(table)
                .item("pk", s_val("FLOOR"))
                .item("sk", s_val(&format!("LEDGER#{i:08}")))
                .item("amount_minor", AttributeValue::N("-1".into()))
                .item("description", s_val("bench"))
                .build()?;
            let done = Update::builder()
                .table_name(table)
                .key("pk", s_val(&pk))
                .key("sk", s_val("LOCK"))
                .update_expression("SET #s = :done, answer = :r")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":done", s_val("completed"))
                .expression_attribute_values(":r", s_val(answer))
                .build()?;
            db.transact_write_items()
                .transact_items(TransactWriteItem::builder().update(balance).build())
                .transact_items(TransactWriteItem::builder().put(entry).build())
                .transact_items(TransactWriteItem::builder().update(done).build())
                .send()
                .await?;
            Ok(())
        }
    };
    s.measure((0..WARM_UP).collect(), write).await?;
    s.measure((WARM_UP..WARM_UP + n).collect(), write).await
}
