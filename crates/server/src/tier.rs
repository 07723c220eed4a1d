//! The site's shared store behind the node's own (`outpost.sharedStore`): the second tier.
//!
//! - Reads: a node-local miss asks the shared store before any upstream (blobs in
//!   [`crate::fill`], manifests and tag records in [`crate::cache`]). Its bytes are never served
//!   unverified: blobs are copied through the node store's verified write, manifests are hashed
//!   on read. An object whose bytes do not match its digest is logged, counted
//!   (`outpost_shared_store_corrupt_total`) and removed, so the next request fetches it again.
//! - Writes: what the node fetched from an upstream (a blob once committed, a manifest, a tag
//!   record) is copied to the shared store by a background task, detached from every client.
//!   A copy that fails is written down in `<data dir>/shared-pending/` and retried every
//!   [`RETRY_EVERY`]; copies are idempotent (a blob already there is not sent again).
//! - Failures: every call has a deadline ([`shared::Settings::timeout`]); a call that fails or
//!   times out marks the tier *degraded* (a log line, `outpost_shared_store_up 0`) and the node
//!   stops asking it for [`DEGRADED_FOR`]: it serves from its own store and the upstreams as if
//!   there were no shared store. `/readyz` does not depend on it.
//! - Leases: a node that misses a blob everywhere takes the blob's lease before its download, so
//!   nodes that miss it at the same time wait for that one download ([`shared::Lease`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use oci::Digest;
use serde::{Deserialize, Serialize};
use shared::{LeaseState, SharedStore};
use storage::{BlobInfo, ContentStore, OpenBlob, StoreError, TagEntry};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How long a degraded shared store is left alone before it is asked again.
pub const DEGRADED_FOR: Duration = Duration::from_secs(15);
/// How often failed uploads are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);
/// How long a blob lease lasts; the holder's download and upload must fit in it (the waiting
/// nodes download themselves after it).
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// How often a node waiting for another's download looks for the blob.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The shared tier of one node.
pub struct Tier {
    store: SharedStore,
    node: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Until when the tier is left alone; `None`: healthy.
    degraded_until: Mutex<Option<Instant>>,
    up: AtomicBool,
    /// Woken when the store answers again after being degraded: pending copies go out then.
    recovered: Arc<tokio::sync::Notify>,
    pending: Pending,
}

/// A copy to the shared store, written down when it failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Copy {
    Blob { digest: String },
    Tag { repository: String, tag: String },
}

/// The shared store client's settings from `outpost.sharedStore`.
pub fn shared_settings(settings: &config::SharedStoreConfig) -> shared::Settings {
    shared::Settings {
        endpoint: settings.endpoint.clone(),
        region: settings.region.clone(),
        bucket: settings.bucket.clone(),
        access_key_id: settings.access_key_id.clone(),
        secret_access_key: settings.secret_access_key.clone(),
        prefix: settings.prefix.clone(),
        timeout: settings.timeout,
    }
}

/// What the fill should read a blob from.
pub enum Found {
    /// The shared store has it.
    Shared(OpenBlob),
    /// Nobody has it: download it from the upstream (holding the lease, when one was taken).
    Download(Option<shared::Lease>),
}

impl Tier {
    pub fn new(
        settings: &config::SharedStoreConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Tier>, StoreError> {
        let settings = shared_settings(settings);
        let store = SharedStore::new(&settings)?;
        let pending = Pending::open(&data_dir.join("shared-pending"))?;
        metrics.shared_up(true);
        metrics.shared_pending(pending.len());
        let tier = Arc::new(Tier {
            store,
            node: node_name(),
            timeout: settings.timeout,
            metrics,
            degraded_until: Mutex::new(None),
            up: AtomicBool::new(true),
            recovered: Arc::new(tokio::sync::Notify::new()),
            pending,
        });
        tokio::spawn(retry_loop(Arc::downgrade(&tier), tier.recovered.clone()));
        Ok(tier)
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Whether the tier may be asked now (not degraded).
    fn available(&self) -> bool {
        let mut until = lock(&self.degraded_until);
        match *until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                *until = None;
                true
            }
            None => true,
        }
    }

    fn degraded(&self, operation: &'static str, error: &dyn std::fmt::Display) {
        self.metrics.shared_error(operation);
        *lock(&self.degraded_until) = Some(Instant::now() + DEGRADED_FOR);
        if self.up.swap(false, Ordering::Relaxed) {
            self.metrics.shared_up(false);
            tracing::warn!(
                shared_store = %self.store.name(),
                %operation,
                error = %error,
                "the shared store is degraded: serving from this node's store and the upstreams \
                 for {DEGRADED_FOR:?} before asking it again"
            );
        } else {
            tracing::debug!(%operation, error = %error, "shared store call failed");
        }
    }

    fn healthy(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            self.metrics.shared_up(true);
            tracing::info!(shared_store = %self.store.name(), "the shared store answers again");
            self.recovered.notify_one();
        }
    }

    /// Runs one call with the deadline; `None` when the tier is degraded, the call failed or
    /// timed out (then the tier is degraded).
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        self.attempt(operation, call, |_| false)
            .await
            .ok()
            .flatten()
    }

    /// [`Tier::call`], except that an error for which `spare` holds is not the shared store
    /// failing (e.g. bytes that do not match their digest): it is returned to the caller and
    /// leaves the tier's health as it was.
    async fn attempt<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
        spare: impl Fn(&StoreError) -> bool,
    ) -> Result<Option<T>, StoreError> {
        if !self.available() {
            return Ok(None);
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.healthy();
                Ok(Some(value))
            }
            Ok(Err(e)) if spare(&e) => Err(e),
            Ok(Err(e)) => {
                self.degraded(operation, &e);
                Ok(None)
            }
            Err(_) => {
                self.degraded(
                    operation,
                    &format_args!("no answer within {:?}", self.timeout),
                );
                Ok(None)
            }
        }
    }

    /// A blob's bytes in the shared store, to copy into the node's store; or, when it is not
    /// there, whether this node downloads it (it took the lease, or nobody answers leases) —
    /// after waiting while another node downloads it.
    pub async fn find_blob(&self, digest: &Digest, give_up: Instant) -> Found {
        loop {
            match self.call("open", self.store.open(digest)).await {
                Some(Some(blob)) => return Found::Shared(blob),
                Some(None) => {}
                None => return Found::Download(None),
            }
            let lease = self.store.lease(digest, &self.node, LEASE_TTL);
            let until = match self.call("lease", lease).await {
                Some(LeaseState::Acquired(lease)) => return Found::Download(Some(lease)),
                Some(LeaseState::HeldElsewhere { holder, until }) => {
                    tracing::info!(%digest, %holder, "another node is downloading this blob: waiting for it");
                    until
                }
                None => return Found::Download(None),
            };
            // Wait for the blob to land, or the lease to end.
            loop {
                if Instant::now() >= give_up {
                    return Found::Download(None);
                }
                tokio::time::sleep(POLL_EVERY).await;
                match self.call("stat", self.store.stat(digest)).await {
                    Some(Some(_)) => break,
                    Some(None) if SystemTime::now() < until => {}
                    Some(None) => break,
                    None => return Found::Download(None),
                }
            }
        }
    }

    /// Bytes read from the shared store did not match `digest`: remove the object.
    pub async fn corrupt(&self, digest: &Digest, error: &(dyn std::fmt::Display + Sync)) {
        self.metrics.shared_corrupt();
        tracing::error!(
            %digest,
            shared_store = %self.store.name(),
            error = %error,
            "a blob in the shared store does not match its digest: removing it; it will be \
             fetched from the upstream again"
        );
        let _ = self.call("remove", self.store.remove(digest)).await;
    }

    /// A manifest (small blob) from the shared store, verified.
    pub async fn manifest(&self, digest: &Digest) -> Option<(BlobInfo, Bytes)> {
        let read = self.store.read_all(digest, oci::MAX_MANIFEST_BYTES as u64);
        let mismatch = |e: &StoreError| matches!(e, StoreError::DigestMismatch { .. });
        match self.attempt("read_all", read, mismatch).await {
            Ok(found) => found
                .flatten()
                .filter(|(info, _)| info.media_type.is_some()),
            Err(e) => {
                self.corrupt(digest, &e).await;
                None
            }
        }
    }

    /// A tag record of the shared store.
    pub async fn tag(&self, repository: &str, tag: &str) -> Option<TagEntry> {
        self.call("tag", self.store.tag(repository, tag))
            .await
            .flatten()
    }

    /// Copies a committed blob from the node's store, in the background; `lease` (this node's,
    /// for the download) is released once the copy is done.
    pub fn upload_blob(
        self: &Arc<Self>,
        local: Arc<dyn ContentStore>,
        digest: Digest,
        lease: Option<shared::Lease>,
    ) {
        let tier = self.clone();
        tokio::spawn(async move {
            let copy = Copy::Blob {
                digest: digest.to_string(),
            };
            let ok = tier.copy_blob(&*local, &digest).await;
            if let Some(lease) = lease {
                lease.release().await;
            }
            tier.finish(copy, ok);
        });
    }

    /// Copies a manifest and (when given) its tag record, in the background.
    pub fn upload_manifest(
        self: &Arc<Self>,
        local: Arc<dyn ContentStore>,
        digest: Digest,
        tag: Option<(String, String)>,
    ) {
        let tier = self.clone();
        tokio::spawn(async move {
            let ok = tier.copy_blob(&*local, &digest).await;
            tier.finish(
                Copy::Blob {
                    digest: digest.to_string(),
                },
                ok,
            );
            if let Some((repository, tag)) = tag {
                let ok = ok && tier.copy_tag(&*local, &repository, &tag).await;
                tier.finish(Copy::Tag { repository, tag }, ok);
            }
        });
    }

    /// Copies a tag record (a revalidation moved its check time), in the background.
    pub fn upload_tag(self: &Arc<Self>, local: Arc<dyn ContentStore>, repository: &str, tag: &str) {
        let tier = self.clone();
        let (repository, tag) = (repository.to_owned(), tag.to_owned());
        tokio::spawn(async move {
            let ok = tier.copy_tag(&*local, &repository, &tag).await;
            tier.finish(Copy::Tag { repository, tag }, ok);
        });
    }

    fn finish(&self, copy: Copy, ok: bool) {
        if ok {
            self.pending.remove(&copy);
        } else {
            self.metrics.shared_upload("failed");
            self.pending.add(&copy);
        }
        self.metrics.shared_pending(self.pending.len());
    }

    /// Copies one blob from the node's store; `true` when the shared store has it now (or the
    /// node no longer does: nothing left to copy).
    async fn copy_blob(&self, local: &dyn ContentStore, digest: &Digest) -> bool {
        let Ok(Some(ours)) = local.stat(digest).await else {
            return true; // evicted meanwhile: nothing left to copy
        };
        match self.call("stat", self.store.stat(digest)).await {
            // There, with its media type when ours knows it.
            Some(Some(theirs)) if theirs.media_type.is_some() || ours.media_type.is_none() => {
                self.metrics.shared_upload("present");
                return true;
            }
            Some(_) => {}
            None => return false,
        }
        let opened = match local.open(digest).await {
            Ok(Some(opened)) => opened,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "could not read a blob to copy it to the shared store");
                return false;
            }
        };
        // A whole upload may take long: the deadline applies to each step inside the client.
        let size = opened.info.size;
        let started = Instant::now();
        match copy(opened, &self.store).await {
            Ok(()) => {
                tracing::info!(%digest, bytes = size, seconds = started.elapsed().as_secs_f64(), "copied to the shared store");
                self.healthy();
                self.metrics.shared_upload("ok");
                true
            }
            Err(e) => {
                self.degraded("upload", &e);
                false
            }
        }
    }

    async fn copy_tag(&self, local: &dyn ContentStore, repository: &str, tag: &str) -> bool {
        let entry = match local.tag(repository, tag).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(%repository, %tag, error = %e, "could not read a tag to copy it to the shared store");
                return false;
            }
        };
        // Keep the newest check: another node may have confirmed the tag later.
        if let Some(Some(theirs)) = self.call("tag", self.store.tag(repository, tag)).await {
            if theirs.digest == entry.digest && theirs.checked_at >= entry.checked_at {
                return true;
            }
        }
        let put = self
            .store
            .put_tag(repository, tag, &entry.digest, entry.checked_at);
        self.call("put_tag", put).await.is_some()
    }

    /// Tries every pending copy once.
    async fn retry(&self, local: &Arc<dyn ContentStore>) {
        for copy in self.pending.all() {
            if !self.available() {
                return;
            }
            let ok = match &copy {
                Copy::Blob { digest } => match digest.parse::<Digest>() {
                    Ok(digest) => self.copy_blob(&**local, &digest).await,
                    Err(_) => true,
                },
                Copy::Tag { repository, tag } => self.copy_tag(&**local, repository, tag).await,
            };
            self.finish(copy, ok);
        }
    }

    /// The node's store, once the cache has opened it (for the retry loop).
    pub fn attach(&self, local: Arc<dyn ContentStore>) {
        *lock(&self.pending.local) = Some(local);
    }
}

/// Streams an opened node-store blob into the shared store (verified there again).
async fn copy(opened: OpenBlob, shared: &SharedStore) -> Result<(), StoreError> {
    let OpenBlob { info, mut reader } = opened;
    let progress = Box::new(|_| {});
    let ingesting = shared
        .ingest(&info.digest, Some(info.size), progress)
        .await?;
    let mut writer = ingesting.writer;
    let mut offset = 0;
    while offset < info.size {
        let chunk = reader
            .read(offset, (info.size - offset).min(1 << 20))
            .await
            .map_err(|e| StoreError::Remote {
                store: "this node's store".to_owned(),
                action: "read a blob to copy".to_owned(),
                reason: e.to_string(),
            })?;
        offset += chunk.len() as u64;
        writer.write(chunk).await?;
    }
    let verified = writer.verify().await?;
    verified.commit(info.media_type).await?;
    Ok(())
}

/// Retries pending copies every [`RETRY_EVERY`], and as soon as the store answers again.
async fn retry_loop(tier: std::sync::Weak<Tier>, recovered: Arc<tokio::sync::Notify>) {
    let mut interval = tokio::time::interval(RETRY_EVERY);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = recovered.notified() => {}
        }
        let Some(tier) = tier.upgrade() else {
            return;
        };
        let local = lock(&tier.pending.local).clone();
        if let Some(local) = local {
            if tier.pending.len() > 0 {
                tier.retry(&local).await;
            }
        }
    }
}

/// This node's name in leases: its host name and process id.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".to_owned());
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{host}/{}/{nonce:08x}", std::process::id())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The copies that failed, one small file each (named by a hash of the record, so a copy is
/// written down once), kept in memory too.
struct Pending {
    dir: PathBuf,
    copies: Mutex<BTreeSet<Copy>>,
    local: Mutex<Option<Arc<dyn ContentStore>>>,
}

impl Pending {
    fn open(dir: &Path) -> Result<Pending, StoreError> {
        let io = |action, e| StoreError::Io {
            action,
            path: dir.to_owned(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        let mut copies = BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("read directory", e))? {
            let path = entry.map_err(|e| io("read directory", e))?.path();
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Copy>(&b).ok())
            {
                Some(copy) => {
                    copies.insert(copy);
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable pending upload record");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(Pending {
            dir: dir.to_owned(),
            copies: Mutex::new(copies),
            local: Mutex::new(None),
        })
    }

    fn file(&self, copy: &Copy) -> PathBuf {
        let json = serde_json::to_vec(copy).expect("a copy serializes");
        let name = Digest::compute(oci::Algorithm::Sha256, &json);
        self.dir.join(name.hex())
    }

    fn add(&self, copy: &Copy) {
        if lock(&self.copies).insert(copy.clone()) {
            let json = serde_json::to_vec(copy).expect("a copy serializes");
            if let Err(e) = std::fs::write(self.file(copy), json) {
                tracing::warn!(error = %e, "could not write down a pending upload; it is retried while this process runs");
            }
        }
    }

    fn remove(&self, copy: &Copy) {
        if lock(&self.copies).remove(copy) {
            let _ = std::fs::remove_file(self.file(copy));
        }
    }

    fn all(&self) -> Vec<Copy> {
        lock(&self.copies).iter().cloned().collect()
    }

    fn len(&self) -> usize {
        lock(&self.copies).len()
    }
}
