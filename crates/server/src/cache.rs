//! The cache policy over the `storage` crate (the local registry, standing in for Harbor):
//!
//! - blobs and manifests asked for by digest are immutable: once stored, they are served without
//!   asking the upstream;
//! - a tag checked less than `cache.tagTtl` ago is answered from the store; after that it is
//!   revalidated with a `HEAD` upstream, and an unchanged digest only refreshes the check time;
//! - when the upstream is unavailable ([`ApiError::is_unavailable`]: unreachable, timed out,
//!   5xx), a stored manifest is served anyway (stale-if-error, with a `Warning` header), and
//!   `tags/list` falls back to the tags known locally;
//! - infrastructure images (`outpost.infrastructureImages`) pass through and are never stored;
//! - uncached blobs are fetched once, however many clients ask (see [`crate::fill`]).
//!
//! Store calls that touch the disk run on the blocking pool; the ones answered from the store's
//! memory (`stat`, tags) run inline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use oci::{Digest, MediaType, Reference, Source, Target};
use storage::Store;
use tokio::sync::watch;
use upstream::Upstream;

use crate::body::{empty, Body};
use crate::error::ApiError;
use crate::fill::{self, FillJob, Fills};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::origin;
use crate::read;
use crate::response::{self, ByteRange, STALE_WARNING};

/// How often batched last-access times are written to the index.
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The local registry.
pub struct Cache {
    store: Store,
    fills: Arc<Fills>,
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

/// A blocking store call on the blocking pool; a panic there is an error, not a crash.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::store_read(what, e))?
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
        let (stop, mut stopped) = watch::channel(());
        let flusher = store.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.changed() => break,
                }
                let store = flusher.clone();
                let _ = tokio::task::spawn_blocking(move || store.flush_access()).await;
            }
            let _ = tokio::task::spawn_blocking(move || flusher.flush_access()).await;
        });
        Ok(Cache {
            store,
            fills: Arc::new(Fills::default()),
            upstream,
            metrics,
            config,
            epoch: SystemTime::now(),
            started: tokio::time::Instant::now(),
            _stop: stop,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    fn now(&self) -> SystemTime {
        self.epoch + self.started.elapsed()
    }

    /// Infrastructure images pass through and are never stored.
    pub fn is_infrastructure(&self, source: &Source) -> bool {
        self.config.is_infrastructure(source)
    }

    pub fn repositories(&self) -> Vec<String> {
        self.store.repositories()
    }

    pub async fn manifest(
        &self,
        source: &Source,
        target: &Target,
        reference: &Reference,
        accept: HeaderValue,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        let fetch = || origin::fetch_manifest(&self.upstream, target, reference, accept.clone());
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
                if let Some(manifest) = stored.filter(|m| accepts(&accept, &m.media_type)) {
                    return Ok(response::mark(response::manifest(&manifest, head), "hit"));
                }
                let manifest = fetch().await?;
                self.store_manifest(&repo, None, &manifest).await?;
                return Ok(response::mark(response::manifest(&manifest, head), "miss"));
            }
            Reference::Tag(tag) => tag.as_str(),
        };
        let entry = self.store.tag(&repo, tag)?;
        let stored = match &entry {
            Some(entry) => self.stored_manifest(&entry.digest).await?,
            None => None,
        };
        // A client that does not accept the stored type gets the upstream's answer.
        let stored = stored.filter(|m| accepts(&accept, &m.media_type));
        let Some((entry, stored)) = entry.zip(stored) else {
            let manifest = fetch().await?;
            self.store_manifest(&repo, Some(tag), &manifest).await?;
            return Ok(response::mark(response::manifest(&manifest, head), "miss"));
        };
        let age = self
            .now()
            .duration_since(entry.checked_at)
            .unwrap_or_default();
        if age < self.config.cache.tag_ttl {
            return Ok(response::mark(response::manifest(&stored, head), "hit"));
        }
        let current = origin::revalidate(&self.upstream, target, reference, &accept).await;
        let fetched = match current {
            Ok(Some(digest)) if digest == stored.digest => {
                self.store.put_tag(&repo, tag, &stored.digest, self.now())?;
                return Ok(response::mark(
                    response::manifest(&stored, head),
                    "revalidated",
                ));
            }
            Ok(_) => fetch().await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(manifest) => {
                self.store_manifest(&repo, Some(tag), &manifest).await?;
                Ok(response::mark(response::manifest(&manifest, head), "miss"))
            }
            Err(e) if e.is_unavailable() => Ok(response::stale(&stored, head, &e)),
            Err(e) => Err(e),
        }
    }

    /// A stored manifest, `None` when it is not stored or its media type is unknown (a blob
    /// re-indexed from a bare file at startup: fetched again).
    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, ApiError> {
        let Some(info) = self.store.stat(digest) else {
            return Ok(None);
        };
        let Some(media_type) = info.media_type.clone() else {
            return Ok(None);
        };
        let store = self.store.clone();
        let digest = digest.clone();
        let bytes = blocking("a stored manifest", move || {
            let Some(blob) = store.open_blob(&digest)? else {
                return Ok(None);
            };
            let (file, info, _lease) = blob.into_parts();
            let size = usize::try_from(info.size).unwrap_or(usize::MAX);
            if size > oci::MAX_MANIFEST_BYTES {
                return Err(ApiError::store_read(
                    format_args!("manifest {digest}"),
                    "it is larger than a manifest can be",
                ));
            }
            let mut buf = vec![0; size];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)
                .map_err(|e| ApiError::store_read(format_args!("manifest {digest}"), e))?;
            Ok(Some(Bytes::from(buf)))
        })
        .await?;
        Ok(bytes.map(|bytes| Manifest {
            bytes,
            media_type,
            digest: info.digest,
        }))
    }

    async fn store_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        manifest: &Manifest,
    ) -> Result<(), ApiError> {
        let store = self.store.clone();
        let m = manifest.clone();
        blocking("storing a manifest", move || {
            Ok(store.put_bytes(&m.digest, &m.bytes, Some(&m.media_type))?)
        })
        .await?;
        if let Some(tag) = tag {
            self.store
                .put_tag(repo, tag, &manifest.digest, self.now())?;
        }
        self.store.note_repository(repo)?;
        Ok(())
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
            let response = origin::pass_blob(&self.upstream, target, digest, range, head).await?;
            return Ok(response::mark(response, "pass-through"));
        }
        loop {
            if let Some(response) = self.stored_blob(digest, range.as_ref(), head)? {
                return Ok(response::mark(response, "hit"));
            }
            if head {
                // A HEAD does not start a download; one in flight knows the size already.
                if let Some(size) = self.fills.size_of(digest) {
                    let response = response::blob(digest, None, Some(size), empty());
                    return Ok(response::mark(response, "hit"));
                }
                let response =
                    origin::pass_blob(&self.upstream, target, digest, None, true).await?;
                return Ok(response::mark(response, "miss"));
            }
            let Some(mut rx) = self.fills.join(self.fill_job(target, digest)) else {
                continue; // stored meanwhile
            };
            let size = fill::wait_started(&mut rx).await?;
            self.store.note_repository(&source.to_string())?;
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
                "miss",
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
            on_commit: Box::new(move |store: &Store| {
                if let Some(max) = max_size.filter(|max| store.usage().bytes > *max) {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || {
                        let report = store.gc(max);
                        metrics.evicted(&report);
                        tracing::info!("cache.maxSize: {report}");
                    });
                }
            }),
        }
    }

    /// A stored blob's response, or `None` if it is not stored.
    fn stored_blob(
        &self,
        digest: &Digest,
        range: Option<&HeaderValue>,
        head: bool,
    ) -> Result<Option<Response<Body>>, ApiError> {
        let Some(blob) = self.store.open_blob(digest)? else {
            return Ok(None);
        };
        let (file, info, lease) = blob.into_parts();
        let (start, end) = match response::parse_range(range, info.size) {
            ByteRange::Unsatisfiable => return Err(ApiError::range_not_satisfiable(info.size)),
            ByteRange::Part(start, end) => (start, end),
            ByteRange::Full => (0, info.size),
        };
        let partial = (end - start != info.size).then_some((start, end));
        let body = if head {
            empty()
        } else {
            read::file_body(file, start, end, lease)
        };
        Ok(Some(response::blob(digest, partial, Some(info.size), body)))
    }

    /// The tags of a repository known locally, for when the upstream is unavailable: `error`
    /// when none are known.
    pub fn local_tags(
        &self,
        client_name: &str,
        source: &Source,
        n: Option<u32>,
        last: Option<&str>,
        head: bool,
        error: ApiError,
    ) -> Result<Response<Body>, ApiError> {
        let mut tags = self.store.tags(&source.to_string())?;
        if tags.is_empty() {
            return Err(error);
        }
        tracing::warn!(repository = %source, error = %error.message, "serving the locally known tags");
        if let Some(last) = last {
            tags.retain(|t| t.as_str() > last);
        }
        if let Some(n) = n {
            tags.truncate(n as usize);
        }
        let body = serde_json::json!({ "name": client_name, "tags": tags }).to_string();
        let mut response = response::json(StatusCode::OK, body.into(), head);
        response
            .headers_mut()
            .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
        Ok(response::mark(response, "stale"))
    }
}

/// Whether an `Accept` value lists `media_type` (or a wildcard).
fn accepts(accept: &HeaderValue, media_type: &MediaType) -> bool {
    let wanted = media_type.essence();
    accept.to_str().is_ok_and(|accept| {
        accept.split(',').any(|item| {
            let item = item.split(';').next().unwrap_or("").trim();
            item == "*/*" || item.eq_ignore_ascii_case(&wanted)
        })
    })
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
}
