//! The cache policy over the `storage` crate (the local registry, standing in for Harbor):
//!
//! - blobs and manifests asked for by digest are immutable: once stored, they are served without
//!   asking the upstream;
//! - a tag checked less than `cache.tagTtl` ago is answered from the store; after that it is
//!   revalidated with a `HEAD` upstream, and an unchanged digest only refreshes the check time;
//! - when the upstream is unavailable ([`ApiError::is_unavailable`]: unreachable, timed out,
//!   5xx, 429), a stored manifest is served anyway (stale-if-error, with a `Warning` header), and
//!   `tags/list` falls back to the tags known locally;
//! - an upstream that asks to wait (`Retry-After` on 429 or 503) is not asked again for that
//!   repository until the time has passed (see [`crate::backoff`]);
//! - infrastructure images (`outpost.infrastructureImages`) pass through and are never stored;
//! - uncached blobs are fetched once, however many clients ask (see [`crate::fill`]).
//!
//! The cache talks to its store only through [`ContentStore`]; the embedded store runs its
//! blocking work on tokio's blocking pool ([`BlockingPool`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Response};
use oci::{Digest, MediaType, Reference, Source, Target};
use storage::{ContentStore, Embedded, Offload, Store};

use tokio::sync::watch;
use upstream::Upstream;

use crate::backoff::Backoff;
use crate::body::{empty, Body};
use crate::error::ApiError;
use crate::fill::{self, FillJob, Fills, Room, Started};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::origin;
use crate::read;
use crate::referrers;
use crate::response::{self, ByteRange};
use crate::tier::Tier;

/// How often batched last-access times are written to the index.
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Blocking store work on tokio's blocking pool.
struct BlockingPool;

impl Offload for BlockingPool {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        tokio::task::spawn_blocking(job);
    }
}

/// The local registry.
pub struct Cache {
    store: Arc<dyn ContentStore>,
    /// The site's shared store behind `store` (`outpost.sharedStore`).
    tier: Option<Arc<Tier>>,
    fills: Arc<Fills>,
    backoff: Backoff,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    config: Arc<config::Config>,
    /// The wall clock at `started`; "now" is `epoch + started.elapsed()`, so tests can move
    /// time with `tokio::time::pause` and `advance`.
    epoch: SystemTime,
    started: tokio::time::Instant,
    /// Stops the background flush task when the cache is dropped.
    _stop: watch::Sender<()>,
}

impl Cache {
    /// Opens (and reconciles) the store in `config.data_dir`. Call within a tokio runtime.
    pub async fn open(
        config: Arc<config::Config>,
        upstream: Upstream,
        metrics: Arc<Metrics>,
    ) -> Result<Cache, storage::StoreError> {
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| storage::StoreError::Io {
                action: "open the store in",
                path: config.data_dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let store: Arc<dyn ContentStore> = Arc::new(Embedded::new(store, Arc::new(BlockingPool)));
        let tier = match &config.shared_store {
            Some(settings) => {
                let tier = Tier::new(settings, &config.data_dir, metrics.clone())?;
                tier.attach(store.clone());
                tracing::info!(shared_store = %tier.store().name(), "shared store configured");
                Some(tier)
            }
            None => None,
        };
        let (stop, mut stopped) = watch::channel(());
        let flusher = store.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.changed() => break,
                }
                if let Err(e) = flusher.flush().await {
                    tracing::warn!(error = %e, "could not save blob access times");
                }
            }
            let _ = flusher.flush().await;
        });
        Ok(Cache {
            store,
            tier,
            fills: Arc::new(Fills::default()),
            backoff: Backoff::default(),
            upstream,
            metrics,
            config,
            epoch: SystemTime::now(),
            started: tokio::time::Instant::now(),
            _stop: stop,
        })
    }

    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// The shared store, when one is configured.
    pub fn shared(&self) -> Option<&shared::SharedStore> {
        self.tier.as_deref().map(Tier::store)
    }

    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    fn now(&self) -> SystemTime {
        self.epoch + self.started.elapsed()
    }

    /// Whether a tag (or referrers) record was checked less than `cache.tagTtl` ago.
    fn fresh(&self, entry: &storage::TagEntry) -> bool {
        let age = self
            .now()
            .duration_since(entry.checked_at)
            .unwrap_or_default();
        age < self.config.cache.tag_ttl
    }

    /// Asks the upstream of `target` (`request`), unless the configuration does not allow it
    /// ([`config::Config::check_upstream`]) or it asked to wait; remembers when it asks to.
    /// Boxed: the state of an upstream call (kilobytes) is allocated when one is made, so the
    /// future of a request answered from the store stays small.
    pub fn ask<'a, T: Send + 'a>(
        &'a self,
        target: &'a Target,
        request: impl Future<Output = Result<T, ApiError>> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            self.config
                .check_upstream(&target.host)
                .map_err(ApiError::upstream_not_allowed)?;
            self.backoff.check(target)?;
            let result = request.await;
            if let Err(error) = &result {
                self.backoff.note(target, error);
            }
            result
        })
    }

    /// Infrastructure images pass through and are never stored.
    pub fn is_infrastructure(&self, source: &Source) -> bool {
        self.config.is_infrastructure(source)
    }

    pub async fn repositories(&self) -> Result<Vec<String>, ApiError> {
        Ok(self.store.repositories().await?)
    }

    pub async fn manifest(
        &self,
        source: &Source,
        target: &Target,
        reference: &Reference,
        accept: HeaderValue,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let fetch = || {
            self.ask(
                target,
                origin::fetch_manifest(&self.upstream, target, reference, accept.clone()),
            )
        };
        if self.is_infrastructure(source) {
            let manifest = fetch().await?;
            return Ok(response::mark(
                response::manifest(&manifest, head),
                "pass-through",
            ));
        }
        let repo = source.to_string();
        let tag = match reference {
            Reference::Digest(digest) => {
                let stored = self.stored_manifest(digest).await?;
                if let Some(manifest) = stored.as_ref().filter(|m| accepts(&accept, &m.media_type))
                {
                    return Ok(response::mark(response::manifest(manifest, head), "hit"));
                }
                let shared = self.shared_manifest(digest).await?;
                if let Some(manifest) = shared.filter(|m| accepts(&accept, &m.media_type)) {
                    self.store.note_repository(&repo).await?;
                    return Ok(response::mark(
                        response::manifest(&manifest, head),
                        "shared",
                    ));
                }
                let manifest = match fetch().await {
                    Ok(manifest) => manifest,
                    // The digest pins the bytes: offline, the stored manifest (of a type the
                    // client did not list) beats no answer.
                    Err(e) => match &stored {
                        Some(stored) if e.is_unavailable() => {
                            return Ok(response::stale(stored, head, &e))
                        }
                        _ => return Err(e),
                    },
                };
                let stored = self.store_manifest(&repo, None, &manifest).await?;
                return Ok(response::mark(
                    response::manifest(&manifest, head),
                    miss(stored),
                ));
            }
            Reference::Tag(tag) => tag.as_str(),
        };
        let (entry, from_shared) = self.tag_entry(&repo, tag).await?;
        let stored = match &entry {
            Some(entry) => self.stored_manifest(&entry.digest).await?,
            None => None,
        };
        // A client that does not accept the stored type gets the upstream's answer.
        let stored = stored.filter(|m| accepts(&accept, &m.media_type));
        let Some((entry, stored)) = entry.zip(stored) else {
            let manifest = fetch().await?;
            let tag = self
                .stands_for_the_tag(target, reference, &accept, &manifest, None)
                .await
                .then_some(tag);
            let stored = self.store_manifest(&repo, tag, &manifest).await?;
            return Ok(response::mark(
                response::manifest(&manifest, head),
                miss(stored),
            ));
        };
        if self.fresh(&entry) {
            let outcome = if from_shared { "shared" } else { "hit" };
            return Ok(response::mark(response::manifest(&stored, head), outcome));
        }
        // The record stands for what a client taking every type gets: checked as such.
        let current = self
            .ask(
                target,
                origin::revalidate(&self.upstream, target, reference, &every_type()),
            )
            .await;
        let (fetched, current) = match current {
            Ok(Some(digest)) if digest == stored.digest => {
                self.store
                    .put_tag(&repo, tag, &stored.digest, self.now())
                    .await?;
                if let Some(tier) = &self.tier {
                    tier.upload_tag(self.store.clone(), &repo, tag);
                }
                return Ok(response::mark(
                    response::manifest(&stored, head),
                    "revalidated",
                ));
            }
            Ok(current) => (fetch().await, current),
            Err(e) => (Err(e), None),
        };
        match fetched {
            Ok(manifest) => {
                let tag = self
                    .stands_for_the_tag(target, reference, &accept, &manifest, current)
                    .await
                    .then_some(tag);
                let stored = self.store_manifest(&repo, tag, &manifest).await?;
                Ok(response::mark(
                    response::manifest(&manifest, head),
                    miss(stored),
                ))
            }
            Err(e) if e.is_unavailable() => Ok(response::stale(&stored, head, &e)),
            Err(e) => Err(e),
        }
    }

    /// The tag record of `repo:tag` and whether it came from the shared store: the node's own,
    /// unless it has none or an expired one and the shared store has a newer one whose manifest
    /// is at hand (then that one is stored locally and used).
    async fn tag_entry(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<(Option<storage::TagEntry>, bool), ApiError> {
        let ours = self.store.tag(repo, tag).await?;
        let Some(tier) = &self.tier else {
            return Ok((ours, false));
        };
        if ours.as_ref().is_some_and(|e| self.fresh(e)) {
            return Ok((ours, false));
        }
        let Some(theirs) = tier.tag(repo, tag).await else {
            return Ok((ours, false));
        };
        if ours
            .as_ref()
            .is_some_and(|o| o.checked_at >= theirs.checked_at)
        {
            return Ok((ours, false));
        }
        let known = self.stored_manifest(&theirs.digest).await?.is_some()
            || self.shared_manifest(&theirs.digest).await?.is_some();
        if !known {
            return Ok((ours, false));
        }
        self.store
            .put_tag(repo, tag, &theirs.digest, theirs.checked_at)
            .await?;
        self.store.note_repository(repo).await?;
        Ok((Some(theirs), true))
    }

    /// A manifest from the shared store (verified), stored in the node's store too; `None` when
    /// there is no shared store, it does not have it or does not answer.
    async fn shared_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, ApiError> {
        let Some(tier) = &self.tier else {
            return Ok(None);
        };
        let Some((info, bytes)) = tier.manifest(digest).await else {
            return Ok(None);
        };
        let Some(media_type) = info.media_type else {
            return Ok(None);
        };
        let manifest = Manifest {
            bytes,
            media_type,
            digest: info.digest,
        };
        if self
            .room()
            .refuses(Some(manifest.bytes.len() as u64), &*self.store)
            .is_none()
        {
            let m = manifest.clone();
            if let Err(e) = self.store.put(&m.digest, m.bytes, Some(m.media_type)).await {
                tracing::warn!(%digest, error = %e, "a manifest from the shared store was not stored");
            }
        }
        Ok(Some(manifest))
    }

    /// A stored manifest, `None` when it is not stored or its media type is unknown (a blob
    /// re-indexed from a bare file at startup: fetched again).
    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, ApiError> {
        let limit = oci::MAX_MANIFEST_BYTES as u64;
        let Some((info, bytes)) = self.store.read_manifest(digest, limit).await? else {
            return Ok(None);
        };
        Ok(info.media_type.map(|media_type| Manifest {
            bytes,
            media_type,
            digest: info.digest,
        }))
    }

    /// Whether `manifest`, the upstream's answer by tag to a client sending `accept`, may become
    /// the tag's record, which is served to every client. An upstream answers a client that
    /// takes no index with one platform's manifest picked from the index (Distribution and
    /// Docker Hub pick linux/amd64); recorded, that pick would be served by tag to every
    /// platform. So such an answer is recorded only when the tag's digest for a client taking
    /// every type (`every_type_digest`, else asked with a `HEAD`) is the same (the tag is that
    /// one image); any doubt leaves the tag unrecorded.
    async fn stands_for_the_tag(
        &self,
        target: &Target,
        reference: &Reference,
        accept: &HeaderValue,
        manifest: &Manifest,
        every_type_digest: Option<Digest>,
    ) -> bool {
        if answers_every_client(accept, &manifest.media_type) {
            return true;
        }
        let digest = match every_type_digest {
            Some(digest) => Some(digest),
            None => {
                let every = every_type();
                let head = origin::revalidate(&self.upstream, target, reference, &every);
                self.ask(target, head).await.ok().flatten()
            }
        };
        digest.as_ref() == Some(&manifest.digest)
    }

    /// Stores a manifest (and its tag); `false` when it could not be stored (no room, or the
    /// store failed: logged), so it is passed through: serving it matters more than keeping it.
    async fn store_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        manifest: &Manifest,
    ) -> Result<bool, ApiError> {
        let size = Some(manifest.bytes.len() as u64);
        if let Some(why) = self.room().refuses(size, &*self.store) {
            tracing::warn!(digest = %manifest.digest, "manifest not stored, passed through: {why}");
            return Ok(false);
        }
        let m = manifest.clone();
        if let Err(e) = self.store.put(&m.digest, m.bytes, Some(m.media_type)).await {
            tracing::error!(digest = %manifest.digest, error = %e, "manifest not stored, passed through");
            return Ok(false);
        }
        if let Some(tag) = tag {
            self.store
                .put_tag(repo, tag, &manifest.digest, self.now())
                .await?;
        }
        self.store.note_repository(repo).await?;
        if let Some(tier) = &self.tier {
            let tag = tag.map(|t| (repo.to_owned(), t.to_owned()));
            tier.upload_manifest(self.store.clone(), manifest.digest.clone(), tag);
        }
        Ok(true)
    }

    /// The referrers index of `subject`, stored like a tag: fresh → from the store; expired →
    /// asked again; upstream unavailable → the stored one, stale. Stored unfiltered, filtered
    /// per request.
    pub async fn referrers(
        &self,
        source: &Source,
        target: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let fetch = || {
            self.ask(
                target,
                origin::fetch_referrers(&self.upstream, target, subject),
            )
        };
        if self.is_infrastructure(source) {
            let index = fetch().await?;
            let response = answer_referrers(&index, artifact_type, head, target)?;
            return Ok(response::mark(response, "pass-through"));
        }
        let repo = source.to_string();
        let entry = self.store.referrers(&repo, subject).await?;
        let limit = oci::MAX_MANIFEST_BYTES as u64;
        let stored = match &entry {
            Some(entry) => self.store.read_all(&entry.digest, limit).await?,
            None => None,
        };
        if let (Some(entry), Some((_, bytes))) = (&entry, &stored) {
            if self.fresh(entry) {
                let response = answer_referrers(bytes, artifact_type, head, target)?;
                return Ok(response::mark(response, "hit"));
            }
        }
        match fetch().await {
            Ok(index) => {
                let digest = Digest::compute(oci::Algorithm::Sha256, &index);
                let unchanged = stored
                    .as_ref()
                    .is_some_and(|(info, _)| info.digest == digest);
                let kept = self
                    .store_referrers(&repo, subject, &digest, &index)
                    .await?;
                let response = answer_referrers(&index, artifact_type, head, target)?;
                let outcome = if unchanged { "revalidated" } else { miss(kept) };
                Ok(response::mark(response, outcome))
            }
            Err(e) if e.is_unavailable() => {
                let Some((_, bytes)) = stored else {
                    return Err(e);
                };
                tracing::warn!(%subject, error = %e.message, "serving stale referrers");
                let mut response = answer_referrers(&bytes, artifact_type, head, target)?;
                response.headers_mut().insert(
                    http::header::WARNING,
                    HeaderValue::from_static(response::STALE_WARNING),
                );
                Ok(response::mark(response, "stale"))
            }
            Err(e) => Err(e),
        }
    }

    /// Stores a referrers index and points the subject's record at it; `false` when it could
    /// not be stored (no room, or the store failed: logged), so it is only served.
    async fn store_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        digest: &Digest,
        index: &bytes::Bytes,
    ) -> Result<bool, ApiError> {
        if let Some(why) = self.room().refuses(Some(index.len() as u64), &*self.store) {
            tracing::warn!(%subject, "referrers not stored, passed through: {why}");
            return Ok(false);
        }
        let media_type = MediaType::parse(oci::OCI_INDEX).ok();
        if let Err(e) = self.store.put(digest, index.clone(), media_type).await {
            tracing::error!(%subject, error = %e, "referrers not stored, passed through");
            return Ok(false);
        }
        self.store
            .put_referrers(repo, subject, digest, self.now())
            .await?;
        self.store.note_repository(repo).await?;
        Ok(true)
    }

    pub async fn blob(
        &self,
        source: &Source,
        target: &Target,
        digest: &Digest,
        range: Option<HeaderValue>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        if self.is_infrastructure(source) {
            let pass = origin::pass_blob(&self.upstream, target, digest, range, head);
            let response = self.ask(target, pass).await?;
            return Ok(response::mark(response, "pass-through"));
        }
        loop {
            if let Some(response) = self.stored_blob(digest, range.as_ref(), head).await? {
                return Ok(response::mark(response, "hit"));
            }
            if head {
                // A HEAD does not start a download; one in flight knows the size already.
                if let Some(size) = self.fills.size_of(digest) {
                    let response = response::blob(digest, None, Some(size), empty());
                    return Ok(response::mark(response, "hit"));
                }
                let pass = origin::pass_blob(&self.upstream, target, digest, None, true);
                let response = self.ask(target, pass).await?;
                return Ok(response::mark(response, "miss"));
            }
            self.config
                .check_upstream(&target.host)
                .map_err(ApiError::upstream_not_allowed)?;
            self.backoff.check(target)?;
            let mut rx = self.fills.join(self.fill_job(target, digest));
            let started = fill::wait_started(&mut rx).await;
            if let Err(error) = &started {
                self.backoff.note(target, error);
            }
            let (size, shared) = match started? {
                Started::Streaming(size, shared) => (size, shared),
                Started::Stored => continue, // stored meanwhile
                Started::PassThrough => {
                    let pass = origin::pass_blob(&self.upstream, target, digest, range, false);
                    let response = self.ask(target, pass).await?;
                    return Ok(response::mark(response, "pass-through"));
                }
            };
            self.store.note_repository(&source.to_string()).await?;
            let range = match size {
                Some(size) => match response::parse_range(range.as_ref(), size) {
                    ByteRange::Unsatisfiable => return Err(ApiError::range_not_satisfiable(size)),
                    ByteRange::Part(start, end) => Some((start, end)),
                    ByteRange::Full => None,
                },
                None => None,
            };
            let body = match range {
                Some((start, end)) => fill::follower_body(rx, start, Some(end)),
                None => fill::follower_body(rx, 0, size),
            };
            return Ok(response::mark(
                response::blob(digest, range, size, body),
                if shared { "shared" } else { "miss" },
            ));
        }
    }

    /// The fill of `digest` from `target`; once committed, the size limit is applied.
    fn fill_job(&self, target: &Target, digest: &Digest) -> FillJob {
        let max_size = self.config.cache.max_size;
        let metrics = self.metrics.clone();
        FillJob {
            upstream: self.upstream.clone(),
            store: self.store.clone(),
            target: target.clone(),
            digest: digest.clone(),
            timeout: self.config.cache.fill_timeout,
            room: self.room(),
            tier: self.tier.clone(),
            on_commit: Box::new(move |store: Arc<dyn ContentStore>| {
                if let Some(max) = max_size.filter(|max| store.usage().bytes > *max) {
                    tokio::spawn(async move {
                        match store.evict(max).await {
                            Ok(report) => {
                                metrics.evicted(&report);
                                tracing::info!("cache.maxSize: {report}");
                            }
                            Err(e) => tracing::error!(error = %e, "cache.maxSize: eviction failed"),
                        }
                    });
                }
            }),
        }
    }

    /// Why a blob or manifest of `size` bytes would not be stored now (`cache.maxSize`,
    /// `cache.minFree`); `None` when it fits.
    pub fn refuses_room(&self, size: u64) -> Option<String> {
        self.room().refuses(Some(size), &*self.store)
    }

    /// The room fills may use: `cache.maxSize` and `cache.minFree`.
    fn room(&self) -> Room {
        Room {
            max_size: self.config.cache.max_size,
            min_free: self.config.cache.min_free,
        }
    }

    /// A stored blob's response, or `None` if it is not stored.
    async fn stored_blob(
        &self,
        digest: &Digest,
        range: Option<&HeaderValue>,
        head: bool,
    ) -> Result<Option<Response<Body>>, ApiError> {
        let Some(storage::OpenBlob { info, reader }) = self.store.open(digest).await? else {
            return Ok(None);
        };
        let (start, end) = match response::parse_range(range, info.size) {
            ByteRange::Unsatisfiable => return Err(ApiError::range_not_satisfiable(info.size)),
            ByteRange::Part(start, end) => (start, end),
            ByteRange::Full => (0, info.size),
        };
        let partial = (end - start != info.size).then_some((start, end));
        let body = if head {
            empty()
        } else {
            read::body(reader, start, end)
        };
        Ok(Some(response::blob(digest, partial, Some(info.size), body)))
    }

    /// The tags of a repository known locally, for when the upstream is unavailable: `error`
    /// when none are known.
    /// The tags of `source` known locally, for `tags/list` while the upstream is unavailable
    /// (`error`, returned when none are known).
    pub async fn local_tags(
        &self,
        source: &Source,
        error: ApiError,
    ) -> Result<Vec<String>, ApiError> {
        let tags = self.store.tags(&source.to_string()).await?;
        if tags.is_empty() {
            return Err(error);
        }
        tracing::warn!(repository = %source, error = %error.message, "serving the locally known tags");
        Ok(tags)
    }
}

/// The response to a referrers request from a checked index (the stored one, or the
/// upstream's): filtered by `artifact_type` when asked.
pub fn answer_referrers(
    index: &bytes::Bytes,
    artifact_type: Option<&str>,
    head: bool,
    target: &Target,
) -> Result<Response<Body>, ApiError> {
    let (index, filtered) = referrers::answer(index, artifact_type).map_err(|e| {
        ApiError::invalid_answer(target, format_args!("an invalid referrers index ({e})"))
    })?;
    Ok(response::referrers(index, filtered, head))
}

/// The cache outcome of a manifest fetched upstream: stored, or passed through unstored.
fn miss(stored: bool) -> &'static str {
    if stored {
        "miss"
    } else {
        "pass-through"
    }
}

/// Whether an `Accept` value lists `media_type` (or a wildcard).
fn accepts(accept: &HeaderValue, media_type: &MediaType) -> bool {
    accepts_essence(accept, &media_type.essence())
}

fn accepts_essence(accept: &HeaderValue, wanted: &str) -> bool {
    accept.to_str().is_ok_and(|accept| {
        accept.split(',').any(|item| {
            let item = item.split(';').next().unwrap_or("").trim();
            item == "*/*" || item.eq_ignore_ascii_case(wanted)
        })
    })
}

/// Whether the upstream's answer of `media_type` to a client sending `accept` is surely what
/// the tag points to for every client: an index, or the answer to a client that takes both
/// kinds of index.
fn answers_every_client(accept: &HeaderValue, media_type: &MediaType) -> bool {
    media_type.is_index()
        || (accepts_essence(accept, oci::OCI_INDEX)
            && accepts_essence(accept, oci::DOCKER_MANIFEST_LIST))
}

/// The `Accept` of a client that takes every manifest type.
fn every_type() -> HeaderValue {
    HeaderValue::from_static(oci::MANIFEST_TYPES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_the_stored_type() {
        let index = MediaType::parse(oci::OCI_INDEX).unwrap();
        let accept = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts(&accept(oci::MANIFEST_TYPES), &index));
        assert!(accepts(&accept("*/*"), &index));
        assert!(accepts(
            &accept("application/vnd.oci.image.index.v1+json; q=0.5"),
            &index
        ));
        assert!(!accepts(&accept(oci::DOCKER_MANIFEST), &index));
    }

    #[test]
    fn only_an_index_or_an_answer_to_a_client_taking_indexes_answers_every_client() {
        let accept = |s: &'static str| HeaderValue::from_static(s);
        let single = MediaType::parse(oci::DOCKER_MANIFEST).unwrap();
        let index = MediaType::parse(oci::OCI_INDEX).unwrap();
        assert!(answers_every_client(&accept(oci::MANIFEST_TYPES), &single));
        assert!(answers_every_client(&accept("*/*"), &single));
        assert!(answers_every_client(&accept(oci::DOCKER_MANIFEST), &index));
        assert!(!answers_every_client(
            &accept(oci::DOCKER_MANIFEST),
            &single
        ));
        assert!(!answers_every_client(
            &accept("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"),
            &single
        ));
    }
}
