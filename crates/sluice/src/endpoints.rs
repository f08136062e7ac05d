//! The webhook endpoint entity: its item's key, attribute names, typed id and the matching rule.
//!
//! Item `TENANT#{tnt}` / `ENDPOINT#{ep}` (see the table in [`crate::table`]). Three readers share
//! it: the API's `/v1/endpoints` routes (which write it), the fan-out ([`crate::fanout`], which
//! picks the endpoints an event goes to) and the egress function (which sends, records failure
//! streaks and disables). The signing secrets in the same item (`secrets`, `secrets_version`) are
//! read and written by [`crate::sealing`]; only their attribute names live here.
//!
//! Invariants: `id` equals the id in the sort key; an empty `event_types` list subscribes to every
//! type; `failing_since` is present only during a failure streak; `disabled_reason` only while
//! disabled. Pure code: no AWS request is made here.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::table::{self, Item, ItemExt, b, n, s};

/// Attribute names of the endpoint item.
pub mod attr {
    pub const ID: &str = "id";
    pub const URL: &str = "url";
    pub const DESCRIPTION: &str = "description";
    /// L of S; empty: every event type.
    pub const EVENT_TYPES: &str = "event_types";
    pub const ENABLED: &str = "enabled";
    /// Epoch seconds of the first failure of the current streak (set by the egress function).
    pub const FAILING_SINCE: &str = "failing_since";
    pub const DISABLED_REASON: &str = "disabled_reason";
    /// Epoch seconds; written by the egress function when it disables the endpoint.
    pub const DISABLED_AT: &str = "disabled_at";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    /// The sealed signing secrets, newest first (shape and use in [`crate::sealing`]).
    pub const SECRETS: &str = "secrets";
    /// Counts rewrites of `secrets`: every rewrite is conditioned on it, so concurrent rotations
    /// (or a rotation and a rewrap) never lose a secret.
    pub const SECRETS_VERSION: &str = "secrets_version";
}

/// Prefix of every endpoint's sort key (a query for all of a tenant's endpoints uses it).
pub const SK_PREFIX: &str = "ENDPOINT#";

/// `ENDPOINT#{ep}` under the tenant.
pub fn sk(endpoint_id: &str) -> String {
    format!("{SK_PREFIX}{endpoint_id}")
}

/// The key map of an endpoint item.
pub fn key(tenant_id: &str, endpoint_id: &str) -> Item {
    table::key(table::tenant_pk(tenant_id), sk(endpoint_id))
}

/// An endpoint id, `ep_…`, checked once where it enters (a path, an item).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointId(String);

crate::prefixed_id!(EndpointId, "ep");

/// An endpoint item without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; empty: every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it is disabled (by the tenant, a `410 Gone`, or failing too long).
    pub disabled_reason: Option<String>,
    /// Epoch seconds of the first failure of the current streak.
    pub failing_since: Option<i64>,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds.
    pub updated_at: i64,
}

impl Endpoint {
    /// Reads an endpoint item; `None` without a valid `id`. Other attributes that are missing
    /// read as empty/false/0, as the API has always shown them.
    pub fn from_item(item: &Item) -> Option<Self> {
        Some(Self {
            id: EndpointId::parse(item.get_s(attr::ID)?)?,
            url: item.get_s(attr::URL).unwrap_or_default().to_owned(),
            description: item.get_s(attr::DESCRIPTION).map(str::to_owned),
            event_types: item.get_string_list(attr::EVENT_TYPES),
            enabled: item.get_bool(attr::ENABLED).unwrap_or(false),
            disabled_reason: item.get_s(attr::DISABLED_REASON).map(str::to_owned),
            failing_since: item.get_i64(attr::FAILING_SINCE),
            created_at: item.get_i64(attr::CREATED_AT).unwrap_or_default(),
            updated_at: item.get_i64(attr::UPDATED_AT).unwrap_or_default(),
        })
    }

    /// The item under `tenant_id` (key included), without `secrets`/`secrets_version`, which
    /// the caller adds through [`crate::sealing`].
    pub fn to_item(&self, tenant_id: &str) -> Item {
        let mut item = key(tenant_id, self.id.as_str());
        item.insert(attr::ID.into(), s(self.id.as_str()));
        item.insert(attr::URL.into(), s(&self.url));
        item.insert(
            attr::EVENT_TYPES.into(),
            event_types_value(&self.event_types),
        );
        item.insert(attr::ENABLED.into(), b(self.enabled));
        item.insert(attr::CREATED_AT.into(), n(self.created_at));
        item.insert(attr::UPDATED_AT.into(), n(self.updated_at));
        if let Some(d) = &self.description {
            item.insert(attr::DESCRIPTION.into(), s(d));
        }
        if let Some(r) = &self.disabled_reason {
            item.insert(attr::DISABLED_REASON.into(), s(r));
        }
        if let Some(t) = self.failing_since {
            item.insert(attr::FAILING_SINCE.into(), n(t));
        }
        item
    }

    /// True if an event of `event_type` goes to this endpoint: it is enabled and subscribed to
    /// the type (an empty `event_types` list subscribes to every type).
    pub fn accepts(&self, event_type: &str) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// The attribute value of an `event_types` list (L of S).
pub fn event_types_value(types: &[String]) -> AttributeValue {
    table::string_list(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(enabled: bool, types: &[&str]) -> Endpoint {
        Endpoint {
            id: EndpointId::parse("ep_abc").unwrap(),
            url: "https://example.com/h".into(),
            description: None,
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            enabled,
            disabled_reason: None,
            failing_since: None,
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn an_empty_type_list_accepts_every_type() {
        assert!(endpoint(true, &[]).accepts("invoice.paid"));
        assert!(endpoint(true, &["invoice.paid"]).accepts("invoice.paid"));
        assert!(!endpoint(true, &["credits.added"]).accepts("invoice.paid"));
    }

    #[test]
    fn a_disabled_endpoint_accepts_nothing() {
        assert!(!endpoint(false, &[]).accepts("invoice.paid"));
        assert!(!endpoint(false, &["invoice.paid"]).accepts("invoice.paid"));
    }

    #[test]
    fn ids_are_parsed_once() {
        assert_eq!(EndpointId::parse("ep_abc").unwrap().as_str(), "ep_abc");
        assert!(EndpointId::parse("tnt_abc").is_none());
        assert!(EndpointId::parse("ep_a#b").is_none());
        assert!(EndpointId::parse(EndpointId::new().as_str()).is_some());
    }

    #[test]
    fn an_endpoint_round_trips_through_its_item() {
        let mut e = endpoint(false, &["a.b", "c.d"]);
        e.description = Some("billing".into());
        e.disabled_reason = Some("gone".into());
        e.failing_since = Some(7);
        let item = e.to_item("tnt_x");
        assert_eq!(item.get_s(table::PK), Some("TENANT#tnt_x"));
        assert_eq!(item.get_s(table::SK), Some("ENDPOINT#ep_abc"));
        assert_eq!(Endpoint::from_item(&item), Some(e));
        assert_eq!(
            Endpoint::from_item(&endpoint(true, &[]).to_item("t"))
                .unwrap()
                .description,
            None
        );
    }

    #[test]
    fn an_item_without_a_valid_id_is_not_an_endpoint() {
        let mut item = endpoint(true, &[]).to_item("tnt_x");
        item.insert(attr::ID.into(), s("nope"));
        assert_eq!(Endpoint::from_item(&item), None);
        item.remove(attr::ID);
        assert_eq!(Endpoint::from_item(&item), None);
    }
}
