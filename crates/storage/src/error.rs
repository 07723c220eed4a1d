//! `StoreError`: every way the store can fail, each naming the path or digest involved and the fix.

use std::io;
use std::path::PathBuf;

use oci::Digest;

/// An error from the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this process) has the data dir open.
    #[error(
        "the data dir {dir} is locked: another outpost process is using it; stop that process \
         or give this one a different data dir"
    )]
    Locked { dir: PathBuf },

    /// A file system operation failed.
    #[error(
        "could not {action} {path}: {source}; check that the data dir exists, is writable by \
         outpost and that its disk is not full"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The sled index failed.
    #[error(
        "the index database under {dir} failed: {source}; if it stays broken, stop outpost and \
         move {dir} away: the next start rebuilds the blob index from the files (tags are lost \
         and will be fetched again)"
    )]
    Index {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// The index was written by a store with another schema.
    #[error(
        "the index under {dir} has schema version {found}, this outpost understands version \
         {supported}; run the outpost version that wrote it, or move the data dir away to start \
         with an empty cache"
    )]
    SchemaVersion {
        dir: PathBuf,
        found: String,
        supported: u32,
    },

    /// The bytes written to an ingest do not hash to the digest it was opened for.
    #[error(
        "content does not match its digest: expected {expected}, got {actual}; nothing was \
         stored, fetch the blob again from a source that serves the right bytes"
    )]
    DigestMismatch { expected: Digest, actual: Digest },

    /// The number of bytes written to an ingest is not the announced size.
    #[error(
        "content for {digest} has the wrong size: expected {expected} bytes, got {actual}; \
         nothing was stored, fetch the blob again"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    /// A repository or tag string cannot be used as an index key.
    #[error(
        "{what} {value:?} cannot be stored: it must be non-empty and contain no NUL byte \
         (validate names before handing them to the store)"
    )]
    InvalidKey { what: &'static str, value: String },

    /// Work handed to the [`crate::Offload`] ended without an answer (it panicked, or the
    /// offload dropped it), or a write went on after its writer had stopped.
    #[error("{0}; nothing was stored")]
    Lost(#[from] crate::offload::Lost),

    /// A blob is larger than the caller can take whole.
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes expected of it")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },

    /// A remote store (the site's shared S3 store) failed or did not answer in time.
    #[error("the shared store ({store}) could not {action}: {reason}")]
    Remote {
        store: String,
        action: String,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
