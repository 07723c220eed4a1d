//! outpost's site-wide shared store: the nodes of a site keep one copy of blobs, manifests and
//! tag records in a bucket of an S3-compatible engine (Garage on a small site; Ceph RGW or AWS
//! S3 work the same), behind each node's own embedded store.
//!
//! - `store.rs`: [`SharedStore`], the bucket as a `storage::ContentStore` (verified writes,
//!   multipart uploads for big blobs, streaming ranged reads).
//! - `lease.rs`: [`Lease`]: which node downloads a blob that several nodes miss at once.
//! - `maintenance.rs`: `verify` and `gc` of the bucket (gc's rule is documented there).
//! - `keys.rs`: the only place that names object keys (the layout is documented there).
//! - `http.rs`: the hyper client object_store speaks through (timeouts on every step).
//!
//! The policy (what is asked of the shared store when, timeouts and degraded mode, uploads in
//! the background) is the registry server's: this crate only stores.
#![forbid(unsafe_code)]

mod http;
mod keys;
mod lease;
mod maintenance;
mod store;

use std::time::Duration;

use oci::Secret;

pub use keys::Keys;
pub use lease::{Lease, LeaseState};
pub use maintenance::{GcReport, VerifyReport};
pub use store::{ListedBlob, SharedStore, PART_SIZE};

/// Where the shared store is and how to reach it (`outpost.sharedStore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The S3 API, `http://host:port` or `https://…`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Keys start with it (`""`, or `site-a/`): several sites may share a bucket.
    pub prefix: String,
    /// Every request: connect and response headers, and any pause in a body.
    pub timeout: Duration,
}

impl Settings {
    /// `endpoint bucket/prefix`, for messages (no credentials).
    pub fn describe(&self) -> String {
        format!(
            "{} bucket {}{}",
            self.endpoint,
            self.bucket,
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {}", self.prefix)
            }
        )
    }
}
