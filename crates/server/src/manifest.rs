//! [`Manifest`]: a manifest's bytes, checked digest and parsed media type, as fetched from an
//! upstream or read from the store.

use bytes::Bytes;
use oci::{Digest, MediaType};

/// A manifest fetched and checked: its bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    /// Parsed at the edge: safe as a `Content-Type`.
    pub media_type: MediaType,
    pub digest: Digest,
}
