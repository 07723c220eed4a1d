//! Maintenance: [`Store::gc`] (size limit, least recently used first, leases respected) and
//! [`Store::verify`] (re-hash every blob, optionally remove corrupt ones). Both return a report
//! whose `Display` says what was done (`outpost gc` / `outpost verify` print it).

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};

use crate::state::{BlobInfo, State, Usage};
use crate::store::Store;
use oci::{Digest, Hasher};

use crate::StoreError;

/// What [`Store::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub max_size: u64,
    pub before: Usage,
    pub after: Usage,
    /// Removed blobs, least recently used first.
    pub removed: Vec<BlobInfo>,
    /// Blobs that were in use (leased) and therefore kept.
    pub kept_leased: usize,
    /// `(repository, tag)` pairs dropped because their manifest was removed.
    pub removed_tags: Vec<(String, String)>,
    /// Problems met on the way; gc continues past them.
    pub errors: Vec<StoreError>,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.before.bytes <= self.max_size {
            return write!(
                f,
                "gc: {} bytes in {} blobs is within the limit of {} bytes; nothing removed",
                self.before.bytes, self.before.blobs, self.max_size
            );
        }
        writeln!(
            f,
            "gc: {} bytes in {} blobs exceeded the limit of {} bytes; removed {} blobs ({} bytes), \
             kept {} in use, dropped {} tags; now {} bytes in {} blobs",
            self.before.bytes,
            self.before.blobs,
            self.max_size,
            self.removed.len(),
            self.before.bytes - self.after.bytes,
            self.kept_leased,
            self.removed_tags.len(),
            self.after.bytes,
            self.after.blobs
        )?;
        for blob in &self.removed {
            writeln!(f, "  removed {} ({} bytes)", blob.digest, blob.size)?;
        }
        for (repo, tag) in &self.removed_tags {
            writeln!(f, "  dropped tag {repo}:{tag}")?;
        }
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

/// Why a blob failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file is gone.
    Missing,
    /// The file's size is not the verified size.
    WrongSize { expected: u64, actual: u64 },
    /// The file's content hashes to another digest.
    WrongDigest { actual: Digest },
    /// The file could not be read.
    Unreadable { error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("file is missing"),
            Problem::WrongSize { expected, actual } => {
                write!(f, "file has {actual} bytes, expected {expected}")
            }
            Problem::WrongDigest { actual } => write!(f, "content hashes to {actual}"),
            Problem::Unreadable { error } => write!(f, "file is unreadable: {error}"),
        }
    }
}

/// One blob that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    pub digest: Digest,
    pub problem: Problem,
}

/// What [`Store::verify`] found (and, with `repair`, removed).
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    pub corrupt: Vec<CorruptBlob>,
    /// Whether corrupt blobs (and tags pointing at them) were removed.
    pub repaired: bool,
    pub removed_tags: Vec<(String, String)>,
    pub errors: Vec<StoreError>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verify: checked {} blobs ({} bytes); {} corrupt{}",
            self.checked,
            self.bytes,
            self.corrupt.len(),
            match (self.corrupt.is_empty(), self.repaired) {
                (true, _) => "",
                (false, true) => ", removed",
                (false, false) =>
                    " (run with --repair to remove them; they are fetched again on the next pull)",
            }
        )?;
        for blob in &self.corrupt {
            writeln!(f, "  corrupt {}: {}", blob.digest, blob.problem)?;
        }
        for (repo, tag) in &self.removed_tags {
            writeln!(f, "  dropped tag {repo}:{tag}")?;
        }
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

/// Checks one blob file against its digest and verified size.
fn check(store: &Store, digest: &Digest, size: u64) -> Option<Problem> {
    let path = store.inner.layout.blob_path(digest);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Problem::Missing),
        Err(e) => {
            return Some(Problem::Unreadable {
                error: e.to_string(),
            })
        }
    };
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; 256 * 1024];
    let mut actual_size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                actual_size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Some(Problem::Unreadable {
                    error: e.to_string(),
                })
            }
        }
    }
    if actual_size != size {
        return Some(Problem::WrongSize {
            expected: size,
            actual: actual_size,
        });
    }
    let actual = hasher.finish();
    (&actual != digest).then_some(Problem::WrongDigest { actual })
}

impl Store {
    /// Removes one blob (memory, file, index) with the state lock held.
    fn remove_locked(
        &self,
        state: &mut State,
        digest: &Digest,
    ) -> Result<Option<BlobInfo>, StoreError> {
        let Some(entry) = state.forget(digest) else {
            return Ok(None);
        };
        let path = self.inner.layout.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Keep memory in line with the disk: the file is still there.
                let media_type = entry.media_type.as_deref();
                state
                    .insert(digest, entry.size, media_type, entry.last_access_ms)
                    .access_unsaved = entry.access_unsaved;
                return Err(StoreError::io("remove blob", path, e));
            }
        }
        self.inner.index.remove_blob(digest)?;
        Ok(Some(entry.info(digest)))
    }

    /// Drops every tag pointing at one of `digests`.
    fn drop_tags_to(&self, digests: &HashSet<Digest>) -> Result<Vec<(String, String)>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut dropped = Vec::new();
        for repo in self.repositories() {
            for tag in self.tags(&repo)? {
                if let Some(entry) = self.tag(&repo, &tag) {
                    if digests.contains(&entry.digest) && self.remove_tag(&repo, &tag)? {
                        dropped.push((repo.clone(), tag));
                    }
                }
            }
        }
        Ok(dropped)
    }

    /// Applies the size limit now: when usage exceeds `max_size`, removes least recently used
    /// blobs that are not leased until usage is at most 90% of `max_size`, and drops tags that
    /// pointed at removed manifests.
    pub fn gc(&self, max_size: u64) -> GcReport {
        let mut report = GcReport {
            max_size,
            ..GcReport::default()
        };
        if let Err(e) = self.flush_access() {
            report.errors.push(e);
        }
        let target = max_size - max_size / 10;
        let candidates = {
            let state = self.inner.state();
            report.before = state.usage;
            if state.usage.bytes <= max_size {
                report.after = state.usage;
                return report;
            }
            let mut candidates: Vec<(u64, Digest)> = Vec::with_capacity(state.blobs.len());
            for (key, entry) in state.blobs.iter() {
                let digest = key.digest();
                if state.is_leased(&digest) {
                    report.kept_leased += 1;
                } else {
                    candidates.push((entry.last_access_ms, digest));
                }
            }
            candidates.sort_unstable();
            candidates
        };
        for (_, digest) in candidates {
            // One short critical section per blob: readers are not held up by a long gc.
            let mut state = self.inner.state();
            if state.usage.bytes <= target {
                break;
            }
            if state.is_leased(&digest) {
                report.kept_leased += 1;
                continue;
            }
            match self.remove_locked(&mut state, &digest) {
                Ok(Some(info)) => report.removed.push(info),
                Ok(None) => {}
                Err(e) => report.errors.push(e),
            }
        }
        let removed: HashSet<Digest> = report.removed.iter().map(|b| b.digest.clone()).collect();
        match self.drop_tags_to(&removed) {
            Ok(tags) => report.removed_tags = tags,
            Err(e) => report.errors.push(e),
        }
        report.after = self.usage();
        if !report.removed.is_empty() {
            tracing::info!(
                removed = report.removed.len(),
                bytes = report.before.bytes - report.after.bytes,
                "gc removed least recently used blobs"
            );
        }
        report
    }

    /// Re-hashes every stored blob and lists the corrupt ones. With `repair`, removes them (even
    /// if in use: their bytes are wrong) and the tags pointing at them, so the next pull fetches
    /// them again.
    pub fn verify(&self, repair: bool) -> VerifyReport {
        let mut report = VerifyReport {
            repaired: repair,
            ..VerifyReport::default()
        };
        let mut blobs: Vec<(Digest, u64)> = {
            let state = self.inner.state();
            state
                .blobs
                .iter()
                .map(|(key, e)| (key.digest(), e.size))
                .collect()
        };
        blobs.sort_unstable();
        for (digest, size) in blobs {
            report.checked += 1;
            report.bytes += size;
            let Some(problem) = check(self, &digest, size) else {
                continue;
            };
            tracing::warn!(%digest, %problem, "corrupt blob");
            if repair {
                let mut state = self.inner.state();
                if let Err(e) = self.remove_locked(&mut state, &digest) {
                    report.errors.push(e);
                }
            }
            report.corrupt.push(CorruptBlob { digest, problem });
        }
        if repair {
            let corrupt: HashSet<Digest> =
                report.corrupt.iter().map(|c| c.digest.clone()).collect();
            match self.drop_tags_to(&corrupt) {
                Ok(tags) => report.removed_tags = tags,
                Err(e) => report.errors.push(e),
            }
        }
        report
    }
}
