//! Payments started by Sluice: `POST /v1/billing/checkout-sessions` (credits or a subscription)
//! and `POST /v1/billing/portal-sessions` (Stripe's Billing Portal), for the caller's tenant.
//!
//! Invariants:
//! - One Stripe customer per tenant, created lazily by the first billing call with
//!   `metadata.tenant_id` and the Stripe idempotency key `sluice-customer-{tenant}` (so concurrent
//!   first calls get the same customer from Stripe), and linked with a conditional transaction
//!   that writes the link the ingress uses (`CUSTOMER#{cus}` → tenant, and the tenant's
//!   `stripe_customer_id`). A concurrent call that linked first wins; the loser answers with the
//!   winner's customer. The link keeps an ingress `waiting` mark, so events waiting for this
//!   customer are still processed when its `customer.created` arrives.
//! - Every session names the tenant where the ingress looks (`client_reference_id`,
//!   `metadata.tenant_id`, and `payment_intent_data.metadata` / `subscription_data.metadata`),
//!   so its events need no lookup.
//! - A session's Stripe idempotency key derives from the tenant's own `Idempotency-Key` and the
//!   request's fingerprint ([`sluice::idempotency::IdempotencyLock::derived_key`]): a retry after
//!   a lost lock is the same request to Stripe, never a second session. Without a key each call
//!   is a new session (as a `POST` without `Idempotency-Key` is anywhere in this API).
//! - Return URLs must have an origin in `BILLING_RETURN_ORIGINS`; amounts are bounded and prices
//!   come from `STRIPE_PRICES`: a tenant cannot send its customers elsewhere or invent a price.
//! - Nothing is stored for a session: Stripe holds it, and its completion arrives as an event.
//!
//! Cost: one `GetItem` (the tenant); the first call of a tenant also one Stripe `POST
//! /v1/customers` and one `TransactWriteItems` (2 items). Then one Stripe `POST` per session.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use axum::{Extension, Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    auth::TenantId,
    clock, ids,
    stripe::client::{StripeClient, origin_of},
    table::{self, n, s},
    tenants::{self, attr as tenant_attr},
};
use utoipa::ToSchema;

use super::{Lock, invalid, lock_ref};
use crate::AppState;

/// `mode` of a checkout session.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutMode {
    /// A one-off payment of `amount_minor` (the tenant's currency) that tops up its credits.
    Credits,
    /// A subscription to `price` (one of the deployment's `STRIPE_PRICES`).
    Subscription,
}

/// The body of `POST /v1/billing/checkout-sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckout {
    pub mode: CheckoutMode,
    /// `credits` only: minor units, within the deployment's bounds (default 100 … 1 000 000).
    pub amount_minor: Option<i64>,
    /// `subscription` only: a Stripe price id from `STRIPE_PRICES`.
    pub price: Option<String>,
    /// Where Stripe sends the customer after paying; its origin must be in
    /// `BILLING_RETURN_ORIGINS`.
    pub success_url: String,
    /// Where Stripe sends the customer who gives up; same rule.
    pub cancel_url: String,
}

/// The answer of `POST /v1/billing/checkout-sessions`.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = CheckoutSession)]
pub struct CheckoutOut {
    /// Stripe's `cs_…`.
    pub id: String,
    /// The Stripe-hosted page to send the customer to.
    pub url: String,
    /// Epoch seconds after which the page no longer works.
    pub expires_at: i64,
}

/// The body of `POST /v1/billing/portal-sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortal {
    /// Where the portal's "return" link goes; its origin must be in `BILLING_RETURN_ORIGINS`.
    pub return_url: String,
}

/// The answer of `POST /v1/billing/portal-sessions`.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = PortalSession)]
pub struct PortalOut {
    /// The Stripe-hosted Billing Portal page for the tenant's customer.
    pub url: String,
}

#[derive(Deserialize)]
struct StripeId {
    id: String,
}

/// The Stripe client, or `503 billing-not-configured`.
pub fn stripe(state: &AppState) -> ApiResult<&StripeClient> {
    state.stripe.as_deref().ok_or_else(|| ApiError::Client {
        status: StatusCode::SERVICE_UNAVAILABLE,
        slug: "billing-not-configured",
        title: "Billing not configured",
        detail: "this deployment has no Stripe API key (STRIPE_API_KEY_CIPHERTEXT)".into(),
        retry_after: None,
    })
}

/// Checks that `url` (the body field `field`) has one of the configured origins.
pub fn check_return_url(field: &str, url: &str, origins: &[String]) -> ApiResult<()> {
    match origin_of(url) {
        Some(origin) if origins.contains(&origin) => Ok(()),
        Some(origin) => Err(invalid(format!(
            "`{field}` must have one of the configured origins (BILLING_RETURN_ORIGINS); \
             {origin} is not one"
        ))),
        None => Err(invalid(format!(
            "`{field}` must be an absolute http(s) URL"
        ))),
    }
}

/// The Stripe parameters of a checkout session (pure: checked by the unit tests).
pub fn checkout_params(
    req: &CreateCheckout,
    tenant_id: &str,
    currency: &str,
    customer: &str,
    config: &sluice::config::BillingConfig,
) -> ApiResult<Vec<(String, String)>> {
    check_return_url("success_url", &req.success_url, &config.return_origins)?;
    check_return_url("cancel_url", &req.cancel_url, &config.return_origins)?;
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let mut params = vec![
        p("customer", customer),
        p("client_reference_id", tenant_id),
        p("metadata[tenant_id]", tenant_id),
        // The customer was linked before the session was created: its completion confirms the
        // link rather than writing it again (`sluice::stripe::event::Plan::link_known`).
        (
            format!("metadata[{}]", sluice::stripe::event::SLUICE_CUSTOMER_KEY),
            customer.to_owned(),
        ),
        p("success_url", &req.success_url),
        p("cancel_url", &req.cancel_url),
        p("line_items[0][quantity]", "1"),
    ];
    match req.mode {
        CheckoutMode::Credits => {
            if req.price.is_some() {
                return Err(invalid("`price` is for `mode: subscription`"));
            }
            let (min, max) = (config.credits_min_minor, config.credits_max_minor);
            let amount = req
                .amount_minor
                .filter(|a| (min..=max).contains(a))
                .ok_or_else(|| {
                    invalid(format!(
                        "`amount_minor` must be an integer from {min} to {max} (minor units)"
                    ))
                })?;
            params.extend([
                p("mode", "payment"),
                p("metadata[purpose]", "credits"),
                p("payment_intent_data[metadata][purpose]", "credits"),
                p("payment_intent_data[metadata][tenant_id]", tenant_id),
                p("line_items[0][price_data][currency]", currency),
                p(
                    "line_items[0][price_data][unit_amount]",
                    &amount.to_string(),
                ),
                p("line_items[0][price_data][product_data][name]", "Credits"),
            ]);
        }
        CheckoutMode::Subscription => {
            if req.amount_minor.is_some() {
                return Err(invalid("`amount_minor` is for `mode: credits`"));
            }
            let price = req
                .price
                .as_deref()
                .filter(|p| config.stripe_prices.iter().any(|c| c == p))
                .ok_or_else(|| {
                    invalid(
                        "`price` must be one of the prices this deployment offers (STRIPE_PRICES)",
                    )
                })?;
            params.extend([
                p("mode", "subscription"),
                p("subscription_data[metadata][tenant_id]", tenant_id),
                p("line_items[0][price]", price),
            ]);
        }
    }
    Ok(params)
}

/// The Stripe idempotency key of a session: derived from the tenant's key and fingerprint when
/// the request has one, otherwise random (each call is then a new session).
fn session_key(lock: &Lock, purpose: &str) -> String {
    match lock_ref(lock) {
        Some(lock) => format!("sluice-{purpose}-{}", lock.derived_key(purpose)),
        None => format!("sluice-{purpose}-{}", hex_random()),
    }
}

fn hex_random() -> String {
    hex_encode(&ids::random_bytes::<16>())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tenant's Stripe customer and currency, creating and linking the customer on first use.
pub async fn ensure_customer(
    state: &AppState,
    stripe: &StripeClient,
    tenant_id: &str,
) -> ApiResult<(String, String)> {
    let db = &state.aws.dynamodb;
    let tenant = tenants::get_tenant(db, state.table(), tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    if let Some(customer) = tenant.stripe_customer_id {
        return Ok((customer, tenant.currency));
    }
    // The key derives from the tenant only: every first call (concurrent, or retried after a
    // failed link) gets the same customer from Stripe, for Stripe's 24 hours of idempotency.
    let created: StripeId = stripe
        .post(
            "/v1/customers",
            &[
                ("metadata[tenant_id]".into(), tenant_id.into()),
                ("name".into(), tenant.name.clone()),
            ],
            &format!("sluice-customer-{tenant_id}"),
        )
        .await?;
    let customer = link_customer(state, tenant_id, &created.id).await?;
    Ok((customer, tenant.currency))
}

/// Links `customer` to the tenant unless the tenant has another one; returns the tenant's
/// customer afterwards. One `TransactWriteItems`: the `CUSTOMER#` link (only if unlinked or
/// linked to this tenant; an ingress `waiting` mark stays) and the tenant's `stripe_customer_id`
/// (only if unset or the same).
async fn link_customer(state: &AppState, tenant_id: &str, customer: &str) -> ApiResult<String> {
    let db = &state.aws.dynamodb;
    let link = Update::builder()
        .table_name(state.table())
        .set_key(Some(table::key(table::customer_pk(customer), "CUSTOMER")))
        .update_expression("SET tenant_id = :t, linked_at = if_not_exists(linked_at, :now)")
        .condition_expression("attribute_not_exists(tenant_id) OR tenant_id = :t")
        .expression_attribute_values(":t", s(tenant_id))
        .expression_attribute_values(":now", n(clock::now_epoch()))
        .build()
        .map_err(ApiError::internal)?;
    let on_tenant = Update::builder()
        .table_name(state.table())
        .set_key(Some(tenants::key(tenant_id)))
        .update_expression("SET #c = :c")
        .condition_expression("attribute_exists(pk) AND (attribute_not_exists(#c) OR #c = :c)")
        .expression_attribute_names("#c", tenant_attr::STRIPE_CUSTOMER_ID)
        .expression_attribute_values(":c", s(customer))
        .build()
        .map_err(ApiError::internal)?;
    let result = db
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(link).build())
        .transact_items(TransactWriteItem::builder().update(on_tenant).build())
        .send()
        .await;
    match result {
        Ok(_) => Ok(customer.to_owned()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_transaction_canceled_exception()) =>
        {
            // Another call linked first (or the tenant went away): the tenant's link decides.
            let tenant = tenants::get_tenant(db, state.table(), tenant_id)
                .await?
                .ok_or_else(|| ApiError::not_found("tenant"))?;
            match tenant.stripe_customer_id {
                Some(winner) => {
                    if winner != customer {
                        tracing::warn!(
                            customer,
                            winner,
                            "a second Stripe customer was created for the tenant; left unlinked"
                        );
                    }
                    Ok(winner)
                }
                // Conflicting transactions are retried by the client (409 + Retry-After).
                None => Err(ApiError::conflict(
                    "the tenant's billing was set up concurrently; retry",
                )
                .with_retry_after(1)),
            }
        }
        Err(err) => Err(ApiError::internal(anyhow::anyhow!(
            "linking the Stripe customer: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(err)
        ))),
    }
}

/// `POST /v1/billing/checkout-sessions`: a Stripe Checkout page for credits or a subscription.
#[utoipa::path(
    post,
    path = "/v1/billing/checkout-sessions",
    tag = "billing",
    summary = "Start a Stripe Checkout for credits or a subscription",
    request_body = CreateCheckout,
    responses(
        (status = 201, description = "The Checkout page to send the customer to", body = CheckoutOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 402, description = "Stripe refused the payment (`stripe-payment-refused`, with Stripe's code)"),
        (status = 422, description = "A field is invalid (amount out of bounds, unknown price, return URL of another origin), or Stripe refused the request (`stripe-refused`, with Stripe's code)"),
        (status = 502, description = "Stripe did not complete the request (carries Stripe's request id); safe to retry"),
        (status = 503, description = "Billing is not configured on this deployment"),
    ),
    security(("bearer" = [])),
)]
pub async fn create_checkout(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    crate::json_body::JsonBody(req): crate::json_body::JsonBody<CreateCheckout>,
) -> ApiResult<(StatusCode, Json<CheckoutOut>)> {
    let stripe = stripe(&state)?;
    let billing = &state.config.billing;
    // Validate before creating anything at Stripe (the customer included).
    checkout_params(&req, &tenant_id, "usd", "cus_check", billing)?;
    let (customer, currency) = ensure_customer(&state, stripe, &tenant_id).await?;
    let params = checkout_params(&req, &tenant_id, &currency, &customer, billing)?;
    let session: CheckoutOut = stripe
        .post(
            "/v1/checkout/sessions",
            &params,
            &session_key(&lock, "checkout"),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// `POST /v1/billing/portal-sessions`: a Stripe Billing Portal page for the tenant's customer.
#[utoipa::path(
    post,
    path = "/v1/billing/portal-sessions",
    tag = "billing",
    summary = "Open Stripe's Billing Portal for the tenant",
    request_body = CreatePortal,
    responses(
        (status = 201, description = "The Billing Portal page", body = PortalOut),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 422, description = "`return_url` is of another origin, or Stripe refused the request (`stripe-refused`)"),
        (status = 502, description = "Stripe did not complete the request (carries Stripe's request id); safe to retry"),
        (status = 503, description = "Billing is not configured on this deployment"),
    ),
    security(("bearer" = [])),
)]
pub async fn create_portal(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    crate::json_body::JsonBody(req): crate::json_body::JsonBody<CreatePortal>,
) -> ApiResult<(StatusCode, Json<PortalOut>)> {
    let stripe = stripe(&state)?;
    check_return_url(
        "return_url",
        &req.return_url,
        &state.config.billing.return_origins,
    )?;
    let (customer, _) = ensure_customer(&state, stripe, &tenant_id).await?;
    let session: PortalOut = stripe
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer".into(), customer),
                ("return_url".into(), req.return_url),
            ],
            &session_key(&lock, "portal"),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> sluice::config::BillingConfig {
        sluice::config::BillingConfig {
            stripe_key: None,
            stripe_api_base: "http://stripe".into(),
            stripe_prices: vec!["price_pro".into()],
            return_origins: vec!["https://app.example.com".into()],
            credits_min_minor: 100,
            credits_max_minor: 10_000,
        }
    }

    fn req(mode: CheckoutMode, amount: Option<i64>, price: Option<&str>) -> CreateCheckout {
        CreateCheckout {
            mode,
            amount_minor: amount,
            price: price.map(String::from),
            success_url: "https://app.example.com/ok".into(),
            cancel_url: "https://app.example.com/no".into(),
        }
    }

    fn get<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
        params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn credits_name_the_tenant_everywhere_the_ingress_looks() {
        let p = checkout_params(
            &req(CheckoutMode::Credits, Some(2500), None),
            "tnt_1",
            "eur",
            "cus_1",
            &config(),
        )
        .unwrap();
        assert_eq!(get(&p, "mode"), Some("payment"));
        assert_eq!(get(&p, "customer"), Some("cus_1"));
        assert_eq!(get(&p, "client_reference_id"), Some("tnt_1"));
        assert_eq!(get(&p, "metadata[tenant_id]"), Some("tnt_1"));
        assert_eq!(get(&p, "metadata[sluice_customer]"), get(&p, "customer"));
        assert_eq!(
            get(&p, "payment_intent_data[metadata][purpose]"),
            Some("credits")
        );
        assert_eq!(
            get(&p, "payment_intent_data[metadata][tenant_id]"),
            Some("tnt_1")
        );
        assert_eq!(
            get(&p, "line_items[0][price_data][unit_amount]"),
            Some("2500")
        );
        assert_eq!(get(&p, "line_items[0][price_data][currency]"), Some("eur"));
    }

    #[test]
    fn subscriptions_carry_the_tenant_in_subscription_metadata() {
        let p = checkout_params(
            &req(CheckoutMode::Subscription, None, Some("price_pro")),
            "tnt_1",
            "usd",
            "cus_1",
            &config(),
        )
        .unwrap();
        assert_eq!(get(&p, "mode"), Some("subscription"));
        assert_eq!(
            get(&p, "subscription_data[metadata][tenant_id]"),
            Some("tnt_1")
        );
        assert_eq!(get(&p, "line_items[0][price]"), Some("price_pro"));
    }

    #[test]
    fn amounts_prices_and_return_urls_are_bounded() {
        let refused = |r: CreateCheckout| {
            checkout_params(&r, "tnt_1", "usd", "cus_1", &config())
                .unwrap_err()
                .status()
        };
        let u = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(refused(req(CheckoutMode::Credits, Some(99), None)), u);
        assert_eq!(refused(req(CheckoutMode::Credits, Some(10_001), None)), u);
        assert_eq!(refused(req(CheckoutMode::Credits, None, None)), u);
        assert_eq!(
            refused(req(CheckoutMode::Subscription, None, Some("price_x"))),
            u
        );
        assert_eq!(
            refused(req(CheckoutMode::Subscription, Some(5), Some("price_pro"))),
            u
        );
        let mut elsewhere = req(CheckoutMode::Credits, Some(500), None);
        elsewhere.success_url = "https://evil.example.net/ok".into();
        assert_eq!(refused(elsewhere), u);
        let mut sneaky = req(CheckoutMode::Credits, Some(500), None);
        sneaky.cancel_url = "https://app.example.com.evil.net/".into();
        assert_eq!(refused(sneaky), u);
    }
}
