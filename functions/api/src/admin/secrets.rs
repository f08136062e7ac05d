//! `POST /admin/secrets/rewrap`: re-encrypt every stored secret under the current KMS key.
//!
//! After a move to a new key (`KMS_KEY_ID` changed), ciphertexts sealed under the old key still
//! open (KMS ciphertexts name their key) but depend on it. Rewrap moves each one with KMS
//! `ReEncrypt` — the plaintext never leaves KMS — keeping its encryption context. Covered: endpoint
//! signing secrets, provider keys and sealed idempotent responses. An operator action, run
//! rarely: it scans the table. Every rewrite is conditioned on the ciphertext it read, so a
//! concurrent rotation or replacement (already under the current key) is never overwritten, and
//! running it twice is harmless.

use aws_sdk_dynamodb::types::AttributeValue;
use axum::{Json, extract::State};
use serde::Serialize;
use serde_json::Value;
use sluice::{
    ApiError, ApiResult,
    idempotency::{self, RECORD_SK},
    sealing::{self, Purpose, SealContext, SealError, SealedEndpointSecret, Sealer},
    table::{self, Item, ItemExt, bin, n, s},
};

use crate::AppState;

/// Counts reported by a rewrap.
#[derive(Debug, Default, Serialize)]
pub struct RewrapReport {
    /// Endpoint signing secrets re-encrypted.
    pub endpoint_secrets: u64,
    /// Provider keys re-encrypted.
    pub provider_keys: u64,
    /// Stored idempotent responses that carry a secret, re-encrypted.
    pub idempotent_responses: u64,
    /// Items changed concurrently (their new ciphertext is already under the current key).
    pub skipped_changed: u64,
    /// Ciphertexts that do not open under their context (tampered or misplaced): left as they are.
    pub unreadable: u64,
}

/// `POST /admin/secrets/rewrap`.
pub async fn rewrap(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let sealer = state.sealer();
    let mut report = RewrapReport::default();
    let mut start: Option<Item> = None;
    loop {
        let out = state
            .aws
            .dynamodb
            .scan()
            .table_name(state.table())
            .filter_expression(
                "begins_with(sk, :ep) OR begins_with(sk, :secret) OR \
                 (sk = :idem AND response_sealed = :yes)",
            )
            .expression_attribute_values(":ep", s(table::endpoint_sk("")))
            .expression_attribute_values(":secret", s(table::provider_secret_sk("")))
            .expression_attribute_values(":idem", s(RECORD_SK))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in out.items() {
            rewrap_item(&state, &sealer, item, &mut report).await?;
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    tracing::info!(?report, "secrets rewrapped");
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// Result of one ReEncrypt: `None` when the ciphertext does not open (counted, not fatal).
async fn rewrap_one(
    sealer: &Sealer,
    ctx: SealContext<'_>,
    ciphertext: &[u8],
    report: &mut RewrapReport,
) -> Result<Option<Vec<u8>>, ApiError> {
    match sealer.rewrap(ctx, ciphertext).await {
        Ok(new) => Ok(Some(new)),
        Err(SealError::InvalidCiphertext) => {
            report.unreadable += 1;
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

async fn rewrap_item(
    state: &AppState,
    sealer: &Sealer,
    item: &Item,
    report: &mut RewrapReport,
) -> Result<(), ApiError> {
    let (Some(pk), Some(sk)) = (item.get_s(table::PK), item.get_s(table::SK)) else {
        return Ok(());
    };
    let db = &state.aws.dynamodb;
    if sk.starts_with(&table::endpoint_sk("")) {
        let Some(tenant_id) = pk.strip_prefix("TENANT#") else {
            return Ok(());
        };
        let mut secrets = SealedEndpointSecret::list_from_item(item);
        let mut count = 0;
        for secret in &mut secrets {
            let ctx = SealContext::endpoint_secret(tenant_id);
            if let Some(new) = rewrap_one(sealer, ctx, &secret.ciphertext, report).await? {
                secret.ciphertext = new;
                count += 1;
            }
        }
        if count == 0 {
            return Ok(());
        }
        let list = AttributeValue::L(secrets.iter().map(|s| s.to_attribute()).collect());
        let version = item.get_i64(sealing::ENDPOINT_SECRETS_VERSION);
        let mut update = db
            .update_item()
            .table_name(state.table())
            .set_key(Some(table::key(pk, sk)))
            .update_expression("SET #secrets = :secrets, #version = :next")
            .expression_attribute_names("#secrets", sealing::ENDPOINT_SECRETS)
            .expression_attribute_names("#version", sealing::ENDPOINT_SECRETS_VERSION)
            .expression_attribute_values(":secrets", list)
            .expression_attribute_values(":next", n(version.unwrap_or(0) + 1));
        update = match version {
            Some(v) => update
                .condition_expression("#version = :seen")
                .expression_attribute_values(":seen", n(v)),
            None => update
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(#version)"),
        };
        if conditional(update.send().await)? {
            report.endpoint_secrets += count;
        } else {
            report.skipped_changed += 1;
        }
    } else if sk.starts_with(&table::provider_secret_sk("")) {
        let (Some(tenant_id), Some(old)) = (
            pk.strip_prefix("TENANT#"),
            item.get_bin(sealing::CIPHERTEXT),
        ) else {
            return Ok(());
        };
        let Some(new) =
            rewrap_one(sealer, SealContext::provider_key(tenant_id), old, report).await?
        else {
            return Ok(());
        };
        let result = db
            .update_item()
            .table_name(state.table())
            .set_key(Some(table::key(pk, sk)))
            .update_expression("SET #ct = :new")
            .condition_expression("#ct = :old")
            .expression_attribute_names("#ct", sealing::CIPHERTEXT)
            .expression_attribute_values(":new", bin(new))
            .expression_attribute_values(":old", bin(old.to_vec()))
            .send()
            .await;
        if conditional(result)? {
            report.provider_keys += 1;
        } else {
            report.skipped_changed += 1;
        }
    } else if sk == RECORD_SK {
        // `IDEM#{scope}#{key}`: scopes (tenant ids, `admin`) contain no `#`.
        let Some((scope, _key)) = pk.strip_prefix("IDEM#").and_then(|r| r.split_once('#')) else {
            return Ok(());
        };
        let Some(old) = item.get_bin(idempotency::attr::RESPONSE_BODY) else {
            return Ok(());
        };
        let ctx = SealContext {
            tenant_id: scope,
            purpose: Purpose::IdempotentResponse,
        };
        let Some(new) = rewrap_one(sealer, ctx, old, report).await? else {
            return Ok(());
        };
        let result = db
            .update_item()
            .table_name(state.table())
            .set_key(Some(table::key(pk, sk)))
            .update_expression("SET #body = :new")
            .condition_expression("#body = :old")
            .expression_attribute_names("#body", idempotency::attr::RESPONSE_BODY)
            .expression_attribute_values(":new", bin(new))
            .expression_attribute_values(":old", bin(old.to_vec()))
            .send()
            .await;
        if conditional(result)? {
            report.idempotent_responses += 1;
        } else {
            report.skipped_changed += 1;
        }
    }
    Ok(())
}

/// `Ok(true)` if written, `Ok(false)` if its condition failed (changed meanwhile).
fn conditional<T>(
    result: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        >,
    >,
) -> Result<bool, ApiError> {
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}
