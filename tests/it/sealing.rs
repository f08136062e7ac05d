//! Secrets at rest at every documented size (KMS envelope encryption), and the resumable rewrap.

use http::StatusCode;
use serde_json::{Value, json};
use sluice::{
    sealing::{self, SealContext, Sealer},
    table::{self, ItemExt, s},
};

use sluice_local::counting::CallCounter;

use crate::support::{Req, Stack, emulator, get_item};

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

#[tokio::test]
async fn a_sealed_value_moved_to_another_tenant_does_not_open() {
    let stack = Stack::new().await;
    let (tenant_a, key_a) = stack.create_tenant("A").await;
    let (tenant_b, _) = stack.create_tenant("B").await;
    let res = stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key_a)
                .json(&json!({"provider": "openai", "value": value_of_8_kib('a')})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());

    // GIVEN A's sealed key copied onto an item of B
    let mut stolen = get_item(
        &stack,
        &table::tenant_pk(&tenant_a),
        &table::provider_secret_sk("openai"),
    )
    .await
    .unwrap();
    let ciphertext = stolen.get_bin(sealing::CIPHERTEXT).unwrap().to_vec();
    stolen.insert(table::PK.into(), s(table::tenant_pk(&tenant_b)));
    stack
        .aws
        .dynamodb
        .put_item()
        .table_name(&stack.resources.table_name)
        .set_item(Some(stolen))
        .send()
        .await
        .unwrap();

    // THEN it does not open for B, nor for another purpose of A
    let err = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer(&stack),
        &tenant_b,
        "openai",
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 500);
    for ctx in [
        SealContext::provider_key(&tenant_b),
        SealContext::endpoint_secret(&tenant_a),
    ] {
        assert!(matches!(
            sealer(&stack).open(ctx, &ciphertext).await,
            Err(sealing::SealError::InvalidCiphertext)
        ));
    }
    // … and a payload with one bit changed does not open even for A.
    let mut tampered = ciphertext.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(
        sealer(&stack)
            .open(SealContext::provider_key(&tenant_a), &tampered)
            .await,
        Err(sealing::SealError::InvalidCiphertext)
    ));
}

/// A new KMS key on the emulator, made the stack's current key; its ARN.
async fn move_to_a_new_key(stack: &mut Stack) -> String {
    let meta = stack
        .aws
        .kms
        .create_key()
        .description("sluice rewrap test")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    stack.config.kms_key_id = meta.key_id;
    meta.arn.unwrap()
}

async fn rewrap(stack: &Stack, body: Value) -> Value {
    let res = stack
        .send(
            Req::post("/admin/secrets/rewrap")
                .admin(&stack.admin_key)
                .json(&body),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()
}

#[tokio::test]
async fn a_value_stored_before_envelopes_still_opens_and_rewrap_converts_it() {
    let mut stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": "placeholder"})),
        )
        .await;

    // GIVEN a provider key stored the way Sluice stored it before envelopes: a raw KMS
    // ciphertext of the value under the tenant's context
    let legacy = stack
        .aws
        .kms
        .encrypt()
        .key_id(&stack.config.kms_key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new("sk-legacy-value"))
        .encryption_context(sealing::CONTEXT_TENANT_ID, tenant.as_str())
        .encryption_context(sealing::CONTEXT_PURPOSE, "provider-key")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(
            table::tenant_pk(&tenant),
            table::provider_secret_sk("openai"),
        )))
        .update_expression("SET #ct = :ct")
        .expression_attribute_names("#ct", sealing::CIPHERTEXT)
        .expression_attribute_values(":ct", table::bin(legacy.into_inner()))
        .send()
        .await
        .unwrap();
    let read = |stack: &Stack| {
        let (db, table_name, sealer) = (
            stack.aws.dynamodb.clone(),
            stack.resources.table_name.clone(),
            sealer(stack),
        );
        let tenant = tenant.clone();
        async move {
            sealing::provider_key(&db, &table_name, &sealer, &tenant, "openai")
                .await
                .unwrap()
                .unwrap()
        }
    };

    // THEN it still opens
    assert_eq!(read(&stack).await.expose(), "sk-legacy-value");

    // WHEN the operator moves to a new key and rewraps
    let new_arn = move_to_a_new_key(&mut stack).await;
    let report = rewrap(&stack, json!({})).await;

    // THEN the legacy blob became an envelope under the new key, with the same value
    assert_eq!(report["provider_keys"], 1, "{report}");
    assert_eq!(report["converted"], 1, "{report}");
    let item = get_item(
        &stack,
        &table::tenant_pk(&tenant),
        &table::provider_secret_sk("openai"),
    )
    .await
    .unwrap();
    let stored = item.get_bin(sealing::CIPHERTEXT).unwrap();
    assert_eq!(sealing::wrapping_key_arn(stored), Some(new_arn.as_str()));
    assert_eq!(read(&stack).await.expose(), "sk-legacy-value");
}

/// A tenant with two endpoint signing secrets, a provider key and a sealed stored answer.
async fn some_secrets(stack: &Stack) {
    let (_, key) = stack.create_tenant("Acme").await;
    let ep = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(&key)
                .idempotency_key("sealed-answer")
                .json(&json!({"url": "http://127.0.0.1:9/a"})),
        )
        .await
        .json();
    let res = stack
        .send(
            Req::post(&format!(
                "/v1/endpoints/{}/rotate-secret",
                ep["id"].as_str().unwrap()
            ))
            .bearer(&key),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let res = stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": value_of_8_kib('o')})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
}

#[tokio::test]
async fn a_second_rewrap_re_encrypts_nothing() {
    let counter = CallCounter::new();
    let mut stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    some_secrets(&stack).await;
    move_to_a_new_key(&mut stack).await;

    // GIVEN a first rewrap moved every secret, one ReEncrypt each
    counter.reset();
    let first = rewrap(&stack, json!({})).await;
    assert_eq!(first["done"], true, "{first}");
    assert_eq!(first["endpoint_secrets"], 2, "{first}");
    assert_eq!(first["provider_keys"], 1);
    assert_eq!(first["idempotent_responses"], 1);
    let re_encrypts = counter
        .operations("KMS")
        .iter()
        .filter(|op| *op == "ReEncrypt")
        .count();
    assert_eq!(re_encrypts, 4, "{:?}", counter.operations("KMS"));

    // WHEN the operator runs it again
    counter.reset();
    let second = rewrap(&stack, json!({})).await;

    // THEN nothing is re-encrypted or written: one DescribeKey and the scan, nothing else
    for field in [
        "endpoint_secrets",
        "provider_keys",
        "idempotent_responses",
        "converted",
    ] {
        assert_eq!(second[field], 0, "{field}: {second}");
    }
    assert_eq!(
        second["already_current"],
        first["already_current"].as_u64().unwrap() + 4
    );
    assert_eq!(counter.operations("KMS"), vec!["DescribeKey"]);
    assert_eq!(counter.operations("DynamoDB"), vec!["Scan"]);
}

#[tokio::test]
async fn rewrap_resumes_from_its_cursor() {
    let counter = CallCounter::new();
    let mut stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let (_, key) = stack.create_tenant("Acme").await;
    for i in 0..5 {
        let res = stack
            .send(
                Req::post("/v1/secrets")
                    .bearer(&key)
                    .json(&json!({"provider": format!("p{i}"), "value": "sk-value"})),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }
    move_to_a_new_key(&mut stack).await;
    counter.reset();

    // WHEN the operator rewraps two items per call, passing each answer's cursor on
    let mut answers = vec![rewrap(&stack, json!({"limit": 2})).await];
    while answers.last().unwrap()["done"] == false {
        assert!(answers.len() < 100, "rewrap never finishes");
        let cursor = answers.last().unwrap()["next_cursor"].clone();
        assert!(cursor.is_string(), "{}", answers.last().unwrap());
        answers.push(rewrap(&stack, json!({"cursor": cursor, "limit": 2})).await);
    }

    // THEN it took several calls, each continuing where the last stopped: every key moved
    // exactly once, none found already current (a restart would find its own work)
    assert!(answers.len() > 2, "{answers:?}");
    let sum = |field: &str| {
        answers
            .iter()
            .map(|a| a[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("provider_keys"), 5, "{answers:?}");
    assert_eq!(sum("already_current"), 0, "{answers:?}");
    let re_encrypts = counter
        .operations("KMS")
        .iter()
        .filter(|op| *op == "ReEncrypt")
        .count();
    assert_eq!(re_encrypts, 5);
    assert!(answers.last().unwrap()["next_cursor"].is_null());

    // … and a cursor it never issued is refused
    let res = stack
        .send(
            Req::post("/admin/secrets/rewrap")
                .admin(&stack.admin_key)
                .json(&json!({"cursor": "not-a-cursor"})),
        )
        .await;
    res.assert_problem(400);
}
