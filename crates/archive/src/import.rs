//! Import: an OCI image layout archive into the store, in four steps, so that nothing is tagged
//! unless everything checked out:
//!
//! 1. scan the tar: `oci-layout`, `index.json`, the blob entries and their digests (parsed from
//!    their paths); the image names of `index.json` are parsed here too;
//! 2. verify every blob: new ones through `Store::ingest` (which hashes, checks size and digest,
//!    then renames into place), already stored ones by hashing the archive's copy;
//! 3. check each image is complete and record the manifests' media types;
//! 4. tag;
//! 5. record the referrers: manifests named `<repository>@<digest>` (as `export` names them)
//!    that have a `subject` join that subject's referrers index in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci::{
    Digest, DigestError, Hasher, ImageRef, ManifestContent, MediaType, Reference, Registry,
    MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use storage::{Store, StoreError};

use super::{
    media_type_of, read_stored, ArchiveError, LayoutIndex, CONTAINERD_IMAGE_NAME, REF_NAME,
};

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub path: PathBuf,
    /// The images tagged: canonical name and manifest digest.
    pub tagged: Vec<(String, Digest)>,
    /// Manifests of `index.json` without a name: stored, reachable by digest only.
    pub untagged: Vec<Digest>,
    /// Blobs written to the store.
    pub blobs_new: usize,
    /// Blobs that were already stored (the archive's copy was verified all the same).
    pub blobs_present: usize,
    /// Bytes of the blobs written.
    pub bytes_new: u64,
    /// Imported manifests that refer to a subject (signatures, attestations), recorded as the
    /// subject's referrers.
    pub referrers: usize,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, digest) in &self.tagged {
            writeln!(f, "imported {name} ({digest})")?;
        }
        for digest in &self.untagged {
            writeln!(
                f,
                "imported {digest} (no name in index.json: reachable by digest only)"
            )?;
        }
        if self.referrers > 0 {
            writeln!(
                f,
                "recorded {} referrers (signatures, attestations, SBOMs) of the images",
                self.referrers
            )?;
        }
        writeln!(
            f,
            "verified {} blobs of {}: {} new ({} bytes), {} already stored",
            self.blobs_new + self.blobs_present,
            self.path.display(),
            self.blobs_new,
            self.bytes_new,
            self.blobs_present
        )
    }
}

/// An image of `index.json`, parsed.
struct Named {
    digest: Digest,
    media_type: String,
    image: Option<ImageRef>,
}

/// Loads the archive at `path` into `store` (see the module docs). `default_registry` reads
/// names without a registry; `now` is the tags' check time.
pub fn import(
    store: &Store,
    path: &Path,
    default_registry: &Registry,
    now: SystemTime,
) -> Result<ImportReport, ArchiveError> {
    let not_layout = |reason: String| ArchiveError::NotLayout {
        path: path.to_owned(),
        reason,
    };
    // 1. Scan.
    let mut layout_seen = false;
    let mut index: Option<Vec<u8>> = None;
    let mut blobs: HashMap<Digest, u64> = HashMap::new();
    for_each_entry(path, |name, entry| {
        match name {
            "oci-layout" => {
                let bytes = read_small(entry, 64 << 10, path)?;
                let layout: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| not_layout(format!("oci-layout is not JSON: {e}")))?;
                if layout["imageLayoutVersion"].as_str().is_none() {
                    return Err(not_layout(
                        "oci-layout has no imageLayoutVersion".to_owned(),
                    ));
                }
                layout_seen = true;
            }
            "index.json" => {
                index = Some(read_small(entry, MAX_MANIFEST_BYTES, path)?);
            }
            _ => {
                if let Some(digest) = blob_digest(name) {
                    let digest = digest.map_err(|e| not_layout(format!("entry {name}: {e}")))?;
                    blobs.insert(digest, entry.size());
                }
            }
        }
        Ok(())
    })?;
    if !layout_seen {
        return Err(not_layout("it has no oci-layout file".to_owned()));
    }
    let index = index.ok_or_else(|| not_layout("it has no index.json".to_owned()))?;
    let index: LayoutIndex =
        serde_json::from_slice(&index).map_err(|e| not_layout(format!("index.json: {e}")))?;
    let mut named = Vec::new();
    for entry in &index.manifests {
        let digest = entry
            .digest
            .parse::<Digest>()
            .map_err(|e| not_layout(format!("index.json: {e}")))?;
        let name = entry
            .annotations
            .get(CONTAINERD_IMAGE_NAME)
            .or_else(|| entry.annotations.get(REF_NAME));
        let image = match name {
            None => None,
            Some(name) => Some(ImageRef::parse(name, default_registry).map_err(|source| {
                ArchiveError::RefName {
                    path: path.to_owned(),
                    name: name.clone(),
                    source,
                }
            })?),
        };
        if let Some(ImageRef {
            reference: Reference::Digest(named_digest),
            ..
        }) = &image
        {
            if named_digest != &digest {
                return Err(not_layout(format!(
                    "index.json names {named_digest} for the manifest {digest}"
                )));
            }
        }
        named.push(Named {
            digest,
            media_type: entry.media_type.clone(),
            image,
        });
    }

    // 2. Verify every blob; store the new ones.
    let mut report = ImportReport {
        path: path.to_owned(),
        ..ImportReport::default()
    };
    for_each_entry(path, |name, entry| {
        let Some(Ok(digest)) = blob_digest(name) else {
            return Ok(());
        };
        let size = entry.size();
        let corrupt = |source: StoreError| ArchiveError::Corrupt {
            path: path.to_owned(),
            digest: digest.clone(),
            source: Box::new(source),
        };
        if store.stat(&digest).is_some() {
            let mut hasher = Hasher::new(digest.algorithm());
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| ArchiveError::io("read", path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let actual = hasher.finish();
            if actual != digest {
                return Err(corrupt(StoreError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                }));
            }
            report.blobs_present += 1;
        } else {
            let mut ingest = store.ingest(&digest, Some(size))?;
            io::copy(entry, &mut ingest).map_err(|e| ArchiveError::io("read", path, e))?;
            match ingest.commit(None) {
                Ok(_) => {}
                Err(e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. })) => {
                    return Err(corrupt(e))
                }
                Err(e) => return Err(e.into()),
            }
            report.blobs_new += 1;
            report.bytes_new += size;
        }
        Ok(())
    })?;

    // 3. Every named image complete; manifests get their media types.
    let in_archive: HashSet<&Digest> = blobs.keys().collect();
    for entry in &named {
        let image = entry
            .image
            .as_ref()
            .map(ImageRef::to_string)
            .unwrap_or_else(|| entry.digest.to_string());
        check_complete(
            store,
            path,
            &image,
            &entry.digest,
            &entry.media_type,
            &in_archive,
        )?;
    }

    // 4. Tag; collect the referrers (named by digest, with a `subject`).
    let mut referrers: BTreeMap<(String, Digest), Vec<serde_json::Value>> = BTreeMap::new();
    for entry in named {
        match entry.image {
            None => report.untagged.push(entry.digest),
            Some(image) => {
                let repo = image.repository_key();
                match &image.reference {
                    Reference::Tag(tag) => {
                        store.put_tag(&repo, tag.as_str(), &entry.digest, now)?
                    }
                    Reference::Digest(_) => {
                        store.note_repository(&repo)?;
                        if let Some((subject, descriptor)) =
                            referrer(store, &entry.digest, &entry.media_type)?
                        {
                            referrers
                                .entry((repo, subject))
                                .or_default()
                                .push(descriptor);
                        }
                    }
                }
                report.tagged.push((image.to_string(), entry.digest));
            }
        }
    }

    // 5. Each subject's referrers index: the imported referrers, with those already recorded.
    for ((repo, subject), mut descriptors) in referrers {
        report.referrers += descriptors.len();
        if let Some(known) = store.referrers(&repo, &subject) {
            let known = read_stored(store, &known.digest)?
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            let known = known
                .as_ref()
                .and_then(|k| k["manifests"].as_array())
                .cloned()
                .unwrap_or_default();
            for descriptor in known {
                if !descriptors
                    .iter()
                    .any(|d| d["digest"] == descriptor["digest"])
                {
                    descriptors.push(descriptor);
                }
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        })
        .to_string();
        let digest = Digest::compute(oci::Algorithm::Sha256, index.as_bytes());
        let media_type = MediaType::parse(OCI_INDEX).ok();
        store.put_bytes(&digest, index.as_bytes(), media_type.as_ref())?;
        store.put_referrers(&repo, &subject, &digest, now)?;
    }
    Ok(report)
}

/// The subject of the stored manifest `digest`, and its descriptor as a referrers index lists
/// it (`artifactType`: the manifest's, else its config's media type; its annotations); `None`
/// for a manifest without a subject.
fn referrer(
    store: &Store,
    digest: &Digest,
    media_type: &str,
) -> Result<Option<(Digest, serde_json::Value)>, ArchiveError> {
    let Some(bytes) = read_stored(store, digest)? else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let Some(subject) = manifest["subject"]["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
    else {
        return Ok(None);
    };
    let artifact_type = manifest["artifactType"]
        .as_str()
        .or(manifest["config"]["mediaType"].as_str())
        .unwrap_or_default();
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": bytes.len(),
        "artifactType": artifact_type,
    });
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    Ok(Some((subject, descriptor)))
}

/// Checks that the manifest `digest` and what it refers to are stored, and records its media
/// type. For an index, the child manifests in the archive must be complete, and there must be
/// at least one.
fn check_complete(
    store: &Store,
    path: &Path,
    image: &str,
    digest: &Digest,
    media_type: &str,
    in_archive: &HashSet<&Digest>,
) -> Result<(), ArchiveError> {
    let missing = |digest: &Digest| ArchiveError::Missing {
        path: path.to_owned(),
        image: image.to_owned(),
        digest: digest.clone(),
    };
    let bytes = read_stored(store, digest)?.ok_or_else(|| missing(digest))?;
    let manifest_error = |source| ArchiveError::Manifest {
        image: image.to_owned(),
        source,
    };
    let media_type = media_type_of(Some(media_type), digest, &bytes).map_err(manifest_error)?;
    let content =
        ManifestContent::parse(digest, media_type.as_str(), &bytes).map_err(manifest_error)?;
    match content {
        ManifestContent::Image { config, layers } => {
            for blob in std::iter::once(&config).chain(&layers) {
                if store.stat(&blob.digest).is_none() {
                    return Err(missing(&blob.digest));
                }
            }
        }
        ManifestContent::Index { manifests } => {
            let present: Vec<_> = manifests
                .iter()
                .filter(|m| in_archive.contains(&m.digest))
                .collect();
            if present.is_empty() {
                let first = manifests.first().map(|m| &m.digest).unwrap_or(digest);
                return Err(missing(first));
            }
            for child in present {
                let child_type = if child.media_type.is_empty() {
                    OCI_MANIFEST
                } else {
                    &child.media_type
                };
                check_complete(store, path, image, &child.digest, child_type, in_archive)?;
            }
        }
    }
    // Serving a manifest needs its media type: fill it in (a no-op when already known).
    store.put_bytes(digest, &bytes, Some(&media_type))?;
    Ok(())
}

/// `blobs/<alg>/<hex>` as a digest; `None` for other paths.
fn blob_digest(name: &str) -> Option<Result<Digest, DigestError>> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    if hex.is_empty() {
        return None; // the directory itself
    }
    Some(format!("{alg}:{hex}").parse())
}

/// Calls `f` with the normalised path and the entry of every regular file of the tar at `path`.
/// Links and devices are refused: an image layout has none.
fn for_each_entry(
    path: &Path,
    mut f: impl FnMut(&str, &mut tar::Entry<'_, File>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let file = File::open(path).map_err(|e| ArchiveError::io("open", path, e))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .map_err(|e| ArchiveError::io("read the tar", path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::io("read the tar", path, e))?;
        let name = entry
            .path()
            .map_err(|e| ArchiveError::io("read the tar", path, e))?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_owned();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => f(&name, &mut entry)?,
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(ArchiveError::NotLayout {
                    path: path.to_owned(),
                    reason: format!("entry {name} is a {other:?}, not a file"),
                })
            }
        }
    }
    Ok(())
}

fn read_small(entry: &mut impl Read, limit: usize, path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let mut bytes = Vec::new();
    entry
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArchiveError::io("read", path, e))?;
    if bytes.len() > limit {
        return Err(ArchiveError::NotLayout {
            path: path.to_owned(),
            reason: format!("a metadata file is larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .unwrap(),
            format!("sha256:{hex}").parse().unwrap()
        );
        assert!(blob_digest("blobs/sha256/").is_none());
        assert!(blob_digest("index.json").is_none());
        assert!(blob_digest("blobs/md5/abc").unwrap().is_err());
        assert!(blob_digest("blobs/sha256/ABC").unwrap().is_err());
    }
}
