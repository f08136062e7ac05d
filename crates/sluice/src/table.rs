//! The single DynamoDB table: key shapes and attribute helpers.
//!
//! One table (`TABLE_NAME`) with `pk`/`sk`, two indexes — `gsi1` (`gsi1pk`/`gsi1sk`, outbound
//! events) and `gsi2` (`gsi2pk`/`gsi2sk`, Stripe events) — and TTL on `ttl`
//! (epoch seconds). DynamoDB removes expired items lazily, so every reader of an item that can
//! expire also compares `ttl` with the clock. Item shapes, by owner:
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | tenant | `TENANT#{tnt}` | `PROFILE` | balance, budget, subscription summary; `budget_warning_headroom_minor`/`budget_exceeded_headroom_minor` (see `account`) |
//! | api key (lookup) | `APIKEY#{sha256 hex}` | `APIKEY` | `tenant_id`, `key_id` |
//! | api key (owner ref) | `TENANT#{tnt}` | `APIKEY#{key}` | `digest`, to revoke |
//! | idempotency record | `IDEM#{scope}#{key}` | `IDEM` | `status` (`in_progress`/`completed`), `fingerprint`, `lock_token`, `lock_expires_at` (ms), `response_*` (`response_sealed` when the body is KMS-sealed), `ttl`; see `idempotency` |
//! | webhook endpoint | `TENANT#{tnt}` | `ENDPOINT#{ep}` | owned by `endpoints`: `id`, `url`, `event_types` (L of S, empty = all), `enabled`, `secrets` (L of M `{ciphertext: B, created_at: N, expires_at?: N}`, newest first), `secrets_version` (N, conditions every rewrite of `secrets`), `failing_since?`, `disabled_reason?`, `disabled_at?`, `description?`, `created_at`, `updated_at` |
//! | provider secret | `TENANT#{tnt}` | `SECRET#{provider}` | `provider`, `ciphertext` (B), `hint`, `created_at`, `updated_at` |
//! | ledger entry | `TENANT#{tnt}` | `LEDGER#{created_ms:013}#{led}` | `id`, `amount_minor` (signed: credit > 0, debit < 0), `currency`, `kind` (`credit`/`debit`/`payment`), `description`, `source`, `created_at`; API debits carry no `currency` (the tenant's) |
//! | money key | `MONEY#{pi_… or in_…}` | `MONEY` | `ledger_id`: a conditional put makes one payment credit once |
//! | outbound event | `TENANT#{tnt}` | `EVENT#{msg}` | owned by `outbound`: `id`, `type`, `data` (JSON text), `created_at`, `endpoint_ids`, `ttl` (30 d); `gsi1pk` = `EVENTS#{tnt}`, `gsi1sk` = `{created_at:010}#{msg}` (listed newest first, see `event_list`) |
//! | delivery | `TENANT#{tnt}` | `DELIVERY#{msg}#{ep}` | owned by `outbound`: `status` (`pending`/`succeeded`/`failed`/`endpoint_disabled`), `generation` (bumped by replay), `succeeded_generation?`, `attempt_count`, `attempts` (L of M, shape in `outbound`), `next_attempt_at?`, `last_attempt_at?`, `lease_until?`/`lease_id?` (held by the egress sender while a request is in flight), `ttl` (30 d) |
//! | replay outbox | `TENANT#{tnt}` | `OUTBOX#{rdl}` | `kind` = `redeliver`, `id`, `targets` (L of M `{event_id, endpoint_id, generation}`), `created_at`, `ttl` (2 d); written with the generation bumps it announces, relayed from the stream (see `replay`) |
//! | usage counter | `TENANT#{tnt}` | `USAGE#total#{YYYY-MM-DD}` or `USAGE#dim#{key}#{YYYY-MM-DD}#{value}` | `usage_minor`, `credits_minor` (totals only), `day`, `value` (dimension only), `ttl` (400 d); `ADD`ed in the debit's or credit's transaction (see `account::usage`) |
//! | Stripe event | `STRIPE#{evt}` | `EVENT` | `type`, `status`, `created`, `received_ms`, `payload` (gzip B, or S when gzip is not smaller; `payload_encoding`), `attempts`, `error?`, `note?`, `tenant_id?`, `customer_id?`, `waiting_sk?`, `linked_customer?`, `notifications?` (msg ids); `gsi2pk` = `STRIPE_EVENTS`, `gsi2sk` = `{received_ms:013}#{evt}`; `ttl` (see `stripe::store`) |
//! | customer link | `CUSTOMER#{cus}` | `CUSTOMER` | `tenant_id`, `event_id`, `linked_at`; before the link only `waiting` = true (unmatched events wait for it) |
//! | unmatched event | `UNMATCHED#{cus}` | `{received_ms:013}#{evt}` | `event_id`, `ttl`: waits for the customer link |
//! | subscription | `SUB#{sub}` | `SUB` | `tenant_id`, `status`, `rank`, `event_created`, `event_id` (ordering guard), `price_id?`, `current_period_end?`, `cancel_at_period_end` |
//! | portal link token | `PORTALTOKEN#{sha256 hex}` | `PORTALTOKEN` | `tenant_id`, `ttl`: a one-time sign-in link, consumed by one conditional delete (see the API's `portal::access`) |
//! | portal session | `PORTALSESSION#{sha256 hex}` | `PORTALSESSION` | `tenant_id`, `ttl`: the portal cookie's session; sign-out deletes it |
//! | statistics | `STATS#{YYYY-MM-DDTHH}` | `STATS#{shard 0..4}` | counters, `ADD`ed in the same writes as what they count; a random shard per write spreads the hot item |
//!
//! Messages on the delivery queue are `sluice::fanout::DeliveryMessage` JSON, tagged by `kind`:
//! `{"kind":"deliver","tenant_id","event_id","endpoint_id","generation"}` (one per event and
//! endpoint). They are sent *after* the delivery item they name is written: by the outbox relay
//! reading the table's stream (an outbound event item is the outbox entry, written in its cause's
//! transaction; a replay's `OUTBOX#` item is written with its generation bumps). See `fanout`
//! and `replay`.
//!
//! Every key shape of the table has its builder in this file (the endpoint's is re-exported
//! from `endpoints`, which owns that item). The write helpers (update-expression builder,
//! transaction items, cancellation reasons) are in `table/write.rs`, re-exported here.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

mod write;
pub use write::{
    Cancellation, Clauses, Condition, Expr, ItemOutcome, Placeholders, TxFailure, UpdateBuilder,
    cancellation_reasons, classify, condition_check, delete, describe_failure,
    is_condition_failure_at, item_outcome, put, read_cancellation,
};

/// Partition key attribute.
pub const PK: &str = "pk";
/// Sort key attribute.
pub const SK: &str = "sk";
/// The index of outbound events by tenant and time (projects ALL; `event_list`).
pub const GSI1: &str = "gsi1";
/// `gsi1` partition key attribute.
pub const GSI1PK: &str = "gsi1pk";
/// `gsi1` sort key attribute.
pub const GSI1SK: &str = "gsi1sk";
/// The index of Stripe events by arrival (projects the listed attributes only; `stripe::store`).
pub const GSI2: &str = "gsi2";
/// `gsi2` partition key attribute.
pub const GSI2PK: &str = "gsi2pk";
/// `gsi2` sort key attribute.
pub const GSI2SK: &str = "gsi2sk";
/// TTL attribute (epoch seconds).
pub const TTL: &str = "ttl";

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// `TENANT#{id}`.
pub fn tenant_pk(tenant_id: &str) -> String {
    format!("TENANT#{tenant_id}")
}
/// Sort key of the tenant's own record.
pub const TENANT_PROFILE_SK: &str = "PROFILE";
/// `APIKEY#{digest hex}`.
pub fn api_key_pk(digest_hex: &str) -> String {
    format!("APIKEY#{digest_hex}")
}
/// Sort key of an API key lookup item.
pub const API_KEY_SK: &str = "APIKEY";
/// `APIKEY#{key id}` under the tenant.
pub fn tenant_api_key_sk(key_id: &str) -> String {
    format!("APIKEY#{key_id}")
}

/// `ENDPOINT#{ep}` under the tenant; defined with the rest of the endpoint in
/// [`crate::endpoints`].
pub use crate::endpoints::sk as endpoint_sk;
/// `SECRET#{provider}` under the tenant.
pub fn provider_secret_sk(provider: &str) -> String {
    format!("SECRET#{provider}")
}
/// `LEDGER#{created_ms:013}#{led}` under the tenant: sorts oldest → newest.
pub fn ledger_sk(created_ms: i64, ledger_id: &str) -> String {
    format!("LEDGER#{created_ms:013}#{ledger_id}")
}
/// `MONEY#{pi_… or in_…}`.
pub fn money_pk(stripe_object_id: &str) -> String {
    format!("MONEY#{stripe_object_id}")
}
/// `EVENT#{msg}` under the tenant.
pub fn event_sk(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}
/// `DELIVERY#{msg}#{ep}` under the tenant.
pub fn delivery_sk(event_id: &str, endpoint_id: &str) -> String {
    format!("DELIVERY#{event_id}#{endpoint_id}")
}
/// `OUTBOX#{rdl}` under the tenant: a replay's outbox item (see `replay`).
pub fn outbox_sk(redelivery_id: &str) -> String {
    format!("OUTBOX#{redelivery_id}")
}
/// `STRIPE#{evt}`.
pub fn stripe_event_pk(stripe_event_id: &str) -> String {
    format!("STRIPE#{stripe_event_id}")
}
/// `CUSTOMER#{cus}`.
pub fn customer_pk(customer_id: &str) -> String {
    format!("CUSTOMER#{customer_id}")
}
/// `UNMATCHED#{cus}`.
pub fn unmatched_pk(customer_id: &str) -> String {
    format!("UNMATCHED#{customer_id}")
}
/// `SUB#{sub}`.
pub fn subscription_pk(subscription_id: &str) -> String {
    format!("SUB#{subscription_id}")
}
/// `PORTALTOKEN#{digest hex}` (sort key the same constant as its prefix: `PORTALTOKEN`).
pub fn portal_token_pk(digest_hex: &str) -> String {
    format!("PORTALTOKEN#{digest_hex}")
}
/// Sort key of a portal link token.
pub const PORTAL_TOKEN_SK: &str = "PORTALTOKEN";
/// `PORTALSESSION#{digest hex}`.
pub fn portal_session_pk(digest_hex: &str) -> String {
    format!("PORTALSESSION#{digest_hex}")
}
/// Sort key of a portal session.
pub const PORTAL_SESSION_SK: &str = "PORTALSESSION";
/// `STATS#{YYYY-MM-DDTHH}`.
pub fn stats_pk(hour: &str) -> String {
    format!("STATS#{hour}")
}
/// Sort key of one shard of the hourly statistics item.
pub fn stats_sk(shard: u8) -> String {
    format!("STATS#{shard}")
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
/// A number attribute.
pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
/// A boolean attribute.
pub fn b(v: bool) -> AttributeValue {
    AttributeValue::Bool(v)
}
/// A binary attribute.
pub fn bin(v: impl Into<Vec<u8>>) -> AttributeValue {
    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(v))
}
/// A list of strings (L of S).
pub fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.as_str())).collect())
}
/// The key map `{pk, sk}`.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// Typed reads of item attributes; a missing or mistyped attribute reads as `None`.
pub trait ItemExt {
    fn get_s(&self, name: &str) -> Option<&str>;
    fn get_i64(&self, name: &str) -> Option<i64>;
    fn get_bool(&self, name: &str) -> Option<bool>;
    fn get_bin(&self, name: &str) -> Option<&[u8]>;
    fn get_string_list(&self, name: &str) -> Vec<String>;
}

impl ItemExt for Item {
    fn get_s(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    }
    fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    }
    fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name).and_then(|v| v.as_bool().ok()).copied()
    }
    fn get_bin(&self, name: &str) -> Option<&[u8]> {
        self.get(name)
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref())
    }
    fn get_string_list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(AttributeValue::L(list)) => {
                list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
            }
            Some(AttributeValue::Ss(set)) => set.clone(),
            _ => Vec::new(),
        }
    }
}

/// Every item of partition `pk` whose sort key starts with `sk_prefix`, all pages, strongly
/// consistent (a tenant's endpoints, an event's deliveries, …).
pub async fn query_prefix(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    pk: &str,
    sk_prefix: &str,
) -> Result<Vec<Item>, crate::ApiError> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = db
            .query()
            .table_name(table_name)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(sk_prefix))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

/// True if the item's `ttl` has passed: DynamoDB may keep expired items for days.
pub fn is_expired(item: &Item, now_epoch: i64) -> bool {
    item.get_i64(TTL).is_some_and(|ttl| ttl <= now_epoch)
}

/// A page position (DynamoDB's `LastEvaluatedKey`, string attributes only) as an opaque cursor:
/// base64url of its JSON. One format for every paged listing that hands one out.
pub fn encode_key_cursor(key: &Item) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let map: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .filter_map(|(k, v)| {
            v.as_s()
                .ok()
                .map(|s| (k.clone(), serde_json::Value::String(s.clone())))
        })
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::Value::Object(map).to_string())
}

/// The key a cursor of [`encode_key_cursor`] names, if it has exactly the attributes `expected`
/// (a cursor made up, or taken from another listing, is `None`).
pub fn decode_key_cursor(cursor: &str, expected: &[&str]) -> Option<Item> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    let item: Item = map
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, s(v))))
        .collect();
    (item.len() == expected.len() && expected.iter().all(|k| item.contains_key(*k))).then_some(item)
}
