//! Endpoint signing keys, decrypted once and kept in memory for a few minutes.
//!
//! A warm delivery makes no KMS call (SPEC §9). Entries are keyed by tenant and endpoint and carry
//! a fingerprint of the endpoint's sealed `secrets` list as read with the delivery, so a rotation
//! (new list) is picked up by the very next delivery rather than after the TTL. A rotated-out
//! secret stops signing at its `expires_at` even while its entry is cached. Concurrent misses for
//! one endpoint (a burst in one batch) share a single decryption.
//!
//! Keys live only in this process's memory: never on disk, never in a log (`SigningKey`'s `Debug`
//! is redacted).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use sluice::{
    sealing::{SealContext, SealError, SealedEndpointSecret, Sealer},
    webhook_signature::SigningKey,
};
use tokio::sync::{OnceCell, RwLock};

/// How long decrypted keys are reused.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// Above this many endpoints, expired entries are swept on insert.
const SWEEP_ABOVE: usize = 10_000;

/// Why no signing key is available.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// KMS failed or refused a ciphertext.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A decrypted secret is not `whsec_` + base64.
    #[error("an endpoint secret is malformed")]
    Malformed,
    /// The endpoint has no active secret.
    #[error("the endpoint has no active signing secret")]
    NoSecret,
}

#[derive(Debug)]
struct CachedKey {
    key: SigningKey,
    expires_at: Option<i64>,
}

#[derive(Debug)]
struct Slot {
    fingerprint: [u8; 32],
    created: Instant,
    keys: OnceCell<Arc<Vec<CachedKey>>>,
}

/// The cache; one per process, shared by every message of every batch.
#[derive(Debug)]
pub struct SecretCache {
    ttl: Duration,
    slots: RwLock<HashMap<(String, String), Arc<Slot>>>,
}

impl Default for SecretCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

fn fingerprint(sealed: &[SealedEndpointSecret]) -> [u8; 32] {
    let mut h = Sha256::new();
    for s in sealed {
        h.update((s.ciphertext.len() as u64).to_be_bytes());
        h.update(&s.ciphertext);
        h.update(s.created_at.to_be_bytes());
        h.update(s.expires_at.unwrap_or(i64::MAX).to_be_bytes());
    }
    h.finalize().into()
}

impl SecretCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        SecretCache {
            ttl,
            slots: RwLock::new(HashMap::new()),
        }
    }

    /// The keys that sign for this endpoint now (newest first): from memory when the entry is
    /// fresh and the endpoint's `secrets` are unchanged, else one KMS `Decrypt` per active secret.
    pub async fn signing_keys(
        &self,
        sealer: &Sealer,
        tenant_id: &str,
        endpoint_id: &str,
        sealed: &[SealedEndpointSecret],
        now_epoch: i64,
    ) -> Result<Vec<SigningKey>, KeyError> {
        let slot = self.slot(tenant_id, endpoint_id, sealed).await;
        let keys = slot
            .keys
            .get_or_try_init(|| decrypt(sealer, tenant_id, sealed, now_epoch))
            .await?;
        let active: Vec<SigningKey> = keys
            .iter()
            .filter(|k| k.expires_at.is_none_or(|at| at > now_epoch))
            .map(|k| k.key.clone())
            .collect();
        if active.is_empty() {
            return Err(KeyError::NoSecret);
        }
        Ok(active)
    }

    async fn slot(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        sealed: &[SealedEndpointSecret],
    ) -> Arc<Slot> {
        let fp = fingerprint(sealed);
        let usable = |slot: &Slot| slot.fingerprint == fp && slot.created.elapsed() < self.ttl;
        let key = (tenant_id.to_owned(), endpoint_id.to_owned());
        if let Some(slot) = self.slots.read().await.get(&key)
            && usable(slot)
        {
            return slot.clone();
        }
        let mut slots = self.slots.write().await;
        if let Some(slot) = slots.get(&key)
            && usable(slot)
        {
            return slot.clone();
        }
        if slots.len() >= SWEEP_ABOVE {
            slots.retain(|_, s| s.created.elapsed() < self.ttl);
        }
        let slot = Arc::new(Slot {
            fingerprint: fp,
            created: Instant::now(),
            keys: OnceCell::new(),
        });
        slots.insert(key, slot.clone());
        slot
    }
}

async fn decrypt(
    sealer: &Sealer,
    tenant_id: &str,
    sealed: &[SealedEndpointSecret],
    now_epoch: i64,
) -> Result<Arc<Vec<CachedKey>>, KeyError> {
    let active: Vec<&SealedEndpointSecret> =
        sealed.iter().filter(|s| s.is_active(now_epoch)).collect();
    let opened = futures::future::join_all(
        active
            .iter()
            .map(|s| sealer.open_secret(SealContext::endpoint_secret(tenant_id), &s.ciphertext)),
    )
    .await;
    let mut keys = Vec::with_capacity(active.len());
    for (sealed, secret) in active.into_iter().zip(opened) {
        let key = SigningKey::from_secret(secret?.expose()).map_err(|_| KeyError::Malformed)?;
        keys.push(CachedKey {
            key,
            expires_at: sealed.expires_at,
        });
    }
    Ok(Arc::new(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(ct: &[u8], created_at: i64, expires_at: Option<i64>) -> SealedEndpointSecret {
        SealedEndpointSecret {
            ciphertext: ct.to_vec(),
            created_at,
            expires_at,
        }
    }

    #[test]
    fn a_rotation_changes_the_fingerprint() {
        let before = vec![sealed(b"a", 1, None)];
        let after = vec![sealed(b"b", 2, None), sealed(b"a", 1, Some(100))];
        assert_ne!(fingerprint(&before), fingerprint(&after));
        assert_eq!(fingerprint(&after), fingerprint(&after.clone()));
        // Field boundaries are unambiguous.
        assert_ne!(
            fingerprint(&[sealed(b"ab", 1, None)]),
            fingerprint(&[sealed(b"a", 1, None), sealed(b"b", 1, None)])
        );
    }
}
