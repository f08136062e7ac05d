//! Stripe ingress end to end: verification, exactly-once effects, unmatched events, failures,
//! request counts, and the operator's view (list, show, retry, stats, cleanup, health).

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use sluice::{
    clock,
    stripe::signature,
    table::{self, Item, ItemExt},
    tenants::{self, Tenant},
};

use sluice_local::counting::CallCounter;

use crate::support::{FaultInjector, Req, Res, Stack, instrumented_clients};

/// The tenant id the shared fixtures use; replaced by a real tenant's id at test time.
const FIXTURE_TENANT: &str = "tnt_fixture0001";
const CUSTOMER: &str = "cus_QXg1hqf4jFNsqG";
const SUBSCRIPTION: &str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw";
const PAYMENT_INTENT: &str = "pi_3PgafyB7WZ01zgkW1aBcDeFg";

fn fixtures_dir() -> std::path::PathBuf {
    sluice_local::repo_root().join("tests/fixtures/stripe")
}

/// A fixture file's text, its tenant replaced by `tenant`.
pub(crate) fn fixture(name: &str, tenant: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
        .replace(FIXTURE_TENANT, tenant)
}

/// A fixture with a new event id and `created` (another event about the same objects).
fn variant(name: &str, tenant: &str, id: &str, created: i64) -> String {
    let mut v: Value = serde_json::from_str(&fixture(name, tenant)).unwrap();
    v["id"] = json!(id);
    v["created"] = json!(created);
    serde_json::to_string_pretty(&v).unwrap()
}

/// `POST /webhooks/stripe` signed now with the stack's secret, as Stripe sends it.
fn signed(stack: &Stack, body: impl Into<Bytes>) -> Req {
    let body = body.into();
    let header = signature::sign(&stack.stripe_secret, clock::now_epoch(), &body);
    Req::post("/webhooks/stripe")
        .header("stripe-signature", &header)
        .header("content-type", "application/json")
        .body(body)
}

async fn deliver(stack: &Stack, body: impl Into<Bytes>) -> Res {
    stack.send(signed(stack, body)).await
}

/// Delivers and expects `200` with the given status (not a duplicate).
pub(crate) async fn deliver_ok(stack: &Stack, body: impl Into<Bytes>, status: &str) -> Value {
    let res = deliver(stack, body).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let v = res.json();
    assert_eq!(v["received"], true);
    assert_eq!(v["status"], status, "{v}");
    assert!(v.get("duplicate").is_none(), "{v}");
    v
}

fn table_name(stack: &Stack) -> &str {
    &stack.config.table_name
}

async fn tenant(stack: &Stack, id: &str) -> Tenant {
    tenants::get_tenant(&stack.aws.dynamodb, table_name(stack), id)
        .await
        .unwrap()
        .expect("tenant exists")
}

async fn get(stack: &Stack, pk: &str, sk: &str) -> Option<Item> {
    stack
        .aws
        .dynamodb
        .get_item()
        .table_name(table_name(stack))
        .set_key(Some(table::key(pk, sk)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

async fn stored_event(stack: &Stack, id: &str) -> Item {
    get(stack, &table::stripe_event_pk(id), "EVENT")
        .await
        .unwrap_or_else(|| panic!("event {id} is stored"))
}

/// Items of a partition whose sort key starts with `prefix`.
async fn partition(stack: &Stack, pk: &str, prefix: &str) -> Vec<Item> {
    let mut q = stack
        .aws
        .dynamodb
        .query()
        .table_name(table_name(stack))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()));
    if !prefix.is_empty() {
        q = q
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()));
    }
    q.consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// Every item of the stack's table.
async fn scan(stack: &Stack) -> Vec<Item> {
    stack
        .aws
        .dynamodb
        .scan()
        .table_name(table_name(stack))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

async fn ledger(stack: &Stack, tenant: &str) -> Vec<Item> {
    partition(stack, &table::tenant_pk(tenant), "LEDGER#").await
}

/// The tenant's ledger entries that record a payment (not credit).
async fn payments(stack: &Stack, tenant: &str) -> Vec<Item> {
    ledger(stack, tenant)
        .await
        .into_iter()
        .filter(|i| i.get_s("kind") == Some("payment"))
        .collect()
}

/// Types of the outbound events (notifications) published to the tenant.
async fn notifications(stack: &Stack, tenant: &str) -> Vec<String> {
    partition(stack, &table::tenant_pk(tenant), "EVENT#")
        .await
        .iter()
        .filter_map(|i| i.get_s("type").map(String::from))
        .collect()
}

fn count(list: &[String], kind: &str) -> usize {
    list.iter().filter(|t| *t == kind).count()
}

#[tokio::test]
async fn the_fixture_story_gives_every_effect_once() {
    // GIVEN a tenant, and every shared fixture signed at test time with the configured secret.
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Fixture Co").await;
    let f = |name: &str| fixture(name, &tnt);
    let story = [
        "checkout.session.completed.payment",
        "payment_intent.succeeded.credits",
        "checkout.session.completed.subscription",
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.marked_uncollectible",
        "customer.subscription.deleted",
        "plan.created",
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_owned()
        })
        .collect();
    on_disk.sort();
    let mut told: Vec<String> = story.iter().map(|s| s.to_string()).collect();
    told.sort();
    assert_eq!(on_disk, told, "the story covers every fixture file");

    // WHEN the payment arrives as a Checkout Session THEN 25.00 is credited and the customer linked.
    deliver_ok(&stack, f("checkout.session.completed.payment"), "processed").await;
    let t = tenant(&stack, &tnt).await;
    assert_eq!(t.balance_minor, 2500);
    assert_eq!(t.stripe_customer_id.as_deref(), Some(CUSTOMER));
    let link = get(&stack, &table::customer_pk(CUSTOMER), "CUSTOMER")
        .await
        .unwrap();
    assert_eq!(link.get_s("tenant_id"), Some(tnt.as_str()));

    // WHEN the same payment arrives as a PaymentIntent THEN it is not credited again.
    let v = deliver_ok(&stack, f("payment_intent.succeeded.credits"), "processed").await;
    assert_eq!(v["id"], "evt_fixture0002");
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    let credits: Vec<Item> = ledger(&stack, &tnt).await;
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0].get_s("kind"), Some("credit"));
    assert_eq!(credits[0].get_i64("amount_minor"), Some(2500));
    assert_eq!(credits[0].get_s("currency"), Some("usd"));
    let money = get(&stack, &table::money_pk(PAYMENT_INTENT), "MONEY")
        .await
        .unwrap();
    assert_eq!(money.get_s("ledger_id"), credits[0].get_s("id"));
    assert!(
        stored_event(&stack, "evt_fixture0002")
            .await
            .get_s("note")
            .unwrap()
            .contains("already credited")
    );
    assert_eq!(
        count(&notifications(&stack, &tnt).await, "credits.added"),
        1
    );

    // Subscription: checkout records it, then active → cancel_at_period_end.
    deliver_ok(
        &stack,
        f("checkout.session.completed.subscription"),
        "processed",
    )
    .await;
    let sub = tenant(&stack, &tnt).await.subscription.unwrap();
    assert_eq!(
        (sub.id.as_str(), sub.status.as_str()),
        (SUBSCRIPTION, "incomplete")
    );

    deliver_ok(&stack, f("customer.subscription.created"), "processed").await;
    let sub = tenant(&stack, &tnt).await.subscription.unwrap();
    assert_eq!(sub.status, "active");
    assert_eq!(
        sub.price_id.as_deref(),
        Some("price_1PgafmB7WZ01zgkW6dKueIc5")
    );
    assert_eq!(
        sub.current_period_end,
        Some(1766392000),
        "newer shape: period end on items"
    );
    assert!(!sub.cancel_at_period_end);

    deliver_ok(&stack, f("customer.subscription.updated"), "processed").await;
    let sub = tenant(&stack, &tnt).await.subscription.unwrap();
    assert_eq!(sub.status, "active");
    assert!(sub.cancel_at_period_end, "older shape is read too");
    assert_eq!(sub.current_period_end, Some(1766392000));

    // The renewal invoice arrives twice (new and old shapes): recorded once.
    deliver_ok(&stack, f("invoice.paid"), "processed").await;
    deliver_ok(&stack, f("invoice.payment_succeeded"), "processed").await;
    let payments = payments(&stack, &tnt).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].get_i64("amount_minor"), Some(8900));
    assert_eq!(
        tenant(&stack, &tnt).await.balance_minor,
        2500,
        "a subscription payment is not credit"
    );

    // past_due → unpaid → canceled, each published to the tenant.
    deliver_ok(&stack, f("invoice.payment_failed"), "processed").await;
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "past_due"
    );
    deliver_ok(&stack, f("invoice.marked_uncollectible"), "processed").await;
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "unpaid"
    );
    deliver_ok(&stack, f("customer.subscription.deleted"), "processed").await;
    let sub = tenant(&stack, &tnt).await.subscription.unwrap();
    assert_eq!(sub.status, "canceled");

    // Anything else is stored as ignored.
    deliver_ok(&stack, f("plan.created"), "ignored").await;

    // An older customer.subscription.updated arriving after .deleted changes nothing.
    let before = tenant(&stack, &tnt).await;
    let notices_before = notifications(&stack, &tnt).await.len();
    let late = variant(
        "customer.subscription.updated",
        &tnt,
        "evt_late_update",
        1763800450,
    );
    deliver_ok(&stack, late, "processed").await;
    assert_eq!(tenant(&stack, &tnt).await, before);
    assert!(
        stored_event(&stack, "evt_late_update")
            .await
            .get_s("note")
            .unwrap()
            .contains("newer state")
    );
    assert_eq!(notifications(&stack, &tnt).await.len(), notices_before);
    let sub_item = get(&stack, &table::subscription_pk(SUBSCRIPTION), "SUB")
        .await
        .unwrap();
    assert_eq!(sub_item.get_s("status"), Some("canceled"));
    assert_eq!(sub_item.get_s("event_id"), Some("evt_fixture0010"));

    // Every notification the tenant cares about was published exactly once.
    let notices = notifications(&stack, &tnt).await;
    for (kind, n) in [
        ("credits.added", 1),
        ("payment.succeeded", 1),
        ("payment.failed", 1),
        ("invoice.uncollectible", 1),
        ("subscription.canceled", 1),
        ("subscription.updated", 2),
    ] {
        assert_eq!(count(&notices, kind), n, "{kind} in {notices:?}");
    }

    // A redelivery of any of them is a duplicate.
    let res = deliver(&stack, f("invoice.paid")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["duplicate"], true);
}

#[tokio::test]
async fn a_stale_or_tied_subscription_event_never_overwrites_newer_state() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Order Co").await;
    deliver_ok(
        &stack,
        fixture("checkout.session.completed.subscription", &tnt),
        "processed",
    )
    .await;
    // past_due at t=300 first, then an older "active" update at t=200: past_due stays.
    deliver_ok(&stack, fixture("invoice.payment_failed", &tnt), "processed").await;
    let older = variant(
        "customer.subscription.created",
        &tnt,
        "evt_older_active",
        1763800200,
    );
    deliver_ok(&stack, older, "processed").await;
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "past_due"
    );
    // A tie (same second): the more advanced state (past_due) is kept over active.
    let tie = variant(
        "customer.subscription.created",
        &tnt,
        "evt_tie_active",
        1763800300,
    );
    deliver_ok(&stack, tie, "processed").await;
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "past_due"
    );
    // A newer invoice.paid clears past_due.
    let paid = variant("invoice.paid", &tnt, "evt_paid_later", 1763800350);
    deliver_ok(&stack, paid, "processed").await;
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "active"
    );
}

#[tokio::test]
async fn twenty_concurrent_deliveries_of_one_event_have_one_effect() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Busy Co").await;
    let body = fixture("payment_intent.succeeded.credits", &tnt);
    let responses = futures::future::join_all((0..20).map(|_| deliver(&stack, body.clone()))).await;
    let mut fresh = 0;
    for res in &responses {
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        if res.json().get("duplicate").is_none() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery did the work");
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    assert_eq!(ledger(&stack, &tnt).await.len(), 1);
    assert_eq!(
        count(&notifications(&stack, &tnt).await, "credits.added"),
        1
    );
    // Nothing was sent on the request path; the outbox relay sends one Deliver per endpoint of
    // the one notification that committed (the tenant has none: nothing at all), and the
    // duplicates' cancelled transactions left nothing in the stream to relay.
    assert!(stack.queued_messages().await.is_empty());
    let drained = stack.relay_outbox().await;
    assert_eq!(
        (drained.invocations, drained.failures),
        (1, 0),
        "{drained:?}"
    );
    let committed = partition(&stack, &table::tenant_pk(&tnt), "EVENT#").await;
    assert_eq!(committed.len(), 1);
    assert!(
        committed[0].contains_key("endpoint_ids"),
        "relayed: expanded"
    );
    assert_eq!(
        stored_event(&stack, "evt_fixture0002")
            .await
            .get_i64("attempts"),
        Some(1)
    );
}

#[tokio::test]
async fn two_events_about_one_payment_delivered_concurrently_credit_it_once() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Race Co").await;
    let a = fixture("checkout.session.completed.payment", &tnt);
    let b = fixture("payment_intent.succeeded.credits", &tnt);
    let bodies: Vec<String> = (0..6)
        .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
        .collect();
    let responses =
        futures::future::join_all(bodies.iter().map(|b| deliver(&stack, b.clone()))).await;
    assert!(responses.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    assert_eq!(ledger(&stack, &tnt).await.len(), 1);
}

#[tokio::test]
async fn an_invoice_of_a_subscription_made_without_checkout_finds_its_tenant_in_the_subscription_metadata()
 {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Api Subscriber Co").await;
    // GIVEN a subscription created through Stripe's API with metadata.tenant_id (no checkout, so
    // no customer link), WHEN its invoice is paid, THEN the invoice is processed, not unmatched.
    let mut invoice: Value = serde_json::from_str(&fixture("invoice.paid", &tnt)).unwrap();
    invoice["data"]["object"]["parent"]["subscription_details"]["metadata"] =
        json!({"tenant_id": tnt});
    deliver_ok(&stack, invoice.to_string(), "processed").await;
    let payments = payments(&stack, &tnt).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].get_i64("amount_minor"), Some(8900));
}

#[tokio::test]
async fn events_before_the_customer_link_wait_and_are_processed_in_arrival_order() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Early Co").await;
    // GIVEN subscription events that only name a customer nobody has linked yet.
    deliver_ok(
        &stack,
        fixture("customer.subscription.created", &tnt),
        "unmatched",
    )
    .await;
    deliver_ok(
        &stack,
        fixture("customer.subscription.updated", &tnt),
        "unmatched",
    )
    .await;
    let waiting = partition(&stack, &table::unmatched_pk(CUSTOMER), "").await;
    assert_eq!(waiting.len(), 2);
    assert!(tenant(&stack, &tnt).await.subscription.is_none());
    // A redelivery while waiting changes nothing.
    let res = deliver(&stack, fixture("customer.subscription.created", &tnt)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        partition(&stack, &table::unmatched_pk(CUSTOMER), "")
            .await
            .len(),
        2
    );

    // WHEN the checkout links the customer THEN both are processed, oldest first.
    deliver_ok(
        &stack,
        fixture("checkout.session.completed.subscription", &tnt),
        "processed",
    )
    .await;
    for id in ["evt_fixture0004", "evt_fixture0005"] {
        let e = stored_event(&stack, id).await;
        assert_eq!(e.get_s("status"), Some("processed"), "{id}");
        assert_eq!(e.get_s("tenant_id"), Some(tnt.as_str()));
    }
    assert!(
        partition(&stack, &table::unmatched_pk(CUSTOMER), "")
            .await
            .is_empty()
    );
    let sub = tenant(&stack, &tnt).await.subscription.unwrap();
    assert_eq!(sub.status, "active");
    assert!(
        sub.cancel_at_period_end,
        "the later update was applied last"
    );
    assert_eq!(
        count(&notifications(&stack, &tnt).await, "subscription.updated"),
        2
    );

    // Statistics moved both from unmatched to processed.
    let stats = sluice::stats::read_window(&stack.aws.dynamodb, table_name(&stack), 1)
        .await
        .unwrap();
    assert_eq!(stats.events_by_status.get("unmatched"), None);
    assert_eq!(stats.events_by_status["processed"], 3);
}

#[tokio::test]
async fn dynamodb_unreachable_mid_request_answers_500_applies_nothing_and_the_retry_succeeds() {
    let counter = CallCounter::new();
    let faults = FaultInjector::default();
    let stack = Stack::with_clients(instrumented_clients(&counter, &faults).await, &[]).await;
    let (tnt, _) = stack.create_tenant("Flaky Co").await;
    let body = fixture("checkout.session.completed.payment", &tnt);

    // WHEN DynamoDB stops answering entirely THEN 500, generic, and nothing is stored.
    faults.fail_next("dynamodb", None, 100);
    let res = deliver(&stack, body.clone()).await;
    let problem = res.assert_problem(500);
    assert!(!problem["detail"].as_str().unwrap().contains("injected"));
    faults.clear();
    assert!(
        get(&stack, &table::stripe_event_pk("evt_fixture0001"), "EVENT")
            .await
            .is_none()
    );
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 0);

    // WHEN it fails in the middle (the transaction) THEN 500, no effect, the event shows failed.
    faults.fail_next("dynamodb", Some("TransactWriteItems"), 1);
    let res = deliver(&stack, body.clone()).await;
    res.assert_problem(500);
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 0);
    assert!(ledger(&stack, &tnt).await.is_empty());
    assert!(
        get(&stack, &table::money_pk(PAYMENT_INTENT), "MONEY")
            .await
            .is_none()
    );
    assert!(
        get(&stack, &table::customer_pk(CUSTOMER), "CUSTOMER")
            .await
            .is_none()
    );
    let failed = stored_event(&stack, "evt_fixture0001").await;
    assert_eq!(failed.get_s("status"), Some("failed"));
    assert_eq!(failed.get_i64("attempts"), Some(1));
    assert!(failed.get_s("error").is_some());

    // WHEN Stripe retries THEN it is processed, once.
    deliver_ok(&stack, body.clone(), "processed").await;
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    let e = stored_event(&stack, "evt_fixture0001").await;
    assert_eq!(e.get_i64("attempts"), Some(2));
    assert!(e.get_s("error").is_none());
    let res = deliver(&stack, body).await;
    assert_eq!(res.json()["duplicate"], true);
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
}

#[tokio::test]
async fn every_malformed_request_gets_its_4xx_and_nothing_is_stored() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Strict Co").await;
    let before = scan(&stack).await.len();
    let body = fixture("payment_intent.succeeded.credits", &tnt);
    // Unit tests pin the exact boundary; here the margin (30 s beyond the 300 s tolerance)
    // keeps the cases valid however long the test runs.
    let now = clock::now_epoch();
    let good = signature::sign(&stack.stripe_secret, now, body.as_bytes());
    let v1 = good.split_once(",v1=").unwrap().1.to_owned();
    let post = |header: Option<String>, body: Bytes| {
        let mut req = Req::post("/webhooks/stripe").body(body);
        if let Some(h) = header {
            req = req.header("stripe-signature", &h);
        }
        req
    };
    let mut changed = body.clone().into_bytes();
    let at = changed.iter().position(|b| *b == b'2').unwrap();
    changed[at] = b'9'; // 2500 → 9500
    let sign_now = |b: &[u8]| Some(signature::sign(&stack.stripe_secret, now, b));
    let big = vec![b' '; signature::MAX_BODY_BYTES + 1];
    let cases: Vec<(&str, Option<String>, Bytes, u16, &str)> = vec![
        (
            "no header",
            None,
            body.clone().into(),
            400,
            "missing-signature",
        ),
        (
            "garbled header",
            Some("hello".into()),
            body.clone().into(),
            400,
            "malformed-signature",
        ),
        (
            "no timestamp",
            Some(format!("v1={v1}")),
            body.clone().into(),
            400,
            "malformed-signature",
        ),
        (
            "only v0",
            Some(format!("t={now},v0={v1}")),
            body.clone().into(),
            400,
            "missing-v1-signature",
        ),
        (
            "stale timestamp",
            Some(signature::sign(
                &stack.stripe_secret,
                now - 330,
                body.as_bytes(),
            )),
            body.clone().into(),
            400,
            "signature-timestamp-out-of-tolerance",
        ),
        (
            "future timestamp",
            Some(signature::sign(
                &stack.stripe_secret,
                now + 330,
                body.as_bytes(),
            )),
            body.clone().into(),
            400,
            "signature-timestamp-out-of-tolerance",
        ),
        (
            "wrong secret",
            Some(signature::sign("whsec_wrong", now, body.as_bytes())),
            body.clone().into(),
            400,
            "invalid-signature",
        ),
        (
            "body one byte changed",
            Some(good.clone()),
            changed.into(),
            400,
            "invalid-signature",
        ),
        (
            "not JSON",
            sign_now(b"not json"),
            Bytes::from_static(b"not json"),
            400,
            "invalid-json",
        ),
        (
            "JSON that is not an event",
            sign_now(br#"{"id":"cus_1","object":"customer"}"#),
            Bytes::from_static(br#"{"id":"cus_1","object":"customer"}"#),
            400,
            "not-a-stripe-event",
        ),
        (
            "1 MiB + 1 byte",
            sign_now(&big),
            big.clone().into(),
            413,
            "payload-too-large",
        ),
    ];
    for (what, header, body, status, slug) in cases {
        let res = stack.send(post(header, body)).await;
        let problem = res.assert_problem(status);
        assert!(
            problem["type"].as_str().unwrap().ends_with(slug),
            "{what}: {problem}"
        );
        assert_eq!(scan(&stack).await.len(), before, "{what}: nothing stored");
    }
    // The well-signed original still goes through afterwards.
    deliver_ok(&stack, body, "processed").await;
}

#[tokio::test]
async fn a_new_event_costs_one_dynamodb_request_and_a_duplicate_one() {
    let counter = CallCounter::new();
    let faults = FaultInjector::default();
    let stack = Stack::with_clients(instrumented_clients(&counter, &faults).await, &[]).await;
    let (tnt, _) = stack.create_tenant("Counted Co").await;
    let body = fixture("payment_intent.succeeded.credits", &tnt);

    // A new event found by metadata.tenant_id, with its notification: the transaction alone
    // (the notification is an outbox item of it; the stream consumer sends, not ingress).
    counter.reset();
    deliver_ok(&stack, body.clone(), "processed").await;
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);
    assert_eq!(counter.count("SQS"), 0);

    // Its duplicate: the cancelled transaction says so.
    counter.reset();
    let res = deliver(&stack, body).await;
    assert_eq!(res.json()["duplicate"], true);
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);
    assert_eq!(counter.count("SQS"), 0);

    // An ignored event: one request too, and no notification.
    counter.reset();
    deliver_ok(&stack, fixture("plan.created", &tnt), "ignored").await;
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);
    assert_eq!(counter.count("SQS"), 0);

    // A checkout that links its customer (no event waiting for it): one request too.
    counter.reset();
    deliver_ok(
        &stack,
        fixture("checkout.session.completed.subscription", &tnt),
        "processed",
    )
    .await;
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);

    // Found through the customer link: one consistent read, then the transaction; its duplicate
    // is recognised by the read alone.
    counter.reset();
    let created = fixture("customer.subscription.created", &tnt);
    deliver_ok(&stack, created.clone(), "processed").await;
    assert_eq!(
        counter.operations("DynamoDB"),
        ["BatchGetItem", "TransactWriteItems"]
    );
    counter.reset();
    assert_eq!(deliver(&stack, created).await.json()["duplicate"], true);
    assert_eq!(counter.operations("DynamoDB"), ["BatchGetItem"]);
}

/// The payment checkout as Sluice's `POST /v1/billing/checkout-sessions` creates it: marked with
/// the customer Sluice linked first; a new event id and payment intent (another top-up).
fn sluice_checkout(tenant: &str, n: u32) -> String {
    let mut v: Value =
        serde_json::from_str(&fixture("checkout.session.completed.payment", tenant)).unwrap();
    v["id"] = json!(format!("evt_sluicecheckout{n}"));
    let object = &mut v["data"]["object"];
    object["payment_intent"] = json!(format!("pi_sluicecheckout{n}"));
    object["metadata"]["sluice_customer"] = object["customer"].clone();
    serde_json::to_string_pretty(&v).unwrap()
}

#[tokio::test]
async fn a_checkout_sluice_created_confirms_the_customer_link_instead_of_writing_it() {
    let counter = CallCounter::new();
    let faults = FaultInjector::default();
    let stack = Stack::with_clients(instrumented_clients(&counter, &faults).await, &[]).await;
    let (tnt, _) = stack.create_tenant("Linked Co").await;
    // Linked as Sluice's billing API links (here by a first checkout).
    deliver_ok(
        &stack,
        fixture("checkout.session.completed.subscription", &tnt),
        "processed",
    )
    .await;
    let link_pk = table::customer_pk(CUSTOMER);
    let link = || get(&stack, &link_pk, "CUSTOMER");
    let before = link().await.expect("the customer is linked");

    counter.reset();
    deliver_ok(&stack, sluice_checkout(&tnt, 1), "processed").await;
    assert_eq!(counter.operations("DynamoDB"), ["TransactWriteItems"]);
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    // The link item was not written again.
    assert_eq!(link().await.unwrap(), before);

    // Marked, but the tenant does not name that customer (Sluice's link is gone, say): the
    // cancelled round tells, and the next one links as any checkout does.
    let (other, _) = stack.create_tenant("Unlinked Co").await;
    let mut v: Value = serde_json::from_str(&sluice_checkout(&other, 2)).unwrap();
    v["data"]["object"]["customer"] = json!("cus_unlinked2");
    v["data"]["object"]["metadata"]["sluice_customer"] = json!("cus_unlinked2");
    counter.reset();
    deliver_ok(
        &stack,
        serde_json::to_string_pretty(&v).unwrap(),
        "processed",
    )
    .await;
    assert_eq!(
        counter.operations("DynamoDB"),
        ["TransactWriteItems", "TransactWriteItems"]
    );
    let other_tenant = tenant(&stack, &other).await;
    assert_eq!(other_tenant.balance_minor, 2500);
    assert_eq!(
        other_tenant.stripe_customer_id.as_deref(),
        Some("cus_unlinked2")
    );
    let relinked = get(&stack, &table::customer_pk("cus_unlinked2"), "CUSTOMER").await;
    assert_eq!(relinked.unwrap().get_s("tenant_id"), Some(other.as_str()));
}

#[tokio::test]
async fn a_payload_sent_base64_by_api_gateway_is_verified_on_its_raw_bytes() {
    // lambda_http hands the function the decoded bytes of an `isBase64Encoded` body; a body that
    // is not UTF-8 text must reach verification unchanged (here: rejected as not JSON, not as a
    // bad signature).
    let stack = Stack::new().await;
    let raw: Vec<u8> = vec![0xff, 0xfe, b'{', b'}'];
    let res = deliver(&stack, raw).await;
    let problem = res.assert_problem(400);
    assert!(
        problem["type"].as_str().unwrap().ends_with("invalid-json"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_unknown_tenant_or_a_foreign_currency_fails_the_event_and_stripe_retries() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Real Co").await;
    // metadata.tenant_id names no tenant.
    let res = deliver(
        &stack,
        fixture("payment_intent.succeeded.credits", "tnt_doesnotexist"),
    )
    .await;
    res.assert_problem(500);
    let e = stored_event(&stack, "evt_fixture0002").await;
    assert_eq!(e.get_s("status"), Some("failed"));
    assert!(e.get_s("error").unwrap().contains("not found"));
    assert!(
        get(&stack, &table::money_pk(PAYMENT_INTENT), "MONEY")
            .await
            .is_none()
    );
    // Stripe's retry counts another attempt.
    deliver(
        &stack,
        fixture("payment_intent.succeeded.credits", "tnt_doesnotexist"),
    )
    .await
    .assert_problem(500);
    assert_eq!(
        stored_event(&stack, "evt_fixture0002")
            .await
            .get_i64("attempts"),
        Some(2)
    );

    // A payment in another currency than the tenant's is not credited.
    let eur = fixture("checkout.session.completed.payment", &tnt).replace("\"usd\"", "\"eur\"");
    deliver(&stack, eur).await.assert_problem(500);
    assert!(
        stored_event(&stack, "evt_fixture0001")
            .await
            .get_s("error")
            .unwrap()
            .contains("currency")
    );
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 0);
}

#[tokio::test]
async fn operators_list_show_retry_and_clean_up_events() {
    let counter = CallCounter::new();
    let faults = FaultInjector::default();
    let stack = Stack::with_clients(instrumented_clients(&counter, &faults).await, &[]).await;
    let (tnt, _) = stack.create_tenant("Ops Co").await;
    let admin = |req: Req| req.admin(&stack.admin_key);

    // A failed event (the transaction could not be sent), an ignored one, a processed one.
    faults.fail_next("dynamodb", Some("TransactWriteItems"), 1);
    deliver(&stack, fixture("payment_intent.succeeded.credits", &tnt))
        .await
        .assert_problem(500);
    deliver_ok(&stack, fixture("plan.created", &tnt), "ignored").await;
    deliver_ok(
        &stack,
        fixture("checkout.session.completed.subscription", &tnt),
        "processed",
    )
    .await;

    // List: newest first, filters, pagination.
    let res = stack.send(admin(Req::get("/admin/stripe-events"))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let ids: Vec<String> = res.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [
            "evt_fixture0003",
            "evt_1Pgc76B7WZ01zgkWwyRHS12y",
            "evt_fixture0002"
        ]
    );
    let res = stack
        .send(admin(Req::get("/admin/stripe-events?status=failed")))
        .await;
    let data = res.json()["data"].clone();
    assert_eq!(data.as_array().unwrap().len(), 1);
    assert_eq!(data[0]["id"], "evt_fixture0002");
    assert_eq!(data[0]["attempts"], 1);
    let res = stack
        .send(admin(Req::get("/admin/stripe-events?type=plan.created")))
        .await;
    assert_eq!(res.json()["data"][0]["status"], "ignored");
    let page1 = stack
        .send(admin(Req::get("/admin/stripe-events?limit=2")))
        .await
        .json();
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = stack
        .send(admin(Req::get(&format!(
            "/admin/stripe-events?limit=2&cursor={cursor}"
        ))))
        .await
        .json();
    assert_eq!(page2["data"][0]["id"], "evt_fixture0002");
    assert!(page2["next_cursor"].is_null());
    stack
        .send(admin(Req::get("/admin/stripe-events?status=bogus")))
        .await
        .assert_problem(400);
    stack
        .send(admin(Req::get("/admin/stripe-events?cursor=garbage")))
        .await
        .assert_problem(400);
    stack
        .send(Req::get("/admin/stripe-events"))
        .await
        .assert_problem(401);

    // Show: status, attempts, error and the stored payload.
    let res = stack
        .send(admin(Req::get("/admin/stripe-events/evt_fixture0002")))
        .await;
    let shown = res.json();
    assert_eq!(shown["status"], "failed");
    assert!(shown["error"].as_str().is_some());
    assert_eq!(shown["payload"]["data"]["object"]["id"], PAYMENT_INTENT);
    stack
        .send(admin(Req::get("/admin/stripe-events/evt_nope")))
        .await
        .assert_problem(404);

    // Retry: processed from the stored payload, exactly once however often it is asked.
    let res = stack
        .send(admin(Req::post(
            "/admin/stripe-events/evt_fixture0002/retry",
        )))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["status"], "processed");
    assert_eq!(res.json()["attempts"], 2);
    let res = stack
        .send(admin(Req::post(
            "/admin/stripe-events/evt_fixture0002/retry",
        )))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["outcome"], "already_processed");
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);

    // Stats: counts by status and type, failure rate, no scan.
    let stats = stack
        .send(admin(Req::get("/admin/stats?hours=24")))
        .await
        .json();
    assert_eq!(stats["hours"], 24);
    assert_eq!(stats["events"], 3);
    assert_eq!(stats["events_by_status"]["processed"], 2);
    assert_eq!(stats["events_by_status"]["ignored"], 1);
    assert_eq!(stats["events_by_type"]["payment_intent.succeeded"], 1);
    assert_eq!(stats["failure_rate"], 0.0);
    stack
        .send(admin(Req::get("/admin/stats?hours=0")))
        .await
        .assert_problem(400);

    // Cleanup: nothing is 30 days old yet; with 0 days every processed/ignored event goes.
    let res = stack
        .send(admin(Req::post("/admin/cleanup").json(&json!({}))))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["deleted"], 0);
    assert_eq!(res.json()["older_than_days"], 30);
    let res = stack
        .send(admin(
            Req::post("/admin/cleanup").json(&json!({"older_than_days": 0})),
        ))
        .await;
    assert_eq!(res.json()["deleted"], 3);
    let left = stack
        .send(admin(Req::get("/admin/stripe-events")))
        .await
        .json();
    assert!(left["data"].as_array().unwrap().is_empty());
    stack
        .send(admin(
            Req::post("/admin/cleanup").json(&json!({"older_than_days": -1})),
        ))
        .await
        .assert_problem(422);
}

#[tokio::test]
async fn health_reports_the_last_24h_and_degrades_with_the_failure_rate() {
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Health Co").await;
    let health = || async { stack.send(Req::get("/health")).await };

    let res = health().await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["status"], "healthy");
    assert_eq!(res.json()["last_24h"]["events"], 0);

    // 1 failed of 6 (16.7 %): degraded, still 200.
    deliver(
        &stack,
        fixture("payment_intent.succeeded.credits", "tnt_doesnotexist"),
    )
    .await
    .assert_problem(500);
    for i in 0..5 {
        deliver_ok(
            &stack,
            variant("plan.created", &tnt, &format!("evt_plan{i}"), 1),
            "ignored",
        )
        .await;
    }
    let res = health().await;
    assert_eq!(res.status, StatusCode::OK);
    let body = res.json();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["last_24h"]["events"], 6);
    assert_eq!(body["last_24h"]["failed"], 1);

    // 2 failed of 7 (28.6 %): unhealthy, 503.
    let other = variant(
        "payment_intent.succeeded.credits",
        "tnt_doesnotexist",
        "evt_fail2",
        1,
    );
    deliver(&stack, other).await.assert_problem(500);
    let res = health().await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json()["status"], "unhealthy");
    assert_eq!(res.json()["checks"]["dynamodb"], "ok");
}

#[tokio::test]
async fn the_trigger_command_signs_a_fixture_and_posts_it_to_the_running_stack() {
    // GIVEN the stack served on a local port, as `make dev` does.
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Trigger Co").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(sluice_local::server::serve(
        listener,
        stack.functions(),
        stopped,
    ));
    let file = fixtures_dir().join("payment_intent.succeeded.credits.json");

    // WHEN `sluice-local trigger --tenant … <file>` runs THEN the event is accepted and credited.
    let run = |fresh: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-local"));
        cmd.arg("trigger");
        if fresh {
            cmd.arg("--fresh");
        }
        cmd.args(["--tenant", &tnt])
            .arg(&file)
            .env(
                "STRIPE_WEBHOOK_SECRETS",
                format!("{},whsec_other", stack.stripe_secret),
            )
            .env("SLUICE_PORT", port.to_string())
            .output()
    };
    let out = run(false).await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.starts_with("200 "), "{printed}");
    assert!(printed.contains("\"processed\""), "{printed}");
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);

    // The same file again is a redelivery; --fresh makes it a new event (same payment: no credit).
    let out = run(false).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"duplicate\":true"));
    let out = run(true).await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("\"processed\"") && !printed.contains("evt_fixture0002"),
        "{printed}"
    );
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);

    let _ = stop.send(true);
    let _ = server.await;
}

#[tokio::test]
async fn a_redelivered_event_whose_item_was_cleaned_up_is_processed_without_a_second_notification()
{
    // GIVEN events processed once, each with its notification published …
    let stack = Stack::new().await;
    let (tnt, _) = stack.create_tenant("Cleanup Co").await;
    let f = |name: &str| fixture(name, &tnt);
    let story = [
        ("checkout.session.completed.payment", "evt_fixture0001"),
        ("customer.subscription.created", "evt_fixture0004"),
        ("invoice.payment_failed", "evt_fixture0008"),
    ];
    for (name, _) in story {
        deliver_ok(&stack, f(name), "processed").await;
    }
    let notices_before = notifications(&stack, &tnt).await;
    assert_eq!(notices_before.len(), 3, "{notices_before:?}");
    // … AND their event items removed (as `/admin/cleanup` or retention does), the notifications
    // and the money items kept.
    for (_, id) in story {
        assert_eq!(stored_event(&stack, id).await.get_s("id"), Some(id));
        stack
            .aws
            .dynamodb
            .delete_item()
            .table_name(table_name(&stack))
            .set_key(Some(table::key(table::stripe_event_pk(id), "EVENT")))
            .send()
            .await
            .unwrap();
    }

    // WHEN Stripe delivers them again THEN each is processed (200), …
    for (name, id) in story {
        let v = deliver_ok(&stack, f(name), "processed").await;
        assert_eq!(v["id"], id);
        let stored = stored_event(&stack, id).await;
        assert_eq!(stored.get_s("status"), Some("processed"));
        // … naming the notification its first delivery published, …
        assert_eq!(stored.get_string_list("notifications").len(), 1, "{id}");
    }
    // … no notification is published twice, and the money stays credited once.
    let mut after = notifications(&stack, &tnt).await;
    let mut before = notices_before;
    after.sort();
    before.sort();
    assert_eq!(after, before);
    assert_eq!(tenant(&stack, &tnt).await.balance_minor, 2500);
    assert_eq!(ledger(&stack, &tnt).await.len(), 1);
    assert_eq!(
        tenant(&stack, &tnt).await.subscription.unwrap().status,
        "past_due"
    );
}
