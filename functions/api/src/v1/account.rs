//! `GET /v1/account`, `POST /v1/usage`, `GET /v1/ledger`.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice::{
    ApiError, ApiResult,
    account::{self, BudgetView, LedgerEntry},
    auth::TenantId,
    clock,
    idempotency::StoredResponse,
    tenants::{self, SubscriptionSummary},
};
use utoipa::ToSchema;

use super::{Lock, invalid, lock_ref};
use crate::AppState;

/// Largest single usage debit (minor units): far beyond any real charge, far below overflow.
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// Longest description kept on a ledger entry.
const MAX_DESCRIPTION: usize = 500;

/// The answer of `GET /v1/account`.
#[derive(Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountOut {
    pub tenant: AccountTenant,
    /// `null` until Stripe reports a subscription.
    pub subscription: Option<SubscriptionSummary>,
    pub credits: Credits,
    pub budget: BudgetView,
}

/// Who the API key belongs to.
#[derive(Serialize, ToSchema)]
pub struct AccountTenant {
    /// `tnt_…`
    pub id: String,
    pub name: String,
    /// Epoch seconds.
    pub created_at: i64,
}

/// The prepaid credit balance.
#[derive(Serialize, ToSchema)]
pub struct Credits {
    /// In minor units of `currency` (cents for USD).
    pub balance_minor: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
}

/// `GET /v1/account`: one strongly consistent read of the tenant item.
#[utoipa::path(
    get,
    path = "/v1/account",
    tag = "account",
    summary = "The caller's tenant, subscription, credit balance and budget",
    responses(
        (status = 200, description = "The account", body = AccountOut),
        (status = 404, description = "The tenant was deleted"),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
) -> ApiResult<Json<AccountOut>> {
    let tenant = tenants::get_tenant(&state.aws.dynamodb, state.table(), &tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let budget = BudgetView::of(&tenant, clock::now_epoch());
    Ok(Json(AccountOut {
        tenant: AccountTenant {
            id: tenant.id,
            name: tenant.name,
            created_at: tenant.created_at,
        },
        subscription: tenant.subscription,
        credits: Credits {
            balance_minor: tenant.balance_minor,
            currency: tenant.currency,
        },
        budget,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageRequest {
    amount_minor: i64,
    description: Option<String>,
}

/// `POST /v1/usage`: debits credits atomically; `402` when the balance is short.
pub async fn usage(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let req: UsageRequest = crate::admin::parse_json(&body)?;
    if req.amount_minor <= 0 || req.amount_minor > MAX_AMOUNT_MINOR {
        return Err(invalid(
            "`amount_minor` must be a positive integer (minor units)",
        ));
    }
    let description = req.description.as_deref().map(str::trim);
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(invalid(format!(
            "`description` must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    let entry = LedgerEntry::debit(req.amount_minor, description.filter(|d| !d.is_empty()));
    let response = StoredResponse::json(StatusCode::CREATED, &entry);
    Ok(account::debit(
        &state.aws,
        state.table(),
        &tenant_id,
        &entry,
        lock_ref(&lock),
        &response,
    )
    .await?)
}

/// `GET /v1/ledger?limit=&cursor=`: newest first.
pub async fn ledger(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = match query.get("limit") {
        None => account::DEFAULT_PAGE_SIZE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=account::MAX_PAGE_SIZE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be an integer from 1 to {}",
                    account::MAX_PAGE_SIZE
                ))
            })?,
    };
    let cursor = query
        .get("cursor")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let db = &state.aws.dynamodb;
    // Debits carry no currency of their own (they are written without reading the tenant).
    let (page, tenant) = tokio::try_join!(
        account::ledger_page(db, state.table(), &tenant_id, limit, cursor),
        tenants::get_tenant(db, state.table(), &tenant_id),
    )?;
    let page = page.map_err(|bad| ApiError::bad_request(bad.to_string()))?;
    let currency = tenant.map(|t| t.currency).unwrap_or_default();
    let data: Vec<Value> = page
        .entries
        .into_iter()
        .map(|mut entry| {
            entry.currency.get_or_insert_with(|| currency.clone());
            serde_json::to_value(entry).unwrap_or_default()
        })
        .collect();
    Ok(Json(json!({
        "data": data,
        "has_more": page.next_cursor.is_some(),
        "next_cursor": page.next_cursor,
    })))
}
