//! [`ContentStore`]: the seam between the registry server and a store. The server asks for
//! blobs, manifests and tags only through this trait; [`crate::Embedded`] (the files + sled
//! store of this crate) implements it, and a remote backend (an S3-compatible shared store) can
//! implement it too: every call is asynchronous, bytes move in chunks (never a whole blob in
//! memory), and a write is verified against its digest before it is committed.
//!
//! The crate has no async runtime of its own: an implementation that must block (file or index
//! I/O) runs that work through the [`Offload`] its owner hands in (the server gives it tokio's
//! blocking pool; tests give it plain threads).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use oci::{Digest, MediaType};

use crate::{BlobInfo, GcReport, StoreError, TagEntry, Usage};

/// A boxed, sendable future: what every [`ContentStore`] call returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a store runs blocking work. `run` must eventually call `job` on a thread that may
/// block (a blocking pool, a dedicated thread), never on an async executor's own thread.
pub trait Offload: Send + Sync + 'static {
    fn run(&self, job: Box<dyn FnOnce() + Send>);
}

/// Successive reads of one blob (stored, or being written).
pub trait BlobRead: Send {
    /// The next chunk at `offset`, of at most `max` bytes (at least one byte); an
    /// `UnexpectedEof` error at or past the end of what can be read.
    fn read(&mut self, offset: u64, max: u64) -> BoxFuture<'_, io::Result<Bytes>>;
}

/// Hears how many bytes of a write are readable by followers so far.
pub type Progress = Box<dyn Fn(u64) + Send>;

/// Makes readers of a write in progress, for clients that follow it as it arrives.
pub type Follow = Arc<dyn Fn() -> Box<dyn BlobRead> + Send + Sync>;

/// One blob being written. Dropping it (or a failed verification) stores nothing.
pub trait BlobWrite: Send {
    /// Appends a chunk; returns once the store can take the next (backpressure).
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Ends the write and checks size and digest. `Ok` means the bytes written are the blob;
    /// they are not yet durable: [`VerifiedWrite::commit`] makes them so.
    fn verify(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn VerifiedWrite>, StoreError>>;
}

/// A write whose bytes matched the digest.
pub trait VerifiedWrite: Send {
    /// Makes the blob durable and visible to [`ContentStore::stat`] and [`ContentStore::open`].
    fn commit(
        self: Box<Self>,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'static, Result<BlobInfo, StoreError>>;
}

/// Free and total bytes of the file system a store writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    pub total: u64,
}

/// A write started by [`ContentStore::ingest`].
pub struct Ingesting {
    pub writer: Box<dyn BlobWrite>,
    /// Readers of the bytes written so far (up to what [`Progress`] reported), when the store
    /// can offer them; unverified until the write is.
    pub follow: Option<Follow>,
}

/// A stored blob opened for reading.
pub struct OpenBlob {
    pub info: BlobInfo,
    pub reader: Box<dyn BlobRead>,
}

/// What the registry server needs of a store.
pub trait ContentStore: Send + Sync + 'static {
    /// The blob's size and media type, when it is stored.
    fn stat<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>, StoreError>>;

    /// Opens a stored blob; `None` when it is not stored. The blob stays readable (it is not
    /// evicted) while the reader lives.
    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<OpenBlob>, StoreError>>;

    /// A small stored blob (a manifest) whole: `None` when it is not stored, an error when it
    /// is larger than `limit`.
    fn read_all<'a>(
        &'a self,
        digest: &'a Digest,
        limit: u64,
    ) -> BoxFuture<'a, Result<Option<(BlobInfo, Bytes)>, StoreError>>;

    /// A stored manifest whole: [`ContentStore::read_all`] of a blob stored with a media type.
    /// `None` when it is not stored, or stored without one (a layer, a config): such a blob is
    /// not read, so a manifest GET by a layer's digest costs no read of the layer.
    fn read_manifest<'a>(
        &'a self,
        digest: &'a Digest,
        limit: u64,
    ) -> BoxFuture<'a, Result<Option<(BlobInfo, Bytes)>, StoreError>> {
        Box::pin(async move {
            match self.stat(digest).await? {
                Some(info) if info.media_type.is_some() => {}
                _ => return Ok(None),
            }
            let read = self.read_all(digest, limit).await?;
            Ok(read.filter(|(info, _)| info.media_type.is_some()))
        })
    }

    /// Stores a small blob given whole, after checking it against `digest` (also when it is
    /// already stored). A known media type is kept; an unknown one is filled in.
    fn put<'a>(
        &'a self,
        digest: &'a Digest,
        bytes: Bytes,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'a, Result<BlobInfo, StoreError>>;

    /// Starts writing `digest` (`size` when known is checked); `progress` hears how many bytes
    /// followers may read.
    fn ingest<'a>(
        &'a self,
        digest: &'a Digest,
        size: Option<u64>,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Ingesting, StoreError>>;

    /// What `repository:tag` points at, and when the upstream last confirmed it.
    fn tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>>;

    /// Points `repository:tag` at a stored manifest, checked at `checked_at`.
    fn put_tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
        digest: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The tags known for `repository`, sorted.
    fn tags<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// The stored referrers index (a blob) of `subject` in `repository`, and when the
    /// upstream last gave it.
    fn referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>>;

    /// Records the stored blob `index` as the referrers index of `subject` in `repository`.
    fn put_referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
        index: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Remembers that `repository` was served (for the catalog).
    fn note_repository<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every repository that got a tag or was noted, sorted.
    fn repositories(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Space used by stored blobs now.
    fn usage(&self) -> Usage;

    /// The free and total space where the store writes, when it has such a limit (a local file
    /// system); `None` for a store without one.
    fn space(&self) -> Option<Space>;

    /// Removes least recently used blobs (none that is being read or written) until at most
    /// `max_size` bytes are stored.
    fn evict(&self, max_size: u64) -> BoxFuture<'_, Result<GcReport, StoreError>>;

    /// Persists batched bookkeeping (access times).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
