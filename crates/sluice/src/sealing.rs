//! Sealing of secrets at rest: endpoint signing secrets, tenants' provider keys and stored
//! answers that carry a secret.
//!
//! Envelope encryption: each value is encrypted with AES-256-GCM under a fresh data key from KMS
//! `GenerateDataKey` (`AES_256`) and stored with that key, wrapped by KMS, beside it ([`envelope`]
//! documents the format). KMS's 4 KiB plaintext limit therefore never applies to what a tenant
//! stores (an 8 KiB provider key, a 15 KiB endpoint answer): KMS only ever sees the data key.
//!
//! Both layers are bound to the encryption context `{"tenant_id": …, "purpose": …}`: KMS
//! authenticates it on the wrapped key, AES-GCM on the payload (as associated data). A ciphertext
//! copied onto another tenant's item (or used for another purpose) fails to open. There is no
//! plaintext fallback: a value that does not open is an error, never "maybe it was stored in
//! clear". Our copies of data keys are zeroized once used.
//!
//! Blobs written before envelopes (raw KMS `Encrypt` ciphertexts) still open; the envelope's
//! marker cannot be mistaken for one. [`Sealer::rewrap`] converts them to envelopes.
//!
//! Decrypt does not name a key: KMS ciphertexts carry their key id, so secrets sealed under an
//! older key keep opening until [`Sealer::rewrap`] has moved them to the current one. An envelope
//! records its wrapping key's ARN, so telling whether it is current needs no KMS call.
//!
//! AWS requests: sealing is one KMS `GenerateDataKey`; opening one KMS `Decrypt` (of the data key,
//! or of a legacy blob); a rewrap none (already current), one `ReEncrypt` (an envelope under an
//! older key: only its data key is re-wrapped, the payload is kept) or two (a legacy blob:
//! `Decrypt`, then `GenerateDataKey` for its new envelope).

pub mod envelope;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::{error::ProvideErrorMetadata, primitives::Blob, types::DataKeySpec};
use envelope::{Envelope, Stored};
use zeroize::Zeroizing;

use crate::{
    ApiError,
    table::{self, Item, ItemExt},
};

/// Encryption-context key naming the owning tenant.
pub const CONTEXT_TENANT_ID: &str = "tenant_id";
/// Encryption-context key naming what the secret is for.
pub const CONTEXT_PURPOSE: &str = "purpose";

/// What a sealed secret is for; part of its encryption context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A webhook endpoint's `whsec_…` signing secret.
    WebhookEndpointSecret,
    /// A tenant's provider API key (`POST /v1/secrets`).
    ProviderKey,
    /// A stored idempotent response that carries a secret (an issued API key or signing
    /// secret); the "tenant" of its context is the idempotency scope.
    IdempotentResponse,
}

impl Purpose {
    /// The value stored in the encryption context.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::WebhookEndpointSecret => "webhook-endpoint-secret",
            Purpose::ProviderKey => "provider-key",
            Purpose::IdempotentResponse => "idempotent-response",
        }
    }
}

/// The encryption context a secret is sealed under: its tenant and its purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    pub tenant_id: &'a str,
    pub purpose: Purpose,
}

impl<'a> SealContext<'a> {
    /// Context of a webhook endpoint's signing secret.
    pub fn endpoint_secret(tenant_id: &'a str) -> Self {
        SealContext {
            tenant_id,
            purpose: Purpose::WebhookEndpointSecret,
        }
    }
    /// Context of a provider key.
    pub fn provider_key(tenant_id: &'a str) -> Self {
        SealContext {
            tenant_id,
            purpose: Purpose::ProviderKey,
        }
    }
    /// The context as pairs, for the envelope's associated data.
    fn pairs(&self) -> [(&'a str, &'a str); 2] {
        [
            (CONTEXT_TENANT_ID, self.tenant_id),
            (CONTEXT_PURPOSE, self.purpose.as_str()),
        ]
    }
}

/// Why sealing or opening failed. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The ciphertext does not open under this context (tampered, moved to another tenant's item,
    /// or sealed for another purpose).
    #[error("ciphertext does not open under its encryption context")]
    InvalidCiphertext,
    /// The decrypted bytes are not UTF-8 text.
    #[error("decrypted secret is not UTF-8")]
    NotUtf8,
    /// KMS refused the request as invalid input (a validation or size limit): retrying the same
    /// input cannot help. Carries the KMS error code only.
    #[error("KMS refused the input: {0}")]
    Rejected(String),
    /// KMS could not be reached or failed the call (retryable).
    #[error("KMS request failed: {0}")]
    Kms(String),
}

impl From<SealError> for ApiError {
    fn from(err: SealError) -> Self {
        match err {
            // The input's fault, so a 4xx naming it; never a 5xx the client would retry in vain.
            SealError::Rejected(_) => ApiError::unprocessable(
                "unsealable",
                "Value cannot be sealed",
                "the value could not be encrypted for storage; it is outside the limits of the \
                 key service",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// A decrypted secret. `Debug` and `Display` are redacted; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plaintext. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `…` + the last four characters, for display (`GET /v1/secrets`).
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `…` + the last four characters of a secret (fewer shown for very short values).
pub fn hint_of(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    // Never reveal more than a third of a short secret.
    let shown = 4.min(chars.len() / 3);
    let tail: String = chars[chars.len() - shown..].iter().collect();
    format!("…{tail}")
}

/// Seals and opens secrets with KMS under one key. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sealer {
    pub kms: aws_sdk_kms::Client,
    /// Key id, ARN or alias new ciphertexts are sealed under (`KMS_KEY_ID`).
    pub key_id: String,
}

/// How a KMS error code is answered: a ciphertext that does not open under its key and context
/// (tampered, or moved to another tenant's item) is `InvalidCiphertext`; input KMS refuses to
/// take is `Rejected`; anything else (throttling, an unreachable or disabled key) is a KMS error,
/// retryable.
fn error_for_code(code: Option<&str>, describe: impl FnOnce() -> String) -> SealError {
    match code {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
            SealError::InvalidCiphertext
        }
        Some(code @ "ValidationException") => SealError::Rejected(code.to_owned()),
        _ => SealError::Kms(describe()),
    }
}

fn kms_error<E>(err: aws_sdk_kms::error::SdkError<E>) -> SealError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    error_for_code(code.as_deref(), || {
        aws_sdk_kms::error::DisplayErrorContext(err).to_string()
    })
}

/// A malformed envelope opens as nothing: it is an invalid ciphertext.
fn format_error(_: envelope::FormatError) -> SealError {
    SealError::InvalidCiphertext
}

/// What [`Sealer::rewrap`] does with one stored blob; decided without KMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewrapPlan {
    /// An envelope already wrapped by the current key: nothing to do.
    AlreadyCurrent,
    /// An envelope under an older key: `ReEncrypt` its data key.
    RewrapKey,
    /// A legacy raw KMS blob: open it and seal it as an envelope. Converting (rather than
    /// `ReEncrypt`ing it as a raw blob again) costs one more KMS call once, and then every later
    /// rewrap can tell it is current without any call; the raw blob's key is not readable
    /// without KMS.
    Convert,
}

/// The plan for `blob` when the current key's ARN is `current_key_arn`. A marked blob that does
/// not parse is an invalid ciphertext.
pub fn rewrap_plan(blob: &[u8], current_key_arn: &str) -> Result<RewrapPlan, SealError> {
    Ok(match envelope::parse(blob).map_err(format_error)? {
        Stored::Envelope(env) if env.key_arn == current_key_arn => RewrapPlan::AlreadyCurrent,
        Stored::Envelope(_) => RewrapPlan::RewrapKey,
        Stored::Legacy(_) => RewrapPlan::Convert,
    })
}

/// The ARN of the key that wraps an envelope's data key; `None` for a legacy KMS blob (or bytes
/// that are no envelope).
pub fn wrapping_key_arn(blob: &[u8]) -> Option<&str> {
    match envelope::parse(blob) {
        Ok(Stored::Envelope(env)) => Some(env.key_arn),
        _ => None,
    }
}

/// What a rewrap of one blob did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrapped {
    /// Already under the current key; no KMS call was made.
    AlreadyCurrent,
    /// The new blob: its data key re-wrapped by the current key.
    Moved(Vec<u8>),
    /// The new blob: a legacy KMS blob converted to an envelope under the current key.
    Converted(Vec<u8>),
}

impl Sealer {
    /// A sealer for `key_id`.
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Sealer {
            kms,
            key_id: key_id.into(),
        }
    }

    /// Encrypts `plaintext` (any size) in an envelope whose data key the configured key wraps,
    /// bound to `ctx`. One KMS `GenerateDataKey`.
    pub async fn seal(&self, ctx: SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let out = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
            .encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
            .send()
            .await
            .map_err(kms_error)?;
        let (Some(data_key), Some(wrapped), Some(key_arn)) =
            (out.plaintext, out.ciphertext_blob, out.key_id)
        else {
            return Err(SealError::Kms("GenerateDataKey returned no key".into()));
        };
        let data_key = Zeroizing::new(data_key.into_inner());
        if data_key.len() != envelope::DATA_KEY_LEN {
            return Err(SealError::Kms(
                "GenerateDataKey returned a short key".into(),
            ));
        }
        envelope::seal(
            &data_key,
            &key_arn,
            wrapped.as_ref(),
            &ctx.pairs(),
            plaintext,
        )
        .map_err(|e| SealError::Kms(format!("sealing failed: {e}")))
    }

    /// Decrypts what [`Sealer::seal`] produced under `ctx`, or a legacy raw KMS ciphertext. One
    /// KMS `Decrypt`.
    pub async fn open(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        match envelope::parse(ciphertext).map_err(format_error)? {
            Stored::Envelope(env) => {
                let data_key = self.kms_decrypt(ctx, env.wrapped_key).await?;
                let mut plaintext =
                    envelope::open(&env, &data_key, &ctx.pairs()).map_err(format_error)?;
                Ok(std::mem::take(&mut *plaintext))
            }
            Stored::Legacy(blob) => Ok(std::mem::take(&mut *self.kms_decrypt(ctx, blob).await?)),
        }
    }

    /// KMS `Decrypt` of a KMS ciphertext under `ctx`.
    async fn kms_decrypt(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
            .encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
            .send()
            .await
            .map_err(kms_error)?;
        out.plaintext
            .map(|p| Zeroizing::new(p.into_inner()))
            .ok_or_else(|| SealError::Kms("Decrypt returned no plaintext".into()))
    }

    /// Seals a text secret.
    pub async fn seal_secret(
        &self,
        ctx: SealContext<'_>,
        secret: &Secret,
    ) -> Result<Vec<u8>, SealError> {
        self.seal(ctx, secret.expose().as_bytes()).await
    }

    /// Opens a text secret.
    pub async fn open_secret(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Secret, SealError> {
        let bytes = self.open(ctx, ciphertext).await?;
        String::from_utf8(bytes)
            .map(Secret)
            .map_err(|_| SealError::NotUtf8)
    }

    /// The ARN of the configured key (which may be named by id, ARN or alias). One KMS
    /// `DescribeKey`.
    pub async fn current_key_arn(&self) -> Result<String, SealError> {
        let out = self
            .kms
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(kms_error)?;
        out.key_metadata
            .and_then(|m| m.arn)
            .ok_or_else(|| SealError::Kms("DescribeKey returned no ARN".into()))
    }

    /// Moves a stored blob under the configured key (whose ARN is `current_key_arn`), keeping its
    /// context: nothing if it is already there; else see [`RewrapPlan`] (at most two KMS calls;
    /// for an envelope the plaintext never leaves KMS).
    pub async fn rewrap(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
        current_key_arn: &str,
    ) -> Result<Rewrapped, SealError> {
        match rewrap_plan(ciphertext, current_key_arn)? {
            RewrapPlan::AlreadyCurrent => Ok(Rewrapped::AlreadyCurrent),
            RewrapPlan::Convert => {
                let plaintext = Zeroizing::new(self.open(ctx, ciphertext).await?);
                Ok(Rewrapped::Converted(self.seal(ctx, &plaintext).await?))
            }
            RewrapPlan::RewrapKey => {
                let Ok(Stored::Envelope(env)) = envelope::parse(ciphertext) else {
                    return Err(SealError::InvalidCiphertext);
                };
                let out = self
                    .kms
                    .re_encrypt()
                    .ciphertext_blob(Blob::new(env.wrapped_key))
                    .source_encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
                    .source_encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
                    .destination_key_id(&self.key_id)
                    .destination_encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
                    .destination_encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
                    .send()
                    .await
                    .map_err(kms_error)?;
                let (Some(wrapped), Some(key_arn)) = (out.ciphertext_blob, out.key_id) else {
                    return Err(SealError::Kms("ReEncrypt returned no ciphertext".into()));
                };
                let moved = envelope::encode(&Envelope {
                    key_arn: &key_arn,
                    wrapped_key: wrapped.as_ref(),
                    ..env
                })
                .map_err(|e| SealError::Kms(format!("sealing failed: {e}")))?;
                Ok(Rewrapped::Moved(moved))
            }
        }
    }
}

/// Stored idempotent responses that carry secrets are sealed like every other secret at rest.
impl crate::idempotency::BodySealer for Sealer {
    fn seal<'a>(
        &'a self,
        scope: &'a str,
        body: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, crate::idempotency::BoxError>> {
        Box::pin(async move {
            let ctx = SealContext {
                tenant_id: scope,
                purpose: Purpose::IdempotentResponse,
            };
            Ok(Sealer::seal(self, ctx, body).await?)
        })
    }

    fn open<'a>(
        &'a self,
        scope: &'a str,
        sealed: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, crate::idempotency::BoxError>> {
        Box::pin(async move {
            let ctx = SealContext {
                tenant_id: scope,
                purpose: Purpose::IdempotentResponse,
            };
            Ok(Sealer::open(self, ctx, sealed).await?)
        })
    }
}

/// Attribute of a provider-secret item holding the ciphertext.
pub const CIPHERTEXT: &str = "ciphertext";

/// A new endpoint signing secret: `whsec_` + base64 of 32 random bytes (Standard Webhooks).
pub fn new_endpoint_secret() -> Secret {
    use base64::{Engine, engine::general_purpose::STANDARD};
    Secret(format!(
        "whsec_{}",
        STANDARD.encode(crate::ids::random_bytes::<32>())
    ))
}

/// Decrypts a tenant's provider key (e.g. `"openai"`) for server-side use; `None` if the tenant
/// stored none. One `GetItem` and one KMS `Decrypt`.
pub async fn provider_key(
    db: &aws_sdk_dynamodb::Client,
    table_name: &str,
    sealer: &Sealer,
    tenant_id: &str,
    provider: &str,
) -> Result<Option<Secret>, ApiError> {
    let out = db
        .get_item()
        .table_name(table_name)
        .set_key(Some(table::key(
            table::tenant_pk(tenant_id),
            table::provider_secret_sk(provider),
        )))
        .consistent_read(true)
        .send()
        .await?;
    let Some(ciphertext) = out.item().and_then(|item| item.get_bin(CIPHERTEXT)) else {
        return Ok(None);
    };
    Ok(Some(
        sealer
            .open_secret(SealContext::provider_key(tenant_id), ciphertext)
            .await?,
    ))
}

/// One sealed signing secret of an endpoint, as stored in its `secrets` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedEndpointSecret {
    pub ciphertext: Vec<u8>,
    pub created_at: i64,
    /// Set on a rotated-out secret: it keeps signing until then.
    pub expires_at: Option<i64>,
}

impl SealedEndpointSecret {
    /// Reads the endpoint item's `secrets` list (newest first), skipping malformed entries.
    pub fn list_from_item(item: &Item) -> Vec<SealedEndpointSecret> {
        let Some(AttributeValue::L(list)) = item.get(crate::endpoints::attr::SECRETS) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|v| v.as_m().ok())
            .filter_map(|m| {
                Some(SealedEndpointSecret {
                    ciphertext: m.get_bin("ciphertext")?.to_vec(),
                    created_at: m.get_i64("created_at").unwrap_or_default(),
                    expires_at: m.get_i64("expires_at"),
                })
            })
            .collect()
    }

    /// The attribute value of one list entry.
    pub fn to_attribute(&self) -> AttributeValue {
        let mut m = Item::from([
            ("ciphertext".to_owned(), table::bin(self.ciphertext.clone())),
            ("created_at".to_owned(), table::n(self.created_at)),
        ]);
        if let Some(expires_at) = self.expires_at {
            m.insert("expires_at".to_owned(), table::n(expires_at));
        }
        AttributeValue::M(m)
    }

    /// True while this secret may sign.
    pub fn is_active(&self, now_epoch: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now_epoch)
    }
}

/// Decrypts an endpoint's signing secrets that are still active (newest first). One KMS
/// `Decrypt` per secret; callers on a hot path cache the result for a few minutes.
pub async fn endpoint_secrets(
    sealer: &Sealer,
    tenant_id: &str,
    endpoint_item: &Item,
    now_epoch: i64,
) -> Result<Vec<Secret>, SealError> {
    let mut secrets = Vec::new();
    for sealed in SealedEndpointSecret::list_from_item(endpoint_item) {
        if sealed.is_active(now_epoch) {
            secrets.push(
                sealer
                    .open_secret(SealContext::endpoint_secret(tenant_id), &sealed.ciphertext)
                    .await?,
            );
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-live-abcdef123456");
        assert!(!format!("{s:?}").contains("abcdef"));
        assert!(!format!("{s}").contains("abcdef"));
        assert_eq!(s.hint(), "…3456");
        assert_eq!(hint_of("abc"), "…c");
        assert_eq!(hint_of(""), "…");
    }

    #[test]
    fn endpoint_secrets_are_32_random_bytes() {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let a = new_endpoint_secret();
        let raw = a.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(raw).unwrap().len(), 32);
        assert_ne!(a, new_endpoint_secret());
    }

    #[test]
    fn contexts_name_tenant_and_purpose() {
        let c = SealContext::provider_key("tnt_a");
        assert_eq!(c.tenant_id, "tnt_a");
        assert_eq!(c.purpose.as_str(), "provider-key");
        assert_eq!(
            SealContext::endpoint_secret("tnt_a").purpose.as_str(),
            "webhook-endpoint-secret"
        );
    }

    #[test]
    fn kms_errors_map_by_code() {
        let text = || "details".to_owned();
        assert!(matches!(
            error_for_code(Some("InvalidCiphertextException"), text),
            SealError::InvalidCiphertext
        ));
        assert!(matches!(
            error_for_code(Some("IncorrectKeyException"), text),
            SealError::InvalidCiphertext
        ));
        let rejected = error_for_code(Some("ValidationException"), text);
        assert!(matches!(rejected, SealError::Rejected(_)));
        assert_eq!(ApiError::from(rejected).status(), 422);
        for code in [
            Some("ThrottlingException"),
            Some("KMSInvalidStateException"),
            None,
        ] {
            let err = error_for_code(code, text);
            assert!(matches!(err, SealError::Kms(_)), "{code:?}");
            assert_eq!(ApiError::from(err).status(), 500);
        }
    }

    #[test]
    fn the_rewrap_plan_needs_no_kms_call() {
        let ctx = SealContext::provider_key("tnt_a");
        let blob = envelope::seal(&[1; 32], "arn:key/old", b"wrapped", &ctx.pairs(), b"v").unwrap();
        assert_eq!(
            rewrap_plan(&blob, "arn:key/old").unwrap(),
            RewrapPlan::AlreadyCurrent
        );
        assert_eq!(
            rewrap_plan(&blob, "arn:key/new").unwrap(),
            RewrapPlan::RewrapKey
        );
        assert_eq!(wrapping_key_arn(&blob), Some("arn:key/old"));
        let legacy = [0x01, 0x02, 0x02, 0x00, 0x78];
        assert_eq!(
            rewrap_plan(&legacy, "arn:key/new").unwrap(),
            RewrapPlan::Convert
        );
        assert_eq!(wrapping_key_arn(&legacy), None);
        assert!(matches!(
            rewrap_plan(&blob[..8], "arn:key/new"),
            Err(SealError::InvalidCiphertext)
        ));
    }

    #[test]
    fn endpoint_secret_list_round_trips() {
        let list = vec![
            SealedEndpointSecret {
                ciphertext: vec![1, 2],
                created_at: 10,
                expires_at: None,
            },
            SealedEndpointSecret {
                ciphertext: vec![3],
                created_at: 5,
                expires_at: Some(100),
            },
        ];
        let item = Item::from([(
            crate::endpoints::attr::SECRETS.to_owned(),
            AttributeValue::L(list.iter().map(|s| s.to_attribute()).collect()),
        )]);
        assert_eq!(SealedEndpointSecret::list_from_item(&item), list);
        assert!(list[1].is_active(99) && !list[1].is_active(100));
    }
}
