//! The cache policy over the `storage` crate (the local registry, standing in for Harbor):
//!
//! - blobs and manifests asked for by digest are immutable: once stored, they are served without
//!   asking the upstream;
//! - a tag checked less than `cache.tagTtl` ago is answered from the store; after that it is
//!   revalidated with a `HEAD` upstream, and an unchanged digest only refreshes the check time;
//! - when the upstream is unreachable, times out or answers 5xx, a stored manifest is served
//!   anyway (stale-if-error, with a `Warning` header), and `tags/list` falls back to the tags
//!   known locally;
//! - infrastructure images (`outpost.infrastructureImages`) pass through and are never stored;
//! - uncached blobs are fetched once, however many clients ask (see [`crate::fill`]).
//!
//! Store calls that touch the disk run on the blocking pool; the ones answered from the store's
//! memory (`stat`, tags) run inline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use storage::{Digest, Store};
use tokio::sync::watch;

use crate::api::{
    self, empty, fetch_manifest, stream_blob, App, Body, Manifest, Outcome, DOCKER_CONTENT_DIGEST,
};
use crate::config::Config;
use crate::error::ApiError;
use crate::fill::{self, ByteRange, FillJob, Fills};
use crate::route::{Reference, Route, Source};
use crate::translate::Target;
use crate::upstream::{self, UpstreamError};

/// How often batched last-access times are written to the index.
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// The `Warning` on answers served from the store because the upstream could not be asked.
const STALE_WARNING: &str = "110 outpost \"Response is Stale\"";

/// The local registry.
pub struct Cache {
    store: Store,
    fills: Arc<Fills>,
    tag_ttl: Duration,
    fill_timeout: Duration,
    max_size: Option<u64>,
    infrastructure: Vec<String>,
    /// The wall clock at `started`; "now" is `epoch + started.elapsed()`, so tests can move
    /// time with `tokio::time::pause` and `advance`.
    epoch: SystemTime,
    started: tokio::time::Instant,
    /// Stops the background flush task when the cache is dropped.
    _stop: watch::Sender<()>,
}

impl Cache {
    /// Opens (and reconciles) the store in `config.data_dir`. Call within a tokio runtime.
    pub async fn open(config: &Config) -> Result<Cache, storage::StoreError> {
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .expect("store open task")?;
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
            tag_ttl: config.cache.tag_ttl,
            fill_timeout: config.cache.fill_timeout,
            max_size: config.cache.max_size,
            infrastructure: config.infrastructure_images.clone(),
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
        let name = source.to_string();
        self.infrastructure
            .iter()
            .any(|pattern| matches_pattern(pattern, &name))
    }

    pub fn repositories(&self) -> Vec<String> {
        self.store.repositories()
    }

    pub async fn manifest(
        &self,
        app: &App,
        source: &Source,
        target: &Target,
        reference: &Reference,
        accept: HeaderValue,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        if self.is_infrastructure(source) {
            let manifest = fetch_manifest(app, target, reference, accept).await?;
            return Ok(respond(manifest.response(head), "pass-through"));
        }
        let repo = source.to_string();
        match reference {
            Reference::Digest(digest) => {
                let stored = self.stored_manifest(digest).await?;
                if let Some(manifest) = stored.filter(|m| accepts(&accept, &m.media_type)) {
                    return Ok(respond(manifest.response(head), "hit"));
                }
                let manifest = fetch_manifest(app, target, reference, accept).await?;
                self.store_manifest(&repo, None, &manifest).await?;
                Ok(respond(manifest.response(head), "miss"))
            }
            Reference::Tag(tag) => {
                let entry = self.store.tag(&repo, tag.as_str())?;
                let stored = match &entry {
                    Some(entry) => self.stored_manifest(&entry.digest).await?,
                    None => None,
                };
                // A client that does not accept the stored type gets the upstream's answer.
                let stored = stored.filter(|m| accepts(&accept, &m.media_type));
                let Some((entry, stored)) = entry.zip(stored) else {
                    let manifest = fetch_manifest(app, target, reference, accept).await?;
                    self.store_manifest(&repo, Some(tag.as_str()), &manifest)
                        .await?;
                    return Ok(respond(manifest.response(head), "miss"));
                };
                let age = self
                    .now()
                    .duration_since(entry.checked_at)
                    .unwrap_or_default();
                if age < self.tag_ttl {
                    return Ok(respond(stored.response(head), "hit"));
                }
                match self.revalidate(app, target, reference, &accept).await {
                    Ok(Some(digest)) if digest == stored.digest => {
                        self.store
                            .put_tag(&repo, tag.as_str(), &stored.digest, self.now())?;
                        Ok(respond(stored.response(head), "revalidated"))
                    }
                    Ok(_) => {
                        let manifest = fetch_manifest(app, target, reference, accept).await;
                        match manifest {
                            Ok(manifest) => {
                                self.store_manifest(&repo, Some(tag.as_str()), &manifest)
                                    .await?;
                                Ok(respond(manifest.response(head), "miss"))
                            }
                            Err(e) if e.is_unavailable() => Ok(stale(stored, head, &e)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) if e.is_unavailable() => Ok(stale(stored, head, &e)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `HEAD`s a manifest upstream: its current digest, `None` when the upstream did not say.
    async fn revalidate(
        &self,
        app: &App,
        target: &crate::translate::Target,
        reference: &Reference,
        accept: &HeaderValue,
    ) -> Result<Option<Digest>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept.clone());
        let response = app
            .upstream
            .send(
                target,
                upstream::Request {
                    method: Method::HEAD,
                    path: format!("manifests/{reference}"),
                    query: None,
                    headers,
                },
            )
            .await?;
        if !response.status().is_success() {
            return Err(api::upstream_failure(response, target, api::Kind::Manifest).await);
        }
        Ok(response
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, ApiError> {
        let Some(info) = self.store.stat(digest) else {
            return Ok(None);
        };
        let Some(media_type) = info.media_type.clone() else {
            // Re-indexed from a bare file at startup: the media type is unknown, so fetch again.
            return Ok(None);
        };
        let store = self.store.clone();
        let digest = digest.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<Option<Bytes>, ApiError> {
            let Some(blob) = store.open_blob(&digest)? else {
                return Ok(None);
            };
            let (file, info, _lease) = blob.into_parts();
            let mut buf = vec![0; info.size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    format!("reading stored manifest {digest}: {e}"),
                )
            })?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
        .expect("manifest read task")?;
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
        tokio::task::spawn_blocking(move || {
            store.put_bytes(&m.digest, &m.bytes, Some(&m.media_type))
        })
        .await
        .expect("manifest store task")?;
        if let Some(tag) = tag {
            self.store
                .put_tag(repo, tag, &manifest.digest, self.now())?;
        }
        self.store.note_repository(repo)?;
        Ok(())
    }

    pub async fn blob(
        &self,
        app: &App,
        source: &Source,
        target: &Target,
        digest: &Digest,
        range: Option<HeaderValue>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        if self.is_infrastructure(source) {
            let response = stream_blob(app, target, digest, range, head).await?;
            return Ok(respond(response, "pass-through"));
        }
        loop {
            if let Some(response) = self.stored_blob(digest, range.as_ref(), head)? {
                return Ok(respond(response, "hit"));
            }
            if head {
                // A HEAD does not start a download; one in flight knows the size already.
                if let Some(size) = self.fills.size_of(digest) {
                    let response = fill::range_headers(blob_headers(digest), None, Some(size))
                        .body(empty())
                        .expect("valid response");
                    return Ok(respond(response, "hit"));
                }
                let response = stream_blob(app, target, digest, None, true).await?;
                return Ok(respond(response, "miss"));
            }
            let max_size = self.max_size;
            let metrics = app.metrics.clone();
            let job = FillJob {
                upstream: app.upstream.clone(),
                store: self.store.clone(),
                target: target.clone(),
                digest: digest.clone(),
                timeout: self.fill_timeout,
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
            };
            let Some(mut rx) = self.fills.join(job) else {
                continue; // stored meanwhile
            };
            let size = fill::wait_started(&mut rx).await?;
            self.store.note_repository(&source.to_string())?;
            let range = match size {
                Some(size) => match fill::parse_range(range.as_ref(), size) {
                    ByteRange::Unsatisfiable => return Err(unsatisfiable(size)),
                    ByteRange::Part(start, end) => Some((start, end)),
                    ByteRange::Full => None,
                },
                None => None,
            };
            let builder = blob_headers(digest);
            let builder = fill::range_headers(builder, range, size);
            let body = match range {
                Some((start, end)) => fill::follower_body(rx, start, Some(end)),
                None => fill::follower_body(rx, 0, size),
            };
            let response = builder.body(body).expect("valid response");
            return Ok(respond(response, "miss"));
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
        let (start, end) = match fill::parse_range(range, info.size) {
            ByteRange::Unsatisfiable => return Err(unsatisfiable(info.size)),
            ByteRange::Part(start, end) => (start, end),
            ByteRange::Full => (0, info.size),
        };
        let partial = (end - start != info.size).then_some((start, end));
        let builder = fill::range_headers(blob_headers(digest), partial, Some(info.size));
        let body = if head {
            empty()
        } else {
            fill::file_body(file, start, end, lease)
        };
        Ok(Some(builder.body(body).expect("valid response")))
    }

    /// The tags of a repository known locally, for when the upstream is unreachable.
    pub fn local_tags(
        &self,
        route: &Route,
        source: &Source,
        n: Option<u32>,
        last: Option<&str>,
        error: UpstreamError,
    ) -> Result<Response<Body>, ApiError> {
        let mut tags = self.store.tags(&source.to_string())?;
        if tags.is_empty() {
            return Err(error.into());
        }
        if let Some(last) = last {
            tags.retain(|t| t.as_str() > last);
        }
        if let Some(n) = n {
            tags.truncate(n as usize);
        }
        let body = serde_json::json!({ "name": route.client_name, "tags": tags }).to_string();
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::WARNING, STALE_WARNING)
            .body(if route.head { empty() } else { api::full(body) })
            .expect("valid response");
        response.extensions_mut().insert(Outcome {
            upstream: None,
            cache: Some("stale"),
            operation: None,
        });
        Ok(response)
    }
}

fn blob_headers(digest: &Digest) -> http::response::Builder {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::ACCEPT_RANGES, "bytes")
}

fn unsatisfiable(size: u64) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UNKNOWN",
        format!("the requested range is outside the blob's {size} bytes"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        error.headers.push((header::CONTENT_RANGE, value));
    }
    error
}

/// Marks the response with its cache outcome for the access log.
fn respond(mut response: Response<Body>, cache: &'static str) -> Response<Body> {
    response
        .extensions_mut()
        .get_or_insert_default::<Outcome>()
        .cache = Some(cache);
    response
}

/// A stored manifest served because the upstream could not be asked.
fn stale(manifest: Manifest, head: bool, error: &ApiError) -> Response<Body> {
    tracing::warn!(digest = %manifest.digest, error = %error.message, "serving a stale manifest");
    let mut response = manifest.response(head);
    response
        .headers_mut()
        .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
    respond(response, "stale")
}

/// Whether an `Accept` value lists `media_type` (or a wildcard).
fn accepts(accept: &HeaderValue, media_type: &str) -> bool {
    accept.to_str().is_ok_and(|accept| {
        accept.split(',').any(|item| {
            let item = item.split(';').next().unwrap_or("").trim();
            item == "*/*" || item.eq_ignore_ascii_case(media_type)
        })
    })
}

/// `host/path` matches itself; `host/path/*` and `host/path*` match everything below.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            let prefix = prefix.trim_end_matches('/');
            name == prefix || name.starts_with(&format!("{prefix}/")) || {
                !pattern.ends_with("/*") && name.starts_with(prefix)
            }
        }
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infrastructure_patterns() {
        assert!(matches_pattern(
            "quay.io/kairos/core",
            "quay.io/kairos/core"
        ));
        assert!(!matches_pattern(
            "quay.io/kairos/core",
            "quay.io/kairos/core-x"
        ));
        assert!(matches_pattern("quay.io/kairos/*", "quay.io/kairos/core"));
        assert!(matches_pattern("quay.io/kairos/*", "quay.io/kairos/a/b"));
        assert!(!matches_pattern("quay.io/kairos/*", "quay.io/kairosx/a"));
        assert!(matches_pattern(
            "quay.io/kairos/core*",
            "quay.io/kairos/core-ubuntu"
        ));
    }
}
