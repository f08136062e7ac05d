//! `GET /v1/account`, `POST /v1/usage`, `GET /v1/usage/summary`, `GET /v1/ledger`.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    account::{self, BudgetView, LedgerEntry, usage},
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
    /// Up to 3 string keys (1–32 lowercase letters, digits, `_`, `-`, `.`; values 1–64
    /// printable ASCII characters) that `GET /v1/usage/summary?group_by=` can split usage by.
    #[schema(example = json!({"provider": "openai", "model": "gpt-4o"}))]
    dimensions: Option<BTreeMap<String, String>>,
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
        (status = 422, description = "`amount_minor`, `description` or `dimensions` is out of range"),
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
    let dimensions =
        usage::Dimensions::parse(req.dimensions.unwrap_or_default()).map_err(invalid)?;
    let entry = LedgerEntry::debit(req.amount_minor, description.filter(|d| !d.is_empty()));
    let response = StoredResponse::json(StatusCode::CREATED, &entry);
    Ok(account::debit(
        &state.aws,
        state.table(),
        &tenant_id,
        &entry,
        &dimensions,
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

/// The answer of `GET /v1/usage/summary`.
#[derive(Serialize, ToSchema)]
pub struct UsageSummaryOut {
    /// `YYYY-MM-DD` (UTC), inclusive.
    pub from: String,
    pub to: String,
    /// The key usage is grouped by, if any.
    pub group_by: Option<String>,
    /// Lowercase ISO 4217: the minor units of every amount.
    pub currency: String,
    /// Every day of the window, oldest first (zeros where nothing happened).
    pub days: Vec<usage::DayTotals>,
}

/// The summary of `from..=to` (`YYYY-MM-DD`, default the last 30 days up to today) for the tenant,
/// optionally grouped by a dimension key (the handler's and the portal's code).
pub async fn usage_summary_of(
    state: &AppState,
    tenant_id: &str,
    query: &HashMap<String, String>,
) -> ApiResult<UsageSummaryOut> {
    let day = |name: &str| -> ApiResult<Option<time::Date>> {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                usage::parse_day(v).ok_or_else(|| {
                    ApiError::bad_request(format!("`{name}` must be a date, YYYY-MM-DD"))
                })
            })
            .transpose()
    };
    let today = usage::parse_day(&usage::day_of(clock::now_epoch())).expect("a valid day");
    let to = day("to")?.unwrap_or(today);
    let from = day("from")?.unwrap_or(to - time::Duration::days(29));
    if from > to || (to - from) >= time::Duration::days(usage::MAX_SUMMARY_DAYS) {
        return Err(ApiError::bad_request(format!(
            "`from` must be at most `to`, and the window at most {} days",
            usage::MAX_SUMMARY_DAYS
        )));
    }
    let group_by = query.get("group_by").filter(|v| !v.is_empty());
    if group_by.is_some_and(|k| !usage::valid_key(k)) {
        return Err(ApiError::bad_request("`group_by` must be a dimension key"));
    }
    let db = &state.aws.dynamodb;
    let (days, tenant) = tokio::try_join!(
        usage::summary(
            db,
            state.table(),
            tenant_id,
            from,
            to,
            group_by.map(String::as_str)
        ),
        tenants::get_tenant(db, state.table(), tenant_id),
    )?;
    let tenant = tenant.ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(UsageSummaryOut {
        from: days.first().map(|d| d.date.clone()).unwrap_or_default(),
        to: days.last().map(|d| d.date.clone()).unwrap_or_default(),
        group_by: group_by.cloned(),
        currency: tenant.currency,
        days,
    })
}

/// `GET /v1/usage/summary?from=&to=&group_by=`: daily totals of usage and credits.
#[utoipa::path(
    get,
    path = "/v1/usage/summary",
    tag = "account",
    summary = "Daily totals of usage and credits, optionally grouped by a usage dimension",
    params(
        ("from" = Option<String>, Query, description = "First day, `YYYY-MM-DD` (UTC); default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "Last day, `YYYY-MM-DD` (UTC); default today"),
        ("group_by" = Option<String>, Query, description = "A dimension key of `POST /v1/usage` (e.g. `provider`)"),
    ),
    responses(
        (status = 200, description = "One entry per day", body = UsageSummaryOut),
        (status = 400, description = "A parameter is invalid, or the window is over 92 days"),
    ),
    security(("bearer" = [])),
)]
pub async fn usage_summary(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<UsageSummaryOut>> {
    Ok(Json(usage_summary_of(&state, &tenant_id, &query).await?))
}
