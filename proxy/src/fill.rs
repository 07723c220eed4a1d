//! One upstream download per blob, shared by every client that wants it.
//!
//! The first request for an uncached digest starts a *fill*: a detached task that GETs the blob
//! once and hands the frames to a blocking writer, which writes them into a store ingest (hashing
//! as it goes, off the runtime) and publishes its progress. Once the body is complete the digest
//! is checked, and only then are the fsync and rename of the commit done, in the background.
//! Every client, the first one included, is a *follower*: its response body reads the ingest's
//! temp file up to the bytes written so far and waits for more. So a client that joins
//! mid-download still gets the whole blob, a slow or vanished client never slows or aborts the
//! download, and no follower sees a clean end of body before the digest has been verified: the
//! last byte of each response is released only once it has. A fill that fails (upstream error,
//! broken connection, digest mismatch, fill timeout) stores nothing and ends every follower's
//! body in an error; the next request starts a new fill.
//!
//! Response bodies, of fills and of stored blobs alike, read their file on the runtime thread
//! when the page cache holds the bytes and on the blocking pool only when the disk must be read
//! (see `ChunkReader`), in chunks sized so that all of them together stay within a small
//! memory budget.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use storage::{Digest, Ingest, Store};
use tokio::sync::{mpsc, watch};

use crate::api::{upstream_failure, Body, BoxError, Kind};
use crate::error::ApiError;
use crate::translate::Target;
use crate::upstream::{self, Upstream};

/// What all responses together spend on file read buffers, about: a lone download reads (and
/// sends) in large chunks, which costs fewer system calls per byte; concurrent downloads share
/// the budget in smaller ones, so memory grows little as clients are added (beyond 32 of them,
/// by two [`MIN_CHUNK`] buffers each).
const READ_BUDGET: usize = 4 << 20;
/// The smallest and largest read, and body frame.
const MIN_CHUNK: usize = 64 << 10;
const MAX_CHUNK: usize = 512 << 10;
/// Response bodies reading files now.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// The size of the next read of a response body: the budget shared by the readers, each holding
/// up to [`POOLED`] buffers, in multiples of [`MIN_CHUNK`].
fn chunk_size() -> usize {
    chunk_size_for(READERS.load(Ordering::Relaxed))
}

fn chunk_size_for(readers: usize) -> usize {
    (READ_BUDGET / (POOLED * readers.max(1))).clamp(MIN_CHUNK, MAX_CHUNK) / MIN_CHUNK * MIN_CHUNK
}

/// The state of one fill, as its followers see it.
#[derive(Clone, Debug)]
pub enum FillState {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes arriving. `written` bytes are in `file`.
    Streaming(Progress),
    /// Complete and verified (the commit may still be running): `progress.written` is the size.
    Verified(Progress),
    /// Nothing was stored. Before any byte was served, this is the client's error response.
    Failed(ApiError),
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub file: Arc<File>,
    /// The upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    pub written: u64,
}

/// The fills in flight, by digest.
#[derive(Default)]
pub struct Fills {
    inflight: Mutex<HashMap<Digest, watch::Receiver<FillState>>>,
}

/// What a fill needs, owned, so it can outlive the request that started it.
pub struct FillJob {
    pub upstream: Upstream,
    pub store: Store,
    pub target: Target,
    pub digest: Digest,
    pub timeout: Duration,
    /// Called with the store after a successful commit (e.g. to apply the size limit).
    pub on_commit: Box<dyn FnOnce(&Store) + Send>,
}

impl Fills {
    /// Joins the fill of `job.digest`, starting it if none is in flight. `None` when the blob got
    /// stored meanwhile (serve it from the store).
    pub fn join(self: &Arc<Self>, job: FillJob) -> Option<watch::Receiver<FillState>> {
        let mut inflight = self.inflight.lock().expect("fills lock");
        if let Some(rx) = inflight.get(&job.digest) {
            return Some(rx.clone());
        }
        // Checked under the lock: a fill that committed and left the map has stored the blob.
        if job.store.stat(&job.digest).is_some() {
            return None;
        }
        let (tx, rx) = watch::channel(FillState::Connecting);
        let tx = Arc::new(tx);
        inflight.insert(job.digest.clone(), rx.clone());
        drop(inflight);
        let fills = self.clone();
        tokio::spawn(async move {
            let digest = job.digest.clone();
            let host = job.target.host.clone();
            let limit = job.timeout;
            let result = tokio::time::timeout(limit, run(job, tx.clone())).await;
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    crate::error::UNAVAILABLE,
                    format!(
                        "downloading {digest} from upstream {host} took longer than \
                         cache.fillTimeout ({limit:?}); nothing was stored"
                    ),
                )),
            };
            if let Some(error) = failure {
                tracing::warn!(%digest, upstream = %host, error = %error.message, "blob fill failed");
                tx.send_replace(FillState::Failed(error));
            }
            fills.inflight.lock().expect("fills lock").remove(&digest);
        });
        Some(rx)
    }

    /// The size of a blob being filled, once the upstream has said it.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        let inflight = self.inflight.lock().expect("fills lock");
        let state = inflight.get(digest)?.borrow();
        match &*state {
            FillState::Streaming(p) => p.size,
            FillState::Verified(p) => Some(p.written),
            FillState::Connecting | FillState::Failed(_) => None,
        }
    }

    /// Fills in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("fills lock").len()
    }
}

async fn run(job: FillJob, tx: Arc<watch::Sender<FillState>>) -> Result<(), ApiError> {
    let response = job
        .upstream
        .send(
            &job.target,
            upstream::Request {
                method: Method::GET,
                path: format!("blobs/{}", job.digest),
                query: None,
                headers: HeaderMap::new(),
            },
        )
        .await?;
    if response.status() != StatusCode::OK {
        return Err(upstream_failure(response, &job.target, Kind::Blob).await);
    }
    let size = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (store, digest) = (job.store.clone(), job.digest.clone());
    let ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, size))
        .await
        .expect("ingest task")?;
    let file = Arc::new(ingest.reader()?);
    tx.send_replace(FillState::Streaming(Progress {
        file: file.clone(),
        size,
        written: 0,
    }));
    let broken = |e: &dyn std::fmt::Display| {
        ApiError::bad_gateway(format!(
            "the download of {} from upstream {} broke off: {e}; nothing was stored",
            job.digest, job.target.host
        ))
    };
    // Frames go to a blocking writer, so hashing and writing never hold up the runtime.
    let (frames, mut received) = mpsc::channel::<Bytes>(4);
    let writer = {
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Ingest> {
            let mut ingest = ingest;
            let mut unpublished = 0;
            while let Some(data) = received.blocking_recv() {
                ingest.write_all(&data)?;
                unpublished += data.len();
                if unpublished >= PUBLISH_EVERY {
                    ingest.flush()?;
                    publish(&tx, ingest.written());
                    unpublished = 0;
                }
            }
            ingest.flush()?;
            publish(&tx, ingest.written());
            Ok(ingest)
        })
    };
    let mut body = response.into_body();
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if frames.send(data).await.is_err() {
                    break; // the writer failed; its error is below
                }
            }
            Err(e) => {
                failure = Some(broken(&e));
                break;
            }
        }
    }
    drop(frames);
    let written = writer.await.expect("writer task");
    if let Some(failure) = failure {
        return Err(failure);
    }
    let mut ingest = written.map_err(|e| broken(&e))?;
    ingest.verify().map_err(|e| {
        ApiError::bad_gateway(format!(
            "upstream {} sent a blob that failed verification: {e}; nothing was stored",
            job.target.host
        ))
    })?;
    let written = ingest.written();
    tx.send_replace(FillState::Verified(Progress {
        file,
        size: Some(written),
        written,
    }));
    // The fsync and rename: followers need not wait for them.
    let committed = tokio::task::spawn_blocking(move || ingest.commit(None))
        .await
        .expect("commit task");
    match committed {
        Ok(_) => (job.on_commit)(&job.store),
        Err(e) => {
            tracing::error!(digest = %job.digest, error = %e, "a verified blob could not be stored")
        }
    }
    Ok(())
}

/// Followers are woken at most once per this many bytes written.
const PUBLISH_EVERY: usize = 256 << 10;

fn publish(tx: &watch::Sender<FillState>, written: u64) {
    tx.send_modify(|state| {
        if let FillState::Streaming(progress) = state {
            progress.written = written;
        }
    });
}

/// Waits until the fill has response headers (or failed): the size, or the error to answer.
pub async fn wait_started(rx: &mut watch::Receiver<FillState>) -> Result<Option<u64>, ApiError> {
    loop {
        match &*rx.borrow_and_update() {
            FillState::Connecting => {}
            FillState::Streaming(p) => return Ok(p.size),
            FillState::Verified(p) => return Ok(Some(p.written)),
            FillState::Failed(e) => return Err(e.clone()),
        }
        if rx.changed().await.is_err() {
            return Err(ApiError::bad_gateway(
                "the blob download ended unexpectedly",
            ));
        }
    }
}

/// The body of a follower: bytes `[start, end)` of the blob as the fill writes them (`end`
/// `None`: to the end, whatever the size turns out to be).
pub fn follower_body(rx: watch::Receiver<FillState>, start: u64, end: Option<u64>) -> Body {
    let follower = Follower {
        rx,
        offset: start,
        end,
        reader: None,
    };
    let stream = futures_util::stream::unfold(Some(follower), |follower| async move {
        let mut follower = follower?;
        match follower.next().await {
            Ok(Some(chunk)) => Some((Ok(http_body::Frame::data(chunk)), Some(follower))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// The body of bytes `[start, end)` of a stored blob; `keep` (the store lease) lives as long as
/// the body does.
pub fn file_body<K: Send + 'static>(file: File, start: u64, end: u64, keep: K) -> Body {
    let reader = ChunkReader::new(Arc::new(file));
    let stream = futures_util::stream::unfold(
        (reader, start, keep),
        move |(mut reader, offset, keep)| async move {
            if offset >= end {
                return None;
            }
            match reader.read(offset, end - offset).await {
                Ok(chunk) => {
                    let next = offset + chunk.len() as u64;
                    Some((Ok(http_body::Frame::data(chunk)), (reader, next, keep)))
                }
                Err(e) => Some((Err(e.into()), (reader, end, keep))),
            }
        },
    );
    StreamBody::new(stream).boxed_unsync()
}

/// A client following a fill: reads what the fill has written (and may be released), waits for
/// more.
struct Follower {
    rx: watch::Receiver<FillState>,
    offset: u64,
    end: Option<u64>,
    reader: Option<ChunkReader>,
}

impl Follower {
    /// The next chunk of the response; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        loop {
            let (file, deliverable, complete) = {
                let state = self.rx.borrow_and_update();
                match &*state {
                    FillState::Connecting => (None, 0, false),
                    FillState::Failed(e) => return Err(e.message.clone().into()),
                    FillState::Verified(p) => {
                        let end = self.end.unwrap_or(p.written).min(p.written);
                        (Some(p.file.clone()), end, true)
                    }
                    FillState::Streaming(p) => {
                        // Hold back the last byte of the response until the blob is verified.
                        let end = self
                            .end
                            .or(p.size)
                            .map_or(u64::MAX, |e| e.saturating_sub(1));
                        (Some(p.file.clone()), p.written.min(end), false)
                    }
                }
            };
            if let Some(file) = file.filter(|_| self.offset < deliverable) {
                let reader = self.reader.get_or_insert_with(|| ChunkReader::new(file));
                let chunk = reader.read(self.offset, deliverable - self.offset).await?;
                self.offset += chunk.len() as u64;
                return Ok(Some(chunk));
            }
            if complete {
                return Ok(None);
            }
            if self.rx.changed().await.is_err() {
                return Err("the blob download ended unexpectedly".into());
            }
        }
    }
}

/// Reads a file in chunks for a response body: on the runtime thread when the page cache holds
/// the bytes (`preadv2` with `RWF_NOWAIT`, Linux), on the blocking pool when the disk must be
/// read. A warm blob, or a fill's freshly written bytes, so cost no hand-off between threads.
struct ChunkReader {
    file: Arc<File>,
    /// Buffers whose chunks hyper has sent: a response reuses a few instead of allocating (and
    /// zeroing) one per chunk.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    nowait: bool,
}

/// Buffers a response keeps for reuse: one being filled while hyper sends the other.
const POOLED: usize = 2;

impl ChunkReader {
    fn new(file: Arc<File>) -> ChunkReader {
        READERS.fetch_add(1, Ordering::Relaxed);
        ChunkReader {
            file,
            pool: Arc::default(),
            nowait: cfg!(target_os = "linux"),
        }
    }

    /// Reads the next chunk at `offset`, of up to `left` bytes; an error at end of file.
    async fn read(&mut self, offset: u64, left: u64) -> std::io::Result<Bytes> {
        let size = chunk_size();
        let pooled = self.pool.lock().expect("pool lock").pop();
        // A pooled buffer of another size (the budget moved) is dropped: zeroing a new one is
        // what reuse avoids, and it happens only when the number of readers changes.
        let mut buf = pooled
            .filter(|b| b.len() == size)
            .unwrap_or_else(|| vec![0; size]);
        let len = left.min(size as u64) as usize;
        #[cfg(target_os = "linux")]
        if self.nowait {
            use rustix::io::{preadv2, Errno, ReadWriteFlags};
            let mut slices = [std::io::IoSliceMut::new(&mut buf[..len])];
            match preadv2(&*self.file, &mut slices, offset, ReadWriteFlags::NOWAIT) {
                Ok(n) => return self.chunk(buf, n),
                Err(Errno::AGAIN) => {} // not in the page cache: read it on the blocking pool
                Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => self.nowait = false,
                Err(e) => return Err(e.into()),
            }
        }
        let file = self.file.clone();
        let (buf, read) = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let read = file.read_at(&mut buf[..len], offset);
            (buf, read)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.chunk(buf, read?)
    }

    fn chunk(&self, buf: Vec<u8>, len: usize) -> std::io::Result<Bytes> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file ended early",
            ));
        }
        Ok(Bytes::from_owner(PooledChunk {
            buf,
            len,
            pool: self.pool.clone(),
        }))
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first `len` bytes of a pooled buffer, as a body chunk; the buffer goes back to the pool
/// when the chunk is dropped.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < POOLED {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// `Content-Length`, `Content-Range` and status for serving `[start, end)` of `size` bytes.
pub fn range_headers(
    builder: http::response::Builder,
    range: Option<(u64, u64)>,
    size: Option<u64>,
) -> http::response::Builder {
    match (range, size) {
        (Some((start, end)), Some(size)) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            ),
        (_, Some(size)) => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
        (_, None) => builder.status(StatusCode::OK),
    }
}

/// A `Range` header resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: serve everything (no header, several ranges, another unit).
    Full,
    /// `[start, end)`
    Part(u64, u64),
    /// Nothing of the blob matches: 416.
    Unsatisfiable,
}

/// Resolves one `bytes=` range (`N-M`, `N-`, `-S`) against `size`.
pub fn parse_range(header: Option<&HeaderValue>, size: u64) -> ByteRange {
    let Some(spec) = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, true) => return ByteRange::Full,
        (true, false) => match parse(last) {
            Some(0) => return ByteRange::Unsatisfiable,
            Some(suffix) => (size.saturating_sub(suffix), size),
            None => return ByteRange::Full,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return ByteRange::Full;
            };
            let end = if last.is_empty() {
                size
            } else {
                match parse(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(size),
                    _ => return ByteRange::Full,
                }
            };
            (start, end)
        }
    };
    if start >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, size: u64) -> ByteRange {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), size)
    }

    #[tokio::test]
    async fn chunk_reader_reads_what_the_file_holds_and_fails_past_its_end() {
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(b"0123456789").unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp));
        assert_eq!(reader.read(3, 4).await.unwrap(), "3456");
        assert_eq!(
            reader.read(7, 8).await.unwrap(),
            "789",
            "a short read at the end"
        );
        let held = reader.read(0, 10).await.unwrap(); // hyper still sending it
        assert_eq!(reader.read(2, 1).await.unwrap(), "2");
        assert_eq!(
            held, "0123456789",
            "a chunk is not overwritten while it is held"
        );
        let past = reader.read(10, 4).await.unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
        reader.nowait = false; // the blocking pool's path
        assert_eq!(reader.read(0, 2).await.unwrap(), "01");
        assert!(reader.read(10, 1).await.is_err());
    }

    #[tokio::test]
    async fn chunk_reader_reads_a_file_the_page_cache_does_not_hold() {
        let bytes: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(&bytes).unwrap();
        temp.sync_all().unwrap();
        // Evicts the clean pages, so the first reads find nothing cached (EAGAIN, blocking pool).
        rustix::fs::fadvise(&temp, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut reader = ChunkReader::new(Arc::new(temp));
        let mut read = Vec::new();
        while (read.len() as u64) < bytes.len() as u64 {
            let offset = read.len() as u64;
            let chunk = reader
                .read(offset, bytes.len() as u64 - offset)
                .await
                .unwrap();
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, bytes);
    }

    #[test]
    fn readers_share_the_read_budget() {
        assert_eq!(chunk_size_for(0), MAX_CHUNK);
        assert_eq!(chunk_size_for(1), MAX_CHUNK);
        assert_eq!(chunk_size_for(8), 256 << 10);
        assert_eq!(
            chunk_size_for(20),
            MIN_CHUNK,
            "20 downloads hold 20 x 2 x 64 KiB"
        );
        assert_eq!(chunk_size_for(10_000), MIN_CHUNK);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Full);
        assert_eq!(range("bytes=0-4", 10), ByteRange::Part(0, 5));
        assert_eq!(range("bytes=5-", 10), ByteRange::Part(5, 10));
        assert_eq!(range("bytes=5-100", 10), ByteRange::Part(5, 10));
        assert_eq!(range("bytes=-3", 10), ByteRange::Part(7, 10));
        assert_eq!(range("bytes=-30", 10), ByteRange::Part(0, 10));
        assert_eq!(range("bytes=10-", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=0-1,3-4", 10), ByteRange::Full);
        assert_eq!(range("items=0-1", 10), ByteRange::Full);
        assert_eq!(range("bytes=4-2", 10), ByteRange::Full);
        assert_eq!(range("bytes=x-2", 10), ByteRange::Full);
    }
}
