//! KMS sealing of secrets at rest: endpoint signing secrets and tenants' provider keys.
//!
//! Every ciphertext is produced by KMS `Encrypt` under the configured key with an encryption
//! context `{"tenant_id": …, "purpose": …}`. KMS authenticates the context, so a ciphertext copied
//! onto another tenant's item (or used for another purpose) fails to decrypt. There is no
//! plaintext fallback: a value that does not open is an error, never "maybe it was stored in
//! clear".
//!
//! Decrypt does not name a key: symmetric ciphertexts carry their key id, so secrets sealed under
//! an older key keep opening until [`Sealer::rewrap`] has moved them to the current one.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::{error::ProvideErrorMetadata, primitives::Blob};

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
    /// KMS could not be reached or refused the call.
    #[error("KMS request failed: {0}")]
    Kms(String),
}

impl From<SealError> for ApiError {
    fn from(err: SealError) -> Self {
        ApiError::internal(err)
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

/// A KMS failure: a ciphertext that does not open under its key and context (tampered, or moved to
/// another tenant's item) is `InvalidCiphertext`; anything else is a KMS error (retryable).
fn kms_error<E>(err: aws_sdk_kms::error::SdkError<E>) -> SealError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
            SealError::InvalidCiphertext
        }
        _ => SealError::Kms(aws_sdk_kms::error::DisplayErrorContext(err).to_string()),
    }
}

impl Sealer {
    /// A sealer for `key_id`.
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Sealer {
            kms,
            key_id: key_id.into(),
        }
    }

    /// Encrypts `plaintext` under the configured key, bound to `ctx`. One KMS `Encrypt`.
    pub async fn seal(&self, ctx: SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let out = self
            .kms
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
            .encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
            .send()
            .await
            .map_err(kms_error)?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| SealError::Kms("Encrypt returned no ciphertext".into()))
    }

    /// Decrypts a ciphertext sealed under `ctx`. One KMS `Decrypt`.
    pub async fn open(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
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
            .map(Blob::into_inner)
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

    /// Re-encrypts a ciphertext under the configured (current) key with the same context, without
    /// the plaintext leaving KMS. One KMS `ReEncrypt`.
    pub async fn rewrap(
        &self,
        ctx: SealContext<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let out = self
            .kms
            .re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .source_encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
            .source_encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
            .destination_key_id(&self.key_id)
            .destination_encryption_context(CONTEXT_TENANT_ID, ctx.tenant_id)
            .destination_encryption_context(CONTEXT_PURPOSE, ctx.purpose.as_str())
            .send()
            .await
            .map_err(kms_error)?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| SealError::Kms("ReEncrypt returned no ciphertext".into()))
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
/// Attribute of an endpoint item holding its sealed signing secrets (newest first).
pub const ENDPOINT_SECRETS: &str = "secrets";
/// Attribute of an endpoint item counting changes of `secrets`: every rewrite of the list is
/// conditioned on it, so concurrent rotations (or a rotation and a rewrap) never lose a secret.
pub const ENDPOINT_SECRETS_VERSION: &str = "secrets_version";

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
        let Some(AttributeValue::L(list)) = item.get(ENDPOINT_SECRETS) else {
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
            ENDPOINT_SECRETS.to_owned(),
            AttributeValue::L(list.iter().map(|s| s.to_attribute()).collect()),
        )]);
        assert_eq!(SealedEndpointSecret::list_from_item(&item), list);
        assert!(list[1].is_active(99) && !list[1].is_active(100));
    }
}
