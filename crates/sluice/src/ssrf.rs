//! Endpoint URL validation against server-side request forgery.
//!
//! A tenant's webhook URL must not point Sluice at its own network: loopback, private, link-local,
//! CGNAT, multicast, unspecified/broadcast/reserved and cloud-metadata addresses are refused, as
//! are IPv6 forms embedding them (IPv4-mapped, NAT64) — unless inside an allow-list of CIDRs
//! (`EGRESS_ALLOW_CIDRS`; local development allows loopback).
//!
//! Registration ([`validate_endpoint_url`]) checks the literal host or every address the name
//! resolves to; a name that does not resolve is accepted (it may be set up later). Delivery calls
//! [`is_forbidden`] on every address again at connect time, which defeats DNS rebinding.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use ipnet::IpNet;
use url::{Host, Url};

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// How long registration waits for DNS before treating the name as unresolvable.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an endpoint URL was refused; the message is safe to show the tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`url` is not a valid absolute URL")]
    Invalid,
    #[error("`url` must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("`url` must use https")]
    SchemeNotAllowed,
    #[error("`url` must not contain credentials")]
    Credentials,
    #[error("`url` must have a host")]
    NoHost,
    #[error("`url` points to a forbidden address (loopback, private, link-local or metadata)")]
    ForbiddenAddress,
}

/// What the deployment allows beyond public https endpoints.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// `EGRESS_ALLOW_HTTP`: accept `http://` as well.
    pub allow_http: bool,
    /// `EGRESS_ALLOW_CIDRS`: addresses accepted even though they are not public.
    pub allow_cidrs: Vec<IpNet>,
}

impl UrlPolicy {
    /// The policy of a configuration.
    pub fn from_config(config: &crate::Config) -> Self {
        UrlPolicy {
            allow_http: config.egress_allow_http,
            allow_cidrs: config.egress_allow_cidrs.clone(),
        }
    }
}

/// Parses and checks an endpoint URL: scheme, no credentials, and a host that neither is nor
/// resolves to a forbidden address. Returns the normalised URL.
pub async fn validate_endpoint_url(raw: &str, policy: &UrlPolicy) -> Result<Url, UrlError> {
    let url = parse_endpoint_url(raw, policy)?;
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), policy)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), policy)?,
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_owned();
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            // Unresolvable (or DNS too slow) at registration is accepted: delivery checks again.
            if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                for addr in addrs {
                    check_ip(addr.ip(), policy)?;
                }
            }
        }
        None => return Err(UrlError::NoHost),
    }
    Ok(url)
}

/// The checks that need no DNS: syntax, length, scheme, credentials, host present.
pub fn parse_endpoint_url(raw: &str, policy: &UrlPolicy) -> Result<Url, UrlError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(raw).map_err(|_| UrlError::Invalid)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        _ => return Err(UrlError::SchemeNotAllowed),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    match url.host() {
        None => Err(UrlError::NoHost),
        Some(Host::Domain("")) => Err(UrlError::NoHost),
        Some(_) => Ok(url),
    }
}

fn check_ip(ip: IpAddr, policy: &UrlPolicy) -> Result<(), UrlError> {
    if is_forbidden(ip, &policy.allow_cidrs) {
        Err(UrlError::ForbiddenAddress)
    } else {
        Ok(())
    }
}

/// True if Sluice must not connect to `ip`: it is not a public unicast address and is not inside
/// one of the `allow` CIDRs. Call it for every resolved address at connect time.
pub fn is_forbidden(ip: IpAddr, allow: &[IpNet]) -> bool {
    let embedded_v4 = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6),
        IpAddr::V4(_) => None,
    };
    let allowed = allow.iter().any(|net| {
        net.contains(&ip) || embedded_v4.is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
    });
    if allowed {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => match embedded_v4 {
            Some(v4) => is_forbidden_v4(v4),
            None => is_forbidden_v6(v6),
        },
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or
/// NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = v6.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    // `::` and `::1` are the IPv6 unspecified and loopback addresses, not IPv4-compatible ones.
    if seg[..6] == [0; 6] && !(seg[6] == 0 && seg[7] <= 1) {
        return Some(tail);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, includes the metadata address 169.254.169.254
        || ip.is_multicast()
        || ip.is_broadcast()
        || in_v4(ip, [0, 0, 0, 0], 8) // "this network"
        || in_v4(ip, [100, 64, 0, 0], 10) // CGNAT
        || in_v4(ip, [192, 0, 0, 0], 24) // IETF protocol assignments
        || in_v4(ip, [198, 18, 0, 0], 15) // benchmarking
        || in_v4(ip, [240, 0, 0, 0], 4) // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7, includes fd00:ec2::254 (AWS metadata)
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(ip(bad), &[]), "{bad} must be forbidden");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(ip(good), &[]), "{good} must be allowed");
        }
    }

    #[test]
    fn the_allow_list_wins() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(!is_forbidden(ip("127.0.0.1"), &allow));
        assert!(!is_forbidden(ip("::1"), &allow));
        assert!(!is_forbidden(ip("::ffff:127.0.0.1"), &allow));
        assert!(is_forbidden(ip("169.254.169.254"), &allow));
        assert!(is_forbidden(ip("10.0.0.1"), &allow));
    }

    #[tokio::test]
    async fn urls_are_checked_by_scheme_and_address() {
        let strict = UrlPolicy::default();
        for bad in [
            "http://127.0.0.1/hook",
            "https://127.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]:8443/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.10/hook",
            "https://localhost/hook",
            "https://0x7f000001/hook",
        ] {
            assert!(
                validate_endpoint_url(bad, &strict).await.is_err(),
                "{bad} must be rejected"
            );
        }
        assert_eq!(
            validate_endpoint_url("http://example.com/hook", &strict).await,
            Err(UrlError::SchemeNotAllowed)
        );
        assert_eq!(
            validate_endpoint_url("https://u:p@example.com/hook", &strict).await,
            Err(UrlError::Credentials)
        );
        assert_eq!(
            validate_endpoint_url("ftp://example.com/x", &strict).await,
            Err(UrlError::SchemeNotAllowed)
        );
        assert!(
            validate_endpoint_url("https://example.com/hook", &strict)
                .await
                .is_ok()
        );
        assert!(
            validate_endpoint_url("https://no-such-host.invalid/hook", &strict)
                .await
                .is_ok()
        );

        let local = UrlPolicy {
            allow_http: true,
            allow_cidrs: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        };
        for ok in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]:9000/hook",
            "http://localhost:9000/hook",
        ] {
            assert!(
                validate_endpoint_url(ok, &local).await.is_ok(),
                "{ok} is allow-listed"
            );
        }
        assert!(
            validate_endpoint_url("http://169.254.169.254/", &local)
                .await
                .is_err()
        );
    }
}
