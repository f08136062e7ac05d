//! Who may see the portal: one-time sign-in links and the sessions they open.
//!
//! - **Minting** (`POST /admin/tenants/{id}/portal-sessions`, `POST /v1/portal-sessions`): a
//!   token of 32 random bytes (base64url in the link) whose SHA-256 only is stored,
//!   `PORTALTOKEN#{hex}` with `tenant_id` and `ttl` (= its expiry, `PORTAL_LINK_TTL_SECS`).
//!   One `PutItem` (the admin route first reads the tenant: one `GetItem`). The answer carries
//!   the token, so its idempotent copy is stored sealed ([`SealStoredBody`]).
//! - **Exchanging** (`GET /portal/login?token=…`): ONE `DeleteItem` conditioned on the item
//!   existing and not being expired, with `ReturnValues=ALL_OLD`. DynamoDB serialises writes to
//!   an item, so of any number of racing exchanges exactly one gets the item back; a reused,
//!   expired or forged token fails the condition. Then one `PutItem` of the session.
//! - **Sessions**: the cookie holds 32 other random bytes; `PORTALSESSION#{hex}` holds
//!   `tenant_id` and `ttl` (`PORTAL_SESSION_TTL_SECS`). Each portal request reads it with one
//!   strongly consistent `GetItem` (so a sign-out takes effect at once) and checks `ttl` against
//!   the clock (TTL deletion is lazy). Sign-out is one `DeleteItem`.
//!
//! Stored digests mean a read of the table yields no usable link or cookie.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{StatusCode, request::Parts},
};
use base64::Engine;
use serde::Serialize;
use sluice::{
    ApiError, ApiResult,
    auth::{self, TenantId},
    clock,
    idempotency::SealStoredBody,
    ids,
    table::{self, ItemExt, n, s},
    tenants,
};
use utoipa::ToSchema;

use crate::AppState;

/// Attribute naming the tenant on token and session items.
const TENANT_ID: &str = "tenant_id";

/// The answer of both minting routes.
#[derive(Serialize, ToSchema)]
pub struct PortalSessionOut {
    /// The one-time sign-in link: opening it starts a portal session (a cookie) and removes
    /// the token from the address bar. Usable once, until `expires_at`.
    #[schema(example = "https://api.example.com/portal/login?token=2mH…")]
    pub url: String,
    /// Epoch seconds after which the link no longer works.
    pub expires_at: i64,
}

/// A new random secret (32 bytes, base64url without padding: 43 characters).
pub fn new_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ids::random_bytes::<32>())
}

/// SHA-256 hex of a token or cookie value: what the table stores.
pub fn digest_hex(secret: &str) -> String {
    hex::encode(auth::digest(secret))
}

/// A presented token or cookie value has the shape [`new_secret`] makes (anything else is refused
/// without a request).
pub fn well_formed(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn mint(state: &AppState, parts: &Parts, tenant_id: &str) -> ApiResult<PortalSessionOut> {
    let origin = super::public_origin(state, parts).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "no trustworthy origin for a portal link: set PORTAL_BASE_URL"
        ))
    })?;
    let token = new_secret();
    let expires_at = clock::now_epoch() + state.config.portal.link_ttl.as_secs() as i64;
    let digest = digest_hex(&token);
    state
        .aws
        .dynamodb
        .put_item()
        .table_name(state.table())
        .set_item(Some(
            [
                (table::PK.to_owned(), s(table::portal_token_pk(&digest))),
                (table::SK.to_owned(), s(table::PORTAL_TOKEN_SK)),
                (TENANT_ID.to_owned(), s(tenant_id)),
                (table::TTL.to_owned(), n(expires_at)),
            ]
            .into(),
        ))
        .send()
        .await?;
    Ok(PortalSessionOut {
        url: format!("{origin}/portal/login?token={token}"),
        expires_at,
    })
}

type Minted = (
    StatusCode,
    Extension<SealStoredBody>,
    Json<PortalSessionOut>,
);

/// `POST /v1/portal-sessions`: a sign-in link to the caller's own portal.
#[utoipa::path(
    post,
    path = "/v1/portal-sessions",
    tag = "account",
    summary = "A one-time sign-in link to the tenant portal",
    description = "For the SaaS backend to send its logged-in customer to the portal. The link works once, for `PORTAL_LINK_TTL_SECS` (10 minutes by default); it opens a session of `PORTAL_SESSION_TTL_SECS`.",
    responses(
        (status = 201, description = "Minted; the link is shown only in this answer", body = PortalSessionOut),
    ),
    security(("bearer" = [])),
)]
pub async fn mint_own(
    State(state): State<AppState>,
    Extension(TenantId(tenant_id)): Extension<TenantId>,
    parts: Parts,
) -> ApiResult<Minted> {
    let out = mint(&state, &parts, &tenant_id).await?;
    Ok((StatusCode::CREATED, Extension(SealStoredBody), Json(out)))
}

/// `POST /admin/tenants/{id}/portal-sessions`: a sign-in link to a tenant's portal.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/portal-sessions",
    tag = "admin",
    summary = "A one-time sign-in link to a tenant's portal",
    params(("id" = String, Path, description = "Tenant id (`tnt_…`)")),
    responses(
        (status = 201, description = "Minted; the link is shown only in this answer", body = PortalSessionOut),
        (status = 404, description = "No such tenant"),
    ),
    security(("admin_key" = [])),
)]
pub async fn mint_for_tenant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    parts: Parts,
) -> ApiResult<Minted> {
    if !ids::has_prefix(&id, "tnt") {
        return Err(ApiError::not_found("tenant"));
    }
    tenants::get_tenant(&state.aws.dynamodb, state.table(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let out = mint(&state, &parts, &id).await?;
    Ok((StatusCode::CREATED, Extension(SealStoredBody), Json(out)))
}

/// Consumes a link token: the tenant it was minted for, or `None` when it is unknown, used or
/// expired (one conditional `DeleteItem`; see the module docs).
pub async fn consume_token(state: &AppState, token: &str) -> ApiResult<Option<String>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let digest = digest_hex(token);
    let result = state
        .aws
        .dynamodb
        .delete_item()
        .table_name(state.table())
        .set_key(Some(table::key(
            table::portal_token_pk(&digest),
            table::PORTAL_TOKEN_SK,
        )))
        .condition_expression("attribute_exists(pk) AND #ttl > :now")
        .expression_attribute_names("#ttl", table::TTL)
        .expression_attribute_values(":now", n(clock::now_epoch()))
        .return_values(ReturnValue::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => Ok(out
            .attributes
            .as_ref()
            .and_then(|item| item.get_s(TENANT_ID))
            .map(str::to_owned)),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Starts a session for `tenant_id`: the cookie value and its expiry (epoch seconds).
pub async fn start_session(state: &AppState, tenant_id: &str) -> ApiResult<(String, i64)> {
    let value = new_secret();
    let expires_at = clock::now_epoch() + state.config.portal.session_ttl.as_secs() as i64;
    state
        .aws
        .dynamodb
        .put_item()
        .table_name(state.table())
        .set_item(Some(
            [
                (
                    table::PK.to_owned(),
                    s(table::portal_session_pk(&digest_hex(&value))),
                ),
                (table::SK.to_owned(), s(table::PORTAL_SESSION_SK)),
                (TENANT_ID.to_owned(), s(tenant_id)),
                (table::TTL.to_owned(), n(expires_at)),
            ]
            .into(),
        ))
        .send()
        .await?;
    Ok((value, expires_at))
}

fn session_key(value: &str) -> std::collections::HashMap<String, AttributeValue> {
    table::key(
        table::portal_session_pk(&digest_hex(value)),
        table::PORTAL_SESSION_SK,
    )
}

/// The tenant of a live session, or `None` (unknown, signed out or expired).
pub async fn session_tenant(state: &AppState, value: &str) -> ApiResult<Option<String>> {
    if !well_formed(value) {
        return Ok(None);
    }
    let out = state
        .aws
        .dynamodb
        .get_item()
        .table_name(state.table())
        .set_key(Some(session_key(value)))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out
        .item
        .filter(|item| !table::is_expired(item, clock::now_epoch()))
        .and_then(|item| item.get_s(TENANT_ID).map(str::to_owned)))
}

/// Ends a session (deleting an absent one is not an error).
pub async fn end_session(state: &AppState, value: &str) -> ApiResult<()> {
    if !well_formed(value) {
        return Ok(());
    }
    state
        .aws
        .dynamodb
        .delete_item()
        .table_name(state.table())
        .set_key(Some(session_key(value)))
        .send()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_stored_only_as_digests() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(digest_hex(&a).len(), 64);
        assert_ne!(digest_hex(&a), a);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[..42])));
    }
}
