//! The event-type catalog (`sluice::event_types`) against what Sluice really delivers: every
//! catalog type is published through the local stack (signed Stripe fixtures through the ingress,
//! usage debits crossing 80 % and 100 % of a budget), delivered by egress to a receiver on
//! 127.0.0.1, and each delivered body validated against its catalog schema and its OpenAPI
//! `webhooks` entry. Also: `GET /v1/event-types`, the committed `docs/event-types.md`, and
//! tenants' own types staying free-form.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use axum::Router;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use sluice::{
    clock,
    event_types::{self, EventType},
    stripe::signature,
    webhook_signature::SigningKey,
};
use sluice_local::{
    poller,
    receiver::{self, Verification},
};
use tokio::net::TcpListener;

use crate::support::{Req, Stack};

/// Every request a receiver on 127.0.0.1 got (answering `200`), and its URL.
async fn recording_receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
    let got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let log = got.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((headers, body));
            http::StatusCode::OK
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// A JSON Schema 2020-12 validator; `components` of the OpenAPI document ride along at the
/// root so that its `$ref`s resolve.
fn check(schema: &Value, instance: &Value, components: Option<&Value>) -> Result<(), String> {
    let mut root = schema.clone();
    if let Some(c) = components {
        root["components"] = c.clone();
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .map_err(|e| format!("invalid schema ({e}): {schema}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `POST /webhooks/stripe` of a shared fixture for `tenant`, signed now; asserts `200`.
async fn stripe(stack: &Stack, name: &str, tenant: &str) {
    let path = sluice_local::repo_root().join(format!("tests/fixtures/stripe/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let body = sluice_local::trigger::prepare(&text, false, Some(tenant)).unwrap();
    let header = signature::sign(&stack.stripe_secret, clock::now_epoch(), &body);
    let res = stack
        .send(
            Req::post("/webhooks/stripe")
                .header("stripe-signature", &header)
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(res.status, 200, "{name}: {}", res.text());
}

#[tokio::test]
async fn every_catalog_type_is_delivered_and_its_body_validates_against_the_catalog() {
    // GIVEN a tenant with a budget of 10.00 and one endpoint on a local receiver.
    let stack = Stack::new().await;
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Catalog Co", "monthly_budget_minor": 1_000})),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let tenant = res.json()["id"].as_str().unwrap().to_owned();
    let key = res.json()["api_key"].as_str().unwrap().to_owned();
    let (url, received) = recording_receiver().await;
    let res = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(&key)
                .json(&json!({ "url": url })),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let secret = res.json()["secret"].as_str().unwrap().to_owned();
    let endpoint_id = res.json()["id"].as_str().unwrap().to_owned();

    // WHEN every Stripe fixture that notifies arrives through the ingress, in lifecycle order,
    for name in [
        "checkout.session.completed.payment",
        "checkout.session.completed.subscription",
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.marked_uncollectible",
        "customer.subscription.deleted",
    ] {
        stripe(&stack, name, &tenant).await;
    }
    // AND usage crosses 80 % (8.00 of 10.00), then 100 % of the budget,
    for amount in [800, 200] {
        let res = stack
            .send(
                Req::post("/v1/usage")
                    .bearer(&key)
                    .json(&json!({"amount_minor": amount})),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    // AND a test event is sent to the endpoint,
    let res = stack
        .send(Req::post(&format!("/v1/endpoints/{endpoint_id}/test")).bearer(&key))
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
    // AND egress relays the outbox from the table's stream, then delivers from the queue, as the
    // two event source mappings run it, until the queue is drained.
    stack.relay_outbox().await;
    let egress = stack.egress();
    let r = &stack.resources;
    let mut quiet = 0;
    while quiet < 3 {
        let n = poller::poll_once(&stack.aws.sqs, &r.queue_url, &r.queue_arn, &egress, 1)
            .await
            .unwrap();
        quiet = if n == 0 { quiet + 1 } else { 0 };
    }

    // THEN every delivery is signed and validates against its type's catalog schema and its
    // OpenAPI webhook, and every catalog type was delivered.
    let catalog = event_types::catalog();
    let doc = sluice_api::openapi::document();
    let keys = [SigningKey::from_secret(&secret).unwrap()];
    let mut delivered = BTreeSet::new();
    for (headers, body) in received.lock().unwrap().iter() {
        let inspection = receiver::inspect(headers, body, &keys, clock::now_epoch());
        assert_eq!(inspection.verification, Verification::Verified);
        let body: Value = serde_json::from_slice(body).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        let entry: &EventType = catalog
            .iter()
            .find(|e| e.name == kind)
            .unwrap_or_else(|| panic!("{kind} was delivered but is not in the catalog"));
        check(&entry.schema, &body["data"], None)
            .unwrap_or_else(|e| panic!("{kind}: {e}\n{body:#}"));
        let envelope =
            &doc["webhooks"][&kind]["post"]["requestBody"]["content"]["application/json"]["schema"];
        check(envelope, &body, Some(&doc["components"]))
            .unwrap_or_else(|e| panic!("{kind} (webhook): {e}\n{body:#}"));
        delivered.insert(kind);
    }
    let never: Vec<&str> = catalog
        .iter()
        .map(|e| e.name)
        .filter(|name| !delivered.contains(*name))
        .collect();
    assert!(never.is_empty(), "catalog types never delivered: {never:?}");
}

#[test]
fn a_payload_that_drifts_from_its_schema_is_caught() {
    let credits = event_types::catalog()
        .into_iter()
        .find(|e| e.name == "credits.added")
        .unwrap();
    let good = json!({"amount_minor": 2500, "currency": "usd", "ledger_id": "led_1", "payment_id": "pi_1"});
    assert_eq!(check(&credits.schema, &good, None), Ok(()));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("ledger_id");
    assert!(check(&credits.schema, &missing, None).is_err());
    let mut retyped = good;
    retyped["amount_minor"] = json!("2500");
    assert!(check(&credits.schema, &retyped, None).is_err());
}

#[tokio::test]
async fn the_catalog_is_served_to_tenants_and_their_own_types_stay_free_form() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    // Answers are validated against docs/openapi.json by `Stack::send`.
    let res = stack.send(Req::get("/v1/event-types").bearer(&key)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json(),
        json!({ "data": serde_json::to_value(event_types::catalog()).unwrap() })
    );
    let res = stack.send(Req::get("/v1/event-types")).await;
    res.assert_problem(401);
    // A type of the tenant's own, unknown to the catalog, is accepted as it is.
    let res = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key)
                .json(&json!({"type": "order.shipped", "data": {"anything": [1, "two"]}})),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
}

#[test]
fn every_catalog_type_is_an_openapi_webhook_with_the_standard_webhooks_headers() {
    let doc = sluice_api::openapi::document();
    let hooks = doc["webhooks"].as_object().unwrap();
    let catalog = event_types::catalog();
    assert_eq!(hooks.len(), catalog.len());
    for e in &catalog {
        let post = &hooks[e.name]["post"];
        let params: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["$ref"].as_str())
            .collect();
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let reference = format!("#/components/parameters/{header}");
            assert!(params.contains(&reference.as_str()), "{}: {header}", e.name);
            assert_eq!(doc["components"]["parameters"][header]["in"], "header");
        }
        let schema = &post["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema["properties"]["type"]["const"], e.name);
        assert_eq!(
            doc["components"]["schemas"][e.payload], e.schema,
            "{}: the webhook's data is the catalog's schema",
            e.name
        );
    }
}

fn committed_path() -> std::path::PathBuf {
    sluice_local::repo_root().join("docs/event-types.md")
}

#[test]
fn the_committed_catalog_is_what_the_code_generates() {
    let generated = event_types::markdown();
    let path = committed_path();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/event-types.md differs from what the code generates; regenerate it with \
         `SLUICE_BLESS=1 cargo test -p sluice-local --test it event_types::the_committed` and commit it"
    );
}

#[test]
fn the_reference_page_lists_every_webhook() {
    let html = sluice_api::docs::render(&sluice_api::openapi::document());
    assert!(html.contains("id=\"tag-webhooks\""));
    // A webhook is signed by Sluice, not called with the reader's credentials.
    assert_eq!(
        html.matches("Sent by Sluice, signed").count(),
        event_types::catalog().len()
    );
    for e in event_types::catalog() {
        let anchor = sluice_api::docs::anchor(&format!("op post {}", e.name));
        assert!(html.contains(&format!("id=\"{anchor}\"")), "{}", e.name);
        assert!(html.contains(&format!(
            "id=\"schema-{}\"",
            sluice_api::docs::anchor(e.payload)
        )));
    }
}
