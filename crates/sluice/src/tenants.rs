//! The tenant entity (its item's key, attribute names, typed id, [`Tenant`]) and its API keys.
//!
//! The tenant item (`TENANT#{id}` / `PROFILE`) carries everything `GET /v1/account` shows, so an
//! account read is one `GetItem`: balance, budget counters and the subscription summary that
//! Stripe ingress maintains. Writers: `POST /admin/tenants` ([`create_tenant`], the whole item),
//! [`crate::account`] (balance and budget bookkeeping, by update), Stripe ingress (customer link
//! and subscription summary, by update).
//!
//! Invariants: `id` equals the id in the partition key; the `sub_*` attributes are present only
//! with `sub_id`. AWS requests: [`get_tenant`] one `GetItem`; [`create_tenant`],
//! [`add_api_key`] one transaction each; [`revoke_api_key`] one `GetItem` and one transaction.

use aws_sdk_dynamodb::{Client, types::TransactWriteItem};
use serde::Serialize;

use crate::{
    ApiError, auth, clock, ids,
    table::{self, Condition, Item, ItemExt, is_condition_failure_at, n, s},
};

/// Attribute names of the tenant item that more than one module reads or writes.
pub mod attr {
    pub const ID: &str = "id";
    pub const NAME: &str = "name";
    pub const CURRENCY: &str = "currency";
    pub const CREATED_AT: &str = "created_at";
    /// Credits, minor units.
    pub const BALANCE_MINOR: &str = "balance_minor";
    /// Monthly budget, minor units (absent = no budget).
    pub const MONTHLY_BUDGET_MINOR: &str = "monthly_budget_minor";
    /// `YYYY-MM` the usage counter belongs to.
    pub const BUDGET_MONTH: &str = "budget_month";
    /// Usage debited in `budget_month`.
    pub const USED_THIS_MONTH_MINOR: &str = "used_this_month_minor";
    /// Month in which `budget.warning` was published (reset by a top-up).
    pub const BUDGET_WARNING_SENT: &str = "budget_warning_sent";
    /// Month in which `budget.exceeded` was published (reset by a top-up).
    pub const BUDGET_EXCEEDED_SENT: &str = "budget_exceeded_sent";
    /// Stripe customer linked to the tenant.
    pub const STRIPE_CUSTOMER_ID: &str = "stripe_customer_id";
    pub const SUB_ID: &str = "sub_id";
    pub const SUB_STATUS: &str = "sub_status";
    pub const SUB_PRICE_ID: &str = "sub_price_id";
    pub const SUB_CURRENT_PERIOD_END: &str = "sub_current_period_end";
    pub const SUB_CANCEL_AT_PERIOD_END: &str = "sub_cancel_at_period_end";
}

/// A tenant id, `tnt_…`. The authenticated caller of a `/v1` request is one (the auth layer puts
/// it in the request extensions); its field stays public so handlers can destructure
/// `Extension(TenantId(id))`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

crate::prefixed_id!(TenantId, "tnt");

/// The key map of a tenant item.
pub fn key(tenant_id: &str) -> Item {
    table::key(table::tenant_pk(tenant_id), table::TENANT_PROFILE_SK)
}

/// Default currency of a tenant created without one.
pub const DEFAULT_CURRENCY: &str = "usd";

/// A tenant as stored.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub currency: String,
    pub created_at: i64,
    pub balance_minor: i64,
    pub monthly_budget_minor: Option<i64>,
    pub budget_month: Option<String>,
    pub used_this_month_minor: i64,
    pub stripe_customer_id: Option<String>,
    pub subscription: Option<SubscriptionSummary>,
}

/// The tenant's current subscription as Stripe ingress last recorded it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionSummary {
    pub id: String,
    pub status: String,
    pub price_id: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

impl Tenant {
    /// Reads a tenant item; `None` without a valid `id`. Other attributes that are missing read
    /// as empty/0/`usd`, as the API has always shown them.
    pub fn from_item(item: &Item) -> Option<Tenant> {
        Some(Tenant {
            id: TenantId(item.get_s(attr::ID)?.to_owned()),
            name: item.get_s(attr::NAME).unwrap_or_default().to_owned(),
            currency: item
                .get_s(attr::CURRENCY)
                .unwrap_or(DEFAULT_CURRENCY)
                .to_owned(),
            created_at: item.get_i64(attr::CREATED_AT).unwrap_or_default(),
            balance_minor: item.get_i64(attr::BALANCE_MINOR).unwrap_or_default(),
            monthly_budget_minor: item.get_i64(attr::MONTHLY_BUDGET_MINOR),
            budget_month: item.get_s(attr::BUDGET_MONTH).map(String::from),
            used_this_month_minor: item
                .get_i64(attr::USED_THIS_MONTH_MINOR)
                .unwrap_or_default(),
            stripe_customer_id: item.get_s(attr::STRIPE_CUSTOMER_ID).map(String::from),
            subscription: item.get_s(attr::SUB_ID).map(|id| SubscriptionSummary {
                id: id.to_owned(),
                status: item
                    .get_s(attr::SUB_STATUS)
                    .unwrap_or("incomplete")
                    .to_owned(),
                price_id: item.get_s(attr::SUB_PRICE_ID).map(String::from),
                current_period_end: item.get_i64(attr::SUB_CURRENT_PERIOD_END),
                cancel_at_period_end: item
                    .get_bool(attr::SUB_CANCEL_AT_PERIOD_END)
                    .unwrap_or(false),
            }),
        })
    }

    /// The whole item (key included), as [`create_tenant`] writes it. The usage bookkeeping that
    /// [`crate::account`] adds by update (alert months, headroom) is not part of it.
    pub fn to_item(&self) -> Item {
        let mut item = key(&self.id);
        item.insert(attr::ID.into(), s(self.id.as_str()));
        item.insert(attr::NAME.into(), s(&self.name));
        item.insert(attr::CURRENCY.into(), s(&self.currency));
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(attr::BALANCE_MINOR.into(), n(self.balance_minor));
        item.insert(
            attr::USED_THIS_MONTH_MINOR.into(),
            n(self.used_this_month_minor),
        );
        if let Some(budget) = self.monthly_budget_minor {
            item.insert(attr::MONTHLY_BUDGET_MINOR.into(), n(budget));
        }
        if let Some(month) = &self.budget_month {
            item.insert(attr::BUDGET_MONTH.into(), s(month));
        }
        if let Some(customer) = &self.stripe_customer_id {
            item.insert(attr::STRIPE_CUSTOMER_ID.into(), s(customer));
        }
        if let Some(sub) = &self.subscription {
            item.insert(attr::SUB_ID.into(), s(&sub.id));
            item.insert(attr::SUB_STATUS.into(), s(&sub.status));
            if let Some(price) = &sub.price_id {
                item.insert(attr::SUB_PRICE_ID.into(), s(price));
            }
            if let Some(end) = sub.current_period_end {
                item.insert(attr::SUB_CURRENT_PERIOD_END.into(), n(end));
            }
            item.insert(
                attr::SUB_CANCEL_AT_PERIOD_END.into(),
                table::b(sub.cancel_at_period_end),
            );
        }
        item
    }
}

/// The largest `monthly_budget_minor`: 10^12 minor units (ten billion in a two-decimal
/// currency), the same bound as one usage debit. Far beyond any real budget, and small enough
/// that the threshold arithmetic ([`crate::account::warning_threshold`]) and DynamoDB's numbers
/// never come near `i64`'s limits.
pub const MAX_MONTHLY_BUDGET_MINOR: i64 = 1_000_000_000_000;

/// Checks a requested `monthly_budget_minor` (every entry point that sets one calls this):
/// absent, or 1 ..= [`MAX_MONTHLY_BUDGET_MINOR`]; otherwise a `422` naming the field.
pub fn validate_monthly_budget(budget: Option<i64>) -> Result<Option<i64>, ApiError> {
    match budget {
        Some(b) if !(1..=MAX_MONTHLY_BUDGET_MINOR).contains(&b) => {
            Err(ApiError::invalid_field(format!(
                "`monthly_budget_minor` must be a positive integer (minor units) of at most \
                 {MAX_MONTHLY_BUDGET_MINOR}"
            )))
        }
        _ => Ok(budget),
    }
}

/// What `POST /admin/tenants` asks for.
#[derive(Clone, Debug)]
pub struct NewTenant {
    pub name: String,
    pub monthly_budget_minor: Option<i64>,
    pub currency: String,
}

/// A freshly issued API key: the plaintext exists only in this value.
#[derive(Debug, Serialize)]
pub struct IssuedKey {
    pub key_id: String,
    pub api_key: String,
}

fn api_key_items(table_name: &str, tenant_id: &str) -> (IssuedKey, [TransactWriteItem; 2]) {
    let key_id = ids::new_id("key");
    let api_key = ids::new_api_key();
    let digest_hex = hex::encode(auth::digest(&api_key));
    let now = clock::now_epoch();
    let lookup = table::put(
        table_name,
        Item::from([
            (table::PK.into(), s(table::api_key_pk(&digest_hex))),
            (table::SK.into(), s(table::API_KEY_SK)),
            ("tenant_id".into(), s(tenant_id)),
            ("key_id".into(), s(&key_id)),
            ("created_at".into(), n(now)),
        ]),
        Some(Condition::new("attribute_not_exists(pk)")),
    );
    let owner_ref = table::put(
        table_name,
        Item::from([
            (table::PK.into(), s(table::tenant_pk(tenant_id))),
            (table::SK.into(), s(table::tenant_api_key_sk(&key_id))),
            ("digest".into(), s(digest_hex)),
            ("created_at".into(), n(now)),
        ]),
        None,
    );
    (IssuedKey { key_id, api_key }, [lookup, owner_ref])
}

/// Creates a tenant and its first API key in one transaction.
pub async fn create_tenant(
    db: &Client,
    table_name: &str,
    new: NewTenant,
) -> Result<(Tenant, IssuedKey), ApiError> {
    let monthly_budget_minor = validate_monthly_budget(new.monthly_budget_minor)?;
    let tenant = Tenant {
        id: TenantId::new(),
        name: new.name,
        currency: new.currency,
        created_at: clock::now_epoch(),
        balance_minor: 0,
        monthly_budget_minor,
        budget_month: None,
        used_this_month_minor: 0,
        stripe_customer_id: None,
        subscription: None,
    };
    let id = tenant.id.clone();
    let put = table::put(
        table_name,
        tenant.to_item(),
        Some(Condition::new("attribute_not_exists(pk)")),
    );
    let (issued, [lookup, owner_ref]) = api_key_items(table_name, &id);
    db.transact_write_items()
        .transact_items(put)
        .transact_items(lookup)
        .transact_items(owner_ref)
        .send()
        .await?;
    Ok((tenant, issued))
}

/// Reads a tenant; `None` if absent.
pub async fn get_tenant(
    db: &Client,
    table_name: &str,
    tenant_id: &str,
) -> Result<Option<Tenant>, ApiError> {
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(key(tenant_id)))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out.item().and_then(Tenant::from_item))
}

/// Issues another API key for an existing tenant (`404` if there is none).
pub async fn add_api_key(
    db: &Client,
    table_name: &str,
    tenant_id: &str,
) -> Result<IssuedKey, ApiError> {
    let (issued, [lookup, owner_ref]) = api_key_items(table_name, tenant_id);
    let tenant_exists = table::condition_check(
        table_name,
        key(tenant_id),
        Condition::new("attribute_exists(pk)"),
    );
    let result = db
        .transact_write_items()
        .transact_items(tenant_exists)
        .transact_items(lookup)
        .transact_items(owner_ref)
        .send()
        .await;
    match result {
        Ok(_) => Ok(issued),
        Err(err) if is_condition_failure_at(&err, 0) => Err(ApiError::not_found("tenant")),
        Err(err) => Err(err.into()),
    }
}

/// Revokes one API key of a tenant (`404` if the tenant has no such key); returns the key's
/// SHA-256 digest (hex), so the caller can forget it in its [`auth::ApiKeyCache`].
pub async fn revoke_api_key(
    db: &Client,
    table_name: &str,
    tenant_id: &str,
    key_id: &str,
) -> Result<String, ApiError> {
    let owner_key = table::key(
        table::tenant_pk(tenant_id),
        table::tenant_api_key_sk(key_id),
    );
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(owner_key.clone()))
        .consistent_read(true)
        .send()
        .await?;
    let Some(digest_hex) = out.item().and_then(|i| i.get_s("digest")).map(String::from) else {
        return Err(ApiError::not_found("api key"));
    };
    let delete_ref = table::delete(
        table_name,
        owner_key,
        Some(Condition::new("attribute_exists(pk)")),
    );
    let delete_lookup = table::delete(
        table_name,
        table::key(table::api_key_pk(&digest_hex), table::API_KEY_SK),
        None,
    );
    let result = db
        .transact_write_items()
        .transact_items(delete_ref)
        .transact_items(delete_lookup)
        .send()
        .await;
    match result {
        Ok(_) => Ok(digest_hex),
        // Revoked concurrently by someone else: the key is gone either way.
        Err(err) if is_condition_failure_at(&err, 0) => Err(ApiError::not_found("api key")),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            id: TenantId::parse("tnt_abc").unwrap(),
            name: "Acme".into(),
            currency: "eur".into(),
            created_at: 5,
            balance_minor: 700,
            monthly_budget_minor: None,
            budget_month: None,
            used_this_month_minor: 0,
            stripe_customer_id: None,
            subscription: None,
        }
    }

    #[test]
    fn a_tenant_round_trips_through_its_item() {
        let bare = tenant();
        let item = bare.to_item();
        assert_eq!(item.get_s(table::PK), Some("TENANT#tnt_abc"));
        assert_eq!(item.get_s(table::SK), Some(table::TENANT_PROFILE_SK));
        assert_eq!(Tenant::from_item(&item), Some(bare));
        let full = Tenant {
            monthly_budget_minor: Some(1000),
            budget_month: Some("2026-01".into()),
            used_this_month_minor: 12,
            stripe_customer_id: Some("cus_1".into()),
            subscription: Some(SubscriptionSummary {
                id: "sub_1".into(),
                status: "active".into(),
                price_id: Some("price_1".into()),
                current_period_end: Some(99),
                cancel_at_period_end: true,
            }),
            ..tenant()
        };
        assert_eq!(Tenant::from_item(&full.to_item()), Some(full));
    }

    #[test]
    fn a_new_tenant_item_has_exactly_its_creation_attributes() {
        let mut names: Vec<_> = tenant().to_item().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "balance_minor",
                "created_at",
                "currency",
                "id",
                "name",
                "pk",
                "sk",
                "used_this_month_minor"
            ]
        );
    }

    #[test]
    fn an_item_without_an_id_is_not_a_tenant() {
        let mut item = tenant().to_item();
        item.remove(attr::ID);
        assert_eq!(Tenant::from_item(&item), None);
    }

    #[test]
    fn tenant_ids_are_parsed_once() {
        assert_eq!(TenantId::parse("tnt_abc").unwrap().as_str(), "tnt_abc");
        assert!(TenantId::parse("ep_abc").is_none());
        assert!(TenantId::parse(TenantId::new().as_str()).is_some());
    }

    #[test]
    fn a_monthly_budget_is_positive_and_bounded() {
        assert_eq!(validate_monthly_budget(None).unwrap(), None);
        assert_eq!(validate_monthly_budget(Some(1)).unwrap(), Some(1));
        assert_eq!(
            validate_monthly_budget(Some(MAX_MONTHLY_BUDGET_MINOR)).unwrap(),
            Some(MAX_MONTHLY_BUDGET_MINOR)
        );
        for bad in [0, -5, MAX_MONTHLY_BUDGET_MINOR + 1, i64::MAX] {
            let err = validate_monthly_budget(Some(bad)).unwrap_err();
            assert!(
                format!("{err:?}").contains("monthly_budget_minor"),
                "{bad}: {err:?}"
            );
        }
    }
}
