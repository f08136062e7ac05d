//! The public API the tenant portal uses (issue 16 item 3): replays and recovery through the
//! outbox, the event list, test events, the usage summary — each checked through the API
//! router, with another tenant's ids answering `404`.

use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::{Router, http::StatusCode, response::IntoResponse};
use serde_json::{Value, json};
use sluice_local::{counting::CallCounter, poller};
use tokio::net::TcpListener;

use crate::support::{Req, Stack, emulator};

/// A receiver on 127.0.0.1 answering every request with the status `answer` holds now; it
/// counts what it received.
struct Receiver {
    url: String,
    answer: Arc<Mutex<u16>>,
    received: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let answer = Arc::new(Mutex::new(status));
        let received = Arc::new(Mutex::new(0));
        let (a, r) = (answer.clone(), received.clone());
        let app = Router::new().fallback(move || {
            let (a, r) = (a.clone(), r.clone());
            async move {
                *r.lock().unwrap() += 1;
                let status = *a.lock().unwrap();
                StatusCode::from_u16(status).unwrap().into_response()
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            answer,
            received,
        }
    }

    fn answer(&self, status: u16) {
        *self.answer.lock().unwrap() = status;
    }

    fn received(&self) -> usize {
        *self.received.lock().unwrap()
    }
}

/// A stack whose functions count their AWS requests, a tenant and its key.
async fn counted_stack() -> (Stack, CallCounter, String, String) {
    let counter = CallCounter::default();
    let stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    (stack, counter, tenant, key)
}

async fn create_endpoint(stack: &Stack, key: &str, url: &str) -> String {
    let res = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(key)
                .json(&json!({ "url": url })),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

async fn publish(stack: &Stack, key: &str, event_type: &str) -> String {
    let res = stack
        .send(
            Req::post("/v1/events")
                .bearer(key)
                .json(&json!({"type": event_type, "data": {"n": 1}})),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

/// What the event source mappings do: the outbox relayed, then every message on the delivery
/// queue handed to the egress function once (a failure stays in flight, not retried here).
async fn deliver_all(stack: &Stack) {
    stack.relay_outbox().await;
    loop {
        let out = stack
            .aws
            .sqs
            .receive_message()
            .queue_url(&stack.resources.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return;
        }
        let event = poller::sqs_event(messages, &stack.resources.queue_arn);
        webhook_egress::handle_batch(&stack.egress(), event).await;
    }
}

async fn event(stack: &Stack, key: &str, id: &str) -> Value {
    let res = stack
        .send(Req::get(&format!("/v1/events/{id}")).bearer(key))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()
}

#[tokio::test]
async fn a_replay_makes_no_sqs_call_and_the_outbox_relay_delivers_it_again() {
    // GIVEN an event delivered once to an endpoint that failed
    let (stack, counter, _, key) = counted_stack().await;
    let receiver = Receiver::start(500).await;
    let ep = create_endpoint(&stack, &key, &receiver.url).await;
    let id = publish(&stack, &key, "invoice.paid").await;
    deliver_all(&stack).await;
    assert_eq!(receiver.received(), 1);

    // WHEN it is replayed
    receiver.answer(200);
    counter.reset();
    let res = stack
        .send(
            Req::post(&format!("/v1/events/{id}/replay"))
                .bearer(&key)
                .json(&json!({ "endpoint_id": ep })),
        )
        .await;

    // THEN the answer names the endpoint, and the request path made no SQS call: two reads and
    // one transaction (besides authentication's key lookup)
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    assert_eq!(res.json(), json!({"id": id, "endpoints": [ep]}));
    assert_eq!(counter.count("sqs"), 0, "{:?}", counter.calls());
    assert_eq!(
        counter
            .operations("dynamodb")
            .iter()
            .filter(|op| *op == "TransactWriteItems")
            .count(),
        1,
        "{:?}",
        counter.calls()
    );
    // … and once the outbox is relayed, the delivery is attempted again and succeeds
    deliver_all(&stack).await;
    assert_eq!(receiver.received(), 2);
    let delivery = &event(&stack, &key, &id).await["deliveries"][0];
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["generation"], 2);
}

#[tokio::test]
async fn another_tenants_event_or_endpoint_is_not_found_for_a_replay() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    let ep_a = create_endpoint(&stack, &key_a, "https://a.example.com/hook").await;
    let ep_b = create_endpoint(&stack, &key_b, "https://b.example.com/hook").await;
    let id_a = publish(&stack, &key_a, "x.y").await;

    let res = stack
        .send(Req::post(&format!("/v1/events/{id_a}/replay")).bearer(&key_b))
        .await;
    res.assert_problem(404);
    let res = stack
        .send(
            Req::post(&format!("/v1/events/{id_a}/replay"))
                .bearer(&key_a)
                .json(&json!({ "endpoint_id": ep_b })),
        )
        .await;
    res.assert_problem(404);
    let res = stack
        .send(
            Req::post(&format!("/v1/events/{id_a}/replay"))
                .bearer(&key_a)
                .json(&json!({ "endpoint_id": ep_a })),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
}

async fn create_endpoint_for(stack: &Stack, key: &str, url: &str, types: &[&str]) -> String {
    let res = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(key)
                .json(&json!({ "url": url, "event_types": types })),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

/// Every event `GET /v1/events?{query}` lists, following `next_cursor`.
async fn list_all(stack: &Stack, key: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/events?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let res = stack.send(Req::get(&path).bearer(key)).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let page = res.json();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

fn ids_of(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn the_event_list_is_newest_first_paged_and_filtered_by_type_endpoint_status_and_time() {
    // GIVEN events delivered (a.one), failed for good (b.two: its endpoint answers 410) and sent
    // to no endpoint (c.three)
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("A").await;
    let ok = Receiver::start(200).await;
    let gone = Receiver::start(410).await;
    let _ep_ok = create_endpoint_for(&stack, &key, &ok.url, &["a.one"]).await;
    let ep_gone = create_endpoint_for(&stack, &key, &gone.url, &["b.two"]).await;
    let e1 = publish(&stack, &key, "a.one").await;
    let e2 = publish(&stack, &key, "b.two").await;
    let e3 = publish(&stack, &key, "a.one").await;
    let e4 = publish(&stack, &key, "c.three").await;
    deliver_all(&stack).await;

    // WHEN listed two at a time, THEN every event once, newest first
    let all = list_all(&stack, &key, "limit=2").await;
    assert_eq!(
        ids_of(&all),
        sorted(vec![e1.clone(), e2.clone(), e3.clone(), e4.clone()])
    );
    let times: Vec<i64> = all
        .iter()
        .map(|e| e["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let first = stack
        .send(Req::get("/v1/events?limit=2").bearer(&key))
        .await
        .json();
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!(first["has_more"], true);

    // … each with its status and its deliveries'
    let by_id = |id: &str| all.iter().find(|e| e["id"] == id).unwrap().clone();
    assert_eq!(by_id(&e1)["status"], "delivered");
    assert_eq!(by_id(&e2)["status"], "failed");
    assert_eq!(
        by_id(&e2)["deliveries"],
        json!([{"endpoint_id": ep_gone, "status": "failed"}])
    );
    assert_eq!(by_id(&e4)["status"], "no_endpoints");

    // THEN each filter keeps its events
    assert_eq!(
        ids_of(&list_all(&stack, &key, "type=a.one").await),
        sorted(vec![e1.clone(), e3.clone()])
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, &format!("endpoint_id={ep_gone}")).await),
        [e2.as_str()]
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=failed").await),
        [e2.as_str()]
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=delivered&limit=1").await),
        sorted(vec![e1.clone(), e3.clone()])
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=no_endpoints").await),
        [e4.as_str()]
    );
    let now = sluice::clock::now_epoch();
    assert!(
        list_all(&stack, &key, &format!("since={}", now + 60))
            .await
            .is_empty()
    );
    assert!(
        list_all(&stack, &key, &format!("until={}", now - 3600))
            .await
            .is_empty()
    );
    assert_eq!(
        list_all(
            &stack,
            &key,
            &format!("since={}&until={}", now - 3600, now + 60)
        )
        .await
        .len(),
        4
    );

    // … and malformed ones are 400 problems naming the parameter
    for bad in [
        "status=sent",
        "since=yesterday",
        "limit=0",
        "endpoint_id=nope",
        "since=10&until=5",
    ] {
        let res = stack
            .send(Req::get(&format!("/v1/events?{bad}")).bearer(&key))
            .await;
        res.assert_problem(400);
    }
}

#[tokio::test]
async fn another_tenant_lists_none_of_the_events_and_cannot_use_their_cursor() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    publish(&stack, &key_a, "x.y").await;
    publish(&stack, &key_a, "x.y").await;
    assert!(list_all(&stack, &key_b, "").await.is_empty());
    let page = stack
        .send(Req::get("/v1/events?limit=1").bearer(&key_a))
        .await
        .json();
    let cursor = page["next_cursor"].as_str().unwrap();
    let res = stack
        .send(Req::get(&format!("/v1/events?cursor={cursor}")).bearer(&key_b))
        .await;
    let problem = res.assert_problem(400);
    assert!(problem["detail"].as_str().unwrap().contains("cursor"));
}

#[tokio::test]
async fn a_test_event_reaches_only_that_endpoint_once_and_costs_one_transaction() {
    // GIVEN two endpoints, the tested one subscribed to other types only
    let (stack, counter, _, key) = counted_stack().await;
    let tested = Receiver::start(200).await;
    let other = Receiver::start(200).await;
    let ep = create_endpoint_for(&stack, &key, &tested.url, &["invoice.paid"]).await;
    create_endpoint(&stack, &key, &other.url).await;

    // WHEN a test is sent (and the same request retried)
    counter.reset();
    let send = || {
        stack.send(
            Req::post(&format!("/v1/endpoints/{ep}/test"))
                .bearer(&key)
                .idempotency_key("test-1"),
        )
    };
    let res = send().await;

    // THEN `202 {id, endpoints: [ep]}` after the lock and one transaction, no SQS call
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    assert_eq!(res.json()["endpoints"], json!([ep]));
    let id = res.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(counter.count("sqs"), 0, "{:?}", counter.calls());
    let writes: Vec<String> = counter
        .operations("dynamodb")
        .into_iter()
        .filter(|op| op != "GetItem")
        .collect();
    assert_eq!(
        writes,
        ["PutItem", "TransactWriteItems"],
        "{:?}",
        counter.calls()
    );
    let again = send().await;
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // … and the relay delivers it to that endpoint only, as a `sluice.test`
    deliver_all(&stack).await;
    assert_eq!((tested.received(), other.received()), (1, 0));
    let shown = event(&stack, &key, &id).await;
    assert_eq!(shown["type"], "sluice.test");
    assert_eq!(shown["data"]["endpoint_id"], ep.as_str());
    assert_eq!(shown["deliveries"][0]["status"], "succeeded");
}

#[tokio::test]
async fn a_test_to_another_tenants_endpoint_is_not_found_and_writes_nothing() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    let ep_b = create_endpoint(&stack, &key_b, "https://b.example.com/hook").await;
    for id in [ep_b.as_str(), "ep_missing", "nope"] {
        let res = stack
            .send(Req::post(&format!("/v1/endpoints/{id}/test")).bearer(&key_a))
            .await;
        res.assert_problem(404);
    }
    assert!(list_all(&stack, &key_a, "").await.is_empty());
    assert!(list_all(&stack, &key_b, "").await.is_empty());
}

#[tokio::test]
async fn recover_replays_every_failed_delivery_of_the_endpoint_once_through_the_outbox() {
    // GIVEN two events whose deliveries failed for good (the endpoint answered 410 and was
    // disabled), one delivered to another endpoint, and the endpoint re-enabled
    let (stack, counter, _, key) = counted_stack().await;
    let flaky = Receiver::start(410).await;
    let fine = Receiver::start(200).await;
    let ep = create_endpoint_for(&stack, &key, &flaky.url, &["a.one"]).await;
    create_endpoint_for(&stack, &key, &fine.url, &["b.two"]).await;
    let e1 = publish(&stack, &key, "a.one").await;
    let e2 = publish(&stack, &key, "a.one").await;
    publish(&stack, &key, "b.two").await;
    deliver_all(&stack).await;
    assert_eq!((flaky.received(), fine.received()), (2, 1));
    let res = stack
        .send(
            Req::patch(&format!("/v1/endpoints/{ep}"))
                .bearer(&key)
                .json(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    flaky.answer(200);

    // WHEN everything since an hour ago is recovered
    let since = sluice::clock::now_epoch() - 3600;
    counter.reset();
    let recover = || {
        stack.send(
            Req::post(&format!("/v1/endpoints/{ep}/recover"))
                .bearer(&key)
                .idempotency_key("recover-1")
                .json(&json!({ "since": since })),
        )
    };
    let res = recover().await;

    // THEN both failed deliveries are queued, with no SQS call on the request path
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({"queued": 2, "done": true, "next_cursor": null})
    );
    assert_eq!(counter.count("sqs"), 0, "{:?}", counter.calls());
    // … a retry with the same key replays the answer and queues nothing more
    let again = recover().await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // … and once relayed, each is delivered once more, the other endpoint's event untouched
    deliver_all(&stack).await;
    assert_eq!((flaky.received(), fine.received()), (4, 1));
    for id in [&e1, &e2] {
        let d = &event(&stack, &key, id).await["deliveries"][0];
        assert_eq!(
            (d["status"].as_str(), d["generation"].as_i64()),
            (Some("succeeded"), Some(2))
        );
    }
    // … so a second recover finds nothing left to replay
    let res = stack
        .send(
            Req::post(&format!("/v1/endpoints/{ep}/recover"))
                .bearer(&key)
                .json(&json!({ "since": since })),
        )
        .await;
    assert_eq!(res.json()["queued"], 0);
}

#[tokio::test]
async fn recover_refuses_another_tenants_endpoint_and_a_bad_since() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    let ep_b = create_endpoint(&stack, &key_b, "https://b.example.com/hook").await;
    let recover = |key: &str, ep: &str, body: Value| {
        stack.send(
            Req::post(&format!("/v1/endpoints/{ep}/recover"))
                .bearer(key)
                .json(&body),
        )
    };
    recover(&key_a, &ep_b, json!({"since": 0}))
        .await
        .assert_problem(404);
    recover(&key_a, "nope", json!({"since": 0}))
        .await
        .assert_problem(404);
    recover(&key_b, &ep_b, json!({"since": -1}))
        .await
        .assert_problem(422);
    recover(&key_b, &ep_b, json!({})).await.assert_problem(400);
    let ok = recover(&key_b, &ep_b, json!({"since": 0})).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text());
    assert_eq!(ok.json()["queued"], 0);
}

/// `POST /webhooks/stripe` of a shared fixture for `tenant`, signed now.
async fn stripe_top_up(stack: &Stack, tenant: &str) {
    let path = sluice_local::repo_root()
        .join("tests/fixtures/stripe/checkout.session.completed.payment.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let body = sluice_local::trigger::prepare(&text, true, Some(tenant)).unwrap();
    let header =
        sluice::stripe::signature::sign(&stack.stripe_secret, sluice::clock::now_epoch(), &body);
    let res = stack
        .send(
            Req::post("/webhooks/stripe")
                .header("stripe-signature", &header)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

#[tokio::test]
async fn the_usage_summary_reads_daily_counters_written_with_each_debit_and_credit() {
    // GIVEN a Stripe top-up (25.00) and debits with dimensions
    let (stack, counter, tenant, key) = counted_stack().await;
    stripe_top_up(&stack, &tenant).await;
    let debit = |amount: i64, dimensions: Value| {
        stack.send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": amount, "dimensions": dimensions})),
        )
    };
    assert_eq!(
        debit(100, json!({"provider": "openai", "model": "gpt-4o"}))
            .await
            .status,
        201
    );
    assert_eq!(
        debit(40, json!({"provider": "anthropic"})).await.status,
        201
    );
    counter.reset();
    let plain = debit(10, json!({})).await;
    assert_eq!(plain.status, 201, "{}", plain.text());
    // … a debit's counters are in its one transaction (besides authentication)
    assert_eq!(counter.count("dynamodb"), 2, "{:?}", counter.calls());

    // WHEN the last 30 days are summarized, grouped by provider
    counter.reset();
    let res = stack
        .send(Req::get("/v1/usage/summary?group_by=provider").bearer(&key))
        .await;

    // THEN 30 days, today's totals and groups, from two concurrent queries and the tenant read
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let summary = res.json();
    let days = summary["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let today = days.last().unwrap();
    assert_eq!(
        today["date"],
        sluice::account::usage::day_of(sluice::clock::now_epoch())
    );
    assert_eq!(today["usage_minor"], 150);
    assert_eq!(today["credits_minor"], 2500);
    assert_eq!(today["groups"], json!({"openai": 100, "anthropic": 40}));
    assert_eq!(days[0]["usage_minor"], 0);
    assert_eq!(summary["currency"], "usd");
    let ops = counter.operations("dynamodb");
    assert_eq!(ops.iter().filter(|op| *op == "Query").count(), 2, "{ops:?}");
    assert!(!ops.iter().any(|op| op == "Scan"), "{ops:?}");
    let by_model = stack
        .send(Req::get("/v1/usage/summary?group_by=model").bearer(&key))
        .await
        .json();
    assert_eq!(by_model["days"][29]["groups"], json!({"gpt-4o": 100}));
    let plain = stack
        .send(Req::get("/v1/usage/summary").bearer(&key))
        .await
        .json();
    assert!(plain["days"][29].get("groups").is_none());
}

#[tokio::test]
async fn usage_dimensions_and_summary_parameters_are_bounded_and_tenants_apart() {
    let stack = Stack::new().await;
    let (tenant_a, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    crate::tenant_api::credit(&stack, &tenant_a, 1_000).await;
    let debit = |dimensions: Value| {
        stack.send(
            Req::post("/v1/usage")
                .bearer(&key_a)
                .json(&json!({"amount_minor": 5, "dimensions": dimensions})),
        )
    };
    for bad in [
        json!({"a": "1", "b": "2", "c": "3", "d": "4"}),
        json!({"Provider": "x"}),
        json!({"provider": ""}),
        json!({"provider": "x".repeat(65)}),
    ] {
        let problem = debit(bad).await.assert_problem(422);
        assert!(
            problem["detail"].as_str().unwrap().contains("dimension"),
            "{problem}"
        );
    }
    debit(json!({"provider": 3})).await.assert_problem(400);
    assert_eq!(debit(json!({"provider": "openai"})).await.status, 201);

    for bad in [
        "from=2026-13-01",
        "from=2026-12-10&to=2026-12-01",
        "from=2026-01-01&to=2026-12-01",
        "group_by=Bad!",
    ] {
        stack
            .send(Req::get(&format!("/v1/usage/summary?{bad}")).bearer(&key_a))
            .await
            .assert_problem(400);
    }
    // The other tenant's summary counts nothing of A's.
    let b = stack
        .send(Req::get("/v1/usage/summary?group_by=provider").bearer(&key_b))
        .await
        .json();
    assert!(
        b["days"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["usage_minor"] == 0 && d["credits_minor"] == 0 && d["groups"] == json!({}))
    );
    let a = stack
        .send(Req::get("/v1/usage/summary").bearer(&key_a))
        .await
        .json();
    assert_eq!(
        (
            a["days"][29]["usage_minor"].as_i64(),
            a["days"][29]["credits_minor"].as_i64()
        ),
        (Some(5), Some(1_000))
    );
}
