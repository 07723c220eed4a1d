//! outpost's content-addressed store: blob files named by digest, plus a sled index of sizes,
//! media types, access times, tags and repositories. No HTTP, no async runtime.
//!
//! The registry server sees stores only through [`ContentStore`] (async, streaming, verified
//! writes); [`Embedded`] is this crate's implementation of it over [`Store`], whose own calls do
//! blocking `std::fs` I/O. Blocking work runs through the [`Offload`] the owner hands in.
//!
//! # What lives where
//! - `content.rs`: the seam: [`ContentStore`], [`BlobRead`], [`BlobWrite`], [`Offload`].
//! - `embedded.rs`: [`Embedded`], [`Store`] as a [`ContentStore`].
//! - `chunks.rs`: reading blob files in chunks within a process-wide memory budget.
//! - `offload.rs`: awaiting blocking work without a runtime.
//! - `layout.rs`: the on-disk tree below, and the only digest-to-path function (`blob_path`).
//! - `index.rs`: the sled schema below; encodings and the schema version check.
//! - `state.rs`: the in-memory state behind the store mutex ([`BlobInfo`], [`Usage`]).
//! - `resident.rs`: small blobs read whole (manifests) kept in memory within a budget.
//! - `store.rs`: [`Store`] (open, stat, open_blob, tags, repositories, usage), [`Blob`], [`Lease`].
//! - `ingest.rs`: [`Ingest`] (write, verify, commit) and [`Store::put_bytes`].
//! - `reconcile.rs`: the startup reconcile of files and index ([`ReconcileReport`]).
//! - `maintenance.rs`: [`Store::gc`] and [`Store::verify`] with their reports.
//! - `error.rs`: [`StoreError`].
//!
//! # On-disk tree
//! ```text
//! <data dir>/
//! ├── lock                                  flock held while a Store is open (StoreError::Locked)
//! ├── blobs/                                complete, verified blob files only
//! │   ├── sha256/
//! │   │   └── <first two hex>/
//! │   │       └── <64 hex>                  the bytes of sha256:<64 hex>
//! │   └── sha512/
//! │       └── <first two hex>/
//! │           └── <128 hex>
//! ├── ingest/                               temp files of writes in progress
//! │   └── <alg>-<hex>.<pid>.<n>             removed on drop, on failed commit and at open
//! └── index/                                the sled 0.34 database (schema below)
//! ```
//!
//! # Index schema (sled)
//! ```text
//! default tree
//!   "schema_version"           -> u32 BE                          (currently 1; checked at open)
//! tree "blobs"
//!   "<alg>:<hex>" (UTF-8)      -> size u64 BE | last_access_ms u64 BE | media type UTF-8
//!                                 (empty media type: unknown, e.g. re-indexed from a file)
//! tree "tags"
//!   <repository> 0x00 <tag>    -> checked_at secs u64 BE | nanos u32 BE | "<alg>:<hex>" UTF-8
//!   <repository> 0x00 "referrers/<alg>:<hex>"
//!                              -> the same, for the referrers index (a stored blob) of that
//!                                 subject; no tag contains `/` or `:`, so none collides
//! tree "repositories"
//!   <repository>               -> (empty)
//! ```
//! Repositories and tags are opaque here (the proxy validates them) but may not be empty nor
//! contain a NUL byte, so no repository/tag pair can collide with another.
//!
//! # Invariants
//! - A file under `blobs/` is complete and verified: bytes are written to `ingest/`, hashed and
//!   counted while written, checked against digest and size, fsynced, renamed into `blobs/`, the
//!   directory fsynced, and only then indexed. Readers never see partial content.
//! - The blob file is the truth, the index follows. [`Store::open`] removes every file in
//!   `ingest/` and every stray under `blobs/` (not named by a digest where it belongs), drops
//!   index entries without a file (and files whose size is not the indexed, verified size),
//!   re-indexes files without an entry (size from the file, access time from its mtime, media
//!   type unknown) and drops tags whose manifest is gone. One directory walk, one index scan.
//! - A tag points at a stored manifest blob: store the manifest first, then [`Store::put_tag`].
//! - In memory, the store holds every blob's size, media type and last access under one mutex
//!   (~75 bytes a blob: the digest as bytes, media types shared; 100 000 blobs in ~9 MiB);
//!   the `blobs` tree changes only under that mutex too, so gc, verify and commits on one digest
//!   never interleave. Reads touch no disk besides opening the blob file (none at all for a
//!   manifest read again: small blobs read whole stay in memory, `resident.rs`): access times are
//!   exact in memory and batched to the index by [`Store::flush_access`] (periodically by the
//!   proxy, and by gc: those that entered a new hour) and on close (all).
//! - The `tags` tree is mirrored in memory (`index.rs`; ~200 bytes a tag, 10 000 in ~2 MiB),
//!   written through under one lock, sled first: a manifest by tag costs no sled lookup.
//! - While a [`Lease`] for a digest lives (every [`Blob`] and [`Ingest`] holds one), gc does not
//!   remove that digest.
//! - The data dir is used by one process at a time (the `lock` file).
#![forbid(unsafe_code)]

mod chunks;
mod content;
mod embedded;
mod error;
mod index;
mod ingest;
mod layout;
mod maintenance;
mod offload;
mod reconcile;
mod resident;
mod state;
mod store;

pub use content::{
    BlobRead, BlobWrite, BoxFuture, ContentStore, Follow, Ingesting, Offload, OpenBlob, Progress,
    Space, VerifiedWrite,
};
pub use embedded::Embedded;
pub use error::StoreError;
pub use index::TagEntry;
pub use ingest::Ingest;
pub use maintenance::{CorruptBlob, GcReport, Problem, VerifyReport};
pub use offload::Lost;
pub use reconcile::ReconcileReport;
pub use state::{BlobInfo, Usage};
pub use store::{Blob, Lease, ManifestRead, Store};
