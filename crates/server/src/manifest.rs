//! [`Manifest`]: a manifest's bytes, checked digest and parsed media type, as fetched from an
//! upstream or read from the store.

use bytes::Bytes;
use oci::{Digest, MediaType, MediaTypeError};

/// A manifest fetched and checked: its bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    /// Parsed at the edge: safe as a `Content-Type`.
    pub media_type: MediaType,
    pub digest: Digest,
}

impl Manifest {
    /// The media type of manifest bytes that came without one (no `Content-Type`, or from an
    /// archive): the manifest's own `mediaType` field, else the OCI image manifest. A field that
    /// is not a valid media type is an error: it is never sent as a header.
    pub fn media_type_of(bytes: &[u8]) -> Result<MediaType, MediaTypeError> {
        match oci::media_type_field(bytes) {
            Some(field) => MediaType::parse(&field),
            None => Ok(MediaType::oci_manifest()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_from_the_manifest_itself() {
        let index = br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert!(Manifest::media_type_of(index).unwrap().is_index());
        assert_eq!(
            Manifest::media_type_of(b"{}").unwrap(),
            MediaType::oci_manifest()
        );
        let hostile = "{\"mediaType\":\"application/json\\r\\nSet-Cookie: a=b\"}";
        assert!(Manifest::media_type_of(hostile.as_bytes()).is_err());
        let control = "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\\u0007\"}";
        assert!(Manifest::media_type_of(control.as_bytes()).is_err());
    }
}
