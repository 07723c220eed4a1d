//! One upstream download per blob, shared by every client that wants it.
//!
//! The first request for an uncached digest starts a *fill*: a detached task that GETs the blob
//! once and hands the frames to a blocking writer, which writes them into a store ingest (hashing
//! as it goes, off the runtime) and publishes its progress. Once the body is complete the digest
//! is checked, and only then are the fsync and rename of the commit done, in the background.
//! Every client, the first one included, is a *follower*: a blocking reader with its own file
//! handle reads the ingest's temp file up to the bytes written so far and waits for more. So a
//! client that joins mid-download still gets the whole blob, a slow or vanished client never
//! slows or aborts the download, and no follower sees a clean end of body before the digest has
//! been verified: the last byte of each response is released only once it has. A fill that fails (upstream error, broken connection, digest
//! mismatch, fill timeout) stores nothing and ends every follower's body in an error; the next
//! request starts a new fill.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
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

/// The size of one read from a blob or ingest file, and of one body frame.
pub const CHUNK: usize = 128 << 10;

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
    let (frames, mut received) = mpsc::channel::<Bytes>(16);
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
    let handle = tokio::runtime::Handle::current();
    reader_body(move |chunks| follow(rx, start, end, &handle, chunks))
}

/// The body of bytes `[start, end)` of a stored blob; `keep` (the store lease) lives as long as
/// the reading does.
pub fn file_body<K: Send + 'static>(file: File, start: u64, end: u64, keep: K) -> Body {
    reader_body(move |chunks| {
        let _keep = keep;
        let mut file = file;
        file.seek(SeekFrom::Start(start))?;
        let mut offset = start;
        while offset < end {
            let chunk = read_chunk(&mut file, (end - offset).min(CHUNK as u64))?;
            offset += chunk.len() as u64;
            if chunks.blocking_send(Ok(chunk)).is_err() {
                break; // the client went away
            }
        }
        Ok(())
    })
}

/// A body fed by `read`, which runs on the blocking pool and sends chunks as it reads them: one
/// blocking task per response rather than one per chunk. The channel holds little, so a slow
/// client holds little memory.
fn reader_body<F>(read: F) -> Body
where
    F: FnOnce(&mpsc::Sender<Result<Bytes, BoxError>>) -> Result<(), BoxError> + Send + 'static,
{
    let (chunks, received) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read(&chunks) {
            let _ = chunks.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        let chunk = received.recv().await?;
        Some((chunk.map(http_body::Frame::data), received))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Reads `len` bytes (fewer at end of file) into a fresh buffer, without zeroing it first.
fn read_chunk(file: &mut File, len: u64) -> Result<Bytes, BoxError> {
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Err("the blob file ended early".into());
    }
    Ok(Bytes::from(buf))
}

/// The follower loop: read what the fill has written (and may be released), wait for more.
fn follow(
    mut rx: watch::Receiver<FillState>,
    start: u64,
    end: Option<u64>,
    handle: &tokio::runtime::Handle,
    chunks: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), BoxError> {
    let mut reader: Option<IngestReader> = None;
    let mut offset = start;
    loop {
        let (shared, deliverable, complete) = {
            let state = rx.borrow_and_update();
            match &*state {
                FillState::Connecting => (None, 0, false),
                FillState::Failed(e) => return Err(e.message.clone().into()),
                FillState::Verified(p) => {
                    let end = end.unwrap_or(p.written).min(p.written);
                    (Some(p.file.clone()), end, true)
                }
                FillState::Streaming(p) => {
                    // Hold back the last byte of the response until the blob is verified.
                    let end = end.or(p.size).map_or(u64::MAX, |e| e.saturating_sub(1));
                    (Some(p.file.clone()), p.written.min(end), false)
                }
            }
        };
        if let Some(shared) = shared.filter(|_| offset < deliverable) {
            let reader = match &mut reader {
                Some(reader) => reader,
                None => reader.insert(IngestReader::new(shared, offset)),
            };
            let chunk = reader.read(offset, (deliverable - offset).min(CHUNK as u64))?;
            offset += chunk.len() as u64;
            if chunks.blocking_send(Ok(chunk)).is_err() {
                return Ok(()); // the client went away; the fill goes on
            }
            continue;
        }
        if complete {
            return Ok(());
        }
        if handle.block_on(rx.changed()).is_err() {
            return Err("the blob download ended unexpectedly".into());
        }
    }
}

/// How a follower reads the ingest file.
enum IngestReader {
    /// Its own handle, with its own offset: the fill's handle reopened through `/proc/self/fd`
    /// (Linux), which works although the temp file may have been renamed into `blobs/` or removed
    /// since. (A `dup` would share the offset with other readers.) Sequential reads, no zeroing.
    Own(File),
    /// Where `/proc` is not mounted: positioned reads on the fill's handle.
    Shared(Arc<File>),
}

impl IngestReader {
    fn new(shared: Arc<File>, offset: u64) -> IngestReader {
        use std::os::fd::AsRawFd;
        let own = File::open(format!("/proc/self/fd/{}", shared.as_raw_fd()))
            .and_then(|mut file| file.seek(SeekFrom::Start(offset)).map(|_| file));
        match own {
            Ok(file) => IngestReader::Own(file),
            Err(_) => IngestReader::Shared(shared),
        }
    }

    /// Reads `len` bytes at `offset` (the offset the reader has reached).
    fn read(&mut self, offset: u64, len: u64) -> Result<Bytes, BoxError> {
        match self {
            IngestReader::Own(file) => read_chunk(file, len),
            IngestReader::Shared(file) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; len as usize];
                file.read_exact_at(&mut buf, offset)?;
                Ok(Bytes::from(buf))
            }
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

    #[test]
    fn followers_read_the_same_bytes_with_their_own_or_a_shared_handle() {
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(b"0123456789").unwrap();
        let shared = Arc::new(temp);
        let mut own = IngestReader::new(shared.clone(), 3);
        assert!(
            matches!(own, IngestReader::Own(_)),
            "/proc/self/fd is not available"
        );
        let mut fallback = IngestReader::Shared(shared);
        for reader in [&mut own, &mut fallback] {
            assert_eq!(reader.read(3, 4).unwrap(), "3456");
            assert_eq!(reader.read(7, 3).unwrap(), "789");
        }
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
