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
