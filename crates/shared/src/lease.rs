//! [`Lease`]: which node of a site downloads a blob that several nodes miss at once.
//!
//! A node about to fetch a blob from its upstream first writes `leases/<alg>/<hex>` naming
//! itself and an expiry, with `If-None-Match: *` (a create that fails when the object exists).
//! The node whose create succeeds downloads; the others see the lease and wait for the blob to
//! land in the bucket, or for the lease to expire (its holder died), then try again. Engines that
//! ignore the precondition (the create always succeeds) are covered by reading the lease back
//! after a short pause: the last writer wins everywhere, so exactly one node reads its own name.
//! A lease is a hint, never a lock: a node that cannot write or read leases downloads anyway,
//! and the worst outcome of a lost race is one extra download.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use oci::Digest;
use serde::{Deserialize, Serialize};
use storage::StoreError;

use crate::store::remote;
use crate::SharedStore;

/// How long a node waits before reading back a lease it wrote without a precondition.
const SETTLE: Duration = Duration::from_millis(50);

/// A lease this node holds on a blob; [`Lease::release`] removes it. Dropped without a release
/// (the download failed), it is removed in the background, so waiting nodes try themselves.
#[derive(Debug)]
pub struct Lease {
    store: SharedStore,
    digest: Digest,
    released: bool,
}

/// What [`SharedStore::lease`] found.
#[derive(Debug)]
pub enum LeaseState {
    /// This node downloads the blob.
    Acquired(Lease),
    /// `holder` downloads it, at the latest until `until`.
    HeldElsewhere { holder: String, until: SystemTime },
}

#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Seconds since the epoch.
    until: u64,
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl SharedStore {
    /// Takes the lease on `digest` for `holder` (this node's name) for `ttl`, unless another
    /// node holds an unexpired one.
    pub async fn lease(
        &self,
        digest: &Digest,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        let inner = self.inner();
        let key = inner.keys.lease(digest);
        let now = SystemTime::now();
        let current = self.read_lease(digest).await?;
        let expired = match &current {
            Some(record) if record.until > seconds(now) && record.holder != holder => {
                return Ok(held(record));
            }
            Some(_) => true,
            None => false,
        };
        let record = Record {
            holder: holder.to_owned(),
            until: seconds(now + ttl),
        };
        let payload = PutPayload::from(serde_json::to_vec(&record).expect("a lease serializes"));
        let mode = if expired {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match inner.s3.put_opts(&key, payload.clone(), options).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return match self.read_lease(digest).await? {
                    Some(record) => Ok(held(&record)),
                    // Released meanwhile: the blob has probably landed; the caller looks.
                    None => Ok(LeaseState::HeldElsewhere {
                        holder: String::new(),
                        until: now,
                    }),
                };
            }
            Err(object_store::Error::NotImplemented { .. }) => {
                inner
                    .s3
                    .put(&key, payload)
                    .await
                    .map_err(|e| remote(&inner.name, "write a lease", &e))?;
            }
            Err(e) => return Err(remote(&inner.name, "write a lease", &e)),
        }
        // The precondition may have been ignored: the last writer is the holder.
        tokio::time::sleep(SETTLE).await;
        match self.read_lease(digest).await? {
            Some(record) if record.holder != holder => Ok(held(&record)),
            _ => Ok(LeaseState::Acquired(Lease {
                store: self.clone(),
                digest: digest.clone(),
                released: false,
            })),
        }
    }

    /// Whether the lease on `digest` has expired (or cannot be read).
    pub(crate) async fn lease_expired(&self, digest: &Digest) -> bool {
        match self.read_lease(digest).await {
            Ok(Some(record)) => record.until <= seconds(SystemTime::now()),
            Ok(None) => false,
            Err(_) => false,
        }
    }

    async fn read_lease(&self, digest: &Digest) -> Result<Option<Record>, StoreError> {
        let Some(bytes) = self.get_bytes(&self.inner().keys.lease(digest)).await? else {
            return Ok(None);
        };
        // An unreadable lease is treated as expired.
        Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Record {
            holder: String::new(),
            until: 0,
        })))
    }
}

fn held(record: &Record) -> LeaseState {
    LeaseState::HeldElsewhere {
        holder: record.holder.clone(),
        until: UNIX_EPOCH + Duration::from_secs(record.until),
    }
}

impl Lease {
    /// Removes the lease: waiting nodes look for the blob, then take a lease themselves.
    pub async fn release(mut self) {
        self.released = true;
        remove(&self.store, &self.digest).await;
    }
}

async fn remove(store: &SharedStore, digest: &Digest) {
    let inner = store.inner();
    if let Err(e) = inner.s3.delete(&inner.keys.lease(digest)).await {
        tracing::debug!(%digest, error = %e, "could not remove a lease; it expires");
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, digest) = (self.store.clone(), self.digest.clone());
            runtime.spawn(async move { remove(&store, &digest).await });
        }
    }
}
