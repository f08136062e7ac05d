//! `POST /admin/secrets/rewrap`: move stored secrets under the current KMS key, a page at a time.
//!
//! After a move to a new key (`KMS_KEY_ID` changed), ciphertexts sealed under the old key still
//! open (KMS ciphertexts name their key) but depend on it. Rewrap moves each one, keeping its
//! encryption context: an envelope's data key is re-wrapped with KMS `ReEncrypt` (the plaintext
//! never leaves KMS, the payload is kept); a legacy raw KMS blob is converted to an envelope
//! (see [`sluice::sealing::RewrapPlan`]). Covered: endpoint signing secrets, provider keys and
//! sealed idempotent responses.
//!
//! An operator action, run rarely. Each call scans one page of the table (`limit` items, default
//! [`DEFAULT_LIMIT`], so a call stays well inside the API's timeout) and answers `next_cursor`
//! and `done`; the operator calls again with `{"cursor": next_cursor}` until `done`. Secrets
//! already under the current key are skipped without a KMS call (an envelope names its wrapping
//! key), so a repeated or resumed run re-encrypts nothing twice. Every rewrite is conditioned on
//! the ciphertext it read, so a concurrent rotation or replacement (already under the current
//! key) is never overwritten.
//!
//! AWS requests per call: one KMS `DescribeKey` (the current key's ARN), one `Scan` page, and per
//! secret not yet current one `ReEncrypt` (two KMS calls for a legacy blob) and one `UpdateItem`
//! per changed item.

use aws_sdk_dynamodb::types::AttributeValue;
use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use sluice::{
    ApiError, ApiResult,
    idempotency::{self, RECORD_SK},
    sealing::{self, Purpose, Rewrapped, SealContext, SealError, SealedEndpointSecret, Sealer},
    table::{self, Item, ItemExt, bin, n, s},
};

use utoipa::ToSchema;

use crate::{AppState, json_body::OptionalJsonBody};

/// Items scanned per call unless the request says otherwise.
pub const DEFAULT_LIMIT: i32 = 200;
/// Most items a call may scan (each may cost a KMS call or two).
pub const MAX_LIMIT: i32 = 1000;

/// `POST /admin/secrets/rewrap` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// `next_cursor` of the previous call; absent to start from the first item.
    cursor: Option<String>,
    /// Items to scan in this call, 1–1000 (default 200).
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<i32>,
}

/// Counts reported by a rewrap call.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RewrapReport {
    /// Endpoint signing secrets moved to the current key.
    pub endpoint_secrets: u64,
    /// Provider keys moved to the current key.
    pub provider_keys: u64,
    /// Stored idempotent responses that carry a secret, moved to the current key.
    pub idempotent_responses: u64,
    /// Of the moved secrets, legacy raw KMS blobs converted to envelopes.
    pub converted: u64,
    /// Secrets already under the current key (no KMS call made).
    pub already_current: u64,
    /// Items changed concurrently (their new ciphertext is already under the current key).
    pub skipped_changed: u64,
    /// Ciphertexts that do not open under their context (tampered or misplaced): left as they are.
    pub unreadable: u64,
    /// Pass as `cursor` to continue; `null` when done.
    pub next_cursor: Option<String>,
    /// True when the whole table has been scanned.
    pub done: bool,
}

/// The scan position as an opaque cursor (the last evaluated key: `pk`, `sk`).
fn encode_cursor(key: &Item) -> Option<String> {
    Some(table::encode_key_cursor(key))
}

fn decode_cursor(cursor: &str) -> Result<Item, ApiError> {
    table::decode_key_cursor(cursor, &[table::PK, table::SK])
        .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor this endpoint returned"))
}

fn check_request(req: RewrapRequest) -> ApiResult<RewrapRequest> {
    if req.limit.is_some_and(|l| !(1..=MAX_LIMIT).contains(&l)) {
        return Err(ApiError::invalid_field(format!(
            "`limit` must be 1–{MAX_LIMIT}"
        )));
    }
    Ok(req)
}

/// `POST /admin/secrets/rewrap {cursor?, limit?}`.
#[utoipa::path(
    post,
    path = "/admin/secrets/rewrap",
    tag = "admin",
    summary = "Move one page of stored secrets under the current KMS key",
    request_body(content = Option<RewrapRequest>, description = "Optional; an empty body starts from the first item"),
    responses(
        (status = 200, description = "One page done; call again with `next_cursor` until `done`", body = RewrapReport),
        (status = 400, description = "The body is not JSON of this shape, or `cursor` is not one this endpoint returned"),
        (status = 422, description = "`limit` is out of range"),
    ),
    security(("admin_key" = [])),
)]
pub async fn rewrap(
    State(state): State<AppState>,
    OptionalJsonBody(req): OptionalJsonBody<RewrapRequest>,
) -> ApiResult<Json<RewrapReport>> {
    let req = check_request(req)?;
    let start = req.cursor.as_deref().map(decode_cursor).transpose()?;
    let sealer = state.sealer();
    let current = sealer.current_key_arn().await?;
    let mut report = RewrapReport::default();
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
        .limit(req.limit.unwrap_or(DEFAULT_LIMIT))
        .set_exclusive_start_key(start)
        .send()
        .await?;
    let mut run = Run {
        state: &state,
        sealer: &sealer,
        current: &current,
        report: &mut report,
    };
    for item in out.items() {
        run.item(item).await?;
    }
    report.next_cursor = out
        .last_evaluated_key
        .as_ref()
        .filter(|k| !k.is_empty())
        .and_then(encode_cursor);
    report.done = report.next_cursor.is_none();
    tracing::info!(?report, "secrets rewrapped");
    Ok(Json(report))
}

/// One rewrap call's context.
struct Run<'a> {
    state: &'a AppState,
    sealer: &'a Sealer,
    current: &'a str,
    report: &'a mut RewrapReport,
}

impl Run<'_> {
    /// The new ciphertext, or `None` when there is nothing to write (already current: counted;
    /// does not open: counted, not fatal).
    async fn one(
        &mut self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>, ApiError> {
        match self.sealer.rewrap(ctx, ciphertext, self.current).await {
            Ok(Rewrapped::AlreadyCurrent) => {
                self.report.already_current += 1;
                Ok(None)
            }
            Ok(Rewrapped::Moved(new)) => Ok(Some(new)),
            Ok(Rewrapped::Converted(new)) => {
                self.report.converted += 1;
                Ok(Some(new))
            }
            Err(SealError::InvalidCiphertext) => {
                self.report.unreadable += 1;
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn item(&mut self, item: &Item) -> Result<(), ApiError> {
        let (Some(pk), Some(sk)) = (item.get_s(table::PK), item.get_s(table::SK)) else {
            return Ok(());
        };
        if sk.starts_with(&table::endpoint_sk("")) {
            let Some(tenant_id) = pk.strip_prefix("TENANT#") else {
                return Ok(());
            };
            self.endpoint(pk, sk, tenant_id, item).await
        } else if sk.starts_with(&table::provider_secret_sk("")) {
            let (Some(tenant_id), Some(old)) = (
                pk.strip_prefix("TENANT#"),
                item.get_bin(sealing::CIPHERTEXT),
            ) else {
                return Ok(());
            };
            let ctx = SealContext::provider_key(tenant_id);
            if let Some(new) = self.one(ctx, old).await?
                && self.replace(pk, sk, sealing::CIPHERTEXT, old, new).await?
            {
                self.report.provider_keys += 1;
            }
            Ok(())
        } else if sk == RECORD_SK {
            // `IDEM#{scope}#{key}`: scopes (tenant ids, `admin`) contain no `#`.
            let Some((scope, _key)) = pk.strip_prefix("IDEM#").and_then(|r| r.split_once('#'))
            else {
                return Ok(());
            };
            let Some(old) = item.get_bin(idempotency::attr::RESPONSE_BODY) else {
                return Ok(());
            };
            let ctx = SealContext {
                tenant_id: scope,
                purpose: Purpose::IdempotentResponse,
            };
            if let Some(new) = self.one(ctx, old).await?
                && self
                    .replace(pk, sk, idempotency::attr::RESPONSE_BODY, old, new)
                    .await?
            {
                self.report.idempotent_responses += 1;
            }
            Ok(())
        } else {
            Ok(())
        }
    }

    async fn endpoint(
        &mut self,
        pk: &str,
        sk: &str,
        tenant_id: &str,
        item: &Item,
    ) -> Result<(), ApiError> {
        let mut secrets = SealedEndpointSecret::list_from_item(item);
        let mut count = 0;
        for secret in &mut secrets {
            let ctx = SealContext::endpoint_secret(tenant_id);
            if let Some(new) = self.one(ctx, &secret.ciphertext).await? {
                secret.ciphertext = new;
                count += 1;
            }
        }
        if count == 0 {
            return Ok(());
        }
        let list = AttributeValue::L(secrets.iter().map(|s| s.to_attribute()).collect());
        let version = item.get_i64(sluice::endpoints::attr::SECRETS_VERSION);
        let mut update = self
            .state
            .aws
            .dynamodb
            .update_item()
            .table_name(self.state.table())
            .set_key(Some(table::key(pk, sk)))
            .update_expression("SET #secrets = :secrets, #version = :next")
            .expression_attribute_names("#secrets", sluice::endpoints::attr::SECRETS)
            .expression_attribute_names("#version", sluice::endpoints::attr::SECRETS_VERSION)
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
            self.report.endpoint_secrets += count;
        } else {
            self.report.skipped_changed += 1;
        }
        Ok(())
    }

    /// Writes `new` over the binary attribute `attr` if it still holds `old`; `false` (counted as
    /// `skipped_changed`) if it changed meanwhile.
    async fn replace(
        &mut self,
        pk: &str,
        sk: &str,
        attr: &str,
        old: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, ApiError> {
        let result = self
            .state
            .aws
            .dynamodb
            .update_item()
            .table_name(self.state.table())
            .set_key(Some(table::key(pk, sk)))
            .update_expression("SET #ct = :new")
            .condition_expression("#ct = :old")
            .expression_attribute_names("#ct", attr)
            .expression_attribute_values(":new", bin(new))
            .expression_attribute_values(":old", bin(old.to_vec()))
            .send()
            .await;
        let written = conditional(result)?;
        if !written {
            self.report.skipped_changed += 1;
        }
        Ok(written)
    }
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

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    #[test]
    fn a_cursor_round_trips_and_foreign_ones_are_refused() {
        let key = table::key("TENANT#tnt_a", "SECRET#openai");
        let cursor = encode_cursor(&key).unwrap();
        assert_eq!(decode_cursor(&cursor).unwrap(), key);
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode(r#"{"pk":"a"}"#)] {
            assert_eq!(decode_cursor(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    fn parse_request(body: &[u8]) -> ApiResult<RewrapRequest> {
        crate::json_body::parse_optional(body).and_then(check_request)
    }

    #[test]
    fn an_empty_body_starts_from_the_first_item() {
        let req = parse_request(b"").unwrap();
        assert!(req.cursor.is_none() && req.limit.is_none());
        assert_eq!(parse_request(br#"{"limit": 2}"#).unwrap().limit, Some(2));
        for bad in [
            &br#"{"limit": 0}"#[..],
            br#"{"limit": 1001}"#,
            br#"{"x": 1}"#,
        ] {
            assert!(parse_request(bad).unwrap_err().status().is_client_error());
        }
    }
}
