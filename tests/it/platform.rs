//! Platform: template ↔ local stack ↔ code agreement, tenants and auth, health, the local runner.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use aws_sdk_dynamodb::types::KeyType;
use aws_sdk_sqs::types::QueueAttributeName;
use http::StatusCode;
use serde_json::json;
use sluice::table;
use sluice_local::provision::StackDefinition;

use crate::support::{Req, Stack, emulator};

#[test]
fn template_definitions_match_the_code() {
    // GIVEN the SAM template WHEN its definitions are read THEN they are the shapes the code uses.
    let def = StackDefinition::from_template().unwrap();
    assert_eq!(
        def.table.key_schema,
        vec![
            (table::PK.into(), "HASH".into()),
            (table::SK.into(), "RANGE".into())
        ]
    );
    // Outbound events: whole items. Stripe events: the listing's attributes, never the payload.
    let stripe_listed: Vec<String> = sluice::stripe::store::INDEX_ATTRIBUTES
        .map(String::from)
        .to_vec();
    let expected = [
        (table::GSI1, table::GSI1PK, table::GSI1SK, "ALL", Vec::new()),
        (
            table::GSI2,
            table::GSI2PK,
            table::GSI2SK,
            "INCLUDE",
            stripe_listed,
        ),
    ];
    assert_eq!(def.table.indexes.len(), expected.len());
    for (index, (name, pk, sk, projection, listed)) in def.table.indexes.iter().zip(expected) {
        assert_eq!(index.name, name);
        assert_eq!(
            index.key_schema,
            vec![(pk.into(), "HASH".into()), (sk.into(), "RANGE".into())]
        );
        assert_eq!(index.projection, projection);
        assert_eq!(index.non_key_attributes, listed);
    }
    assert_eq!(def.table.ttl_attribute, table::TTL);
    assert!(def.table.ttl_enabled);
    for attr in [
        table::PK,
        table::SK,
        table::GSI1PK,
        table::GSI1SK,
        table::GSI2PK,
        table::GSI2SK,
    ] {
        assert!(
            def.table.attributes.contains(&(attr.into(), "S".into())),
            "{attr} is defined as a string"
        );
    }
    assert!(def.key_rotation, "KMS key rotation is enabled");
    assert_eq!(def.key_spec, "SYMMETRIC_DEFAULT");
}

#[tokio::test]
async fn the_local_stack_is_provisioned_as_the_template_says() {
    let stack = Stack::new().await;
    let def = StackDefinition::from_template().unwrap();
    let aws = &stack.aws;

    let table = aws
        .dynamodb
        .describe_table()
        .table_name(&stack.resources.table_name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<(String, String)> = table
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys, def.table.key_schema);
    for (gsi, def) in table
        .global_secondary_indexes()
        .iter()
        .zip(&def.table.indexes)
    {
        assert_eq!(gsi.index_name(), Some(def.name.as_str()));
        assert_eq!(gsi.key_schema()[0].key_type(), &KeyType::Hash);
        assert_eq!(gsi.key_schema()[0].attribute_name(), def.key_schema[0].0);
        let projection = gsi.projection().unwrap();
        assert_eq!(
            projection.projection_type().map(|p| p.as_str()),
            Some(def.projection.as_str())
        );
        assert_eq!(projection.non_key_attributes(), def.non_key_attributes);
    }
    assert_eq!(table.global_secondary_indexes().len(), 2);

    let ttl = aws
        .dynamodb
        .describe_time_to_live()
        .table_name(&stack.resources.table_name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some(table::TTL)
    );

    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.resources.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        def.max_receive_count.to_string()
    );
    assert_eq!(
        attrs[&QueueAttributeName::VisibilityTimeout],
        def.queue_visibility_timeout_secs.to_string()
    );

    let rotation = aws
        .kms
        .get_key_rotation_status()
        .key_id(&stack.resources.kms_key_id)
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());
}

#[tokio::test]
async fn admin_creates_a_tenant_whose_key_authenticates_until_revoked() {
    let stack = Stack::new().await;

    // Wrong or missing admin key → 401 problem.
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin("not-the-key")
                .json(&json!({"name": "Acme"})),
        )
        .await;
    res.assert_problem(401);
    let res = stack
        .send(Req::post("/admin/tenants").json(&json!({"name": "Acme"})))
        .await;
    res.assert_problem(401);

    // Bad input → a problem naming the field.
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": ""})),
        )
        .await;
    assert!(
        res.assert_problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("name")
    );
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .body("{not json"),
        )
        .await;
    res.assert_problem(400);

    // The admin creates a tenant and gets a key, shown once.
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Acme", "monthly_budget_minor": 5000, "currency": "EUR"})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    let tenant_id = body["id"].as_str().unwrap().to_owned();
    let first_key = body["api_key"].as_str().unwrap().to_owned();
    assert!(tenant_id.starts_with("tnt_"));
    assert_eq!(body["currency"], "eur");

    // The key is stored only as a digest.
    let scan = stack
        .aws
        .dynamodb
        .scan()
        .table_name(&stack.resources.table_name)
        .send()
        .await
        .unwrap();
    assert!(
        !format!("{:?}", scan.items()).contains(&first_key),
        "plaintext API key stored"
    );

    // No key, a malformed header, or a wrong key → 401 on /v1.
    stack
        .send(Req::get("/v1/account"))
        .await
        .assert_problem(401);
    stack
        .send(Req::get("/v1/account").header("authorization", "Token abc"))
        .await
        .assert_problem(401);
    stack
        .send(Req::get("/v1/account").bearer("sk_wrong"))
        .await
        .assert_problem(401);
    let authed = stack.send(Req::get("/v1/account").bearer(&first_key)).await;
    assert_ne!(authed.status, StatusCode::UNAUTHORIZED, "{}", authed.text());

    // A second key works; revoking it makes it fail while the first still works.
    let res = stack
        .send(Req::post(&format!("/admin/tenants/{tenant_id}/api-keys")).admin(&stack.admin_key))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let second = res.json();
    let (key_id, second_key) = (
        second["key_id"].as_str().unwrap(),
        second["api_key"].as_str().unwrap(),
    );
    assert_ne!(
        stack
            .send(Req::get("/v1/account").bearer(second_key))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let res = stack
        .send(
            Req::delete(&format!("/admin/tenants/{tenant_id}/api-keys/{key_id}"))
                .admin(&stack.admin_key),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    stack
        .send(Req::get("/v1/account").bearer(second_key))
        .await
        .assert_problem(401);
    assert_ne!(
        stack
            .send(Req::get("/v1/account").bearer(&first_key))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Revoking again, or for an unknown tenant → 404.
    stack
        .send(
            Req::delete(&format!("/admin/tenants/{tenant_id}/api-keys/{key_id}"))
                .admin(&stack.admin_key),
        )
        .await
        .assert_problem(404);
    stack
        .send(
            Req::post("/admin/tenants/tnt_missing000000000000000/api-keys").admin(&stack.admin_key),
        )
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn health_checks_every_dependency() {
    let stack = Stack::new().await;
    let res = stack.send(Req::get("/health")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let body = res.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(
        body["checks"],
        json!({"dynamodb": "ok", "sqs": "ok", "kms": "ok"})
    );

    // GIVEN a queue that does not exist WHEN health is asked THEN it is unhealthy with 503.
    let mut broken = Stack::new().await;
    broken.config.queue_url = format!("{}/123456789012/missing-queue", emulator().endpoint);
    let res = broken.send(Req::get("/health")).await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        res.text()
    );
    let body = res.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["sqs"], "error");
    assert_eq!(body["checks"]["dynamodb"], "ok");
}

#[tokio::test]
async fn the_local_runner_serves_the_stack_and_stops_cleanly() {
    let port = sluice_local::emulator::free_port().unwrap();
    let aws_port = sluice_local::emulator::free_port().unwrap();
    let admin_key = "local-admin-key-for-the-runner-test";
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-local"))
        .arg("dev")
        .env("SLUICE_PORT", port.to_string())
        .env("SLUICE_AWS_PORT", aws_port.to_string())
        .env("SLUICE_ADMIN_KEY", admin_key)
        .env_remove("STRIPE_WEBHOOK_SECRETS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")),
        "{banner}"
    );
    assert!(
        banner.contains("STRIPE_WEBHOOK_SECRETS   whsec_"),
        "a Stripe secret is generated and printed: {banner}"
    );

    let base = format!("http://127.0.0.1:{port}");
    let http = crate::support::http_client();
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(
        health["checks"],
        json!({"dynamodb": "ok", "sqs": "ok", "kms": "ok"})
    );

    let created = http
        .post(format!("{base}/admin/tenants"))
        .header("x-admin-key", admin_key)
        .json(&json!({"name": "Local"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert!(created["api_key"].as_str().unwrap().starts_with("sk_"));
    assert_eq!(
        http.get(format!("{base}/v1/account"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = http
        .post(format!("{base}/admin/tenants"))
        .header("x-admin-key", "wrong")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // SIGTERM (as Ctrl-C) stops the runner and its emulator.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "runner exits cleanly: {status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", aws_port)).is_err(),
        "the emulator is stopped"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is stopped"
    );
}

#[tokio::test]
async fn aws_requests_are_counted_per_service_and_operation() {
    let counter = sluice_local::counting::CallCounter::new();
    let stack = crate::support::Stack::with_clients(
        counter.clients(&crate::support::emulator().sdk_config().await),
        &[],
    )
    .await;
    counter.reset();
    stack.create_tenant("Counted").await;
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);
    counter.reset();
    stack.send(crate::support::Req::get("/health")).await;
    let mut calls = counter.calls();
    calls.sort();
    let names: Vec<_> = calls.iter().map(|(_, op)| op.as_str()).collect();
    assert_eq!(
        names,
        // BatchGetItem: the last 24 h of statistics counters.
        [
            "BatchGetItem",
            "DescribeTable",
            "DescribeKey",
            "GetQueueAttributes"
        ]
    );
}

/// Sends `req` to one long-lived instance of the functions (as a warm Lambda keeps its state).
async fn invoke(functions: &sluice_local::server::HttpFunctions, req: Req) -> StatusCode {
    let mut builder = http::Request::builder().method(req.method).uri(req.path);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    functions
        .invoke(sluice_local::server::lambda_request(parts, req.body))
        .await
        .status()
}

/// `POST /admin/tenants/{id}/api-keys` → (key, key id).
async fn add_key(stack: &Stack, tenant: &str) -> (String, String) {
    let added = stack
        .send(Req::post(&format!("/admin/tenants/{tenant}/api-keys")).admin(&stack.admin_key))
        .await
        .json();
    (
        added["api_key"].as_str().unwrap().to_owned(),
        added["key_id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_warm_instance_remembers_api_keys_and_forgets_the_ones_it_revokes() {
    let counter = sluice_local::counting::CallCounter::new();
    let stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let (tenant, _) = stack.create_tenant("Cached").await;
    let (key, key_id) = add_key(&stack, &tenant).await;
    let warm = stack.functions();
    let account = || Req::get("/v1/account").bearer(&key);

    // GIVEN a warm instance: the first request looks the key up, the next ones do not.
    counter.reset();
    assert_eq!(invoke(&warm, account()).await, 200);
    let cold = counter.count("DynamoDB");
    counter.reset();
    assert_eq!(invoke(&warm, account()).await, 200);
    assert_eq!(counter.count("DynamoDB"), cold - 1, "{:?}", counter.calls());

    // WHEN this instance revokes the key THEN it refuses it at once.
    let revoke =
        Req::delete(&format!("/admin/tenants/{tenant}/api-keys/{key_id}")).admin(&stack.admin_key);
    assert_eq!(invoke(&warm, revoke).await, 204);
    assert_eq!(invoke(&warm, account()).await, 401);
}

#[tokio::test]
async fn without_the_key_cache_a_key_revoked_elsewhere_is_refused_at_once() {
    let stack = Stack::with_settings(&[("API_KEY_CACHE_SECS", "0")]).await;
    let (tenant, _) = stack.create_tenant("Uncached").await;
    let (key, key_id) = add_key(&stack, &tenant).await;
    let warm = stack.functions();
    assert_eq!(
        invoke(&warm, Req::get("/v1/account").bearer(&key)).await,
        200
    );
    // Revoked through another instance.
    let res = stack
        .send(
            Req::delete(&format!("/admin/tenants/{tenant}/api-keys/{key_id}"))
                .admin(&stack.admin_key),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(
        invoke(&warm, Req::get("/v1/account").bearer(&key)).await,
        401
    );
}

/// Issue 14: `POST /v1/events` sends nothing to SQS (the outbox relay does, after the commit).
#[tokio::test]
async fn post_v1_events_makes_no_sqs_call_and_one_transaction() {
    let counter = sluice_local::counting::CallCounter::new();
    let stack = crate::support::Stack::with_clients(
        counter.clients(&crate::support::emulator().sdk_config().await),
        &[],
    )
    .await;
    let (_, key) = stack.create_tenant("Counted").await;
    let functions = stack.functions();
    // A warm instance: its API key lookup is cached.
    invoke(&functions, Req::get("/v1/account").bearer(&key)).await;
    counter.reset();
    let status = invoke(
        &functions,
        Req::post("/v1/events")
            .bearer(&key)
            .header("idempotency-key", "publish-1")
            .json(&serde_json::json!({"type": "x.y", "data": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(counter.count("SQS"), 0);
    // The lock, the endpoints the answer names (SPEC: `202 {id, endpoints}`), then ONE
    // transaction: the event, its deliveries and the idempotency completion.
    assert_eq!(
        counter.operations("DynamoDB"),
        ["PutItem", "Query", "TransactWriteItems"]
    );
    // Its replay is the lock's one request.
    counter.reset();
    let again = invoke(
        &functions,
        Req::post("/v1/events")
            .bearer(&key)
            .header("idempotency-key", "publish-1")
            .json(&serde_json::json!({"type": "x.y", "data": {}})),
    )
    .await;
    assert_eq!(again, StatusCode::ACCEPTED);
    assert_eq!(counter.operations("DynamoDB"), ["PutItem"]);
}
