//! [`SharedStore`]: the bucket as a [`ContentStore`].
//!
//! - Reads ([`ContentStore::open`]) stream one ranged GET from the offset asked for and keep it
//!   while reads go on sequentially; bytes read this way are *not* verified here: the server
//!   copies them into the node's store, whose write checks the digest. [`ContentStore::read_all`]
//!   (manifests) checks the digest itself.
//! - Writes hash while they upload: a blob of less than [`PART_SIZE`] is one PUT at commit; a
//!   larger one is a multipart upload whose parts go out as they fill (at most
//!   [`PARTS_IN_FLIGHT`] at once), completed only after the digest and size matched, so the
//!   object never exists with wrong bytes. A write dropped before commit aborts its upload.
//! - Nothing is followed while it is written (`Ingesting::follow` is `None`): the node's store
//!   is what clients follow.
//! - Tag and referrers records are small JSON objects; the catalog is one empty object per
//!   repository (see `keys.rs`).
//! - Usage is counted from a listing at connect and kept up to date by this process's writes and
//!   deletions; other nodes' writes show at the next listing (gc, eviction).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use oci::{Digest, Hasher, MediaType};
use serde::{Deserialize, Serialize};
use storage::{
    BlobInfo, BlobRead, BlobWrite, BoxFuture, ContentStore, GcReport, Ingesting, OpenBlob,
    Progress, Space, StoreError, TagEntry, Usage, VerifiedWrite,
};

use crate::http::Connector;
use crate::keys::Keys;
use crate::Settings;

/// Blobs up to this size are one PUT; larger ones are uploaded in parts of this size.
pub const PART_SIZE: usize = 16 << 20;
/// Parts of one upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// The user metadata that holds a blob's media type.
const MEDIA_TYPE: &str = "media-type";

/// The shared store of a site: one bucket (and prefix) on an S3-compatible engine.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) s3: AmazonS3,
    pub(crate) keys: Keys,
    /// `endpoint bucket/prefix`, for messages.
    pub(crate) name: String,
    usage: AtomicU64,
    count: AtomicU64,
    /// Blobs this process is reading: eviction keeps them.
    reading: Mutex<HashMap<Digest, usize>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// A client of the store `settings` describe. Makes no request: see [`SharedStore::probe`].
    pub fn new(settings: &Settings) -> Result<SharedStore, StoreError> {
        let name = settings.describe();
        let s3 = AmazonS3Builder::new()
            .with_endpoint(settings.endpoint.trim_end_matches('/'))
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: settings.timeout,
                ..RetryConfig::default()
            })
            .with_http_connector(Connector {
                timeout: settings.timeout,
            })
            .build()
            .map_err(|e| remote(&name, "be configured", &e))?;
        Ok(SharedStore {
            inner: Arc::new(Inner {
                s3,
                keys: Keys::new(&settings.prefix),
                name,
                usage: AtomicU64::new(0),
                count: AtomicU64::new(0),
                reading: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `endpoint bucket/prefix`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Lists the blobs once: checks that the bucket answers with these credentials, and counts
    /// the usage.
    pub async fn probe(&self) -> Result<Usage, StoreError> {
        let blobs = self.list_blobs().await?;
        let usage = Usage {
            bytes: blobs.iter().map(|b| b.size).sum(),
            blobs: blobs.len() as u64,
        };
        self.inner.usage.store(usage.bytes, Ordering::Relaxed);
        self.inner.count.store(usage.blobs, Ordering::Relaxed);
        Ok(usage)
    }

    /// Every blob in the store, with its size and upload time.
    pub async fn list_blobs(&self) -> Result<Vec<ListedBlob>, StoreError> {
        let inner = &self.inner;
        let metas = self.list(&inner.keys.blobs(), "list its blobs").await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                Some(ListedBlob {
                    digest: inner.keys.digest_of(&m.location)?,
                    size: m.size,
                    modified: m.last_modified.into(),
                })
            })
            .collect())
    }

    /// Every object under `prefix`; `action` names the listing in an error.
    pub(crate) async fn list(
        &self,
        prefix: &Path,
        action: &str,
    ) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.inner
            .s3
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| remote(&self.inner.name, action, &e))
    }

    /// Removes a blob (gc, or an object found corrupt).
    pub async fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = inner.keys.blob(digest);
        let size = match inner.s3.head(&key).await {
            Ok(meta) => Some(meta.size),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(remote(&inner.name, "look at a blob", &e)),
        };
        match inner.s3.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(remote(&inner.name, "remove a blob", &e)),
        }
        if let Some(size) = size {
            sub(&inner.usage, size);
            sub(&inner.count, 1);
        }
        Ok(())
    }

    /// Raw bytes of any key under the prefix, for tests and `verify`: `None` when absent.
    pub(crate) async fn get_bytes(&self, key: &Path) -> Result<Option<Bytes>, StoreError> {
        let inner = &self.inner;
        match inner.s3.get(key).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| remote(&inner.name, "read an object", &e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(&inner.name, "read an object", &e)),
        }
    }

    pub(crate) async fn record_at(&self, key: Path) -> Result<Option<TagEntry>, StoreError> {
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            remote(
                &self.inner.name,
                "read a tag record",
                &format!("{key} is not a tag record ({e})"),
            )
        })?;
        let digest = record.digest.parse().map_err(|_| {
            remote(
                &self.inner.name,
                "read a tag record",
                &format!("{key} names no digest"),
            )
        })?;
        let (secs, nanos) = record.checked_at;
        Ok(Some(TagEntry {
            digest,
            checked_at: UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999)),
        }))
    }

    async fn put_record(
        &self,
        key: Path,
        digest: &Digest,
        checked_at: SystemTime,
    ) -> Result<(), StoreError> {
        let since = checked_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let record = Record {
            digest: digest.to_string(),
            checked_at: (since.as_secs(), since.subsec_nanos()),
        };
        let bytes = serde_json::to_vec(&record).expect("a record serializes");
        self.inner
            .s3
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| remote(&self.inner.name, "write a tag record", &e))?;
        Ok(())
    }

    fn lease_reading(&self, digest: &Digest) -> Reading {
        *lock(&self.inner.reading).entry(digest.clone()).or_insert(0) += 1;
        Reading {
            inner: self.inner.clone(),
            digest: digest.clone(),
        }
    }
}

/// A blob as listed.
#[derive(Clone, Debug)]
pub struct ListedBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct Record {
    digest: String,
    #[serde(rename = "checkedAt")]
    checked_at: (u64, u32),
}

pub(crate) fn remote(name: &str, action: &str, error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Remote {
        store: name.to_owned(),
        action: action.to_owned(),
        reason: error.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Keeps a blob from eviction by this process while it is read.
struct Reading {
    inner: Arc<Inner>,
    digest: Digest,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut reading = lock(&self.inner.reading);
        if let Some(n) = reading.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.digest);
            }
        }
    }
}

fn media_type_of(attributes: &Attributes) -> Option<MediaType> {
    let value = attributes.get(&Attribute::Metadata(MEDIA_TYPE.into()))?;
    MediaType::parse(value.as_ref()).ok()
}

fn attributes_for(media_type: Option<&MediaType>) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(media_type) = media_type {
        attributes.insert(
            Attribute::Metadata(MEDIA_TYPE.into()),
            media_type.to_string().into(),
        );
    }
    attributes
}

impl ContentStore for SharedStore {
    fn stat<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<BlobInfo>, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            match inner.s3.get_opts(&inner.keys.blob(digest), options).await {
                Ok(result) => Ok(Some(BlobInfo {
                    digest: digest.clone(),
                    size: result.meta.size,
                    media_type: media_type_of(&result.attributes),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote(&inner.name, "look at a blob", &e)),
            }
        })
    }

    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<OpenBlob>, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let key = inner.keys.blob(digest);
            let result = match inner.s3.get(&key).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(remote(&inner.name, "read a blob", &e)),
            };
            let info = BlobInfo {
                digest: digest.clone(),
                size: result.meta.size,
                media_type: media_type_of(&result.attributes),
            };
            let reader = Reader {
                store: self.clone(),
                key,
                size: info.size,
                position: 0,
                stream: Some(result.into_stream()),
                pending: Bytes::new(),
                _reading: self.lease_reading(digest),
            };
            Ok(Some(OpenBlob {
                info,
                reader: Box::new(reader),
            }))
        })
    }

    fn read_all<'a>(
        &'a self,
        digest: &'a Digest,
        limit: u64,
    ) -> BoxFuture<'a, Result<Option<(BlobInfo, Bytes)>, StoreError>> {
        Box::pin(async move {
            let Some(info) = self.stat(digest).await? else {
                return Ok(None);
            };
            if info.size > limit {
                return Err(StoreError::TooLarge {
                    digest: digest.clone(),
                    size: info.size,
                    limit,
                });
            }
            let Some(bytes) = self.get_bytes(&self.inner.keys.blob(digest)).await? else {
                return Ok(None);
            };
            let actual = Digest::compute(digest.algorithm(), &bytes);
            if &actual != digest {
                return Err(StoreError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
            Ok(Some((info, bytes)))
        })
    }

    fn put<'a>(
        &'a self,
        digest: &'a Digest,
        bytes: Bytes,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'a, Result<BlobInfo, StoreError>> {
        Box::pin(async move {
            let actual = Digest::compute(digest.algorithm(), &bytes);
            if &actual != digest {
                return Err(StoreError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
            let size = bytes.len() as u64;
            let existing = self.stat(digest).await?;
            if let Some(existing) = &existing {
                if existing.media_type.is_some() || media_type.is_none() {
                    return Ok(existing.clone());
                }
            }
            let options = PutOptions {
                attributes: attributes_for(media_type.as_ref()),
                ..PutOptions::default()
            };
            let inner = &self.inner;
            inner
                .s3
                .put_opts(&inner.keys.blob(digest), PutPayload::from(bytes), options)
                .await
                .map_err(|e| remote(&inner.name, "write a blob", &e))?;
            if existing.is_none() {
                inner.usage.fetch_add(size, Ordering::Relaxed);
                inner.count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(BlobInfo {
                digest: digest.clone(),
                size,
                media_type,
            })
        })
    }

    fn ingest<'a>(
        &'a self,
        digest: &'a Digest,
        size: Option<u64>,
        _progress: Progress,
    ) -> BoxFuture<'a, Result<Ingesting, StoreError>> {
        let writer = Writer {
            store: self.clone(),
            digest: digest.clone(),
            size,
            hasher: Hasher::new(digest.algorithm()),
            written: 0,
            part: BytesMut::new(),
            upload: None,
            in_flight: Vec::new(),
            failed: None,
        };
        Box::pin(std::future::ready(Ok(Ingesting {
            writer: Box::new(writer),
            follow: None,
        })))
    }

    fn tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>> {
        Box::pin(self.record_at(self.inner.keys.tag(repository, tag)))
    }

    fn put_tag<'a>(
        &'a self,
        repository: &'a str,
        tag: &'a str,
        digest: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_key("repository", repository)?;
            check_key("tag", tag)?;
            self.put_record(self.inner.keys.tag(repository, tag), digest, checked_at)
                .await?;
            self.note_repository(repository).await
        })
    }

    fn tags<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.keys.tags(repository);
            let metas = self.list(&prefix, "list tags").await?;
            let mut tags: Vec<String> = metas
                .iter()
                .filter_map(|m| {
                    m.location
                        .prefix_match(&prefix)?
                        .next()
                        .map(|p| p.as_ref().to_owned())
                })
                .collect();
            tags.sort();
            tags.dedup();
            Ok(tags)
        })
    }

    fn referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<TagEntry>, StoreError>> {
        Box::pin(self.record_at(self.inner.keys.referrers(repository, subject)))
    }

    fn put_referrers<'a>(
        &'a self,
        repository: &'a str,
        subject: &'a Digest,
        index: &'a Digest,
        checked_at: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_key("repository", repository)?;
            let key = self.inner.keys.referrers(repository, subject);
            self.put_record(key, index, checked_at).await?;
            self.note_repository(repository).await
        })
    }

    fn note_repository<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_key("repository", repository)?;
            let inner = &self.inner;
            let key = inner.keys.catalog_entry(repository);
            let options = PutOptions {
                mode: PutMode::Overwrite,
                ..PutOptions::default()
            };
            inner
                .s3
                .put_opts(&key, PutPayload::new(), options)
                .await
                .map_err(|e| remote(&inner.name, "write the catalog", &e))?;
            Ok(())
        })
    }

    fn repositories(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let metas = self.list(&inner.keys.catalog(), "list the catalog").await?;
            let mut repositories: Vec<String> = metas
                .iter()
                .filter_map(|m| inner.keys.repository_of(&m.location))
                .collect();
            repositories.sort();
            repositories.dedup();
            Ok(repositories)
        })
    }

    fn usage(&self) -> Usage {
        Usage {
            bytes: self.inner.usage.load(Ordering::Relaxed),
            blobs: self.inner.count.load(Ordering::Relaxed),
        }
    }

    fn space(&self) -> Option<Space> {
        None
    }

    fn evict(&self, max_size: u64) -> BoxFuture<'_, Result<GcReport, StoreError>> {
        Box::pin(async move {
            let mut blobs = self.list_blobs().await?;
            let before = Usage {
                bytes: blobs.iter().map(|b| b.size).sum(),
                blobs: blobs.len() as u64,
            };
            // Oldest upload first: the bucket keeps no access times.
            blobs.sort_by_key(|b| b.modified);
            let mut report = GcReport {
                max_size,
                before,
                after: before,
                removed: Vec::new(),
                kept_leased: 0,
                removed_tags: Vec::new(),
                errors: Vec::new(),
            };
            for blob in blobs {
                if report.after.bytes <= max_size {
                    break;
                }
                if lock(&self.inner.reading).contains_key(&blob.digest) {
                    report.kept_leased += 1;
                    continue;
                }
                match self.remove(&blob.digest).await {
                    Ok(()) => {
                        report.after.bytes -= blob.size;
                        report.after.blobs -= 1;
                        report.removed.push(BlobInfo {
                            digest: blob.digest,
                            size: blob.size,
                            media_type: None,
                        });
                    }
                    Err(e) => report.errors.push(e),
                }
            }
            self.inner
                .usage
                .store(report.after.bytes, Ordering::Relaxed);
            self.inner
                .count
                .store(report.after.blobs, Ordering::Relaxed);
            Ok(report)
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

fn check_key(what: &'static str, value: &str) -> Result<(), StoreError> {
    let bad = value.is_empty()
        || value.contains('\0')
        || value
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(StoreError::InvalidKey {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Sequential reads of one blob through one streaming GET, reopened at another offset when a
/// read jumps.
struct Reader {
    store: SharedStore,
    key: Path,
    size: u64,
    /// Where `pending` (then `stream`) starts.
    position: u64,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    pending: Bytes,
    _reading: Reading,
}

impl Reader {
    async fn next(&mut self, offset: u64, max: u64) -> std::io::Result<Bytes> {
        if offset >= self.size {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if offset != self.position || self.stream.is_none() {
            let inner = self.store.inner();
            let options = GetOptions {
                range: Some(GetRange::Offset(offset)),
                ..GetOptions::default()
            };
            let result = inner
                .s3
                .get_opts(&self.key, options)
                .await
                .map_err(std::io::Error::other)?;
            self.stream = Some(result.into_stream());
            self.pending = Bytes::new();
            self.position = offset;
        }
        while self.pending.is_empty() {
            let stream = self.stream.as_mut().expect("opened above");
            match stream.next().await {
                Some(Ok(bytes)) => self.pending = bytes,
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(std::io::Error::other(e));
                }
                None => {
                    self.stream = None;
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        let take = (max as usize).min(self.pending.len()).max(1);
        let chunk = self.pending.split_to(take);
        self.position += chunk.len() as u64;
        Ok(chunk)
    }
}

impl BlobRead for Reader {
    fn read(&mut self, offset: u64, max: u64) -> BoxFuture<'_, std::io::Result<Bytes>> {
        Box::pin(self.next(offset, max.max(1)))
    }
}

/// One blob being uploaded: hashed as it goes, parts sent as they fill.
struct Writer {
    store: SharedStore,
    digest: Digest,
    size: Option<u64>,
    hasher: Hasher,
    written: u64,
    part: BytesMut,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Vec<object_store::UploadPart>,
    failed: Option<StoreError>,
}

impl Writer {
    async fn append(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if let Some(e) = &self.failed {
            return Err(remote(&self.store.inner.name, "write a blob", e));
        }
        self.written += chunk.len() as u64;
        if let Some(expected) = self.size.filter(|s| self.written > *s) {
            return Err(StoreError::SizeMismatch {
                digest: self.digest.clone(),
                expected,
                actual: self.written,
            });
        }
        self.hasher.update(&chunk);
        self.part.extend_from_slice(&chunk);
        if self.part.len() >= PART_SIZE {
            if let Err(e) = self.send_part().await {
                let error = remote(&self.store.inner.name, "upload a part", &e);
                self.failed = Some(remote(&self.store.inner.name, "upload a part", &e));
                return Err(error);
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), StoreError> {
        let inner = self.store.inner.clone();
        if self.upload.is_none() {
            let upload = inner
                .s3
                .put_multipart_opts(
                    &inner.keys.blob(&self.digest),
                    PutMultipartOptions::default(),
                )
                .await
                .map_err(|e| remote(&inner.name, "start an upload", &e))?;
            self.upload = Some(upload);
        }
        let bytes = self.part.split().freeze();
        let upload = self.upload.as_mut().expect("started above");
        self.in_flight
            .push(upload.put_part(PutPayload::from(bytes)));
        if self.in_flight.len() > PARTS_IN_FLIGHT {
            let oldest = self.in_flight.remove(0);
            oldest
                .await
                .map_err(|e| remote(&inner.name, "upload a part", &e))?;
        }
        Ok(())
    }
}

impl BlobWrite for Writer {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.append(chunk))
    }

    fn verify(
        mut self: Box<Self>,
    ) -> BoxFuture<'static, Result<Box<dyn VerifiedWrite>, StoreError>> {
        Box::pin(async move {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let hasher = std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm()));
            let actual = hasher.finish();
            if let Some(expected) = self.size.filter(|s| *s != self.written) {
                return Err(StoreError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: self.written,
                });
            }
            if actual != self.digest {
                return Err(StoreError::DigestMismatch {
                    expected: self.digest.clone(),
                    actual,
                });
            }
            let verified: Box<dyn VerifiedWrite> = self;
            Ok(verified)
        })
    }
}

impl VerifiedWrite for Writer {
    fn commit(
        mut self: Box<Self>,
        media_type: Option<MediaType>,
    ) -> BoxFuture<'static, Result<BlobInfo, StoreError>> {
        Box::pin(async move {
            let inner = self.store.inner.clone();
            let key = inner.keys.blob(&self.digest);
            let existed = self.store.stat(&self.digest).await?.is_some();
            match self.upload.take() {
                None => {
                    let options = PutOptions {
                        attributes: attributes_for(media_type.as_ref()),
                        ..PutOptions::default()
                    };
                    let bytes = self.part.split().freeze();
                    inner
                        .s3
                        .put_opts(&key, PutPayload::from(bytes), options)
                        .await
                        .map_err(|e| remote(&inner.name, "write a blob", &e))?;
                }
                Some(mut upload) => {
                    let result = async {
                        if !self.part.is_empty() {
                            let bytes = self.part.split().freeze();
                            self.in_flight
                                .push(upload.put_part(PutPayload::from(bytes)));
                        }
                        for part in std::mem::take(&mut self.in_flight) {
                            part.await?;
                        }
                        upload.complete().await
                    }
                    .await;
                    if let Err(e) = result {
                        let _ = upload.abort().await;
                        return Err(remote(&inner.name, "complete an upload", &e));
                    }
                }
            }
            if !existed {
                inner.usage.fetch_add(self.written, Ordering::Relaxed);
                inner.count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(BlobInfo {
                digest: self.digest.clone(),
                size: self.written,
                media_type,
            })
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A write dropped (or failed) before its commit: abort its upload, if one was started.
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.in_flight.clear();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}
