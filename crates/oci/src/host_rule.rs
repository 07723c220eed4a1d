//! [`HostRule`]: which hosts a list names, as operators write such lists (`outpost.upstream
//! .allowedHosts`): a host (any port), `host:port`, a subdomain pattern (`.example.com` or
//! `*.example.com`: every name below, not the domain itself), an IP address or a CIDR range
//! (IPv4 or IPv6), or `*` for every host.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::proxy::split_host_port;

/// One entry of a host list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRule {
    /// `*`: every host.
    Any,
    /// A host name or IP address, lower case; with a port, only that port.
    Host { name: String, port: Option<u16> },
    /// `.example.com` / `*.example.com`: every name below `example.com` (stored without the dot).
    Below(String),
    /// `10.0.0.0/8`, `fd00::/8`: every IP address in the range, any port.
    Range(IpNet),
}

/// Why a host list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host rule: write a host (`registry.example.com`), `host:port`, `.example.com` for every name below it, an IP address, a CIDR range (`10.0.0.0/8`) or `*`")]
pub struct HostRuleError(pub String);

impl FromStr for HostRule {
    type Err = HostRuleError;

    fn from_str(s: &str) -> Result<Self, HostRuleError> {
        let bad = || HostRuleError(s.to_owned());
        let t = s.trim();
        if t == "*" {
            return Ok(HostRule::Any);
        }
        if let Some(domain) = t.strip_prefix("*.").or_else(|| t.strip_prefix('.')) {
            let domain = domain.to_ascii_lowercase();
            let label_ok = |l: &str| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            return if domain.split('.').all(label_ok) {
                Ok(HostRule::Below(domain))
            } else {
                Err(bad())
            };
        }
        if t.contains('/') {
            return t.parse::<IpNet>().map(HostRule::Range).map_err(|_| bad());
        }
        let (name, port) = split_host_port(t).ok_or_else(bad)?;
        let valid = name.parse::<IpAddr>().is_ok()
            || (!name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid || port == Some(0) {
            return Err(bad());
        }
        Ok(HostRule::Host { name, port })
    }
}

impl HostRule {
    /// Whether `host` (`host[:port]`, IPv6 in brackets) is one this rule names.
    pub fn matches(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host) else {
            return false;
        };
        match self {
            HostRule::Any => true,
            HostRule::Host {
                name: rule,
                port: rule_port,
            } => {
                let same_name = match (rule.parse::<IpAddr>(), name.parse::<IpAddr>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => *rule == name,
                };
                same_name && rule_port.is_none_or(|p| Some(p) == port)
            }
            HostRule::Below(domain) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            HostRule::Range(net) => name.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Any => f.write_str("*"),
            HostRule::Host { name, port: None } => f.write_str(name),
            HostRule::Host {
                name,
                port: Some(port),
            } if name.contains(':') => write!(f, "[{name}]:{port}"),
            HostRule::Host {
                name,
                port: Some(port),
            } => write!(f, "{name}:{port}"),
            HostRule::Below(domain) => write!(f, ".{domain}"),
            HostRule::Range(net) => write!(f, "{net}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> HostRule {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_ports_domains_and_ranges() {
        assert!(rule("quay.io").matches("quay.io"));
        assert!(rule("Quay.IO").matches("quay.io:443"));
        assert!(!rule("quay.io").matches("evil-quay.io"));
        assert!(rule("registry.local:5000").matches("registry.local:5000"));
        assert!(!rule("registry.local:5000").matches("registry.local:5001"));
        assert!(!rule("registry.local:5000").matches("registry.local"));
        for below in [".gcr.io", "*.gcr.io"] {
            assert!(rule(below).matches("us.gcr.io"), "{below}");
            assert!(rule(below).matches("a.b.gcr.io:443"), "{below}");
            assert!(!rule(below).matches("gcr.io"), "{below}: the domain itself");
            assert!(!rule(below).matches("notgcr.io"), "{below}");
        }
        assert!(rule("10.0.0.0/8").matches("10.1.2.3:5000"));
        assert!(!rule("10.0.0.0/8").matches("11.0.0.1"));
        assert!(!rule("10.0.0.0/8").matches("ten.example.com"));
        assert!(rule("fd00::/8").matches("[fd12::1]:5000"));
        assert!(rule("::1").matches("[::1]:5000"));
        assert!(rule("[::1]:5000").matches("[::1]:5000"));
        assert!(rule("127.0.0.1").matches("127.0.0.1:5000"));
        assert!(rule("*").matches("anything.example:1"));
        assert_eq!(rule("[::1]:5000").to_string(), "[::1]:5000");
        assert_eq!(rule("*.gcr.io").to_string(), ".gcr.io");
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "http://x",
            "a b",
            "host:0",
            "host:99999",
            "10.0.0.0/33",
            ".",
            "*.",
            "a_b.io",
        ] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad:?}");
        }
    }
}
