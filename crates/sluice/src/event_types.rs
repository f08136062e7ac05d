//! The catalog of event types Sluice itself publishes to tenants' endpoints: one home for each
//! type's name, description, payload version and payload (`data`) type.
//!
//! A publisher builds a [`SluiceEvent`] from a typed payload struct; [`SluiceEvent::event_type`]
//! and [`SluiceEvent::data`] are what goes on the wire (`{"type", "timestamp", "data"}`, see
//! `outbound::OutboundEvent::wire_body`). The JSON Schema of each type's `data` is derived
//! (`utoipa::ToSchema`) from the same struct that is serialized, so the payload cannot drift from
//! its documented schema. The enum and [`catalog`] come from one list ([`sluice_events!`]), so a
//! type cannot be published without a catalog entry.
//!
//! The catalog is served by `GET /v1/event-types`, is the OpenAPI document's `webhooks`, and is
//! rendered as `docs/event-types.md` ([`markdown`]). Tenants' own types (`POST /v1/events`) are
//! free-form and not in it. Pure: no AWS request.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `credits.added`: a Stripe payment bought prepaid credits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CreditsAdded {
    /// Credited, in minor units of `currency` (cents for USD).
    pub amount_minor: i64,
    /// Lowercase ISO 4217.
    #[schema(example = "usd")]
    pub currency: String,
    /// The ledger entry of the credit (`led_…`), as `GET /v1/ledger` lists it.
    pub ledger_id: String,
    /// The Stripe object that carried the money: a PaymentIntent (`pi_…`), or the Checkout
    /// Session (`cs_…`) when it has none.
    pub payment_id: String,
}

/// `payment.succeeded`: an invoice (typically of the subscription) was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct PaymentSucceeded {
    /// The Stripe invoice (`in_…`).
    pub invoice_id: String,
    /// Paid, in minor units of `currency`.
    pub amount_minor: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The Stripe subscription (`sub_…`) the invoice belongs to, if any.
    #[schema(required = true)]
    pub subscription_id: Option<String>,
    /// The ledger entry recording the payment (kind `payment`; the balance is unchanged).
    pub ledger_id: String,
}

/// `payment.failed`: a payment of an invoice failed; the subscription turns `past_due`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct PaymentFailed {
    /// The Stripe invoice (`in_…`).
    pub invoice_id: String,
    /// Still due, in minor units of `currency`; `null` when Stripe did not say.
    #[schema(required = true)]
    pub amount_due_minor: Option<i64>,
    /// Lowercase ISO 4217; `null` when Stripe did not say.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// The Stripe subscription (`sub_…`), if any.
    #[schema(required = true)]
    pub subscription_id: Option<String>,
    /// How many payment attempts Stripe has made so far.
    #[schema(required = true)]
    pub attempt_count: Option<i64>,
}

/// `invoice.uncollectible`: Stripe gave up on an invoice; the subscription turns `unpaid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct InvoiceUncollectible {
    /// The Stripe invoice (`in_…`).
    pub invoice_id: String,
    /// Left unpaid, in minor units of `currency`; `null` when Stripe did not say.
    #[schema(required = true)]
    pub amount_due_minor: Option<i64>,
    /// Lowercase ISO 4217; `null` when Stripe did not say.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// The Stripe subscription (`sub_…`), if any.
    #[schema(required = true)]
    pub subscription_id: Option<String>,
}

/// `subscription.updated`: the tenant's subscription was created or changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionUpdated {
    /// The Stripe subscription (`sub_…`).
    pub subscription_id: String,
    /// Stripe's status: `incomplete`, `trialing`, `active`, `paused`, `past_due`, `unpaid`, …
    pub status: String,
    /// The price of its first item (`price_…`), if any.
    #[schema(required = true)]
    pub price_id: Option<String>,
    /// End of the current period (epoch seconds), if Stripe said.
    #[schema(required = true)]
    pub current_period_end: Option<i64>,
    /// True when it ends at the end of the current period.
    pub cancel_at_period_end: bool,
}

/// `subscription.canceled`: the tenant's subscription ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionCanceled {
    /// The Stripe subscription (`sub_…`).
    pub subscription_id: String,
    /// Always `canceled`.
    #[schema(example = "canceled")]
    pub status: String,
}

/// `budget.warning` and `budget.exceeded`: this month's usage crossed a threshold of the budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct BudgetAlert {
    /// The budget month, `YYYY-MM` (UTC).
    #[schema(example = "2026-12", pattern = r"^[0-9]{4}-[0-9]{2}$")]
    pub month: String,
    /// The tenant's `monthly_budget_minor`.
    pub monthly_limit_minor: i64,
    /// Usage debited this month, including the debit that crossed the threshold.
    pub used_this_month_minor: i64,
}

/// `sluice.test`: a test event sent to one endpoint on request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct EndpointTest {
    /// The endpoint it was sent to (`ep_…`).
    pub endpoint_id: String,
    /// A fixed human-readable line.
    #[schema(example = "This is a test event from Sluice.")]
    pub message: String,
}

impl EndpointTest {
    /// The test payload for an endpoint.
    pub fn new(endpoint_id: &str) -> Self {
        EndpointTest {
            endpoint_id: endpoint_id.to_owned(),
            message: "This is a test event from Sluice.".to_owned(),
        }
    }
}

/// One entry of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct EventType {
    /// The `type` of the delivered body.
    #[schema(example = "credits.added")]
    pub name: &'static str,
    pub description: &'static str,
    /// The version of the payload: bumped only by an incompatible change of `data` (a field
    /// removed, renamed or retyped); added fields keep it.
    pub version: u32,
    /// The name of the payload's schema (`components.schemas` of the OpenAPI document).
    #[schema(example = "CreditsAdded")]
    pub payload: &'static str,
    /// JSON Schema (2020-12) of the delivered `data`.
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// The JSON Schema of a payload type, as utoipa derives it (inline: payloads are flat).
fn schema_of<T: ToSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or_default()
}

/// Defines [`SluiceEvent`] (one variant per type, carrying its payload) and [`catalog`] from one
/// list, so that the published types and the catalog cannot disagree. A macro rather than a
/// derive crate: five lines of expansion, no new dependency.
macro_rules! sluice_events {
    ($($(#[doc = $doc:literal])+ $variant:ident($payload:ident) = $name:literal, version $version:literal;)+) => {
        /// An event Sluice publishes, with its typed payload.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum SluiceEvent {
            $($(#[doc = $doc])+ $variant($payload),)+
        }

        impl SluiceEvent {
            /// The `type` on the wire.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }

            /// The `data` on the wire.
            pub fn data(&self) -> Value {
                let data = match self {
                    $(Self::$variant(payload) => serde_json::to_value(payload),)+
                };
                data.expect("payloads of plain fields always serialize")
            }
        }

        /// Every type Sluice publishes, in this order.
        pub fn catalog() -> Vec<EventType> {
            vec![$(EventType {
                name: $name,
                description: concat!($($doc),+).trim_ascii(),
                version: $version,
                payload: stringify!($payload),
                schema: schema_of::<$payload>(),
            },)+]
        }

        /// The payload schemas by name (each once), for the OpenAPI document's components.
        pub fn payload_schemas() -> Vec<(&'static str, Value)> {
            let mut out: Vec<(&'static str, Value)> = Vec::new();
            $(if !out.iter().any(|(n, _)| *n == stringify!($payload)) {
                out.push((stringify!($payload), schema_of::<$payload>()));
            })+
            out
        }
    };
}

sluice_events! {
    /// Prepaid credits were added to the balance: a Stripe Checkout Session in payment mode or
    /// a PaymentIntent with `metadata.purpose=credits` succeeded. Sent once per payment.
    CreditsAdded(CreditsAdded) = "credits.added", version 1;
    /// An invoice was paid (`invoice.paid` or `invoice.payment_succeeded` from Stripe); the
    /// payment is recorded in the ledger, the balance is unchanged. Sent once per invoice.
    PaymentSucceeded(PaymentSucceeded) = "payment.succeeded", version 1;
    /// A payment of an invoice failed (`invoice.payment_failed`); the subscription is now
    /// `past_due`. Sent for each failed attempt.
    PaymentFailed(PaymentFailed) = "payment.failed", version 1;
    /// Stripe marked an invoice uncollectible (`invoice.marked_uncollectible`); the
    /// subscription is now `unpaid`.
    InvoiceUncollectible(InvoiceUncollectible) = "invoice.uncollectible", version 1;
    /// The subscription was created or changed (`customer.subscription.created`/`updated`).
    /// Sent only when the change is applied: an older event arriving late sends nothing.
    SubscriptionUpdated(SubscriptionUpdated) = "subscription.updated", version 1;
    /// The subscription ended (`customer.subscription.deleted`).
    SubscriptionCanceled(SubscriptionCanceled) = "subscription.canceled", version 1;
    /// Usage this month reached 80 % of `monthly_budget_minor`. Sent once per month (again
    /// after a credit re-arms it).
    BudgetWarning(BudgetAlert) = "budget.warning", version 1;
    /// Usage this month reached 100 % of `monthly_budget_minor`. Sent once per month (again
    /// after a credit re-arms it).
    BudgetExceeded(BudgetAlert) = "budget.exceeded", version 1;
    /// A test sent on request (`POST /v1/endpoints/{id}/test`, or the portal's "Send a test
    /// event") to that one endpoint only, whatever its `event_types`.
    EndpointTest(EndpointTest) = "sluice.test", version 1;
}

/// The catalog as Markdown, committed as `docs/event-types.md` (a test keeps them equal).
pub fn markdown() -> String {
    let mut md = String::from(
        "# Event types\n\n\
         <!-- Generated from crates/sluice/src/event_types.rs; regenerate with \
         `SLUICE_BLESS=1 cargo test -p sluice-local --test it event_types::the_committed`. -->\n\n\
         The events Sluice itself publishes to your endpoints. `GET /v1/event-types` lists the \
         same catalog, and `docs/openapi.json` describes each as a webhook (OpenAPI `webhooks`).\n\n\
         Every delivery is a `POST` of `{\"type\", \"timestamp\", \"data\"}` signed with the \
         Standard Webhooks headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; \
         `data` is described below. Fields may be added to a payload without a new version; a \
         removed, renamed or retyped field bumps it. Types you publish yourself with \
         `POST /v1/events` are free-form and not listed here.\n\n\
         | Type | Version | Description |\n|---|---|---|\n",
    );
    let entries = catalog();
    for e in &entries {
        let _ = writeln!(
            md,
            "| [`{}`](#{}) | {} | {} |",
            e.name,
            e.name.replace('.', ""),
            e.version,
            e.description.replace('\n', " ").replace("  ", " ")
        );
    }
    for e in &entries {
        let _ = write!(
            md,
            "\n## {}\n\nVersion {}. {}\n\n`data` ({}):\n\n| Field | Type | Description |\n|---|---|---|\n",
            e.name,
            e.version,
            one_line(e.description),
            e.payload
        );
        let required: Vec<&str> = e.schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (field, schema) in e.schema["properties"].as_object().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| `{field}` | {}{} | {} |",
                type_name(schema),
                if required.contains(&field.as_str()) {
                    ""
                } else {
                    ", optional"
                },
                schema["description"]
                    .as_str()
                    .map(one_line)
                    .unwrap_or_default()
            );
        }
    }
    md
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `string`, `integer or null`, … from a schema's `type`.
fn type_name(schema: &Value) -> String {
    match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> BudgetAlert {
        BudgetAlert {
            month: "2026-12".into(),
            monthly_limit_minor: 1000,
            used_this_month_minor: 800,
        }
    }

    #[test]
    fn the_wire_type_and_data_come_from_the_variant_and_its_payload() {
        let warning = SluiceEvent::BudgetWarning(alert());
        assert_eq!(warning.event_type(), "budget.warning");
        assert_eq!(
            SluiceEvent::BudgetExceeded(alert()).event_type(),
            "budget.exceeded"
        );
        assert_eq!(
            warning.data(),
            serde_json::json!({"month": "2026-12", "monthly_limit_minor": 1000, "used_this_month_minor": 800})
        );
        let failed = SluiceEvent::PaymentFailed(PaymentFailed {
            invoice_id: "in_1".into(),
            amount_due_minor: None,
            currency: None,
            subscription_id: None,
            attempt_count: Some(2),
        });
        // Absent values are sent as `null`, never left out: the schema requires every field.
        assert_eq!(failed.data()["currency"], Value::Null);
        assert!(
            failed
                .data()
                .as_object()
                .unwrap()
                .contains_key("subscription_id")
        );
    }

    #[test]
    fn every_entry_has_a_unique_name_a_description_and_a_closed_object_schema() {
        let entries = catalog();
        assert_eq!(entries.len(), 9);
        for (i, e) in entries.iter().enumerate() {
            assert!(
                entries[i + 1..].iter().all(|o| o.name != e.name),
                "{}",
                e.name
            );
            assert!(!e.description.is_empty() && e.version >= 1, "{}", e.name);
            assert_eq!(e.schema["type"], "object", "{}", e.name);
            let props = e.schema["properties"].as_object().unwrap();
            let required = e.schema["required"].as_array().unwrap();
            // Every serialized field is required (nullable where it may be absent) and documented.
            assert_eq!(props.len(), required.len(), "{}", e.name);
            for (field, schema) in props {
                assert!(schema["description"].is_string(), "{}.{field}", e.name);
            }
        }
        let names: Vec<&str> = payload_schemas().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 8, "budget alerts share one payload: {names:?}");
    }

    #[test]
    fn the_markdown_lists_every_type_with_its_fields() {
        let md = markdown();
        for e in catalog() {
            assert!(md.contains(&format!("\n## {}\n", e.name)), "{}", e.name);
        }
        assert!(md.contains("| `used_this_month_minor` | integer |"));
        assert!(md.contains("| `subscription_id` | string or null |"));
    }
}
