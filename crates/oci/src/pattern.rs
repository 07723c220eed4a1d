//! Repository prefixes and patterns: `host[/path]` ([`Prefix`], as in `registryMappingRules`)
//! and `host/path`, `host/path/*`, `host/path*` ([`RepoPattern`], as in
//! `outpost.infrastructureImages`). The one place that decides whether a source is an
//! infrastructure image.

use std::fmt;

use crate::name::{NameError, Registry, Repository, Source};

/// A registry and an optional repository path below it, canonical (`index.docker.io/x` is
/// `docker.io/x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub registry: Registry,
    pub path: Option<Repository>,
}

impl Prefix {
    /// Parses `host[/path]` (a trailing `/` is ignored).
    pub fn parse(s: &str) -> Result<Prefix, NameError> {
        let s = s.trim_end_matches('/');
        let (host, path) = s.split_once('/').unwrap_or((s, ""));
        Ok(Prefix {
            registry: Registry::parse(host)?,
            path: match path {
                "" => None,
                path => Some(Repository::parse(path)?),
            },
        })
    }

    /// The rest of `name` (`host/repository`, canonical) below this prefix, at a `/` boundary:
    /// `Some("")` for the prefix itself, `None` when it is not below.
    pub fn strip<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(&self.to_string())?;
        match rest {
            "" => Some(""),
            rest => rest.strip_prefix('/'),
        }
    }
}

/// Compares the canonical form: `prefix == "docker.io/library"`.
impl PartialEq<&str> for Prefix {
    fn eq(&self, other: &&str) -> bool {
        self.to_string().as_str() == *other
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}/{path}", self.registry),
            None => write!(f, "{}", self.registry),
        }
    }
}

/// What a pattern matches besides its prefix itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Wildcard {
    /// `host/path`: that repository only.
    None,
    /// `host/path/*`: it and every repository below it.
    Below,
    /// `host/path*`: every name that starts with the prefix.
    Any,
}

/// A repository pattern: `host/path` matches itself; `host/path/*` matches it and everything
/// below; `host/path*` matches every name that starts with `host/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoPattern {
    prefix: Prefix,
    wildcard: Wildcard,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("`{0}` matches every image; write a repository pattern `host/path[/*]`")]
    Everything(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

impl RepoPattern {
    pub fn parse(s: &str) -> Result<RepoPattern, PatternError> {
        let s = s.trim();
        let wildcard = if s.ends_with("/*") {
            Wildcard::Below
        } else if s.ends_with('*') {
            Wildcard::Any
        } else {
            Wildcard::None
        };
        let base = s.trim_end_matches('*').trim_end_matches('/');
        if base.is_empty() {
            return Err(PatternError::Everything(s.to_owned()));
        }
        let prefix = Prefix::parse(base)?;
        // A bare registry is the whole registry: `quay.io` means everything on it.
        let wildcard = match (wildcard, &prefix.path) {
            (Wildcard::None, None) => Wildcard::Below,
            (w, _) => w,
        };
        Ok(RepoPattern { prefix, wildcard })
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    pub fn matches(&self, source: &Source) -> bool {
        self.matches_name(&source.to_string())
    }

    /// [`RepoPattern::matches`] for a canonical name or prefix (`host[/path]`), as the routing
    /// table has them.
    pub fn matches_name(&self, name: &str) -> bool {
        let prefix = self.prefix.to_string();
        match self.wildcard {
            Wildcard::None => name == prefix,
            Wildcard::Below => self.prefix.strip(name).is_some(),
            Wildcard::Any => name.starts_with(&prefix),
        }
    }
}

/// Compares the canonical form: `pattern == "quay.io/kairos/*"`.
impl PartialEq<&str> for RepoPattern {
    fn eq(&self, other: &&str) -> bool {
        self.to_string().as_str() == *other
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wildcard {
            Wildcard::None => write!(f, "{}", self.prefix),
            Wildcard::Below => write!(f, "{}/*", self.prefix),
            Wildcard::Any => write!(f, "{}*", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::from_name(s, &Registry::parse("docker.io").unwrap()).unwrap()
    }

    fn matches(pattern: &str, name: &str) -> bool {
        RepoPattern::parse(pattern).unwrap().matches(&src(name))
    }

    #[test]
    fn prefixes() {
        let p = Prefix::parse("index.docker.io/library/").unwrap();
        assert_eq!(p.to_string(), "docker.io/library");
        assert_eq!(p.strip("docker.io/library/alpine"), Some("alpine"));
        assert_eq!(p.strip("docker.io/library"), Some(""));
        assert_eq!(p.strip("docker.io/libraryx/a"), None);
        assert_eq!(
            Prefix::parse("localhost:5000").unwrap().to_string(),
            "localhost:5000"
        );
        assert!(Prefix::parse("quay.io/a..b").is_err());
        assert!(Prefix::parse("host:99999/a").is_err());
    }

    #[test]
    fn infrastructure_patterns() {
        assert!(matches("quay.io/kairos/core", "quay.io/kairos/core"));
        assert!(!matches("quay.io/kairos/core", "quay.io/kairos/core-x"));
        assert!(matches("quay.io/kairos/*", "quay.io/kairos/core"));
        assert!(matches("quay.io/kairos/*", "quay.io/kairos/a/b"));
        assert!(!matches("quay.io/kairos/*", "quay.io/kairosx/a"));
        assert!(matches(
            "quay.io/kairos/core*",
            "quay.io/kairos/core-ubuntu"
        ));
        assert!(matches("index.docker.io/library/*", "alpine"));
        assert!(matches("quay.io", "quay.io/a/b"));
        assert_eq!(
            RepoPattern::parse("quay.io/kairos/*").unwrap().to_string(),
            "quay.io/kairos/*"
        );
        assert!(matches!(
            RepoPattern::parse("*"),
            Err(PatternError::Everything(_))
        ));
        assert!(RepoPattern::parse("quay.io/UPPER").is_err());
    }
}
