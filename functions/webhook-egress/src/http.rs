//! The HTTP client that talks to tenants' endpoints.
//!
//! - rustls (the bundle's one TLS stack), no proxy (a proxy would resolve names where we cannot
//!   check them), redirects never followed (a 3xx is a failed attempt), one total timeout per
//!   request (`EGRESS_TIMEOUT_SECS`, shortened per request by the caller when the invocation or
//!   the delivery's lease has less time left).
//! - Every address a name resolves to is checked with [`sluice::ssrf::is_forbidden`] and the
//!   deployment's allow-list *at connect time*, by the client's own resolver: a name that pointed
//!   somewhere public at registration and now points at 169.254.169.254 (DNS rebinding) is refused
//!   before a connection is made. IP-literal URLs never reach a resolver, so they are checked
//!   before the request is sent.
//! - Only the first [`RESPONSE_EXCERPT_BYTES`] of a response are read, for the attempt log, and
//!   the excerpt kept is at most that many bytes *after* decoding ([`excerpt`]): invalid bytes
//!   become U+FFFD (3 bytes each), so cutting before decoding could triple it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sluice::ssrf::{self, UrlPolicy};
use url::Host;

/// `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("Sluice-Webhooks/", env!("CARGO_PKG_VERSION"));
/// How much of a response body the attempt log keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// Why an attempt got no HTTP status. The names are what the attempt log shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// No complete answer within `EGRESS_TIMEOUT_SECS`.
    Timeout,
    /// The connection (TCP or TLS) could not be established.
    Connect,
    /// The name did not resolve.
    Dns,
    /// The name resolved to a forbidden address (loopback, private, metadata …).
    DnsBlocked,
    /// The URL's IP literal is a forbidden address.
    AddressBlocked,
    /// The stored URL is no longer acceptable (e.g. `http` where the deployment requires https).
    UrlRejected,
    /// Anything else that broke the exchange (e.g. the peer closed mid-response).
    Request,
}

impl ErrorClass {
    /// The attempt log's name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::DnsBlocked => "dns_blocked",
            ErrorClass::AddressBlocked => "address_blocked",
            ErrorClass::UrlRejected => "url_rejected",
            ErrorClass::Request => "request",
        }
    }
}

/// What one request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// Why there is no status.
    pub error: Option<ErrorClass>,
    /// From sending to the end of the (excerpted) answer.
    pub duration: Duration,
    /// The start of the body, lossily decoded as UTF-8, at most [`RESPONSE_EXCERPT_BYTES`].
    pub response_excerpt: String,
    /// The raw `Retry-After` header of the answer, if any.
    pub retry_after: Option<String>,
}

impl Exchange {
    fn failed(error: ErrorClass, started: Instant) -> Self {
        Exchange {
            status: None,
            error: Some(error),
            duration: started.elapsed(),
            response_excerpt: String::new(),
            retry_after: None,
        }
    }

    /// True for a 2xx answer.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends deliveries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EndpointClient {
    client: reqwest::Client,
    policy: UrlPolicy,
}

/// The resolver's refusal, found again in the error chain to classify the attempt.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("the name resolves to a forbidden address")]
    Forbidden,
    #[error("the name does not resolve")]
    NotFound,
}

/// Resolves with the system resolver, then refuses the whole answer if any address is forbidden
/// (a mixed answer is a rebinding trick, not a reason to pick the public half).
#[derive(Debug)]
struct CheckedResolver {
    allow: Arc<Vec<IpNet>>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| ResolveError::NotFound)?
                .collect();
            if addrs.is_empty() {
                return Err(ResolveError::NotFound.into());
            }
            if addrs.iter().any(|a| ssrf::is_forbidden(a.ip(), &allow)) {
                return Err(ResolveError::Forbidden.into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl EndpointClient {
    /// A client for the deployment's URL policy and per-request timeout.
    pub fn new(policy: UrlPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        sluice::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .dns_resolver(CheckedResolver {
                allow: Arc::new(policy.allow_cidrs.clone()),
            })
            .build()?;
        Ok(EndpointClient { client, policy })
    }

    /// POSTs `body` to `url` with `headers` (plus `content-type: application/json`), giving up
    /// after `timeout` (at most the client's own).
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Exchange {
        let started = Instant::now();
        let url = match ssrf::parse_endpoint_url(url, &self.policy) {
            Ok(url) => url,
            Err(_) => return Exchange::failed(ErrorClass::UrlRejected, started),
        };
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| ssrf::is_forbidden(ip, &self.policy.allow_cidrs)) {
            return Exchange::failed(ErrorClass::AddressBlocked, started);
        }
        let request = self
            .client
            .post(url)
            .headers(headers)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(body)
            .timeout(timeout);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Exchange::failed(classify(&err), started),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut excerpt = Vec::new();
        // The status decides the outcome; a body that breaks off or times out only shortens the
        // excerpt.
        while excerpt.len() < RESPONSE_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Exchange {
            status: Some(status),
            error: None,
            duration: started.elapsed(),
            response_excerpt: excerpt_of(&excerpt),
            retry_after,
        }
    }
}

/// The attempt log's excerpt of a body: decoded first (invalid bytes become U+FFFD), then cut to
/// at most [`RESPONSE_EXCERPT_BYTES`] bytes on a character boundary.
pub fn excerpt_of(body: &[u8]) -> String {
    let raw = &body[..body.len().min(RESPONSE_EXCERPT_BYTES)];
    let mut text = String::from_utf8_lossy(raw).into_owned();
    // Hand-written: `str::floor_char_boundary` is not stable yet. A char is at most 4 bytes.
    let mut end = text.len().min(RESPONSE_EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn classify(err: &reqwest::Error) -> ErrorClass {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            return match resolve {
                ResolveError::Forbidden => ErrorClass::DnsBlocked,
                ResolveError::NotFound => ErrorClass::Dns,
            };
        }
        source = e.source();
    }
    if err.is_timeout() {
        ErrorClass::Timeout
    } else if err.is_connect() {
        ErrorClass::Connect
    } else {
        ErrorClass::Request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(allow: &str) -> EndpointClient {
        let policy = UrlPolicy {
            allow_http: true,
            allow_cidrs: allow
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect(),
        };
        EndpointClient::new(policy, Duration::from_secs(2)).unwrap()
    }

    async fn post(client: &EndpointClient, url: &str) -> Exchange {
        client
            .post(
                url,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                Duration::from_secs(2),
            )
            .await
    }

    #[tokio::test]
    async fn forbidden_addresses_are_refused_before_connecting() {
        let c = client("");
        for (url, class) in [
            ("http://127.0.0.1:9/hook", ErrorClass::AddressBlocked),
            (
                "http://169.254.169.254/latest/meta-data",
                ErrorClass::AddressBlocked,
            ),
            ("http://[::1]:9/", ErrorClass::AddressBlocked),
            ("http://[::ffff:10.0.0.1]/", ErrorClass::AddressBlocked),
            // `localhost` resolves (at connect time) to loopback.
            ("http://localhost:9/hook", ErrorClass::DnsBlocked),
            ("ftp://example.com/", ErrorClass::UrlRejected),
        ] {
            assert_eq!(post(&c, url).await.error, Some(class), "{url}");
        }
    }

    #[tokio::test]
    async fn the_allow_list_opens_loopback_and_refusals_are_connect_errors() {
        let c = client("127.0.0.0/8,::1/128");
        // Port 9 (discard) is closed on loopback: the address passed the check, the TCP
        // connection was refused.
        let ex = post(&c, "http://127.0.0.1:9/hook").await;
        assert_eq!(ex.error, Some(ErrorClass::Connect));
        assert_eq!(ex.status, None);
        assert!(!ex.is_success());
    }

    #[test]
    fn the_excerpt_is_cut_after_decoding_and_never_exceeds_the_limit() {
        // GIVEN 4 KiB of bytes that are not UTF-8: each becomes U+FFFD (3 bytes)
        let invalid = vec![0xFFu8; RESPONSE_EXCERPT_BYTES * 2];
        let excerpt = excerpt_of(&invalid);
        assert!(excerpt.len() <= RESPONSE_EXCERPT_BYTES, "{}", excerpt.len());
        assert!(excerpt.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(excerpt.len(), RESPONSE_EXCERPT_BYTES / 3 * 3);
        // A multi-byte character straddling the limit is dropped, not split.
        let mut mixed = vec![b'a'; RESPONSE_EXCERPT_BYTES - 1];
        mixed.extend_from_slice("é and more".as_bytes());
        let excerpt = excerpt_of(&mixed);
        assert!(excerpt.len() <= RESPONSE_EXCERPT_BYTES);
        assert!(excerpt.starts_with("aaa"));
        // Short valid bodies pass through unchanged.
        assert_eq!(excerpt_of(b"{\"ok\":true}"), "{\"ok\":true}");
    }

    #[tokio::test]
    async fn https_is_required_unless_http_is_allowed() {
        let policy = UrlPolicy::default();
        let c = EndpointClient::new(policy, Duration::from_secs(1)).unwrap();
        assert_eq!(
            post(&c, "http://example.com/").await.error,
            Some(ErrorClass::UrlRejected)
        );
    }
}
