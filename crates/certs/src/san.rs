//! Subject alternative names: parsed once at the edge, then carried as [`San`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustls_pki_types::ServerName;

use crate::CertsError;

/// One name a server certificate is valid for: a DNS name or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum San {
    /// A DNS name, lower-cased, without a trailing dot (`registry.local`, `*.edge.local`).
    Dns(String),
    Ip(IpAddr),
}

impl San {
    /// Parses `localhost`, `10.0.0.5`, `::1` or `*.example.com`. IP addresses may be written in
    /// brackets (`[::1]`).
    pub fn parse(value: &str) -> Result<San, CertsError> {
        let invalid = || CertsError::InvalidSan {
            value: value.to_owned(),
        };
        let trimmed = value.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let name = trimmed
            .strip_suffix('.')
            .unwrap_or(trimmed)
            .to_ascii_lowercase();
        // A wildcard is allowed only as the whole left-most label.
        let checked = name.strip_prefix("*.").unwrap_or(&name);
        match ServerName::try_from(checked) {
            Ok(ServerName::DnsName(_)) if !checked.contains('*') => Ok(San::Dns(name)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The names a certificate gets when none are given: `localhost`, `127.0.0.1`, `::1`, and this
/// machine's host name (from `/etc/hostname`, else the `hostname` command) when it is a valid DNS
/// name.
pub fn default_sans() -> Vec<San> {
    let mut sans = vec![
        San::Dns("localhost".to_owned()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Some(host) = host_name().and_then(|h| San::parse(&h).ok()) {
        if !sans.contains(&host) {
            sans.push(host);
        }
    }
    sans
}

fn host_name() -> Option<String> {
    let from_file = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    from_file.or_else(|| {
        let out = std::process::Command::new("hostname").output().ok()?;
        let name = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        assert_eq!(
            San::parse("Registry.Local.").unwrap(),
            San::Dns("registry.local".into())
        );
        assert_eq!(
            San::parse("*.edge.local").unwrap(),
            San::Dns("*.edge.local".into())
        );
        assert_eq!(
            San::parse("10.0.0.5").unwrap(),
            San::Ip("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            San::parse("[::1]").unwrap(),
            San::Ip(Ipv6Addr::LOCALHOST.into())
        );
    }

    #[test]
    fn rejects_what_is_not_a_name() {
        for bad in [
            "",
            "has space",
            "a..b",
            "foo_*",
            "a.*.b",
            "*",
            "http://x",
            "x:5000",
        ] {
            let err = San::parse(bad).unwrap_err();
            assert!(
                matches!(err, CertsError::InvalidSan { ref value } if value == bad),
                "{bad:?} gave {err}"
            );
            assert!(err.to_string().contains("DNS name"), "{err}");
        }
    }

    #[test]
    fn defaults_cover_loopback() {
        let sans = default_sans();
        assert_eq!(sans[0], San::Dns("localhost".into()));
        assert!(sans.contains(&San::Ip(Ipv4Addr::LOCALHOST.into())));
        assert!(sans.contains(&San::Ip(Ipv6Addr::LOCALHOST.into())));
    }
}
