//! The in-memory state behind the store's one mutex: every blob's size, media type and last
//! access ([`BlobMap`] of [`Entry`]), the leases, the usage totals and the repositories.
//! `store.rs` owns the mutex; `reconcile.rs` builds the first state from the files and the index.

use std::collections::{hash_map, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use oci::{Algorithm, Digest, MediaType};

use crate::index::BlobRecord;
use crate::resident::Resident;

/// Last-access times are exact in memory (eviction's order while running) and saved to the
/// index every flush when they entered a new hour, and all on close: a blob read thousands
/// of times a second costs the index one write an hour, the order survives a clean restart
/// exactly and a crash to the hour. (Saved per minute, random reads among 10 000 manifests
/// rewrote 10 000 index records a minute: sled's memory grew by ~50 MiB under that load and
/// every hit was a fifth slower. BENCHMARKS.md, issue 18.)
pub(crate) const ACCESS_SAVED_PER_MS: u64 = 3_600_000;

/// Whether a read at `now_ms` of a blob last read at `last_ms` is saved at the next flush.
fn saves_access(last_ms: u64, now_ms: u64) -> bool {
    now_ms / ACCESS_SAVED_PER_MS != last_ms / ACCESS_SAVED_PER_MS
}

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
    /// Interned by [`BlobMap`]: a store holds few distinct media types.
    pub(crate) media_type: Option<Arc<MediaType>>,
    pub(crate) last_access_ms: u64,
    /// `last_access_ms` changed since the index last got it (saved on close at the latest).
    pub(crate) access_unsaved: bool,
}

impl Entry {
    pub(crate) fn info(&self, digest: &Digest) -> BlobInfo {
        BlobInfo {
            digest: digest.clone(),
            size: self.size,
            media_type: self.media_type.as_deref().cloned(),
        }
    }

    pub(crate) fn record(&self) -> BlobRecord {
        BlobRecord {
            size: self.size,
            last_access_ms: self.last_access_ms,
            media_type: self.media_type.as_deref().cloned(),
        }
    }
}

/// A digest as a map key: its bytes, no allocation for sha256 (the digest of nearly every blob).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Sha256([u8; 32]),
    Sha512(Box<[u8; 64]>),
}

impl Key {
    pub(crate) fn of(digest: &Digest) -> Key {
        let mut buf = [0; 64];
        let raw = digest.decode_into(&mut buf);
        match digest.algorithm() {
            Algorithm::Sha256 => Key::Sha256(raw.try_into().expect("sha256 has 32 bytes")),
            Algorithm::Sha512 => Key::Sha512(Box::new(buf)),
        }
    }

    pub(crate) fn digest(&self) -> Digest {
        let (algorithm, raw) = match self {
            Key::Sha256(raw) => (Algorithm::Sha256, &raw[..]),
            Key::Sha512(raw) => (Algorithm::Sha512, &raw[..]),
        };
        Digest::from_raw(algorithm, raw).expect("a key holds its algorithm's length")
    }
}

/// Every indexed blob. Compact, as a store can hold hundreds of thousands: a sha256 digest is
/// held as its 32 bytes and a media type once for all the blobs of that type, so a blob costs
/// one slot of the table (~75 bytes) and no allocation of its own.
#[derive(Debug, Default)]
pub(crate) struct BlobMap {
    entries: HashMap<Key, Entry>,
    media_types: HashSet<Arc<MediaType>>,
}

impl BlobMap {
    pub(crate) fn with_capacity(capacity: usize) -> BlobMap {
        BlobMap {
            entries: HashMap::with_capacity(capacity),
            media_types: HashSet::new(),
        }
    }

    pub(crate) fn intern(&mut self, media_type: &MediaType) -> Arc<MediaType> {
        if let Some(known) = self.media_types.get(media_type) {
            return known.clone();
        }
        let new = Arc::new(media_type.clone());
        self.media_types.insert(new.clone());
        new
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<&Entry> {
        self.entries.get(&Key::of(digest))
    }

    pub(crate) fn get_mut(&mut self, digest: &Digest) -> Option<&mut Entry> {
        self.entries.get_mut(&Key::of(digest))
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(&Key::of(digest))
    }

    /// Adds (or replaces) the blob `key`, its media type shared with the blobs of that type.
    pub(crate) fn insert(
        &mut self,
        key: Key,
        size: u64,
        media_type: Option<&MediaType>,
        last_access_ms: u64,
    ) -> &mut Entry {
        let entry = Entry {
            size,
            media_type: media_type.map(|m| self.intern(m)),
            last_access_ms,
            access_unsaved: false,
        };
        match self.entries.entry(key) {
            hash_map::Entry::Occupied(mut slot) => {
                slot.insert(entry);
                slot.into_mut()
            }
            hash_map::Entry::Vacant(slot) => slot.insert(entry),
        }
    }

    pub(crate) fn remove(&mut self, digest: &Digest) -> Option<Entry> {
        let entry = self.entries.remove(&Key::of(digest))?;
        // The last blob of its media type: forget the type too (this entry's and the set's).
        if let Some(media_type) = &entry.media_type {
            if Arc::strong_count(media_type) == 2 {
                self.media_types.remove(&**media_type);
            }
        }
        Some(entry)
    }

    pub(crate) fn iter(&self) -> hash_map::Iter<'_, Key, Entry> {
        self.entries.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> hash_map::IterMut<'_, Key, Entry> {
        self.entries.iter_mut()
    }

    pub(crate) fn values(&self) -> hash_map::Values<'_, Key, Entry> {
        self.entries.values()
    }
}

/// Everything behind the one store mutex. The blob map and the `blobs` tree change together,
/// under this lock, so gc, verify and commits cannot interleave on one digest.
pub(crate) struct State {
    pub(crate) blobs: BlobMap,
    /// Live [`Lease`]s per digest (open `Blob`s and `Ingest`s).
    pub(crate) leases: HashMap<Digest, usize>,
    /// Digests whose `last_access_ms` entered a new hour since the last
    /// [`Store::flush_access`].
    pub(crate) dirty: HashSet<Digest>,
    pub(crate) usage: Usage,
    /// The last access stamp handed out; stamps are `max(now_ms, last + 1)` so that LRU order is
    /// strict within a process and close to wall time across restarts.
    pub(crate) clock_ms: u64,
    pub(crate) repositories: BTreeSet<String>,
    /// Copies of small blobs read whole, dropped with their blob.
    pub(crate) resident: Resident<Key>,
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

    /// Records a read of the blob `digest` (its access time; saved when it entered a new
    /// hour) and gives its info; `None` if it is not stored.
    pub(crate) fn touch(&mut self, digest: &Digest) -> Option<BlobInfo> {
        let stamp = self.stamp();
        let entry = self.blobs.get_mut(digest)?;
        let save = saves_access(entry.last_access_ms, stamp);
        entry.last_access_ms = stamp;
        entry.access_unsaved = true;
        let info = entry.info(digest);
        if save {
            self.dirty.insert(digest.clone());
        }
        Some(info)
    }

    /// Forgets a blob in memory; the caller removes the file and the index record.
    pub(crate) fn forget(&mut self, digest: &Digest) -> Option<Entry> {
        let entry = self.blobs.remove(digest)?;
        self.resident.remove(&Key::of(digest));
        self.dirty.remove(digest);
        self.usage.bytes -= entry.size;
        self.usage.blobs -= 1;
        Some(entry)
    }

    /// Records a newly installed blob in memory.
    pub(crate) fn insert(
        &mut self,
        digest: &Digest,
        size: u64,
        media_type: Option<&MediaType>,
        last_access_ms: u64,
    ) -> &mut Entry {
        self.usage.bytes += size;
        self.usage.blobs += 1;
        self.blobs
            .insert(Key::of(digest), size, media_type, last_access_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_state() -> State {
        State {
            blobs: BlobMap::default(),
            leases: HashMap::new(),
            dirty: HashSet::new(),
            usage: Usage::default(),
            clock_ms: 0,
            repositories: BTreeSet::new(),
            resident: Resident::new(1 << 20, 1 << 10),
        }
    }

    #[test]
    fn forgetting_a_blob_drops_its_resident_copy() {
        let mut state = empty_state();
        let digest = Digest::compute(Algorithm::Sha256, b"{}");
        state.insert(&digest, 2, None, 1);
        state
            .resident
            .insert(Key::of(&digest), bytes::Bytes::from_static(b"{}"));
        assert!(state.resident.get(&Key::of(&digest)).is_some());
        state.forget(&digest).unwrap();
        assert_eq!(state.resident.get(&Key::of(&digest)), None);
        assert_eq!(state.usage, Usage::default());
    }

    #[test]
    fn an_access_time_is_saved_once_an_hour_however_often_the_blob_is_read() {
        const HOUR: u64 = 3_600_000;
        let t = 1_700_000_000_000 / HOUR * HOUR; // the start of an hour
        assert!(!saves_access(t + 1, t + 60_000), "a minute later");
        assert!(!saves_access(t + 1, t + HOUR - 1), "within the hour");
        assert!(saves_access(t + HOUR - 1, t + HOUR), "the next hour");
        assert!(saves_access(t, t + 5 * HOUR));

        let mut state = empty_state();
        let digest = Digest::compute(Algorithm::Sha256, b"{}");
        state.insert(&digest, 2, None, 1); // last read in 1970
        state.touch(&digest).unwrap();
        assert!(
            state.dirty.contains(&digest),
            "a read in a new hour is saved"
        );
        state.dirty.clear(); // what a flush does
        let read_at = state.blobs.get(&digest).unwrap().last_access_ms;
        for _ in 0..1000 {
            state.touch(&digest).unwrap();
        }
        let last = state.blobs.get(&digest).unwrap().last_access_ms;
        assert!(last > read_at, "every read is recorded in memory");
        assert_eq!(
            state.dirty.contains(&digest),
            saves_access(read_at, last),
            "1000 more reads in the same hour are not saved again"
        );
    }

    #[test]
    fn keys_give_back_their_digest() {
        for digest in [
            Digest::compute(Algorithm::Sha256, b"a"),
            Digest::compute(Algorithm::Sha512, b"a"),
        ] {
            assert_eq!(Key::of(&digest).digest(), digest);
        }
        assert_ne!(
            Key::of(&Digest::compute(Algorithm::Sha256, b"a")),
            Key::of(&Digest::compute(Algorithm::Sha256, b"b"))
        );
    }

    #[test]
    fn blobs_of_one_media_type_share_it_and_the_last_one_out_forgets_it() {
        let layer = MediaType::parse("application/vnd.oci.image.layer.v1.tar").unwrap();
        let (a, b) = (
            Digest::compute(Algorithm::Sha256, b"a"),
            Digest::compute(Algorithm::Sha512, b"b"),
        );
        let mut map = BlobMap::default();
        for digest in [&a, &b] {
            map.insert(Key::of(digest), 1, Some(&layer), 7);
        }
        let (ea, eb) = (map.get(&a).unwrap(), map.get(&b).unwrap());
        assert!(Arc::ptr_eq(
            ea.media_type.as_ref().unwrap(),
            eb.media_type.as_ref().unwrap()
        ));
        assert_eq!(ea.info(&a).media_type.as_ref(), Some(&layer));
        assert_eq!(map.media_types.len(), 1);

        map.remove(&a).unwrap();
        assert_eq!(map.media_types.len(), 1, "b still has it");
        let removed = map.remove(&b).unwrap();
        assert!(map.media_types.is_empty());
        assert!(!map.contains(&b) && map.len() == 0);

        // Put back (a removal whose file could not be deleted): interned again.
        let media_type = removed.media_type.as_deref();
        map.insert(
            Key::of(&b),
            removed.size,
            media_type,
            removed.last_access_ms,
        );
        assert_eq!(map.media_types.len(), 1);
        assert_eq!(map.get(&b).unwrap().record().media_type, Some(layer));
    }
}
