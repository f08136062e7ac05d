//! Decoding a verified body into a Stripe event, and deciding what the event does.
//!
//! Everything here is pure: [`plan`] turns an event into a [`Plan`] (credits, payments,
//! subscription state, notifications) without touching AWS, so every row of SPEC §4.4 is
//! unit-tested on the shared fixtures. Both API shapes are read: the older one (e.g.
//! `invoice.subscription`, `subscription.current_period_end`, api_version 2024-06-20) and the newer
//! one (`invoice.parent.subscription_details.subscription`, period ends on subscription items),
//! and older still (API 2017-08-15, as localstripe writes it: a PaymentIntent without
//! `amount_received` is credited its captured `charges.data`). A handled event missing what
//! Sluice needs is an `Err` naming the field (stored `failed`), never `Ignored`. A customer whose
//! `metadata.tenant_id` names a tenant is linked to it, as a completed checkout links its own.

use serde_json::{Map, Value};

use crate::{
    ApiError,
    event_types::{
        InvoiceUncollectible, PaymentFailed, SluiceEvent, SubscriptionCanceled, SubscriptionUpdated,
    },
};

/// A Stripe event envelope, as far as Sluice reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct StripeEvent {
    /// `evt_…`.
    pub id: String,
    /// e.g. `invoice.paid`.
    pub event_type: String,
    /// When Stripe created the event (Unix seconds): the ordering guard compares it.
    pub created: i64,
    pub api_version: Option<String>,
    pub livemode: bool,
    /// `data.object`.
    pub object: Map<String, Value>,
}

fn not_an_event(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request_as("not-a-stripe-event", "Not a Stripe event", detail)
}

/// True for a Stripe id usable in a key: `evt_` + up to 250 letters, digits or `_`.
fn valid_event_id(id: &str) -> bool {
    id.strip_prefix("evt_").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 250
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Decodes a verified body; a `400` names what is wrong (not JSON, or JSON that is not an event).
pub fn decode(body: &[u8]) -> Result<StripeEvent, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request_as(
            "invalid-json",
            "Body is not JSON",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut env) = value else {
        return Err(not_an_event("the body is JSON but not an object"));
    };
    if env.get("object").and_then(Value::as_str) != Some("event") {
        return Err(not_an_event("`object` is not \"event\""));
    }
    let id = env
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_event_id(id))
        .ok_or_else(|| not_an_event("`id` is missing or not an `evt_…` id"))?
        .to_owned();
    let event_type = env
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 100 && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| not_an_event("`type` is missing or not a string"))?
        .to_owned();
    let created = env
        .get("created")
        .and_then(Value::as_i64)
        .ok_or_else(|| not_an_event("`created` is missing or not a Unix timestamp"))?;
    let object = match env.remove("data") {
        Some(Value::Object(mut data)) => match data.remove("object") {
            Some(Value::Object(object)) => object,
            _ => return Err(not_an_event("`data.object` is missing or not an object")),
        },
        _ => return Err(not_an_event("`data` is missing or not an object")),
    };
    Ok(StripeEvent {
        id,
        event_type,
        created,
        api_version: env
            .get("api_version")
            .and_then(Value::as_str)
            .map(String::from),
        livemode: env
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        object,
    })
}

/// Where the event says its tenant is (SPEC §4.3), before any lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantRef {
    /// `metadata.tenant_id` or a Checkout Session's `client_reference_id`: no read needed.
    Tenant(String),
    /// Only a Stripe customer: its link (`CUSTOMER#{cus}`) must be read.
    Customer(String),
    /// Nothing names a tenant.
    Unknown,
}

/// An id field that may be a string or an expanded object with an `id`.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

fn str_of<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl StripeEvent {
    /// The Stripe customer of the event's object, if any.
    pub fn customer(&self) -> Option<String> {
        id_of(self.object.get("customer"))
    }

    /// The tenant reference, in the order of SPEC §4.3.
    pub fn tenant_ref(&self) -> TenantRef {
        fn tenant_in(metadata: Option<&Value>) -> Option<&str> {
            metadata
                .and_then(|m| m.get("tenant_id"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        }
        fn details(details: Option<&Value>) -> Option<&str> {
            tenant_in(details.and_then(|d| d.get("metadata")))
        }
        // The object's own metadata; an invoice also carries its subscription's metadata (under
        // `parent.subscription_details` in newer API versions, `subscription_details` in older
        // ones), so invoices of a subscription created with `metadata.tenant_id` find the tenant
        // without a checkout having linked the customer.
        let meta = tenant_in(self.object.get("metadata"))
            .or_else(|| {
                details(
                    self.object
                        .get("parent")
                        .and_then(|p| p.get("subscription_details")),
                )
            })
            .or_else(|| details(self.object.get("subscription_details")));
        let reference = (self.object.get("object").and_then(Value::as_str)
            == Some("checkout.session"))
        .then(|| str_of(&self.object, "client_reference_id"))
        .flatten();
        match (meta.or(reference), self.customer()) {
            (Some(tenant), _) => TenantRef::Tenant(tenant.to_owned()),
            (None, Some(cus)) => TenantRef::Customer(cus),
            (None, None) => TenantRef::Unknown,
        }
    }
}

/// Money that one Stripe object carries, credited or recorded once per `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    /// The object carrying the money: `pi_…` (credits) or `in_…` (invoices).
    pub key: String,
    pub amount_minor: i64,
    /// ISO code, lowercase.
    pub currency: String,
    pub description: String,
}

/// Subscription fields that only subscription events carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubDetails {
    pub price_id: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

/// A change of a subscription's state, subject to the ordering guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubChange {
    pub id: String,
    pub status: String,
    /// Present for `customer.subscription.*` events.
    pub details: Option<SubDetails>,
    /// `invoice.paid`: only a `past_due` subscription changes (back to `active`).
    pub only_if_past_due: bool,
}

/// A notification to the tenant's endpoints, published through the outbound fan-out. Built
/// only from a typed [`SluiceEvent`] (the catalog's payloads), never from free JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub event_type: &'static str,
    pub data: Value,
}

impl From<SluiceEvent> for Notice {
    fn from(event: SluiceEvent) -> Self {
        Notice {
            event_type: event.event_type(),
            data: event.data(),
        }
    }
}

/// What a handled event does once its tenant is known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// A completed checkout links its customer to the tenant.
    pub link_customer: Option<String>,
    /// The checkout was created by Sluice (`POST /v1/billing/checkout-sessions`), which linked
    /// its customer before creating it and says so in `metadata.sluice_customer`: the event
    /// confirms the link on the tenant item instead of writing the link again (README "Cost per
    /// million").
    pub link_known: bool,
    /// Credits added to the balance (one ledger `credit` entry), with its `credits.added` notice.
    pub credit: Option<Money>,
    /// A subscription payment recorded in the ledger (kind `payment`, balance unchanged), with
    /// its `payment.succeeded` notice.
    pub payment: Option<(Money, Option<String>)>,
    /// A subscription checkout records the subscription id on the tenant.
    pub checkout_subscription: Option<String>,
    /// Subscription state, with its notice (if any) published only when the state is applied.
    pub subscription: Option<(SubChange, Option<Notice>)>,
    /// Notices published whenever the event is processed.
    pub notices: Vec<Notice>,
}

/// Whether Sluice acts on an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Handling {
    /// Stored as `ignored`, with the reason.
    Ignored(&'static str),
    Handled(Box<Plan>),
}

/// Lifecycle rank for the ordering guard's ties: the higher rank is the more advanced state.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "incomplete" => 0,
        "trialing" => 1,
        "active" => 2,
        "paused" => 3,
        "past_due" => 4,
        "unpaid" => 5,
        "canceled" | "incomplete_expired" => 6,
        _ => 0,
    }
}

/// Final states: nothing changes a subscription id after them.
pub const FINAL_STATUSES: [&str; 2] = ["canceled", "incomplete_expired"];

fn amount(object: &Map<String, Value>, name: &str) -> Result<i64, String> {
    object
        .get(name)
        .and_then(Value::as_i64)
        .filter(|a| *a >= 0)
        .ok_or_else(|| format!("`{name}` is missing or not a non-negative integer"))
}

fn currency(object: &Map<String, Value>) -> Result<String, String> {
    str_of(object, "currency")
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| "`currency` is missing or not an ISO code".to_owned())
}

/// `invoice.subscription` (older API) or `invoice.parent.subscription_details.subscription`.
fn invoice_subscription(invoice: &Map<String, Value>) -> Option<String> {
    id_of(invoice.get("subscription")).or_else(|| {
        id_of(
            invoice
                .get("parent")
                .and_then(|p| p.get("subscription_details"))
                .and_then(|d| d.get("subscription")),
        )
    })
}

fn sub_details(sub: &Map<String, Value>) -> SubDetails {
    let items = sub
        .get("items")
        .and_then(|i| i.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let price_id = items
        .first()
        .and_then(|item| id_of(item.get("price")).or_else(|| id_of(item.get("plan"))));
    // Older API versions carry the period end on the subscription, newer ones on each item.
    let current_period_end = sub
        .get("current_period_end")
        .and_then(Value::as_i64)
        .or_else(|| {
            items
                .iter()
                .filter_map(|i| i.get("current_period_end").and_then(Value::as_i64))
                .max()
        });
    SubDetails {
        price_id,
        current_period_end,
        cancel_at_period_end: sub
            .get("cancel_at_period_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// The metadata key of the customer Sluice linked before creating a checkout session.
pub const SLUICE_CUSTOMER_KEY: &str = "sluice_customer";

fn checkout(event: &StripeEvent) -> Result<Handling, String> {
    let s = &event.object;
    let customer = event.customer();
    let link_known = customer.is_some()
        && s.get("metadata")
            .and_then(|m| m.get(SLUICE_CUSTOMER_KEY))
            .and_then(Value::as_str)
            == customer.as_deref();
    let mut plan = Plan {
        link_customer: customer,
        link_known,
        ..Plan::default()
    };
    let paid = event.event_type == "checkout.session.async_payment_succeeded"
        || str_of(s, "payment_status") == Some("paid");
    match str_of(s, "mode") {
        Some("payment") if paid => {
            let total = amount(s, "amount_total")?;
            if total > 0 {
                let session_id = str_of(s, "id").unwrap_or_default().to_owned();
                // Keyed by the payment intent, as `payment_intent.succeeded` is: one payment,
                // one credit, whichever of the two events comes first.
                let key = id_of(s.get("payment_intent")).unwrap_or(session_id.clone());
                plan.credit = Some(Money {
                    key,
                    amount_minor: total,
                    currency: currency(s)?,
                    description: format!("Credits purchased (Checkout Session {session_id})"),
                });
            }
        }
        Some("subscription") => {
            plan.checkout_subscription = id_of(s.get("subscription"));
        }
        _ => {}
    }
    if plan == Plan::default() {
        return Ok(Handling::Ignored(
            "checkout session without a customer, a paid payment or a subscription",
        ));
    }
    Ok(Handling::Handled(Box::new(plan)))
}

fn payment_intent(event: &StripeEvent) -> Result<Handling, String> {
    let pi = &event.object;
    let purpose = pi
        .get("metadata")
        .and_then(|m| m.get("purpose"))
        .and_then(Value::as_str);
    if purpose != Some("credits") {
        return Ok(Handling::Ignored(
            "payment intent without metadata.purpose=credits",
        ));
    }
    let id = str_of(pi, "id").ok_or("the payment intent has no `id`")?;
    let received = amount_received(pi)?;
    if received == 0 {
        return Ok(Handling::Ignored("payment intent received nothing"));
    }
    Ok(Handling::Handled(Box::new(Plan {
        credit: Some(Money {
            key: id.to_owned(),
            amount_minor: received,
            currency: currency(pi)?,
            description: format!("Credits purchased (PaymentIntent {id})"),
        }),
        ..Plan::default()
    })))
}

/// What a succeeded payment intent received: `amount_received`, or, in API versions before it
/// existed (e.g. 2017-08-15, as localstripe writes them), the sum of its captured, paid charges
/// (`charges.data`). Neither present: `Err` naming the field, never a guess from `amount`.
fn amount_received(pi: &Map<String, Value>) -> Result<i64, String> {
    if pi.contains_key("amount_received") {
        return amount(pi, "amount_received");
    }
    let charges = pi
        .get("charges")
        .and_then(|c| c.get("data"))
        .and_then(Value::as_array)
        .ok_or("`amount_received` is missing (and there is no `charges.data` to sum)")?;
    let mut captured = charges
        .iter()
        .filter(|c| {
            c.get("captured").and_then(Value::as_bool) == Some(true)
                && c.get("paid").and_then(Value::as_bool) == Some(true)
        })
        .map(|c| {
            let charged = c.get("amount").and_then(Value::as_i64).filter(|a| *a >= 0);
            // A charge captured for less than it authorized says so in `amount_captured`.
            let captured = c.get("amount_captured").and_then(Value::as_i64);
            captured.or(charged)
        })
        .peekable();
    if captured.peek().is_none() {
        return Err(
            "`amount_received` is missing and `charges.data` has no captured charge".to_owned(),
        );
    }
    captured.try_fold(0i64, |sum, a| {
        a.and_then(|a| sum.checked_add(a)).ok_or_else(|| {
            "`charges.data[].amount` is missing or not a non-negative integer".to_owned()
        })
    })
}

/// A customer whose `metadata.tenant_id` names a tenant (a customer created for the tenant, e.g.
/// through the API rather than a checkout) is linked to it as a completed checkout links its
/// customer, so its invoices, which carry only the customer, find the tenant.
fn customer(event: &StripeEvent) -> Result<Handling, String> {
    if !matches!(event.tenant_ref(), TenantRef::Tenant(_)) {
        return Ok(Handling::Ignored("customer without metadata.tenant_id"));
    }
    let id = str_of(&event.object, "id").ok_or("the customer has no `id`")?;
    Ok(Handling::Handled(Box::new(Plan {
        link_customer: Some(id.to_owned()),
        ..Plan::default()
    })))
}

fn subscription(event: &StripeEvent) -> Result<Handling, String> {
    let sub = &event.object;
    let id = str_of(sub, "id")
        .ok_or("the subscription has no `id`")?
        .to_owned();
    let deleted = event.event_type == "customer.subscription.deleted";
    let status = if deleted {
        "canceled".to_owned()
    } else {
        str_of(sub, "status")
            .ok_or("the subscription has no `status`")?
            .to_owned()
    };
    let details = sub_details(sub);
    let notice = Notice::from(if deleted {
        SluiceEvent::SubscriptionCanceled(SubscriptionCanceled {
            subscription_id: id.clone(),
            status: status.clone(),
        })
    } else {
        SluiceEvent::SubscriptionUpdated(SubscriptionUpdated {
            subscription_id: id.clone(),
            status: status.clone(),
            price_id: details.price_id.clone(),
            current_period_end: details.current_period_end,
            cancel_at_period_end: details.cancel_at_period_end,
        })
    });
    Ok(Handling::Handled(Box::new(Plan {
        subscription: Some((
            SubChange {
                id,
                status,
                details: Some(details),
                only_if_past_due: false,
            },
            Some(notice),
        )),
        ..Plan::default()
    })))
}

fn invoice(event: &StripeEvent) -> Result<Handling, String> {
    let inv = &event.object;
    let id = str_of(inv, "id")
        .ok_or("the invoice has no `id`")?
        .to_owned();
    let sub = invoice_subscription(inv);
    let mut plan = Plan::default();
    let change = |status: &str, only_if_past_due| {
        sub.clone().map(|sub_id| {
            (
                SubChange {
                    id: sub_id,
                    status: status.to_owned(),
                    details: None,
                    only_if_past_due,
                },
                None,
            )
        })
    };
    match event.event_type.as_str() {
        "invoice.paid" | "invoice.payment_succeeded" => {
            let paid = amount(inv, "amount_paid")?;
            if paid > 0 {
                plan.payment = Some((
                    Money {
                        key: id.clone(),
                        amount_minor: paid,
                        currency: currency(inv)?,
                        description: format!("Invoice {id} paid"),
                    },
                    sub.clone(),
                ));
            }
            plan.subscription = change("active", true);
        }
        "invoice.payment_failed" => {
            plan.subscription = change("past_due", false);
            plan.notices
                .push(Notice::from(SluiceEvent::PaymentFailed(PaymentFailed {
                    invoice_id: id,
                    amount_due_minor: inv.get("amount_due").and_then(Value::as_i64),
                    currency: currency(inv).ok(),
                    subscription_id: sub,
                    attempt_count: inv.get("attempt_count").and_then(Value::as_i64),
                })));
        }
        "invoice.marked_uncollectible" => {
            plan.subscription = change("unpaid", false);
            plan.notices
                .push(Notice::from(SluiceEvent::InvoiceUncollectible(
                    InvoiceUncollectible {
                        invoice_id: id,
                        amount_due_minor: inv.get("amount_due").and_then(Value::as_i64),
                        currency: currency(inv).ok(),
                        subscription_id: sub,
                    },
                )));
        }
        _ => unreachable!("dispatched on invoice types only"),
    }
    if plan == Plan::default() {
        return Ok(Handling::Ignored(
            "invoice without a payment or a subscription",
        ));
    }
    Ok(Handling::Handled(Box::new(plan)))
}

/// What the event does (SPEC §4.4). `Err` is a handled type whose object is not as Stripe
/// documents it: the event is stored `failed` with that text.
pub fn plan(event: &StripeEvent) -> Result<Handling, String> {
    match event.event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            checkout(event)
        }
        "payment_intent.succeeded" => payment_intent(event),
        "customer.created" | "customer.updated" => customer(event),
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => subscription(event),
        "invoice.paid"
        | "invoice.payment_succeeded"
        | "invoice.payment_failed"
        | "invoice.marked_uncollectible" => invoice(event),
        _ => Ok(Handling::Ignored("event type not handled")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixture_bytes(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/stripe/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap()
    }

    fn fixture(name: &str) -> StripeEvent {
        decode(&fixture_bytes(name)).unwrap()
    }

    fn handled(name: &str) -> Plan {
        match plan(&fixture(name)).unwrap() {
            Handling::Handled(p) => *p,
            other => panic!("{name}: {other:?}"),
        }
    }

    const SUB: &str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw";
    const CUS: &str = "cus_QXg1hqf4jFNsqG";
    const PI: &str = "pi_3PgafyB7WZ01zgkW1aBcDeFg";

    #[test]
    fn anything_that_is_not_an_event_is_refused_with_its_cause() {
        let detail = |body: &str| match decode(body.as_bytes()).unwrap_err() {
            ApiError::Client { detail, slug, .. } => format!("{slug}: {detail}"),
            other => panic!("{other:?}"),
        };
        assert!(detail("nope").starts_with("invalid-json"));
        assert!(detail("[1]").contains("not an object"));
        assert!(detail(r#"{"object":"customer"}"#).contains("`object`"));
        assert!(detail(r#"{"object":"event","id":"cus_1"}"#).contains("`id`"));
        assert!(detail(r#"{"object":"event","id":"evt_1#x"}"#).contains("`id`"));
        assert!(detail(r#"{"object":"event","id":"evt_1","type":"a"}"#).contains("`created`"));
        assert!(
            detail(r#"{"object":"event","id":"evt_1","type":"a","created":1,"data":{}}"#)
                .contains("`data.object`")
        );
    }

    #[test]
    fn the_tenant_is_found_in_spec_order() {
        // metadata.tenant_id first, then client_reference_id, then the customer.
        assert_eq!(
            fixture("payment_intent.succeeded.credits").tenant_ref(),
            TenantRef::Tenant("tnt_fixture0001".into())
        );
        assert_eq!(
            fixture("checkout.session.completed.payment").tenant_ref(),
            TenantRef::Tenant("tnt_fixture0001".into())
        );
        assert_eq!(
            fixture("invoice.paid").tenant_ref(),
            TenantRef::Customer(CUS.into())
        );
        assert_eq!(fixture("plan.created").tenant_ref(), TenantRef::Unknown);
    }

    #[test]
    fn an_invoice_finds_the_tenant_in_its_subscriptions_metadata_in_both_api_shapes() {
        let with = |edit: fn(&mut Value)| {
            let mut v: Value = serde_json::from_slice(&fixture_bytes("invoice.paid")).unwrap();
            edit(&mut v["data"]["object"]);
            decode(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .tenant_ref()
        };
        let tenant = TenantRef::Tenant("tnt_sub0001".into());
        // Newer API versions: parent.subscription_details.metadata.
        assert_eq!(
            with(
                |o| o["parent"]["subscription_details"]["metadata"]["tenant_id"] =
                    "tnt_sub0001".into()
            ),
            tenant
        );
        // Older ones: subscription_details.metadata.
        assert_eq!(
            with(|o| {
                o["parent"] = Value::Null;
                o["subscription_details"] =
                    serde_json::json!({"metadata": {"tenant_id": "tnt_sub0001"}});
            }),
            tenant
        );
        // The invoice's own metadata comes first.
        assert_eq!(
            with(|o| {
                o["metadata"]["tenant_id"] = "tnt_own0001".into();
                o["parent"]["subscription_details"]["metadata"]["tenant_id"] = "tnt_sub0001".into();
            }),
            TenantRef::Tenant("tnt_own0001".into())
        );
    }

    #[test]
    fn both_payment_events_credit_the_same_payment_intent() {
        let checkout = handled("checkout.session.completed.payment");
        let pi = handled("payment_intent.succeeded.credits");
        let (a, b) = (checkout.credit.unwrap(), pi.credit.unwrap());
        assert_eq!(
            (a.key.as_str(), a.amount_minor, a.currency.as_str()),
            (PI, 2500, "usd")
        );
        assert_eq!((b.key.as_str(), b.amount_minor), (PI, 2500));
        assert_eq!(checkout.link_customer.as_deref(), Some(CUS));
    }

    #[test]
    fn an_async_payment_credits_when_it_succeeds_not_when_the_session_completes() {
        let mut pending = fixture("checkout.session.completed.payment");
        pending
            .object
            .insert("payment_status".into(), json!("unpaid"));
        let p = match plan(&pending).unwrap() {
            Handling::Handled(p) => *p,
            other => panic!("{other:?}"),
        };
        assert!(p.credit.is_none());
        assert_eq!(p.link_customer.as_deref(), Some(CUS));
        pending.event_type = "checkout.session.async_payment_succeeded".into();
        let Handling::Handled(p) = plan(&pending).unwrap() else {
            panic!("handled")
        };
        assert_eq!(p.credit.unwrap().key, PI);
    }

    #[test]
    fn a_subscription_checkout_links_and_records_the_subscription() {
        let p = handled("checkout.session.completed.subscription");
        assert_eq!(p.link_customer.as_deref(), Some(CUS));
        assert_eq!(p.checkout_subscription.as_deref(), Some(SUB));
        assert!(p.credit.is_none());
    }

    #[test]
    fn subscription_events_read_old_and_new_shapes() {
        // Newer API: the period end lives on the subscription items.
        let (created, notice) = handled("customer.subscription.created")
            .subscription
            .unwrap();
        let d = created.details.unwrap();
        assert_eq!(created.status, "active");
        assert_eq!(
            d.price_id.as_deref(),
            Some("price_1PgafmB7WZ01zgkW6dKueIc5")
        );
        assert_eq!(d.current_period_end, Some(1766392000));
        assert_eq!(notice.unwrap().event_type, "subscription.updated");
        // Older API (2024-06-20): the period end is a top-level field.
        let (updated, _) = handled("customer.subscription.updated")
            .subscription
            .unwrap();
        let d = updated.details.unwrap();
        assert!(d.cancel_at_period_end);
        assert_eq!(d.current_period_end, Some(1766392000));
        let (deleted, notice) = handled("customer.subscription.deleted")
            .subscription
            .unwrap();
        assert_eq!(deleted.status, "canceled");
        assert_eq!(notice.unwrap().event_type, "subscription.canceled");
    }

    #[test]
    fn invoices_read_old_and_new_shapes() {
        for name in ["invoice.paid", "invoice.payment_succeeded"] {
            let p = handled(name);
            let (money, sub) = p.payment.unwrap();
            assert_eq!(
                (money.key.as_str(), money.amount_minor),
                ("in_fixture_paid_0001", 8900)
            );
            assert_eq!(sub.as_deref(), Some(SUB), "{name}");
            let (change, _) = p.subscription.unwrap();
            assert!(change.only_if_past_due);
        }
        let failed = handled("invoice.payment_failed");
        assert_eq!(failed.subscription.unwrap().0.status, "past_due");
        assert_eq!(failed.notices[0].event_type, "payment.failed");
        let unpaid = handled("invoice.marked_uncollectible");
        assert_eq!(unpaid.subscription.unwrap().0.status, "unpaid");
        assert_eq!(unpaid.notices[0].event_type, "invoice.uncollectible");
    }

    #[test]
    fn other_events_are_ignored_and_broken_objects_fail() {
        assert!(matches!(
            plan(&fixture("plan.created")).unwrap(),
            Handling::Ignored(_)
        ));
        let mut pi = fixture("payment_intent.succeeded.credits");
        pi.object.remove("metadata");
        assert!(matches!(plan(&pi).unwrap(), Handling::Ignored(_)));
        let mut checkout = fixture("checkout.session.completed.payment");
        checkout.object.insert("amount_total".into(), json!("lots"));
        assert!(plan(&checkout).unwrap_err().contains("amount_total"));
    }

    #[test]
    fn ranks_order_the_lifecycle() {
        assert!(status_rank("active") < status_rank("past_due"));
        assert!(status_rank("past_due") < status_rank("unpaid"));
        assert!(status_rank("unpaid") < status_rank("canceled"));
    }

    /// A fixture's event with its object edited.
    fn edited(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> StripeEvent {
        let mut e = fixture(name);
        edit(&mut e.object);
        e
    }

    #[test]
    fn a_checkout_names_its_link_known_only_when_sluice_marked_that_very_customer() {
        // Sluice's own checkout carries `metadata.sluice_customer` = the customer it linked.
        assert!(!handled("checkout.session.completed.payment").link_known);
        let mark = |v: Value| {
            let e = edited("checkout.session.completed.payment", |o| {
                o["metadata"][SLUICE_CUSTOMER_KEY] = v;
            });
            match plan(&e).unwrap() {
                Handling::Handled(p) => p.link_known,
                other => panic!("{other:?}"),
            }
        };
        assert!(mark(CUS.into()));
        assert!(!mark("cus_other".into()));
        assert!(!mark(Value::Null));
        // Without a customer there is nothing to link, whatever the metadata says.
        let no_customer = edited("checkout.session.completed.payment", |o| {
            o["customer"] = Value::Null;
            o["metadata"][SLUICE_CUSTOMER_KEY] = Value::Null;
        });
        match plan(&no_customer).unwrap() {
            Handling::Handled(p) => assert!(!p.link_known && p.link_customer.is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_payment_intent_of_an_older_api_version_credits_its_captured_charges() {
        // As localstripe (API 2017-08-15) writes it: no `amount_received`, the charge inline.
        let old = edited("payment_intent.succeeded.credits", |o| {
            o.remove("amount_received");
            o.insert(
                "charges".into(),
                json!({"object": "list", "data": [
                    {"id": "ch_1", "amount": 2500, "captured": true, "paid": true, "status": "succeeded"},
                    {"id": "ch_0", "amount": 2500, "captured": false, "paid": false, "status": "failed"}
                ]}),
            );
        });
        let Handling::Handled(p) = plan(&old).unwrap() else {
            panic!("handled")
        };
        assert_eq!(
            *p,
            handled("payment_intent.succeeded.credits"),
            "same effect as Stripe's"
        );
    }

    #[test]
    fn a_payment_intent_without_any_received_amount_fails_naming_the_field() {
        let none = edited("payment_intent.succeeded.credits", |o| {
            o.remove("amount_received");
        });
        assert!(
            plan(&none)
                .unwrap_err()
                .contains("`amount_received` is missing")
        );
        let uncaptured = edited("payment_intent.succeeded.credits", |o| {
            o.remove("amount_received");
            o.insert(
                "charges".into(),
                json!({"data": [{"amount": 2500, "captured": false, "paid": true}]}),
            );
        });
        let err = plan(&uncaptured).unwrap_err();
        assert!(
            err.contains("`amount_received`") && err.contains("no captured charge"),
            "{err}"
        );
        let garbled = edited("payment_intent.succeeded.credits", |o| {
            o.remove("amount_received");
            o.insert(
                "charges".into(),
                json!({"data": [{"amount": "lots", "captured": true, "paid": true}]}),
            );
        });
        assert!(
            plan(&garbled)
                .unwrap_err()
                .contains("`charges.data[].amount`")
        );
    }

    #[test]
    fn a_customer_naming_its_tenant_is_linked_and_others_are_ignored() {
        let body = |metadata: Value| {
            json!({
                "id": "evt_cus1", "object": "event", "type": "customer.created", "created": 1,
                "data": {"object": {"id": "cus_1", "object": "customer", "metadata": metadata}}
            })
            .to_string()
        };
        let named = decode(body(json!({"tenant_id": "tnt_a"})).as_bytes()).unwrap();
        assert_eq!(named.tenant_ref(), TenantRef::Tenant("tnt_a".into()));
        let Handling::Handled(p) = plan(&named).unwrap() else {
            panic!("handled")
        };
        assert_eq!(p.link_customer.as_deref(), Some("cus_1"));
        assert_eq!(p.notices, []);
        let anonymous = decode(body(json!({})).as_bytes()).unwrap();
        assert!(matches!(plan(&anonymous).unwrap(), Handling::Ignored(_)));
    }

    #[test]
    fn a_subscription_or_invoice_missing_what_sluice_needs_fails_naming_it() {
        let sub = edited("customer.subscription.updated", |o| {
            o.remove("status");
        });
        assert!(plan(&sub).unwrap_err().contains("`status`"));
        let inv = edited("invoice.paid", |o| {
            o.remove("amount_paid");
        });
        assert!(plan(&inv).unwrap_err().contains("`amount_paid`"));
        let inv = edited("invoice.paid", |o| {
            o.remove("currency");
        });
        assert!(plan(&inv).unwrap_err().contains("`currency`"));
    }
}
