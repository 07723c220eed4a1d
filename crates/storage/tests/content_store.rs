//! The conformance suite of [`ContentStore`] (the checks are in `checks/mod.rs`) run against
//! the embedded store. Add an implementation with one `content_store_suite!` line at the
//! bottom; every check then runs against it. The stores' blocking work runs on plain threads
//! (see [`Threads`]).

mod checks;

use std::path::Path;
use std::sync::Arc;

use storage::{ContentStore, Embedded, Offload, Store};

/// Blocking store work on a thread of its own.
struct Threads;

impl Offload for Threads {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        std::thread::spawn(job);
    }
}

/// A new, empty embedded store in `dir`.
fn embedded(dir: &Path) -> Arc<dyn ContentStore> {
    Arc::new(Embedded::new(Store::open(dir).unwrap(), Arc::new(Threads)))
}

/// Runs every check of the suite against the stores `$make` (a `fn(&Path)`) creates.
macro_rules! content_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            fn run(check: fn(Arc<dyn ContentStore>)) {
                let dir = tempfile::tempdir().unwrap();
                check($make(dir.path()));
            }

            #[test]
            fn space_is_reported_as_the_file_system_has_it() {
                run(checks::space_is_reported_as_the_file_system_has_it)
            }
            #[test]
            fn absent_blobs_are_none() {
                run(checks::absent_blobs_are_none)
            }
            #[test]
            fn put_checks_the_digest_and_keeps_the_media_type() {
                run(checks::put_checks_the_digest_and_keeps_the_media_type)
            }
            #[test]
            fn read_manifest_reads_only_blobs_stored_with_a_media_type() {
                run(checks::read_manifest_reads_only_blobs_stored_with_a_media_type)
            }
            #[test]
            fn a_written_blob_reads_back_whole_and_in_ranges() {
                run(checks::a_written_blob_reads_back_whole_and_in_ranges)
            }
            #[test]
            fn followers_read_a_write_as_it_arrives() {
                run(checks::followers_read_a_write_as_it_arrives)
            }
            #[test]
            fn wrong_bytes_are_never_stored() {
                run(checks::wrong_bytes_are_never_stored)
            }
            #[test]
            fn an_abandoned_write_stores_nothing() {
                run(checks::an_abandoned_write_stores_nothing)
            }
            #[test]
            fn tags_and_repositories() {
                run(checks::tags_and_repositories)
            }
            #[test]
            fn referrers_records_beside_tags() {
                run(checks::referrers_records_beside_tags)
            }
            #[test]
            fn eviction_removes_least_recently_used_but_never_a_blob_being_read() {
                run(checks::eviction_removes_least_recently_used_but_never_a_blob_being_read)
            }
        }
    };
}

content_store_suite!(embedded_store, embedded);

/// `read_all` reads a blob the page cache holds on the caller's thread; one it no longer holds
/// (evicted here) is read from the disk all the same, whole and right.
#[test]
fn read_all_of_a_blob_the_page_cache_no_longer_holds() {
    use futures_executor::block_on;
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let bytes = bytes::Bytes::from(checks::content(3 << 20, 9));
    let digest = checks::digest(&bytes);
    block_on(store.put(&digest, bytes.clone(), None)).unwrap();
    let (_, warm) = block_on(store.read_all(&digest, 4 << 20)).unwrap().unwrap();
    assert_eq!(warm, bytes);
    let hex = digest.hex();
    let path = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let (info, cold) = block_on(store.read_all(&digest, 4 << 20)).unwrap().unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(cold, bytes);
}

/// A small blob read whole (a manifest) is kept in memory: read again, it is served without
/// its file (here overwritten behind the store's back, which the memory copy does not see),
/// and it goes with its blob: once evicted, it is not served from memory either.
#[test]
fn manifests_read_whole_are_served_from_memory_while_stored() {
    use futures_executor::block_on;
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let manifest = bytes::Bytes::from(checks::content(2000, 4));
    let digest = checks::digest(&manifest);
    let media_type = oci::MediaType::parse(oci::OCI_MANIFEST).unwrap();
    block_on(store.put(&digest, manifest.clone(), Some(media_type.clone()))).unwrap();
    let (_, first) = block_on(store.read_all(&digest, 1 << 20)).unwrap().unwrap();
    assert_eq!(first, manifest);

    let hex = digest.hex();
    let path = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::write(&path, vec![0u8; manifest.len()]).unwrap();
    let (info, again) = block_on(store.read_all(&digest, 1 << 20)).unwrap().unwrap();
    assert_eq!(again, manifest, "served from memory, not from the file");
    assert_eq!(info.media_type, Some(media_type));
    assert!(matches!(
        block_on(store.read_all(&digest, 100)),
        Err(storage::StoreError::TooLarge { .. })
    ));

    let report = block_on(store.evict(0)).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(block_on(store.read_all(&digest, 1 << 20))
        .unwrap()
        .is_none());
}

/// A manifest GET by a layer's digest reads nothing: `read_manifest` of a blob stored without
/// a media type does not read it, so no copy of it is kept in memory (its file, overwritten
/// here behind the store's back, is what `read_all` then finds).
#[test]
fn read_manifest_leaves_a_layer_unread() {
    use futures_executor::block_on;
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let layer = bytes::Bytes::from(checks::content(3000, 5));
    let digest = checks::digest(&layer);
    block_on(store.put(&digest, layer.clone(), None)).unwrap();
    assert!(block_on(store.read_manifest(&digest, 1 << 20))
        .unwrap()
        .is_none());
    let hex = digest.hex();
    let path = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::write(&path, vec![0u8; layer.len()]).unwrap();
    let (_, read) = block_on(store.read_all(&digest, 1 << 20)).unwrap().unwrap();
    assert_eq!(
        read,
        vec![0u8; layer.len()],
        "read from the file, not memory"
    );
}
