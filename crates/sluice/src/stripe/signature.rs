//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`.
//!
//! Signed content is `"{t}.{raw body}"`, HMAC-SHA256, lowercase hex; the key is the secret string
//! exactly as configured (`whsec_` included). A request is valid if any `v1` matches any of the
//! configured secrets (rotation, several Stripe endpoints); `v0` and unknown schemes are ignored.
//! Every comparison is constant-time. The timestamp must lie within the tolerance on either side
//! of now: a replay of an old request and a request "from the future" are both refused.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signature.
pub const HEADER: &str = "stripe-signature";
/// Largest body accepted (1 MiB); larger answers `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest header worth parsing; Stripe's are ~150 bytes, a few hundred with rotation.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Why a request's signature was refused. Each variant is one problem type, named in the answer;
/// none carries secret material or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the Stripe-Signature header carries no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches any configured signing secret")]
    NoMatch,
    #[error("the signature timestamp is {0} s in the past, beyond the tolerance of {1} s")]
    TooOld(i64, u64),
    #[error("the signature timestamp is {0} s in the future, beyond the tolerance of {1} s")]
    InFuture(i64, u64),
}

impl SignatureError {
    /// The problem-type slug of the `400` answer.
    pub fn slug(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader => "missing-signature",
            SignatureError::Malformed(_) => "malformed-signature",
            SignatureError::NoV1Signature => "missing-v1-signature",
            SignatureError::NoMatch => "invalid-signature",
            SignatureError::TooOld(..) | SignatureError::InFuture(..) => {
                "signature-timestamp-out-of-tolerance"
            }
        }
    }

    /// The problem title of the `400` answer.
    pub fn title(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader => "Missing Stripe-Signature header",
            SignatureError::Malformed(_) => "Malformed Stripe-Signature header",
            SignatureError::NoV1Signature => "No v1 signature",
            SignatureError::NoMatch => "Invalid signature",
            SignatureError::TooOld(..) | SignatureError::InFuture(..) => {
                "Signature timestamp outside the tolerance"
            }
        }
    }
}

impl From<SignatureError> for crate::ApiError {
    fn from(err: SignatureError) -> Self {
        crate::ApiError::bad_request_as(err.slug(), err.title(), err.to_string())
    }
}

/// The parts of a `Stripe-Signature` header that matter.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedHeader {
    /// `t`, Unix seconds.
    pub timestamp: i64,
    /// Every `v1` value, decoded; a value that is not 64 hex digits can never match and is dropped.
    pub v1: Vec<[u8; 32]>,
}

/// Parses a header value. Unknown schemes (`v0`, future ones) are skipped, as Stripe's libraries do.
pub fn parse_header(value: &str) -> Result<ParsedHeader, SignatureError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed("longer than 8 KiB"));
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut saw_v1 = false;
    for element in value.split(',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        let (key, val) = element
            .split_once('=')
            .ok_or(SignatureError::Malformed("an element is not `key=value`"))?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one `t` element"));
                }
                let t: i64 = val
                    .trim()
                    .parse()
                    .map_err(|_| SignatureError::Malformed("`t` is not a Unix timestamp"))?;
                timestamp = Some(t);
            }
            "v1" => {
                saw_v1 = true;
                let mut sig = [0u8; 32];
                if hex::decode_to_slice(val.trim(), &mut sig).is_ok() {
                    v1.push(sig);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no `t` element"))?;
    if !saw_v1 {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(ParsedHeader { timestamp, v1 })
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies `header` (the `Stripe-Signature` value, `None` if absent) over the raw `body` against
/// every secret; returns the signed timestamp. `now` is Unix seconds.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    tolerance: Duration,
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let parsed = parse_header(header)?;
    // Every (secret, signature) pair is checked with `verify_slice`, which compares in constant time.
    let matched = secrets.iter().any(|secret| {
        let expected = mac(secret, parsed.timestamp, body);
        parsed
            .v1
            .iter()
            .any(|sig| expected.clone().verify_slice(sig).is_ok())
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    let tolerance_secs = tolerance.as_secs();
    let age = now.saturating_sub(parsed.timestamp);
    if age > tolerance_secs as i64 {
        return Err(SignatureError::TooOld(age, tolerance_secs));
    }
    if -age > tolerance_secs as i64 {
        return Err(SignatureError::InFuture(-age, tolerance_secs));
    }
    Ok(parsed.timestamp)
}

/// A `Stripe-Signature` header value for `body` signed with `secret` at `timestamp` (what Stripe
/// sends; used by `sluice-local trigger` and the tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(300);

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_shared_known_answer_vectors_agree() {
        let text = include_str!("../../../../tests/fixtures/signature-vectors.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let vectors = doc["stripe"].as_array().unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let secret = v["secret"].as_str().unwrap();
            let t = v["timestamp"].as_i64().unwrap();
            let payload = v["payload"].as_str().unwrap().as_bytes();
            let header = v["header"].as_str().unwrap();
            let result = verify(Some(header), payload, &secrets(&[secret]), TOL, t);
            assert_eq!(result.is_ok(), v["valid"].as_bool().unwrap(), "{v}");
            if v["valid"].as_bool().unwrap() {
                // Our signer produces the vector's v1 for the same input.
                let ours = sign(secret, t, payload);
                assert!(header.contains(ours.split_once(",v1=").unwrap().1), "{v}");
            }
        }
    }

    #[test]
    fn any_v1_may_match_any_secret() {
        let body = br#"{"id":"evt_1"}"#;
        let header = format!(
            "t=100,v1={},{}",
            "00".repeat(32),
            sign("whsec_new", 100, body).split_once(',').unwrap().1
        );
        let all = secrets(&["whsec_old", "whsec_new"]);
        assert_eq!(verify(Some(&header), body, &all, TOL, 100), Ok(100));
        assert_eq!(
            verify(Some(&header), body, &secrets(&["whsec_old"]), TOL, 100),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn the_timestamp_is_checked_both_ways() {
        let body = b"{}";
        let header = sign("whsec_a", 1_000, body);
        let s = secrets(&["whsec_a"]);
        assert!(verify(Some(&header), body, &s, TOL, 1_300).is_ok());
        assert!(verify(Some(&header), body, &s, TOL, 700).is_ok());
        assert_eq!(
            verify(Some(&header), body, &s, TOL, 1_301),
            Err(SignatureError::TooOld(301, 300))
        );
        assert_eq!(
            verify(Some(&header), body, &s, TOL, 699),
            Err(SignatureError::InFuture(301, 300))
        );
    }

    #[test]
    fn every_malformed_header_names_its_cause() {
        let s = secrets(&["whsec_a"]);
        let check = |h: Option<&str>| verify(h, b"{}", &s, TOL, 0).unwrap_err();
        assert_eq!(check(None), SignatureError::MissingHeader);
        assert!(matches!(
            check(Some("garbage")),
            SignatureError::Malformed(_)
        ));
        assert!(matches!(
            check(Some("v1=abcd")),
            SignatureError::Malformed(_)
        ));
        assert!(matches!(
            check(Some("t=soon,v1=ab")),
            SignatureError::Malformed(_)
        ));
        assert!(matches!(
            check(Some("t=1,t=2,v1=ab")),
            SignatureError::Malformed(_)
        ));
        assert_eq!(check(Some("t=0,v0=abcd")), SignatureError::NoV1Signature);
        assert_eq!(check(Some("t=0,v1=not-hex")), SignatureError::NoMatch);
        let slugs: Vec<_> = [
            SignatureError::MissingHeader,
            SignatureError::Malformed("x"),
            SignatureError::NoV1Signature,
            SignatureError::NoMatch,
            SignatureError::TooOld(1, 0),
        ]
        .iter()
        .map(SignatureError::slug)
        .collect();
        let mut unique = slugs.clone();
        unique.dedup();
        assert_eq!(slugs, unique, "each cause has its own problem type");
    }
}
