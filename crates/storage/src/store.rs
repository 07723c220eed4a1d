//! [`Store`]: opening the data dir, reading blobs (with leases), tags and repositories, usage and
//! the in-memory state that backs them. Writing lives in `ingest.rs`, startup repair in
//! `reconcile.rs`, gc and verify in `maintenance.rs`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use fs2::FileExt;

use crate::index::{check_key, Index, TagEntry};
use crate::layout::Layout;
use crate::reconcile::{reconcile, ReconcileReport};
use crate::resident::Resident;
use crate::state::{BlobInfo, Key, State, Usage};
use oci::Digest;

use crate::StoreError;

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) index: Index,
    state: Mutex<State>,
    reconcile: ReconcileReport,
    /// Held (flock) for the life of the store; released when the file closes.
    _lock: File,
}

/// Memory for copies of small blobs read whole (manifests, referrers indexes: 0.5-10 KiB each,
/// so thousands of them), and the largest blob kept.
const RESIDENT_BYTES: usize = 8 << 20;
const RESIDENT_LARGEST: usize = 256 << 10;

/// From this many blobs, the index is closed and opened again after the startup reconcile
/// ([`Index::reopen`]): below, what its scan leaves in sled's cache (< 1 MiB) costs less than a
/// second open of sled does.
const REOPEN_INDEX_FROM: usize = 4096;

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent enough to keep serving: every
        // critical section updates memory before doing anything that can panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Saves the access times that entered a new hour ([`State::dirty`]); with `all`, every
    /// one not saved yet.
    fn flush_access(&self, all: bool) -> Result<(), StoreError> {
        let mut state = self.state();
        let dirty = std::mem::take(&mut state.dirty);
        let mut puts: Vec<_> = dirty
            .into_iter()
            .filter_map(|d| {
                let entry = state.blobs.get_mut(&d)?;
                entry.access_unsaved = false;
                let record = entry.record();
                Some((d, record))
            })
            .collect();
        if all {
            for (key, entry) in state.blobs.iter_mut().filter(|(_, e)| e.access_unsaved) {
                entry.access_unsaved = false;
                puts.push((key.digest(), entry.record()));
            }
        }
        if puts.is_empty() {
            return Ok(());
        }
        self.index.write_blobs(&puts, &[])
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.flush_access(true) {
            tracing::warn!(error = %e, "could not save blob access times on close");
        }
        if let Err(e) = self.index.flush() {
            tracing::warn!(error = %e, "could not flush the index on close");
        }
    }
}

/// The content store of one data dir. Cheap to clone (an `Arc`); `Send + Sync`. Every method does
/// blocking file I/O: call it from a blocking context (`spawn_blocking`) in async code.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.layout.root())
            .finish_non_exhaustive()
    }
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|e| StoreError::io("create directory", path, e))
}

/// What [`Store::read_resident_manifest`] found.
#[derive(Debug)]
pub enum ManifestRead {
    /// The manifest, from memory (its read recorded).
    Found(BlobInfo, Bytes),
    /// Stored with a media type, not held in memory: read its file.
    NotInMemory,
    /// Stored without a media type: not a manifest.
    Untyped,
    /// Not stored.
    Absent,
}

impl Store {
    /// Opens the store in `dir`, creating the tree if needed, taking the data dir lock, checking
    /// the index schema version and reconciling files with the index (see the crate docs).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let layout = Layout::new(dir);
        create_dir(dir)?;
        let lock_path = layout.lock_file();
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open lock file", &lock_path, e))?;
        if let Err(e) = lock.try_lock_exclusive() {
            if e.kind() == fs2::lock_contended_error().kind() {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            return Err(StoreError::io("lock", &lock_path, e));
        }
        create_dir(&layout.blobs_dir())?;
        create_dir(&layout.ingest_dir())?;
        let index = Index::open(&layout.index_dir())?;
        let (blobs, report) = reconcile(&layout, &index)?;
        let repositories = index.repositories()?.into_iter().collect();
        // The reconcile read every record: on a big store, leave none of it in sled's cache.
        let index = if blobs.len() >= REOPEN_INDEX_FROM {
            index.reopen()?
        } else {
            index
        };
        let usage = Usage {
            bytes: blobs.values().map(|e| e.size).sum(),
            blobs: blobs.len() as u64,
        };
        let clock_ms = blobs.values().map(|e| e.last_access_ms).max().unwrap_or(0);
        tracing::info!(
            dir = %dir.display(),
            blobs = usage.blobs,
            bytes = usage.bytes,
            "{report}"
        );
        let state = State {
            blobs,
            leases: HashMap::new(),
            dirty: HashSet::new(),
            usage,
            clock_ms,
            repositories,
            resident: Resident::new(RESIDENT_BYTES, RESIDENT_LARGEST),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                layout,
                index,
                state: Mutex::new(state),
                reconcile: report,
                _lock: lock,
            }),
        })
    }

    /// The data dir this store was opened on.
    pub fn dir(&self) -> &Path {
        self.inner.layout.root()
    }

    /// What the startup reconcile found and fixed.
    pub fn reconcile_report(&self) -> &ReconcileReport {
        &self.inner.reconcile
    }

    /// The stored blob `digest`, if any. Does not count as an access.
    pub fn stat(&self, digest: &Digest) -> Option<BlobInfo> {
        self.inner.state().blobs.get(digest).map(|e| e.info(digest))
    }

    /// Opens the stored blob `digest` for reading, or `Ok(None)` if it is not stored. The returned
    /// [`Blob`] holds a lease: gc keeps the digest while it lives. Records the access in memory
    /// (saved by [`Store::flush_access`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        let (info, lease) = {
            let mut state = self.inner.state();
            let Some(info) = state.touch(digest) else {
                return Ok(None);
            };
            (info, self.lease_locked(&mut state, digest))
        };
        let path = self.inner.layout.blob_path(digest);
        match File::open(&path) {
            Ok(file) => Ok(Some(Blob { file, info, lease })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Removed behind our back (by hand): heal the index and report a miss.
                tracing::warn!(%digest, path = %path.display(), "indexed blob file is missing; dropping it from the index");
                drop(lease);
                let mut state = self.inner.state();
                if state.forget(digest).is_some() {
                    self.inner.index.remove_blob(digest)?;
                }
                Ok(None)
            }
            Err(e) => Err(StoreError::io("open blob", path, e)),
        }
    }

    /// The bytes of `digest` if a copy is resident in memory ([`Store::keep_resident`]); a read
    /// like [`Store::open_blob`] (it records the access) without opening the file.
    pub fn read_resident(&self, digest: &Digest) -> Option<(BlobInfo, Bytes)> {
        let mut state = self.inner.state();
        let bytes = state.resident.get(&Key::of(digest))?;
        let info = state.touch(digest)?;
        Some((info, bytes))
    }

    /// [`Store::read_resident`] of a manifest (a blob stored with a media type), in one look
    /// at the maps: a blob stored without a media type is [`ManifestRead::Untyped`], and is not
    /// marked as read.
    pub fn read_resident_manifest(&self, digest: &Digest) -> ManifestRead {
        let mut state = self.inner.state();
        match state.blobs.get(digest) {
            None => return ManifestRead::Absent,
            Some(entry) if entry.media_type.is_none() => return ManifestRead::Untyped,
            Some(_) => {}
        }
        let Some(bytes) = state.resident.get(&Key::of(digest)) else {
            return ManifestRead::NotInMemory;
        };
        match state.touch(digest) {
            Some(info) => ManifestRead::Found(info, bytes),
            None => ManifestRead::Absent,
        }
    }

    /// Keeps in memory a copy of the stored blob `digest` just read whole (`bytes`, read from
    /// its verified file), if it is small enough and still stored; the oldest copies make room.
    pub fn keep_resident(&self, digest: &Digest, bytes: Bytes) {
        let mut state = self.inner.state();
        if state
            .blobs
            .get(digest)
            .is_some_and(|e| e.size == bytes.len() as u64)
        {
            state.resident.insert(Key::of(digest), bytes);
        }
    }

    /// Takes a lease on `digest` (which need not be stored yet).
    pub(crate) fn lease(&self, digest: &Digest) -> Lease {
        let mut state = self.inner.state();
        self.lease_locked(&mut state, digest)
    }

    fn lease_locked(&self, state: &mut State, digest: &Digest) -> Lease {
        *state.leases.entry(digest.clone()).or_insert(0) += 1;
        Lease {
            inner: self.inner.clone(),
            digest: digest.clone(),
        }
    }

    /// Current space used by blobs; kept up to date in memory.
    pub fn usage(&self) -> Usage {
        self.inner.state().usage
    }

    /// Writes the access times that entered a new hour since the last flush to the index, in
    /// one batch (`ACCESS_SAVED_PER_MS` in `state.rs`). Call it periodically; closing the store
    /// saves every access time not saved yet.
    pub fn flush_access(&self) -> Result<(), StoreError> {
        self.inner.flush_access(false)
    }

    /// Points `repo:tag` at `digest` (a manifest blob), confirmed upstream at `checked_at`, and
    /// notes the repository.
    pub fn put_tag(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
        checked_at: SystemTime,
    ) -> Result<(), StoreError> {
        check_key("repository", repo)?;
        check_key("tag", tag)?;
        let entry = TagEntry {
            digest: digest.clone(),
            checked_at,
        };
        self.inner.index.put_tag(repo, tag, &entry)?;
        self.note_repository(repo)
    }

    /// What `repo:tag` points at, if known.
    pub fn tag(&self, repo: &str, tag: &str) -> Option<TagEntry> {
        if check_key("repository", repo).is_err() || check_key("tag", tag).is_err() {
            return None;
        }
        self.inner.index.tag(repo, tag)
    }

    /// The tags known for `repo`, sorted (not the referrers records kept beside them).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        if check_key("repository", repo).is_err() {
            return Ok(Vec::new());
        }
        let mut tags = self.inner.index.tags(repo)?;
        tags.retain(|t| !t.starts_with(REFERRERS_PREFIX));
        Ok(tags)
    }

    /// The stored referrers index of `subject` in `repo` (a blob), and when the upstream last
    /// gave it.
    pub fn referrers(&self, repo: &str, subject: &Digest) -> Option<TagEntry> {
        self.tag(repo, &referrers_key(subject))
    }

    /// Records `index` (a stored blob) as the referrers index of `subject` in `repo`, given by
    /// the upstream at `checked_at`.
    pub fn put_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        index: &Digest,
        checked_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.put_tag(repo, &referrers_key(subject), index, checked_at)
    }

    /// Forgets `repo:tag`; `true` if it existed.
    pub fn remove_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        if check_key("repository", repo).is_err() || check_key("tag", tag).is_err() {
            return Ok(false);
        }
        self.inner.index.remove_tag(repo, tag)
    }

    /// Remembers that `repo` was served (for the catalog). Only the first call per repository
    /// writes to the index.
    pub fn note_repository(&self, repo: &str) -> Result<(), StoreError> {
        check_key("repository", repo)?;
        let mut state = self.inner.state();
        if state.repositories.contains(repo) {
            return Ok(());
        }
        self.inner.index.note_repository(repo)?;
        state.repositories.insert(repo.to_owned());
        Ok(())
    }

    /// Every repository that got a tag or was noted, sorted.
    pub fn repositories(&self) -> Vec<String> {
        self.inner.state().repositories.iter().cloned().collect()
    }
}

/// Keeps gc away from one digest while alive. Held by [`Blob`] and [`crate::Ingest`]; take it out
/// of a `Blob` with [`Blob::into_parts`] to keep it while reading the file elsewhere.
pub struct Lease {
    inner: Arc<Inner>,
    digest: Digest,
}

impl Lease {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("digest", &self.digest)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        if let Some(n) = state.leases.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                state.leases.remove(&self.digest);
            }
        }
    }
}

/// An open, complete and verified blob. Implements `Read` and `Seek` (for ranges).
#[derive(Debug)]
pub struct Blob {
    file: File,
    info: BlobInfo,
    lease: Lease,
}

impl Blob {
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file (e.g. for `tokio::fs::File::from_std`), its info, and the lease to keep
    /// alive as long as the file is read.
    pub fn into_parts(self) -> (File, BlobInfo, Lease) {
        (self.file, self.info, self.lease)
    }
}

impl Read for Blob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for Blob {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Referrers records live in the `tags` tree under a name no tag can have (tags never contain
/// `/` or `:`): `<repository> 0x00 referrers/<subject digest>`.
const REFERRERS_PREFIX: &str = "referrers/";

fn referrers_key(subject: &Digest) -> String {
    format!("{REFERRERS_PREFIX}{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy moves these into blocking tasks and shares the store between them.
    #[test]
    fn handles_can_cross_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<Blob>();
        send::<Lease>();
        send::<crate::Ingest>();
    }
}
