//! What prefetch, export and import walk, parsed once at the edge:
//!
//! - [`ImageRef`]: an image reference as an operator writes it (`quay.io/kairos/core:v1`,
//!   `alpine`, `host:5000/a/b@sha256:…`), normalised like a client pull (Docker Hub's `library/`,
//!   `latest` when no tag) into the [`Source`] and [`Reference`] the cache uses;
//! - [`Platform`]: `os/arch[/variant]` as given to `--platform`;
//! - [`ManifestContent`]: an image index (or Docker manifest list) and its children, or an image
//!   manifest and its config and layers, each a [`Descriptor`] with a parsed [`Digest`].

use std::fmt;

use http::Method;
use storage::Digest;

use crate::route::{self, Operation, Reference, Registry, Source, Tag};

/// The annotation that names an image in an OCI image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image reference: a repository on a registry, and a tag or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub source: Source,
    pub reference: Reference,
}

/// Why an image reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("{input:?} is not an image reference: {reason}; write it as [HOST[:PORT]/]NAME[:TAG|@DIGEST], e.g. quay.io/kairos/core:v1")]
    Invalid { input: String, reason: String },
}

impl ImageRef {
    /// Parses `input` like `docker pull` does: a first component with a `.` or `:` (or
    /// `localhost`) is the registry, else `default_registry`; no tag means `latest`; a digest
    /// wins over a tag.
    pub fn parse(input: &str, default_registry: &Registry) -> Result<ImageRef, ImageRefError> {
        let invalid = |reason: &str| ImageRefError::Invalid {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        if input
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
        {
            return Err(invalid(
                "it contains a space, control character, '?' or '#'",
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
        let reference = match (digest, tag) {
            (Some(digest), _) => digest.to_owned(),
            (None, Some(tag)) => tag.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        if let (None, Some(tag)) = (digest, tag) {
            if Tag::parse(tag).is_none() {
                return Err(invalid(
                    "the tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
                ));
            }
        }
        let path = format!("/v2/{name}/manifests/{reference}");
        match route::route(&Method::GET, &path, None, default_registry) {
            Ok(routed) => match routed.operation {
                Operation::Manifest { source, reference } => Ok(ImageRef { source, reference }),
                _ => Err(invalid("it does not name a repository")),
            },
            Err(e) => Err(invalid(&e.to_string())),
        }
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

/// A platform of an image index entry: `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: write it as OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64")]
pub struct PlatformError(pub String);

impl Platform {
    pub fn parse(input: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = input.split('/').collect();
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(PlatformError(input.to_owned())),
        }
    }

    /// The platforms prefetched when `--platform` is not given: linux/amd64 and linux/arm64.
    pub fn defaults() -> Vec<Platform> {
        vec![
            Platform::parse("linux/amd64").expect("valid"),
            Platform::parse("linux/arm64").expect("valid"),
        ]
    }

    /// Whether an index entry's platform is this one (a wanted platform without a variant
    /// accepts any variant).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A content descriptor: what a manifest says about one blob or child manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
}

/// What a manifest refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestContent {
    /// An OCI image index or a Docker manifest list: child manifests, one per platform.
    Index { manifests: Vec<Descriptor> },
    /// An image manifest: a config blob and layers.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Why a manifest cannot be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not a JSON image manifest or index ({reason}); only OCI and Docker schema 2 manifests can be prefetched, exported or imported")]
    Invalid { digest: Digest, reason: String },
}

#[derive(serde::Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct RawManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// Whether `media_type` is an image index or a Docker manifest list.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

impl ManifestContent {
    /// Parses the manifest `digest` (already verified) whose media type is `media_type`.
    pub fn parse(
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<ManifestContent, ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            digest: digest.clone(),
            reason,
        };
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let descriptor = |raw: RawDescriptor| -> Result<Descriptor, ManifestError> {
            let digest = raw
                .digest
                .parse::<Digest>()
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Descriptor {
                media_type: raw.media_type,
                digest,
                size: raw.size,
                platform: raw.platform,
            })
        };
        let index = is_index_type(media_type)
            || raw.media_type.as_deref().is_some_and(is_index_type)
            || (raw.manifests.is_some() && raw.config.is_none());
        if index {
            let manifests = raw
                .manifests
                .ok_or_else(|| invalid("an index without `manifests`".to_owned()))?
                .into_iter()
                .map(descriptor)
                .collect::<Result<_, _>>()?;
            return Ok(ManifestContent::Index { manifests });
        }
        let config = raw
            .config
            .ok_or_else(|| invalid("an image manifest without `config`".to_owned()))?;
        Ok(ManifestContent::Image {
            config: descriptor(config)?,
            layers: raw
                .layers
                .unwrap_or_default()
                .into_iter()
                .map(descriptor)
                .collect::<Result<_, _>>()?,
        })
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
        assert_eq!(
            parse("quay.io/kairos/core:v1.2"),
            "quay.io/kairos/core:v1.2"
        );
        assert_eq!(
            parse("localhost:5000/team/app"),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            parse("127.0.0.1:5000/team/app:v2"),
            "127.0.0.1:5000/team/app:v2"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("quay.io/kairos/core:v1@{digest}")),
            format!("quay.io/kairos/core@{digest}")
        );
        let image = ImageRef::parse("index.docker.io/library/redis:7", &hub()).unwrap();
        assert_eq!(image.repository_key(), "docker.io/library/redis");
    }

    #[test]
    fn bad_references_are_refused_with_the_input() {
        for bad in [
            "",
            "Quay.io/UPPER/case",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:short",
            "with space",
            "a?b",
        ] {
            let error = ImageRef::parse(bad, &hub()).unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn platforms() {
        let arm = Platform::parse("linux/arm64").unwrap();
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm.matches(&v8));
        assert!(!v8.matches(&Platform::parse("linux/arm64/v7").unwrap()));
        assert!(!arm.matches(&Platform::parse("linux/amd64").unwrap()));
        assert_eq!(v8.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }

    #[test]
    fn manifests_are_walked() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let top = Digest::compute(storage::Algorithm::Sha256, b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d('a')
        );
        let ManifestContent::Index { manifests } = ManifestContent::parse(
            &top,
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        )
        .unwrap() else {
            panic!("not an index")
        };
        assert_eq!(manifests[0].digest.to_string(), d('a'));
        assert_eq!(
            manifests[0].platform.as_ref().unwrap().architecture,
            "amd64"
        );

        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":2}},"layers":[{{"mediaType":"l","digest":"{}","size":3}}]}}"#,
            d('b'),
            d('c')
        );
        let ManifestContent::Image { config, layers } = ManifestContent::parse(
            &top,
            "application/vnd.docker.distribution.manifest.v2+json",
            image.as_bytes(),
        )
        .unwrap() else {
            panic!("not an image")
        };
        assert_eq!(config.size, 2);
        assert_eq!(layers[0].digest.to_string(), d('c'));

        let error =
            ManifestContent::parse(&top, "x", b"{\"config\":{\"digest\":\"md5:1\",\"size\":1}}")
                .unwrap_err();
        assert!(error.to_string().contains(&top.to_string()), "{error}");
    }
}
