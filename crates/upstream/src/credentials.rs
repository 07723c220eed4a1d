//! Where stored credentials may go: a pure rule, and the `Authorization: Basic` value built from
//! them.
//!
//! Credentials belong to one upstream host. They are sent to that host and to a token realm on
//! the same registrable domain by the Public Suffix List (`auth.example.com` for
//! `registry.example.com`, but not `b.co.uk` for `a.co.uk`, nor one `*.azurecr.io` tenant for
//! another), or on the same IP address for an upstream addressed by IP. Ports do not matter.
//! Anything else (a realm on another domain, a blob CDN) gets no credentials.

use std::net::IpAddr;

use base64::Engine as _;
use http::HeaderValue;

use oci::Credentials;

/// Whether credentials stored for `upstream` (`host[:port]`) may be sent to `other`
/// (`host[:port]`).
pub fn may_send_credentials(upstream: &str, other: &str) -> bool {
    let upstream = host_part(upstream).to_ascii_lowercase();
    let other = host_part(other).to_ascii_lowercase();
    if upstream.is_empty() || other.is_empty() {
        return false;
    }
    if upstream == other {
        return true;
    }
    match (upstream.parse::<IpAddr>(), other.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => false,
        (Err(_), Err(_)) => match (registrable_domain(&upstream), registrable_domain(&other)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

/// `host` without `:port` and without the brackets of an IPv6 literal.
fn host_part(authority: &str) -> &str {
    let authority = authority.trim().trim_end_matches('.');
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => authority,
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Registries that give each tenant a subdomain of their own but are not (yet) on the Public
/// Suffix List: treated as public suffixes too, so one tenant's credentials never reach another.
const TENANT_SUFFIXES: &[&str] = &["azurecr.io", "azurecr.cn", "azurecr.us"];

/// The registrable domain of a DNS name by the Public Suffix List (the `psl` crate) and
/// [`TENANT_SUFFIXES`]: the public suffix and one label more. `None` for a public suffix itself
/// or a single label.
fn registrable_domain(host: &str) -> Option<&str> {
    if host.split('.').any(str::is_empty) {
        return None;
    }
    for suffix in TENANT_SUFFIXES {
        if let Some(tenant) = host.strip_suffix(suffix).and_then(|t| t.strip_suffix('.')) {
            let label = tenant.rsplit('.').next().unwrap_or(tenant);
            return Some(&host[host.len() - suffix.len() - 1 - label.len()..]);
        }
    }
    let domain = psl::domain_str(host)?;
    // A name under an unlisted top-level domain (`registry.internal`) counts as registrable.
    domain.contains('.').then_some(domain)
}

/// `Basic base64(user:password)`, marked sensitive so hyper never logs it.
pub fn basic_authorization(credentials: &Credentials) -> HeaderValue {
    let raw = format!("{}:{}", credentials.username, credentials.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    // Base64's alphabet is visible ASCII, so this cannot fail; were it to, the upstream would
    // answer 401 and the client get "credentials rejected", not a crashed connection.
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_any_port() {
        assert!(may_send_credentials(
            "registry.example.com",
            "registry.example.com"
        ));
        assert!(may_send_credentials(
            "registry.example.com:5000",
            "REGISTRY.example.com:443"
        ));
        assert!(may_send_credentials("localhost:5000", "localhost:9000"));
    }

    #[test]
    fn realm_on_the_same_registrable_domain() {
        assert!(may_send_credentials(
            "registry.example.com",
            "auth.example.com"
        ));
        assert!(may_send_credentials(
            "registry-1.docker.io",
            "auth.docker.io"
        ));
        assert!(may_send_credentials("example.com", "auth.example.com"));
        assert!(may_send_credentials(
            "registry.example.co.uk",
            "auth.example.co.uk"
        ));
        assert!(may_send_credentials(
            "registry.site.internal",
            "auth.site.internal"
        ));
    }

    #[test]
    fn public_suffixes_are_not_one_domain() {
        // The last two labels of these are a public suffix, shared by strangers.
        assert!(!may_send_credentials("shop.co.uk", "evil.co.uk"));
        assert!(!may_send_credentials(
            "tenant-a.azurecr.io",
            "tenant-b.azurecr.io"
        ));
        assert!(!may_send_credentials("me.github.io", "you.github.io"));
        assert!(!may_send_credentials("co.uk", "evil.co.uk"));
        assert!(!may_send_credentials("azurecr.io", "tenant.azurecr.io"));
        assert!(may_send_credentials(
            "tenant.azurecr.io",
            "TENANT.azurecr.io:443"
        ));
        assert!(may_send_credentials(
            "tenant.azurecr.io",
            "eu.tenant.azurecr.io"
        ));
    }

    #[test]
    fn realm_on_another_domain() {
        assert!(!may_send_credentials(
            "registry.example.com",
            "auth.example.org"
        ));
        assert!(!may_send_credentials(
            "registry.example.com",
            "example.com.evil.net"
        ));
        assert!(!may_send_credentials(
            "quay.io",
            "production.cloudflare.docker.com"
        ));
        assert!(!may_send_credentials("localhost", "127.0.0.1"));
        assert!(!may_send_credentials("registry.example.com", ""));
    }

    #[test]
    fn ip_upstreams_need_the_same_ip() {
        assert!(may_send_credentials(
            "10.10.254.254:8000",
            "10.10.254.254:443"
        ));
        assert!(!may_send_credentials(
            "10.10.254.254:8000",
            "10.10.254.253:8000"
        ));
        assert!(!may_send_credentials("127.0.0.1:5000", "localhost:5000"));
        assert!(!may_send_credentials("10.0.0.1", "auth.example.com"));
        assert!(may_send_credentials("[::1]:5000", "[::1]:6000"));
        assert!(may_send_credentials("[::1]:5000", "::1"));
        assert!(!may_send_credentials("[::1]:5000", "[::2]:5000"));
    }

    #[test]
    fn single_label_hosts_only_match_themselves() {
        assert!(!may_send_credentials("registry", "auth"));
    }

    #[test]
    fn basic_header() {
        let c = Credentials {
            username: "alice".to_owned(),
            password: oci::Secret::new("s3cret"),
        };
        let v = basic_authorization(&c);
        assert_eq!(v.to_str().unwrap(), "Basic YWxpY2U6czNjcmV0");
        assert!(v.is_sensitive());
    }
}
