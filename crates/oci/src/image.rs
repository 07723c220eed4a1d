//! [`ImageRef`]: an image reference as an operator writes it (`quay.io/kairos/core:v1`,
//! `alpine`, `host:5000/a/b@sha256:…`), normalised like `docker pull` into a [`Source`] and a
//! [`Reference`]. The provider image of the configuration, prefetch's arguments and export's
//! arguments are all this one type.

use std::fmt;

use crate::name::{NameError, Reference, Registry, Source, Tag};

/// An image reference: a repository on a registry, and a tag or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub source: Source,
    pub reference: Reference,
}

/// Why an image reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an image reference: {reason}; write it as [HOST[:PORT]/]NAME[:TAG|@DIGEST], e.g. quay.io/kairos/core:v1")]
pub struct ImageRefError {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses `input` like `docker pull` does: a first component that looks like a host is the
    /// registry, else `default_registry`; no tag means `latest`; a digest wins over a tag (both
    /// must be valid).
    pub fn parse(input: &str, default_registry: &Registry) -> Result<ImageRef, ImageRefError> {
        let invalid = |reason: String| ImageRefError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("it is empty".to_owned()));
        }
        if input
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
        {
            return Err(invalid(
                "it contains a space, control character, '?' or '#'".to_owned(),
            ));
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (input, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_component = name.rsplit('/').next().unwrap_or(name);
        let (name, tag) = match last_component.rsplit_once(':') {
            Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
            None => (name, None),
        };
        let reason = |e: NameError| invalid(e.to_string());
        let tag = tag.map(Tag::parse).transpose().map_err(reason)?;
        let reference = match (digest, tag) {
            (Some(digest), _) => Reference::Digest(
                digest
                    .parse()
                    .map_err(|e: crate::DigestError| invalid(e.to_string()))?,
            ),
            (None, Some(tag)) => Reference::Tag(tag),
            (None, None) => Reference::Tag(Tag::parse("latest").map_err(reason)?),
        };
        let source = Source::from_name(name, default_registry).map_err(reason)?;
        Ok(ImageRef { source, reference })
    }

    /// The repository key the store uses for tags: `registry/repository`.
    pub fn repository_key(&self) -> String {
        self.source.to_string()
    }
}

/// The canonical form: `registry/repository:tag` or `registry/repository@digest`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(tag) => write!(f, "{}:{tag}", self.source),
            Reference::Digest(digest) => write!(f, "{}@{digest}", self.source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Registry {
        Registry::parse("docker.io").unwrap()
    }

    fn parse(s: &str) -> String {
        ImageRef::parse(s, &hub()).unwrap().to_string()
    }

    #[test]
    fn references_are_normalised_like_a_pull() {
        assert_eq!(parse("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(parse("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(parse("ubuntu:20.04"), "docker.io/library/ubuntu:20.04");
        assert_eq!(
            parse("quay.io/kairos/core-ubuntu-20-lts-rke2:v1.25.2-rke2r1"),
            "quay.io/kairos/core-ubuntu-20-lts-rke2:v1.25.2-rke2r1"
        );
        assert_eq!(
            parse("localhost:5000/team/app"),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(parse("localhost:5000/img:1"), "localhost:5000/img:1");
        assert_eq!(
            parse("127.0.0.1:5000/team/app:v2"),
            "127.0.0.1:5000/team/app:v2"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("quay.io/kairos/core:v1@{digest}")),
            format!("quay.io/kairos/core@{digest}")
        );
        assert_eq!(
            parse(&format!("index.docker.io/me/img@{digest}")),
            format!("docker.io/me/img@{digest}")
        );
        let image = ImageRef::parse("index.docker.io/library/redis:7", &hub()).unwrap();
        assert_eq!(image.repository_key(), "docker.io/library/redis");
        let ghcr = Registry::parse("ghcr.io").unwrap();
        assert_eq!(
            ImageRef::parse("app:1", &ghcr).unwrap().to_string(),
            "ghcr.io/app:1"
        );
    }

    #[test]
    fn bad_references_are_refused_with_the_input() {
        for bad in [
            "",
            "Quay.io/UPPER/case",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:short",
            // The configuration once accepted this provider image, which prefetch refused.
            "img@sha256:abcd",
            "index.docker.io/me/img@sha256:abcd",
            "quay.io/",
            "quay.io/a..b:v1",
            "with space",
            "a?b",
            "host:99999/a:v1",
        ] {
            let error = ImageRef::parse(bad, &hub()).unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }
}
