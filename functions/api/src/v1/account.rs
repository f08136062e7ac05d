//! `GET /v1/account`, `POST /v1/usage`, `GET /v1/ledger`.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
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
use crate::{AppState, json_body::JsonBody};

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
            id: tenant.id.into_string(),
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

/// The body of `POST /v1/usage`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// The debit, in minor units of the tenant's currency: 1 … 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 150)]
    amount_minor: i64,
    /// Kept on the ledger entry (trimmed, at most 500 characters).
    #[schema(example = "tts")]
    description: Option<String>,
}

/// `POST /v1/usage`: debits credits atomically; `402` when the balance is short.
#[utoipa::path(
    post,
    path = "/v1/usage",
    tag = "account",
    summary = "Debit credits for usage",
    request_body = UsageRequest,
    responses(
        (status = 201, description = "Debited: the ledger entry", body = LedgerEntry),
        (status = 400, description = "The body is not JSON of this shape"),
        (status = 402, description = "The balance is lower than the debit; nothing was debited"),
        (status = 404, description = "The tenant was deleted"),
        (status = 422, description = "`amount_minor` or `description` is out of range"),
    ),
    security(("bearer" = [])),
)]
pub async fn usage(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    lock: Lock,
    JsonBody(req): JsonBody<UsageRequest>,
) -> ApiResult<Response> {
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

/// A page of `GET /v1/ledger`.
#[derive(Serialize, ToSchema)]
pub struct LedgerPageOut {
    /// Newest first; every entry carries `currency`.
    pub data: Vec<LedgerEntry>,
    pub has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/ledger?limit=&cursor=`: newest first.
#[utoipa::path(
    get,
    path = "/v1/ledger",
    tag = "account",
    summary = "The ledger: credits, debits and payments, newest first",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Entries per page (default 20)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of entries", body = LedgerPageOut),
        (status = 400, description = "`limit` or `cursor` is invalid"),
    ),
    security(("bearer" = [])),
)]
pub async fn ledger(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<LedgerPageOut>> {
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
    let data: Vec<LedgerEntry> = page
        .entries
        .into_iter()
        .map(|mut entry| {
            entry.currency.get_or_insert_with(|| currency.clone());
            entry
        })
        .collect();
    Ok(Json(LedgerPageOut {
        data,
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
    }))
}
