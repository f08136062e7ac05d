//! Processing a verified event: ONE DynamoDB transaction carrying the event item, all its
//! effects, its notifications and the statistics counters.
//!
//! The event item is written with `attribute_not_exists(pk)` (or, when a stored event is
//! processed again, with its previous status and attempt count as the condition) and
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD`: a cancelled transaction whose event condition
//! failed hands back the stored item, which says "duplicate" (processed/ignored) or "process
//! again" (failed/unmatched/received) without another read.
//!
//! Other conditions in the same transaction are guards. When one fails the transaction is built
//! again without the guarded effect and sent again (rare paths only):
//! - `MONEY#{pi_… or in_…}` (`attribute_not_exists`): the payment was already credited or
//!   recorded by another event; this event is `processed` without the money effect.
//! - `SUB#{sub}` ordering guard: an older event never overwrites newer subscription state
//!   (`event_created`, ties kept by the more advanced lifecycle rank, `canceled` final). A stale
//!   event is stored `processed` with a note and changes nothing.
//! - the tenant item: must exist (else the event is `failed`: "tenant not found"), must be in the
//!   payment's currency for a credit, and its subscription summary follows one subscription
//!   (the current one, or a new one once the current is canceled).
//! - a notification's derived id (`fanout::Deferred::derived`) already stored: an earlier
//!   delivery of this event published it and its event item was removed since (cleanup,
//!   retention); the event is processed without publishing it again.
//! - `CUSTOMER#{cus}`: linked to one tenant only. An unmatched event's transaction marks the
//!   not-yet-linked customer as awaited (`waiting`, conditioned on no link), so an event can never
//!   wait for a link that already exists, and the checkout whose link finds the mark (its first
//!   attempt fails on it) knows to process the waiting events after its commit.
//!
//! Stages, one round of `Processor::run` each (a round repeats only when a guard failed):
//! 1. **pre-read** (`reads`, pure: what to read; `pre_read`: one consistent `BatchGetItem`; a
//!    stored final event ends here as a duplicate, `on_stored`);
//! 2. **decide** (`resolve`, pure): the tenant, the customer to wait for, or nobody;
//! 3. **build** (`Builder::transaction`, pure: no AWS client): the event item, the effects
//!    (`effects` → `link_customer`, `credit`, `payment`, `checkout_subscription`,
//!    `subscription`), the waiting item, the notifications (outbox items), the counters;
//! 4. **commit and classify** (`commit`: one `TransactWriteItems`; `classify`; `react`, pure:
//!    which failed condition means duplicate, failed, or "leave that effect out");
//! 5. **follow-ups**: `store_failed` for an event that cannot be processed, `drain` for the
//!    events waiting for a customer this event linked.
//!
//! The ingress, the operator's retry and the reconciliation sweep all enter through
//! `Processor::ingest` / `retry_stored`, so they share every stage.
//!
//! DynamoDB requests per new event: one transaction. A read is needed only when the tenant must
//! be found through the customer link, or an `invoice.paid` must know whether its subscription is
//! `past_due`: then one `BatchGetItem` (event, customer link, subscription) comes first, and a
//! duplicate is recognised by that read alone. Only a checkout that links a customer for whom
//! events wait costs more: a second transaction, then a query of the waiting (`unmatched`) events,
//! processed oldest first.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{KeysAndAttributes, TransactWriteItem};

use super::{
    event::{self, Handling, Money, Notice, Plan, StripeEvent, SubChange, TenantRef},
    store::{self, EventStatus, StoredPayload, StripeEventId, StripeEventRecord, attr},
};
use crate::{
    ApiError,
    account::{self, LedgerEntry, LedgerKind},
    aws::AwsClients,
    clock,
    event_types::{CreditsAdded, PaymentSucceeded, SluiceEvent},
    fanout::Deferred,
    ids,
    outbound::EventId,
    stats::StatsDelta,
    table::{self, Condition, Expr, Item, ItemExt, TxFailure, UpdateBuilder, classify, n, put, s},
    tenants::attr as tenant_attr,
};

/// Attribute of a not-yet-linked customer item: events wait for its link.
const WAITING: &str = "waiting";

/// Rounds of build-and-send before giving up (each guard can fail once, plus races).
const MAX_ROUNDS: usize = 8;

/// What happened to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or moved) with `status` by this call.
    Done {
        status: EventStatus,
        note: Option<String>,
    },
    /// Already stored with a final status; nothing changed.
    Duplicate { status: EventStatus },
    /// Processing failed: stored `failed` with `error` (Stripe's retry, or an operator's, runs it
    /// again).
    Failed { error: String },
}

/// Where events are stored (with their notifications: the table's stream relays them).
#[derive(Clone, Copy, Debug)]
pub struct Processor<'a> {
    pub aws: &'a AwsClients,
    pub table: &'a str,
    /// `STRIPE_EVENT_RETENTION_DAYS`.
    pub retention_days: u32,
}

/// The stored state of an event being processed again.
#[derive(Clone, Debug)]
struct Prior {
    status: EventStatus,
    attempts: i64,
    received_ms: i64,
    waiting: Option<(String, String)>,
}

impl Prior {
    fn from_item(item: &Item) -> Prior {
        Prior {
            status: EventStatus::of_item(item),
            attempts: item.get_i64(attr::ATTEMPTS).unwrap_or(0),
            received_ms: item
                .get_i64(attr::RECEIVED_MS)
                .unwrap_or_else(clock::now_epoch_millis),
            waiting: item
                .get_s(attr::CUSTOMER_ID)
                .zip(item.get_s(attr::WAITING_SK))
                .map(|(c, sk)| (c.to_owned(), sk.to_owned())),
        }
    }
}

/// Guards that failed in an earlier round: the next round leaves their effect out.
#[derive(Clone, Copy, Debug, Default)]
struct Degrade {
    money_recorded: bool,
    sub_stale: bool,
    summary_other: bool,
    checkout_sub_known: bool,
    /// Events wait for the customer this event links: process them after the commit.
    link_has_waiting: bool,
    /// The tenant item does not name the customer a Sluice checkout said it linked: link it.
    link_unconfirmed: bool,
}

impl Degrade {
    fn set(&mut self, flag: Flag) {
        match flag {
            Flag::MoneyRecorded => self.money_recorded = true,
            Flag::SubStale => self.sub_stale = true,
            Flag::SummaryOther => self.summary_other = true,
            Flag::CheckoutSubKnown => self.checkout_sub_known = true,
            Flag::LinkHasWaiting => self.link_has_waiting = true,
            Flag::LinkUnconfirmed => self.link_unconfirmed = true,
        }
    }
}

/// One guard that failed (a field of [`Degrade`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flag {
    MoneyRecorded,
    SubStale,
    SummaryOther,
    CheckoutSubKnown,
    LinkHasWaiting,
    LinkUnconfirmed,
}

/// How a failed condition of one transaction item is read.
#[derive(Clone, Debug, PartialEq)]
enum OnFail {
    /// The event item: duplicate, or a stored event to process again.
    Event,
    /// The tenant item: missing → failed ("tenant not found"); present → `present`.
    Tenant(Box<OnFail>),
    /// The event cannot be processed: stored `failed` with this text.
    Fatal(String),
    /// Leave the guarded effect out and send again.
    Flag(Flag),
    /// Read the customer link again (it appeared meanwhile).
    Reresolve,
    /// The customer link: linked to another tenant → failed; events waiting for it → link
    /// anyway, then process them.
    Link(String),
    /// The tenant item's condition includes that it names `customer` (a link this event
    /// confirms instead of writing): not named → [`Flag::LinkUnconfirmed`]; named → `otherwise`.
    Linked {
        customer: String,
        otherwise: Box<OnFail>,
    },
    /// A notification whose derived id exists: an earlier delivery of this event published it
    /// (its event item was removed since, by cleanup or retention). Leave it out and send again.
    Published(&'static str),
}

/// An update in the event's transaction: like every item there, it asks for the item as it was
/// when its condition fails (`react` reads what the failure means from it).
fn guarded_update() -> UpdateBuilder {
    let mut u = UpdateBuilder::default();
    u.return_old_on_condition_failure();
    u
}

/// One transaction being assembled, with how each item's failed condition is read.
#[derive(Default)]
struct Tx {
    items: Vec<TransactWriteItem>,
    on_fail: Vec<OnFail>,
}

impl Tx {
    fn push(&mut self, item: TransactWriteItem, on_fail: OnFail) {
        self.items.push(item);
        self.on_fail.push(on_fail);
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 1, pre-read: what the event needs to know before it can be decided.

/// What one consistent read told.
#[derive(Default)]
struct PreRead {
    event: Option<Item>,
    /// `Some(tenant)` if the customer is linked.
    customer_tenant: Option<String>,
    sub: Option<Item>,
}

/// What a handled event must read first (pure): the customer link when only a customer names
/// its tenant, and the subscription when an `invoice.paid` may only clear `past_due`. Nothing
/// for an ignored event or one naming its tenant (its transaction alone decides).
fn reads<'p>(
    tenant_ref: &'p TenantRef,
    plan: Option<&'p Plan>,
) -> (Option<&'p str>, Option<&'p str>) {
    let customer = match (tenant_ref, plan) {
        (TenantRef::Customer(c), Some(_)) => Some(c.as_str()),
        _ => None,
    };
    let sub = plan
        .and_then(|p| p.subscription.as_ref())
        .filter(|(change, _)| change.only_if_past_due)
        .map(|(change, _)| change.id.as_str());
    (customer, sub)
}

/// A stored event met again: `Some` if it is final (a duplicate), with the customer it linked,
/// whose waiting events the caller processes again in case an earlier attempt stopped before
/// that.
fn on_stored(item: &Item) -> Option<(Outcome, Option<String>)> {
    let current = EventStatus::of_item(item);
    current.is_final().then(|| {
        (
            Outcome::Duplicate { status: current },
            item.get_s(attr::LINKED_CUSTOMER).map(String::from),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Stage 2, decide (pure): whose event it is.

/// Where the event's tenant was found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolved {
    Tenant(String),
    /// Waits for this customer's link.
    Waiting(String),
    /// Nothing names a tenant: stored unmatched for an operator.
    Nobody,
}

/// The tenant of a handled event (`None` for an ignored one), from the event and the pre-read;
/// `Err` (the event fails) when what names the tenant is not a tenant id.
fn resolve(
    tenant_ref: &TenantRef,
    plan: Option<&Plan>,
    pre: Option<&PreRead>,
) -> Result<Option<Resolved>, String> {
    let resolved = match (tenant_ref, plan) {
        (_, None) => None,
        (TenantRef::Tenant(t), _) => Some(Resolved::Tenant(t.clone())),
        (TenantRef::Customer(c), _) => Some(match pre.and_then(|r| r.customer_tenant.clone()) {
            Some(t) => Resolved::Tenant(t),
            None => Resolved::Waiting(c.clone()),
        }),
        (TenantRef::Unknown, _) => Some(Resolved::Nobody),
    };
    match &resolved {
        Some(Resolved::Tenant(t)) if !ids::has_prefix(t, "tnt") => Err(format!(
            "{t:?} (metadata.tenant_id or client_reference_id) is not a tenant id"
        )),
        _ => Ok(resolved),
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 3, build the transaction (pure): every item, with how its failed condition is read.

/// What one round knows about the event besides its decision.
struct Attempt<'r> {
    event: &'r StripeEvent,
    raw: &'r [u8],
    received_ms: i64,
    /// The stored event being processed again, if any.
    prior: Option<&'r Prior>,
    flags: Degrade,
    /// The subscription item from the pre-read.
    sub_item: Option<&'r Item>,
    /// Notifications found already stored: published by an earlier delivery of this event.
    published: &'r [&'static str],
}

/// A transaction ready to send, and what the event item says.
struct Built {
    tx: Tx,
    status: EventStatus,
    note: Option<String>,
    /// The customer this event links, when events wait for it (processed after the commit).
    linked: Option<String>,
    tenant_id: Option<String>,
}

/// What the effects add besides transaction items.
#[derive(Default)]
struct Draft {
    tx: Tx,
    notes: Vec<String>,
    notices: Vec<Notice>,
}

/// The tenant item's one `Update`, gathering several effects, and what its failed condition
/// means when the item exists.
struct TenantWrite {
    update: UpdateBuilder,
    present: OnFail,
    /// The customer the update's condition requires the tenant to name ([`OnFail::Linked`]).
    confirms_link: Option<String>,
}

/// Builds transactions for one table (no AWS client: the build is pure).
#[derive(Clone, Copy, Debug)]
struct Builder<'a> {
    table: &'a str,
    retention_days: u32,
}

impl Builder<'_> {
    /// The whole transaction of one round. Item 0 is the event item.
    fn transaction(
        &self,
        handling: &Handling,
        resolved: Option<Resolved>,
        at: &Attempt<'_>,
        deferred: &mut BTreeMap<&'static str, Deferred>,
    ) -> Built {
        let event = at.event;
        let mut draft = Draft::default();
        draft
            .tx
            .push(TransactWriteItem::builder().build(), OnFail::Event);
        let mut linked: Option<String> = None;
        let mut waiting_sk: Option<String> = None;
        let mut tenant_id: Option<String> = None;
        let status = match (handling, resolved) {
            (Handling::Ignored(reason), _) => {
                draft.notes.push((*reason).to_owned());
                EventStatus::Ignored
            }
            (_, Some(Resolved::Nobody)) => {
                draft
                    .notes
                    .push("the event names no tenant and no customer".to_owned());
                EventStatus::Unmatched
            }
            (_, Some(Resolved::Waiting(customer))) => {
                waiting_sk = Some(self.wait_for(&mut draft, &customer, at));
                EventStatus::Unmatched
            }
            (Handling::Handled(plan), Some(Resolved::Tenant(tenant))) => {
                linked = self.effects(&mut draft, plan, &tenant, at);
                tenant_id = Some(tenant);
                EventStatus::Processed
            }
            (Handling::Handled(_), None) => unreachable!("a handled event is resolved"),
        };
        let notification_ids = self.notifications(&mut draft, tenant_id.as_deref(), at, deferred);

        // Leaving the waiting state removes the waiting item.
        if let Some((customer, sk)) = at.prior.and_then(|p| p.waiting.clone())
            && waiting_sk.as_deref() != Some(sk.as_str())
        {
            draft.tx.push(
                table::delete(
                    self.table,
                    table::key(table::unmatched_pk(&customer), sk),
                    None,
                ),
                OnFail::Fatal("unexpected condition on the waiting item".into()),
            );
        }

        let mut stats = StatsDelta::at(at.received_ms / 1000);
        match at.prior {
            None => stats.event_received(&event.event_type, status.as_str()),
            Some(p) => stats.event_status_changed(p.status.as_str(), status.as_str()),
        };
        if !stats.is_empty() {
            draft
                .tx
                .push(stats.to_transact_item(self.table), OnFail::Reresolve);
        }

        let note = (!draft.notes.is_empty()).then(|| draft.notes.join("; "));
        let record = StripeEventRecord {
            tenant_id: tenant_id.clone(),
            note: note.clone(),
            waiting_sk,
            linked_customer: linked.clone(),
            notifications: notification_ids.iter().map(|id| id.to_string()).collect(),
            ..self.event_record(event, at.raw, at.received_ms, at.prior, status)
        };
        draft.tx.items[0] = self.event_put(record.to_item(), at.prior);
        Built {
            tx: draft.tx,
            status,
            note,
            linked,
            tenant_id,
        }
    }

    /// The event waits for `customer`'s link: its waiting item, and the customer marked as
    /// awaited. Returns the waiting item's sort key (kept from an earlier wait for the same
    /// customer).
    fn wait_for(&self, draft: &mut Draft, customer: &str, at: &Attempt<'_>) -> String {
        let sk = at
            .prior
            .and_then(|p| p.waiting.as_ref())
            .filter(|(c, _)| c == customer)
            .map(|(_, sk)| sk.clone())
            .unwrap_or_else(|| format!("{:013}#{}", at.received_ms, at.event.id));
        draft.tx.push(
            put(
                self.table,
                Item::from([
                    (table::PK.into(), s(table::unmatched_pk(customer))),
                    (table::SK.into(), s(&sk)),
                    ("event_id".into(), s(&at.event.id)),
                    (table::TTL.into(), n(self.expires_at(at.received_ms))),
                ]),
                None,
            ),
            OnFail::Fatal("unexpected condition on the waiting item".into()),
        );
        // Marks the (not yet linked) customer as awaited, so that the checkout that links it
        // knows to process its waiting events; fails if the link appeared.
        let mut mark = guarded_update();
        mark.set(WAITING, table::b(true));
        let tid = mark.expr.name("tenant_id");
        mark.condition(format!("attribute_not_exists({tid})"));
        draft.tx.push(
            mark.transact_item(
                self.table,
                table::key(table::customer_pk(customer), "CUSTOMER"),
            ),
            OnFail::Reresolve,
        );
        draft.notes.push(format!(
            "waiting for customer {customer} to be linked to a tenant"
        ));
        sk
    }

    /// The notifications of a processed event, as outbox items in its transaction; answers the
    /// ids the event item names. Their ids derive from the Stripe event, so a redelivery names
    /// the notification the first delivery committed; those found already stored (`published`)
    /// are named, not written again.
    fn notifications(
        &self,
        draft: &mut Draft,
        tenant: Option<&str>,
        at: &Attempt<'_>,
        deferred: &mut BTreeMap<&'static str, Deferred>,
    ) -> Vec<EventId> {
        let mut ids: Vec<EventId> = at
            .published
            .iter()
            .filter_map(|t| deferred.get(t))
            .map(|d| d.event.id.clone())
            .collect();
        let Some(tenant) = tenant else {
            return ids;
        };
        for notice in std::mem::take(&mut draft.notices) {
            if at.published.contains(&notice.event_type) {
                continue;
            }
            let d = deferred.entry(notice.event_type).or_insert_with(|| {
                Deferred::derived(tenant, notice.event_type, notice.data.clone(), &at.event.id)
            });
            ids.push(d.event.id.clone());
            draft.tx.push(
                d.transact_item(self.table),
                OnFail::Published(notice.event_type),
            );
        }
        ids
    }

    /// Adds the effects of `plan` for `tenant`; returns the customer linked, if events wait for
    /// it.
    fn effects(
        &self,
        draft: &mut Draft,
        plan: &Plan,
        tenant: &str,
        at: &Attempt<'_>,
    ) -> Option<String> {
        let mut tw = TenantWrite {
            update: guarded_update(),
            // What a failed condition on the tenant item means when the item exists.
            present: OnFail::Fatal("unexpected condition on the tenant".into()),
            confirms_link: None,
        };
        tw.update.condition("attribute_exists(pk)");
        if let Some(customer) = &plan.link_customer {
            if plan.link_known && !at.flags.link_unconfirmed {
                Self::confirm_link(&mut tw, customer);
            } else {
                self.link_customer(draft, &mut tw, customer, tenant, at);
            }
        }
        if let Some(credit) = &plan.credit {
            self.credit(draft, &mut tw, credit, tenant, at);
        }
        if let Some((payment, sub)) = &plan.payment {
            self.payment(draft, payment, sub, tenant, at);
        }
        if let Some(sub) = &plan.checkout_subscription
            && !at.flags.checkout_sub_known
        {
            Self::checkout_subscription(&mut tw, sub);
        }
        if let Some((change, notice)) = &plan.subscription {
            self.subscription(draft, &mut tw, change, notice.as_ref(), tenant, at);
        }
        draft.notices.extend(plan.notices.iter().cloned());

        let tenant_key = table::key(table::tenant_pk(tenant), table::TENANT_PROFILE_SK);
        if tw.update.is_empty() {
            // Every matched event checks its tenant exists, even when it does not change it.
            draft.tx.push(
                table::condition_check(
                    self.table,
                    tenant_key,
                    Condition::new("attribute_exists(pk)").returning_old(),
                ),
                OnFail::Tenant(Box::new(OnFail::Fatal("unexpected".into()))),
            );
        } else {
            let present = match tw.confirms_link {
                Some(customer) => OnFail::Linked {
                    customer,
                    otherwise: Box::new(tw.present),
                },
                None => tw.present,
            };
            draft.tx.push(
                tw.update.transact_item(self.table, tenant_key),
                OnFail::Tenant(Box::new(present)),
            );
        }
        plan.link_customer
            .clone()
            .filter(|_| at.flags.link_has_waiting)
    }

    /// A checkout Sluice created names the customer Sluice linked before creating it: the
    /// tenant item must still name it — a condition on the update the transaction makes anyway
    /// — instead of writing the `CUSTOMER#` link again (2 write units per top-up). If it does
    /// not (the tenant was given another customer since), the next round links as any checkout.
    /// Events waiting for this customer are not this event's to process: Sluice's link kept
    /// their mark, so the customer's own `customer.created` processes them (`v1/billing.rs`).
    fn confirm_link(tw: &mut TenantWrite, customer: &str) {
        let c = tw.update.expr.name(tenant_attr::STRIPE_CUSTOMER_ID);
        let v = tw.update.expr.value(s(customer));
        tw.update.condition(format!("{c} = {v}"));
        // Setting the value the condition requires changes nothing; it keeps the tenant write
        // an `Update` (which carries the condition) even when nothing else changes the tenant.
        tw.update.set(tenant_attr::STRIPE_CUSTOMER_ID, s(customer));
        tw.confirms_link = Some(customer.to_owned());
    }

    /// The `CUSTOMER#{cus}` link to `tenant`, and the customer id on the tenant.
    fn link_customer(
        &self,
        draft: &mut Draft,
        tw: &mut TenantWrite,
        customer: &str,
        tenant: &str,
        at: &Attempt<'_>,
    ) {
        let mut expr = Expr::default();
        let t = expr.name("tenant_id");
        let v = expr.value(s(tenant));
        // Linked to this tenant already, or not at all; a customer marked as awaited fails the
        // first attempt (that is how this event learns it must process the waiting events), the
        // second accepts it. The Put drops the mark.
        let condition = if at.flags.link_has_waiting {
            format!("attribute_not_exists({t}) OR {t} = {v}")
        } else {
            let w = expr.name(WAITING);
            format!("(attribute_not_exists(pk) OR {t} = {v}) AND attribute_not_exists({w})")
        };
        draft.tx.push(
            put(
                self.table,
                Item::from([
                    (table::PK.into(), s(table::customer_pk(customer))),
                    (table::SK.into(), s("CUSTOMER")),
                    ("tenant_id".into(), s(tenant)),
                    ("event_id".into(), s(&at.event.id)),
                    ("linked_at".into(), n(clock::now_epoch())),
                ]),
                Some(Condition::with(condition, expr).returning_old()),
            ),
            OnFail::Link(customer.to_owned()),
        );
        tw.update.set(tenant_attr::STRIPE_CUSTOMER_ID, s(customer));
    }

    /// The ledger entry and the `MONEY#{key}` record that a payment is accounted for once.
    fn money(
        &self,
        draft: &mut Draft,
        money: &Money,
        kind: LedgerKind,
        tenant: &str,
        at: &Attempt<'_>,
    ) -> LedgerEntry {
        let entry = LedgerEntry::from_stripe(
            kind,
            money.amount_minor,
            &money.currency,
            &money.description,
            &money.key,
            &at.event.id,
        );
        draft.tx.push(
            entry.put_item(self.table, tenant),
            OnFail::Fatal("unexpected condition on the ledger entry".into()),
        );
        draft.tx.push(
            put(
                self.table,
                Item::from([
                    (table::PK.into(), s(table::money_pk(&money.key))),
                    (table::SK.into(), s("MONEY")),
                    ("ledger_id".into(), s(&entry.id)),
                    ("tenant_id".into(), s(tenant)),
                    ("event_id".into(), s(&at.event.id)),
                    ("amount_minor".into(), n(money.amount_minor)),
                    ("currency".into(), s(&money.currency)),
                    ("kind".into(), s(kind.as_str())),
                    ("created_at".into(), n(entry.created_at)),
                ]),
                Some(Condition::new("attribute_not_exists(pk)").returning_old()),
            ),
            OnFail::Flag(Flag::MoneyRecorded),
        );
        entry
    }

    /// Credits: a ledger credit, the balance up (in the tenant's currency), `credits.added`.
    fn credit(
        &self,
        draft: &mut Draft,
        tw: &mut TenantWrite,
        credit: &Money,
        tenant: &str,
        at: &Attempt<'_>,
    ) {
        if at.flags.money_recorded {
            draft
                .notes
                .push(format!("payment {} was already credited", credit.key));
            return;
        }
        let entry = self.money(draft, credit, LedgerKind::Credit, tenant, at);
        draft.tx.push(
            account::usage::credit_counter_item(self.table, tenant, &entry),
            OnFail::Fatal("unexpected condition on the usage counter".into()),
        );
        // The one credit expression (balance up, budget alert flags re-armed, currency).
        let clauses = account::credit_clauses(&mut tw.update.expr, &entry);
        tw.update.merge(clauses);
        tw.present = OnFail::Fatal(format!("the tenant's currency is not {}", credit.currency));
        draft
            .notices
            .push(Notice::from(SluiceEvent::CreditsAdded(CreditsAdded {
                amount_minor: credit.amount_minor,
                currency: credit.currency.clone(),
                ledger_id: entry.id.clone(),
                payment_id: credit.key.clone(),
            })));
    }

    /// A subscription payment: a ledger `payment` entry (balance unchanged), `payment.succeeded`.
    fn payment(
        &self,
        draft: &mut Draft,
        payment: &Money,
        sub: &Option<String>,
        tenant: &str,
        at: &Attempt<'_>,
    ) {
        if at.flags.money_recorded {
            draft
                .notes
                .push(format!("invoice {} was already recorded", payment.key));
            return;
        }
        let ledger_id = self
            .money(draft, payment, LedgerKind::Payment, tenant, at)
            .id;
        draft
            .notices
            .push(Notice::from(SluiceEvent::PaymentSucceeded(
                PaymentSucceeded {
                    invoice_id: payment.key.clone(),
                    amount_minor: payment.amount_minor,
                    currency: payment.currency.clone(),
                    subscription_id: sub.clone(),
                    ledger_id,
                },
            )));
    }

    /// A subscription checkout: a new subscription id on the tenant starts as `incomplete` until
    /// its own events arrive; the same id again leaves the recorded state alone.
    fn checkout_subscription(tw: &mut TenantWrite, sub: &str) {
        let u = &mut tw.update;
        let sid = u.expr.name(tenant_attr::SUB_ID);
        let sv = u.expr.value(s(sub));
        u.set(tenant_attr::SUB_ID, s(sub));
        u.set(tenant_attr::SUB_STATUS, s("incomplete"));
        u.remove(tenant_attr::SUB_PRICE_ID);
        u.remove(tenant_attr::SUB_CURRENT_PERIOD_END);
        u.remove(tenant_attr::SUB_CANCEL_AT_PERIOD_END);
        u.condition(format!("(attribute_not_exists({sid}) OR {sid} <> {sv})"));
        tw.present = OnFail::Flag(Flag::CheckoutSubKnown);
    }

    /// Subscription state behind the ordering guard, the tenant's summary if it follows this
    /// subscription, and the change's notice.
    fn subscription(
        &self,
        draft: &mut Draft,
        tw: &mut TenantWrite,
        change: &SubChange,
        notice: Option<&Notice>,
        tenant: &str,
        at: &Attempt<'_>,
    ) {
        if at.flags.sub_stale {
            draft.notes.push(format!(
                "subscription {}: a newer state is already recorded; nothing changed",
                change.id
            ));
            return;
        }
        let Some(sub_update) = self.sub_update(change, tenant, at.event, at.sub_item) else {
            return;
        };
        draft.tx.push(sub_update, OnFail::Flag(Flag::SubStale));
        if at.flags.summary_other {
            draft.notes.push(format!(
                "the tenant's summary follows another subscription than {}",
                change.id
            ));
        } else {
            Self::summary(&mut tw.update, change);
            tw.present = OnFail::Flag(Flag::SummaryOther);
        }
        draft.notices.extend(notice.cloned());
    }

    /// The `SUB#{sub}` update behind the ordering guard; `None` when it cannot apply (an
    /// `invoice.paid` for a subscription that is not `past_due`, per the consistent read).
    fn sub_update(
        &self,
        change: &SubChange,
        tenant: &str,
        event: &StripeEvent,
        sub_item: Option<&Item>,
    ) -> Option<TransactWriteItem> {
        let mut u = guarded_update();
        let st = u.expr.name("status");
        let ec = u.expr.name("event_created");
        let rank = u.expr.name("rank");
        let created = u.expr.value(n(event.created));
        if change.only_if_past_due {
            // Clears past_due only if no newer (or same-second) event set it.
            let current = sub_item?;
            if current.get_s("status") != Some("past_due")
                || current.get_i64("event_created").unwrap_or(i64::MAX) >= event.created
            {
                return None;
            }
            let past_due = u.expr.value(s("past_due"));
            u.condition(format!("{st} = {past_due} AND {ec} < {created}"));
        } else {
            let r = u.expr.value(n(event::status_rank(&change.status)));
            let canceled = u.expr.value(s(event::FINAL_STATUSES[0]));
            let expired = u.expr.value(s(event::FINAL_STATUSES[1]));
            u.condition(format!(
                "(attribute_not_exists(pk) OR (NOT ({st} IN ({canceled}, {expired})) AND ({ec} < {created} OR ({ec} = {created} AND {rank} <= {r}))))"
            ));
        }
        u.set_clause(format!("{ec} = {created}"));
        u.set("status", s(&change.status));
        u.set("rank", n(event::status_rank(&change.status)));
        u.set("tenant_id", s(tenant));
        u.set("event_id", s(&event.id));
        u.set("updated_at", n(clock::now_epoch()));
        if let Some(d) = &change.details {
            u.set_or_remove("price_id", d.price_id.as_ref().map(s));
            u.set_or_remove("current_period_end", d.current_period_end.map(n));
            u.set("cancel_at_period_end", table::b(d.cancel_at_period_end));
        }
        Some(u.transact_item(
            self.table,
            table::key(table::subscription_pk(&change.id), "SUB"),
        ))
    }

    /// The tenant's subscription summary, for the subscription it follows.
    fn summary(u: &mut UpdateBuilder, change: &SubChange) {
        let sid = u.expr.name(tenant_attr::SUB_ID);
        let sst = u.expr.name(tenant_attr::SUB_STATUS);
        let sv = u.expr.value(s(&change.id));
        let canceled = u.expr.value(s(event::FINAL_STATUSES[0]));
        let expired = u.expr.value(s(event::FINAL_STATUSES[1]));
        u.condition(format!(
            "(attribute_not_exists({sid}) OR {sid} = {sv} OR {sst} IN ({canceled}, {expired}))"
        ));
        u.set(tenant_attr::SUB_ID, s(&change.id));
        u.set(tenant_attr::SUB_STATUS, s(&change.status));
        if let Some(d) = &change.details {
            u.set_or_remove(tenant_attr::SUB_PRICE_ID, d.price_id.as_ref().map(s));
            u.set_or_remove(
                tenant_attr::SUB_CURRENT_PERIOD_END,
                d.current_period_end.map(n),
            );
            u.set(
                tenant_attr::SUB_CANCEL_AT_PERIOD_END,
                table::b(d.cancel_at_period_end),
            );
        }
    }

    fn expires_at(&self, received_ms: i64) -> i64 {
        received_ms / 1000 + clock::days(self.retention_days)
    }

    /// The event's record (status and attempts set; what the effects add is set by the caller).
    fn event_record(
        &self,
        event: &StripeEvent,
        raw: &[u8],
        received_ms: i64,
        prior: Option<&Prior>,
        new_status: EventStatus,
    ) -> StripeEventRecord {
        StripeEventRecord {
            // `event::decode` admits only ids that `StripeEventId::parse` accepts.
            id: StripeEventId::parse(&event.id).expect("a decoded event has an evt_ id"),
            event_type: event.event_type.clone(),
            status: new_status,
            created: event.created,
            received_ms,
            attempts: prior.map_or(0, |p| p.attempts) + 1,
            livemode: event.livemode,
            api_version: event.api_version.clone(),
            customer_id: event.customer(),
            tenant_id: None,
            error: None,
            note: None,
            waiting_sk: None,
            linked_customer: None,
            notifications: Vec::new(),
            updated_at: Some(clock::now_epoch()),
            expires_at: Some(self.expires_at(received_ms)),
            payload: StoredPayload::of(raw),
        }
    }

    /// The conditional `Put` of the event item: new, or still in the state it was read in.
    fn event_put(&self, item: Item, prior: Option<&Prior>) -> TransactWriteItem {
        match prior {
            None => put(
                self.table,
                item,
                Some(Condition::new("attribute_not_exists(pk)").returning_old()),
            ),
            Some(p) => {
                let mut expr = Expr::default();
                let st = expr.name(attr::STATUS);
                let at = expr.name(attr::ATTEMPTS);
                let sv = expr.value(s(p.status.as_str()));
                let av = expr.value(n(p.attempts));
                let condition =
                    format!("{st} = {sv} AND ({at} = {av} OR attribute_not_exists({at}))");
                put(
                    self.table,
                    item,
                    Some(Condition::with(condition, expr).returning_old()),
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 4, commit and classify: send the transaction; read a cancellation into what the next
// round changes (pure).

/// What a cancelled transaction's failed conditions say.
#[derive(Debug, Default, PartialEq)]
struct Reaction {
    /// The event item's own condition failed: the stored item (empty when the emulator did not
    /// return it; then it is read).
    stored: Option<Item>,
    /// Guards that failed: the next round leaves their effects out.
    degrade: Vec<Flag>,
    /// The customer link or the counters changed meanwhile: read again.
    reread: bool,
    /// Notifications an earlier delivery of this event already published.
    published: Vec<&'static str>,
    /// The event cannot be processed: stored `failed` with this text.
    fatal: Option<String>,
}

/// Reads the failed conditions (`failed[i]`: the old item where item `i`'s failed) by each
/// item's rule; `tenant` is the tenant the transaction was for.
fn react(rules: &[OnFail], failed: Vec<Option<Item>>, tenant: Option<&str>) -> Reaction {
    let mut out = Reaction::default();
    for (i, old) in failed.into_iter().enumerate() {
        let Some(old) = old else { continue };
        let Some(mut rule) = rules.get(i) else {
            continue;
        };
        if let OnFail::Tenant(present) = rule {
            if old.is_empty() {
                out.fatal = Some(format!("tenant {} not found", tenant.unwrap_or("?")));
                continue;
            }
            rule = present;
        }
        if let OnFail::Linked {
            customer,
            otherwise,
        } = rule
        {
            if old.get_s(tenant_attr::STRIPE_CUSTOMER_ID) != Some(customer.as_str()) {
                out.degrade.push(Flag::LinkUnconfirmed);
                continue;
            }
            rule = otherwise;
        }
        match rule {
            OnFail::Event => out.stored = Some(old),
            OnFail::Fatal(msg) => out.fatal = Some(msg.clone()),
            OnFail::Flag(flag) => out.degrade.push(*flag),
            OnFail::Reresolve => out.reread = true,
            OnFail::Published(event_type) => out.published.push(event_type),
            OnFail::Link(customer) => match old.get_s("tenant_id") {
                Some(other) if Some(other) != tenant => {
                    out.fatal = Some(format!(
                        "customer {customer} is already linked to another tenant"
                    ));
                }
                _ => out.degrade.push(Flag::LinkHasWaiting),
            },
            OnFail::Tenant(_) | OnFail::Linked { .. } => unreachable!("nested tenant rule"),
        }
    }
    out
}

impl<'a> Processor<'a> {
    /// Processes a newly received, verified event.
    pub async fn ingest(&self, event: &StripeEvent, raw: &[u8]) -> Result<Outcome, ApiError> {
        let (outcome, linked) = self
            .run(event, raw, clock::now_epoch_millis(), None)
            .await?;
        if let Some(customer) = linked {
            self.drain(&customer).await?;
        }
        Ok(outcome)
    }

    /// Processes a stored event again from its payload (operator retry). Processed and ignored
    /// events answer `Duplicate` and change nothing.
    pub async fn retry_stored(&self, event_id: &str) -> Result<Option<Outcome>, ApiError> {
        let Some(item) = store::get_item(&self.aws.dynamodb, self.table, event_id).await? else {
            return Ok(None);
        };
        let current = EventStatus::of_item(&item);
        if current.is_final() {
            if let Some(customer) = item.get_s(attr::LINKED_CUSTOMER) {
                self.drain(customer).await?;
            }
            return Ok(Some(Outcome::Duplicate { status: current }));
        }
        let raw = store::read_payload(&item).ok_or_else(|| {
            ApiError::conflict("the event's payload was not kept; it cannot be processed again")
        })?;
        let event = event::decode(&raw).map_err(|_| {
            ApiError::internal(anyhow::anyhow!(
                "stored payload of {event_id} does not decode"
            ))
        })?;
        let prior = Prior::from_item(&item);
        let (outcome, linked) = self
            .run(&event, &raw, prior.received_ms, Some(prior))
            .await?;
        if let Some(customer) = linked {
            self.drain(&customer).await?;
        }
        Ok(Some(outcome))
    }

    fn builder(&self) -> Builder<'a> {
        Builder {
            table: self.table,
            retention_days: self.retention_days,
        }
    }

    /// Runs the stages round by round until the event's transaction commits or the event is
    /// known to be a duplicate or failed. Returns the outcome and the customer this event linked
    /// (its waiting events are then processed by the caller).
    async fn run(
        &self,
        event: &StripeEvent,
        raw: &[u8],
        received_ms: i64,
        mut prior: Option<Prior>,
    ) -> Result<(Outcome, Option<String>), ApiError> {
        let handling = match event::plan(event) {
            Ok(h) => h,
            Err(error) => return self.fail(event, raw, received_ms, prior, error).await,
        };
        let plan = match &handling {
            Handling::Handled(plan) => Some(&**plan),
            Handling::Ignored(_) => None,
        };
        let tenant_ref = event.tenant_ref();
        let mut flags = Degrade::default();
        let mut deferred: BTreeMap<&'static str, Deferred> = BTreeMap::new();
        let mut read: Option<PreRead> = None;
        let mut published: Vec<&'static str> = Vec::new();

        for _round in 0..MAX_ROUNDS {
            // 1. Pre-read (once, and again only when a guard says it changed).
            let (customer, sub) = reads(&tenant_ref, plan);
            if read.is_none() && (customer.is_some() || sub.is_some()) {
                let event_id = prior.is_none().then_some(event.id.as_str());
                let r = self.pre_read(event_id, customer, sub).await?;
                if let Some(item) = &r.event {
                    if let Some(duplicate) = on_stored(item) {
                        return Ok(duplicate);
                    }
                    prior = Some(Prior::from_item(item));
                }
                read = Some(r);
            }
            // 2. Decide.
            let resolved = match resolve(&tenant_ref, plan, read.as_ref()) {
                Ok(r) => r,
                Err(error) => return self.fail(event, raw, received_ms, prior, error).await,
            };
            // 3. Build.
            let built = self.builder().transaction(
                &handling,
                resolved,
                &Attempt {
                    event,
                    raw,
                    received_ms,
                    prior: prior.as_ref(),
                    flags,
                    sub_item: read.as_ref().and_then(|r| r.sub.as_ref()),
                    published: &published,
                },
                &mut deferred,
            );
            // 4. Commit and classify.
            let Tx { items, on_fail } = built.tx;
            let failed = match self.commit(items).await {
                Ok(()) => {
                    tracing::info!(stripe_event_id = %event.id, event_type = %event.event_type, status = %built.status, "stripe event stored");
                    let outcome = Outcome::Done {
                        status: built.status,
                        note: built.note,
                    };
                    return Ok((outcome, built.linked));
                }
                Err(TxFailure::Conflict) => {
                    // Concurrent writers of the same items (e.g. the hourly counters): back off
                    // a little, at random, and send again.
                    let jitter = u64::from(ids::random_bytes::<1>()[0]) % 50;
                    tokio::time::sleep(std::time::Duration::from_millis(20 + jitter)).await;
                    continue;
                }
                Err(TxFailure::Other(err)) => {
                    let error = table::describe_failure(&err);
                    // Best effort: record the failure so that it shows and counts; if DynamoDB
                    // is unreachable this fails too, and Stripe's retry finds nothing stored.
                    let _ = self
                        .store_failed(event, raw, received_ms, prior, error)
                        .await;
                    return Err(ApiError::from(*err));
                }
                Err(TxFailure::Conditions(failed)) => failed,
            };
            let reaction = react(&on_fail, failed, built.tenant_id.as_deref());
            if let Some(old) = reaction.stored {
                let old = if old.is_empty() {
                    // An emulator that does not return the old item: read it.
                    store::get_item(&self.aws.dynamodb, self.table, &event.id)
                        .await?
                        .unwrap_or_default()
                } else {
                    old
                };
                if let Some(duplicate) = on_stored(&old) {
                    return Ok(duplicate);
                }
                prior = Some(Prior::from_item(&old));
            }
            for flag in reaction.degrade {
                flags.set(flag);
            }
            if reaction.reread {
                read = None;
            }
            published.extend(reaction.published);
            if let Some(error) = reaction.fatal {
                // Only once the event item's own condition held (it is then not a duplicate).
                return self.fail(event, raw, received_ms, prior, error).await;
            }
        }
        Err(ApiError::internal(anyhow::anyhow!(
            "stripe event {}: transaction kept being cancelled",
            event.id
        )))
    }

    /// One consistent `BatchGetItem` of what the event needs to know (stage 1).
    async fn pre_read(
        &self,
        event_id: Option<&str>,
        customer: Option<&str>,
        sub: Option<&str>,
    ) -> Result<PreRead, ApiError> {
        let mut keys = Vec::new();
        if let Some(id) = event_id {
            keys.push(store::event_key(id));
        }
        if let Some(c) = customer {
            keys.push(table::key(table::customer_pk(c), "CUSTOMER"));
        }
        if let Some(sub) = sub {
            keys.push(table::key(table::subscription_pk(sub), "SUB"));
        }
        let mut found: Vec<Item> = Vec::new();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .expect("keys set"),
        );
        for _ in 0..5 {
            let Some(request) = pending.take() else { break };
            let out = self
                .aws
                .dynamodb
                .batch_get_item()
                .request_items(self.table, request)
                .send()
                .await?;
            if let Some(items) = out.responses.as_ref().and_then(|r| r.get(self.table)) {
                found.extend(items.iter().cloned());
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(self.table))
                .filter(|k| !k.keys().is_empty());
        }
        if pending.is_some() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "stripe: keys left unprocessed after retries"
            )));
        }
        let mut read = PreRead::default();
        for item in found {
            let pk = item.get_s(table::PK).unwrap_or_default();
            if pk.starts_with("STRIPE#") {
                read.event = Some(item);
            } else if pk.starts_with("CUSTOMER#") {
                read.customer_tenant = item.get_s("tenant_id").map(String::from);
            } else if pk.starts_with("SUB#") {
                read.sub = Some(item);
            }
        }
        Ok(read)
    }

    /// Sends one round's transaction (stage 4).
    async fn commit(&self, items: Vec<TransactWriteItem>) -> Result<(), TxFailure> {
        self.aws
            .dynamodb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    // -----------------------------------------------------------------------------------------
    // Stage 5, follow-ups: a failed event stored as such; the events waiting for a customer
    // this event linked.

    /// [`Self::store_failed`], as `run`'s answer (nothing linked).
    async fn fail(
        &self,
        event: &StripeEvent,
        raw: &[u8],
        received_ms: i64,
        prior: Option<Prior>,
        error: String,
    ) -> Result<(Outcome, Option<String>), ApiError> {
        let outcome = self
            .store_failed(event, raw, received_ms, prior, error)
            .await?;
        Ok((outcome, None))
    }

    /// Stores the event as `failed` with `error` (attempts counted); nothing else changes.
    async fn store_failed(
        &self,
        event: &StripeEvent,
        raw: &[u8],
        received_ms: i64,
        mut prior: Option<Prior>,
        error: String,
    ) -> Result<Outcome, ApiError> {
        tracing::warn!(stripe_event_id = %event.id, event_type = %event.event_type, error = %error, "stripe event failed");
        let b = self.builder();
        // Twice at most: a first write may find the event stored meanwhile (then conditioned on
        // what it found).
        for _ in 0..2 {
            let record = StripeEventRecord {
                error: Some(error.clone()),
                ..b.event_record(event, raw, received_ms, prior.as_ref(), EventStatus::Failed)
            };
            let mut items = vec![b.event_put(record.to_item(), prior.as_ref())];
            let mut stats = StatsDelta::at(received_ms / 1000);
            match &prior {
                None => stats.event_received(&event.event_type, EventStatus::Failed.as_str()),
                Some(p) => {
                    stats.event_status_changed(p.status.as_str(), EventStatus::Failed.as_str())
                }
            };
            if !stats.is_empty() {
                items.push(stats.to_transact_item(self.table));
            }
            if let Some((customer, sk)) = prior.as_ref().and_then(|p| p.waiting.clone()) {
                items.push(table::delete(
                    self.table,
                    table::key(table::unmatched_pk(&customer), sk),
                    None,
                ));
            }
            match self.commit(items).await {
                Ok(()) => return Ok(Outcome::Failed { error }),
                Err(TxFailure::Conditions(failed)) => {
                    let old = failed.into_iter().next().flatten().unwrap_or_default();
                    match old.get_s(attr::STATUS).map(|_| EventStatus::of_item(&old)) {
                        // Processed meanwhile by someone else: theirs stands.
                        Some(st) if st.is_final() => {
                            return Ok(Outcome::Duplicate { status: st });
                        }
                        Some(_) => prior = Some(Prior::from_item(&old)),
                        None => break,
                    }
                }
                Err(TxFailure::Conflict) => {}
                Err(TxFailure::Other(err)) => return Err(ApiError::from(*err)),
            }
        }
        Ok(Outcome::Failed { error })
    }

    /// Processes, oldest first, the events waiting for `customer`'s link. Idempotent: an event
    /// processed meanwhile by someone else is skipped and its waiting item removed.
    pub async fn drain(&self, customer: &str) -> Result<(), ApiError> {
        let db = &self.aws.dynamodb;
        let mut start: Option<Item> = None;
        loop {
            let out = db
                .query()
                .table_name(self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(table::unmatched_pk(customer)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            for waiting in out.items() {
                let Some(event_id) = waiting.get_s("event_id") else {
                    continue;
                };
                let stored = store::get_item(db, self.table, event_id).await?;
                let still_waiting = stored.as_ref().and_then(|item| {
                    let prior = Prior::from_item(item);
                    (prior.status == EventStatus::Unmatched).then_some((item, prior))
                });
                match still_waiting {
                    Some((item, prior)) => {
                        let Some(raw) = store::read_payload(item) else {
                            continue;
                        };
                        let Ok(event) = event::decode(&raw) else {
                            continue;
                        };
                        let received_ms = prior.received_ms;
                        // The waiting item goes in the same transaction as the event's effects.
                        self.run(&event, &raw, received_ms, Some(prior)).await?;
                    }
                    None => {
                        let key = table::key(
                            table::unmatched_pk(customer),
                            waiting.get_s(table::SK).unwrap_or_default(),
                        );
                        db.delete_item()
                            .table_name(self.table)
                            .set_key(Some(key))
                            .send()
                            .await?;
                    }
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure};

    fn fixture(name: &str) -> (StripeEvent, Vec<u8>) {
        let path = format!(
            "{}/../../tests/fixtures/stripe/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let raw = std::fs::read(&path).unwrap();
        (event::decode(&raw).unwrap(), raw)
    }

    fn handled(event: &StripeEvent) -> Plan {
        match event::plan(event).unwrap() {
            Handling::Handled(p) => *p,
            other => panic!("{other:?}"),
        }
    }

    const B: Builder<'static> = Builder {
        table: "t",
        retention_days: 30,
    };

    /// Stage 3 for `name` resolved as `resolved`, with `flags`, as a first delivery.
    fn build(name: &str, resolved: Option<Resolved>, flags: Degrade) -> Built {
        let (event, raw) = fixture(name);
        build_event(&event, &raw, resolved, flags)
    }

    /// Stage 3 for `event`, as [`build`].
    fn build_event(
        event: &StripeEvent,
        raw: &[u8],
        resolved: Option<Resolved>,
        flags: Degrade,
    ) -> Built {
        let handling = event::plan(event).unwrap();
        B.transaction(
            &handling,
            resolved,
            &Attempt {
                event,
                raw,
                received_ms: 1_700_000_000_000,
                prior: None,
                flags,
                sub_item: None,
                published: &[],
            },
            &mut BTreeMap::new(),
        )
    }

    fn event_put(built: &Built) -> &Put {
        built.tx.items[0].put().expect("item 0 is the event's Put")
    }

    #[test]
    fn only_an_event_without_a_tenant_id_or_clearing_past_due_reads_first() {
        let (credits, _) = fixture("payment_intent.succeeded.credits");
        let plan = handled(&credits);
        assert_eq!(reads(&credits.tenant_ref(), Some(&plan)), (None, None));
        let (invoice, _) = fixture("invoice.paid");
        let plan = handled(&invoice);
        let tenant_ref = invoice.tenant_ref();
        let (customer, sub) = reads(&tenant_ref, Some(&plan));
        assert!(customer.is_some_and(|c| c.starts_with("cus_")));
        assert!(sub.is_some_and(|s| s.starts_with("sub_")), "{sub:?}");
        // An ignored event reads nothing, whatever names it.
        assert_eq!(
            reads(&TenantRef::Customer("cus_1".into()), None),
            (None, None)
        );
    }

    #[test]
    fn the_tenant_is_named_linked_awaited_or_nobody() {
        let plan = Plan::default();
        let linked = PreRead {
            customer_tenant: Some("tnt_1".into()),
            ..PreRead::default()
        };
        let customer = TenantRef::Customer("cus_1".into());
        assert_eq!(
            resolve(&TenantRef::Tenant("tnt_1".into()), Some(&plan), None),
            Ok(Some(Resolved::Tenant("tnt_1".into())))
        );
        assert_eq!(
            resolve(&customer, Some(&plan), Some(&linked)),
            Ok(Some(Resolved::Tenant("tnt_1".into())))
        );
        assert_eq!(
            resolve(&customer, Some(&plan), Some(&PreRead::default())),
            Ok(Some(Resolved::Waiting("cus_1".into())))
        );
        assert_eq!(
            resolve(&TenantRef::Unknown, Some(&plan), None),
            Ok(Some(Resolved::Nobody))
        );
        assert_eq!(resolve(&customer, None, None), Ok(None));
        let err = resolve(&TenantRef::Tenant("acme".into()), Some(&plan), None).unwrap_err();
        assert!(err.contains("is not a tenant id"), "{err}");
    }

    #[test]
    fn a_credit_is_one_transaction_of_event_ledger_money_tenant_notification_and_counters() {
        let built = build(
            "payment_intent.succeeded.credits",
            Some(Resolved::Tenant("tnt_fixture0001".into())),
            Degrade::default(),
        );
        assert_eq!(built.status, EventStatus::Processed);
        assert_eq!(built.tenant_id.as_deref(), Some("tnt_fixture0001"));
        assert_eq!(built.note, None);
        assert_eq!(built.linked, None);
        let rules = &built.tx.on_fail;
        assert_eq!(rules.len(), built.tx.items.len());
        assert_eq!(rules[0], OnFail::Event);
        assert_eq!(rules[2], OnFail::Flag(Flag::MoneyRecorded));
        // The day's usage counter (`GET /v1/usage/summary`), an unconditional ADD.
        assert!(matches!(&rules[3], OnFail::Fatal(m) if m.contains("usage counter")));
        assert!(
            matches!(&rules[4], OnFail::Tenant(p) if matches!(**p, OnFail::Fatal(ref m) if m.contains("currency")))
        );
        assert_eq!(rules[5], OnFail::Published("credits.added"));
        assert_eq!(rules[6], OnFail::Reresolve);
        assert_eq!(rules.len(), 7);
        let put = event_put(&built);
        assert_eq!(put.condition_expression(), Some("attribute_not_exists(pk)"));
        // A failed condition hands back the item as it was: `react` reads what it means from it.
        let all_old = Some(&ReturnValuesOnConditionCheckFailure::AllOld);
        assert_eq!(put.return_values_on_condition_check_failure(), all_old);
        let tenant = built.tx.items[4]
            .update()
            .expect("item 4 is the tenant's Update");
        assert_eq!(tenant.return_values_on_condition_check_failure(), all_old);
        assert!(
            tenant
                .condition_expression()
                .unwrap()
                .starts_with("attribute_exists(pk) AND ")
        );
        assert_eq!(put.item()[attr::STATUS].as_s().unwrap(), "processed");
        assert_eq!(put.item()[attr::NOTIFICATIONS].as_l().unwrap().len(), 1);
        // The item is the event's record, field for field.
        let record = StripeEventRecord::from_item(put.item()).expect("an event record");
        assert_eq!(record.to_item(), *put.item());
        assert_eq!(
            (record.attempts, record.tenant_id.as_deref()),
            (1, Some("tnt_fixture0001"))
        );
    }

    #[test]
    fn a_payment_already_credited_leaves_the_money_and_its_notification_out() {
        let built = build(
            "payment_intent.succeeded.credits",
            Some(Resolved::Tenant("tnt_fixture0001".into())),
            Degrade {
                money_recorded: true,
                ..Degrade::default()
            },
        );
        assert_eq!(built.status, EventStatus::Processed);
        assert!(built.note.as_deref().unwrap().contains("already credited"));
        // The event, the tenant's existence, the counters.
        let rules = &built.tx.on_fail;
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert!(built.tx.items[1].condition_check().is_some());
        assert!(event_put(&built).item().get(attr::NOTIFICATIONS).is_none());
    }

    #[test]
    fn an_event_for_an_unlinked_customer_waits_and_marks_the_customer() {
        let built = build(
            "invoice.paid",
            Some(Resolved::Waiting("cus_1".into())),
            Degrade::default(),
        );
        assert_eq!(built.status, EventStatus::Unmatched);
        assert_eq!(built.tenant_id, None);
        let rules = &built.tx.on_fail;
        assert!(matches!(rules[1], OnFail::Fatal(_)), "the waiting item");
        assert_eq!(rules[2], OnFail::Reresolve, "the customer's mark");
        let waiting = built.tx.items[1].put().unwrap();
        assert_eq!(
            waiting.item()[table::PK].as_s().unwrap(),
            &table::unmatched_pk("cus_1")
        );
        let sk = waiting.item()[table::SK].as_s().unwrap();
        assert_eq!(
            event_put(&built).item()[attr::WAITING_SK].as_s().unwrap(),
            sk
        );
        assert!(built.note.unwrap().contains("waiting for customer cus_1"));
    }

    #[test]
    fn an_ignored_or_unmatched_event_is_stored_with_its_counters_only() {
        let ignored = build("plan.created", None, Degrade::default());
        assert_eq!(ignored.status, EventStatus::Ignored);
        assert_eq!(ignored.tx.on_fail, vec![OnFail::Event, OnFail::Reresolve]);
        let nobody = build(
            "payment_intent.succeeded.credits",
            Some(Resolved::Nobody),
            Degrade::default(),
        );
        assert_eq!(nobody.status, EventStatus::Unmatched);
        assert_eq!(nobody.tx.on_fail, vec![OnFail::Event, OnFail::Reresolve]);
    }

    #[test]
    fn a_cancellation_says_duplicate_failed_or_which_effect_to_leave_out() {
        let stored = Item::from([(attr::STATUS.to_owned(), s("processed"))]);
        let present = Item::from([(table::PK.to_owned(), s("x"))]);
        let rules = vec![
            OnFail::Event,
            OnFail::Flag(Flag::MoneyRecorded),
            OnFail::Tenant(Box::new(OnFail::Flag(Flag::SummaryOther))),
            OnFail::Published("credits.added"),
            OnFail::Reresolve,
        ];
        let r = react(
            &rules,
            vec![
                Some(stored.clone()),
                Some(Item::new()),
                Some(present.clone()),
                Some(Item::new()),
                None,
            ],
            Some("tnt_1"),
        );
        assert_eq!(r.stored, Some(stored));
        assert_eq!(r.degrade, vec![Flag::MoneyRecorded, Flag::SummaryOther]);
        assert_eq!(r.published, vec!["credits.added"]);
        assert!(!r.reread);
        assert_eq!(r.fatal, None);

        // A missing tenant item fails the event, whatever its rule when present.
        let r = react(
            &rules,
            vec![None, None, Some(Item::new()), None, Some(Item::new())],
            Some("tnt_1"),
        );
        assert_eq!(r.fatal.as_deref(), Some("tenant tnt_1 not found"));
        assert!(r.reread);

        // A customer linked to another tenant fails it; linked to none (but awaited) or to this
        // one, the link goes ahead and the waiting events are processed after the commit.
        let link = vec![OnFail::Link("cus_1".into())];
        let other = Item::from([("tenant_id".to_owned(), s("tnt_2"))]);
        let r = react(&link, vec![Some(other)], Some("tnt_1"));
        assert!(
            r.fatal
                .unwrap()
                .contains("already linked to another tenant")
        );
        let awaited = Item::from([(WAITING.to_owned(), table::b(true))]);
        let r = react(&link, vec![Some(awaited)], Some("tnt_1"));
        assert_eq!((r.degrade, r.fatal), (vec![Flag::LinkHasWaiting], None));
    }

    #[test]
    fn a_checkout_sluice_created_confirms_its_link_on_the_tenant_instead_of_writing_it() {
        let tenant = || Some(Resolved::Tenant("tnt_fixture0001".into()));
        let puts_link = |built: &Built| {
            built.tx.items.iter().any(|i| {
                i.put()
                    .and_then(|p| p.item().get(table::PK))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.starts_with("CUSTOMER#"))
            })
        };
        // Anyone's checkout: the link is written.
        let plain = build(
            "checkout.session.completed.payment",
            tenant(),
            Degrade::default(),
        );
        assert!(puts_link(&plain));
        // Sluice's (marked with the customer it linked): one item fewer, and the tenant's update
        // requires the tenant to name the customer.
        let (mut event, raw) = fixture("checkout.session.completed.payment");
        event.object["metadata"][event::SLUICE_CUSTOMER_KEY] = event.customer().unwrap().into();
        let build_marked = |flags: Degrade| build_event(&event, &raw, tenant(), flags);
        let marked = build_marked(Degrade::default());
        assert!(!puts_link(&marked));
        assert_eq!(marked.tx.items.len(), plain.tx.items.len() - 1);
        let (i, rule) = marked
            .tx
            .on_fail
            .iter()
            .enumerate()
            .find(|(_, r)| matches!(r, OnFail::Tenant(_)))
            .unwrap();
        assert!(matches!(rule, OnFail::Tenant(p) if matches!(**p, OnFail::Linked { .. })));
        let update = marked.tx.items[i].update().unwrap();
        let names = update.expression_attribute_names().unwrap();
        let condition = update.condition_expression().unwrap();
        assert!(
            names.iter().any(
                |(k, v)| v == tenant_attr::STRIPE_CUSTOMER_ID && condition.contains(k.as_str())
            ),
            "{condition}"
        );
        // If the tenant names no customer (or another), the next round links as any checkout.
        let relinked = build_marked(Degrade {
            link_unconfirmed: true,
            ..Degrade::default()
        });
        assert!(puts_link(&relinked));
    }

    #[test]
    fn a_confirmed_link_that_fails_links_next_round_else_the_tenant_rule_applies() {
        let rules = vec![OnFail::Tenant(Box::new(OnFail::Linked {
            customer: "cus_1".into(),
            otherwise: Box::new(OnFail::Fatal("the tenant's currency is not usd".into())),
        }))];
        let tenant = |customer: Option<&str>| {
            let mut item = Item::from([(table::PK.to_owned(), s("TENANT#tnt_1"))]);
            if let Some(c) = customer {
                item.insert(tenant_attr::STRIPE_CUSTOMER_ID.into(), s(c));
            }
            item
        };
        for unlinked in [None, Some("cus_2")] {
            let r = react(&rules, vec![Some(tenant(unlinked))], Some("tnt_1"));
            assert_eq!((r.degrade, r.fatal), (vec![Flag::LinkUnconfirmed], None));
        }
        let r = react(&rules, vec![Some(tenant(Some("cus_1")))], Some("tnt_1"));
        assert!(r.degrade.is_empty());
        assert!(r.fatal.unwrap().contains("currency"));
        let r = react(&rules, vec![Some(Item::new())], Some("tnt_1"));
        assert_eq!(r.fatal.as_deref(), Some("tenant tnt_1 not found"));
    }

    #[test]
    fn a_final_stored_event_is_a_duplicate_naming_the_customer_it_linked() {
        let item = Item::from([
            (attr::STATUS.to_owned(), s("processed")),
            (attr::LINKED_CUSTOMER.to_owned(), s("cus_1")),
        ]);
        assert_eq!(
            on_stored(&item),
            Some((
                Outcome::Duplicate {
                    status: EventStatus::Processed
                },
                Some("cus_1".into())
            ))
        );
        let failed = Item::from([(attr::STATUS.to_owned(), s("failed"))]);
        assert_eq!(on_stored(&failed), None);
    }
}
