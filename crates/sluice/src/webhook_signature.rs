//! Standard Webhooks signing and verification (what egress sends and what receivers check).
//!
//! Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, HMAC-SHA256, base64; the key is
//! the base64-decoded part of the secret after `whsec_`. During a secret rotation a request carries
//! one `v1,<base64>` signature per secret, space-separated; a receiver accepts it if any `v1`
//! signature matches any of its secrets.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Default receiver tolerance for the timestamp, past and future (Standard Webhooks: 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a secret, a signature or a request was refused. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signing secret is not `whsec_` followed by base64")]
    BadSecret,
    #[error("the webhook-timestamp header is not a Unix timestamp")]
    BadTimestamp,
    #[error("the webhook-timestamp is outside the tolerance")]
    StaleTimestamp,
    #[error("the webhook-signature header carries no v1 signature")]
    NoSignature,
    #[error("no signature matches")]
    NoMatch,
}

/// A decoded HMAC key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(redacted)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>` (the prefix is optional, as in the Standard Webhooks libraries).
    pub fn from_secret(secret: &str) -> Result<Self, SignatureError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SignatureError::BadSecret)?;
        if key.is_empty() {
            return Err(SignatureError::BadSecret);
        }
        Ok(SigningKey(key))
    }

    /// The raw HMAC over `"{msg_id}.{timestamp}.{payload}"`.
    fn mac(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// One `v1,<base64>` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(msg_id, timestamp, payload))
        )
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` per key, space-separated, in order.
pub fn sign(keys: &[SigningKey], msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, payload))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signs with secret strings (`whsec_…`); convenience for callers that do not cache keys.
pub fn sign_with_secrets(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> Result<String, SignatureError> {
    let keys = secrets
        .iter()
        .map(|s| SigningKey::from_secret(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sign(&keys, msg_id, timestamp, payload))
}

/// Verifies a request as a receiver would: the timestamp within `tolerance_secs` of `now` (past or
/// future), and any `v1` signature of the header matching any key, compared in constant time.
pub fn verify(
    keys: &[SigningKey],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    payload: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::StaleTimestamp);
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    // Every comparison runs, so the time taken says nothing about which key or signature matched.
    let mut matched = subtle::Choice::from(0u8);
    for key in keys {
        let expected = key.mac(msg_id, timestamp, payload);
        for candidate in &candidates {
            matched |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/signature-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("the signature vectors are in the repo");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let list = doc["standard_webhooks"].as_array().unwrap().clone();
        assert!(!list.is_empty());
        list
    }

    #[test]
    fn signatures_agree_with_the_standard_webhooks_vectors() {
        for v in vectors() {
            let key = SigningKey::from_secret(v["secret"].as_str().unwrap()).unwrap();
            let ts = v["timestamp"].as_i64().unwrap();
            let id = v["msg_id"].as_str().unwrap();
            let payload = v["payload"].as_str().unwrap().as_bytes();
            assert_eq!(key.sign(id, ts, payload), v["signature"].as_str().unwrap());
            verify(
                &[key],
                id,
                &ts.to_string(),
                v["signature"].as_str().unwrap(),
                payload,
                ts,
                DEFAULT_TOLERANCE_SECS,
            )
            .unwrap();
        }
    }

    #[test]
    fn several_secrets_give_several_signatures_and_each_verifies_alone() {
        let v = vectors();
        let (old, new) = (
            v[0]["secret"].as_str().unwrap(),
            v[1]["secret"].as_str().unwrap(),
        );
        let header = sign_with_secrets(&[new, old], "msg_1", 1000, b"{}").unwrap();
        assert_eq!(header.split(' ').count(), 2);
        for secret in [old, new] {
            let key = SigningKey::from_secret(secret).unwrap();
            verify(&[key], "msg_1", "1000", &header, b"{}", 1000, 300).unwrap();
        }
        let other = SigningKey::from_secret("whsec_b3RoZXIgc2VjcmV0").unwrap();
        assert_eq!(
            verify(&[other], "msg_1", "1000", &header, b"{}", 1000, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn tampering_and_stale_timestamps_are_refused() {
        let v = &vectors()[0];
        let key = SigningKey::from_secret(v["secret"].as_str().unwrap()).unwrap();
        let ts = v["timestamp"].as_i64().unwrap();
        let id = v["msg_id"].as_str().unwrap();
        let sig = v["signature"].as_str().unwrap();
        let payload = v["payload"].as_str().unwrap().as_bytes();
        let ok = |id: &str, ts_header: &str, sig: &str, payload: &[u8], now: i64| {
            verify(
                std::slice::from_ref(&key),
                id,
                ts_header,
                sig,
                payload,
                now,
                300,
            )
        };
        let mut longer = payload.to_vec();
        longer.push(b' ');
        assert_eq!(
            ok(id, &ts.to_string(), sig, &longer, ts),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            ok("msg_other", &ts.to_string(), sig, payload, ts),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            ok(id, &ts.to_string(), sig, payload, ts + 301),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            ok(id, &ts.to_string(), sig, payload, ts - 301),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            ok(id, "soon", sig, payload, ts),
            Err(SignatureError::BadTimestamp)
        );
        let v2_only = sig.replacen("v1,", "v2,", 1);
        assert_eq!(
            ok(id, &ts.to_string(), &v2_only, payload, ts),
            Err(SignatureError::NoSignature)
        );
        // A garbled signature next to a valid one does not hide the valid one.
        let mixed = format!("v1,!!notbase64 v1a,xyz {sig}");
        assert_eq!(ok(id, &ts.to_string(), &mixed, payload, ts), Ok(()));
    }

    #[test]
    fn secrets_must_be_base64_and_never_show_in_debug() {
        assert_eq!(
            SigningKey::from_secret("whsec_not base64!"),
            Err(SignatureError::BadSecret)
        );
        assert_eq!(
            SigningKey::from_secret("whsec_"),
            Err(SignatureError::BadSecret)
        );
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(redacted)");
    }
}
