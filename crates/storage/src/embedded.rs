//! [`Embedded`]: the files + sled [`Store`] as a [`ContentStore`].
//!
//! Where the work runs: answers the store keeps in memory (`stat`, usage, repositories) and
//! index calls (sled keeps its hot pages in memory and writes its log in the background) are
//! made inline; opening a blob file is one `open(2)`, also inline; reading a file goes through a
//! [`ChunkReader`] (inline when the page cache has the bytes); everything else that touches the
//! disk (writing, fsync, rename, gc) runs through the [`Offload`].
//!
//! A write is two offloaded jobs for its whole life, fed the same chunks over two bounded
//! channels: one creates the temp file and writes them, reporting progress every
//! [`PUBLISH_EVERY`] bytes; the other hashes them. Hashing and the page-cache copy of the write
//! are the two big costs of a cold download and run in parallel; a download costs one hand-off
//! per batch of frames, not per frame. `verify` waits for both and checks the digest.

use std::fs::File;
use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use oci::{Digest, Hasher, MediaType};

use crate::chunks::{self, ChunkReader};
use crate::content::Space;
use crate::content::{
    BlobRead, BlobWrite, BoxFuture, ContentStore, Ingesting, Offload, OpenBlob, Progress,
    VerifiedWrite,
};
use crate::offload::{offload, Lost};
use crate::{BlobInfo, GcReport, Ingest, ManifestRead, Store, StoreError, TagEntry, Usage};

/// Followers are told of progress at most once per this many bytes written.
const PUBLISH_EVERY: usize = 1 << 20;
/// Batches queued for each job at most: the backpressure on the download. With the batch each
/// job is working on and the one being gathered, one queued holds about 3 MiB of frames: a cold
/// GET is no slower than with two (nor with two than with four), and the peak of 20 clients on
/// one cold blob is lower (BENCHMARKS.md, issue 18).
const QUEUED_CHUNKS: usize = 1;
/// Chunks are handed to the jobs in batches of at least this many bytes: one wake-up of each
/// thread per batch, not per network frame, and one vectored write.
const BATCH_BYTES: usize = 1 << 20;

/// Chunks handed to the jobs together (shared by both: cloning is a reference count).
type Batch = Arc<[Bytes]>;

/// The embedded store as the server sees it.
#[derive(Clone)]
pub struct Embedded {
    store: Store,
    offload: Arc<dyn Offload>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    pub fn new(store: Store, offload: Arc<dyn Offload>) -> Embedded {
        Embedded { store, offload }
    }

    /// The store itself, for what only an embedded store has (its directory, verify).
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        offload(&*self.offload, move || job(store)).await?
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl ContentStore for Embedded {
    fn stat<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>, StoreError>> {
        ready(Ok(self.store.stat(digest)))
    }

    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<OpenBlob>, StoreError>> {
        let opened = self.store.open_blob(digest).map(|blob| {
            blob.map(|blob| {
                let (file, info, lease) = blob.into_parts();
                let reader = ChunkReader::new(Arc::new(file), self.offload.clone(), Some(lease));
                OpenBlob {
                    info,
                    reader: Box::new(reader),
                }
            })
        });
        ready(opened)
    }

    fn read_all<'a>(
        &'a self,
        digest: &'a Digest,
        limit: u64,
    ) -> BoxFuture<'a, Result<Option<(BlobInfo, Bytes)>, StoreError>> {
        // From memory when a copy is resident; else inline while the page cache has the bytes,
        // the rest, if any, on the offload. Small blobs read whole are kept resident.
        if let Some((info, bytes)) = self.store.read_resident(digest) {
            return ready(check_limit(digest, info.size, limit).map(|()| Some((info, bytes))));
        }
        let opened = match self.store.open_blob(digest) {
            Ok(Some(blob)) => blob.into_parts(),
            Ok(None) => return ready(Ok(None)),
            Err(e) => return ready(Err(e)),
        };
        let (file, info, lease) = opened;
        if let Err(e) = check_limit(digest, info.size, limit) {
            return ready(Err(e));
        }
        let mut buf = vec![0; info.size as usize];
        let cached = match chunks::read_cached(&file, &mut buf, 0) {
            Ok(n) => n,
            Err(e) => return ready(Err(StoreError::io("read blob", self.store.dir(), e))),
        };
        if cached == buf.len() {
            let bytes = Bytes::from(buf);
            self.store.keep_resident(digest, bytes.clone());
            return ready(Ok(Some((info, bytes))));
        }
        Box::pin(self.blocking(move |store| {
            let _lease = lease;
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[cached..], cached as u64)
                .map_err(|e| StoreError::io("read blob", store.dir(), e))?;
            let bytes = Bytes::from(buf);
            store.keep_resident(&info.digest, bytes.clone());
            Ok(Some((info, bytes)))
        }))
    }

    fn read_manifest<'a>(
        &'a self,
        digest: &'a Digest,
        limit: u64,
    ) -> BoxFuture<'a, Result<Option<(BlobInfo, Bytes)>, StoreError>> {
        // A manifest by tag, read again and again: one look at the maps when it is in memory.
        match self.store.read_resident_manifest(digest) {
            ManifestRead::Found(info, bytes) => {
                ready(check_limit(digest, info.size, limit).map(|()| Some((info, bytes))))
            }
            ManifestRead::Untyped | ManifestRead::Absent => ready(Ok(None)),
            ManifestRead::NotInMemory => Box::pin(async move {
                let read = self.read_all(digest, limit).await?;
                Ok(read.filter(|(info, _)| info.media_type.is_some()))
            }),
        }
    }

    fn put<'a>(
        &'a self,
        digest: &'a Digest,
        bytes: Bytes,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'a, Result<BlobInfo, StoreError>> {
        let digest = digest.clone();
        Box::pin(self.blocking(move |store| store.put_bytes(&digest, &bytes, media_type.as_ref())))
    }

    fn ingest<'a>(
        &'a self,
        digest: &'a Digest,
        size: Option<u64>,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Ingesting, StoreError>> {
        // A bounded channel holds its buffer plus one slot per sender.
        let (chunks, mut received) = mpsc::channel::<Batch>(QUEUED_CHUNKS - 1);
        let (hash_chunks, mut hash_received) = mpsc::channel::<Batch>(QUEUED_CHUNKS - 1);
        let (hashed_tx, hashed) = oneshot::channel::<Digest>();
        let algorithm = digest.algorithm();
        self.offload.run(Box::new(move || {
            let mut hasher = Hasher::new(algorithm);
            while let Some(batch) = futures_executor::block_on(next_chunk(&mut hash_received)) {
                for chunk in batch.iter() {
                    hasher.update(chunk);
                }
            }
            let _ = hashed_tx.send(hasher.finish());
        }));
        let (opened_tx, opened) = oneshot::channel::<Result<File, StoreError>>();
        let (done_tx, done) = oneshot::channel::<Result<Ingest, StoreError>>();
        let (store, digest) = (self.store.clone(), digest.clone());
        self.offload.run(Box::new(move || {
            let mut ingest = match store
                .ingest(&digest, size)
                .and_then(|i| Ok((i.reader()?, i)))
            {
                Ok((reader, mut ingest)) => {
                    let _ = opened_tx.send(Ok(reader));
                    ingest.take_hasher(); // the other job hashes
                    ingest
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let temp = format!("the temp file of {digest}");
            let mut unpublished = 0;
            let mut result = Ok(());
            while let Some(batch) = futures_executor::block_on(next_chunk(&mut received)) {
                result = ingest
                    .write_chunks(&batch)
                    .map_err(|e| StoreError::io("write", &temp, e));
                if result.is_err() {
                    break;
                }
                unpublished += batch.iter().map(Bytes::len).sum::<usize>();
                if unpublished >= PUBLISH_EVERY {
                    progress(ingest.written());
                    unpublished = 0;
                }
            }
            let result = result
                .and_then(|()| {
                    ingest
                        .flush()
                        .map_err(|e| StoreError::io("write", &temp, e))
                })
                .map(|()| {
                    progress(ingest.written());
                    ingest
                });
            let _ = done_tx.send(result);
        }));
        let offload = self.offload.clone();
        Box::pin(async move {
            let file = Arc::new(opened.await.map_err(|_| Lost)??);
            let follow_offload = offload.clone();
            let follow = Arc::new(move || {
                Box::new(ChunkReader::new(file.clone(), follow_offload.clone(), None))
                    as Box<dyn BlobRead>
            });
            Ok(Ingesting {
                writer: Box::new(EmbeddedWriter {
                    chunks,
                    hash_chunks,
                    pending: Vec::new(),
                    pending_bytes: 0,
                    done,
                    hashed,
                    offload,
                }),
                follow: Some(follow),
            })
        })
    }

    fn tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>> {
        ready(Ok(self.store.tag(repository, tag)))
    }

    fn put_tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
        digest: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.store.put_tag(repository, tag, digest, checked_at))
    }

    fn tags<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        ready(self.store.tags(repository))
    }

    fn referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>> {
        ready(Ok(self.store.referrers(repository, subject)))
    }

    fn put_referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
        index: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(
            self.store
                .put_referrers(repository, subject, index, checked_at),
        )
    }

    fn note_repository<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.store.note_repository(repository))
    }

    fn repositories(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        ready(Ok(self.store.repositories()))
    }

    fn usage(&self) -> Usage {
        self.store.usage()
    }

    fn space(&self) -> Option<Space> {
        // statvfs(2) of the data dir: one system call, made inline.
        let dir = self.store.dir();
        let available = fs2::available_space(dir).ok()?;
        let total = fs2::total_space(dir).ok()?;
        Some(Space { available, total })
    }

    fn evict(&self, max_size: u64) -> BoxFuture<'_, Result<GcReport, StoreError>> {
        Box::pin(self.blocking(move |store| Ok(store.gc(max_size))))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(|store| store.flush_access()))
    }
}

/// The next chunk of the channel (`StreamExt::next`, without futures-util).
fn next_chunk(
    receiver: &mut mpsc::Receiver<Batch>,
) -> impl std::future::Future<Output = Option<Batch>> + '_ {
    std::future::poll_fn(move |cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut *receiver), cx)
    })
}

/// The async side of a write: chunks go to the writer job and the hashing job over bounded
/// channels.
struct EmbeddedWriter {
    chunks: mpsc::Sender<Batch>,
    hash_chunks: mpsc::Sender<Batch>,
    /// Chunks not yet handed to the jobs (less than [`BATCH_BYTES`]).
    pending: Vec<Bytes>,
    pending_bytes: usize,
    done: oneshot::Receiver<Result<Ingest, StoreError>>,
    hashed: oneshot::Receiver<Digest>,
    offload: Arc<dyn Offload>,
}

impl EmbeddedWriter {
    /// Hands the pending chunks to both jobs, waiting for room (backpressure).
    async fn send_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch: Batch = std::mem::take(&mut self.pending).into();
        self.pending_bytes = 0;
        std::future::poll_fn(|cx| self.chunks.poll_ready(cx))
            .await
            .map_err(|_| Lost)?;
        std::future::poll_fn(|cx| self.hash_chunks.poll_ready(cx))
            .await
            .map_err(|_| Lost)?;
        self.hash_chunks
            .start_send(batch.clone())
            .map_err(|_| Lost)?;
        self.chunks.start_send(batch).map_err(|_| Lost)?;
        Ok(())
    }
}

impl BlobWrite for EmbeddedWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.pending_bytes += chunk.len();
            self.pending.push(chunk);
            if self.pending_bytes >= BATCH_BYTES {
                self.send_pending().await?;
            }
            Ok(())
        })
    }

    fn verify(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn VerifiedWrite>, StoreError>> {
        Box::pin(async move {
            let mut this = self;
            let flushed = this.send_pending().await;
            let EmbeddedWriter {
                chunks,
                hash_chunks,
                done,
                hashed,
                offload,
                ..
            } = *this;
            drop(chunks); // ends the writer job's loop
            drop(hash_chunks); // and the hashing job's

            // A writer that stopped early says why; that comes before the failed hand-off.
            let mut ingest = done.await.map_err(|_| Lost)??;
            flushed?;
            let actual = hashed.await.map_err(|_| Lost)?;
            ingest.verify_with(actual)?;
            Ok(Box::new(EmbeddedVerified { ingest, offload }) as Box<dyn VerifiedWrite>)
        })
    }
}

struct EmbeddedVerified {
    ingest: Ingest,
    offload: Arc<dyn Offload>,
}

impl VerifiedWrite for EmbeddedVerified {
    fn commit(
        self: Box<Self>,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'static, Result<BlobInfo, StoreError>> {
        let EmbeddedVerified {
            ingest,
            offload: runner,
        } = *self;
        Box::pin(
            async move { offload(&*runner, move || ingest.commit(media_type.as_ref())).await? },
        )
    }
}

fn check_limit(digest: &Digest, size: u64, limit: u64) -> Result<(), StoreError> {
    if size > limit {
        return Err(StoreError::TooLarge {
            digest: digest.clone(),
            size,
            limit,
        });
    }
    Ok(())
}
