//! The idempotency layer (SPEC §5.1): around a small service of the test's own, and through the
//! tenant API.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, http::StatusCode, routing::post};
use bytes::Bytes;
use futures::future::join_all;
use http_body_util::BodyExt;
use serde_json::json;
use sluice::{
    clock,
    idempotency::{IdempotencyLayer, RECORD_SK, Scope, record_pk},
    table::{self, ItemExt, n, s},
};
use tower::ServiceExt;

use sluice_local::counting::CallCounter;

use crate::{
    support::{FaultInjector, Req, Stack, emulator, instrumented_clients},
    tenant_api::credit,
};

/// What the test service did, shared with the test.
#[derive(Clone)]
struct Probe {
    effects: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// `/slow` waits here until the test adds permits.
    gate: Arc<tokio::sync::Semaphore>,
    /// … or here, when the request says `x-gate: second`.
    second_gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<tokio::sync::Notify>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            effects: Arc::default(),
            calls: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            second_gate: Arc::new(tokio::sync::Semaphore::new(0)),
            entered: Arc::default(),
        }
    }
}

/// A service of the test's own: `/count` has an effect, `/flaky` fails once with 500, `/panic`
/// panics once, `/slow` waits for the test, `/reject` answers 409, `/later` asks the client to
/// come back once (409 with `Retry-After`, then 429) and then has an effect, `/accepted` answers
/// 202 with `Retry-After`.
fn service(
    stack: &Stack,
    probe: &Probe,
    layer: impl FnOnce(IdempotencyLayer) -> IdempotencyLayer,
) -> Router {
    let p = probe.clone();
    let count = move || {
        let p = p.clone();
        async move {
            let n = p.effects.fetch_add(1, Ordering::SeqCst) + 1;
            (
                StatusCode::CREATED,
                [("location", format!("/things/{n}"))],
                axum::Json(json!({ "count": n })),
            )
        }
    };
    let p = probe.clone();
    let flaky = move || {
        let p = p.clone();
        async move {
            if p.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return (StatusCode::INTERNAL_SERVER_ERROR, "try again".to_owned());
            }
            p.effects.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, "done".to_owned())
        }
    };
    let p = probe.clone();
    let panics = move || {
        let p = p.clone();
        async move {
            if p.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("handler bug");
            }
            p.effects.fetch_add(1, Ordering::SeqCst);
            "done"
        }
    };
    let p = probe.clone();
    let slow = move |headers: http::HeaderMap, body: Bytes| {
        let p = p.clone();
        async move {
            p.calls.fetch_add(1, Ordering::SeqCst);
            p.entered.notify_one();
            let gate = if headers.get("x-gate").is_some_and(|v| v == "second") {
                &p.second_gate
            } else {
                &p.gate
            };
            gate.acquire().await.unwrap().forget();
            p.effects.fetch_add(1, Ordering::SeqCst);
            body
        }
    };
    let reject = || async { (StatusCode::CONFLICT, "no") };
    let p = probe.clone();
    let later = move || {
        let p = p.clone();
        async move {
            match p.calls.fetch_add(1, Ordering::SeqCst) {
                0 => (
                    StatusCode::CONFLICT,
                    [("retry-after", "1")],
                    "changed concurrently; retry".to_owned(),
                ),
                1 => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down".to_owned(),
                ),
                _ => {
                    let n = p.effects.fetch_add(1, Ordering::SeqCst) + 1;
                    (StatusCode::CREATED, [("retry-after", "5")], format!("{n}"))
                }
            }
        }
    };
    let p = probe.clone();
    let accepted = move || {
        let p = p.clone();
        async move {
            p.effects.fetch_add(1, Ordering::SeqCst);
            (StatusCode::ACCEPTED, [("retry-after", "30")], "queued")
        }
    };
    // An effect that is a DynamoDB write, committed with the stored answer in one transaction.
    let (p, db, table_name) = (
        probe.clone(),
        stack.aws.dynamodb.clone(),
        stack.resources.table_name.clone(),
    );
    let commit =
        move |headers: http::HeaderMap,
              lock: Option<axum::Extension<sluice::idempotency::IdempotencyLock>>| {
            let (p, db, table_name) = (p.clone(), db.clone(), table_name.clone());
            async move {
                p.calls.fetch_add(1, Ordering::SeqCst);
                p.entered.notify_one();
                if headers.get("x-gate").is_some_and(|v| v == "second") {
                    p.second_gate.acquire().await.unwrap().forget();
                } else {
                    p.gate.acquire().await.unwrap().forget();
                }
                let effect = sluice::ids::new_id("eff");
                let put = aws_sdk_dynamodb::types::Put::builder()
                    .table_name(&table_name)
                    .set_item(Some(table::key("EFFECT", &effect)))
                    .build()
                    .unwrap();
                let items = vec![
                    aws_sdk_dynamodb::types::TransactWriteItem::builder()
                        .put(put)
                        .build(),
                ];
                let answer = sluice::idempotency::StoredResponse::json(
                    StatusCode::CREATED,
                    &json!({ "effect": effect }),
                );
                let lock = lock.as_ref().map(|axum::Extension(l)| l);
                match sluice::idempotency::commit_with_response(&db, items, lock, answer).await {
                    Ok(res) => res,
                    Err(err) => {
                        axum::response::IntoResponse::into_response(sluice::ApiError::from(err))
                    }
                }
            }
        };
    let base = IdempotencyLayer::new(
        stack.aws.dynamodb.clone(),
        &stack.resources.table_name,
        Scope::fixed("test"),
    );
    Router::new()
        .route("/count", post(count))
        .route("/flaky", post(flaky))
        .route("/panic", post(panics))
        .route("/slow", post(slow))
        .route("/reject", post(reject))
        .route("/later", post(later))
        .route("/accepted", post(accepted))
        .route("/commit", post(commit))
        .layer(layer(base))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn call(app: &Router, path: &str, key: Option<&str>, body: &str) -> Answer {
    call_with(app, http::Request::post(path), key, body).await
}

async fn call_with(
    app: &Router,
    mut req: http::request::Builder,
    key: Option<&str>,
    body: &str,
) -> Answer {
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn replayed(a: &Answer) -> bool {
    a.headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn a_retry_replays_the_first_answer_byte_for_byte_in_one_dynamodb_request() {
    // GIVEN a service wrapped in the layer, whose SDK requests are counted
    let counter = CallCounter::default();
    let stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);

    // WHEN a keyed request runs, THEN its status, location and body come back
    let first = call(&app, "/count", Some("k-1"), "{}").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!replayed(&first));

    // WHEN it is retried
    counter.reset();
    let again = call(&app, "/count", Some("k-1"), "{}").await;

    // THEN nothing runs again, the answer is identical and marked, for one DynamoDB request
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["content-type"], first.headers["content-type"]);
    assert_eq!(again.headers["location"], "/things/1");
    assert!(replayed(&again));
    assert_eq!(counter.calls().len(), 1, "{:?}", counter.calls());
    assert_eq!(
        counter.operations("DynamoDB"),
        ["PutItem"],
        "one conditional PutItem"
    );

    // Without a key the request simply runs.
    call(&app, "/count", None, "{}").await;
    assert_eq!(probe.effects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    assert_eq!(
        call(&app, "/count", Some("k"), "{\"a\":1}").await.status,
        201
    );

    // Another body, another path, another query: 422, nothing runs.
    for (path, body) in [
        ("/count", "{\"a\":2}"),
        ("/flaky", "{\"a\":1}"),
        ("/count?x=1", "{\"a\":1}"),
    ] {
        let res = call(&app, path, Some("k"), body).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}"
        );
        assert_eq!(res.headers["content-type"], "application/problem+json");
    }
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_keys_are_refused_and_keys_can_be_required() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    let long = "k".repeat(256);
    for bad in ["has space", long.as_str(), "", "ünïcode"] {
        let req = http::Request::post("/count")
            .header(
                "idempotency-key",
                http::HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?}");
    }
    // The alias header is honoured.
    let req = || {
        http::Request::post("/count")
            .header("x-idempotency-key", "alias-key")
            .body(Body::empty())
            .unwrap()
    };
    app.clone().oneshot(req()).await.unwrap();
    let res = app.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);

    // required = true: a write without a key is refused, a read is not covered.
    let strict = service(&stack, &probe, |l| l.required(true));
    assert_eq!(
        call(&strict, "/count", None, "").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_have_one_effect() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    let answers = join_all((0..20).map(|_| call(&app, "/count", Some("same"), "{}"))).await;

    assert_eq!(
        probe.effects.load(Ordering::SeqCst),
        1,
        "exactly one effect"
    );
    let first = answers
        .iter()
        .find(|a| a.status == 201 && !replayed(a))
        .expect("one ran");
    for a in &answers {
        match a.status.as_u16() {
            201 => assert_eq!(a.body, first.body, "every 201 is the same answer"),
            409 => assert!(a.headers.contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.status == 201 && !replayed(a))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_request_still_running_answers_409_with_retry_after() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    let first = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "/slow", Some("busy"), "one").await }
    });
    probe.entered.notified().await;

    let res = call(&app, "/slow", Some("busy"), "one").await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert!(res.headers.contains_key("retry-after"));

    probe.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.body, "one");
    let again = call(&app, "/slow", Some("busy"), "one").await;
    assert!(replayed(&again));
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_5xx_or_a_panic_releases_the_key_and_a_4xx_is_stored() {
    let stack = Stack::new().await;

    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    assert_eq!(call(&app, "/flaky", Some("k"), "").await.status, 500);
    let retry = call(&app, "/flaky", Some("k"), "").await;
    assert_eq!(retry.status, 200, "the key was released, the retry ran");
    assert!(!replayed(&retry));
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);

    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    let crashed = call(&app, "/panic", Some("p"), "").await;
    assert_eq!(crashed.status, 500);
    assert_eq!(crashed.headers["content-type"], "application/problem+json");
    assert!(!String::from_utf8_lossy(&crashed.body).contains("handler bug"));
    assert_eq!(call(&app, "/panic", Some("p"), "").await.status, 200);

    // A 4xx is an answer: stored and replayed, as Stripe does.
    call(&app, "/reject", Some("r"), "").await;
    let again = call(&app, "/reject", Some("r"), "").await;
    assert_eq!(again.status, 409);
    assert!(replayed(&again));
}

#[tokio::test]
async fn an_expired_record_is_ignored_before_ttl_deletes_it() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    // GIVEN a completed record for a different request whose ttl has passed (DynamoDB has not
    // swept it yet), and an in-progress record whose lock expired
    let now = clock::now_epoch();
    for (key, status, lock_expires_ms, ttl) in [
        ("expired", "completed", None, now - 1),
        (
            "crashed",
            "in_progress",
            Some(clock::now_epoch_millis() - 1),
            now + 3600,
        ),
    ] {
        let mut item = table::key(record_pk("test", key), RECORD_SK);
        item.insert("status".into(), s(status));
        item.insert("fingerprint".into(), s("00".repeat(32)));
        item.insert("lock_token".into(), s("lock_old"));
        item.insert("response_status".into(), n(418));
        item.insert(table::TTL.into(), n(ttl));
        if let Some(ms) = lock_expires_ms {
            item.insert("lock_expires_at".into(), n(ms));
        }
        stack
            .aws
            .dynamodb
            .put_item()
            .table_name(&stack.resources.table_name)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    // WHEN requests use those keys THEN they run as first requests
    for key in ["expired", "crashed"] {
        let res = call(&app, "/count", Some(key), "{}").await;
        assert_eq!(res.status, 201, "{key}");
        assert!(!replayed(&res));
    }
    assert_eq!(probe.effects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_late_writer_cannot_overwrite_a_newer_owner() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    // Locks last 1 s here (outside Lambda there is no deadline to use).
    let app = service(&stack, &probe, |l| l.lock_timeout(Duration::from_secs(1)));

    // GIVEN request A holds the key and hangs past its lock
    let a = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "/slow", Some("late"), "same").await }
    });
    probe.entered.notified().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // WHEN request B (a retry of A) takes the expired lock over and completes
    let b = tokio::spawn({
        let app = app.clone();
        async move {
            let req = http::Request::post("/slow").header("x-gate", "second");
            call_with(&app, req, Some("late"), "same").await
        }
    });
    probe.entered.notified().await;
    probe.second_gate.add_permits(1);
    // Let B finish first (A is still waiting on the gate) and save its answer.
    let b = b.await.unwrap();
    assert_eq!(b.status, 200);
    let record = stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(record_pk("test", "late"), RECORD_SK)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let b_token = record.get_s("lock_token").unwrap().to_owned();

    // THEN A finishing late changes nothing: the record is still B's
    probe.gate.add_permits(1);
    let a = a.await.unwrap();
    assert_eq!(a.status, 200);
    let after = stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(record_pk("test", "late"), RECORD_SK)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(after.get_s("lock_token"), Some(b_token.as_str()));
    assert_eq!(after.get_s("status"), Some("completed"));
    assert_eq!(probe.calls.load(Ordering::SeqCst), 2);
}

// ---- through the tenant API ----

#[tokio::test]
async fn usage_costs_two_dynamodb_requests_and_its_replay_one_besides_authentication() {
    let counter = CallCounter::default();
    let stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    credit(&stack, &tenant, 10_000).await;
    // The first debit of a month sets the month's counters (one more attempt): warm it.
    stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 1})),
        )
        .await;

    counter.reset();
    let first = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .idempotency_key("usage-1")
                .json(&json!({"amount_minor": 250, "description": "tts"})),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    // Authentication's API-key lookup, then the lock, then effect + completion in one transaction.
    assert_eq!(counter.calls().len(), 3, "{:?}", counter.calls());
    assert_eq!(
        counter.operations("DynamoDB"),
        ["GetItem", "PutItem", "TransactWriteItems"]
    );

    counter.reset();
    let again = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .idempotency_key("usage-1")
                .json(&json!({"amount_minor": 250, "description": "tts"})),
        )
        .await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(counter.calls().len(), 2, "{:?}", counter.calls());
    assert_eq!(counter.operations("DynamoDB"), ["GetItem", "PutItem"]);

    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["credits"]["balance_minor"], 10_000 - 1 - 250);
}

#[tokio::test]
async fn twenty_concurrent_usage_requests_with_one_key_debit_once() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    credit(&stack, &tenant, 10_000).await;
    let answers = join_all((0..20).map(|_| {
        stack.send(
            Req::post("/v1/usage")
                .bearer(&key)
                .idempotency_key("once")
                .json(&json!({"amount_minor": 100})),
        )
    }))
    .await;
    for a in &answers {
        assert!(
            matches!(a.status.as_u16(), 201 | 409),
            "{} {}",
            a.status,
            a.text()
        );
    }
    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["credits"]["balance_minor"], 9_900);
    let ledger = stack.send(Req::get("/v1/ledger").bearer(&key)).await.json();
    let debits = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "debit")
        .count();
    assert_eq!(debits, 1);
}

#[tokio::test]
async fn a_402_is_stored_and_replayed_like_any_answer() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    let req = || {
        Req::post("/v1/usage")
            .bearer(&key)
            .idempotency_key("short")
            .json(&json!({"amount_minor": 500}))
    };
    stack.send(req()).await.assert_problem(402);
    credit(&stack, &tenant, 1_000).await;
    let again = stack.send(req()).await;
    again.assert_problem(402);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // A new key after the top-up runs.
    let res = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .idempotency_key("short-2")
                .json(&json!({"amount_minor": 500})),
        )
        .await;
    assert_eq!(res.status, 201);
}

#[tokio::test]
async fn the_same_key_from_two_tenants_makes_two_requests() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    for (key, value) in [(&key_a, "sk-aaaa-1111"), (&key_b, "sk-bbbb-2222")] {
        let res = stack
            .send(
                Req::post("/v1/secrets")
                    .bearer(key)
                    .idempotency_key("shared-key")
                    .json(&json!({"provider": "openai", "value": value})),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
        assert_eq!(res.header("idempotent-replayed"), None);
    }
    let b = stack
        .send(Req::get("/v1/secrets").bearer(&key_b))
        .await
        .json();
    assert_eq!(b["data"][0]["hint"], "…2222");
}

#[tokio::test]
async fn answers_carrying_secrets_are_replayed_but_stored_only_sealed() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let req = || {
        Req::post("/v1/endpoints")
            .bearer(&key)
            .idempotency_key("ep-1")
            .json(&json!({"url": "http://127.0.0.1:9/hook"}))
    };
    let first = stack.send(req()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = stack.send(req()).await;
    assert_eq!(again.body, first.body, "the same endpoint and secret");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let list = stack
        .send(Req::get("/v1/endpoints").bearer(&key))
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // The admin API's answers carry API keys: the same holds there.
    let admin = || {
        Req::post("/admin/tenants")
            .admin(&stack.admin_key)
            .idempotency_key("tenant-1")
            .json(&json!({"name": "Beta"}))
    };
    let created = stack.send(admin()).await;
    assert_eq!(created.status, 201);
    assert_eq!(stack.send(admin()).await.body, created.body);

    let secret = first.json()["secret"].as_str().unwrap().to_owned();
    let api_key = created.json()["api_key"].as_str().unwrap().to_owned();
    let dump = crate::tenant_api::scan_all(&stack).await;
    for plaintext in [&secret, &api_key] {
        assert!(!dump.iter().any(|v| contains(v, plaintext.as_bytes())));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn with_idempotency_required_every_write_needs_a_key() {
    let stack = Stack::with_settings(&[("IDEMPOTENCY_REQUIRED", "true")]).await;
    let create = |key: Option<&str>| {
        let req = Req::post("/admin/tenants")
            .admin(&stack.admin_key)
            .json(&json!({"name": "Acme"}));
        match key {
            Some(k) => req.idempotency_key(k),
            None => req,
        }
    };
    stack.send(create(None)).await.assert_problem(400);
    let created = stack.send(create(Some("t-1"))).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let api_key = created.json()["api_key"].as_str().unwrap().to_owned();

    stack
        .send(
            Req::post("/v1/usage")
                .bearer(&api_key)
                .json(&json!({"amount_minor": 1})),
        )
        .await
        .assert_problem(400);
    // Reads are not writes.
    let account = stack.send(Req::get("/v1/account").bearer(&api_key)).await;
    assert_eq!(account.status, 200);
    // A malformed key is refused before anything runs, required or not.
    stack
        .send(
            Req::post("/v1/usage")
                .bearer(&api_key)
                .header("idempotency-key", "two words")
                .json(&json!({"amount_minor": 1})),
        )
        .await
        .assert_problem(400);
}

#[tokio::test]
async fn an_effect_committed_after_its_lock_was_lost_is_not_written() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l.lock_timeout(Duration::from_secs(1)));

    // GIVEN request A hangs past its lock, and its retry B takes the key over and commits
    let a = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "/commit", Some("k"), "{}").await }
    });
    probe.entered.notified().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let b = tokio::spawn({
        let app = app.clone();
        async move {
            let req = http::Request::post("/commit").header("x-gate", "second");
            call_with(&app, req, Some("k"), "{}").await
        }
    });
    probe.entered.notified().await;
    probe.second_gate.add_permits(1);
    let b = b.await.unwrap();
    assert_eq!(b.status, 201);

    // WHEN A finally commits THEN its transaction fails as a whole: 409, no second effect
    probe.gate.add_permits(1);
    let a = a.await.unwrap();
    assert_eq!(a.status, StatusCode::CONFLICT);
    let effects = stack
        .aws
        .dynamodb
        .query()
        .table_name(&stack.resources.table_name)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("EFFECT"))
        .send()
        .await
        .unwrap();
    assert_eq!(effects.count(), 1);
    // … and a further retry replays B's answer.
    let c = call(&app, "/commit", Some("k"), "{}").await;
    assert!(replayed(&c));
    assert_eq!(c.body, b.body);
}

#[tokio::test]
async fn answers_asking_for_a_retry_release_the_key_so_the_retry_can_succeed() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);

    // GIVEN a first answer "409, Retry-After: 1" and then "429"
    let first = call(&app, "/later", Some("k"), "").await;
    assert_eq!(first.status, 409);
    assert!(!replayed(&first));
    let second = call(&app, "/later", Some("k"), "").await;
    assert_eq!(second.status, 429, "the 409 was not stored: the retry ran");
    assert!(!replayed(&second));

    // WHEN the client retries once more THEN it runs and its answer is the one kept
    let third = call(&app, "/later", Some("k"), "").await;
    assert_eq!(third.status, 201);
    assert!(!replayed(&third));
    let again = call(&app, "/later", Some("k"), "").await;
    assert!(replayed(&again));
    assert_eq!(again.body, third.body);
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retry_after_is_kept_with_a_stored_answer_and_replayed() {
    let stack = Stack::new().await;
    let probe = Probe::default();
    let app = service(&stack, &probe, |l| l);
    let first = call(&app, "/accepted", Some("k"), "").await;
    assert_eq!(first.status, 202);
    let again = call(&app, "/accepted", Some("k"), "").await;
    assert!(replayed(&again));
    assert_eq!(again.status, 202);
    assert_eq!(again.headers["retry-after"], "30");
    assert_eq!(probe.effects.load(Ordering::SeqCst), 1);
}

/// A stack whose clients can lose responses, with a tenant holding 10 000 and a first debit
/// of 1 made (it sets the month's counters, so later debits are one transaction each).
async fn debit_stack(faults: &FaultInjector) -> (Stack, String) {
    let counter = CallCounter::default();
    let stack = Stack::with_clients(instrumented_clients(&counter, faults).await, &[]).await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    credit(&stack, &tenant, 10_000).await;
    let warm = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 1})),
        )
        .await;
    assert_eq!(warm.status, 201, "{}", warm.text());
    (stack, key)
}

async fn balance_and_debits(stack: &Stack, key: &str) -> (i64, usize) {
    let account = stack.send(Req::get("/v1/account").bearer(key)).await.json();
    let ledger = stack.send(Req::get("/v1/ledger").bearer(key)).await.json();
    let debits = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "debit")
        .count();
    (
        account["credits"]["balance_minor"].as_i64().unwrap(),
        debits,
    )
}

#[tokio::test]
async fn a_debit_whose_commit_response_is_lost_debits_once_and_its_retry_replays_the_answer() {
    let faults = FaultInjector::default();
    let (stack, key) = debit_stack(&faults).await;
    let usage = || {
        Req::post("/v1/usage")
            .bearer(&key)
            .idempotency_key("lost")
            .json(&json!({"amount_minor": 250, "description": "tts"}))
    };

    // GIVEN DynamoDB applies the debit's transaction, and its response is lost, and so is the
    // response of the resend
    faults.lose_next_responses("dynamodb", Some("TransactWriteItems"), 2);
    // WHEN the request answers 500
    stack.send(usage()).await.assert_problem(500);

    // THEN the completed record was not released: the retry replays the debit, once
    let retry = stack.send(usage()).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json()["amount_minor"], -250);
    assert_eq!(
        balance_and_debits(&stack, &key).await,
        (10_000 - 1 - 250, 2)
    );
}

#[tokio::test]
async fn a_commit_whose_response_is_lost_once_is_resent_as_the_same_request_and_answered() {
    let faults = FaultInjector::default();
    let (stack, key) = debit_stack(&faults).await;
    let usage = || {
        Req::post("/v1/usage")
            .bearer(&key)
            .idempotency_key("lost-once")
            .json(&json!({"amount_minor": 250}))
    };

    // GIVEN DynamoDB applies the transaction and its response is lost
    faults.lose_next_responses("dynamodb", Some("TransactWriteItems"), 1);
    // WHEN the layer resends it THEN the resend finds the record it completed: 201, debited once
    let first = stack.send(usage()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(
        balance_and_debits(&stack, &key).await,
        (10_000 - 1 - 250, 2)
    );

    let retry = stack.send(usage()).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    assert_eq!(
        balance_and_debits(&stack, &key).await,
        (10_000 - 1 - 250, 2)
    );
}
