//! Secrets at rest at every documented size (KMS envelope encryption), and the resumable rewrap.

use http::StatusCode;
use serde_json::{Value, json};
use sluice::{
    sealing::{self, SealContext, Sealer, Secret},
    table::{self, Item, ItemExt, s},
};

use crate::support::{Req, Stack};

async fn get_item(stack: &Stack, pk: &str, sk: &str) -> Option<Item> {
    stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(pk, sk)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

fn sealer(stack: &Stack) -> Sealer {
    Sealer::new(stack.aws.kms.clone(), &stack.config.kms_key_id)
}

/// An 8 KiB printable value (the documented maximum of `POST /v1/secrets`).
fn value_of_8_kib(tag: char) -> String {
    let mut v = format!("sk-{tag}-");
    while v.len() < 8192 {
        v.push(char::from(b'a' + (v.len() % 26) as u8));
    }
    v
}

/// The largest endpoint the API accepts: 100 event types of 100 characters, a 2048-character
/// URL, a 500-character description of two-byte characters. Its answer is ~15 KiB.
fn largest_endpoint() -> Value {
    let event_types: Vec<String> = (0..100)
        .map(|i| format!("{i:03}.{}", "x".repeat(96)))
        .collect();
    let mut url = "http://127.0.0.1:9/".to_owned();
    while url.len() < 2048 {
        url.push('p');
    }
    json!({
        "url": url,
        "event_types": event_types,
        "description": "é".repeat(500),
    })
}

#[tokio::test]
async fn a_provider_key_of_8_kib_is_stored_sealed_and_reads_back() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    let value = value_of_8_kib('c');

    // WHEN the tenant stores an 8 KiB key (twice the KMS Encrypt limit)
    let res = stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": value})),
        )
        .await;

    // THEN it is stored, sealed, and opens server-side to the same value
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let item = get_item(
        &stack,
        &table::tenant_pk(&tenant),
        &table::provider_secret_sk("openai"),
    )
    .await
    .unwrap();
    let stored = item.get_bin(sealing::CIPHERTEXT).unwrap();
    assert!(!stored.windows(64).any(|w| value.as_bytes().starts_with(w)));
    let opened = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer(&stack),
        &tenant,
        "openai",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(opened.expose(), value);

    // … and a replacement of the same size too.
    let replaced = value_of_8_kib('r');
    let res = stack
        .send(
            Req::put("/v1/secrets/openai")
                .bearer(&key)
                .json(&json!({"value": replaced})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let opened = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer(&stack),
        &tenant,
        "openai",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(opened.expose(), replaced);
}

#[tokio::test]
async fn the_largest_endpoint_answer_is_stored_sealed_and_replayed() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let keyed = || {
        Req::post("/v1/endpoints")
            .bearer(&key)
            .idempotency_key("big-endpoint")
            .json(&largest_endpoint())
    };

    // WHEN the largest endpoint is created under an idempotency key (its answer carries the
    // signing secret, so it is stored sealed)
    let first = stack.send(keyed()).await;

    // THEN it is created, and a retry replays the very same answer
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert!(first.body.len() > 4096, "{}", first.body.len());
    let replay = stack.send(keyed()).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, first.body);
}
