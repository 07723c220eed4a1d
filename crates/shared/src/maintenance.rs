//! `outpost verify` and `outpost gc` on the shared store.
//!
//! # What gc keeps
//! Every node keeps what it serves in its own store, so the shared store is needed for what a
//! node does *not* have yet: the images its neighbours pulled by tag. The rule:
//!
//! 1. A blob is *needed* while a tag or referrers record reaches it (record → manifest → child
//!    manifests of an index → config and layers).
//! 2. A blob that no record reaches is removed once it is older than the grace period (default
//!    one hour: a node uploads a blob before its tag record, and a pull by digest leaves no
//!    record).
//! 3. Over `sharedStore.maxSize`, the record checked longest ago is dropped, then 1 and 2
//!    apply again without the grace period, until the store fits.
//! 4. Leases that expired are removed.
//!
//! A manifest that cannot be read or parsed keeps itself but reaches nothing (its blobs are
//! kept only if another record reaches them, or while they are young).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use oci::{Digest, Hasher, ManifestContent};
use storage::{ContentStore, StoreError};

use crate::store::remote;
use crate::{ListedBlob, SharedStore};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs whose bytes do not hash to their name (removed with `repair`).
    pub corrupt: Vec<Digest>,
    pub errors: Vec<StoreError>,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "shared store: {} blobs ({} bytes) checked, {} corrupt",
            self.checked,
            self.bytes,
            self.corrupt.len()
        )?;
        for digest in &self.corrupt {
            writeln!(f, "  corrupt: {digest}")?;
        }
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs_before: u64,
    pub bytes_before: u64,
    pub removed_blobs: Vec<Digest>,
    pub removed_bytes: u64,
    /// Tag and referrers records dropped to fit `maxSize`.
    pub removed_records: Vec<String>,
    pub removed_leases: usize,
    pub errors: Vec<StoreError>,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "shared store: {} blobs ({} bytes) before; removed {} blobs ({} bytes), {} records, \
             {} expired leases",
            self.blobs_before,
            self.bytes_before,
            self.removed_blobs.len(),
            self.removed_bytes,
            self.removed_records.len(),
            self.removed_leases
        )?;
        for record in &self.removed_records {
            writeln!(f, "  dropped record: {record}")?;
        }
        for error in &self.errors {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

/// A tag or referrers record.
struct Root {
    key: object_store::path::Path,
    digest: Digest,
    checked_at: SystemTime,
}

impl SharedStore {
    /// Reads every blob and checks it against its digest; `repair` removes the corrupt ones.
    pub async fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for blob in self.list_blobs().await? {
            let inner = self.inner();
            let key = inner.keys.blob(&blob.digest);
            let result = async {
                let mut stream = inner.s3.get(&key).await?.into_stream();
                let mut hasher = Hasher::new(blob.digest.algorithm());
                let mut size = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                Ok::<_, object_store::Error>((hasher.finish(), size))
            }
            .await;
            match result {
                Ok((actual, size)) => {
                    report.checked += 1;
                    report.bytes += size;
                    if actual != blob.digest {
                        if repair {
                            if let Err(e) = self.remove(&blob.digest).await {
                                report.errors.push(e);
                            }
                        }
                        report.corrupt.push(blob.digest);
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => report.errors.push(remote(&inner.name, "read a blob", &e)),
            }
        }
        Ok(report)
    }

    /// Applies the rule of this module's docs; `max_size` is `sharedStore.maxSize`.
    pub async fn gc(&self, max_size: Option<u64>, grace: Duration) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let mut roots = self.roots().await?;
        let mut blobs = self.list_blobs().await?;
        report.blobs_before = blobs.len() as u64;
        report.bytes_before = blobs.iter().map(|b| b.size).sum();
        // Oldest check first: the ones dropped when over maxSize.
        roots.sort_by_key(|r| r.checked_at);
        let now = SystemTime::now();
        let mut grace = Some(grace);
        loop {
            let needed = self.mark(&roots).await;
            let mut kept = Vec::with_capacity(blobs.len());
            for blob in blobs {
                let young = grace
                    .is_some_and(|g| now.duration_since(blob.modified).unwrap_or_default() < g);
                if needed.contains(&blob.digest) || young {
                    kept.push(blob);
                    continue;
                }
                match self.remove(&blob.digest).await {
                    Ok(()) => {
                        report.removed_bytes += blob.size;
                        report.removed_blobs.push(blob.digest);
                    }
                    Err(e) => {
                        report.errors.push(e);
                        kept.push(blob);
                    }
                }
            }
            blobs = kept;
            let used: u64 = blobs.iter().map(|b: &ListedBlob| b.size).sum();
            if max_size.is_none_or(|max| used <= max) || roots.is_empty() {
                break;
            }
            let oldest = roots.remove(0);
            match self.inner().s3.delete(&oldest.key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.removed_records.push(oldest.key.to_string());
                }
                Err(e) => report
                    .errors
                    .push(remote(&self.inner().name, "remove a tag record", &e)),
            }
            grace = None;
        }
        report.removed_leases = self.remove_expired_leases(&mut report.errors).await;
        Ok(report)
    }

    /// Every tag and referrers record.
    async fn roots(&self) -> Result<Vec<Root>, StoreError> {
        let metas = self
            .list(&self.inner().keys.repositories(), "list tag records")
            .await?;
        let mut roots = Vec::new();
        for meta in metas {
            if let Some(entry) = self.record_at(meta.location.clone()).await? {
                roots.push(Root {
                    key: meta.location,
                    digest: entry.digest,
                    checked_at: entry.checked_at,
                });
            }
        }
        Ok(roots)
    }

    /// The blobs `roots` reach.
    async fn mark(&self, roots: &[Root]) -> HashSet<Digest> {
        let mut needed = HashSet::new();
        let mut todo: Vec<Digest> = roots.iter().map(|r| r.digest.clone()).collect();
        let limit = oci::MAX_MANIFEST_BYTES as u64;
        while let Some(digest) = todo.pop() {
            if !needed.insert(digest.clone()) {
                continue;
            }
            let Ok(Some((info, bytes))) = self.read_all(&digest, limit).await else {
                continue; // a layer, or unreadable: reaches nothing
            };
            let media_type = info.media_type.map(|m| m.to_string()).unwrap_or_default();
            match ManifestContent::parse(&digest, &media_type, &bytes) {
                Ok(ManifestContent::Index { manifests }) => {
                    todo.extend(manifests.into_iter().map(|d| d.digest));
                }
                Ok(ManifestContent::Image { config, layers }) => {
                    needed.insert(config.digest);
                    needed.extend(layers.into_iter().map(|d| d.digest));
                }
                Err(_) => {}
            }
        }
        needed
    }

    async fn remove_expired_leases(&self, errors: &mut Vec<StoreError>) -> usize {
        let inner = self.inner();
        let metas = match self.list(&inner.keys.leases(), "list leases").await {
            Ok(metas) => metas,
            Err(e) => {
                errors.push(e);
                return 0;
            }
        };
        let mut removed = 0;
        for meta in metas {
            let digest = meta
                .location
                .as_ref()
                .rsplit_once("leases/")
                .and_then(|(_, rest)| rest.replacen('/', ":", 1).parse::<Digest>().ok());
            let Some(digest) = digest else { continue };
            if self.lease_expired(&digest).await && inner.s3.delete(&meta.location).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }
}
