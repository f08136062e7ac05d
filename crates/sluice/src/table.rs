//! The single DynamoDB table: key shapes and attribute helpers.
//!
//! One table (`TABLE_NAME`) with `pk`/`sk`, one index `gsi1` (`gsi1pk`/`gsi1sk`) and TTL on `ttl`
//! (epoch seconds). DynamoDB removes expired items lazily, so every reader of an item that can
//! expire also compares `ttl` with the clock. Item shapes, by owner:
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | tenant | `TENANT#{tnt}` | `PROFILE` | balance, budget, subscription summary |
//! | api key (lookup) | `APIKEY#{sha256 hex}` | `APIKEY` | `tenant_id`, `key_id` |
//! | api key (owner ref) | `TENANT#{tnt}` | `APIKEY#{key}` | `digest`, to revoke |
//! | idempotency record | `IDEM#{scope}#{key}` | `IDEM` | see `idempotency` |
//!
//! Modules that add items document them next to their code and add their key builders here, so
//! that every key shape of the table is in this one file.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// Partition key attribute.
pub const PK: &str = "pk";
/// Sort key attribute.
pub const SK: &str = "sk";
/// The one global secondary index.
pub const GSI1: &str = "gsi1";
/// `gsi1` partition key attribute.
pub const GSI1PK: &str = "gsi1pk";
/// `gsi1` sort key attribute.
pub const GSI1SK: &str = "gsi1sk";
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

/// True if the item's `ttl` has passed: DynamoDB may keep expired items for days.
pub fn is_expired(item: &Item, now_epoch: i64) -> bool {
    item.get_i64(TTL).is_some_and(|ttl| ttl <= now_epoch)
}
