//! Credentials: tenant API keys (`Authorization: Bearer`) and the admin key (`X-Admin-Key`).
//!
//! Keys are stored and configured only as SHA-256 digests. A tenant key is found by its digest
//! (a lookup by hash reveals nothing about other keys); the admin key digest is compared in
//! constant time.

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

/// The authenticated caller of a `/v1` request, put in the request extensions by the auth layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantId(pub String);

/// Finds the tenant owning `api_key`; `None` for an unknown or revoked key. One `GetItem`.
pub async fn tenant_for_api_key(
    db: &Client,
    table_name: &str,
    api_key: &str,
) -> Result<Option<TenantId>, ApiError> {
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(table::key(
            table::api_key_pk(&hex::encode(digest(api_key))),
            table::API_KEY_SK,
        )))
        .send()
        .await?;
    Ok(out
        .item()
        .and_then(|item| item.get_s("tenant_id"))
        .map(|id| TenantId(id.to_owned())))
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
