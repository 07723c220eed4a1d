//! Writing blobs: [`Ingest`] (temp file under `ingest/`, hashed and counted while written; verify,
//! fsync, rename into `blobs/`, fsync the directory, then index) and [`Store::put_bytes`].

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::state::BlobInfo;
use crate::store::{Lease, Store};
use oci::{Digest, Hasher, MediaType};

use crate::StoreError;

/// An in-progress write of one blob. Write the bytes, then [`Ingest::commit`]. Dropping it without
/// a successful commit removes the temp file; nothing under `blobs/` is touched until commit.
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    digest: Digest,
    expected_size: Option<u64>,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Option<Hasher>,
    written: u64,
    /// `true` once the temp file has been renamed or removed by commit.
    done: bool,
    /// `true` once size and digest were checked ([`Ingest::verify`]).
    verified: bool,
    /// `true` when the caller hashes the bytes itself ([`Ingest::take_hasher`]).
    hashed_elsewhere: bool,
    _lease: Lease,
}

impl Store {
    /// Starts writing the blob `digest`. `expected_size`, when known, is checked at commit, and a
    /// write past it fails early. Holds a lease on `digest` until committed or dropped.
    pub fn ingest(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Ingest, StoreError> {
        let lease = self.lease(digest);
        let temp = self.inner.layout.ingest_path(digest);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StoreError::io("create temp file", &temp, e))?;
        if let Some(size) = expected_size.filter(|size| *size >= PREALLOCATE_FROM) {
            if let Err(e) = preallocate(&file, size) {
                drop(file);
                remove_temp(&temp);
                return Err(StoreError::io("reserve space for", &temp, e));
            }
        }
        Ok(Ingest {
            store: self.clone(),
            digest: digest.clone(),
            expected_size,
            temp,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            hasher: Some(Hasher::new(digest.algorithm())),
            written: 0,
            done: false,
            verified: false,
            hashed_elsewhere: false,
            _lease: lease,
        })
    }

    /// Stores a small blob (a manifest, a config) given whole. The bytes are checked against
    /// `digest` even when the blob is already stored.
    pub fn put_bytes(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: Option<&MediaType>,
    ) -> Result<BlobInfo, StoreError> {
        let actual = Digest::compute(digest.algorithm(), bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        if let Some(info) = self.existing(digest, media_type)? {
            return Ok(info);
        }
        let mut ingest = self.ingest(digest, Some(bytes.len() as u64))?;
        ingest
            .write_all(bytes)
            .map_err(|e| StoreError::io("write temp file", &ingest.temp, e))?;
        ingest.commit(media_type)
    }

    /// The info of `digest` if already stored; fills in a media type that was unknown.
    fn existing(
        &self,
        digest: &Digest,
        media_type: Option<&MediaType>,
    ) -> Result<Option<BlobInfo>, StoreError> {
        let mut state = self.inner.state();
        let interned = media_type.map(|m| state.blobs.intern(m));
        let Some(entry) = state.blobs.get_mut(digest) else {
            return Ok(None);
        };
        if entry.media_type.is_none() && interned.is_some() {
            entry.media_type = interned;
            self.inner.index.put_blob(digest, &entry.record())?;
        }
        Ok(Some(entry.info(digest)))
    }

    /// Moves the verified, fsynced temp file into `blobs/` and indexes it.
    fn install(
        &self,
        digest: &Digest,
        temp: &Path,
        size: u64,
        media_type: Option<&MediaType>,
    ) -> Result<BlobInfo, StoreError> {
        if let Some(info) = self.existing(digest, media_type)? {
            remove_temp(temp);
            return Ok(info);
        }
        let path = self.inner.layout.blob_path(digest);
        let parent = path.parent().expect("blob paths have a parent");
        if !parent.is_dir() {
            fs::create_dir_all(parent)
                .map_err(|e| StoreError::io("create directory", parent, e))?;
            if let Some(grandparent) = parent.parent() {
                sync_dir(grandparent)?;
            }
        }
        // If a concurrent commit of the same digest got here first, this replaces its file with
        // identical, verified bytes; open readers keep the file they opened.
        fs::rename(temp, &path).map_err(|e| StoreError::io("rename temp file into", &path, e))?;
        sync_dir(parent)?;

        let mut state = self.inner.state();
        if let Some(entry) = state.blobs.get(digest) {
            return Ok(entry.info(digest));
        }
        let stamp = state.stamp();
        let entry = state.insert(digest, size, media_type, stamp);
        let (info, record) = (entry.info(digest), entry.record());
        self.inner.index.put_blob(digest, &record)?;
        tracing::debug!(%digest, size, "blob stored");
        Ok(info)
    }
}

/// Blobs of at least this size announced up front get their blocks reserved when the temp file
/// is created ([`preallocate`]).
const PREALLOCATE_FROM: u64 = 1 << 20;

/// Reserves `size` bytes of blocks for a new file, keeping its size at 0: the writes that follow
/// fill blocks already allocated instead of reserving each 4 KiB block as it comes (ext4's
/// delayed allocation: a tenth of outpost's CPU in a cold 1 GiB GET), the file is laid out in
/// few extents, and a disk too full for the blob fails here rather than half way through it.
/// File systems that cannot preallocate are written as before.
fn preallocate(file: &File, size: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    use rustix::io::Errno;
    match fallocate(file, FallocateFlags::KEEP_SIZE, 0, size) {
        Ok(()) => Ok(()),
        Err(e @ (Errno::NOSPC | Errno::DQUOT | Errno::FBIG)) => Err(e.into()),
        Err(_) => Ok(()), // EOPNOTSUPP, ENOSYS, ...: nothing reserved, nothing lost
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

fn remove_temp(temp: &Path) {
    match fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %temp.display(), error = %e, "could not remove temp file"),
    }
}

impl Ingest {
    /// The digest this ingest must produce.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A read handle on the temp file, for streaming the bytes to clients while they arrive
    /// (single-flight followers). It sees what was written and flushed ([`Write::flush`]); it
    /// stays readable after commit (the rename keeps the inode) and after a failed commit, so
    /// whoever streams from it must itself end its clients' bodies with an error when the
    /// commit fails. These bytes are unverified until [`Ingest::commit`] succeeds.
    pub fn reader(&self) -> Result<File, StoreError> {
        File::open(&self.temp)
            .map_err(|e| StoreError::io("open temp file for reading", &self.temp, e))
    }

    /// Takes the hashing out of the writes, for a caller that hashes the same bytes elsewhere
    /// (on another thread, in parallel with the writes): it then verifies with
    /// [`Ingest::verify_with`] and the digest it computed. `None` if already taken.
    pub fn take_hasher(&mut self) -> Option<Hasher> {
        let hasher = self.hasher.take()?;
        self.hashed_elsewhere = true;
        Some(hasher)
    }

    /// [`Ingest::verify`] for an ingest whose bytes the caller hashed ([`Ingest::take_hasher`]):
    /// `actual` is what they hash to.
    pub fn verify_with(&mut self, actual: Digest) -> Result<(), StoreError> {
        if self.verified {
            return Ok(());
        }
        self.check_size()?;
        if actual != self.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.verified = true;
        Ok(())
    }

    fn check_size(&self) -> Result<(), StoreError> {
        match self.expected_size {
            Some(expected) if expected != self.written => Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected,
                actual: self.written,
            }),
            _ => Ok(()),
        }
    }

    /// Checks size and digest of what was written, without the (slow) fsync and rename of
    /// [`Ingest::commit`]: once this returns `Ok`, the bytes written are the blob, and a reader of
    /// [`Ingest::reader`] may treat them as verified. On error the ingest is spent (drop it).
    pub fn verify(&mut self) -> Result<(), StoreError> {
        if self.verified {
            return Ok(());
        }
        self.check_size()?;
        let Some(hasher) = self.hasher.take() else {
            let why = if self.hashed_elsewhere {
                "its bytes are hashed by the caller: verify with the caller's digest"
            } else {
                "this ingest already failed verification"
            };
            return Err(StoreError::io("verify", &self.temp, io::Error::other(why)));
        };
        let actual = hasher.finish();
        if actual != self.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.verified = true;
        Ok(())
    }

    /// Checks size and digest (unless [`Ingest::verify`] did), fsyncs, renames into `blobs/`,
    /// fsyncs the directory and indexes the blob. If the blob is already stored (a concurrent
    /// ingest won), returns its info. On error nothing is stored and the temp file is removed.
    pub fn commit(mut self, media_type: Option<&MediaType>) -> Result<BlobInfo, StoreError> {
        self.verify()?;
        let file = self.file.take().expect("file is present until commit");
        let file = file
            .into_inner()
            .map_err(|e| StoreError::io("write temp file", &self.temp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync temp file", &self.temp, e))?;
        drop(file);
        let result = self
            .store
            .install(&self.digest, &self.temp, self.written, media_type);
        self.done = result.is_ok();
        result
    }
}

impl Ingest {
    /// Writes `chunks` in order with vectored writes straight to the file (no copy into the
    /// write buffer), hashing them unless the caller does ([`Ingest::take_hasher`]). For large
    /// writes of received network frames; small ones may as well go through [`Write`].
    pub fn write_chunks(&mut self, chunks: &[bytes::Bytes]) -> io::Result<()> {
        let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.check_room(total)?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        file.flush()?; // whatever went through `Write` comes first
        if let Some(hasher) = self.hasher.as_mut() {
            chunks.iter().for_each(|chunk| hasher.update(chunk));
        }
        let file = file.get_mut();
        let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.written += total;
        Ok(())
    }

    /// Refuses a write of `len` more bytes past the expected size, or after verification.
    fn check_room(&self, len: u64) -> io::Result<()> {
        if let Some(expected) = self.expected_size {
            if self.written + len > expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than the expected {expected} bytes written for {}",
                        self.digest
                    ),
                ));
            }
        }
        if self.verified {
            return Err(io::Error::other("ingest already verified"));
        }
        Ok(())
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_room(buf.len() as u64)?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        let n = file.write(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.done {
            drop(self.file.take());
            remove_temp(&self.temp);
        }
    }
}
