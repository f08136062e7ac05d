//! Credentials: tenant API keys (`Authorization: Bearer`) and the admin key (`X-Admin-Key`).
//!
//! Keys are stored and configured only as SHA-256 digests. A tenant key is found by its digest
//! (a lookup by hash reveals nothing about other keys); the admin key digest is compared in
//! constant time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::Client;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    ApiError,
    table::{self, ItemExt},
};

/// Header carrying the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time check of a presented admin key against the configured digest.
pub fn admin_key_matches(presented: &str, expected_digest: &[u8; 32]) -> bool {
    digest(presented).ct_eq(expected_digest).into()
}

/// The bearer token of an `Authorization` header, if well-formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller of a `/v1` request, put in the request extensions by the auth layer
/// (the tenant's id type, owned by [`crate::tenants`]).
pub use crate::tenants::TenantId;

/// Finds the tenant owning `api_key`; `None` for an unknown or revoked key. One `GetItem`.
pub async fn tenant_for_api_key(
    db: &Client,
    table_name: &str,
    api_key: &str,
) -> Result<Option<TenantId>, ApiError> {
    tenant_for_digest(db, table_name, &digest(api_key)).await
}

async fn tenant_for_digest(
    db: &Client,
    table_name: &str,
    key_digest: &[u8; 32],
) -> Result<Option<TenantId>, ApiError> {
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(table::key(
            table::api_key_pk(&hex::encode(key_digest)),
            table::API_KEY_SK,
        )))
        .send()
        .await?;
    Ok(out
        .item()
        .and_then(|item| item.get_s("tenant_id"))
        .map(|id| TenantId(id.to_owned())))
}

/// API-key lookups a warm function remembers for `API_KEY_CACHE_SECS`, as API Gateway caches
/// authorizer results: without it every `/v1` request would cost one more DynamoDB read, and an
/// idempotent replay two requests instead of one. Only keys that exist are remembered (a new key
/// works at once); a revoked key stops working on other warm instances within the TTL, on the
/// instance that revoked it at once. Entries are keyed by the key's SHA-256 digest, never the key.
#[derive(Debug)]
pub struct ApiKeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (TenantId, Instant)>>,
}

/// Bounds memory: when full, expired entries are dropped, and if none are, everything.
const API_KEY_CACHE_MAX: usize = 10_000;

impl ApiKeyCache {
    /// A cache keeping lookups for `ttl` (zero: no caching).
    pub fn new(ttl: Duration) -> Self {
        ApiKeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// [`tenant_for_api_key`], answered from memory while the last lookup is fresh.
    pub async fn tenant_for(
        &self,
        db: &Client,
        table_name: &str,
        api_key: &str,
    ) -> Result<Option<TenantId>, ApiError> {
        let key_digest = digest(api_key);
        if !self.ttl.is_zero() {
            let entries = self.entries.lock().expect("cache lock");
            if let Some((tenant, expires)) = entries.get(&key_digest)
                && *expires > Instant::now()
            {
                return Ok(Some(tenant.clone()));
            }
        }
        let found = tenant_for_digest(db, table_name, &key_digest).await?;
        if let Some(tenant) = &found
            && !self.ttl.is_zero()
        {
            let now = Instant::now();
            let mut entries = self.entries.lock().expect("cache lock");
            if entries.len() >= API_KEY_CACHE_MAX {
                entries.retain(|_, (_, expires)| *expires > now);
                if entries.len() >= API_KEY_CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(key_digest, (tenant.clone(), now + self.ttl));
        }
        Ok(found)
    }

    /// Forgets a key (by its hex digest) at once, e.g. after revoking it.
    pub fn forget(&self, digest_hex: &str) {
        if let Ok(bytes) = hex::decode(digest_hex)
            && let Ok(key_digest) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            self.entries.lock().expect("cache lock").remove(&key_digest);
        }
    }
}

/// Checks a request's admin key; `401` naming what is wrong otherwise.
pub fn check_admin(headers: &HeaderMap, expected_digest: &[u8; 32]) -> Result<(), ApiError> {
    let presented = headers
        .get(ADMIN_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing X-Admin-Key header"))?;
    if admin_key_matches(presented, expected_digest) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_key_compares_digests() {
        let expected = digest("s3cret");
        assert!(admin_key_matches("s3cret", &expected));
        assert!(!admin_key_matches("s3cret ", &expected));
        assert!(!admin_key_matches("", &expected));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer sk_abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("sk_abc"));
        h.insert("authorization", "Basic sk_abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "bearer  ".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
