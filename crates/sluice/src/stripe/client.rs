//! A thin typed client of the Stripe API, for the API function's billing routes (`/v1/billing/*`).
//!
//! Hand-written over the workspace's `reqwest` (rustls) rather than `async-stripe`: three
//! form-encoded `POST`s are all Sluice calls, and `async-stripe`'s generated resource crates would
//! add a large dependency tree to the API function's build for them.
//!
//! Invariants:
//! - The API version is pinned in [`API_VERSION`], sent on every request (`Stripe-Version`).
//! - Every `POST` carries an `Idempotency-Key` chosen by the caller (derived from the tenant, or
//!   from the tenant's own `Idempotency-Key` and request fingerprint), so a retry — ours or the
//!   client's — is the same request to Stripe and never creates a second object.
//! - Connection errors, `429`, `5xx` and `409` (an idempotent request still running at Stripe) are
//!   retried with exponential backoff, at most [`MAX_ATTEMPTS`] times and within [`DEADLINE`]
//!   (below the API function's 29 s timeout); `Stripe-Should-Retry` overrides the status both
//!   ways ([`retry_delay`], pure).
//! - A client never sees Stripe's body: a refusal (`4xx`) is answered with Stripe's error `code`
//!   and request id, anything else as `502 stripe-unavailable` carrying the request id.
//! - The secret key is read once per cold start: a KMS ciphertext (one `kms:Decrypt`, encryption
//!   context `purpose=stripe-api-key`) or, locally, a plaintext `STRIPE_API_KEY`.
//!
//! AWS cost: one `kms:Decrypt` per cold start (at the first billing call), none afterwards.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::{ApiError, config::StripeKeySource};

/// The Stripe API version every request asks for.
pub const API_VERSION: &str = "2024-06-20";
/// One attempt's timeout.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// All attempts of one call end by then: below the API function's 29 s timeout, leaving time for
/// the DynamoDB writes around the call.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Attempts of one call, the first included.
pub const MAX_ATTEMPTS: u32 = 3;
/// First backoff; doubled per attempt.
pub const BASE_BACKOFF: Duration = Duration::from_millis(300);
/// The encryption context `STRIPE_API_KEY_CIPHERTEXT` must be made with.
pub const KEY_CONTEXT: (&str, &str) = ("purpose", "stripe-api-key");

/// The origin (`scheme://host[:port]`) of an http(s) URL, as origins are compared.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

/// How long to wait before attempt `attempt + 1`, or `None` to stop. `status` is `None` for a
/// connection error or timeout (the request may or may not have reached Stripe: the
/// idempotency key makes the retry safe).
pub fn retry_delay(
    attempt: u32,
    status: Option<u16>,
    should_retry: Option<bool>,
) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let retry = match (should_retry, status) {
        // Stripe knows best: e.g. `false` on a 500 whose effect is known to have applied.
        (Some(decision), _) => decision,
        (None, None) => true,
        (None, Some(s)) => s == 409 || s == 429 || s >= 500,
    };
    retry.then(|| BASE_BACKOFF * 2u32.pow(attempt.saturating_sub(1)))
}

/// Why a Stripe call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeError {
    /// Stripe refused the request (`4xx` other than auth and rate limits): the request is wrong
    /// for Stripe (an unknown price, a declined card).
    Refused {
        status: u16,
        code: Option<String>,
        request_id: Option<String>,
    },
    /// Stripe did not answer, failed, or refused our credentials: retryable, the operator's
    /// concern, never the tenant's.
    Unavailable {
        status: Option<u16>,
        request_id: Option<String>,
    },
}

/// Classifies a final (not retried) HTTP answer.
pub fn classify(status: u16, code: Option<String>, request_id: Option<String>) -> StripeError {
    match status {
        400..=499 if !matches!(status, 401 | 403 | 409 | 429) => StripeError::Refused {
            status,
            code,
            request_id,
        },
        _ => StripeError::Unavailable {
            status: Some(status),
            request_id,
        },
    }
}

impl From<StripeError> for ApiError {
    fn from(err: StripeError) -> ApiError {
        let rid = |r: &Option<String>| r.as_deref().unwrap_or("none").to_owned();
        match err {
            StripeError::Refused {
                status,
                code,
                request_id,
            } => {
                let detail = format!(
                    "Stripe refused the request: {} (Stripe request-id {})",
                    code.as_deref().unwrap_or("no error code"),
                    rid(&request_id)
                );
                if status == 402 {
                    ApiError::Client {
                        status: StatusCode::PAYMENT_REQUIRED,
                        slug: "stripe-payment-refused",
                        title: "Payment refused by Stripe",
                        detail,
                        retry_after: None,
                    }
                } else {
                    ApiError::unprocessable("stripe-refused", "Refused by Stripe", detail)
                }
            }
            StripeError::Unavailable { request_id, .. } => ApiError::Client {
                status: StatusCode::BAD_GATEWAY,
                slug: "stripe-unavailable",
                title: "Stripe unavailable",
                detail: format!(
                    "Stripe did not complete the request (Stripe request-id {}); it is safe to \
                     retry",
                    rid(&request_id)
                ),
                retry_after: Some(2),
            },
        }
    }
}

/// The Stripe API, with the key decrypted on first use and cached for the instance's life.
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    source: StripeKeySource,
    kms: aws_sdk_kms::Client,
    kms_key_id: String,
    key: tokio::sync::OnceCell<Zeroizing<String>>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    /// A client of `base` (`https://api.stripe.com`, or a local stand-in).
    pub fn new(
        base: &str,
        source: StripeKeySource,
        kms: aws_sdk_kms::Client,
        kms_key_id: &str,
    ) -> Result<Self, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("Sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .build()?;
        Ok(StripeClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            source,
            kms,
            kms_key_id: kms_key_id.to_owned(),
            key: tokio::sync::OnceCell::new(),
        })
    }

    async fn secret(&self) -> Result<&str, ApiError> {
        let key = self
            .key
            .get_or_try_init(|| async {
                match &self.source {
                    StripeKeySource::Plain(k) => Ok(Zeroizing::new(k.clone())),
                    StripeKeySource::KmsCiphertext(blob) => {
                        let out = self
                            .kms
                            .decrypt()
                            .key_id(&self.kms_key_id)
                            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob.clone()))
                            .encryption_context(KEY_CONTEXT.0, KEY_CONTEXT.1)
                            .send()
                            .await
                            .map_err(|e| {
                                ApiError::internal(anyhow::anyhow!(
                                    "decrypting STRIPE_API_KEY_CIPHERTEXT: {}",
                                    aws_sdk_kms::error::DisplayErrorContext(e)
                                ))
                            })?;
                        let plain = out
                            .plaintext()
                            .map(|b| b.as_ref().to_vec())
                            .unwrap_or_default();
                        String::from_utf8(plain).map(Zeroizing::new).map_err(|_| {
                            ApiError::internal(anyhow::anyhow!(
                                "STRIPE_API_KEY_CIPHERTEXT does not decrypt to text"
                            ))
                        })
                    }
                }
            })
            .await?;
        Ok(key.as_str())
    }

    /// `POST {base}{path}` with form-encoded `params` (Stripe's `a[b]` names) and
    /// `Idempotency-Key: idempotency_key`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, ApiError> {
        self.call(path, Some((params, idempotency_key))).await
    }

    /// `GET {base}{path_and_query}` (a read: retried like a `POST`, no idempotency key needed).
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ApiError> {
        self.call(path_and_query, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        post: Option<(&[(String, String)], &str)>,
    ) -> Result<T, ApiError> {
        let body = post.map(|(params, key)| {
            let form = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            (form, key)
        });
        let key = self.secret().await?;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = format!("{}{path}", self.base);
            let req = match &body {
                Some((form, idempotency_key)) => self
                    .http
                    .post(url)
                    .header("Idempotency-Key", *idempotency_key)
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.clone()),
                None => self.http.get(url),
            };
            let sent = req
                .bearer_auth(key)
                .header("Stripe-Version", API_VERSION)
                .send()
                .await;
            let (status, should_retry, request_id, res) = match sent {
                Ok(res) => {
                    let header = |name: &str| {
                        res.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from)
                    };
                    let should_retry = header("stripe-should-retry").map(|v| v == "true");
                    (
                        Some(res.status().as_u16()),
                        should_retry,
                        header("request-id"),
                        Some(res),
                    )
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, path, "Stripe request failed");
                    (None, None, None, None)
                }
            };
            let res = match res {
                Some(res) if res.status().is_success() => {
                    let bytes = res.bytes().await.map_err(|e| unavailable(&request_id, e))?;
                    return serde_json::from_slice(&bytes).map_err(|e| unavailable(&request_id, e));
                }
                other => other,
            };
            let delay = retry_delay(attempt, status, should_retry)
                .filter(|d| started.elapsed() + *d + ATTEMPT_TIMEOUT <= DEADLINE);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
                continue;
            }
            let (Some(status), Some(res)) = (status, res) else {
                return Err(StripeError::Unavailable {
                    status: None,
                    request_id,
                }
                .into());
            };
            // Only the error's `code` leaves this function (Stripe's message is logged).
            let body: serde_json::Value = res.json_or_null().await;
            let error = &body["error"];
            let code = error["decline_code"]
                .as_str()
                .or(error["code"].as_str())
                .or(error["type"].as_str())
                .map(String::from);
            tracing::warn!(
                status,
                request_id,
                attempt,
                path,
                code,
                message = error["message"].as_str(),
                "Stripe answered an error"
            );
            return Err(classify(status, code, request_id).into());
        }
    }
}

/// Reads a JSON body; anything else reads as `null`.
trait JsonOrNull {
    async fn json_or_null(self) -> serde_json::Value;
}

impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> serde_json::Value {
        match self.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}

fn unavailable(request_id: &Option<String>, err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, request_id, "Stripe's answer could not be read");
    StripeError::Unavailable {
        status: None,
        request_id: request_id.clone(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_connection_errors_429_409_and_5xx_with_growing_backoff() {
        assert_eq!(retry_delay(1, None, None), Some(BASE_BACKOFF));
        assert_eq!(retry_delay(2, Some(500), None), Some(BASE_BACKOFF * 2));
        assert!(retry_delay(1, Some(429), None).is_some());
        assert!(retry_delay(1, Some(409), None).is_some());
        assert!(retry_delay(1, Some(503), None).is_some());
        assert_eq!(retry_delay(MAX_ATTEMPTS, Some(500), None), None);
        for refused in [400, 401, 402, 404] {
            assert_eq!(retry_delay(1, Some(refused), None), None, "{refused}");
        }
    }

    #[test]
    fn stripe_should_retry_overrides_the_status_both_ways() {
        assert_eq!(retry_delay(1, Some(500), Some(false)), None);
        assert!(retry_delay(1, Some(400), Some(true)).is_some());
        assert_eq!(retry_delay(MAX_ATTEMPTS, Some(400), Some(true)), None);
    }

    #[test]
    fn refusals_are_4xx_with_the_code_and_the_rest_502_with_the_request_id() {
        let refused: ApiError =
            classify(402, Some("card_declined".into()), Some("req_1".into())).into();
        assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
        assert!(refused.to_string().contains("card_declined"));
        assert!(refused.to_string().contains("req_1"));
        let invalid: ApiError = classify(400, Some("resource_missing".into()), None).into();
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        for status in [401, 403, 429, 500, 503] {
            let err: ApiError = classify(status, None, Some("req_9".into())).into();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{status}");
            assert!(err.to_string().contains("req_9"));
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://app.example.com/billing?x=1").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin_of("https://app.example.com:443/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin_of("http://localhost:5173/x").as_deref(),
            Some("http://localhost:5173")
        );
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert_eq!(origin_of("/relative"), None);
    }
}
