//! Stripe as a third party writes it: localstripe (a stateful fake Stripe, API 2017-08-15
//! shapes) driven with real, form-encoded API calls, its signed webhooks delivered over a real
//! socket to the ingress served by the local runner. Each flow must give the effect the shared
//! fixtures give, and nothing may be stored `failed`.
//!
//! One localstripe serves the test binary, and one test drives it: localstripe signs every event
//! for every registered webhook (none can be removed), so two stacks registered at once would each
//! receive, validly signed, the other's events. The flows therefore run one after the other on one
//! served stack. Webhooks leave localstripe about a second after the call that caused them, so
//! the flows wait for the state to appear (bounded, never asserting on durations).

use std::{future::Future, sync::OnceLock, time::Duration};

use serde_json::Value;
use sluice::{
    table::{self, Item, ItemExt},
    tenants::{self, Tenant},
};
use sluice_local::localstripe::LocalStripe;
use tokio::sync::watch;

use crate::support::{Req, Stack, http_client, unique};

static LOCALSTRIPE: OnceLock<LocalStripe> = OnceLock::new();

/// The localstripe shared by every test of this binary.
fn localstripe() -> &'static LocalStripe {
    LOCALSTRIPE.get_or_init(|| LocalStripe::start().expect("localstripe starts"))
}

const FORM: &str = "application/x-www-form-urlencoded";

/// `application/x-www-form-urlencoded`, as Stripe's libraries send parameters (hand-written: the
/// workspace's reqwest is built without its `form` feature, and this is all the tests need).
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A stack served on a local port, with localstripe's webhooks pointed at its ingress.
struct Served {
    stack: Stack,
    stop: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn served() -> Served {
    let stack = Stack::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(sluice_local::server::serve(
        listener,
        stack.functions(),
        stopped,
    ));
    let res = http_client()
        .post(format!(
            "{}/_config/webhooks/{}",
            localstripe().url,
            unique("wh")
        ))
        .header("content-type", FORM)
        .body(form(&[
            ("url", &format!("http://127.0.0.1:{port}/webhooks/stripe")),
            ("secret", &stack.stripe_secret),
        ]))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    Served { stack, stop }
}

/// A Stripe API call (form-encoded, secret key as Basic auth, as Stripe's libraries send it).
async fn stripe(method: reqwest::Method, path: &str, fields: &[(&str, &str)]) -> Value {
    let res = http_client()
        .request(method, format!("{}{path}", localstripe().url))
        .basic_auth("sk_test_sluice", Some(""))
        .header("content-type", FORM)
        .body(form(fields))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn post(path: &str, form: &[(&str, &str)]) -> Value {
    stripe(reqwest::Method::POST, path, form).await
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Waits until `check` gives `Some` (webhooks arrive asynchronously); panics naming `what`
/// after a generous bound, so a broken flow fails instead of hanging.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never happened: {what}");
}

async fn tenant(stack: &Stack, id: &str) -> Tenant {
    tenants::get_tenant(&stack.aws.dynamodb, &stack.config.table_name, id)
        .await
        .unwrap()
        .expect("tenant exists")
}

/// The stored Stripe events (`GET /admin/stripe-events`), as (type, status, error).
async fn stored_events(stack: &Stack) -> Vec<(String, String, Option<String>)> {
    let res = stack
        .send(Req::get("/admin/stripe-events?limit=100").admin(&stack.admin_key))
        .await;
    res.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
                e["error"].as_str().map(String::from),
            )
        })
        .collect()
}

async fn ledger(stack: &Stack, tenant: &str) -> Vec<Item> {
    stack
        .aws
        .dynamodb
        .query()
        .table_name(&stack.config.table_name)
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", table::s(table::tenant_pk(tenant)))
        .expression_attribute_values(":p", table::s("LEDGER#"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

fn assert_none_failed(events: &[(String, String, Option<String>)]) {
    for (t, st, err) in events {
        assert!(st != "failed" && st != "unmatched", "{t}: {st} {err:?}");
    }
}

#[tokio::test]
async fn localstripe_payments_and_subscriptions_give_the_effects_of_stripes_fixtures() {
    // GIVEN a served stack whose ingress receives localstripe's webhooks.
    let s = served().await;
    a_payment_intent_bought_for_credits_credits_the_tenant_once(&s).await;
    a_subscription_bills_invoices_and_its_cancellation_ends_it(&s).await;
}

async fn a_payment_intent_bought_for_credits_credits_the_tenant_once(s: &Served) {
    // GIVEN a tenant.
    let (tnt, _) = s.stack.create_tenant("Localstripe Credits").await;

    // WHEN a PaymentIntent for credits is created and confirmed with a card, as an app would.
    let pi = post(
        "/v1/payment_intents",
        &[
            ("amount", "2500"),
            ("currency", "usd"),
            ("metadata[purpose]", "credits"),
            ("metadata[tenant_id]", &tnt),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
        ],
    )
    .await;
    assert_eq!(pi["status"], "succeeded", "{pi}");
    assert!(pi.get("amount_received").is_none(), "an older API shape");

    // THEN its payment_intent.succeeded (no `amount_received`) credits 25.00, as the fixture does.
    let events = eventually("payment_intent.succeeded processed", || async {
        let events = stored_events(&s.stack).await;
        events
            .iter()
            .any(|(t, st, _)| t == "payment_intent.succeeded" && st == "processed")
            .then_some(events)
    })
    .await;
    assert_none_failed(&events);
    assert_eq!(tenant(&s.stack, &tnt).await.balance_minor, 2500);
    let ledger = ledger(&s.stack, &tnt).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].get_s("kind"), Some("credit"));
    assert_eq!(ledger[0].get_s("source"), Some(id(&pi).as_str()));
    let money = s
        .stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&s.stack.config.table_name)
        .set_key(Some(table::key(table::money_pk(&id(&pi)), "MONEY")))
        .send()
        .await
        .unwrap()
        .item
        .expect("the payment is keyed by its payment intent");
    assert_eq!(money.get_i64("amount_minor"), Some(2500));
}

async fn a_subscription_bills_invoices_and_its_cancellation_ends_it(s: &Served) {
    // GIVEN a tenant, and in localstripe a customer whose metadata names it, with a card, and a
    // monthly plan.
    let (tnt, _) = s.stack.create_tenant("Localstripe Subscriptions").await;
    let customer = post(
        "/v1/customers",
        &[
            ("email", "billing@example.com"),
            ("metadata[tenant_id]", &tnt),
        ],
    )
    .await;
    let cus = id(&customer);
    let product = post("/v1/products", &[("name", "Pro"), ("type", "service")]).await;
    let price = unique("price_pro");
    post(
        "/v1/plans",
        &[
            ("id", price.as_str()),
            ("product", &id(&product)),
            ("amount", "8900"),
            ("currency", "usd"),
            ("interval", "month"),
        ],
    )
    .await;
    let pm = post(
        "/v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ],
    )
    .await;
    post(
        &format!("/v1/payment_methods/{}/attach", id(&pm)),
        &[("customer", &cus)],
    )
    .await;
    post(
        &format!("/v1/customers/{cus}"),
        &[("invoice_settings[default_payment_method]", &id(&pm))],
    )
    .await;

    // WHEN the customer subscribes (the subscription itself names no tenant).
    let sub = post(
        "/v1/subscriptions",
        &[("customer", &cus), ("items[0][plan]", &price)],
    )
    .await;
    let sub_id = id(&sub);

    // THEN the customer is linked, the subscription is active with its plan and period, and its
    // first invoice is recorded once as a payment (not credit) — whatever order the webhooks took.
    let summary = eventually(
        "the subscription is active and its invoice recorded",
        || async {
            let t = tenant(&s.stack, &tnt).await;
            let paid = ledger(&s.stack, &tnt)
                .await
                .iter()
                .any(|i| i.get_s("kind") == Some("payment"));
            t.subscription.filter(|sub| sub.status == "active" && paid)
        },
    )
    .await;
    assert_eq!(summary.id, sub_id);
    assert_eq!(summary.price_id.as_deref(), Some(price.as_str()));
    assert_eq!(
        summary.current_period_end,
        sub["current_period_end"].as_i64()
    );
    let t = tenant(&s.stack, &tnt).await;
    assert_eq!(t.stripe_customer_id.as_deref(), Some(cus.as_str()));
    assert_eq!(t.balance_minor, 0, "a subscription payment is not credit");
    let payments: Vec<Item> = ledger(&s.stack, &tnt).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].get_i64("amount_minor"), Some(8900));
    assert_eq!(payments[0].get_s("source"), sub["latest_invoice"].as_str());

    // WHEN it is canceled THEN the tenant's subscription is canceled.
    stripe(
        reqwest::Method::DELETE,
        &format!("/v1/subscriptions/{sub_id}"),
        &[],
    )
    .await;
    eventually("the subscription is canceled", || async {
        tenant(&s.stack, &tnt)
            .await
            .subscription
            .filter(|sub| sub.status == "canceled")
    })
    .await;

    // Every event localstripe sent was processed or ignored, none failed or left waiting.
    let events = stored_events(&s.stack).await;
    assert_none_failed(&events);
    for handled in [
        "customer.created",
        "customer.subscription.created",
        "invoice.payment_succeeded",
        "customer.subscription.deleted",
    ] {
        assert!(
            events
                .iter()
                .any(|(t, st, _)| t == handled && st == "processed"),
            "{handled} in {events:?}"
        );
    }
}
