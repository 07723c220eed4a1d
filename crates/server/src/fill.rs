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
//! Followers read the temp file through [`crate::read::ChunkReader`].
//!
//! Locks: the map of fills in flight is held only to look up, insert or remove one entry, and
//! nothing in those sections can panic; a poisoned lock (a panic elsewhere while holding it)
//! is taken over as it is, never propagated. A fill task that panics removes its entry all the
//! same (a drop guard), so the next request for that digest starts a new fill.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use oci::{Digest, Target};
use storage::{Ingest, Store};
use tokio::sync::{mpsc, watch};
use upstream::Upstream;

use crate::body::{Body, BoxError};
use crate::error::ApiError;
use crate::origin;
use crate::read::ChunkReader;

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

/// Removes a fill from the map when its task ends, however it ends (a panic included).
struct InFlight {
    fills: Arc<Fills>,
    digest: Digest,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.fills.lock().remove(&self.digest);
    }
}

impl Fills {
    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, watch::Receiver<FillState>>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the fill of `job.digest`, starting it if none is in flight. `None` when the blob got
    /// stored meanwhile (serve it from the store).
    pub fn join(self: &Arc<Self>, job: FillJob) -> Option<watch::Receiver<FillState>> {
        let mut inflight = self.lock();
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
        let guard = InFlight {
            fills: self.clone(),
            digest: job.digest.clone(),
        };
        tokio::spawn(async move {
            let digest = job.digest.clone();
            let host = job.target.host.clone();
            let limit = job.timeout;
            let result = tokio::time::timeout(limit, run(job, tx.clone())).await;
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(ApiError::fill_timeout(&digest, &host, limit)),
            };
            if let Some(error) = failure {
                tracing::warn!(%digest, upstream = %host, error = %error.message, "blob fill failed");
                tx.send_replace(FillState::Failed(error));
            }
            drop(guard);
        });
        Some(rx)
    }

    /// The size of a blob being filled, once the upstream has said it.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        let inflight = self.lock();
        let state = inflight.get(digest)?.borrow();
        match &*state {
            FillState::Streaming(p) => p.size,
            FillState::Verified(p) => Some(p.written),
            FillState::Connecting | FillState::Failed(_) => None,
        }
    }

    /// Fills in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

async fn run(job: FillJob, tx: Arc<watch::Sender<FillState>>) -> Result<(), ApiError> {
    let (size, mut body) = origin::get_blob(&job.upstream, &job.target, &job.digest).await?;
    let (store, digest) = (job.store.clone(), job.digest.clone());
    let ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, size))
        .await
        .map_err(|_| ApiError::download_vanished())??;
    let file = Arc::new(ingest.reader()?);
    tx.send_replace(FillState::Streaming(Progress {
        file: file.clone(),
        size,
        written: 0,
    }));
    let broken =
        |e: &dyn std::fmt::Display| ApiError::download_broken(&job.digest, &job.target.host, e);
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
    let written = writer.await.map_err(|_| ApiError::download_vanished())?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let mut ingest = written.map_err(|e| broken(&e))?;
    ingest
        .verify()
        .map_err(|e| ApiError::blob_unverified(&job.target.host, &e))?;
    let written = ingest.written();
    tx.send_replace(FillState::Verified(Progress {
        file,
        size: Some(written),
        written,
    }));
    // The fsync and rename: followers need not wait for them.
    let committed = tokio::task::spawn_blocking(move || ingest.commit(None)).await;
    match committed {
        Ok(Ok(_)) => (job.on_commit)(&job.store),
        Ok(Err(e)) => {
            tracing::error!(digest = %job.digest, error = %e, "a verified blob could not be stored")
        }
        Err(e) => {
            tracing::error!(digest = %job.digest, error = %e, "storing a verified blob failed")
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
            return Err(ApiError::download_vanished());
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
