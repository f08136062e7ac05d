//! `/v1/billing/*` end to end: the API function calls Stripe — customers in localstripe (a
//! stateful fake Stripe, its own instance here so its events never reach another test's stack),
//! Checkout and Billing Portal sessions in the stand-in (`stripe_standin.rs`), which checks
//! every parameter against Stripe's documented names and types — and a completed checkout comes
//! back through the ingress signed as Stripe signs it.

use std::sync::OnceLock;

use http::StatusCode;
use serde_json::{Value, json};
use sluice::{
    clock,
    stripe::signature,
    table::{self, ItemExt},
    tenants,
};
use sluice_local::{iam, localstripe::LocalStripe};

use crate::{
    stripe_standin::StandIn,
    support::{Req, Stack, unique},
};

static LOCALSTRIPE: OnceLock<LocalStripe> = OnceLock::new();

fn localstripe() -> &'static LocalStripe {
    LOCALSTRIPE.get_or_init(|| LocalStripe::start().expect("localstripe starts"))
}

const ORIGIN: &str = "https://app.example.com";
const CHECKOUT: &str = "/v1/checkout/sessions";
const PORTAL: &str = "/v1/billing_portal/sessions";
const CUSTOMERS: &str = "/v1/customers";

struct Billing {
    stack: Stack,
    standin: StandIn,
    tenant: String,
    key: String,
}

async fn billing() -> Billing {
    let standin = StandIn::start(&localstripe().url).await;
    let stack = Stack::with_settings(&[
        ("STRIPE_API_KEY", "sk_test_sluice"),
        ("STRIPE_API_BASE", &standin.url),
        ("STRIPE_PRICES", "price_pro"),
        ("BILLING_RETURN_ORIGINS", ORIGIN),
    ])
    .await;
    let (tenant, key) = stack.create_tenant("Acme").await;
    Billing {
        stack,
        standin,
        tenant,
        key,
    }
}

fn credits(amount: i64) -> Value {
    json!({
        "mode": "credits",
        "amount_minor": amount,
        "success_url": format!("{ORIGIN}/billing/done"),
        "cancel_url": format!("{ORIGIN}/billing"),
    })
}

impl Billing {
    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> crate::support::Res {
        let mut req = Req::post(path).bearer(&self.key).json(body);
        if let Some(key) = key {
            req = req.idempotency_key(key);
        }
        self.stack.send(req).await
    }

    async fn tenant(&self) -> tenants::Tenant {
        tenants::get_tenant(
            &self.stack.aws.dynamodb,
            &self.stack.config.table_name,
            &self.tenant,
        )
        .await
        .unwrap()
        .unwrap()
    }

    /// `checkout.session.completed` for `session` (the stand-in's answer), paid, as Stripe sends
    /// it: the shared fixture with this session's values, signed now with the stack's secret.
    async fn complete(&self, session: &Value, amount: i64) -> crate::support::Res {
        let path = sluice_local::repo_root()
            .join("tests/fixtures/stripe/checkout.session.completed.payment.json");
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        event["id"] = json!(format!("evt_{}", unique("billing").replace('-', "")));
        event["created"] = json!(clock::now_epoch());
        let object = &mut event["data"]["object"];
        for field in ["id", "customer", "client_reference_id", "metadata"] {
            object[field] = session[field].clone();
        }
        object["amount_total"] = json!(amount);
        let body = serde_json::to_vec(&event).unwrap();
        let header = signature::sign(&self.stack.stripe_secret, clock::now_epoch(), &body);
        self.stack
            .send(
                Req::post("/webhooks/stripe")
                    .header("stripe-signature", &header)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
    }
}

#[tokio::test]
async fn a_credits_checkout_names_the_tenant_and_its_completion_credits_once() {
    let b = billing().await;
    let res = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-1"),
            &credits(2500),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let answer = res.json();
    assert!(answer["id"].as_str().unwrap().starts_with("cs_test_"));
    assert!(answer["url"].as_str().unwrap().starts_with("https://"));
    assert!(answer["expires_at"].as_i64().unwrap() > clock::now_epoch());

    // The customer was created at (local)Stripe for this tenant and linked as the ingress links.
    let customers = b.standin.requests(CUSTOMERS);
    assert_eq!(customers.len(), 1);
    assert_eq!(
        customers[0].param("metadata[tenant_id]"),
        Some(b.tenant.as_str())
    );
    let customer = b.tenant().await.stripe_customer_id.expect("linked");
    assert!(customer.starts_with("cus_"));
    let link = b
        .stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&b.stack.config.table_name)
        .set_key(Some(table::key(table::customer_pk(&customer), "CUSTOMER")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        link.item().unwrap().get_s("tenant_id"),
        Some(b.tenant.as_str())
    );

    // The session names the tenant wherever the ingress looks.
    let sessions = b.standin.requests(CHECKOUT);
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        s.stripe_version.as_deref(),
        Some(sluice::stripe::client::API_VERSION)
    );
    assert_eq!(s.param("customer"), Some(customer.as_str()));
    assert_eq!(s.param("client_reference_id"), Some(b.tenant.as_str()));
    assert_eq!(s.param("metadata[tenant_id]"), Some(b.tenant.as_str()));
    assert_eq!(
        s.param("payment_intent_data[metadata][purpose]"),
        Some("credits")
    );
    assert_eq!(
        s.param("payment_intent_data[metadata][tenant_id]"),
        Some(b.tenant.as_str())
    );

    // Completion, sent as Stripe sends it, twice (a redelivery): credited once.
    let session = json!({
        "id": answer["id"],
        "customer": customer,
        "client_reference_id": s.param("client_reference_id"),
        "metadata": {"tenant_id": b.tenant, "purpose": "credits"},
    });
    let first = b.complete(&session, 2500).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["status"], "processed", "{}", first.text());
    assert_eq!(b.tenant().await.balance_minor, 2500);
    // Another event about the same session (Stripe may send a second one) credits nothing more.
    let again = b.complete(&session, 2500).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(b.tenant().await.balance_minor, 2500);
}

#[tokio::test]
async fn a_retry_after_a_lost_lock_is_the_same_session_at_stripe() {
    let b = billing().await;
    let first = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-2"),
            &credits(900),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    // The idempotency record disappears (a lock lost and the record expired): the retry runs
    // the handler again, and Stripe sees the same Idempotency-Key, so the same session.
    b.stack
        .aws
        .dynamodb
        .delete_item()
        .table_name(&b.stack.config.table_name)
        .set_key(Some(table::key(
            sluice::idempotency::record_pk(&b.tenant, "buy-2"),
            "IDEM",
        )))
        .send()
        .await
        .unwrap();
    let retry = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-2"),
            &credits(900),
        )
        .await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text());
    assert_eq!(retry.json()["id"], first.json()["id"]);
    let sessions = b.standin.requests(CHECKOUT);
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].idempotency_key, sessions[1].idempotency_key);
    // Another key is another session.
    let other = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-3"),
            &credits(900),
        )
        .await;
    assert_ne!(other.json()["id"], first.json()["id"]);
}

#[tokio::test]
async fn concurrent_first_billing_calls_create_one_customer() {
    let b = billing().await;
    let body = json!({"return_url": format!("{ORIGIN}/account")});
    let calls = (0..4).map(|i| {
        let (b, body) = (&b, body.clone());
        async move {
            b.post(
                "/v1/billing/portal-sessions",
                Some(&format!("portal-{i}")),
                &body,
            )
            .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    for res in &answers {
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        assert!(res.json()["url"].as_str().unwrap().starts_with("https://"));
    }
    // Every first call asked Stripe for the tenant's customer under the same key; one reached
    // (local)Stripe, and every portal session is for the one linked customer.
    let creations = b.standin.requests(CUSTOMERS);
    assert!(!creations.is_empty());
    let key = format!("sluice-customer-{}", b.tenant);
    assert!(
        creations
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some(key.as_str()))
    );
    assert_eq!(b.standin.forwarded(CUSTOMERS), 1);
    let customer = b.tenant().await.stripe_customer_id.expect("linked");
    let portals = b.standin.requests(PORTAL);
    assert_eq!(portals.len(), 4);
    assert!(
        portals
            .iter()
            .all(|p| p.param("customer") == Some(customer.as_str()))
    );
    // Later calls use the link without asking Stripe again.
    let later = b
        .post("/v1/billing/portal-sessions", Some("portal-9"), &body)
        .await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert_eq!(b.standin.requests(CUSTOMERS).len(), creations.len());
}

#[tokio::test]
async fn stripe_answering_500_is_retried_and_then_502_with_its_request_id() {
    let b = billing().await;
    b.standin.fail_next(CHECKOUT, 500, "api_error", 1);
    let res = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-500"),
            &credits(1000),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let sessions = b.standin.requests(CHECKOUT);
    assert_eq!(sessions.len(), 2, "retried once");
    assert_eq!(sessions[0].idempotency_key, sessions[1].idempotency_key);

    // Failing every attempt: 502 carrying Stripe's request id, not its body; the key is
    // released, so the client's retry runs again and succeeds.
    b.standin.fail_next(
        CHECKOUT,
        503,
        "api_error",
        sluice::stripe::client::MAX_ATTEMPTS as usize,
    );
    let failed = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-503"),
            &credits(1000),
        )
        .await;
    let problem = failed.assert_problem(502);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("req_standin"), "{detail}");
    assert!(!failed.text().contains("scripted"), "{}", failed.text());
    let retried = b
        .post(
            "/v1/billing/checkout-sessions",
            Some("buy-503"),
            &credits(1000),
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text());
}

#[tokio::test]
async fn stripe_refusals_are_4xx_problems_with_its_code_and_nothing_is_linked() {
    let b = billing().await;
    // A refusal of the customer itself: nothing is linked, no session is asked for.
    b.standin
        .fail_next(CUSTOMERS, 400, "parameter_invalid_empty", 1);
    let res = b
        .post("/v1/billing/checkout-sessions", Some("r-1"), &credits(1000))
        .await;
    let problem = res.assert_problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("parameter_invalid_empty")
    );
    assert!(!res.text().contains("scripted"));
    assert_eq!(b.tenant().await.stripe_customer_id, None);
    assert!(b.standin.requests(CHECKOUT).is_empty());

    // 402 from Stripe: 402 with Stripe's code, not retried.
    b.standin.fail_next(CHECKOUT, 402, "card_declined", 1);
    let res = b
        .post("/v1/billing/checkout-sessions", Some("r-2"), &credits(1000))
        .await;
    let problem = res.assert_problem(402);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("card_declined")
    );
    assert_eq!(b.standin.requests(CHECKOUT).len(), 1);

    // 400 (e.g. a price Stripe no longer has): 422 with Stripe's code.
    b.standin.fail_next(CHECKOUT, 400, "resource_missing", 1);
    let sub = json!({
        "mode": "subscription", "price": "price_pro",
        "success_url": format!("{ORIGIN}/ok"), "cancel_url": format!("{ORIGIN}/no"),
    });
    let res = b
        .post("/v1/billing/checkout-sessions", Some("r-3"), &sub)
        .await;
    let problem = res.assert_problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("resource_missing")
    );
    assert_eq!(b.tenant().await.balance_minor, 0);

    // The same subscription request with a new key passes the stand-in's parameter check.
    let ok = b
        .post("/v1/billing/checkout-sessions", Some("r-4"), &sub)
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    let last = b.standin.requests(CHECKOUT).pop().unwrap();
    assert_eq!(
        last.param("subscription_data[metadata][tenant_id]"),
        Some(b.tenant.as_str())
    );
    assert_eq!(last.param("mode"), Some("subscription"));
}

#[tokio::test]
async fn a_return_url_of_another_origin_is_refused_before_stripe_is_called() {
    let b = billing().await;
    let mut body = credits(1000);
    body["success_url"] = json!("https://evil.example.net/phish");
    let res = b
        .post("/v1/billing/checkout-sessions", Some("evil-1"), &body)
        .await;
    let problem = res.assert_problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("success_url"));
    let res = b
        .post(
            "/v1/billing/portal-sessions",
            Some("evil-2"),
            &json!({"return_url": "https://app.example.com.evil.net/"}),
        )
        .await;
    res.assert_problem(422);
    let res = b
        .post("/v1/billing/checkout-sessions", Some("evil-3"), &credits(5))
        .await;
    res.assert_problem(422);
    assert!(b.standin.requests(CUSTOMERS).is_empty());
    assert!(b.standin.requests(CHECKOUT).is_empty());
    assert_eq!(b.tenant().await.stripe_customer_id, None);
}

#[tokio::test]
async fn the_deployed_key_is_a_kms_ciphertext_decrypted_at_first_use() {
    let mut b = billing().await;
    // As an operator makes it: `aws kms encrypt` under the stack's key, with the context.
    let (name, value) = sluice::stripe::client::KEY_CONTEXT;
    let blob = b
        .stack
        .aws
        .kms
        .encrypt()
        .key_id(&b.stack.config.kms_key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new("sk_test_from_kms"))
        .encryption_context(name, value)
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    b.stack.config.billing.stripe_key =
        Some(sluice::config::StripeKeySource::KmsCiphertext(blob.clone()));
    let res = b
        .post(
            "/v1/billing/portal-sessions",
            Some("kms-1"),
            &json!({"return_url": format!("{ORIGIN}/account")}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(b.standin.requests(PORTAL).len(), 1);

    // A ciphertext made without the context does not decrypt: a retryable 500, nothing at Stripe.
    let wrong = b
        .stack
        .aws
        .kms
        .encrypt()
        .key_id(&b.stack.config.kms_key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new("sk_test_from_kms"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    b.stack.config.billing.stripe_key = Some(sluice::config::StripeKeySource::KmsCiphertext(wrong));
    let res = b
        .post(
            "/v1/billing/portal-sessions",
            Some("kms-2"),
            &json!({"return_url": format!("{ORIGIN}/account")}),
        )
        .await;
    let problem = res.assert_problem(500);
    assert!(!problem["detail"].as_str().unwrap().contains("KMS"));
    assert_eq!(b.standin.requests(PORTAL).len(), 1);
}

#[tokio::test]
async fn without_a_key_billing_answers_503() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Acme").await;
    let res = stack
        .send(
            Req::post("/v1/billing/portal-sessions")
                .bearer(&key)
                .json(&json!({"return_url": format!("{ORIGIN}/account")})),
        )
        .await;
    let problem = res.assert_problem(503);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("billing-not-configured")
    );
}

/// `POST` straight to localstripe, as an app (or a Stripe dashboard user) would.
async fn localstripe_post(path: &str, fields: &[(&str, &str)]) -> Value {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    crate::support::http_client()
        .post(format!("{}{path}", localstripe().url))
        .bearer_auth("sk_test_sluice")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sweep_recovers_a_payment_whose_webhook_never_arrived_and_never_twice() {
    let b = billing().await;
    // This localstripe has no webhook registered: the payment's events reach nobody.
    let since = clock::now_epoch() - 1;
    let pi = localstripe_post(
        "/v1/payment_intents",
        &[
            ("amount", "2500"),
            ("currency", "usd"),
            ("metadata[purpose]", "credits"),
            ("metadata[tenant_id]", &b.tenant),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
        ],
    )
    .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");
    assert_eq!(b.tenant().await.balance_minor, 0);

    let sweep = |body: Value| {
        let b = &b;
        async move {
            let res = b
                .stack
                .send(
                    Req::post("/admin/stripe/reconcile")
                        .admin(&b.stack.admin_key)
                        .json(&body),
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text());
            res.json()
        }
    };
    let first = sweep(json!({ "since": since })).await;
    assert_eq!(first["done"], true, "{first}");
    assert!(first["recovered"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(b.tenant().await.balance_minor, 2500);
    let checkpoint = first["checkpoint"].as_i64().expect("a checkpoint");
    assert!(checkpoint >= since);

    // Without `since`, the next run starts from the checkpoint.
    let second = sweep(json!({})).await;
    assert_eq!(second["since"].as_i64(), Some(checkpoint), "{second}");
    // The same events again (the other tests' customers share this localstripe, so only the
    // payment's events are certain): duplicates, credited once.
    let third = sweep(json!({ "since": since })).await;
    assert!(third["duplicates"].as_u64().unwrap() >= 1, "{third}");
    assert_eq!(b.tenant().await.balance_minor, 2500);
}

#[tokio::test]
async fn the_scheduled_invocation_sweeps_from_the_checkpoint_and_stats_report_the_runs() {
    let b = billing().await;
    let pay = |amount: &'static str| {
        let tenant = b.tenant.clone();
        async move {
            let pi = localstripe_post(
                "/v1/payment_intents",
                &[
                    ("amount", amount),
                    ("currency", "usd"),
                    ("metadata[purpose]", "credits"),
                    ("metadata[tenant_id]", &tenant),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                ],
            )
            .await;
            assert_eq!(pi["status"], "succeeded", "{pi}");
        }
    };
    // GIVEN a first payment swept by the admin route (which stores a checkpoint)
    let since = clock::now_epoch() - 1;
    pay("1000").await;
    let first = b
        .stack
        .send(
            Req::post("/admin/stripe/reconcile")
                .admin(&b.stack.admin_key)
                .json(&json!({ "since": since })),
        )
        .await
        .json();
    assert_eq!(b.tenant().await.balance_minor, 1000, "{first}");

    // WHEN a second payment's webhook never arrives and the schedule invokes the API function
    pay("700").await;
    let state =
        sluice_api::AppState::new(b.stack.config.clone(), iam::tag(&b.stack.aws, "api")).unwrap();
    let scheduled = lambda_http::LambdaEvent::new(
        serde_json::value::RawValue::from_string(sluice_api::lambda::SCHEDULED_SWEEP.into())
            .unwrap(),
        lambda_http::Context::default(),
    );
    let reply = sluice_api::lambda::handle(&state, b.stack.api(), scheduled)
        .await
        .unwrap();
    let second = serde_json::to_value(&reply).unwrap();

    // THEN it swept from the stored checkpoint and credited the second payment once
    assert_eq!(second["since"], first["checkpoint"], "{second}");
    assert_eq!(second["done"], true, "{second}");
    assert!(second["recovered"].as_i64().unwrap() >= 1, "{second}");
    assert!(second["duplicates"].as_i64().unwrap() >= 1, "{second}");
    assert_eq!(b.tenant().await.balance_minor, 1700);

    // AND /admin/stats reports both runs, what they found, the last run and the checkpoint
    let stats = b
        .stack
        .send(Req::get("/admin/stats").admin(&b.stack.admin_key))
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text());
    let r = &stats.json()["reconcile"];
    assert_eq!(r["runs"], 2, "{r}");
    let sum = |k: &str| first[k].as_i64().unwrap() + second[k].as_i64().unwrap();
    for k in ["listed", "recovered", "duplicates", "failed"] {
        assert_eq!(r[k].as_i64(), Some(sum(k)), "{k}: {r}");
    }
    assert_eq!(r["checkpoint"], second["checkpoint"], "{r}");
    assert!(r["last_run_at"].as_i64().unwrap() >= since, "{r}");

    // AND the same entry still serves HTTP API events
    let http: Box<serde_json::value::RawValue> = serde_json::from_value(json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/openapi.json", "rawQueryString": "",
        "headers": {"host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "req-1", "routeKey": "$default",
            "stage": "$default", "time": "02/Dec/2026:15:00:00 +0000", "timeEpoch": 0,
            "http": {"method": "GET", "path": "/openapi.json", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"}
        },
        "isBase64Encoded": false
    }))
    .unwrap();
    let reply = sluice_api::lambda::handle(
        &state,
        b.stack.api(),
        lambda_http::LambdaEvent::new(http, lambda_http::Context::default()),
    )
    .await
    .unwrap();
    let res = serde_json::to_value(&reply).unwrap();
    assert_eq!(res["statusCode"], 200, "{res}");
    assert!(
        res["body"]
            .as_str()
            .unwrap()
            .contains("/admin/stripe/reconcile")
    );
}

#[test]
fn the_template_schedules_the_sweep_on_the_api_function_every_15_minutes_with_a_stripe_key() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(sluice_local::provision::TEMPLATE_YAML).unwrap();
    let tag = |v: &serde_yaml::Value| match v {
        serde_yaml::Value::Tagged(t) => (t.tag.to_string(), t.value.clone()),
        other => panic!("{other:?} is not a tagged value"),
    };
    // Exactly one schedule in the template, an event of the function built from the `api` binary
    // (whose main serves sluice_api::lambda).
    let mut schedules = Vec::new();
    for (id, res) in doc["Resources"].as_mapping().unwrap() {
        for (name, event) in res["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if event["Type"]
                .as_str()
                .is_some_and(|t| t.starts_with("Schedule"))
            {
                schedules.push((id.as_str().unwrap(), name.as_str().unwrap(), event.clone()));
            }
        }
    }
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let (function, _, event) = &schedules[0];
    assert_eq!(
        doc["Resources"][*function]["Metadata"]["BuildProperties"]["Binary"],
        "api"
    );
    let props = &event["Properties"];
    assert_eq!(event["Type"], "ScheduleV2");
    // Its input is what the entry recognises as the sweep.
    let input = props["Input"].as_str().unwrap();
    assert!(matches!(
        sluice_api::lambda::invocation(input),
        Ok(sluice_api::lambda::Invocation::Sweep)
    ));
    // Every 15 minutes unless the parameter says otherwise.
    let (t, parameter) = tag(&props["ScheduleExpression"]);
    assert_eq!(t, "!Ref");
    assert_eq!(
        doc["Parameters"][parameter.as_str().unwrap()]["Default"],
        "rate(15 minutes)"
    );
    // Enabled only when the Stripe key is configured.
    let (t, state) = tag(&props["State"]);
    assert_eq!(t, "!If");
    assert_eq!(state[1], "ENABLED");
    assert_eq!(state[2], "DISABLED");
    let (t, condition) = tag(&doc["Conditions"][state[0].as_str().unwrap()]);
    assert_eq!(t, "!Not");
    let (_, equals) = tag(&condition[0]);
    let (_, key) = tag(&equals[0]);
    assert_eq!(key, "StripeApiKeyCiphertext");
    assert_eq!(equals[1], "");
}
