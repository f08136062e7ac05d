//! The tenant API (SPEC §5.2) and secrets at rest (SPEC §8), against the local stack.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use http::StatusCode;
use serde_json::{Value, json};
use sluice::{
    account::{LedgerEntry, LedgerKind, credit_items},
    clock,
    fanout::DeliveryMessage,
    sealing::{self, SealContext, Sealer},
    table::{self, ItemExt, s},
};

use sluice_local::counting::CallCounter;

use crate::support::{Req, Stack, emulator, get_item};

// ---- helpers ----

/// Credits a tenant the way Stripe ingress does (the shared core function).
pub async fn credit(stack: &Stack, tenant_id: &str, amount: i64) {
    let entry = LedgerEntry::new(
        LedgerKind::Credit,
        amount,
        Some("usd"),
        Some("top-up"),
        "test",
    );
    stack
        .aws
        .dynamodb
        .transact_write_items()
        .set_transact_items(Some(
            credit_items(&stack.resources.table_name, tenant_id, &entry).to_vec(),
        ))
        .send()
        .await
        .unwrap();
}

/// Every string and binary value of every item of the stack's table (nested ones included).
pub async fn scan_all(stack: &Stack) -> Vec<Vec<u8>> {
    fn walk(v: &AttributeValue, out: &mut Vec<Vec<u8>>) {
        match v {
            AttributeValue::S(s) => out.push(s.as_bytes().to_vec()),
            AttributeValue::B(b) => out.push(b.as_ref().to_vec()),
            AttributeValue::L(l) => l.iter().for_each(|v| walk(v, out)),
            AttributeValue::M(m) => m.values().for_each(|v| walk(v, out)),
            AttributeValue::Ss(ss) => out.extend(ss.iter().map(|s| s.as_bytes().to_vec())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = stack
            .aws
            .dynamodb
            .scan()
            .table_name(&stack.resources.table_name)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            item.values().for_each(|v| walk(v, &mut out));
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return out,
        }
    }
}

async fn create_endpoint(stack: &Stack, key: &str, body: Value) -> Value {
    let res = stack
        .send(Req::post("/v1/endpoints").bearer(key).json(&body))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()
}

/// Outbound events of a tenant, by type.
async fn events_of_type(stack: &Stack, tenant_id: &str, event_type: &str) -> usize {
    let out = stack
        .aws
        .dynamodb
        .query()
        .table_name(&stack.resources.table_name)
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", s(table::tenant_pk(tenant_id)))
        .expression_attribute_values(":p", s("EVENT#"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .filter(|i| i.get_s("type") == Some(event_type))
        .count()
}

// ---- account, usage, ledger, budget ----

#[tokio::test]
async fn usage_debits_atomically_and_402_debits_nothing() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;

    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["tenant"]["id"], tenant.as_str());
    assert_eq!(
        account["credits"],
        json!({"balance_minor": 0, "currency": "usd"})
    );
    assert_eq!(account["subscription"], Value::Null);
    assert_eq!(account["budget"]["status"], "ok");

    let short = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 1})),
        )
        .await;
    short.assert_problem(402);

    credit(&stack, &tenant, 1_000).await;
    let res = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 300, "description": "llm tokens"})),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let entry = res.json();
    assert_eq!(entry["type"], "debit");
    assert_eq!(entry["amount_minor"], -300);
    assert!(entry["id"].as_str().unwrap().starts_with("led_"));

    stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 701})),
        )
        .await
        .assert_problem(402);
    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["credits"]["balance_minor"], 700);

    for bad in [
        json!({"amount_minor": 0}),
        json!({"amount_minor": -5}),
        json!({}),
    ] {
        let res = stack
            .send(Req::post("/v1/usage").bearer(&key).json(&bad))
            .await;
        assert!(matches!(res.status.as_u16(), 400 | 422), "{bad}");
    }
}

#[tokio::test]
async fn concurrent_debits_never_go_below_zero_nor_debit_twice() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    credit(&stack, &tenant, 1_000).await;

    // 25 different requests of 100 against a balance of 1 000, some of them sent twice.
    let key = &key;
    let answers = join_all((0..25).flat_map(|i| {
        let req = move || {
            Req::post("/v1/usage")
                .bearer(key)
                .idempotency_key(&format!("u-{i}"))
                .json(&json!({"amount_minor": 100}))
        };
        let twice = if i % 5 == 0 {
            vec![req(), req()]
        } else {
            vec![req()]
        };
        twice.into_iter().map(|r| stack.send(r))
    }))
    .await;

    let ok: HashSet<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ok.len(),
        10,
        "exactly the balance's worth of debits: {:?}",
        answers
            .iter()
            .map(|a| (a.status.as_u16(), a.text()))
            .collect::<Vec<_>>()
    );
    for a in &answers {
        assert!(matches!(a.status.as_u16(), 201 | 402 | 409), "{}", a.text());
    }
    let account = stack.send(Req::get("/v1/account").bearer(key)).await.json();
    assert_eq!(account["credits"]["balance_minor"], 0);
    let ledger = stack
        .send(Req::get("/v1/ledger?limit=100").bearer(key))
        .await
        .json();
    let debits: HashSet<String> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "debit")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(debits, ok);
}

#[tokio::test]
async fn concurrent_debits_across_the_thresholds_publish_each_alert_once() {
    let stack = Stack::new().await;
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Acme", "monthly_budget_minor": 1_000})),
        )
        .await;
    let tenant = res.json()["id"].as_str().unwrap().to_owned();
    let key = res.json()["api_key"].as_str().unwrap().to_owned();
    credit(&stack, &tenant, 100_000).await;
    let key = &key;
    let answers = join_all((0..15).map(|_| {
        stack.send(
            Req::post("/v1/usage")
                .bearer(key)
                .json(&json!({"amount_minor": 100})),
        )
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 201).count();
    for a in &answers {
        assert!(matches!(a.status.as_u16(), 201 | 409), "{}", a.text());
    }
    let account = stack.send(Req::get("/v1/account").bearer(key)).await.json();
    assert_eq!(account["budget"]["used_this_month_minor"], 100 * ok as i64);
    assert_eq!(
        account["credits"]["balance_minor"],
        100_000 - 100 * ok as i64
    );
    assert!(ok >= 10, "{ok} of 15 debits went through");
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 1);
    assert_eq!(events_of_type(&stack, &tenant, "budget.exceeded").await, 1);
}

#[tokio::test]
async fn the_ledger_pages_newest_first_with_a_cursor() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    credit(&stack, &tenant, 10_000).await;
    for amount in 1..=5 {
        let res = stack
            .send(
                Req::post("/v1/usage")
                    .bearer(&key)
                    .json(&json!({"amount_minor": amount})),
            )
            .await;
        assert_eq!(res.status, 201);
    }
    // Newest first: 5, 4, 3, 2, 1, then the credit.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/ledger?limit=2&cursor={c}"),
            None => "/v1/ledger?limit=2".to_owned(),
        };
        let page = stack.send(Req::get(&path).bearer(&key)).await.json();
        pages += 1;
        for e in page["data"].as_array().unwrap() {
            assert_eq!(e["currency"], "usd");
            seen.push(e["amount_minor"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(c.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(seen, vec![-5, -4, -3, -2, -1, 10_000]);
    assert_eq!(pages, 3);

    stack
        .send(Req::get("/v1/ledger?limit=101").bearer(&key))
        .await
        .assert_problem(400);
    stack
        .send(Req::get("/v1/ledger?cursor=bm90LWEtY3Vyc29y").bearer(&key))
        .await
        .assert_problem(400);
    let default = stack.send(Req::get("/v1/ledger").bearer(&key)).await.json();
    assert_eq!(default["data"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn budget_alerts_are_published_once_a_month_and_rearmed_by_a_top_up() {
    let counter = CallCounter::default();
    let stack = Stack::with_clients(counter.clients(&emulator().sdk_config().await), &[]).await;
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Acme", "monthly_budget_minor": 1_000})),
        )
        .await;
    let tenant = res.json()["id"].as_str().unwrap().to_owned();
    let key = res.json()["api_key"].as_str().unwrap().to_owned();
    credit(&stack, &tenant, 100_000).await;

    let debit = |amount: i64| {
        stack.send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": amount})),
        )
    };
    let status = || async {
        stack
            .send(Req::get("/v1/account").bearer(&key))
            .await
            .json()["budget"]
            .clone()
    };

    assert_eq!(debit(700).await.status, 201);
    assert_eq!(status().await["status"], "ok");
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 0);

    // A steady-state debit needs no read: one transaction besides authentication.
    counter.reset();
    assert_eq!(debit(50).await.status, 201);
    assert_eq!(counter.count("dynamodb"), 2, "{:?}", counter.calls());

    assert_eq!(debit(100).await.status, 201); // 850: crosses 80 %
    let budget = status().await;
    assert_eq!(budget["status"], "warning");
    assert_eq!(budget["used_this_month_minor"], 850);
    assert_eq!(budget["monthly_limit_minor"], 1_000);
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 1);

    assert_eq!(debit(50).await.status, 201); // 900: no new alert
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 1);

    // A top-up re-arms the warning: the next debit above 80 % publishes it again.
    credit(&stack, &tenant, 1_000).await;
    assert_eq!(debit(50).await.status, 201); // 950
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 2);
    assert_eq!(debit(10).await.status, 201); // 960: no new alert
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 2);

    assert_eq!(debit(90).await.status, 201); // 1 050: crosses 100 %
    assert_eq!(status().await["status"], "exceeded");
    assert_eq!(events_of_type(&stack, &tenant, "budget.exceeded").await, 1);
    assert_eq!(debit(10).await.status, 201);
    assert_eq!(events_of_type(&stack, &tenant, "budget.exceeded").await, 1);

    // Each alert is an outbox item of its debit's transaction: the stream consumer relays the
    // three of them (and nothing else: no endpoints, so no Deliver messages).
    assert!(stack.queued_messages().await.is_empty());
    let drained = stack.relay_outbox().await;
    assert_eq!(
        (drained.invocations > 0, drained.failures),
        (true, 0),
        "{drained:?}"
    );

    // A top-up re-arms both alerts for this month.
    credit(&stack, &tenant, 1_000).await;
    assert_eq!(debit(10).await.status, 201);
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 3);
    assert_eq!(events_of_type(&stack, &tenant, "budget.exceeded").await, 2);
}

#[tokio::test]
async fn usage_of_an_earlier_month_does_not_count() {
    let stack = Stack::new().await;
    let res = stack
        .send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Acme", "monthly_budget_minor": 1_000})),
        )
        .await;
    let tenant = res.json()["id"].as_str().unwrap().to_owned();
    let key = res.json()["api_key"].as_str().unwrap().to_owned();
    credit(&stack, &tenant, 10_000).await;
    // GIVEN last month's counters at 95 % with both alerts sent
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(
            table::tenant_pk(&tenant),
            table::TENANT_PROFILE_SK,
        )))
        .update_expression(
            "SET budget_month = :m, used_this_month_minor = :u, budget_warning_sent = :m, \
             budget_exceeded_sent = :m",
        )
        .expression_attribute_values(":m", s("2000-01"))
        .expression_attribute_values(":u", table::n(950))
        .send()
        .await
        .unwrap();
    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["budget"]["used_this_month_minor"], 0);
    assert_eq!(account["budget"]["status"], "ok");
    // WHEN this month's first debit is 850 THEN this month's warning is published
    assert_eq!(
        stack
            .send(
                Req::post("/v1/usage")
                    .bearer(&key)
                    .json(&json!({"amount_minor": 850}))
            )
            .await
            .status,
        201
    );
    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["budget"]["used_this_month_minor"], 850);
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 1);
    let item = get_item(&stack, &table::tenant_pk(&tenant), table::TENANT_PROFILE_SK)
        .await
        .unwrap();
    assert_eq!(
        item.get_s("budget_month"),
        Some(clock::month_of(clock::now_epoch()).as_str())
    );
}

// ---- endpoints ----

#[tokio::test]
async fn endpoints_are_created_listed_updated_rotated_and_deleted() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;

    let created = create_endpoint(
        &stack,
        &key,
        json!({"url": "http://127.0.0.1:9000/hook", "event_types": ["invoice.paid"], "description": "billing"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ep_"));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["event_types"], json!(["invoice.paid"]));

    // Reads never show the secret; /secret does.
    let list = stack.send(Req::get("/v1/endpoints").bearer(&key)).await;
    assert!(!list.text().contains(&secret) && !list.text().contains("whsec_"));
    assert_eq!(list.json()["data"][0]["id"], id.as_str());
    let show = stack
        .send(Req::get(&format!("/v1/endpoints/{id}")).bearer(&key))
        .await;
    assert_eq!(show.json()["url"], "http://127.0.0.1:9000/hook");
    assert!(!show.text().contains("whsec_"));
    let revealed = stack
        .send(Req::get(&format!("/v1/endpoints/{id}/secret")).bearer(&key))
        .await
        .json();
    assert_eq!(revealed["secret"], secret.as_str());

    // PATCH: url re-validated, types, enabled; re-enabling clears the failure streak.
    stack
        .send(
            Req::patch(&format!("/v1/endpoints/{id}"))
                .bearer(&key)
                .json(&json!({"url": "http://169.254.169.254/"})),
        )
        .await
        .assert_problem(422);
    let res = stack
        .send(
            Req::patch(&format!("/v1/endpoints/{id}"))
                .bearer(&key)
                .json(&json!({"url": "http://127.0.0.1:9001/v2", "event_types": [], "enabled": false})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let patched = res.json();
    assert_eq!(patched["url"], "http://127.0.0.1:9001/v2");
    assert_eq!(patched["event_types"], json!([]));
    assert_eq!(patched["enabled"], false);
    // The egress function recorded a failure streak meanwhile.
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(
            table::tenant_pk(&tenant),
            table::endpoint_sk(&id),
        )))
        .update_expression("SET failing_since = :t, disabled_reason = :r")
        .expression_attribute_values(":t", table::n(clock::now_epoch() - 3600))
        .expression_attribute_values(":r", s("failing for 72 hours"))
        .send()
        .await
        .unwrap();
    let enabled = stack
        .send(
            Req::patch(&format!("/v1/endpoints/{id}"))
                .bearer(&key)
                .json(&json!({"enabled": true})),
        )
        .await
        .json();
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["failing_since"], Value::Null);
    assert_eq!(enabled["disabled_reason"], Value::Null);

    // Rotation: the new secret signs first, the old one beside it for 24 h.
    let rotated = stack
        .send(Req::post(&format!("/v1/endpoints/{id}/rotate-secret")).bearer(&key))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_secret = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let revealed = stack
        .send(Req::get(&format!("/v1/endpoints/{id}/secret")).bearer(&key))
        .await
        .json();
    assert_eq!(revealed["secret"], new_secret.as_str());
    let item = get_item(&stack, &table::tenant_pk(&tenant), &table::endpoint_sk(&id))
        .await
        .unwrap();
    let sealed = sealing::SealedEndpointSecret::list_from_item(&item);
    assert_eq!(sealed.len(), 2);
    assert_eq!(sealed[0].expires_at, None);
    let overlap = sealed[1].expires_at.unwrap() - clock::now_epoch();
    assert!((86_000..=86_400).contains(&overlap), "{overlap}");
    let sealer = Sealer::new(stack.aws.kms.clone(), &stack.config.kms_key_id);
    let active = sealing::endpoint_secrets(&sealer, &tenant, &item, clock::now_epoch())
        .await
        .unwrap();
    let active: Vec<&str> = active.iter().map(|s| s.expose()).collect();
    assert_eq!(active, vec![new_secret.as_str(), secret.as_str()]);

    // Delete: 204, then 404 everywhere.
    let res = stack
        .send(Req::delete(&format!("/v1/endpoints/{id}")).bearer(&key))
        .await;
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    stack
        .send(Req::get(&format!("/v1/endpoints/{id}")).bearer(&key))
        .await
        .assert_problem(404);
    stack
        .send(Req::delete(&format!("/v1/endpoints/{id}")).bearer(&key))
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn endpoint_urls_are_checked_against_ssrf() {
    // GIVEN a deployment without an allow-list (the local default allows loopback)
    let stack = Stack::with_settings(&[("EGRESS_ALLOW_CIDRS", "")]).await;
    let (_, key) = stack.create_tenant("Acme").await;
    for bad in [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.20/hook",
        "http://localhost:8080/hook",
        "ftp://example.com/hook",
        "not a url",
        "https://user:pass@example.com/hook",
    ] {
        let res = stack
            .send(
                Req::post("/v1/endpoints")
                    .bearer(&key)
                    .json(&json!({"url": bad})),
            )
            .await;
        let problem = res.assert_problem(422);
        assert!(problem["detail"].as_str().unwrap().contains("url"), "{bad}");
    }
    // A public name (or one that does not resolve here: delivery checks again) is accepted.
    create_endpoint(&stack, &key, json!({"url": "https://example.com/hook"})).await;

    // WHEN loopback is allow-listed (local development) THEN loopback endpoints work, and the
    // metadata address and private ranges stay refused.
    let local = Stack::new().await;
    let (_, key) = local.create_tenant("Acme").await;
    for ok in [
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://localhost:9000/hook",
    ] {
        create_endpoint(&local, &key, json!({"url": ok})).await;
    }
    for bad in ["http://169.254.169.254/", "http://10.0.0.5/hook"] {
        local
            .send(
                Req::post("/v1/endpoints")
                    .bearer(&key)
                    .json(&json!({"url": bad})),
            )
            .await
            .assert_problem(422);
    }
}

// ---- events ----

#[tokio::test]
async fn events_fan_out_to_matching_enabled_endpoints_and_can_be_replayed() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let all = create_endpoint(&stack, &key, json!({"url": "http://127.0.0.1:9/all"})).await;
    let paid = create_endpoint(
        &stack,
        &key,
        json!({"url": "http://127.0.0.1:9/paid", "event_types": ["invoice.paid"]}),
    )
    .await;
    let other = create_endpoint(
        &stack,
        &key,
        json!({"url": "http://127.0.0.1:9/other", "event_types": ["user.created"]}),
    )
    .await;
    let off = create_endpoint(&stack, &key, json!({"url": "http://127.0.0.1:9/off"})).await;
    stack
        .send(
            Req::patch(&format!("/v1/endpoints/{}", off["id"].as_str().unwrap()))
                .bearer(&key)
                .json(&json!({"enabled": false})),
        )
        .await;

    let res = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key)
                .json(&json!({"type": "invoice.paid", "data": {"invoice": "in_1", "amount": 42}})),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
    let body = res.json();
    let event_id = body["id"].as_str().unwrap().to_owned();
    let mut endpoints: Vec<&str> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    endpoints.sort();
    let mut expected = vec![all["id"].as_str().unwrap(), paid["id"].as_str().unwrap()];
    expected.sort();
    assert_eq!(endpoints, expected);
    assert!(!endpoints.contains(&other["id"].as_str().unwrap()));
    assert!(
        stack.queued_messages().await.is_empty(),
        "nothing sent on the request path"
    );
    stack.relay_outbox().await;
    let delivers = stack.queued_messages().await;
    assert_eq!(delivers.len(), 2, "one message per delivery");

    let shown = stack
        .send(Req::get(&format!("/v1/events/{event_id}")).bearer(&key))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let shown = shown.json();
    assert_eq!(shown["type"], "invoice.paid");
    assert_eq!(shown["data"]["amount"], 42);
    let deliveries = shown["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in deliveries {
        assert_eq!(d["status"], "pending");
        assert_eq!(d["attempts"], json!([]));
    }

    // Replay one endpoint: a new generation is enqueued, by the outbox relay after the commit.
    let res = stack
        .send(
            Req::post(&format!("/v1/events/{event_id}/replay"))
                .bearer(&key)
                .json(&json!({"endpoint_id": paid["id"]})),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.text());
    assert_eq!(res.json()["endpoints"], json!([paid["id"]]));
    assert!(
        stack.queued_messages().await.is_empty(),
        "nothing sent on the request path"
    );
    stack.relay_outbox().await;
    let again = stack.queued_messages().await;
    assert!(matches!(
        again.as_slice(),
        [DeliveryMessage::Deliver { generation: 2, .. }]
    ));
    // Replay without a body: every endpoint of the event.
    let res = stack
        .send(Req::post(&format!("/v1/events/{event_id}/replay")).bearer(&key))
        .await;
    assert_eq!(res.status, 202);
    assert_eq!(res.json()["endpoints"].as_array().unwrap().len(), 2);

    for bad in [json!({"type": "", "data": {}}), json!({"type": "x"})] {
        let res = stack
            .send(Req::post("/v1/events").bearer(&key).json(&bad))
            .await;
        assert!(matches!(res.status.as_u16(), 400 | 422), "{bad}");
    }
    stack
        .send(Req::get("/v1/events/msg_doesnotexist000000000000").bearer(&key))
        .await
        .assert_problem(404);
}

// ---- provider secrets ----

#[tokio::test]
async fn provider_secrets_are_stored_sealed_and_listed_redacted() {
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    let res = stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": "sk-proj-abcdef123456"})),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let body = res.json();
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["hint"], "…3456");
    assert!(body["created_at"].is_i64());
    assert!(!res.text().contains("abcdef"));

    stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": "other"})),
        )
        .await
        .assert_problem(409);

    let replaced = stack
        .send(
            Req::put("/v1/secrets/openai")
                .bearer(&key)
                .json(&json!({"value": "sk-proj-zyxwvu987654"})),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(replaced.json()["hint"], "…7654");

    let list = stack.send(Req::get("/v1/secrets").bearer(&key)).await;
    assert_eq!(list.json()["data"], json!([replaced.json()]));
    assert!(!list.text().contains("zyxwvu"));

    // Server-side code decrypts with the typed accessor.
    let sealer = Sealer::new(stack.aws.kms.clone(), &stack.config.kms_key_id);
    let value = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer,
        &tenant,
        "openai",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value.expose(), "sk-proj-zyxwvu987654");

    stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "Bad Name", "value": "x"})),
        )
        .await
        .assert_problem(422);
    let res = stack
        .send(Req::delete("/v1/secrets/openai").bearer(&key))
        .await;
    assert_eq!(res.status, 204);
    stack
        .send(Req::delete("/v1/secrets/openai").bearer(&key))
        .await
        .assert_problem(404);
}

// ---- secrets at rest ----

#[tokio::test]
async fn no_item_holds_a_secret_in_plaintext_and_ciphertexts_are_bound_to_their_tenant() {
    let stack = Stack::new().await;
    let (tenant_a, key_a) = stack.create_tenant("A").await;
    let (tenant_b, key_b) = stack.create_tenant("B").await;
    let mut plaintexts = vec![key_a.clone(), key_b.clone()];

    let ep = create_endpoint(&stack, &key_a, json!({"url": "http://127.0.0.1:9/a"})).await;
    plaintexts.push(ep["secret"].as_str().unwrap().to_owned());
    let rotated = stack
        .send(
            Req::post(&format!(
                "/v1/endpoints/{}/rotate-secret",
                ep["id"].as_str().unwrap()
            ))
            .bearer(&key_a)
            .idempotency_key("rotate-1"),
        )
        .await;
    plaintexts.push(rotated.json()["secret"].as_str().unwrap().to_owned());
    for (key, value) in [
        (&key_a, "sk-live-aaaaaaaaaaaa"),
        (&key_b, "sk-live-bbbbbbbbbbbb"),
    ] {
        let res = stack
            .send(
                Req::post("/v1/secrets")
                    .bearer(key)
                    .idempotency_key("s-1")
                    .json(&json!({"provider": "elevenlabs", "value": value})),
            )
            .await;
        assert_eq!(res.status, 201);
        plaintexts.push(value.to_owned());
    }
    let added = stack
        .send(
            Req::post(&format!("/admin/tenants/{tenant_a}/api-keys"))
                .admin(&stack.admin_key)
                .idempotency_key("k-1"),
        )
        .await;
    plaintexts.push(added.json()["api_key"].as_str().unwrap().to_owned());

    // THEN no item anywhere holds any of them
    let dump = scan_all(&stack).await;
    assert!(!dump.is_empty());
    for p in &plaintexts {
        assert!(
            !dump
                .iter()
                .any(|v| v.windows(p.len()).any(|w| w == p.as_bytes())),
            "a plaintext secret is stored"
        );
    }

    // A ciphertext copied onto another tenant's item does not open.
    let a_item = get_item(
        &stack,
        &table::tenant_pk(&tenant_a),
        &table::provider_secret_sk("elevenlabs"),
    )
    .await
    .unwrap();
    let mut stolen = a_item.clone();
    stolen.insert(table::PK.into(), s(table::tenant_pk(&tenant_b)));
    stolen.insert(table::SK.into(), s(table::provider_secret_sk("stolen")));
    stack
        .aws
        .dynamodb
        .put_item()
        .table_name(&stack.resources.table_name)
        .set_item(Some(stolen))
        .send()
        .await
        .unwrap();
    let sealer = Sealer::new(stack.aws.kms.clone(), &stack.config.kms_key_id);
    let err = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer,
        &tenant_b,
        "stolen",
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 500);
    // … nor for another purpose of the same tenant.
    let ciphertext = a_item.get_bin(sealing::CIPHERTEXT).unwrap();
    assert!(matches!(
        sealer
            .open(SealContext::endpoint_secret(&tenant_a), ciphertext)
            .await,
        Err(sealing::SealError::InvalidCiphertext)
    ));

    // An endpoint item copied to B: its secret does not open, and the answer leaks nothing.
    let ep_id = ep["id"].as_str().unwrap();
    let mut copied = get_item(
        &stack,
        &table::tenant_pk(&tenant_a),
        &table::endpoint_sk(ep_id),
    )
    .await
    .unwrap();
    copied.insert(table::PK.into(), s(table::tenant_pk(&tenant_b)));
    stack
        .aws
        .dynamodb
        .put_item()
        .table_name(&stack.resources.table_name)
        .set_item(Some(copied))
        .send()
        .await
        .unwrap();
    let res = stack
        .send(Req::get(&format!("/v1/endpoints/{ep_id}/secret")).bearer(&key_b))
        .await;
    let problem = res.assert_problem(500);
    assert!(!res.text().contains("whsec_"));
    assert!(!problem["detail"].as_str().unwrap().contains("KMS"));
}

#[tokio::test]
async fn rewrap_moves_every_secret_to_the_new_key_and_keeps_it_readable() {
    let mut stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    let ep = create_endpoint(&stack, &key, json!({"url": "http://127.0.0.1:9/a"})).await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let rotated = stack
        .send(Req::post(&format!("/v1/endpoints/{ep_id}/rotate-secret")).bearer(&key))
        .await
        .json();
    stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key)
                .json(&json!({"provider": "openai", "value": "sk-old-key-material"})),
        )
        .await;
    let keyed = || {
        Req::post("/v1/endpoints")
            .bearer(&key)
            .idempotency_key("sealed-answer")
            .json(&json!({"url": "http://127.0.0.1:9/b"}))
    };
    let sealed_answer = stack.send(keyed()).await;
    assert_eq!(sealed_answer.status, 201);

    // GIVEN the deployment moves to a new key
    let new_key = stack
        .aws
        .kms
        .create_key()
        .description("sluice rewrap test")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    stack.config.kms_key_id = new_key.clone();

    // WHEN the operator rewraps
    let res = stack
        .send(Req::post("/admin/secrets/rewrap").admin(&stack.admin_key))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let report = res.json();
    assert_eq!(report["endpoint_secrets"], 3, "{report}");
    assert_eq!(report["provider_keys"], 1);
    assert_eq!(report["idempotent_responses"], 1);
    assert_eq!(report["unreadable"], 0);

    // THEN every ciphertext is under the new key …
    let item = get_item(
        &stack,
        &table::tenant_pk(&tenant),
        &table::endpoint_sk(&ep_id),
    )
    .await
    .unwrap();
    let secret_item = get_item(
        &stack,
        &table::tenant_pk(&tenant),
        &table::provider_secret_sk("openai"),
    )
    .await
    .unwrap();
    let sealer = Sealer::new(stack.aws.kms.clone(), &new_key);
    let provider_ct = secret_item.get_bin(sealing::CIPHERTEXT).unwrap();
    assert!(
        sealing::wrapping_key_arn(provider_ct)
            .unwrap()
            .ends_with(&format!("key/{new_key}"))
    );

    // … and every secret still reads the same, through the API and server-side.
    let secrets = sealing::endpoint_secrets(&sealer, &tenant, &item, clock::now_epoch())
        .await
        .unwrap();
    assert_eq!(
        secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(),
        vec![
            rotated["secret"].as_str().unwrap(),
            ep["secret"].as_str().unwrap()
        ]
    );
    let revealed = stack
        .send(Req::get(&format!("/v1/endpoints/{ep_id}/secret")).bearer(&key))
        .await
        .json();
    assert_eq!(revealed["secret"], rotated["secret"]);
    let value = sealing::provider_key(
        &stack.aws.dynamodb,
        &stack.resources.table_name,
        &sealer,
        &tenant,
        "openai",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(value.expose(), "sk-old-key-material");
    let replay = stack.send(keyed()).await;
    assert_eq!(replay.body, sealed_answer.body);

    // Running it again is harmless.
    let again = stack
        .send(Req::post("/admin/secrets/rewrap").admin(&stack.admin_key))
        .await;
    assert_eq!(again.status, 200);
}

// ---- isolation ----

#[tokio::test]
async fn another_tenants_ids_answer_404_on_every_route() {
    let stack = Stack::new().await;
    let (tenant_a, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    credit(&stack, &tenant_a, 1_000).await;
    let ep = create_endpoint(&stack, &key_a, json!({"url": "http://127.0.0.1:9/a"})).await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let event = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key_a)
                .json(&json!({"type": "x.y", "data": {}})),
        )
        .await
        .json();
    let msg_id = event["id"].as_str().unwrap().to_owned();
    stack
        .send(
            Req::post("/v1/secrets")
                .bearer(&key_a)
                .json(&json!({"provider": "openai", "value": "sk-a-secret-value"})),
        )
        .await;
    stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key_a)
                .json(&json!({"amount_minor": 10})),
        )
        .await;

    let as_b = [
        Req::get(&format!("/v1/endpoints/{ep_id}")),
        Req::get(&format!("/v1/endpoints/{ep_id}/secret")),
        Req::patch(&format!("/v1/endpoints/{ep_id}")).json(&json!({"enabled": false})),
        Req::delete(&format!("/v1/endpoints/{ep_id}")),
        Req::post(&format!("/v1/endpoints/{ep_id}/rotate-secret")),
        Req::get(&format!("/v1/events/{msg_id}")),
        Req::post(&format!("/v1/events/{msg_id}/replay")),
        Req::post(&format!("/v1/events/{msg_id}/replay")).json(&json!({"endpoint_id": ep_id})),
        Req::delete("/v1/secrets/openai"),
    ];
    for req in as_b {
        let what = format!("{} {}", req.method, req.path);
        let res = stack.send(req.bearer(&key_b)).await;
        assert_eq!(res.status, 404, "{what}: {}", res.text());
        assert_eq!(res.json()["status"], 404);
    }
    // B's collections do not show A's items, and A's are untouched.
    for path in ["/v1/endpoints", "/v1/secrets", "/v1/ledger"] {
        let res = stack.send(Req::get(path).bearer(&key_b)).await.json();
        assert_eq!(res["data"], json!([]), "{path}");
    }
    let account_b = stack
        .send(Req::get("/v1/account").bearer(&key_b))
        .await
        .json();
    assert_eq!(account_b["credits"]["balance_minor"], 0);
    let a = stack
        .send(Req::get(&format!("/v1/endpoints/{ep_id}")).bearer(&key_a))
        .await
        .json();
    assert_eq!(a["enabled"], true);
    // B replaying with A's endpoint on B's own event: 404 too.
    let own = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key_b)
                .json(&json!({"type": "x.y", "data": {}})),
        )
        .await
        .json();
    let res = stack
        .send(
            Req::post(&format!(
                "/v1/events/{}/replay",
                own["id"].as_str().unwrap()
            ))
            .bearer(&key_b)
            .json(&json!({"endpoint_id": ep_id})),
        )
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
}

// ---- bounds (issue 12 item 6) ----

#[tokio::test]
async fn rotations_beyond_three_active_secrets_answer_409_until_the_oldest_expires() {
    // GIVEN an endpoint rotated twice within the overlap: three secrets sign
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    let id =
        create_endpoint(&stack, &key, json!({"url": "http://127.0.0.1:9000/hook"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let rotate =
        || stack.send(Req::post(&format!("/v1/endpoints/{id}/rotate-secret")).bearer(&key));
    for _ in 0..2 {
        let res = rotate().await;
        assert_eq!(res.status, 200, "{}", res.text());
    }

    // WHEN it is rotated a third time
    let res = rotate().await;

    // THEN 409, naming the limit and when the oldest rotated-out secret expires
    let problem = res.assert_problem(409);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("3 active signing secrets"), "{detail}");
    assert!(detail.contains("expires at"), "{detail}");
    let retry_after: i64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 24 * 3600, "{retry_after}");
    // … and nothing changed: still three secrets
    let endpoint_key = table::key(table::tenant_pk(&tenant), table::endpoint_sk(&id));
    let item = stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(endpoint_key.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        sealing::SealedEndpointSecret::list_from_item(&item).len(),
        3
    );

    // WHEN the oldest has expired (its expiry moved into the past, as time would)
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(endpoint_key))
        .update_expression("SET secrets[2].expires_at = :past")
        .expression_attribute_values(":past", table::n(clock::now_epoch() - 1))
        .send()
        .await
        .unwrap();

    // THEN a rotation is accepted again
    let res = rotate().await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn a_monthly_budget_above_the_bound_is_refused_naming_the_field() {
    let stack = Stack::new().await;
    let create = |budget: Value| {
        stack.send(
            Req::post("/admin/tenants")
                .admin(&stack.admin_key)
                .json(&json!({"name": "Acme", "monthly_budget_minor": budget})),
        )
    };
    for too_much in [
        json!(sluice::tenants::MAX_MONTHLY_BUDGET_MINOR + 1),
        json!(i64::MAX),
    ] {
        let problem = create(too_much).await.assert_problem(422);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("`monthly_budget_minor`"),
            "{problem}"
        );
    }
    let res = create(json!(sluice::tenants::MAX_MONTHLY_BUDGET_MINOR)).await;
    assert_eq!(res.status, 201, "{}", res.text());
}

#[tokio::test]
async fn a_stored_budget_beyond_the_bound_still_debits_without_overflowing() {
    // GIVEN a tenant whose stored budget predates the bound (written directly)
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.resources.table_name)
        .set_key(Some(table::key(
            table::tenant_pk(&tenant),
            table::TENANT_PROFILE_SK,
        )))
        .update_expression("SET monthly_budget_minor = :b")
        .expression_attribute_values(":b", table::n(i64::MAX))
        .send()
        .await
        .unwrap();
    credit(&stack, &tenant, 5_000).await;

    // WHEN it records usage
    let res = stack
        .send(
            Req::post("/v1/usage")
                .bearer(&key)
                .json(&json!({"amount_minor": 1_000})),
        )
        .await;

    // THEN the debit succeeds, the budget is `ok` and no alert went out
    assert_eq!(res.status, 201, "{}", res.text());
    let account = stack
        .send(Req::get("/v1/account").bearer(&key))
        .await
        .json();
    assert_eq!(account["budget"]["status"], "ok", "{account}");
    assert_eq!(events_of_type(&stack, &tenant, "budget.warning").await, 0);
}
