//! The sled index: its trees, key and value encodings (drawn in the crate docs) and the schema
//! version check. Nothing here touches blob files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci::{Digest, MediaType};

use crate::StoreError;

/// The schema this code reads and writes. Bump it when an encoding below changes.
pub(crate) const SCHEMA_VERSION: u32 = 1;
/// Key of the schema version in sled's default tree; value: `u32` big-endian.
pub(crate) const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

pub(crate) const BLOBS_TREE: &str = "blobs";
pub(crate) const TAGS_TREE: &str = "tags";
pub(crate) const REPOSITORIES_TREE: &str = "repositories";

/// Separates repository and tag in a `tags` key; neither may contain it.
const SEPARATOR: u8 = 0;

/// What the `blobs` tree holds for one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    pub(crate) size: u64,
    /// Milliseconds since the Unix epoch of the last read (or of the commit).
    pub(crate) last_access_ms: u64,
    pub(crate) media_type: Option<MediaType>,
}

impl BlobRecord {
    /// `size: u64 BE | last_access_ms: u64 BE | media type UTF-8 (empty: unknown)`
    pub(crate) fn encode(&self) -> Vec<u8> {
        let media = self.media_type.as_ref().map_or("", MediaType::as_str);
        let mut out = Vec::with_capacity(16 + media.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.last_access_ms.to_be_bytes());
        out.extend_from_slice(media.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<BlobRecord> {
        let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let last_access_ms = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let media = std::str::from_utf8(&bytes[16..]).ok()?;
        Some(BlobRecord {
            size,
            last_access_ms,
            // A type that does not parse (written by an older version) counts as unknown.
            media_type: MediaType::parse(media).ok(),
        })
    }
}

/// What a tag points at, and when the upstream last confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub checked_at: SystemTime,
}

impl TagEntry {
    /// `checked_at seconds: u64 BE | nanoseconds: u32 BE | digest as "alg:hex" UTF-8`
    fn encode(&self) -> Vec<u8> {
        let since = self
            .checked_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let digest = self.digest.to_string();
        let mut out = Vec::with_capacity(12 + digest.len());
        out.extend_from_slice(&since.as_secs().to_be_bytes());
        out.extend_from_slice(&since.subsec_nanos().to_be_bytes());
        out.extend_from_slice(digest.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<TagEntry> {
        let secs = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let nanos = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let digest = std::str::from_utf8(&bytes[12..]).ok()?.parse().ok()?;
        Some(TagEntry {
            digest,
            checked_at: UNIX_EPOCH + Duration::new(secs, nanos),
        })
    }
}

/// Checks that `value` can be part of an index key (non-empty, no NUL).
pub(crate) fn check_key(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.as_bytes().contains(&SEPARATOR) {
        return Err(StoreError::InvalidKey {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// `repository | 0x00 | tag`
fn tag_key(repo: &str, tag: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo.len() + 1 + tag.len());
    key.extend_from_slice(repo.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(tag.as_bytes());
    key
}

/// The inverse of [`tag_key`].
fn split_tag_key(key: &[u8]) -> Option<(String, String)> {
    let at = key.iter().position(|&b| b == SEPARATOR)?;
    let repo = std::str::from_utf8(&key[..at]).ok()?;
    let tag = std::str::from_utf8(&key[at + 1..]).ok()?;
    Some((repo.to_owned(), tag.to_owned()))
}

/// Opens sled in `dir`. The caller holds the data dir lock, so when sled reports its own lock as
/// taken, a `Store` of this process that was just dropped is still releasing it (sled finishes
/// background writes on its own threads): retry briefly before calling the dir locked.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    const PATIENCE: Duration = Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        let result = sled::Config::new()
            .path(dir)
            // The page cache is a ceiling, not an allocation; edge nodes are small, and the index
            // is a few hundred bytes per blob.
            .cache_capacity(8 * 1024 * 1024)
            .open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() > PATIENCE {
                    return Err(StoreError::Locked {
                        dir: dir.parent().unwrap_or(dir).to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(StoreError::Index {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The open sled database and its trees.
pub(crate) struct Index {
    dir: PathBuf,
    db: sled::Db,
    blobs: sled::Tree,
    tags: sled::Tree,
    /// The `tags` tree's decodable entries, in memory: a manifest by tag is answered without
    /// descending sled's B-tree, whose pages its small, sharded cache keeps evicting when the
    /// tags asked for are many and random. Written through, under the write lock (sled first,
    /// so both always agree); loaded when the index opens.
    tag_mirror: RwLock<HashMap<Box<[u8]>, TagEntry>>,
    repositories: sled::Tree,
}

impl Index {
    /// Opens (or creates) the database in `dir`, checks or writes the schema version, and
    /// loads the tags into memory.
    pub(crate) fn open(dir: &Path) -> Result<Index, StoreError> {
        let mut index = Index::open_trees(dir)?;
        let mut mirror = HashMap::new();
        for item in index.tags.iter() {
            let (key, value) = item.map_err(|e| index.err(e))?;
            // An entry that does not decode is left to the reconcile, which drops it.
            if let Some(entry) = split_tag_key(&key).and_then(|_| TagEntry::decode(&value)) {
                mirror.insert(Box::from(&key[..]), entry);
            }
        }
        index.tag_mirror = RwLock::new(mirror);
        Ok(index)
    }

    fn open_trees(dir: &Path) -> Result<Index, StoreError> {
        let index_error = |source| StoreError::Index {
            dir: dir.to_path_buf(),
            source,
        };
        let db = open_db(dir)?;
        match db.get(SCHEMA_VERSION_KEY).map_err(index_error)? {
            None => {
                db.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(index_error)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                let found = match <[u8; 4]>::try_from(v.as_ref()) {
                    Ok(b) => u32::from_be_bytes(b).to_string(),
                    Err(_) => format!("{:?} (not a u32)", v.as_ref()),
                };
                return Err(StoreError::SchemaVersion {
                    dir: dir.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let blobs = db.open_tree(BLOBS_TREE).map_err(index_error)?;
        let tags = db.open_tree(TAGS_TREE).map_err(index_error)?;
        let repositories = db.open_tree(REPOSITORIES_TREE).map_err(index_error)?;
        Ok(Index {
            dir: dir.to_path_buf(),
            db,
            blobs,
            tags,
            tag_mirror: RwLock::default(),
            repositories,
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Index {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Calls `f` with every `blobs` record in key order: its raw key, and the digest and record
    /// when both decode (`None` for a malformed one). Stops at `f`'s first error.
    pub(crate) fn each_blob(
        &self,
        mut f: impl FnMut(sled::IVec, Option<(Digest, BlobRecord)>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.blobs.iter() {
            let (key, value) = item.map_err(|e| self.err(e))?;
            let digest = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| s.parse::<Digest>().ok());
            let decoded = digest.zip(BlobRecord::decode(&value));
            f(key, decoded)?;
        }
        Ok(())
    }

    pub(crate) fn put_blob(&self, digest: &Digest, record: &BlobRecord) -> Result<(), StoreError> {
        self.blobs
            .insert(digest.to_string().as_bytes(), record.encode())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn remove_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        self.blobs
            .remove(digest.to_string().as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Applies many blob puts and removals at once (one sled batch).
    pub(crate) fn write_blobs(
        &self,
        puts: &[(Digest, BlobRecord)],
        removes: &[sled::IVec],
    ) -> Result<(), StoreError> {
        if puts.is_empty() && removes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (digest, record) in puts {
            batch.insert(digest.to_string().as_bytes(), record.encode());
        }
        for key in removes {
            batch.remove(key.clone());
        }
        self.blobs.apply_batch(batch).map_err(|e| self.err(e))
    }

    fn mirror_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<[u8]>, TagEntry>> {
        // Nothing panics while holding the lock; a poisoned one holds a consistent map.
        self.tag_mirror
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn put_tag(
        &self,
        repo: &str,
        tag: &str,
        entry: &TagEntry,
    ) -> Result<(), StoreError> {
        let key = tag_key(repo, tag);
        let mut mirror = self.mirror_mut();
        self.tags
            .insert(&key, entry.encode())
            .map_err(|e| self.err(e))?;
        mirror.insert(key.into_boxed_slice(), entry.clone());
        Ok(())
    }

    /// From memory: no sled lookup, so nothing to fail.
    pub(crate) fn tag(&self, repo: &str, tag: &str) -> Option<TagEntry> {
        let key = tag_key(repo, tag);
        let mirror = self
            .tag_mirror
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        mirror.get(&key[..]).cloned()
    }

    pub(crate) fn remove_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let key = tag_key(repo, tag);
        let mut mirror = self.mirror_mut();
        let old = self.tags.remove(&key).map_err(|e| self.err(e))?;
        mirror.remove(&key[..]);
        Ok(old.is_some())
    }

    /// Tags of `repo`, sorted (sled keys are ordered).
    pub(crate) fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = repo.as_bytes().to_vec();
        prefix.push(SEPARATOR);
        let mut out = Vec::new();
        for item in self.tags.scan_prefix(&prefix) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            if let Some((r, t)) = split_tag_key(&key) {
                if r == repo {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Every `(repo, tag, entry)`; undecodable entries are returned as `None` with their raw key.
    pub(crate) fn all_tags(&self) -> Result<Vec<(sled::IVec, Option<TagEntry>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tags.iter() {
            let (key, value) = item.map_err(|e| self.err(e))?;
            let entry = split_tag_key(&key).and_then(|_| TagEntry::decode(&value));
            out.push((key, entry));
        }
        Ok(out)
    }

    pub(crate) fn remove_tag_keys(&self, keys: &[sled::IVec]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.clone());
        }
        let mut mirror = self.mirror_mut();
        self.tags.apply_batch(batch).map_err(|e| self.err(e))?;
        for key in keys {
            mirror.remove(&key[..]);
        }
        Ok(())
    }

    pub(crate) fn note_repository(&self, repo: &str) -> Result<(), StoreError> {
        self.repositories
            .insert(repo.as_bytes(), &[])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn repositories(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.repositories.iter() {
            let (key, _) = item.map_err(|e| self.err(e))?;
            if let Ok(repo) = std::str::from_utf8(&key) {
                out.push(repo.to_owned());
            }
        }
        Ok(out)
    }

    /// Closes the database and opens it again: sled's cache starts empty. sled hands page
    /// accesses to its LRU in batches per shard, so one scan of every leaf (the startup
    /// reconcile) leaves them all in memory whatever the cache capacity: ~17 MiB for 100 000
    /// blobs, freed by this for ~40 ms.
    pub(crate) fn reopen(self) -> Result<Index, StoreError> {
        self.flush()?;
        let dir = self.dir.clone();
        let mirror = std::mem::take(&mut *self.mirror_mut());
        drop(self);
        let mut index = Index::open_trees(&dir)?;
        index.tag_mirror = RwLock::new(mirror);
        Ok(index)
    }

    /// Makes everything written so far durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::Algorithm;

    #[test]
    fn blob_records_round_trip() {
        for media_type in [None, Some(MediaType::oci_manifest())] {
            let r = BlobRecord {
                size: 1 << 40,
                last_access_ms: 1_700_000_000_123,
                media_type,
            };
            assert_eq!(BlobRecord::decode(&r.encode()), Some(r));
        }
        assert_eq!(BlobRecord::decode(&[0; 15]), None);
    }

    #[test]
    fn a_stored_media_type_that_is_not_one_reads_as_unknown() {
        // Written by a version that did not check media types: the manifest is fetched again
        // rather than served with a control character in its `Content-Type`.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&10u64.to_be_bytes());
        bytes.extend_from_slice(&20u64.to_be_bytes());
        bytes.extend_from_slice(b"application/vnd.oci.image.manifest.v1+json\x07");
        let record = BlobRecord::decode(&bytes).unwrap();
        assert_eq!((record.size, record.media_type), (10, None));
    }

    #[test]
    fn tag_entries_round_trip_to_the_nanosecond() {
        let e = TagEntry {
            digest: Digest::compute(Algorithm::Sha512, b"m"),
            checked_at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
        };
        assert_eq!(TagEntry::decode(&e.encode()), Some(e));
        assert_eq!(TagEntry::decode(b"short"), None);
    }

    #[test]
    fn tag_keys_cannot_collide() {
        assert_ne!(tag_key("a", "b/c"), tag_key("a/b", "c"));
        assert_eq!(
            split_tag_key(&tag_key("library/alpine", "3.20")),
            Some(("library/alpine".to_owned(), "3.20".to_owned()))
        );
        assert!(check_key("tag", "a\0b").is_err());
        assert!(check_key("repository", "").is_err());
        assert!(check_key("repository", "library/alpine").is_ok());
    }

    fn entry(n: u8) -> TagEntry {
        TagEntry {
            digest: Digest::compute(Algorithm::Sha256, &[n]),
            checked_at: UNIX_EPOCH + Duration::new(1_700_000_000 + u64::from(n), 0),
        }
    }

    /// What sled itself holds for `repo:tag`, bypassing the mirror.
    fn in_sled(index: &Index, repo: &str, tag: &str) -> Option<TagEntry> {
        let value = index.tags.get(tag_key(repo, tag)).unwrap()?;
        TagEntry::decode(&value)
    }

    #[test]
    fn tags_in_memory_agree_with_sled_through_writes_removals_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        index.put_tag("a", "1", &entry(1)).unwrap();
        index.put_tag("a", "2", &entry(2)).unwrap();
        index.put_tag("b", "1", &entry(3)).unwrap();
        index.put_tag("a", "1", &entry(4)).unwrap(); // moved
        assert!(index.remove_tag("a", "2").unwrap());
        assert!(!index.remove_tag("a", "2").unwrap(), "already gone");
        let expected = [
            ("a", "1", Some(entry(4))),
            ("a", "2", None),
            ("b", "1", Some(entry(3))),
        ];
        for (repo, tag, want) in &expected {
            assert_eq!(&index.tag(repo, tag), want, "{repo}:{tag} in memory");
            assert_eq!(&in_sled(&index, repo, tag), want, "{repo}:{tag} in sled");
        }

        // Loaded again from sled: after a reopen (the mirror carried over) and a fresh open.
        let index = index.reopen().unwrap();
        for (repo, tag, want) in &expected {
            assert_eq!(&index.tag(repo, tag), want, "{repo}:{tag} after reopen");
        }
        index.remove_tag_keys(&[tag_key("b", "1").into()]).unwrap();
        index.flush().unwrap();
        drop(index);
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.tag("a", "1"), Some(entry(4)));
        assert_eq!(index.tag("b", "1"), None, "removed in a batch");
        assert_eq!(in_sled(&index, "b", "1"), None);
    }

    #[test]
    fn a_tag_record_that_does_not_decode_reads_as_absent_and_is_left_to_the_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        index.put_tag("a", "good", &entry(1)).unwrap();
        index
            .tags
            .insert(tag_key("a", "bad"), &b"short"[..])
            .unwrap();
        index.flush().unwrap();
        drop(index);
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.tag("a", "good"), Some(entry(1)));
        assert_eq!(index.tag("a", "bad"), None, "a miss: fetched again");
        let all = index.all_tags().unwrap();
        assert_eq!(all.len(), 2, "the reconcile still sees it, to drop it");
        assert!(all
            .iter()
            .any(|(key, e)| key[..] == tag_key("a", "bad")[..] && e.is_none()));
    }
}
