//! One upstream download per blob, shared by every client that wants it.
//!
//! The first request for an uncached digest starts a *fill*: a detached task that GETs the blob
//! once and writes it into the store ([`ContentStore::ingest`]), which hashes and writes off the
//! runtime and reports its progress. Once the body is complete the digest is checked, and only
//! then is the write committed (fsync and rename), in the background. Every client, the first
//! one included, is a *follower*: its response body reads the bytes written so far (the store's
//! [`Follow`] readers) and waits for more. So a client that joins mid-download still gets the
//! whole blob, a slow or vanished client never slows or aborts the download, and no follower
//! of the whole blob sees a clean end of body before the digest has been verified: the blob's
//! last byte is released only once it has. A `Range` that ends before the blob's last byte
//! (containerd's parallel layer download) is answered as its bytes arrive, never waiting for the
//! rest of the blob; its client verifies the assembled blob. A fill that fails (upstream error, broken connection, digest
//! mismatch, fill timeout) stores nothing and ends every follower's body in an error; the next
//! request starts a new fill.
//!
//! Exactly one download: a fill first asks the store whether the blob is there (a fill of the
//! same digest may have committed and left the map just before this one was entered); if it
//! is, its followers are sent to the store instead.
//!
//! Locks: the map of fills in flight is held only to look up, insert or remove one entry, and
//! nothing in those sections can panic; a poisoned lock (a panic elsewhere while holding it)
//! is taken over as it is, never propagated. A fill task that panics removes its entry all the
//! same (a drop guard), so the next request for that digest starts a new fill.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use config::{ByteSize, Reserve};
use futures_util::FutureExt;
use http_body_util::{BodyExt, StreamBody};
use oci::{Digest, Target};
use storage::{BlobRead, ContentStore, Follow, Ingesting};
use tokio::sync::watch;
use upstream::Upstream;

use crate::body::{Body, BoxError};
use crate::error::ApiError;
use crate::origin;
use crate::read;
use crate::tier::{Found, Tier};

/// The state of one fill, as its followers see it.
#[derive(Clone)]
pub enum FillState {
    /// Asking the store, then waiting for the upstream's response headers.
    Connecting,
    /// The blob turned out to be stored already: serve it from the store.
    Stored,
    /// The blob is too large for the room the store may use: pass it through unstored.
    PassThrough,
    /// Bytes arriving. `written` bytes can be read through `follow`.
    Streaming(Progress),
    /// Complete and verified (the commit may still be running): `progress.written` is the size.
    Verified(Progress),
    /// Nothing was stored. Before any byte was served, this is the client's error response.
    Failed(ApiError),
}

#[derive(Clone)]
pub struct Progress {
    pub follow: Follow,
    /// The upstream's `Content-Length`, when it sent one.
    pub size: Option<u64>,
    pub written: u64,
    /// Bytes received so far; the most recent of them are in `recent`.
    pub received: u64,
    pub recent: Arc<Recent>,
    /// The bytes come from the site's shared store, not the upstream.
    pub shared: bool,
}

/// How many of the most recently received bytes of a fill are kept in memory (at least: the
/// newest frame always stays). A follower that keeps up with the download reads from here; one
/// further behind reads the file, from the page cache. A frame kept here holds its whole receive
/// buffer and a slow follower's connection may hold one more, so this is paid many times over
/// with many clients: 4 MiB took the peak RSS of 20 clients on one cold blob from 16 to 29 MiB,
/// 1 MiB (with a 2 MiB file read budget) brought it back to 23, and a cold GET was no slower
/// (BENCHMARKS.md, issue 18).
const RECENT_BYTES: usize = 1 << 20;
/// While frames keep arriving, followers hear of received bytes once per this many; whenever
/// the download has to wait for the upstream, they hear of everything received so far.
const NOTIFY_EVERY: u64 = 1 << 20;

/// The most recently received bytes of a fill: followers near the head (most of them) are
/// answered from here, without reading back the file being written; those further behind read
/// the file.
#[derive(Default)]
pub struct Recent {
    inner: Mutex<RecentChunks>,
}

#[derive(Default)]
struct RecentChunks {
    /// `(offset, bytes)`, in order.
    chunks: std::collections::VecDeque<(u64, Bytes)>,
    bytes: usize,
    end: u64,
}

impl Recent {
    fn push(&self, chunk: Bytes) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let offset = inner.end;
        inner.end += chunk.len() as u64;
        inner.bytes += chunk.len();
        inner.chunks.push_back((offset, chunk));
        while inner.bytes > RECENT_BYTES && inner.chunks.len() > 1 {
            if let Some((_, old)) = inner.chunks.pop_front() {
                inner.bytes -= old.len();
            }
        }
    }

    /// Up to `max` bytes at `offset`, when they are still in memory.
    fn get(&self, offset: u64, max: u64) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let i = inner
            .chunks
            .partition_point(|(start, chunk)| start + chunk.len() as u64 <= offset);
        let (start, chunk) = inner.chunks.get(i)?;
        if *start > offset {
            return None;
        }
        let from = (offset - start) as usize;
        let to = chunk.len().min(from.saturating_add(max as usize));
        Some(chunk.slice(from..to))
    }
}

/// How a fill started, for the request that joined it.
pub enum Started {
    /// The response size, when the upstream said it; whether the bytes come from the shared
    /// store.
    Streaming(Option<u64>, bool),
    /// Serve the blob from the store.
    Stored,
    /// Pass the blob through from the upstream, unstored (the fill logged why).
    PassThrough,
}

/// The fills in flight, by digest.
#[derive(Default)]
pub struct Fills {
    inflight: Mutex<HashMap<Digest, watch::Receiver<FillState>>>,
    /// Blobs of unknown size whose fill outgrew the room (`cache.maxSize`, `cache.minFree`),
    /// newest last: passed through from then on (until outpost restarts, or `OUTGROWN_KEPT`
    /// later ones push them out), instead of failing the same way on every request.
    outgrown: Mutex<VecDeque<Digest>>,
}

/// How many outgrown blobs are remembered.
const OUTGROWN_KEPT: usize = 256;

/// Called with the store after a successful commit (e.g. to apply the size limit).
pub type OnCommit = Box<dyn FnOnce(Arc<dyn ContentStore>) + Send>;

/// How often (bytes received) a download of unknown size checks the free space.
const CHECK_EVERY: u64 = 1 << 20;

/// The room a fill may use in the store: `cache.maxSize` and `cache.minFree`.
#[derive(Clone, Copy, Debug)]
pub struct Room {
    pub max_size: Option<u64>,
    pub min_free: Reserve,
}

impl Room {
    /// Why `size` more bytes (or, unknown, any more) do not fit now; `None` when they do.
    pub fn refuses(&self, size: Option<u64>, store: &dyn ContentStore) -> Option<String> {
        let incoming = size.unwrap_or(0);
        if let Some(max) = self.max_size.filter(|max| incoming > *max) {
            return Some(format!(
                "it is {} bytes, more than cache.maxSize ({})",
                incoming,
                ByteSize(max)
            ));
        }
        let space = store.space()?;
        let reserve = self.min_free.bytes(space.total);
        (space.available < reserve.saturating_add(incoming)).then(|| {
            format!(
                "{} bytes more would leave less than cache.minFree ({}) free on the data dir's \
                 file system ({} available)",
                incoming,
                ByteSize(reserve),
                ByteSize(space.available)
            )
        })
    }
}

/// What a fill needs, owned, so it can outlive the request that started it.
pub struct FillJob {
    pub upstream: Upstream,
    pub store: Arc<dyn ContentStore>,
    pub target: Target,
    pub digest: Digest,
    pub timeout: Duration,
    pub room: Room,
    pub on_commit: OnCommit,
    /// The site's shared store, asked before the upstream and given what the upstream sent.
    pub tier: Option<Arc<Tier>>,
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

    fn outgrew(&self, digest: &Digest) -> bool {
        let outgrown = self.outgrown.lock().unwrap_or_else(PoisonError::into_inner);
        outgrown.contains(digest)
    }

    fn note_outgrown(&self, digest: &Digest) {
        let mut outgrown = self.outgrown.lock().unwrap_or_else(PoisonError::into_inner);
        if !outgrown.contains(digest) {
            if outgrown.len() == OUTGROWN_KEPT {
                outgrown.pop_front();
            }
            outgrown.push_back(digest.clone());
        }
    }

    /// Joins the fill of `job.digest`, starting it if none is in flight.
    pub fn join(self: &Arc<Self>, job: FillJob) -> watch::Receiver<FillState> {
        let mut inflight = self.lock();
        if let Some(rx) = inflight.get(&job.digest) {
            return rx.clone();
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
            let result = tokio::time::timeout(limit, run(job, tx.clone(), &guard.fills)).await;
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
        rx
    }

    /// The size of a blob being filled, once the upstream has said it.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        let inflight = self.lock();
        let state = inflight.get(digest)?.borrow();
        match &*state {
            FillState::Streaming(p) => p.size,
            FillState::Verified(p) => Some(p.written),
            FillState::Connecting
            | FillState::Stored
            | FillState::PassThrough
            | FillState::Failed(_) => None,
        }
    }

    /// Fills in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

async fn run(
    job: FillJob,
    tx: Arc<watch::Sender<FillState>>,
    fills: &Fills,
) -> Result<(), ApiError> {
    if job.store.stat(&job.digest).await?.is_some() {
        tx.send_replace(FillState::Stored);
        return Ok(());
    }
    if fills.outgrew(&job.digest) {
        tx.send_replace(FillState::PassThrough);
        return Ok(());
    }
    // The shared store first: it has the blob, or this node takes the lease and downloads it,
    // or another node is downloading it (wait), or it does not answer (download).
    let give_up = tokio::time::Instant::now() + job.timeout / 2;
    let found = match &job.tier {
        Some(tier) => tier.find_blob(&job.digest, give_up).await,
        None => Found::Download(None),
    };
    let (size, mut body, lease, shared) = match found {
        Found::Shared(blob) => {
            let size = blob.info.size;
            let body = read::body(blob.reader, 0, size);
            (Some(size), body, None, true)
        }
        Found::Download(lease) => {
            let (size, body) = origin::get_blob(&job.upstream, &job.target, &job.digest).await?;
            let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            (size, body, lease, false)
        }
    };
    if let Some(why) = size.and_then(|_| job.room.refuses(size, &*job.store)) {
        tracing::warn!(digest = %job.digest, "not stored, passed through: {why}");
        tx.send_replace(FillState::PassThrough);
        return Ok(());
    }
    let published = tx.clone();
    let progress = Box::new(move |written: u64| {
        published.send_modify(|state| {
            if let FillState::Streaming(progress) = state {
                progress.written = written;
            }
        });
    });
    // A store that cannot take the blob (its disk full, read-only or failing) does not keep it
    // from the client: serving it matters more than keeping it, as for manifests.
    let Ingesting { mut writer, follow } = match job.store.ingest(&job.digest, size, progress).await
    {
        Ok(ingesting) => ingesting,
        Err(e) => {
            tracing::error!(digest = %job.digest, error = %e, "blob not stored, passed through");
            tx.send_replace(FillState::PassThrough);
            return Ok(());
        }
    };
    // Every store the server fills into can be followed; one that cannot is a bug to report,
    // not a reason to hold every client until the end.
    let follow = follow.ok_or_else(|| {
        ApiError::store_read(
            format_args!("blob {}", job.digest),
            "the store cannot be read while it is written",
        )
    })?;
    let recent = Arc::new(Recent::default());
    tx.send_replace(FillState::Streaming(Progress {
        follow: follow.clone(),
        size,
        written: 0,
        received: 0,
        recent: recent.clone(),
        shared,
    }));
    let source = match (&job.tier, shared) {
        (Some(tier), true) => format!("the shared store ({})", tier.store().name()),
        _ => format!("upstream {}", job.target.host),
    };
    let broken = |e: &dyn std::fmt::Display| ApiError::download_broken(&job.digest, &source, e);
    let (mut received, mut checked, mut notified) = (0u64, 0u64, 0u64);
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                // Nothing more for now: followers get what is here before the wait.
                if received > notified {
                    notified = received;
                    publish_received(&tx, received);
                }
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| broken(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // A size announced up front was checked above, and the store refuses more than it;
        // an unknown one is checked as it grows: the size limit on every frame, the free space
        // (a statvfs) every CHECK_EVERY bytes.
        received += data.len() as u64;
        if size.is_none() {
            let mut outgrown = job
                .room
                .max_size
                .filter(|max| received > *max)
                .map(|max| format!("it outgrew cache.maxSize ({})", ByteSize(max)));
            if outgrown.is_none() && received - checked >= CHECK_EVERY {
                checked = received;
                outgrown = job.room.refuses(None, &*job.store);
            }
            if let Some(why) = outgrown {
                fills.note_outgrown(&job.digest);
                return Err(ApiError::no_room(&job.digest, &source, &why));
            }
        }
        recent.push(data.clone());
        if received - notified >= NOTIFY_EVERY {
            notified = received;
            publish_received(&tx, received);
        }
        if writer.write(data).await.is_err() {
            break; // the store's own error comes from verify, below
        }
    }
    publish_received(&tx, received);
    let verified = match writer.verify().await {
        Ok(verified) => verified,
        Err(
            e @ (storage::StoreError::DigestMismatch { .. }
            | storage::StoreError::SizeMismatch { .. }),
        ) => {
            if let (Some(tier), true) = (&job.tier, shared) {
                tier.corrupt(&job.digest, &e).await;
            }
            return Err(ApiError::blob_unverified(&source, &e));
        }
        Err(e) => return Err(broken(&e)),
    };
    let written = match &*tx.borrow() {
        FillState::Streaming(p) => p.written,
        _ => 0,
    };
    tx.send_replace(FillState::Verified(Progress {
        follow,
        size: Some(written),
        written,
        received: written,
        recent,
        shared,
    }));
    // The fsync and rename: followers need not wait for them.
    match verified.commit(None).await {
        Ok(_) => {
            if let (Some(tier), false) = (&job.tier, shared) {
                tier.upload_blob(job.store.clone(), job.digest.clone(), lease);
            }
            (job.on_commit)(job.store.clone())
        }
        Err(e) => {
            tracing::error!(digest = %job.digest, error = %e, "a verified blob could not be stored")
        }
    }
    Ok(())
}

/// Tells followers that `received` bytes are in memory.
fn publish_received(tx: &watch::Sender<FillState>, received: u64) {
    tx.send_modify(|state| {
        if let FillState::Streaming(progress) = state {
            progress.received = received;
        }
    });
}

/// Waits until the fill has response headers, found the blob stored, or failed.
pub async fn wait_started(rx: &mut watch::Receiver<FillState>) -> Result<Started, ApiError> {
    loop {
        match &*rx.borrow_and_update() {
            FillState::Connecting => {}
            FillState::Stored => return Ok(Started::Stored),
            FillState::PassThrough => return Ok(Started::PassThrough),
            FillState::Streaming(p) => return Ok(Started::Streaming(p.size, p.shared)),
            FillState::Verified(p) => return Ok(Started::Streaming(Some(p.written), p.shared)),
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
    reader: Option<Box<dyn BlobRead>>,
}

impl Follower {
    /// The next chunk of the response; `None` at its end. From memory when the bytes are still
    /// there ([`Recent`]), else from the file being written.
    async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        loop {
            let (progress, end, complete) = {
                let state = self.rx.borrow_and_update();
                match &*state {
                    FillState::Connecting | FillState::Stored | FillState::PassThrough => {
                        (None, 0, false)
                    }
                    FillState::Failed(e) => return Err(e.message.clone().into()),
                    FillState::Verified(p) => {
                        let end = self.end.unwrap_or(p.written).min(p.written);
                        (Some(p.clone()), end, true)
                    }
                    FillState::Streaming(p) => {
                        // Hold back the blob's last byte until the blob is verified. A range
                        // that ends before it is released as its bytes arrive (and ends then):
                        // a client assembling ranges checks the digest of the whole.
                        let last = p.size.map_or(u64::MAX, |size| size.saturating_sub(1));
                        let end = self.end.map_or(last, |end| end.min(last));
                        let ranged_done = self.end.is_some_and(|e| e <= last && self.offset >= e);
                        if ranged_done {
                            return Ok(None);
                        }
                        (Some(p.clone()), end, false)
                    }
                }
            };
            if let Some(p) = progress {
                let in_memory = p.received.min(end);
                if self.offset < in_memory {
                    if let Some(chunk) = p.recent.get(self.offset, in_memory - self.offset) {
                        self.offset += chunk.len() as u64;
                        return Ok(Some(chunk));
                    }
                }
                let in_file = p.written.min(end);
                if self.offset < in_file {
                    let reader = self.reader.get_or_insert_with(|| (p.follow)());
                    let chunk = reader.read(self.offset, in_file - self.offset).await?;
                    self.offset += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_bytes_are_found_by_offset_until_they_fall_out_of_the_window() {
        let recent = Recent::default();
        let chunk = |n: u8, len: usize| Bytes::from(vec![n; len]);
        recent.push(chunk(1, 1000));
        recent.push(chunk(2, 500));
        assert_eq!(recent.get(0, 10), Some(chunk(1, 10)));
        assert_eq!(
            recent.get(990, 100),
            Some(chunk(1, 10)),
            "a read stops at its chunk's end"
        );
        assert_eq!(recent.get(1000, 1000), Some(chunk(2, 500)));
        assert_eq!(recent.get(1200, 50), Some(chunk(2, 50)));
        assert_eq!(recent.get(1500, 10), None, "not received yet");
        // Past the window, the oldest chunks go; the newest always stays.
        let big = RECENT_BYTES;
        recent.push(chunk(3, big));
        assert_eq!(recent.get(0, 10), None);
        assert_eq!(recent.get(1000, 10), None);
        assert_eq!(recent.get(1500 + big as u64 - 1, 10), Some(chunk(3, 1)));
        recent.push(chunk(4, big));
        assert_eq!(recent.get(1500, 1), None);
        assert_eq!(recent.get(1500 + big as u64, 1), Some(chunk(4, 1)));
    }
}
