//! The in-memory state behind the store's one mutex: every blob's size, media type and last
//! access ([`Entry`]), the leases, the usage totals and the repositories. `store.rs` owns the
//! mutex; `reconcile.rs` builds the first state from the files and the index.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use oci::{Digest, MediaType};

use crate::index::BlobRecord;

/// What the store knows about one stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// The media type given at commit; `None` for blobs re-indexed from files at startup.
    pub media_type: Option<MediaType>,
}

/// Space used by stored blobs (files under `blobs/`; the index and temp files are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes: u64,
    pub blobs: u64,
}

/// The in-memory view of one indexed blob.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) size: u64,
    pub(crate) media_type: Option<MediaType>,
    pub(crate) last_access_ms: u64,
    /// `last_access_ms` changed since the index last got it (saved on close at the latest).
    pub(crate) access_unsaved: bool,
}

impl Entry {
    pub(crate) fn info(&self, digest: &Digest) -> BlobInfo {
        BlobInfo {
            digest: digest.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
        }
    }

    pub(crate) fn record(&self) -> BlobRecord {
        BlobRecord {
            size: self.size,
            last_access_ms: self.last_access_ms,
            media_type: self.media_type.clone(),
        }
    }
}

/// Everything behind the one store mutex. The blob map and the `blobs` tree change together,
/// under this lock, so gc, verify and commits cannot interleave on one digest.
pub(crate) struct State {
    pub(crate) blobs: HashMap<Digest, Entry>,
    /// Live [`Lease`]s per digest (open `Blob`s and `Ingest`s).
    pub(crate) leases: HashMap<Digest, usize>,
    /// Digests whose `last_access_ms` entered a new minute since the last
    /// [`Store::flush_access`].
    pub(crate) dirty: HashSet<Digest>,
    pub(crate) usage: Usage,
    /// The last access stamp handed out; stamps are `max(now_ms, last + 1)` so that LRU order is
    /// strict within a process and close to wall time across restarts.
    pub(crate) clock_ms: u64,
    pub(crate) repositories: BTreeSet<String>,
}

impl State {
    pub(crate) fn stamp(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    pub(crate) fn is_leased(&self, digest: &Digest) -> bool {
        self.leases.contains_key(digest)
    }

    /// Forgets a blob in memory; the caller removes the file and the index record.
    pub(crate) fn forget(&mut self, digest: &Digest) -> Option<Entry> {
        let entry = self.blobs.remove(digest)?;
        self.dirty.remove(digest);
        self.usage.bytes -= entry.size;
        self.usage.blobs -= 1;
        Some(entry)
    }

    /// Records a newly installed blob in memory.
    pub(crate) fn insert(&mut self, digest: Digest, entry: Entry) {
        self.usage.bytes += entry.size;
        self.usage.blobs += 1;
        self.blobs.insert(digest, entry);
    }
}
