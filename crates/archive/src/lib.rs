//! Air-gap export and import: OCI image layout archives (a tar of `oci-layout`, `index.json` and
//! `blobs/<alg>/<hex>`), so a node can be seeded from a USB stick with no uplink at all.
//!
//! - `export`: stored images to an archive ([`export()`]); the archive is written to a temp file
//!   and renamed into place, so a failed export leaves no half archive.
//! - `import`: an archive into the store ([`import()`]), from `outpost export`, `skopeo copy …
//!   oci-archive:FILE.tar:NAME` or any OCI image layout tar.
//! - this file: the `index.json` shape, [`ArchiveError`], reading stored manifests and deciding
//!   their media types.
//!
//! # Image names
//! Each image in `index.json` carries its full reference in the
//! `org.opencontainers.image.ref.name` annotation: `quay.io/kairos/core:v1`,
//! `docker.io/library/alpine:3.19`, or `registry/repository@sha256:…` for an image exported by
//! digest. skopeo 1.9 accepts exactly these as `NAME` in `oci-archive:FILE.tar:NAME`. On import
//! the annotation (or containerd's `io.containerd.image.name`, when present) is read as an image
//! reference like `docker pull` reads one (`alpine` is `docker.io/library/alpine:latest`) and
//! becomes the tag of the repository key the cache uses (`registry/repository`).
//!
//! # Invariants
//! - Import verifies every blob of the archive against its digest (new blobs through
//!   `Store::ingest`, blobs already stored by hashing the archive's copy) before it tags
//!   anything; a mismatch refuses the whole archive, naming the digest. Blobs that were valid
//!   may stay in the store, but no tag ever points at an incomplete image.
//! - An image is complete when its manifest, config and layers are stored; an index is complete
//!   when at least one of its platform manifests is in the archive and every child manifest in
//!   the archive is complete (other platforms are fetched on demand once online, as when serving).

#![forbid(unsafe_code)]

mod export;
mod import;

use std::path::PathBuf;

use oci::{Digest, ImageRefError, ManifestError, MediaType, MAX_MANIFEST_BYTES};
use storage::{Store, StoreError};

pub use export::{export, ExportReport};
pub use import::{import, ImportReport};

/// The annotation that names an image in an OCI image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `index.json` of an image layout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LayoutIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<LayoutEntry>,
}

/// One image of an image layout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LayoutEntry {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// containerd's annotation for the full image name (its `ref.name` holds only the tag).
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Reference(#[from] ImageRefError),
    #[error("{image} is not in the store; prefetch it first (outpost prefetch {image})")]
    NotStored { image: String },
    #[error("{image} is incomplete in the store: blob {digest} is missing; run outpost prefetch {image} to fetch what is missing, then export again")]
    Incomplete { image: String, digest: Digest },
    #[error("{image}: {source}")]
    Manifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error("{path} is not an OCI image layout archive: {reason}")]
    NotLayout { path: PathBuf, reason: String },
    #[error("{path}: blob {digest} is corrupt ({source}); the archive was refused and nothing was tagged; write the archive again from its source")]
    Corrupt {
        path: PathBuf,
        digest: Digest,
        #[source]
        source: Box<StoreError>,
    },
    #[error("{path}: image {image} needs blob {digest}, which is neither in the archive nor in the store; the archive was refused and nothing was tagged")]
    Missing {
        path: PathBuf,
        image: String,
        digest: Digest,
    },
    #[error("{path}: the image name {name:?} in index.json is not an image reference ({source}); nothing was tagged")]
    RefName {
        path: PathBuf,
        name: String,
        #[source]
        source: ImageRefError,
    },
}

impl ArchiveError {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Reads a stored blob whole (manifests and indexes only: at most 4 MiB).
fn read_stored(store: &Store, digest: &Digest) -> Result<Option<Vec<u8>>, ArchiveError> {
    let Some(blob) = store.open_blob(digest)? else {
        return Ok(None);
    };
    let (file, info, _lease) = blob.into_parts();
    if info.size > MAX_MANIFEST_BYTES as u64 {
        return Err(ArchiveError::NotLayout {
            path: store.dir().to_owned(),
            reason: format!(
                "manifest {digest} is {} bytes, more than a manifest may be",
                info.size
            ),
        });
    }
    let mut buf = vec![0; info.size as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)
        .map_err(|e| ArchiveError::io("read stored blob", store.dir(), e))?;
    Ok(Some(buf))
}

/// The media type of a manifest ([`oci::manifest_media_type`]), its error naming the manifest.
fn media_type_of(
    declared: Option<&str>,
    digest: &Digest,
    bytes: &[u8],
) -> Result<MediaType, ManifestError> {
    oci::manifest_media_type(declared, bytes).map_err(|e| ManifestError::Invalid {
        digest: digest.clone(),
        reason: format!("its media type: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::OCI_INDEX;

    #[test]
    fn media_types_are_parsed_at_the_edge() {
        let d = Digest::compute(oci::Algorithm::Sha256, b"m");
        assert_eq!(
            media_type_of(None, &d, br#"{"manifests":[]}"#)
                .unwrap()
                .as_str(),
            OCI_INDEX
        );
        assert_eq!(
            media_type_of(Some(""), &d, b"{}").unwrap(),
            MediaType::oci_manifest()
        );
        let hostile = r"application/vnd.oci.image.manifest.v1+json\u0000";
        let bytes = format!(r#"{{"mediaType":"{hostile}"}}"#);
        let e = media_type_of(None, &d, bytes.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(&d.to_string()), "{e}");
        assert!(media_type_of(Some("a/b\r\nX: y"), &d, b"{}").is_err());
    }
}
