//! Credits, usage, the ledger and the monthly budget of a tenant.
//!
//! Balances are integers in minor units on the tenant item ([`crate::tenants::attr`]); every
//! change of a balance writes a ledger entry in the same transaction.
//!
//! - **Credit** (a Stripe top-up): [`credit_clauses`] — the one balance expression, which
//!   Stripe ingress gathers into its own tenant update (it commits an event's effects in one
//!   transaction), and [`credit_items`] wraps as a standalone update. A top-up also resets the
//!   month's budget alert flags. Every entry, Stripe's included, is a [`LedgerEntry`]
//!   ([`LedgerEntry::from_stripe`], [`LedgerEntry::debit`]).
//! - **Debit** (`POST /v1/usage`): [`debit`] — one `TransactWriteItems` holding the conditional
//!   balance update, the ledger entry, the daily usage counters ([`usage`]) and (for idempotent
//!   requests) the completion of the idempotency record. A short balance cancels the
//!   transaction: `402`, nothing debited.
//! - **Daily totals** ([`usage`]): every debit and credit `ADD`s to its day's counter item in
//!   its own transaction, so `GET /v1/usage/summary` reads counters, never the ledger.
//!
//! # Budget alerts without a read
//!
//! `budget.warning` (≥ 80 % of `monthly_budget_minor` used this month) and `budget.exceeded`
//! (≥ 100 %) are published once per month each; the month a flag was set is stored in the flag,
//! so a new month needs no reset job. Deciding whether a debit crosses a threshold would normally
//! need the tenant item first (a third DynamoDB request). Instead the tenant item keeps two
//! headrooms, `budget_warning_headroom_minor` and `budget_exceeded_headroom_minor`: how much
//! more can be used this month before each threshold (DynamoDB conditions cannot add, so the
//! distance is stored and lowered by every debit). The first attempt of a debit states the common
//! case — same month, enough balance, no alert due (below the next threshold, or its flag already
//! set this month) — as the *condition* of its update, so it needs no read. When that condition
//! fails, DynamoDB returns the tenant item (`ReturnValuesOnConditionCheckFailure`), which tells
//! exactly why: a short balance answers `402` at once; a new month, a crossed threshold, flags
//! reset by a top-up or a tenant without the counters yet are handled by a second attempt
//! computed from that item and conditioned on it not having changed meanwhile. The alert events
//! go into that same transaction as [`fanout::Deferred`] items. The headrooms do not depend on
//! the flags, so a writer that resets the flags (a top-up) need not know about them.

pub mod usage;

use aws_sdk_dynamodb::{
    Client,
    types::{TransactWriteItem, Update},
};
use axum::body::Body;
use http::Response;
use serde::Serialize;

use crate::{
    ApiError,
    aws::AwsClients,
    clock,
    event_types::{BudgetAlert, SluiceEvent},
    fanout,
    idempotency::{self, CommitError, IdempotencyLock, StoredResponse},
    ids,
    table::{self, Item, ItemExt, UpdateBuilder, n, s},
    tenants::{self, Tenant, attr},
};

/// Tenant attribute: usage left this month before the 80 % threshold (absent until the first
/// debit of a budgeted tenant computes it).
pub const BUDGET_WARNING_HEADROOM: &str = "budget_warning_headroom_minor";
/// Tenant attribute: usage left this month before the 100 % threshold.
pub const BUDGET_EXCEEDED_HEADROOM: &str = "budget_exceeded_headroom_minor";

/// Ledger entry attribute names.
pub mod ledger_attr {
    pub const ID: &str = "id";
    pub const AMOUNT_MINOR: &str = "amount_minor";
    pub const CURRENCY: &str = "currency";
    pub const KIND: &str = "kind";
    pub const DESCRIPTION: &str = "description";
    pub const SOURCE: &str = "source";
    pub const CREATED_AT: &str = "created_at";
    pub const CREATED_MS: &str = "created_ms";
    pub const STRIPE_EVENT_ID: &str = "stripe_event_id";
}

/// Event types published to the tenant's endpoints.
pub const BUDGET_WARNING: &str = "budget.warning";
/// See [`BUDGET_WARNING`].
pub const BUDGET_EXCEEDED: &str = "budget.exceeded";

/// How many times a debit recomputes after concurrent changes before giving up (`409`).
const MAX_DEBIT_ATTEMPTS: usize = 8;

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Credits added (a top-up): `amount_minor > 0`, balance raised.
    Credit,
    /// Usage: `amount_minor < 0`, balance lowered.
    Debit,
    /// A subscription payment (an invoice paid): recorded, balance unchanged.
    Payment,
}

impl LedgerKind {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Credit => "credit",
            LedgerKind::Debit => "debit",
            LedgerKind::Payment => "payment",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "credit" => Some(LedgerKind::Credit),
            "debit" => Some(LedgerKind::Debit),
            "payment" => Some(LedgerKind::Payment),
            _ => None,
        }
    }
}

/// One ledger entry (`TENANT#{tnt}` / `LEDGER#{created_ms:013}#{led}`).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    /// `led_…`
    pub id: String,
    #[serde(rename = "type")]
    pub kind: LedgerKind,
    /// Signed: credits and payments > 0, debits < 0.
    pub amount_minor: i64,
    /// Lowercase ISO 4217; debits carry none (they are in the tenant's currency, known to
    /// readers of the tenant item), so that a debit needs no read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What caused it (e.g. a Stripe payment intent or invoice id, or `api` for usage).
    pub source: String,
    /// Epoch seconds.
    pub created_at: i64,
    /// The Stripe event that recorded it (credits and payments from Stripe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_event_id: Option<String>,
    #[serde(skip)]
    created_ms: i64,
}

impl LedgerEntry {
    /// A new entry created now.
    pub fn new(
        kind: LedgerKind,
        amount_minor: i64,
        currency: Option<&str>,
        description: Option<&str>,
        source: &str,
    ) -> Self {
        let created_ms = clock::now_epoch_millis();
        LedgerEntry {
            id: ids::new_id("led"),
            kind,
            amount_minor,
            currency: currency.map(str::to_ascii_lowercase),
            description: description.map(String::from),
            source: source.to_owned(),
            created_at: created_ms / 1000,
            stripe_event_id: None,
            created_ms,
        }
    }

    /// Credits or a payment that a Stripe object (`pi_…`, `in_…`: the entry's `source`) carries,
    /// recorded by the Stripe event `event_id`.
    pub fn from_stripe(
        kind: LedgerKind,
        amount_minor: i64,
        currency: &str,
        description: &str,
        object_id: &str,
        event_id: &str,
    ) -> Self {
        debug_assert!(kind != LedgerKind::Debit && amount_minor > 0);
        LedgerEntry {
            stripe_event_id: Some(event_id.to_owned()),
            ..Self::new(
                kind,
                amount_minor,
                Some(currency),
                Some(description),
                object_id,
            )
        }
    }

    /// A usage debit of `amount_minor` (> 0) made through the API.
    pub fn debit(amount_minor: i64, description: Option<&str>) -> Self {
        Self::new(LedgerKind::Debit, -amount_minor, None, description, "api")
    }

    /// The sort key of this entry.
    pub fn sk(&self) -> String {
        table::ledger_sk(self.created_ms, &self.id)
    }

    /// The entry's item under `tenant_id`.
    pub fn to_item(&self, tenant_id: &str) -> Item {
        let mut item = table::key(table::tenant_pk(tenant_id), self.sk());
        item.insert(ledger_attr::ID.into(), s(&self.id));
        item.insert(ledger_attr::KIND.into(), s(self.kind.as_str()));
        item.insert(ledger_attr::AMOUNT_MINOR.into(), n(self.amount_minor));
        item.insert(ledger_attr::SOURCE.into(), s(&self.source));
        item.insert(ledger_attr::CREATED_AT.into(), n(self.created_at));
        item.insert(ledger_attr::CREATED_MS.into(), n(self.created_ms));
        if let Some(currency) = &self.currency {
            item.insert(ledger_attr::CURRENCY.into(), s(currency));
        }
        if let Some(description) = &self.description {
            item.insert(ledger_attr::DESCRIPTION.into(), s(description));
        }
        if let Some(event_id) = &self.stripe_event_id {
            item.insert(ledger_attr::STRIPE_EVENT_ID.into(), s(event_id));
        }
        item
    }

    /// Reads a ledger item; `None` if it is not one.
    pub fn from_item(item: &Item) -> Option<Self> {
        let created_at = item.get_i64(ledger_attr::CREATED_AT)?;
        Some(LedgerEntry {
            id: item.get_s(ledger_attr::ID)?.to_owned(),
            kind: LedgerKind::parse(item.get_s(ledger_attr::KIND)?)?,
            amount_minor: item.get_i64(ledger_attr::AMOUNT_MINOR)?,
            currency: item.get_s(ledger_attr::CURRENCY).map(String::from),
            description: item.get_s(ledger_attr::DESCRIPTION).map(String::from),
            source: item
                .get_s(ledger_attr::SOURCE)
                .unwrap_or_default()
                .to_owned(),
            created_at,
            stripe_event_id: item.get_s(ledger_attr::STRIPE_EVENT_ID).map(String::from),
            created_ms: item
                .get_i64(ledger_attr::CREATED_MS)
                .unwrap_or(created_at * 1000),
        })
    }

    /// The `Put` of this entry (never overwrites), for a transaction.
    pub fn put_item(&self, table_name: &str, tenant_id: &str) -> TransactWriteItem {
        table::put(
            table_name,
            self.to_item(tenant_id),
            Some(table::Condition::new("attribute_not_exists(pk)")),
        )
    }
}

/// The one expression of a credit: the balance rises by `entry.amount_minor` (> 0, kind
/// [`LedgerKind::Credit`]), the month's budget alert flags are reset (a top-up re-arms the
/// alerts), and the tenant's currency, if it has one, must be the entry's. As clauses whose
/// placeholders come from `p`, so that a writer gathering several effects on the tenant item in
/// one `Update` (Stripe ingress) shares it with [`credit_items`].
pub fn credit_clauses(p: &mut impl table::Placeholders, entry: &LedgerEntry) -> table::Clauses {
    debug_assert!(entry.amount_minor > 0 && entry.kind == LedgerKind::Credit);
    let bal = p.name(attr::BALANCE_MINOR);
    let zero = p.value(n(0));
    let amt = p.value(n(entry.amount_minor));
    let mut clauses = table::Clauses {
        set: vec![format!("{bal} = if_not_exists({bal}, {zero}) + {amt}")],
        remove: vec![
            p.name(attr::BUDGET_WARNING_SENT),
            p.name(attr::BUDGET_EXCEEDED_SENT),
        ],
        conditions: Vec::new(),
    };
    if let Some(currency) = &entry.currency {
        let cur = p.name(attr::CURRENCY);
        let cv = p.value(s(currency));
        clauses
            .conditions
            .push(format!("(attribute_not_exists({cur}) OR {cur} = {cv})"));
    }
    clauses
}

/// The writes that credit a top-up to a tenant, for the caller's transaction: the tenant update
/// of [`credit_clauses`] (failing its condition if the tenant does not exist), the entry and the
/// day's counter ([`usage::credit_counter_item`]; Stripe ingress pushes that one itself).
/// Exactly-once is the caller's business (Stripe ingress keys the credit by its payment with a
/// `MONEY#` item in the same transaction, and gathers the clauses into its own tenant update).
pub fn credit_items(
    table_name: &str,
    tenant_id: &str,
    entry: &LedgerEntry,
) -> [TransactWriteItem; 3] {
    let mut update = UpdateBuilder::default();
    update.condition("attribute_exists(pk)");
    let clauses = credit_clauses(&mut update.expr, entry);
    update.merge(clauses);
    let update = update.build(table_name, tenants::key(tenant_id));
    [
        TransactWriteItem::builder().update(update).build(),
        entry.put_item(table_name, tenant_id),
        usage::credit_counter_item(table_name, tenant_id, entry),
    ]
}

/// Budget status shown by `GET /v1/account`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetStatus {
    Ok,
    Warning,
    Exceeded,
}

/// The smallest usage at which the warning is due: ⌈80 % of `limit`⌉, in integers. Written as
/// `limit − ⌊limit / 5⌋` (equal for `limit ≥ 0`) so no intermediate can overflow, whatever a
/// stored item holds (`limit * 4` wrapped for limits above `i64::MAX / 4`).
pub fn warning_threshold(limit: i64) -> i64 {
    limit - limit.div_euclid(5)
}

/// `ok` below 80 % of the limit, `warning` from 80 %, `exceeded` from 100 %.
pub fn budget_status(limit: Option<i64>, used: i64) -> BudgetStatus {
    match limit {
        Some(limit) if limit > 0 && used >= limit => BudgetStatus::Exceeded,
        Some(limit) if limit > 0 && used >= warning_threshold(limit) => BudgetStatus::Warning,
        _ => BudgetStatus::Ok,
    }
}

/// The budget block of `GET /v1/account`, for the current month.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Budget)]
pub struct BudgetView {
    pub monthly_limit_minor: Option<i64>,
    pub used_this_month_minor: i64,
    pub status: BudgetStatus,
}

impl BudgetView {
    /// The tenant's budget as of `now` (usage of an earlier month counts as zero).
    pub fn of(tenant: &Tenant, now_epoch: i64) -> Self {
        let month = clock::month_of(now_epoch);
        let used = if tenant.budget_month.as_deref() == Some(month.as_str()) {
            tenant.used_this_month_minor
        } else {
            0
        };
        BudgetView {
            monthly_limit_minor: tenant.monthly_budget_minor,
            used_this_month_minor: used,
            status: budget_status(tenant.monthly_budget_minor, used),
        }
    }
}

/// What the second attempt of a debit decided from the tenant item it saw.
#[derive(Debug, PartialEq)]
struct Plan {
    used_after: i64,
    warning_due: bool,
    exceeded_due: bool,
    warning_flag: bool,
    exceeded_flag: bool,
    /// (to 80 %, to 100 %) after this debit, when there is a budget.
    headrooms: Option<(i64, i64)>,
    limit: Option<i64>,
}

/// Decides a debit of `amount` from the tenant item as seen; `None` when the balance is short.
fn plan(item: &Item, amount: i64, month: &str) -> Option<Plan> {
    if item.get_i64(attr::BALANCE_MINOR).unwrap_or(0) < amount {
        return None;
    }
    let same_month = item.get_s(attr::BUDGET_MONTH) == Some(month);
    let used_before = if same_month {
        item.get_i64(attr::USED_THIS_MONTH_MINOR).unwrap_or(0)
    } else {
        0
    };
    let used_after = used_before.saturating_add(amount);
    let flag = |name: &str| item.get_s(name) == Some(month);
    let limit = item
        .get_i64(attr::MONTHLY_BUDGET_MINOR)
        .filter(|limit| *limit > 0);
    let (warning_sent, exceeded_sent) = (
        flag(attr::BUDGET_WARNING_SENT),
        flag(attr::BUDGET_EXCEEDED_SENT),
    );
    let (warning_due, exceeded_due) = match limit {
        Some(limit) => (
            !warning_sent && used_after >= warning_threshold(limit),
            !exceeded_sent && used_after >= limit,
        ),
        None => (false, false),
    };
    Some(Plan {
        used_after,
        warning_due,
        exceeded_due,
        warning_flag: warning_sent || warning_due,
        exceeded_flag: exceeded_sent || exceeded_due,
        headrooms: limit.map(|limit| {
            (
                warning_threshold(limit).saturating_sub(used_after),
                limit.saturating_sub(used_after),
            )
        }),
        limit,
    })
}

/// The optimistic update: same month, enough balance, no alert due. Needs no read.
fn fast_update(table_name: &str, tenant_id: &str, amount: i64, month: &str) -> Update {
    let mut u = UpdateBuilder::default();
    let e = &mut u.expr;
    let (bal, used) = (
        e.name(attr::BALANCE_MINOR),
        e.name(attr::USED_THIS_MONTH_MINOR),
    );
    let (wh, eh) = (
        e.name(BUDGET_WARNING_HEADROOM),
        e.name(BUDGET_EXCEEDED_HEADROOM),
    );
    let (mon, limit) = (
        e.name(attr::BUDGET_MONTH),
        e.name(attr::MONTHLY_BUDGET_MINOR),
    );
    let (warned, exceeded) = (
        e.name(attr::BUDGET_WARNING_SENT),
        e.name(attr::BUDGET_EXCEEDED_SENT),
    );
    let (amt, zero, month) = (e.value(n(amount)), e.value(n(0)), e.value(s(month)));
    u.set_clause(format!("{bal} = {bal} - {amt}"))
        .set_clause(format!("{used} = {used} + {amt}"))
        .set_clause(format!("{wh} = if_not_exists({wh}, {zero}) - {amt}"))
        .set_clause(format!("{eh} = if_not_exists({eh}, {zero}) - {amt}"))
        // No alert is due when the debit stays below the 80 % threshold, or the warning went
        // out this month and the debit stays below 100 % (or that went out too).
        .condition(format!(
            "attribute_exists(pk) AND {bal} >= {amt} AND {mon} = {month} AND \
             (attribute_not_exists({limit}) OR {wh} > {amt} OR \
              ({warned} = {month} AND ({eh} > {amt} OR {exceeded} = {month})))"
        ))
        .return_old_on_condition_failure();
    u.build(table_name, tenants::key(tenant_id))
}

/// Whether [`fast_update`]'s condition holds for `item` (mirrors it).
fn fast_path_holds(item: &Item, amount: i64, month: &str) -> bool {
    let flag = |name: &str| item.get_s(name) == Some(month);
    let above = |name: &str| item.get_i64(name).is_some_and(|h| h > amount);
    item.get_i64(attr::BALANCE_MINOR).unwrap_or(0) >= amount
        && item.get_s(attr::BUDGET_MONTH) == Some(month)
        && (!item.contains_key(attr::MONTHLY_BUDGET_MINOR)
            || above(BUDGET_WARNING_HEADROOM)
            || (flag(attr::BUDGET_WARNING_SENT)
                && (above(BUDGET_EXCEEDED_HEADROOM) || flag(attr::BUDGET_EXCEEDED_SENT))))
}

/// The update computed from the item as seen, conditioned on the budget attributes not having
/// changed since (the balance only needs to stay sufficient).
fn planned_update(
    table_name: &str,
    tenant_id: &str,
    amount: i64,
    month: &str,
    seen: &Item,
    plan: &Plan,
) -> Update {
    let mut u = UpdateBuilder::default();
    let bal = u.expr.name(attr::BALANCE_MINOR);
    let amt = u.expr.value(n(amount));
    u.set_clause(format!("{bal} = {bal} - {amt}"))
        .set(attr::BUDGET_MONTH, s(month))
        .set(attr::USED_THIS_MONTH_MINOR, n(plan.used_after));
    if plan.warning_flag {
        u.set(attr::BUDGET_WARNING_SENT, s(month));
    }
    if plan.exceeded_flag {
        u.set(attr::BUDGET_EXCEEDED_SENT, s(month));
    }
    match plan.headrooms {
        Some((warning, exceeded)) => {
            u.set(BUDGET_WARNING_HEADROOM, n(warning))
                .set(BUDGET_EXCEEDED_HEADROOM, n(exceeded));
        }
        None => {
            u.remove(BUDGET_WARNING_HEADROOM)
                .remove(BUDGET_EXCEEDED_HEADROOM);
        }
    }
    u.condition("attribute_exists(pk)")
        .condition(format!("{bal} >= {amt}"));
    for name in [
        attr::BUDGET_MONTH,
        attr::USED_THIS_MONTH_MINOR,
        attr::BUDGET_WARNING_SENT,
        attr::BUDGET_EXCEEDED_SENT,
        attr::MONTHLY_BUDGET_MINOR,
    ] {
        let placeholder = u.expr.name(name);
        let condition = match seen.get(name) {
            Some(value) => format!("{placeholder} = {}", u.expr.value(value.clone())),
            None => format!("attribute_not_exists({placeholder})"),
        };
        u.condition(condition);
    }
    u.return_old_on_condition_failure()
        .build(table_name, tenants::key(tenant_id))
}

fn alert_event(tenant_id: &str, event_type: &str, plan: &Plan, month: &str) -> fanout::Deferred {
    let alert = BudgetAlert {
        month: month.to_owned(),
        // An alert is due only under a budget.
        monthly_limit_minor: plan.limit.unwrap_or_default(),
        used_this_month_minor: plan.used_after,
    };
    let event = if event_type == BUDGET_EXCEEDED {
        SluiceEvent::BudgetExceeded(alert)
    } else {
        SluiceEvent::BudgetWarning(alert)
    };
    fanout::Deferred::new(tenant_id, event.event_type(), event.data())
}

/// Why a debit did not happen.
#[derive(Debug)]
pub enum DebitError {
    /// `402`: the balance is short; nothing was debited.
    InsufficientCredits { balance_minor: i64 },
    /// The tenant does not exist.
    TenantNotFound,
    /// The idempotency lock was lost to a newer request; nothing was written.
    LockLost,
    /// The tenant kept changing under us (`409`, retryable).
    Contended,
    /// AWS failed.
    Aws(ApiError),
}

impl From<DebitError> for ApiError {
    fn from(err: DebitError) -> Self {
        match err {
            DebitError::InsufficientCredits { balance_minor } => {
                ApiError::payment_required(format!(
                    "the balance ({balance_minor}) is lower than the amount; nothing was debited"
                ))
            }
            DebitError::TenantNotFound => ApiError::not_found("tenant"),
            DebitError::LockLost => idempotency::lock_lost(),
            DebitError::Contended => {
                ApiError::conflict("the account changed concurrently; retry").with_retry_after(1)
            }
            DebitError::Aws(err) => err,
        }
    }
}

/// Debits `entry` (a [`LedgerEntry::debit`]) from the tenant's credits, atomically with the
/// ledger entry and, when `lock` is held, the idempotency completion storing `response`.
///
/// DynamoDB requests: one `TransactWriteItems` in the common case; a second attempt when the
/// month changed, a budget alert is due or the counters are unknown (the alert events are outbox
/// items of that transaction, published from the table's stream: no SQS call here). A short
/// balance costs the one failed attempt.
pub async fn debit(
    aws: &AwsClients,
    table_name: &str,
    tenant_id: &str,
    entry: &LedgerEntry,
    dimensions: &usage::Dimensions,
    lock: Option<&IdempotencyLock>,
    response: &StoredResponse,
) -> Result<Response<Body>, DebitError> {
    let amount = -entry.amount_minor;
    debug_assert!(amount > 0 && entry.kind == LedgerKind::Debit);
    let month = clock::month_of(entry.created_at);
    let mut tenant_update = fast_update(table_name, tenant_id, amount, &month);
    let mut deferred: Vec<fanout::Deferred> = Vec::new();
    for attempt in 0..MAX_DEBIT_ATTEMPTS {
        let mut items = vec![
            TransactWriteItem::builder().update(tenant_update).build(),
            entry.put_item(table_name, tenant_id),
        ];
        items.extend(deferred.iter().map(|d| d.transact_item(table_name)));
        // The daily counters (`GET /v1/usage/summary`) move with the debit, in its transaction.
        items.extend(usage::debit_counter_items(
            table_name, tenant_id, entry, dimensions,
        ));
        let result =
            idempotency::commit_with_response(&aws.dynamodb, items, lock, response.clone()).await;
        let reasons = match result {
            Ok(res) => return Ok(res),
            Err(CommitError::Cancelled(reasons)) => reasons,
            Err(CommitError::LockLost) => return Err(DebitError::LockLost),
            Err(CommitError::Failed(err)) => return Err(DebitError::Aws(err)),
        };
        let seen = match table::item_outcome(&reasons, 0) {
            table::ItemOutcome::ConditionFailed(seen) => seen,
            // Another transaction touched the tenant at the same moment: try again.
            table::ItemOutcome::Conflict => {
                tenant_update = fast_update(table_name, tenant_id, amount, &month);
                deferred.clear();
                backoff(attempt).await;
                continue;
            }
            other => {
                return Err(DebitError::Aws(ApiError::internal(anyhow::anyhow!(
                    "debit transaction cancelled: {other:?}"
                ))));
            }
        };
        let Some(seen) = seen else {
            return Err(DebitError::TenantNotFound);
        };
        let Some(plan) = plan(seen, amount, &month) else {
            return Err(DebitError::InsufficientCredits {
                balance_minor: seen.get_i64(attr::BALANCE_MINOR).unwrap_or(0),
            });
        };
        deferred.clear();
        if fast_path_holds(seen, amount, &month) {
            // Only the balance or the counters moved under us (a concurrent debit): the cheap
            // update still states the truth, and it does not contend on exact counter values.
            tenant_update = fast_update(table_name, tenant_id, amount, &month);
            continue;
        }
        if plan.warning_due {
            deferred.push(alert_event(tenant_id, BUDGET_WARNING, &plan, &month));
        }
        if plan.exceeded_due {
            deferred.push(alert_event(tenant_id, BUDGET_EXCEEDED, &plan, &month));
        }
        tenant_update = planned_update(table_name, tenant_id, amount, &month, seen, &plan);
        if attempt > 0 {
            // Several debits keep computing from the same state: spread them out.
            backoff(attempt).await;
        }
    }
    Err(DebitError::Contended)
}

async fn backoff(attempt: usize) {
    use rand::Rng;
    let max_ms = 10u64 << attempt.min(5);
    let ms = rand::rng().random_range(0..=max_ms);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// A page of the ledger, newest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    /// Opaque: pass it back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Default page size of `GET /v1/ledger`.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page size of `GET /v1/ledger`.
pub const MAX_PAGE_SIZE: usize = 100;

/// Why a cursor was refused (`400`).
#[derive(Debug, thiserror::Error)]
#[error("`cursor` is not a cursor this API returned")]
pub struct BadCursor;

fn encode_cursor(sk: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(sk)
}

fn decode_cursor(cursor: &str) -> Result<String, BadCursor> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
    let sk = String::from_utf8(bytes).map_err(|_| BadCursor)?;
    // The cursor only ever names a ledger position of the caller's own partition.
    if !sk.starts_with("LEDGER#") || sk.len() > 200 {
        return Err(BadCursor);
    }
    Ok(sk)
}

/// Reads one page of a tenant's ledger, newest first, after `cursor`.
pub async fn ledger_page(
    db: &Client,
    table_name: &str,
    tenant_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Result<LedgerPage, BadCursor>, ApiError> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let start = match cursor.map(decode_cursor).transpose() {
        Ok(sk) => sk.map(|sk| table::key(table::tenant_pk(tenant_id), sk)),
        Err(bad) => return Ok(Err(bad)),
    };
    // One more than asked tells whether another page exists without an empty last page.
    let out = db
        .query()
        .table_name(table_name)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(table::tenant_pk(tenant_id)))
        .expression_attribute_values(":prefix", s("LEDGER#"))
        .scan_index_forward(false)
        .limit(limit as i32 + 1)
        .set_exclusive_start_key(start)
        .send()
        .await?;
    let items = out.items();
    let has_more = items.len() > limit;
    let entries: Vec<LedgerEntry> = items
        .iter()
        .take(limit)
        .filter_map(LedgerEntry::from_item)
        .collect();
    let next_cursor = has_more
        .then(|| items.get(limit - 1).and_then(|i| i.get_s(table::SK)))
        .flatten()
        .map(encode_cursor);
    Ok(Ok(LedgerPage {
        entries,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every placeholder the expressions use is defined, and every one defined is used:
    /// DynamoDB rejects the request otherwise.
    fn assert_placeholders_match(update: &Update) {
        let text = format!(
            "{} {}",
            update.update_expression(),
            update.condition_expression().unwrap_or_default()
        );
        let used: std::collections::BTreeSet<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#' || c == ':'))
            .filter(|w| w.starts_with('#') || w.starts_with(':'))
            .map(str::to_owned)
            .collect();
        let defined: std::collections::BTreeSet<String> = update
            .expression_attribute_names()
            .into_iter()
            .flat_map(|m| m.keys().cloned())
            .chain(
                update
                    .expression_attribute_values()
                    .into_iter()
                    .flat_map(|m| m.keys().cloned()),
            )
            .collect();
        assert_eq!(used, defined, "{text}");
    }

    #[test]
    fn debit_updates_define_exactly_the_placeholders_they_use() {
        let fast = fast_update("t", "tnt_a", 150, "2026-01");
        assert_placeholders_match(&fast);
        assert!(
            fast.update_expression()
                .starts_with("SET #balance_minor = #balance_minor - :v0")
        );
        let seen = Item::from([
            (attr::BALANCE_MINOR.to_owned(), n(10_000)),
            (attr::MONTHLY_BUDGET_MINOR.to_owned(), n(1000)),
            (attr::BUDGET_MONTH.to_owned(), s("2026-01")),
            (attr::USED_THIS_MONTH_MINOR.to_owned(), n(790)),
        ]);
        for (amount, month) in [(20, "2026-01"), (150, "2026-02"), (300, "2026-01")] {
            let plan = plan(&seen, amount, month).unwrap();
            assert_placeholders_match(&planned_update("t", "tnt_a", amount, month, &seen, &plan));
        }
        let no_budget = Item::from([(attr::BALANCE_MINOR.to_owned(), n(10_000))]);
        let plan = plan(&no_budget, 5, "2026-01").unwrap();
        let update = planned_update("t", "tnt_a", 5, "2026-01", &no_budget, &plan);
        assert_placeholders_match(&update);
        assert!(update.update_expression().contains("REMOVE"));
        let [credit, _, _] = credit_items(
            "t",
            "tnt_a",
            &LedgerEntry::from_stripe(LedgerKind::Credit, 5, "usd", "c", "pi_1", "evt_1"),
        );
        assert_placeholders_match(credit.update().unwrap());
    }

    fn tenant_item(pairs: &[(&str, aws_sdk_dynamodb::types::AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn thresholds_never_overflow_whatever_the_stored_limit() {
        // `limit * 4` wrapped here: a huge stored limit made the warning due at once.
        assert_eq!(warning_threshold(i64::MAX), i64::MAX - i64::MAX / 5);
        assert_eq!(
            warning_threshold(i64::MAX / 4 + 1),
            1_844_674_407_370_955_162
        );
        assert_eq!(budget_status(Some(i64::MAX), 1_000_000), BudgetStatus::Ok);
        for limit in [1, 2, 3, 4, 5, 999, 1000, 1001, 1_000_000_000_000] {
            let exact = (limit as i128 * 4 + 4) / 5;
            assert_eq!(warning_threshold(limit) as i128, exact, "{limit}");
        }
        let item = tenant_item(&[
            (attr::BALANCE_MINOR, n(i64::MAX)),
            (attr::MONTHLY_BUDGET_MINOR, n(i64::MAX)),
            (attr::USED_THIS_MONTH_MINOR, n(i64::MAX - 1)),
            (attr::BUDGET_MONTH, s("2026-01")),
        ]);
        let p = plan(&item, 10, "2026-01").unwrap();
        assert_eq!(p.used_after, i64::MAX);
        assert!(p.exceeded_due && p.warning_due);
        assert_eq!(
            p.headrooms,
            Some((warning_threshold(i64::MAX) - i64::MAX, 0))
        );
    }

    #[test]
    fn thresholds_are_integer_percentages() {
        assert_eq!(warning_threshold(1000), 800);
        assert_eq!(warning_threshold(1001), 801); // 800.8 rounds up
        assert_eq!(budget_status(Some(1000), 799), BudgetStatus::Ok);
        assert_eq!(budget_status(Some(1000), 800), BudgetStatus::Warning);
        assert_eq!(budget_status(Some(1000), 1000), BudgetStatus::Exceeded);
        assert_eq!(budget_status(None, 1_000_000), BudgetStatus::Ok);
    }

    #[test]
    fn a_short_balance_plans_nothing() {
        let item = tenant_item(&[(attr::BALANCE_MINOR, n(99))]);
        assert_eq!(plan(&item, 100, "2026-01"), None);
    }

    #[test]
    fn a_new_month_starts_from_zero_and_clears_stale_flags() {
        let item = tenant_item(&[
            (attr::BALANCE_MINOR, n(10_000)),
            (attr::MONTHLY_BUDGET_MINOR, n(1000)),
            (attr::BUDGET_MONTH, s("2025-12")),
            (attr::USED_THIS_MONTH_MINOR, n(990)),
            (attr::BUDGET_WARNING_SENT, s("2025-12")),
            (attr::BUDGET_EXCEEDED_SENT, s("2025-12")),
        ]);
        let p = plan(&item, 100, "2026-01").unwrap();
        assert_eq!(p.used_after, 100);
        assert!(!p.warning_due && !p.exceeded_due && !p.warning_flag);
        assert_eq!(p.headrooms, Some((700, 900)));
    }

    #[test]
    fn crossing_thresholds_is_due_once_per_month() {
        let base = |used: i64, warned: Option<&str>| {
            let mut item = tenant_item(&[
                (attr::BALANCE_MINOR, n(10_000)),
                (attr::MONTHLY_BUDGET_MINOR, n(1000)),
                (attr::BUDGET_MONTH, s("2026-01")),
                (attr::USED_THIS_MONTH_MINOR, n(used)),
            ]);
            if let Some(m) = warned {
                item.insert(attr::BUDGET_WARNING_SENT.into(), s(m));
            }
            item
        };
        let p = plan(&base(700, None), 100, "2026-01").unwrap();
        assert!(p.warning_due && !p.exceeded_due);
        assert_eq!(p.headrooms, Some((0, 200)));
        let p = plan(&base(850, Some("2026-01")), 100, "2026-01").unwrap();
        assert!(!p.warning_due && !p.exceeded_due);
        let p = plan(&base(950, Some("2026-01")), 100, "2026-01").unwrap();
        assert!(!p.warning_due && p.exceeded_due && p.exceeded_flag);
        assert_eq!(p.headrooms, Some((-250, -50)));
        // One debit jumping past both thresholds publishes both.
        let p = plan(&base(0, None), 1000, "2026-01").unwrap();
        assert!(p.warning_due && p.exceeded_due);
        // A flag from last month does not count.
        let p = plan(&base(850, Some("2025-12")), 1, "2026-01").unwrap();
        assert!(p.warning_due);
    }

    #[test]
    fn the_cheap_update_applies_exactly_when_no_alert_is_due() {
        let month = "2026-01";
        let item = |pairs: &[(&str, aws_sdk_dynamodb::types::AttributeValue)]| {
            let mut base = tenant_item(&[
                (attr::BALANCE_MINOR, n(10_000)),
                (attr::BUDGET_MONTH, s(month)),
            ]);
            base.extend(tenant_item(pairs));
            base
        };
        assert!(fast_path_holds(&item(&[]), 100, month), "no budget");
        assert!(!fast_path_holds(
            &item(&[(attr::BUDGET_MONTH, s("2025-12"))]),
            100,
            month
        ));
        assert!(!fast_path_holds(
            &item(&[(attr::BALANCE_MINOR, n(99))]),
            100,
            month
        ));
        let limit = (attr::MONTHLY_BUDGET_MINOR, n(1000));
        assert!(
            !fast_path_holds(&item(std::slice::from_ref(&limit)), 100, month),
            "headroom unknown"
        );
        let below = item(&[limit.clone(), (BUDGET_WARNING_HEADROOM, n(101))]);
        assert!(fast_path_holds(&below, 100, month));
        assert!(!fast_path_holds(&below, 101, month), "reaching 80 % is due");
        let warned = item(&[
            limit.clone(),
            (BUDGET_WARNING_HEADROOM, n(-50)),
            (BUDGET_EXCEEDED_HEADROOM, n(150)),
            (attr::BUDGET_WARNING_SENT, s(month)),
        ]);
        assert!(fast_path_holds(&warned, 100, month));
        assert!(
            !fast_path_holds(&warned, 150, month),
            "reaching 100 % is due"
        );
        // A top-up removed the flags: above 80 % the warning is due again.
        let reset = item(&[
            limit,
            (attr::USED_THIS_MONTH_MINOR, n(850)),
            (BUDGET_WARNING_HEADROOM, n(-50)),
            (BUDGET_EXCEEDED_HEADROOM, n(150)),
        ]);
        assert!(!fast_path_holds(&reset, 1, month));
        // And the plan agrees.
        assert!(plan(&reset, 1, month).unwrap().warning_due);
    }

    #[test]
    fn ledger_items_round_trip_and_cursors_stay_in_the_ledger() {
        let e = LedgerEntry::debit(150, Some("tts minutes"));
        assert_eq!(e.amount_minor, -150);
        let item = e.to_item("tnt_a");
        assert_eq!(LedgerEntry::from_item(&item), Some(e.clone()));
        let c = encode_cursor(&e.sk());
        assert_eq!(decode_cursor(&c).unwrap(), e.sk());
        assert!(decode_cursor(&encode_cursor("ENDPOINT#ep_x")).is_err());
        assert!(decode_cursor("%%%").is_err());
    }

    #[test]
    fn one_credit_expression_raises_the_balance_rearms_alerts_and_checks_the_currency() {
        let entry = LedgerEntry::from_stripe(
            LedgerKind::Credit,
            2500,
            "usd",
            "Credits purchased",
            "pi_1",
            "evt_1",
        );
        assert_eq!(entry.source, "pi_1");
        let mut p = table::Expr::default();
        let c = credit_clauses(&mut p, &entry);
        assert_eq!(
            c.set,
            ["#balance_minor = if_not_exists(#balance_minor, :v0) + :v1"]
        );
        assert_eq!(p.names["#balance_minor"], attr::BALANCE_MINOR);
        assert_eq!(p.values[":v1"], n(2500));
        let removed: Vec<&str> = c.remove.iter().map(|r| p.names[r].as_str()).collect();
        assert_eq!(
            removed,
            [attr::BUDGET_WARNING_SENT, attr::BUDGET_EXCEEDED_SENT]
        );
        assert_eq!(
            c.conditions,
            ["(attribute_not_exists(#currency) OR #currency = :v2)"]
        );
        assert_eq!(p.values[":v2"], s("usd"));
        // The Stripe entry keeps its event, and round-trips like any other.
        let item = entry.to_item("tnt_a");
        assert_eq!(item.get_s(ledger_attr::STRIPE_EVENT_ID), Some("evt_1"));
        assert_eq!(item.get_s(ledger_attr::KIND), Some("credit"));
        assert!(item.get_i64(ledger_attr::CREATED_MS).is_some());
        assert_eq!(LedgerEntry::from_item(&item), Some(entry));
    }
}
