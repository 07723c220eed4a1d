//! One upstream download per blob, shared by every client that wants it.
//!
//! The first request for an uncached digest starts a *fill*: a detached task that GETs the blob
//! once, writes it into a store ingest (hashing as it goes) and commits it. Every client, the
//! first one included, is a *follower*: it reads the ingest's temp file up to the bytes written so
//! far and waits for more. So a client that joins mid-download still gets the whole blob, a slow
//! or vanished client never slows or aborts the download, and no follower sees a clean end of
//! body before the digest has been verified: the last byte of each response is released only
//! once the fill has committed. A fill that fails (upstream error, broken connection, digest
//! mismatch, fill timeout) stores nothing and ends every follower's body in an error; the next
//! request starts a new fill.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use storage::{Digest, Store};
use tokio::sync::watch;

use crate::api::{upstream_failure, Body, BoxError, Kind};
use crate::error::ApiError;
use crate::translate::Target;
use crate::upstream::{self, Upstream};

/// The size of one read from a blob or ingest file.
pub const CHUNK: usize = 1 << 20;

/// The state of one fill, as its followers see it.
#[derive(Clone, Debug)]
pub enum FillState {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes arriving. `written` bytes are in `file`.
    Streaming(Progress),
    /// Verified and committed: `progress.written` is the size.
    Done(Progress),
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
        inflight.insert(job.digest.clone(), rx.clone());
        drop(inflight);
        let fills = self.clone();
        tokio::spawn(async move {
            let digest = job.digest.clone();
            let host = job.target.host.clone();
            let limit = job.timeout;
            let result = tokio::time::timeout(limit, run(job, &tx)).await;
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

    /// Fills in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("fills lock").len()
    }
}

async fn run(job: FillJob, tx: &watch::Sender<FillState>) -> Result<(), ApiError> {
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
    let mut ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, size))
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
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // Page-cache writes of one frame (tens of KiB): cheap enough to do on the runtime.
        ingest
            .write_all(&data)
            .and_then(|()| ingest.flush())
            .map_err(|e| broken(&e))?;
        let written = ingest.written();
        tx.send_modify(|state| {
            if let FillState::Streaming(progress) = state {
                progress.written = written;
            }
        });
    }
    let written = ingest.written();
    // Verify, fsync, rename: blocking, and long for big blobs.
    tokio::task::spawn_blocking(move || ingest.commit(None))
        .await
        .expect("commit task")
        .map_err(|e| {
            ApiError::bad_gateway(format!(
                "upstream {} sent a blob that failed verification: {e}; nothing was stored",
                job.target.host
            ))
        })?;
    tx.send_replace(FillState::Done(Progress {
        file,
        size: Some(written),
        written,
    }));
    (job.on_commit)(&job.store);
    Ok(())
}

/// Waits until the fill has response headers (or failed): the size, or the error to answer.
pub async fn wait_started(rx: &mut watch::Receiver<FillState>) -> Result<Option<u64>, ApiError> {
    loop {
        match &*rx.borrow_and_update() {
            FillState::Connecting => {}
            FillState::Streaming(p) => return Ok(p.size),
            FillState::Done(p) => return Ok(Some(p.written)),
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
    let state = Follower {
        rx,
        offset: start,
        end,
    };
    let stream = futures_util::stream::try_unfold(state, |mut f| async move {
        match f.next_chunk().await? {
            Some(bytes) => Ok(Some((http_body::Frame::data(bytes), f))),
            None => Ok(None),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

struct Follower {
    rx: watch::Receiver<FillState>,
    offset: u64,
    end: Option<u64>,
}

impl Follower {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        loop {
            let (file, deliverable) = {
                let state = self.rx.borrow_and_update();
                match &*state {
                    FillState::Connecting => (None, 0),
                    FillState::Failed(e) => return Err(e.message.clone().into()),
                    FillState::Done(p) => {
                        let end = self.end.unwrap_or(p.written).min(p.written);
                        if self.offset >= end {
                            return Ok(None);
                        }
                        (Some(p.file.clone()), end)
                    }
                    FillState::Streaming(p) => {
                        // Hold back the last byte of the response until the blob is verified.
                        let end = self
                            .end
                            .or(p.size)
                            .map_or(u64::MAX, |e| e.saturating_sub(1));
                        (Some(p.file.clone()), p.written.min(end))
                    }
                }
            };
            if let Some(file) = file {
                if self.offset < deliverable {
                    let len = (deliverable - self.offset).min(CHUNK as u64) as usize;
                    let bytes = read_at(file, self.offset, len).await?;
                    self.offset += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
            }
            if self.rx.changed().await.is_err() {
                return Err("the blob download ended unexpectedly".into());
            }
        }
    }
}

/// Reads exactly `len` bytes at `offset` (positioned read, on the blocking pool).
pub async fn read_at(file: Arc<File>, offset: u64, len: usize) -> Result<Bytes, BoxError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(len);
        file.read_exact_at(&mut buf, offset)?;
        Ok::<_, std::io::Error>(buf.freeze())
    })
    .await
    .map_err(|e| Box::new(e) as BoxError)?
    .map_err(|e| Box::new(e) as BoxError)
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
