//! Configuration, read once at cold start into a typed struct.
//!
//! A missing or invalid setting fails start-up with a message naming the variable.
//!
//! # The egress time budget
//!
//! One number, `EGRESS_TIMEOUT_SECS`, bounds a delivery request; the rest follows from it:
//! request ≤ `EGRESS_TIMEOUT_SECS` ≤ [`EGRESS_TIMEOUT_MAX`] = [`EGRESS_FUNCTION_TIMEOUT`] −
//! [`EGRESS_BOOKKEEPING`]; the delivery's lease (its claim) lasts `EGRESS_TIMEOUT_SECS` +
//! [`EGRESS_BOOKKEEPING`] ([`Config::egress_lease`]), so at most the function's timeout, which is
//! below the delivery queue's visibility timeout (a test checks `template.yaml` agrees). A message
//! that comes back after a crashed or timed-out invocation therefore finds the lease expired.
//! A setting above the maximum fails start-up (rather than being clamped): the template's
//! parameter bounds already refuse it, so only a hand-edited environment gets here.

use std::time::Duration;

use ipnet::IpNet;

/// The egress function's `Timeout` in `template.yaml`.
pub const EGRESS_FUNCTION_TIMEOUT: Duration = Duration::from_secs(45);
/// What an egress invocation needs beside the request itself: claiming and reading (with SDK
/// retries), unsealing the signing keys, then recording the attempt.
pub const EGRESS_BOOKKEEPING: Duration = Duration::from_secs(15);
/// The longest `EGRESS_TIMEOUT_SECS` (the template parameter's `MaxValue`).
pub const EGRESS_TIMEOUT_MAX: Duration =
    Duration::from_secs(EGRESS_FUNCTION_TIMEOUT.as_secs() - EGRESS_BOOKKEEPING.as_secs());

/// Why the configuration could not be read; always names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// All settings of the three functions. Function-specific requirements (the admin key digest for
/// the API, the Stripe secrets for ingress) are checked by [`Config::require_admin_key`] and
/// [`Config::require_stripe_secrets`] in the function's `main`.
#[derive(Clone)]
pub struct Config {
    /// `TABLE_NAME`: the single DynamoDB table.
    pub table_name: String,
    /// `QUEUE_URL`: the delivery queue (one message per event × endpoint).
    pub queue_url: String,
    /// `KMS_KEY_ID`: key id, ARN or alias that seals secrets at rest.
    pub kms_key_id: String,
    /// `STRIPE_WEBHOOK_SECRETS`: comma-separated `whsec_…` signing secrets.
    pub stripe_webhook_secrets: Vec<String>,
    /// `STRIPE_TOLERANCE_SECS` (default 300): allowed clock skew, past and future.
    pub stripe_tolerance: Duration,
    /// `STRIPE_EVENT_RETENTION_DAYS` (default 30).
    pub stripe_event_retention_days: u32,
    /// `IDEMPOTENCY_TTL_DAYS` (default 7).
    pub idempotency_ttl_days: u32,
    /// `IDEMPOTENCY_REQUIRED` (default false): writes without a key answer 400.
    pub idempotency_required: bool,
    /// `ADMIN_KEY_SHA256`: SHA-256 digest of the admin key, 64 hex chars.
    pub admin_key_sha256: Option<[u8; 32]>,
    /// `EGRESS_ALLOW_CIDRS` (default empty): private ranges endpoints may use anyway.
    pub egress_allow_cidrs: Vec<IpNet>,
    /// `EGRESS_ALLOW_HTTP` (default false): accept `http://` endpoint URLs.
    pub egress_allow_http: bool,
    /// `EGRESS_TIMEOUT_SECS` (default 15, at most [`EGRESS_TIMEOUT_MAX`]): per delivery request.
    pub egress_timeout: Duration,
    /// `EGRESS_DISABLE_AFTER_HOURS` (default 72): failing this long without a success disables.
    pub egress_disable_after_hours: u32,
    /// `API_KEY_CACHE_SECS` (default 60, 0 = off): how long a warm API function trusts an API key
    /// it has looked up — a revoked key stops working within this time.
    pub api_key_cache: Duration,
    /// Stripe API settings of the API function's billing routes ([`BillingConfig`]).
    pub billing: BillingConfig,
    /// The tenant portal's settings ([`PortalConfig`]).
    pub portal: PortalConfig,
}

impl std::fmt::Debug for Config {
    // Secrets never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("table_name", &self.table_name)
            .field("queue_url", &self.queue_url)
            .field("kms_key_id", &self.kms_key_id)
            .field(
                "stripe_webhook_secrets",
                &format_args!("[{} redacted]", self.stripe_webhook_secrets.len()),
            )
            .field("stripe_tolerance", &self.stripe_tolerance)
            .field("idempotency_ttl_days", &self.idempotency_ttl_days)
            .field("idempotency_required", &self.idempotency_required)
            .field("egress_allow_cidrs", &self.egress_allow_cidrs)
            .field("egress_allow_http", &self.egress_allow_http)
            .field("billing", &self.billing)
            .field("portal", &self.portal)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests and the local runner pass their own).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str| {
            get(name).ok_or_else(|| ConfigError {
                name,
                reason: "is required but not set".into(),
            })
        };
        fn parsed<T: std::str::FromStr>(
            name: &'static str,
            value: Option<String>,
            default: T,
        ) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|e| ConfigError {
                    name,
                    reason: format!("invalid value: {e}"),
                }),
            }
        }
        let positive = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = parsed(name, get(name), default)?;
            if v == 0 {
                return Err(ConfigError {
                    name,
                    reason: "must be greater than zero".into(),
                });
            }
            Ok(v)
        };

        let stripe_webhook_secrets = get("STRIPE_WEBHOOK_SECRETS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();

        let admin_key_sha256 = match get("ADMIN_KEY_SHA256") {
            None => None,
            Some(v) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(v.to_ascii_lowercase(), &mut digest).map_err(|_| {
                    ConfigError {
                        name: "ADMIN_KEY_SHA256",
                        reason: "must be 64 hex characters (the SHA-256 of the admin key)".into(),
                    }
                })?;
                Some(digest)
            }
        };

        let egress_allow_cidrs = match get("EGRESS_ALLOW_CIDRS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>().map_err(|e| ConfigError {
                        name: "EGRESS_ALLOW_CIDRS",
                        reason: format!("{s:?} is not a CIDR: {e}"),
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let egress_timeout = Duration::from_secs(positive("EGRESS_TIMEOUT_SECS", 15)?);
        if egress_timeout > EGRESS_TIMEOUT_MAX {
            return Err(ConfigError {
                name: "EGRESS_TIMEOUT_SECS",
                reason: format!(
                    "must be at most {} (the egress function's {} s timeout less {} s to claim, \
                     sign and record a delivery)",
                    EGRESS_TIMEOUT_MAX.as_secs(),
                    EGRESS_FUNCTION_TIMEOUT.as_secs(),
                    EGRESS_BOOKKEEPING.as_secs()
                ),
            });
        }

        Ok(Config {
            table_name: required("TABLE_NAME")?,
            queue_url: required("QUEUE_URL")?,
            kms_key_id: required("KMS_KEY_ID")?,
            stripe_webhook_secrets,
            stripe_tolerance: Duration::from_secs(positive("STRIPE_TOLERANCE_SECS", 300)?),
            stripe_event_retention_days: positive("STRIPE_EVENT_RETENTION_DAYS", 30)? as u32,
            idempotency_ttl_days: positive("IDEMPOTENCY_TTL_DAYS", 7)? as u32,
            idempotency_required: parsed(
                "IDEMPOTENCY_REQUIRED",
                get("IDEMPOTENCY_REQUIRED"),
                false,
            )?,
            admin_key_sha256,
            egress_allow_cidrs,
            egress_allow_http: parsed("EGRESS_ALLOW_HTTP", get("EGRESS_ALLOW_HTTP"), false)?,
            egress_timeout,
            egress_disable_after_hours: positive("EGRESS_DISABLE_AFTER_HOURS", 72)? as u32,
            api_key_cache: Duration::from_secs(parsed(
                "API_KEY_CACHE_SECS",
                get("API_KEY_CACHE_SECS"),
                60,
            )?),
            billing: BillingConfig::from_get(&get)?,
            portal: PortalConfig::from_get(&get)?,
        })
    }

    /// How long a delivery's claim lasts: the request timeout plus the bookkeeping around it,
    /// so never longer than the egress function's timeout (see the module docs).
    pub fn egress_lease(&self) -> Duration {
        self.egress_timeout + EGRESS_BOOKKEEPING
    }

    /// The API function cannot run without the admin key digest.
    pub fn require_admin_key(&self) -> Result<[u8; 32], ConfigError> {
        self.admin_key_sha256.ok_or(ConfigError {
            name: "ADMIN_KEY_SHA256",
            reason: "is required but not set".into(),
        })
    }

    /// The ingress function cannot verify anything without at least one secret.
    pub fn require_stripe_secrets(&self) -> Result<&[String], ConfigError> {
        if self.stripe_webhook_secrets.is_empty() {
            return Err(ConfigError {
                name: "STRIPE_WEBHOOK_SECRETS",
                reason: "is required but not set".into(),
            });
        }
        Ok(&self.stripe_webhook_secrets)
    }
}

/// The tenant portal (`/portal`, served by the API function).
#[derive(Clone, Debug, PartialEq)]
pub struct PortalConfig {
    /// `PORTAL_LINK_TTL_SECS` (default 600): how long a minted sign-in link stays usable (once).
    pub link_ttl: Duration,
    /// `PORTAL_SESSION_TTL_SECS` (default 28800, 8 h): the session cookie's and item's lifetime.
    pub session_ttl: Duration,
    /// `PORTAL_FRAME_ANCESTORS` (default none: `'none'`): the CSP `frame-ancestors` sources that
    /// may embed the portal, space-separated (`https://app.example.com`).
    pub frame_ancestors: Option<String>,
    /// `PORTAL_BASE_URL` (default: the API's own domain): the origin minted links point at.
    pub base_url: Option<String>,
}

impl PortalConfig {
    fn from_get(get: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let secs = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| ConfigError {
                        name,
                        reason: "must be a positive integer (seconds)".into(),
                    }),
            }
        };
        let frame_ancestors = match get("PORTAL_FRAME_ANCESTORS") {
            None => None,
            Some(v) => {
                // Goes verbatim into the CSP header: a `;` or `,` would start another directive
                // or policy, so only source expressions separated by spaces are accepted.
                let sources: Vec<&str> = v.split_ascii_whitespace().collect();
                if sources.iter().any(|s| !valid_csp_source(s)) {
                    return Err(ConfigError {
                        name: "PORTAL_FRAME_ANCESTORS",
                        reason: "must be CSP sources separated by spaces (e.g. \
                                 `https://app.example.com 'self'`)"
                            .into(),
                    });
                }
                Some(sources.join(" "))
            }
        };
        let base_url = match get("PORTAL_BASE_URL") {
            None => None,
            Some(v) => Some(
                crate::stripe::client::origin_of(&v)
                    .filter(|origin| v.trim_end_matches('/') == origin)
                    .ok_or_else(|| ConfigError {
                        name: "PORTAL_BASE_URL",
                        reason: format!("{v:?} is not an http(s) origin (no path)"),
                    })?,
            ),
        };
        Ok(PortalConfig {
            link_ttl: secs("PORTAL_LINK_TTL_SECS", 600)?,
            session_ttl: secs("PORTAL_SESSION_TTL_SECS", 8 * 3600)?,
            frame_ancestors,
            base_url,
        })
    }
}

/// A CSP source expression without anything that could end the directive.
fn valid_csp_source(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"'))
}

/// Where the Stripe secret key comes from. Never plaintext in the deployed configuration.
#[derive(Clone)]
pub enum StripeKeySource {
    /// `STRIPE_API_KEY_CIPHERTEXT`: a KMS ciphertext (base64) of the key under `KMS_KEY_ID` with
    /// encryption context `purpose=stripe-api-key`; one `kms:Decrypt` at first use, then cached.
    KmsCiphertext(Vec<u8>),
    /// `STRIPE_API_KEY`: plaintext, for `make dev` and tests only (the template never sets it).
    Plain(String),
}

/// The API function's billing settings (`/v1/billing/*`). Without a key the routes answer `503`.
#[derive(Clone)]
pub struct BillingConfig {
    /// `STRIPE_API_KEY_CIPHERTEXT` or (locally) `STRIPE_API_KEY`; `None`: billing is off.
    pub stripe_key: Option<StripeKeySource>,
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`): a local stand-in's URL in `make dev`.
    pub stripe_api_base: String,
    /// `STRIPE_PRICES`: comma-separated price ids a tenant may subscribe to.
    pub stripe_prices: Vec<String>,
    /// `BILLING_RETURN_ORIGINS`: comma-separated origins (`https://app.example.com`) that
    /// `success_url`, `cancel_url` and `return_url` must have.
    pub return_origins: Vec<String>,
    /// `BILLING_CREDITS_MIN_MINOR` (default 100) ..= `BILLING_CREDITS_MAX_MINOR` (default
    /// 1 000 000): the amounts a credits checkout accepts.
    pub credits_min_minor: i64,
    pub credits_max_minor: i64,
}

impl std::fmt::Debug for BillingConfig {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field(
                "stripe_key",
                &self.stripe_key.as_ref().map(|_| "[redacted]"),
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .field("stripe_prices", &self.stripe_prices)
            .field("return_origins", &self.return_origins)
            .finish_non_exhaustive()
    }
}

impl BillingConfig {
    fn from_get(get: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        use base64::Engine;
        let list = |name: &'static str| -> Vec<String> {
            get(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let stripe_key = match (get("STRIPE_API_KEY_CIPHERTEXT"), get("STRIPE_API_KEY")) {
            (Some(c), _) => Some(StripeKeySource::KmsCiphertext(
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|_| ConfigError {
                        name: "STRIPE_API_KEY_CIPHERTEXT",
                        reason: "must be base64 (the CiphertextBlob of `aws kms encrypt`)".into(),
                    })?,
            )),
            (None, Some(k)) => Some(StripeKeySource::Plain(k)),
            (None, None) => None,
        };
        let return_origins = list("BILLING_RETURN_ORIGINS")
            .into_iter()
            .map(|o| {
                crate::stripe::client::origin_of(&o).ok_or_else(|| ConfigError {
                    name: "BILLING_RETURN_ORIGINS",
                    reason: format!("{o:?} is not an http(s) origin"),
                })
            })
            .collect::<Result<_, _>>()?;
        let int = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError {
                        name,
                        reason: "must be a positive integer (minor units)".into(),
                    }),
            }
        };
        let credits_min_minor = int("BILLING_CREDITS_MIN_MINOR", 100)?;
        let credits_max_minor = int("BILLING_CREDITS_MAX_MINOR", 1_000_000)?;
        if credits_max_minor < credits_min_minor {
            return Err(ConfigError {
                name: "BILLING_CREDITS_MAX_MINOR",
                reason: "must be at least BILLING_CREDITS_MIN_MINOR".into(),
            });
        }
        Ok(BillingConfig {
            stripe_key,
            stripe_api_base: get("STRIPE_API_BASE")
                .unwrap_or_else(|| "https://api.stripe.com".into())
                .trim_end_matches('/')
                .to_owned(),
            stripe_prices: list("STRIPE_PRICES"),
            return_origins,
            credits_min_minor,
            credits_max_minor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_settings_parse_and_name_the_variable() {
        let c = base(&[
            ("STRIPE_API_KEY", "sk_test_x"),
            ("STRIPE_PRICES", "price_a, price_b"),
            (
                "BILLING_RETURN_ORIGINS",
                "https://app.example.com/, http://localhost:5173",
            ),
        ])
        .unwrap();
        assert!(matches!(
            c.billing.stripe_key,
            Some(StripeKeySource::Plain(_))
        ));
        assert!(!format!("{c:?}").contains("sk_test_x"));
        assert_eq!(c.billing.stripe_prices, ["price_a", "price_b"]);
        assert_eq!(
            c.billing.return_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert_eq!(c.billing.stripe_api_base, "https://api.stripe.com");
        assert!(base(&[]).unwrap().billing.stripe_key.is_none());
        let err = base(&[("BILLING_RETURN_ORIGINS", "app.example.com")]).unwrap_err();
        assert_eq!(err.name, "BILLING_RETURN_ORIGINS");
        let err = base(&[("STRIPE_API_KEY_CIPHERTEXT", "not base64!")]).unwrap_err();
        assert_eq!(err.name, "STRIPE_API_KEY_CIPHERTEXT");
    }

    fn base(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = vec![
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "http://q"),
            ("KMS_KEY_ID", "alias/k"),
        ];
        vars.extend_from_slice(extra);
        Config::from_lookup(|n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = base(&[]).unwrap();
        assert_eq!(c.stripe_tolerance, Duration::from_secs(300));
        assert_eq!(c.idempotency_ttl_days, 7);
        assert!(!c.idempotency_required);
        assert!(!c.egress_allow_http);
        assert_eq!(c.egress_timeout, Duration::from_secs(15));
        assert_eq!(c.egress_disable_after_hours, 72);
        assert_eq!(c.stripe_event_retention_days, 30);
        assert!(c.egress_allow_cidrs.is_empty());
    }

    #[test]
    fn a_missing_or_invalid_setting_names_the_variable() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.name, "TABLE_NAME");
        let err = base(&[("STRIPE_TOLERANCE_SECS", "soon")]).unwrap_err();
        assert_eq!(err.name, "STRIPE_TOLERANCE_SECS");
        let err = base(&[("EGRESS_ALLOW_CIDRS", "127.0.0.1/8,nope")]).unwrap_err();
        assert!(err.to_string().contains("EGRESS_ALLOW_CIDRS"));
        let err = base(&[("ADMIN_KEY_SHA256", "abc")]).unwrap_err();
        assert_eq!(err.name, "ADMIN_KEY_SHA256");
        assert_eq!(
            base(&[]).unwrap().require_admin_key().unwrap_err().name,
            "ADMIN_KEY_SHA256"
        );
    }

    #[test]
    fn the_egress_timeout_must_leave_room_for_the_bookkeeping_within_the_function_timeout() {
        let max = EGRESS_TIMEOUT_MAX.as_secs();
        assert_eq!(max, 30);
        let c = base(&[("EGRESS_TIMEOUT_SECS", &max.to_string())]).unwrap();
        assert_eq!(c.egress_timeout, EGRESS_TIMEOUT_MAX);
        assert_eq!(c.egress_lease(), EGRESS_FUNCTION_TIMEOUT);
        // 50 was the template's old MaxValue: above the function's own 45 s timeout.
        for too_long in [max + 1, 50] {
            let err = base(&[("EGRESS_TIMEOUT_SECS", &too_long.to_string())]).unwrap_err();
            assert_eq!(err.name, "EGRESS_TIMEOUT_SECS");
            assert!(err.to_string().contains("at most 30"), "{err}");
        }
        assert_eq!(base(&[]).unwrap().egress_lease(), Duration::from_secs(30));
    }

    #[test]
    fn portal_settings_parse_and_refuse_what_could_break_the_csp() {
        let c = base(&[]).unwrap().portal;
        assert_eq!(c.link_ttl, Duration::from_secs(600));
        assert_eq!(c.session_ttl, Duration::from_secs(8 * 3600));
        assert_eq!(c.frame_ancestors, None);
        assert_eq!(c.base_url, None);
        let c = base(&[
            (
                "PORTAL_FRAME_ANCESTORS",
                " https://app.example.com   'self' ",
            ),
            ("PORTAL_BASE_URL", "https://portal.example.com/"),
            ("PORTAL_LINK_TTL_SECS", "60"),
        ])
        .unwrap()
        .portal;
        assert_eq!(
            c.frame_ancestors.as_deref(),
            Some("https://app.example.com 'self'")
        );
        assert_eq!(c.base_url.as_deref(), Some("https://portal.example.com"));
        assert_eq!(c.link_ttl, Duration::from_secs(60));
        for bad in [
            "https://a.example; script-src *",
            "https://a.example,https://b",
        ] {
            let err = base(&[("PORTAL_FRAME_ANCESTORS", bad)]).unwrap_err();
            assert_eq!(err.name, "PORTAL_FRAME_ANCESTORS");
        }
        let err = base(&[("PORTAL_BASE_URL", "https://example.com/portal")]).unwrap_err();
        assert_eq!(err.name, "PORTAL_BASE_URL");
        let err = base(&[("PORTAL_SESSION_TTL_SECS", "0")]).unwrap_err();
        assert_eq!(err.name, "PORTAL_SESSION_TTL_SECS");
    }

    #[test]
    fn secrets_are_split_and_never_debug_printed() {
        let c = base(&[("STRIPE_WEBHOOK_SECRETS", "whsec_a, whsec_b")]).unwrap();
        assert_eq!(c.stripe_webhook_secrets, vec!["whsec_a", "whsec_b"]);
        assert!(!format!("{c:?}").contains("whsec_a"));
    }
}
