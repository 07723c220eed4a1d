//! Manifest and index JSON as upstreams and archives send it: `oci::manifest_media_type` (the
//! type decided from a declared `Content-Type` or the manifest's own fields) and
//! `oci::ManifestContent::parse` (the descriptors prefetch, export, import and the cache walk).
//! Neither may panic; a decided type is always a valid header value; every descriptor's digest
//! is canonical.
//!
//! Input: the first line is the declared media type (empty: none), the rest the manifest bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{Algorithm, Digest, ManifestContent, Platform};

/// The types a manifest may be declared as (`oci::MANIFEST_TYPES`, one by one).
const TYPES: [&str; 4] = [
    oci::OCI_MANIFEST,
    oci::OCI_INDEX,
    oci::DOCKER_MANIFEST,
    oci::DOCKER_MANIFEST_LIST,
];

fuzz_target!(|data: &[u8]| {
    let (declared, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let declared = std::str::from_utf8(declared).ok().filter(|d| !d.is_empty());
    let media_type = oci::manifest_media_type(declared, bytes);
    if let Ok(media_type) = &media_type {
        assert!(
            http::HeaderValue::from_str(media_type.as_str()).is_ok(),
            "media type {:?} is not a valid header value",
            media_type.as_str()
        );
        media_type.is_index();
    }
    // Only over manifests a client could get: outpost serves at most MAX_MANIFEST_BYTES.
    if bytes.len() > oci::MAX_MANIFEST_BYTES {
        return;
    }
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let decided = media_type.as_ref().map(|m| m.as_str()).ok();
    for media_type in decided.into_iter().chain(TYPES) {
        match ManifestContent::parse(&digest, media_type, bytes) {
            Ok(ManifestContent::Index { manifests }) => manifests.iter().for_each(descriptor),
            Ok(ManifestContent::Image { config, layers }) => {
                descriptor(&config);
                layers.iter().for_each(descriptor);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

fn descriptor(d: &oci::Descriptor) {
    assert_eq!(
        d.digest.to_string().parse::<Digest>().as_ref(),
        Ok(&d.digest)
    );
    if let Some(platform) = &d.platform {
        let _ = platform.to_string();
        for wanted in Platform::defaults() {
            wanted.matches(platform);
        }
    }
}
