//! Manifests and what they point at: [`MediaType`], [`Descriptor`], [`Platform`] and
//! [`ManifestContent`] (an index and its children, or an image manifest and its config and
//! layers), parsed once at the edge.

use std::fmt;

use crate::Digest;

/// The OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type outpost understands, as an `Accept` value.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
/// The largest manifest outpost accepts (the distribution spec's recommended limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The longest media type accepted.
const MAX_MEDIA_TYPE_LEN: usize = 255;

/// A media type that is safe to send as a `Content-Type` header: `type/subtype` of RFC 9110
/// token characters, optionally followed by `;` parameters of visible ASCII. A manifest's own
/// `mediaType` field comes from an upstream or an archive; it is parsed into this before it is
/// stored or answered, so no control character ever reaches a header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MediaType(String);

/// Why a media type was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a media type (`type/subtype` of letters, digits and `!#$&-^_.+`, at most 255 characters)")]
pub struct MediaTypeError(pub String);

impl MediaType {
    pub fn parse(s: &str) -> Result<MediaType, MediaTypeError> {
        let bad = || MediaTypeError(s.chars().take(MAX_MEDIA_TYPE_LEN).collect());
        if s.is_empty() || s.len() > MAX_MEDIA_TYPE_LEN {
            return Err(bad());
        }
        let (essence, params) = match s.split_once(';') {
            // Optional white space before `;` is a space or a tab: nothing a header cannot hold.
            Some((essence, params)) => (essence.trim_end_matches([' ', '\t']), Some(params)),
            None => (s, None),
        };
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let essence_ok = essence
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub));
        let params_ok = params.is_none_or(|p| {
            p.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        });
        if essence_ok && params_ok {
            Ok(MediaType(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The OCI image manifest type.
    pub fn oci_manifest() -> MediaType {
        MediaType(OCI_MANIFEST.to_owned())
    }

    /// `type/subtype` without parameters, lower case, for comparisons.
    pub fn essence(&self) -> String {
        self.0
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// An image index or a Docker manifest list.
    pub fn is_index(&self) -> bool {
        is_index_type(&self.essence())
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `media_type` is an image index or a Docker manifest list.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The media type of manifest bytes, decided once for every way a manifest arrives: the type
/// `declared` for it (an upstream's `Content-Type`, an archive's descriptor) when there is one,
/// else the manifest's own `mediaType` field, else an image index when it lists `manifests`,
/// else an OCI image manifest. A declared or written type that is not a valid media type is an
/// error: it would become a `Content-Type`.
pub fn manifest_media_type(
    declared: Option<&str>,
    bytes: &[u8],
) -> Result<MediaType, MediaTypeError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    if let Some(declared) = declared.filter(|d| !d.trim().is_empty()) {
        return MediaType::parse(declared);
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(field),
            ..
        }) => MediaType::parse(&field),
        Ok(Probe {
            manifests: Some(_), ..
        }) => Ok(MediaType(OCI_INDEX.to_owned())),
        _ => Ok(MediaType::oci_manifest()),
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
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        let part = |s: &str| s.to_owned();
        match input.split('/').collect::<Vec<_>>().as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: part(os),
                architecture: part(arch),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: part(os),
                architecture: part(arch),
                variant: Some(part(variant)),
            }),
            _ => Err(PlatformError(input.to_owned())),
        }
    }

    /// linux/amd64 and linux/arm64: what prefetch takes of an index when not told otherwise.
    pub fn defaults() -> Vec<Platform> {
        ["amd64", "arm64"]
            .into_iter()
            .map(|architecture| Platform {
                os: "linux".to_owned(),
                architecture: architecture.to_owned(),
                variant: None,
            })
            .collect()
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
    /// As written in the manifest (it names the blob's type; never sent as a header).
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
    use crate::Algorithm;

    #[test]
    fn media_types() {
        for ok in [
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/json; charset=utf-8",
            "text/plain;charset=\"utf-8\"",
        ] {
            assert_eq!(MediaType::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "application",
            "application/",
            "/json",
            "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: 1",
            // found by the `names` fuzz target: a line break before the parameters
            "application/vnd.oci.image.manifest.v1+json\r\n;x",
            "application/json\u{b};x",
            "application/json\u{7}",
            "application/json; charset=\u{0}",
            "appl ication/json",
            "application/jsön",
            &format!("application/{}", "a".repeat(300)),
        ] {
            assert!(MediaType::parse(bad).is_err(), "{bad:?}");
        }
        assert!(MediaType::parse(OCI_INDEX).unwrap().is_index());
        assert!(
            MediaType::parse("Application/VND.OCI.image.index.v1+json; x=y")
                .unwrap()
                .is_index()
        );
        assert!(!MediaType::oci_manifest().is_index());
    }

    #[test]
    fn the_media_type_of_a_manifest() {
        let of = |declared: Option<&str>, bytes: &str| {
            manifest_media_type(declared, bytes.as_bytes()).map(|m| m.to_string())
        };
        assert_eq!(
            of(Some(DOCKER_MANIFEST), r#"{"mediaType":"a/b"}"#).unwrap(),
            DOCKER_MANIFEST
        );
        assert_eq!(of(None, r#"{"mediaType":"a/b","x":1}"#).unwrap(), "a/b");
        assert_eq!(of(Some(""), r#"{"manifests":[]}"#).unwrap(), OCI_INDEX);
        assert_eq!(of(None, "{}").unwrap(), OCI_MANIFEST);
        assert_eq!(of(None, "[1]").unwrap(), OCI_MANIFEST);
        assert!(of(None, r#"{"mediaType":"a/b\u0007"}"#).is_err());
        assert!(of(Some("a/b\r\nX: y"), "{}").is_err());
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
        assert_eq!(Platform::defaults().len(), 2);
    }

    #[test]
    fn manifests_are_walked() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let top = Digest::compute(Algorithm::Sha256, b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d('a')
        );
        let ManifestContent::Index { manifests } =
            ManifestContent::parse(&top, OCI_INDEX, index.as_bytes()).unwrap()
        else {
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
        let ManifestContent::Image { config, layers } =
            ManifestContent::parse(&top, DOCKER_MANIFEST, image.as_bytes()).unwrap()
        else {
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
