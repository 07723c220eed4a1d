//! The site's HTTP proxy: [`ProxyUrl`] (where the proxy is, and its credentials), [`NoProxy`]
//! (the hosts reached directly) and [`ProxySettings`], which decides per upstream connection
//! whether it goes through a proxy, and which.
//!
//! The rules are curl's, as operators know them from `http_proxy`/`no_proxy`:
//! - a proxy URL is `http://[user:password@]host[:port]` (the user and password percent-decoded);
//!   without a scheme it is `http://`; without a port, 80 (as Go programs such as containerd read
//!   it). HTTPS upstreams stay end-to-end TLS inside the proxy's `CONNECT` tunnel; TLS to the
//!   proxy itself (`https://` proxy URLs) is not supported and refused with that explanation;
//! - `noProxy` is a comma-separated list; each entry is `*` (every host), a domain (`site.local`
//!   and `.site.local` both match `site.local` itself and every name below it), `host:port`
//!   (only that port), an IP address (IPv6 with or without brackets, optionally `[addr]:port`)
//!   or a CIDR range (`10.0.0.0/8`, `fd00::/8`). Nothing is implied: loopback goes through the
//!   proxy unless the list names it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use percent_encoding::percent_decode_str;

use crate::secret::{Credentials, Secret};

/// Where an HTTP proxy listens, and what outpost tells it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP address, lower case, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `user:password@` of the URL, sent to the proxy only (`Proxy-Authorization: Basic`).
    pub credentials: Option<Credentials>,
}

/// Why a proxy URL was refused (never quoting its password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not a proxy URL: {why}; write `http://[user:password@]host:port`")]
pub struct ProxyUrlError {
    shown: String,
    why: &'static str,
}

impl ProxyUrl {
    /// `host:port` to connect to (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `user:****@` in place of the password, so the URL can be printed.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some(c) => write!(f, "http://{}:****@{}", c.username, self.authority()),
            None => write!(f, "http://{}", self.authority()),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// The URL with any password replaced, for error messages about a URL that did not parse.
fn redact(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), text),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:****@{host}")
        }
        None => text.to_owned(),
    }
}

impl FromStr for ProxyUrl {
    type Err = ProxyUrlError;

    fn from_str(s: &str) -> Result<Self, ProxyUrlError> {
        let text = s.trim();
        let bad = |why| ProxyUrlError {
            shown: redact(text),
            why,
        };
        let rest = match text.split_once("://") {
            None => text,
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => rest,
                "https" => return Err(bad("TLS to the proxy itself (https://) is not supported; give the proxy's http:// address (HTTPS upstreams stay end-to-end TLS inside its CONNECT tunnel)")),
                _ => return Err(bad("outpost speaks to HTTP proxies only (http://)")),
            },
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let decode = |p: &str| percent_decode_str(p).decode_utf8().map(|c| c.into_owned());
                let username = decode(user).map_err(|_| bad("the user is not UTF-8"))?;
                let password = decode(password).map_err(|_| bad("the password is not UTF-8"))?;
                if username.is_empty() {
                    return Err(bad("the user name is empty"));
                }
                Some(Credentials {
                    username,
                    password: Secret::new(password),
                })
            }
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("no valid host[:port]"))?;
        if !valid_host(&host) {
            return Err(bad("no valid host[:port]"));
        }
        let port = match port {
            Some(0) => return Err(bad("port 0")),
            Some(p) => p,
            None => 80,
        };
        Ok(ProxyUrl {
            host,
            port,
            credentials,
        })
    }
}

/// `host[:port]` (IPv6 in brackets, or bare without a port) as a lower-case host without
/// brackets or trailing dot, and the port. `None` when the port is not a number.
pub fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (ip.to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((name, _)) if name.contains(':') => (text.clone(), None),
            Some((name, port)) => (name.to_owned(), Some(port.parse().ok()?)),
            None => (text.clone(), None),
        }
    };
    let host = host.strip_suffix('.').map(str::to_owned).unwrap_or(host);
    Some((host, port))
}

fn valid_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

/// One entry of a `noProxy` list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// `*`
    Any,
    /// A domain: the name itself and every name below it; with a port, only that port.
    Domain { name: String, port: Option<u16> },
    /// An IP address; with a port, only that port.
    Ip { ip: IpAddr, port: Option<u16> },
    /// A CIDR range, any port.
    Range(IpNet),
}

/// The hosts reached directly although a proxy is set (`noProxy`, `NO_PROXY`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    rules: Vec<Rule>,
    /// The list as written, for `check`.
    text: String,
}

/// Why a `noProxy` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` in the no-proxy list is not a host: write a domain (`site.local` or `.site.local`), `host:port`, an IP address, a CIDR range (`10.0.0.0/8`) or `*`, separated by commas")]
pub struct NoProxyError(pub String);

impl FromStr for NoProxy {
    type Err = NoProxyError;

    fn from_str(list: &str) -> Result<Self, NoProxyError> {
        let mut rules = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || NoProxyError(entry.to_owned());
            let rule = if entry == "*" {
                Rule::Any
            } else if entry.contains('/') {
                Rule::Range(entry.parse::<IpNet>().map_err(|_| bad())?)
            } else {
                // `.site.local` and `*.site.local` mean what `site.local` means (curl).
                let bare = entry
                    .strip_prefix("*.")
                    .or_else(|| entry.strip_prefix('.'))
                    .unwrap_or(entry);
                let (host, port) = split_host_port(bare).ok_or_else(bad)?;
                if port == Some(0) || !valid_host(&host) {
                    return Err(bad());
                }
                match host.parse::<IpAddr>() {
                    Ok(ip) => Rule::Ip { ip, port },
                    Err(_) => Rule::Domain { name: host, port },
                }
            };
            rules.push(rule);
        }
        Ok(NoProxy {
            rules,
            text: list.trim().to_owned(),
        })
    }
}

impl NoProxy {
    /// Whether a connection to `host` (a name or IP address, IPv6 with or without brackets) on
    /// `port` bypasses the proxy.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.rules.iter().any(|rule| match rule {
            Rule::Any => true,
            Rule::Domain { name, port: p } => {
                port_ok(p)
                    && (host == *name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
            Rule::Ip { ip: rule, port: p } => port_ok(p) && ip == Some(*rule),
            Rule::Range(net) => ip.is_some_and(|ip| net.contains(&ip)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The list as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Where the proxy settings came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyOrigin {
    /// `stylus.site.network` of the configuration.
    Config,
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (or lower case) of outpost's environment.
    Environment,
}

/// The proxies of a site: one for plain-HTTP upstreams, one for HTTPS upstreams, and the hosts
/// reached directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// `httpProxy` / `HTTP_PROXY`: for `http://` upstreams.
    pub http: Option<ProxyUrl>,
    /// `httpsProxy` / `HTTPS_PROXY`: for `https://` upstreams (through `CONNECT`).
    pub https: Option<ProxyUrl>,
    pub no_proxy: NoProxy,
    pub origin: ProxyOrigin,
}

/// A proxy environment variable that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {variable}: {reason}")]
pub struct ProxyEnvError {
    pub variable: &'static str,
    pub reason: String,
}

/// The proxy variables of the environment, in the order curl reads them (lower case first).
pub const PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
];

impl ProxySettings {
    /// The proxy for a connection to `host` on `port`, `https` for a TLS upstream; `None`:
    /// connect directly.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Option<&ProxyUrl> {
        let proxy = if https { &self.https } else { &self.http };
        proxy
            .as_ref()
            .filter(|_| !self.no_proxy.matches(host, port))
    }

    /// Whether any proxy is set at all.
    pub fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// The settings of the environment, as curl reads it: `http_proxy`, `https_proxy` and
    /// `no_proxy`, each in lower case first, then upper case. `Ok(None)` when neither proxy
    /// variable is set (or both are empty). `var` looks a variable up (`std::env::var`).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ProxySettings>, ProxyEnvError> {
        let get = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let url = |found: Option<(&'static str, String)>| {
            found
                .map(|(variable, value)| {
                    value.parse::<ProxyUrl>().map_err(|e| ProxyEnvError {
                        variable,
                        reason: e.to_string(),
                    })
                })
                .transpose()
        };
        let [http_lower, http_upper, https_lower, https_upper, no_lower, no_upper] =
            PROXY_VARIABLES;
        let http = url(get(http_lower, http_upper))?;
        let https = url(get(https_lower, https_upper))?;
        if http.is_none() && https.is_none() {
            return Ok(None);
        }
        let no_proxy = match get(no_lower, no_upper) {
            Some((variable, value)) => value.parse().map_err(|e: NoProxyError| ProxyEnvError {
                variable,
                reason: e.to_string(),
            })?,
            None => NoProxy::default(),
        };
        Ok(Some(ProxySettings {
            http,
            https,
            no_proxy,
            origin: ProxyOrigin::Environment,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ProxyUrl {
        s.parse().unwrap()
    }

    fn list(s: &str) -> NoProxy {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_urls_as_operators_write_them() {
        let p = url("http://proxy.site.local:3128");
        assert_eq!((p.host.as_str(), p.port), ("proxy.site.local", 3128));
        assert!(p.credentials.is_none());
        assert_eq!(url("proxy:3128"), p.clone().with_host("proxy"));
        assert_eq!(url("http://proxy").port, 80);
        assert_eq!(url("HTTP://proxy:8443/").port, 8443);
        let v6 = url("http://[fd00::1]:3128");
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("fd00::1", "[fd00::1]:3128".to_owned())
        );

        let auth = url("http://alice:p%40ss%3Aword@proxy:3128");
        let c = auth.credentials.as_ref().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("alice", "p@ss:word")
        );
        assert_eq!(auth.to_string(), "http://alice:****@proxy:3128");
        assert!(!format!("{auth:?}").contains("word"));
    }

    impl ProxyUrl {
        fn with_host(mut self, host: &str) -> Self {
            self.host = host.to_owned();
            self
        }
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_their_password() {
        for bad in [
            "",
            "socks5://proxy:1080",
            "https://proxy:3128",
            "http://proxy:3128/path",
            "http://proxy:99999",
            "http://proxy:0",
            "http://:secret@proxy:3128",
            "http://pro xy:3128",
        ] {
            let err = bad.parse::<ProxyUrl>().expect_err(bad).to_string();
            assert!(!err.contains("secret"), "{err}");
        }
        let err = "http://bob:hunter2@proxy:x"
            .parse::<ProxyUrl>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bob:****@proxy:x") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn no_proxy_follows_curl() {
        let rules = list(" site.local , .corp.example,registry.local:5000, 10.0.0.0/8, 192.168.1.7, fd00::/8, ::1, [2001:db8::7]:5000");
        // A domain, with or without the leading dot: itself and every name below.
        for host in [
            "site.local",
            "a.site.local",
            "a.b.site.local",
            "SITE.LOCAL.",
        ] {
            assert!(rules.matches(host, 443), "{host}");
        }
        assert!(!rules.matches("notsite.local", 443));
        assert!(rules.matches("corp.example", 443));
        assert!(rules.matches("x.corp.example", 80));
        // host:port: that port only.
        assert!(rules.matches("registry.local", 5000));
        assert!(!rules.matches("registry.local", 443));
        // IP addresses and ranges, IPv4 and IPv6.
        assert!(rules.matches("10.1.2.3", 5000));
        assert!(!rules.matches("11.0.0.1", 443));
        assert!(rules.matches("192.168.1.7", 443));
        assert!(!rules.matches("192.168.1.8", 443));
        assert!(rules.matches("[fd00::1234]", 443));
        assert!(rules.matches("fd00::1234", 443));
        assert!(rules.matches("::1", 443));
        assert!(rules.matches("[2001:db8::7]", 5000));
        assert!(!rules.matches("[2001:db8::7]", 5001));
        // Nothing is implied: loopback goes through the proxy unless listed.
        assert!(!rules.matches("127.0.0.1", 5000));
        assert!(!rules.matches("localhost", 5000));
        assert!(!list("").matches("127.0.0.1", 80));
        assert!(list("*").matches("anything.example", 1));
        assert!(list("localhost,127.0.0.0/8").matches("127.0.0.2", 5000));
    }

    #[test]
    fn bad_no_proxy_entries_are_named() {
        for bad in ["10.0.0.0/33", "a b", "host:x", "host:0", "http://x", "."] {
            let err = format!("site.local,{bad}")
                .parse::<NoProxy>()
                .expect_err(bad);
            assert_eq!(err.0, bad.trim());
        }
    }

    #[test]
    fn the_scheme_picks_the_proxy_and_no_proxy_bypasses_it() {
        let settings = ProxySettings {
            http: Some(url("http://plain-proxy:3128")),
            https: Some(url("http://tls-proxy:3128")),
            no_proxy: list(".site.local"),
            origin: ProxyOrigin::Config,
        };
        assert_eq!(
            settings.proxy_for(true, "quay.io", 443).unwrap().host,
            "tls-proxy"
        );
        assert_eq!(
            settings.proxy_for(false, "quay.io", 80).unwrap().host,
            "plain-proxy"
        );
        assert!(settings
            .proxy_for(true, "registry.site.local", 443)
            .is_none());
        let https_only = ProxySettings {
            http: None,
            ..settings
        };
        assert!(https_only.proxy_for(false, "quay.io", 80).is_none());
    }

    #[test]
    fn the_environment_lower_case_first() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ProxySettings::from_env(env(&[("NO_PROXY", "x")])).unwrap(),
            None
        );
        let s = ProxySettings::from_env(env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("NO_PROXY", "site.local"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.https.unwrap().host, "lower");
        assert!(s.http.is_none());
        assert!(s.no_proxy.matches("a.site.local", 443));
        assert_eq!(s.origin, ProxyOrigin::Environment);
        let err = ProxySettings::from_env(env(&[("HTTP_PROXY", "socks5://x:1")])).unwrap_err();
        assert_eq!(err.variable, "HTTP_PROXY");
    }
}
