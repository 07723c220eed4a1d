//! Export: stored images to an OCI image layout archive.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use oci::{Digest, ImageRef, ManifestContent, ManifestError, Reference, OCI_INDEX};
use storage::Store;

use super::{media_type_of, read_stored, ArchiveError, LayoutEntry, LayoutIndex, REF_NAME};

/// What an export wrote.
#[derive(Debug, Default)]
pub struct ExportReport {
    pub path: PathBuf,
    /// Per image: name, digest, and the platform manifests of an index left out because they
    /// are not stored.
    pub images: Vec<(String, Digest, usize)>,
    pub blobs: usize,
    pub bytes: u64,
    /// Referrers (signatures, attestations, SBOMs) of the images exported with them: those
    /// whose manifest and blobs are all stored.
    pub referrers: usize,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, digest, skipped) in &self.images {
            write!(f, "exported {name} ({digest})")?;
            if *skipped > 0 {
                write!(
                    f,
                    "; {skipped} platform manifests of its index are not stored and were left out"
                )?;
            }
            writeln!(f)?;
        }
        if self.referrers > 0 {
            writeln!(
                f,
                "with {} referrers (signatures, attestations, SBOMs) of them",
                self.referrers
            )?;
        }
        writeln!(
            f,
            "wrote {} ({} blobs, {} bytes); read it with: skopeo copy oci-archive:{}:NAME ...",
            self.path.display(),
            self.blobs,
            self.bytes,
            self.path.display()
        )
    }
}

/// One blob to write.
struct Item {
    digest: Digest,
    size: u64,
}

/// Writes `images` from `store` to the archive `out` (replacing it). Fails, writing nothing, if
/// an image is not stored or not complete.
pub fn export(
    store: &Store,
    images: &[ImageRef],
    out: &Path,
) -> Result<ExportReport, ArchiveError> {
    let mut report = ExportReport {
        path: out.to_owned(),
        ..ExportReport::default()
    };
    let mut entries = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut seen = HashSet::new();
    let mut referrers_seen = HashSet::new();
    let mut add = |digest: &Digest, image: &str, items: &mut Vec<Item>| {
        let info = store.stat(digest).ok_or_else(|| ArchiveError::Incomplete {
            image: image.to_owned(),
            digest: digest.clone(),
        })?;
        if seen.insert(digest.clone()) {
            items.push(Item {
                digest: digest.clone(),
                size: info.size,
            });
        }
        Ok::<_, ArchiveError>(info)
    };
    for image in images {
        let name = image.to_string();
        let digest = match &image.reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => store
                .tag(&image.repository_key(), tag.as_str())
                .map(|entry| entry.digest)
                .ok_or_else(|| ArchiveError::NotStored {
                    image: name.clone(),
                })?,
        };
        let bytes = read_stored(store, &digest)?.ok_or_else(|| ArchiveError::NotStored {
            image: name.clone(),
        })?;
        let info = add(&digest, &name, &mut items)?;
        let declared = info.media_type.as_ref().map(|m| m.as_str());
        let media_type =
            media_type_of(declared, &digest, &bytes).map_err(|source| ArchiveError::Manifest {
                image: name.clone(),
                source,
            })?;
        let parse = |digest: &Digest, media_type: &str, bytes: &[u8]| {
            ManifestContent::parse(digest, media_type, bytes).map_err(|source| {
                ArchiveError::Manifest {
                    image: name.clone(),
                    source,
                }
            })
        };
        let mut skipped = 0;
        let mut subjects = vec![digest.clone()];
        let manifests = match parse(&digest, media_type.as_str(), &bytes)? {
            ManifestContent::Image { config, layers } => vec![(config, layers)],
            ManifestContent::Index { manifests } => {
                let mut children = Vec::new();
                for child in manifests {
                    let Some(bytes) = read_stored(store, &child.digest)? else {
                        skipped += 1;
                        continue;
                    };
                    add(&child.digest, &name, &mut items)?;
                    subjects.push(child.digest.clone());
                    match parse(&child.digest, &child.media_type, &bytes)? {
                        ManifestContent::Image { config, layers } => {
                            children.push((config, layers))
                        }
                        ManifestContent::Index { .. } => {
                            return Err(ArchiveError::Manifest {
                                image: name.clone(),
                                source: ManifestError::Invalid {
                                    digest: child.digest,
                                    reason: "nested indexes are not exported".to_owned(),
                                },
                            })
                        }
                    }
                }
                if children.is_empty() {
                    return Err(ArchiveError::NotStored { image: name });
                }
                children
            }
        };
        for (config, layers) in manifests {
            for blob in std::iter::once(&config).chain(&layers) {
                add(&blob.digest, &name, &mut items)?;
            }
        }
        entries.push(LayoutEntry {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            annotations: BTreeMap::from([(REF_NAME.to_owned(), name.clone())]),
        });
        // The stored referrers of the image and its platforms, each named `<repository>@<digest>`
        // so that `import` knows the repository and rebuilds the referrers index from `subject`.
        for subject in &subjects {
            for referrer in stored_referrers(store, &image.repository_key(), subject)? {
                if referrers_seen.insert(referrer.digest.clone()) {
                    for digest in std::iter::once(&referrer.digest).chain(&referrer.blobs) {
                        add(digest, &name, &mut items)?;
                    }
                    let named = ImageRef {
                        source: image.source.clone(),
                        reference: Reference::Digest(referrer.digest.clone()),
                    };
                    entries.push(LayoutEntry {
                        media_type: referrer.media_type,
                        digest: referrer.digest.to_string(),
                        size: referrer.size,
                        annotations: BTreeMap::from([(REF_NAME.to_owned(), named.to_string())]),
                    });
                    report.referrers += 1;
                }
            }
        }
        report.images.push((name, digest, skipped));
    }
    let index = LayoutIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_owned()),
        manifests: entries,
    };
    let index = serde_json::to_vec(&index)
        .map_err(|e| ArchiveError::io("write index.json for", out, std::io::Error::other(e)))?;
    report.blobs = items.len();
    report.bytes = items.iter().map(|i| i.size).sum();
    write_archive(store, out, &index, &items)?;
    Ok(report)
}

/// A referrer of an exported manifest: its manifest and the blobs it names, all stored.
struct Referrer {
    digest: Digest,
    media_type: String,
    size: u64,
    blobs: Vec<Digest>,
}

/// The referrers of `subject` in `repository` recorded in the store whose manifest and blobs
/// are all stored (a referrer never fetched whole is left out).
fn stored_referrers(
    store: &Store,
    repository: &str,
    subject: &Digest,
) -> Result<Vec<Referrer>, ArchiveError> {
    let Some(entry) = store.referrers(repository, subject) else {
        return Ok(Vec::new());
    };
    let Some(index) = read_stored(store, &entry.digest)? else {
        return Ok(Vec::new());
    };
    let Ok(ManifestContent::Index { manifests }) =
        ManifestContent::parse(&entry.digest, OCI_INDEX, &index)
    else {
        return Ok(Vec::new());
    };
    let mut referrers = Vec::new();
    for descriptor in manifests {
        let Some(bytes) = read_stored(store, &descriptor.digest)? else {
            continue;
        };
        let Ok(ManifestContent::Image { config, layers }) =
            ManifestContent::parse(&descriptor.digest, &descriptor.media_type, &bytes)
        else {
            continue;
        };
        let blobs: Vec<Digest> = std::iter::once(config)
            .chain(layers)
            .map(|d| d.digest)
            .collect();
        if blobs.iter().all(|d| store.stat(d).is_some()) {
            referrers.push(Referrer {
                digest: descriptor.digest,
                media_type: descriptor.media_type,
                size: bytes.len() as u64,
                blobs,
            });
        }
    }
    Ok(referrers)
}

/// Writes the tar to `<out>.partial` and renames it to `out` once complete and synced.
fn write_archive(
    store: &Store,
    out: &Path,
    index: &[u8],
    items: &[Item],
) -> Result<(), ArchiveError> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| {
        let file = File::create(&partial).map_err(|e| ArchiveError::io("create", &partial, e))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let io = |e| ArchiveError::io("write", &partial, e);
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        append(&mut tar, "index.json", index).map_err(io)?;
        dir(&mut tar, "blobs/").map_err(io)?;
        let mut dirs = HashSet::new();
        for item in items {
            let alg = item.digest.algorithm().name();
            if dirs.insert(alg) {
                dir(&mut tar, &format!("blobs/{alg}/")).map_err(io)?;
            }
            let blob = store
                .open_blob(&item.digest)?
                .ok_or_else(|| ArchiveError::Incomplete {
                    image: "an exported image".to_owned(),
                    digest: item.digest.clone(),
                })?;
            let (file, info, _lease) = blob.into_parts();
            let mut header = header(info.size, 0o644);
            tar.append_data(
                &mut header,
                format!("blobs/{alg}/{}", item.digest.hex()),
                file,
            )
            .map_err(io)?;
        }
        let writer = tar.into_inner().map_err(io)?;
        let file = writer
            .into_inner()
            .map_err(|e| ArchiveError::io("write", &partial, e.into_error()))?;
        file.sync_all()
            .map_err(|e| ArchiveError::io("sync", &partial, e))?;
        std::fs::rename(&partial, out).map_err(|e| ArchiveError::io("rename into", out, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = header(bytes.len() as u64, 0o644);
    tar.append_data(&mut header, path, bytes)
}

fn dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> std::io::Result<()> {
    let mut header = header(0, 0o755);
    header.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut header, path, std::io::empty())
}
