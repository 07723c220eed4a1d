//! The name grammar, once: registry hosts, repository names, tags and references, and the rule
//! that splits a client's name into a registry and a repository.
//!
//! Every parser here is a pure function that returns a validated newtype or a [`NameError`]
//! saying what is wrong; configuration files, request paths, image references on a command line
//! and archive annotations all go through these same functions.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::Digest;

/// The name the Docker Hub registry goes by in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The longest repository name (as Docker Distribution limits it).
pub const MAX_REPOSITORY_LEN: usize = 255;

/// Why a name, host, tag or reference is not valid. Each message says what a valid one looks
/// like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("no registry host; write `host[:port]`, e.g. `registry.example.com:5000`")]
    HostEmpty,
    #[error("`{0}` is not a valid host name or IP address (letters, digits, `-` and `.`; no label longer than 63 or starting or ending with `-`)")]
    HostInvalid(String),
    #[error("`{0}` is not an IPv6 address; write it in brackets, e.g. `[::1]:5000`")]
    Ipv6Invalid(String),
    #[error("port `{0}` is not a number from 1 to 65535")]
    PortInvalid(String),
    #[error("repository path component `{0}` is invalid: components are lower-case letters and digits joined by `.`, `_`, `__` or `-`, separated by single `/`")]
    ComponentInvalid(String),
    #[error("no repository: the name is empty after the registry host")]
    RepositoryEmpty,
    #[error("the repository name is longer than {MAX_REPOSITORY_LEN} characters")]
    RepositoryTooLong,
    #[error("tag `{0}` is invalid: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    TagInvalid(String),
    #[error(transparent)]
    Digest(#[from] crate::DigestError),
}

/// A canonical registry host, `host[:port]`, lower case. `index.docker.io` and
/// `registry-1.docker.io` are both `docker.io`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry(String);

impl Registry {
    /// Parses and canonicalises `host[:port]`: a DNS name, an IPv4 address or a bracketed IPv6
    /// address, and a port from 1 to 65535.
    pub fn parse(host: &str) -> Result<Registry, NameError> {
        let host = host.to_ascii_lowercase();
        check_host(&host)?;
        Ok(match host.as_str() {
            "index.docker.io" | DOCKER_HUB_API => Registry(DOCKER_HUB.to_owned()),
            _ => Registry(host),
        })
    }

    /// `docker.io`.
    pub fn docker_hub() -> Registry {
        Registry(DOCKER_HUB.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }

    /// The host that serves this registry's API.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API
        } else {
            &self.0
        }
    }
}

/// Compares the canonical host: `registry == "docker.io"`.
impl PartialEq<&str> for Registry {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl FromStr for Registry {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Registry::parse(s)
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `host[:port]` (already lower case).
fn check_host(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::HostEmpty);
    }
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| NameError::Ipv6Invalid(s.to_owned()))?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| NameError::Ipv6Invalid(ip.to_owned()))?;
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(NameError::HostInvalid(s.to_owned())),
            },
        }
    } else {
        match s.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port {
        let valid =
            port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(NameError::PortInvalid(port.to_owned()));
        }
    }
    let Some(name) = name else {
        return Ok(());
    };
    if name.is_empty() {
        return Err(NameError::HostEmpty);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(NameError::HostInvalid(name.to_owned()));
    }
    Ok(())
}

/// Whether a host (`host[:port]`, as a [`Registry`] or a target host) is this machine:
/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Docker's rule for the first component of a name: a registry host when it has a `.` or a `:`,
/// starts with `[`, or is `localhost`.
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.')
        || component.contains(':')
        || component.starts_with('[')
        || component == "localhost"
}

/// A repository name (or a path prefix of one) by the distribution spec's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most
/// [`MAX_REPOSITORY_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository(String);

impl Repository {
    pub fn parse(name: &str) -> Result<Repository, NameError> {
        if name.is_empty() {
            return Err(NameError::RepositoryEmpty);
        }
        if name.len() > MAX_REPOSITORY_LEN {
            return Err(NameError::RepositoryTooLong);
        }
        if let Some(bad) = name.split('/').find(|c| !is_path_component(c)) {
            return Err(NameError::ComponentInvalid(bad.to_owned()));
        }
        Ok(Repository(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Repository {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Repository::parse(s)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: lower-case alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Result<Tag, NameError> {
        let bytes = tag.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if ok {
            Ok(Tag(tag.to_owned()))
        } else {
            Err(NameError::TagInvalid(tag.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A digest when it has a `:` (tags cannot), else a tag.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// A repository on a registry: what a client asked for (`quay.io` + `kairos/core`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub registry: Registry,
    pub repository: Repository,
}

impl Source {
    /// A repository on `registry`, with Docker Hub's rule: a one-component name there is under
    /// `library/`; a name that `library/` makes longer than [`MAX_REPOSITORY_LEN`] is refused,
    /// like any other name that long.
    pub fn new(registry: Registry, repository: Repository) -> Result<Source, NameError> {
        let repository = if registry.is_docker_hub() && !repository.0.contains('/') {
            Repository::parse(&format!("library/{}", repository.0))?
        } else {
            repository
        };
        Ok(Source {
            registry,
            repository,
        })
    }

    /// A name as a client writes it (`quay.io/kairos/core`, `alpine`): a first component that
    /// [`looks_like_host`] is the registry, else `default`.
    pub fn from_name(name: &str, default: &Registry) -> Result<Source, NameError> {
        match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => {
                Source::new(Registry::parse(first)?, Repository::parse(rest)?)
            }
            _ => Source::new(default.clone(), Repository::parse(name)?),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Registry {
        Registry::docker_hub()
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "quay.io",
            "localhost:5000",
            "10.0.0.1:8000",
            "[::1]:5000",
            "[::1]",
            "a-b.c",
            "host:65535",
        ] {
            assert!(Registry::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a_b.io",
            "host:",
            "host:99999",
            "host:0",
            "host:99999x",
            "host:+80",
            "-a.io",
            "[zz]:1",
            "[::1",
            "[::1]x",
            "a/b",
            "bad_host!",
            ":5000",
        ] {
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
        let long_label = format!("{}.io", "a".repeat(64));
        assert!(Registry::parse(&long_label).is_err());
        assert_eq!(Registry::parse("Quay.IO").unwrap().as_str(), "quay.io");
        assert_eq!(hub().api_host(), "registry-1.docker.io");
        // Both Docker Hub API hosts are docker.io (once, a configuration file did not know
        // registry-1.docker.io while the request router did).
        for alias in ["registry-1.docker.io", "index.docker.io", "Index.Docker.IO"] {
            assert_eq!(Registry::parse(alias).unwrap(), hub(), "{alias}");
        }
    }

    #[test]
    fn ports_are_checked_alike_everywhere() {
        assert_eq!(
            Registry::parse("h:99999"),
            Err(NameError::PortInvalid("99999".into()))
        );
        assert_eq!(
            Registry::parse("[::1]:0"),
            Err(NameError::PortInvalid("0".into()))
        );
    }

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "a/b",
            "a-b/c__d",
            "a---b",
            "a.b_c",
            "spectro-images/quay.io/kairos/core",
        ] {
            assert!(Repository::parse(ok).is_ok(), "{ok}");
        }
        // `a..b`, `a._b` and `_a` were accepted by the configuration's own path check once.
        for bad in [
            "", "A", "a//b", "-a", "a-", "a..b", "a._b", "_a", "a___b", "a/", "/a", "..", "a b",
        ] {
            assert!(Repository::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Repository::parse(&"a".repeat(255)).is_ok());
        assert_eq!(
            Repository::parse(&"a".repeat(256)),
            Err(NameError::RepositoryTooLong)
        );
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.2-rc_3").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "-x", ".x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:abcd"),
            Err(NameError::Digest(_))
        ));
    }

    #[test]
    fn names_split_into_registry_and_repository() {
        let s = |n: &str| Source::from_name(n, &hub()).unwrap().to_string();
        assert_eq!(s("alpine"), "docker.io/library/alpine");
        assert_eq!(s("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(s("quay.io/kairos/core"), "quay.io/kairos/core");
        assert_eq!(s("localhost/app"), "localhost/app");
        assert_eq!(s("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(s("[::1]:5000/a"), "[::1]:5000/a");
        assert_eq!(s("index.docker.io/nginx"), "docker.io/library/nginx");
        assert_eq!(s("registry-1.docker.io/nginx"), "docker.io/library/nginx");
        // `library/` may not push a name past the limit (found by the route fuzz target).
        let long = "a".repeat(MAX_REPOSITORY_LEN - 4);
        assert_eq!(
            Source::from_name(&long, &hub()),
            Err(NameError::RepositoryTooLong)
        );
        assert!(Source::from_name(&format!("quay.io/{long}"), &hub()).is_ok());
        let ghcr = Registry::parse("ghcr.io").unwrap();
        assert_eq!(
            Source::from_name("alpine", &ghcr).unwrap().to_string(),
            "ghcr.io/alpine"
        );
        assert!(Source::from_name("quay.io/../etc", &hub()).is_err());
        assert!(Source::from_name("quay.io/", &hub()).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "quay.io",
            "10.0.0.1:5000",
            "[::2]:1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
