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
        [e2.clone()]
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=failed").await),
        [e2.clone()]
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=delivered&limit=1").await),
        sorted(vec![e1.clone(), e3.clone()])
    );
    assert_eq!(
        ids_of(&list_all(&stack, &key, "status=no_endpoints").await),
        [e4.clone()]
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
