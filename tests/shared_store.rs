//! The S3 shared store (`shared::SharedStore`) against an in-process S3 server
//! ([`outpost_tests::s3::FakeS3`]): the `ContentStore` conformance checks of the storage crate,
//! then what only the shared store does (multipart uploads, prefixes, leases, verify, gc).
//!
//! Two checks of the suite do not apply, by design: nothing follows a write into the shared
//! store (the node's store is what clients follow), and the bucket keeps no access times, so
//! eviction goes by upload time (checked below instead).

#[path = "../crates/storage/tests/checks/mod.rs"]
mod checks;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use checks::{content, digest, manifest_type, write_blob};
use futures_executor::block_on;
use oci::Secret;
use outpost_tests::s3::FakeS3;
use shared::{LeaseState, SharedStore};
use storage::{ContentStore, StoreError};

/// A fake S3 on a runtime of its own, and a store on it under a fresh prefix.
struct Setup {
    runtime: tokio::runtime::Runtime,
    s3: FakeS3,
}

impl Setup {
    fn new() -> Setup {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let s3 = runtime.block_on(FakeS3::start("outpost"));
        Setup { runtime, s3 }
    }

    fn settings(&self, prefix: &str) -> shared::Settings {
        shared::Settings {
            endpoint: self.s3.endpoint(),
            region: "garage".to_owned(),
            bucket: self.s3.bucket().to_owned(),
            access_key_id: self.s3.access_key_id().to_owned(),
            secret_access_key: Secret::new(self.s3.secret_access_key()),
            prefix: prefix.to_owned(),
            timeout: Duration::from_secs(2),
        }
    }

    fn store(&self, prefix: &str) -> SharedStore {
        let _entered = self.runtime.enter();
        SharedStore::new(&self.settings(prefix)).unwrap()
    }

    /// Runs `f` on the test thread inside the runtime's context (the checks block on futures
    /// themselves; the runtime's workers drive the connections).
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let _entered = self.runtime.enter();
        f()
    }
}

fn conformance(check: fn(Arc<dyn ContentStore>)) {
    let setup = Setup::new();
    let store: Arc<dyn ContentStore> = Arc::new(setup.store("site-a/"));
    setup.run(|| check(store));
    // Everything it wrote is under its prefix.
    assert!(
        setup.s3.keys("").iter().all(|k| k.starts_with("site-a/")),
        "{:?}",
        setup.s3.keys("")
    );
}

mod conformance {
    use super::*;

    #[test]
    fn space_is_reported_as_the_file_system_has_it() {
        conformance(checks::space_is_reported_as_the_file_system_has_it)
    }
    #[test]
    fn absent_blobs_are_none() {
        conformance(checks::absent_blobs_are_none)
    }
    #[test]
    fn put_checks_the_digest_and_keeps_the_media_type() {
        conformance(checks::put_checks_the_digest_and_keeps_the_media_type)
    }
    #[test]
    fn read_manifest_reads_only_blobs_stored_with_a_media_type() {
        conformance(checks::read_manifest_reads_only_blobs_stored_with_a_media_type)
    }
    #[test]
    fn a_written_blob_reads_back_whole_and_in_ranges() {
        conformance(checks::a_written_blob_reads_back_whole_and_in_ranges)
    }
    #[test]
    fn wrong_bytes_are_never_stored() {
        conformance(checks::wrong_bytes_are_never_stored)
    }
    #[test]
    fn an_abandoned_write_stores_nothing() {
        conformance(checks::an_abandoned_write_stores_nothing)
    }
    #[test]
    fn tags_and_repositories() {
        conformance(checks::tags_and_repositories)
    }
    #[test]
    fn referrers_records_beside_tags() {
        conformance(checks::referrers_records_beside_tags)
    }
}

#[test]
fn a_big_blob_goes_up_in_parts_and_only_appears_once_verified() {
    let setup = Setup::new();
    let store = setup.store("");
    let bytes = content(shared::PART_SIZE * 2 + 12345, 5);
    let d = digest(&bytes);
    setup.run(|| {
        // Wrong bytes under that digest: the parts went up, but nothing was completed.
        let mut wrong = bytes.clone();
        wrong[100] ^= 1;
        let error = write_blob(&store, &d, None, &wrong, 1 << 20).unwrap_err();
        assert!(
            matches!(error, StoreError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(block_on(store.stat(&d)).unwrap().is_none());
        let info = write_blob(&store, &d, Some(bytes.len() as u64), &bytes, 1 << 20).unwrap();
        assert_eq!(info.size, bytes.len() as u64);
    });
    assert!(setup.s3.count_operation("UploadPart") >= 3);
    assert_eq!(setup.s3.count_operation("CompleteMultipartUpload"), 1);
    let key = format!("blobs/sha256/{}", d.hex());
    assert_eq!(setup.s3.object(&key).unwrap(), Bytes::from(bytes));
    // The aborted upload of the wrong bytes is gone too (aborted in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while setup.s3.uploads_in_progress() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "an upload was left open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn eviction_removes_the_oldest_uploads_but_never_a_blob_being_read() {
    let setup = Setup::new();
    let store = setup.store("");
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| content(100_000, i)).collect();
    let digests: Vec<_> = blobs.iter().map(|b| digest(b)).collect();
    setup.run(|| {
        for (d, b) in digests.iter().zip(&blobs) {
            write_blob(&store, d, None, b, 40_000).unwrap();
            // Last-Modified has a resolution of one second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let stored = |i: usize| block_on(store.stat(&digests[i])).unwrap().is_some();
        let reading = block_on(store.open(&digests[0])).unwrap().unwrap();
        let report = block_on(store.evict(200_000)).unwrap();
        assert_eq!(report.kept_leased, 1, "{report}");
        assert!(stored(0), "a blob being read was evicted: {report}");
        assert!(!stored(1) && stored(2), "{report}");
        drop(reading);
        assert_eq!(store.usage().bytes, 200_000);
    });
}

#[test]
fn prefixes_keep_sites_apart() {
    let setup = Setup::new();
    let (a, b) = (setup.store("site-a"), setup.store("/site-b/"));
    let bytes = Bytes::from_static(b"{\"schemaVersion\":2}");
    let d = digest(&bytes);
    setup.run(|| {
        block_on(a.put(&d, bytes.clone(), Some(manifest_type()))).unwrap();
        block_on(a.put_tag("quay.io/x", "v1", &d, SystemTime::now())).unwrap();
        assert!(block_on(b.stat(&d)).unwrap().is_none());
        assert!(block_on(b.tag("quay.io/x", "v1")).unwrap().is_none());
        assert!(block_on(b.repositories()).unwrap().is_empty());
        assert_eq!(block_on(a.repositories()).unwrap(), ["quay.io/x"]);
    });
    assert!(setup.s3.keys("site-b/").is_empty());
}

#[test]
fn one_node_holds_a_lease_until_it_releases_it() {
    let setup = Setup::new();
    let store = setup.store("");
    let d = digest(b"layer");
    setup.runtime.block_on(async {
        let ttl = Duration::from_secs(60);
        let LeaseState::Acquired(lease) = store.lease(&d, "node-a", ttl).await.unwrap() else {
            panic!("the first node gets the lease");
        };
        match store.lease(&d, "node-b", ttl).await.unwrap() {
            LeaseState::HeldElsewhere { holder, until } => {
                assert_eq!(holder, "node-a");
                assert!(until > SystemTime::now());
            }
            LeaseState::Acquired(_) => panic!("two nodes hold one lease"),
        }
        lease.release().await;
        assert!(matches!(
            store.lease(&d, "node-b", ttl).await.unwrap(),
            LeaseState::Acquired(_)
        ));
        // An expired lease is taken over.
        let other = digest(b"other");
        let LeaseState::Acquired(stale) =
            store.lease(&other, "node-a", Duration::ZERO).await.unwrap()
        else {
            panic!("first lease");
        };
        std::mem::forget(stale); // its holder died
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            store
                .lease(&other, "node-b", Duration::from_secs(60))
                .await
                .unwrap(),
            LeaseState::Acquired(_)
        ));
    });
}

#[test]
fn corrupt_objects_are_never_read_as_good() {
    let setup = Setup::new();
    let store = setup.store("");
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2,\"layers\":[]}");
    let d = digest(&manifest);
    setup.run(|| {
        block_on(store.put(&d, manifest.clone(), Some(manifest_type()))).unwrap();
    });
    let key = format!("blobs/sha256/{}", d.hex());
    setup.s3.overwrite(
        &key,
        Bytes::from_static(b"{\"schemaVersion\":3,\"layers\":[]}"),
    );
    setup.run(|| {
        let error = block_on(store.read_all(&d, 1 << 20)).unwrap_err();
        assert!(
            matches!(error, StoreError::DigestMismatch { .. }),
            "{error}"
        );
        let report = block_on(store.verify(false)).unwrap();
        assert_eq!(report.corrupt, std::slice::from_ref(&d), "{report}");
        assert_eq!(
            setup.s3.keys("blobs/").len(),
            1,
            "verify without repair removes nothing"
        );
        let report = block_on(store.verify(true)).unwrap();
        assert_eq!(report.corrupt, std::slice::from_ref(&d), "{report}");
    });
    assert!(setup.s3.keys("blobs/").is_empty());
}

/// An image manifest with `layers`, as JSON bytes.
fn image_manifest(config: &oci::Digest, layers: &[(&oci::Digest, usize)]) -> Bytes {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": size})
        })
        .collect();
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&json).unwrap())
}

#[test]
fn gc_keeps_what_a_tag_reaches_and_drops_the_oldest_tag_over_max_size() {
    let setup = Setup::new();
    let store = setup.store("");
    let put = |bytes: &[u8]| {
        let d = digest(bytes);
        write_blob(&store, &d, None, bytes, 1 << 20).unwrap();
        d
    };
    setup.run(|| {
        let config = put(b"{}");
        let old_layer = put(&content(300_000, 1));
        let new_layer = put(&content(300_000, 2));
        let orphan = put(&content(100_000, 3));
        let tag = |layer: &oci::Digest, tag: &str, at: SystemTime| {
            let m = image_manifest(&config, &[(layer, 300_000)]);
            let md = digest(&m);
            block_on(store.put(&md, m, Some(manifest_type()))).unwrap();
            block_on(store.put_tag("quay.io/app", tag, &md, at)).unwrap();
        };
        let now = SystemTime::now();
        tag(&old_layer, "old", now - Duration::from_secs(3600));
        tag(&new_layer, "new", now);
        let stored = |d: &oci::Digest| block_on(store.stat(d)).unwrap().is_some();

        // Within the grace period nothing goes; after it, only the orphan.
        let report = block_on(store.gc(None, Duration::from_secs(3600))).unwrap();
        assert!(report.removed_blobs.is_empty(), "{report}");
        let report = block_on(store.gc(None, Duration::ZERO)).unwrap();
        assert_eq!(
            report.removed_blobs,
            std::slice::from_ref(&orphan),
            "{report}"
        );
        assert!(stored(&old_layer) && stored(&new_layer) && stored(&config));

        // Over maxSize: the tag checked longest ago goes, with what only it reached.
        let report = block_on(store.gc(Some(400_000), Duration::from_secs(3600))).unwrap();
        assert_eq!(report.removed_records.len(), 1, "{report}");
        assert!(report.removed_records[0].ends_with("_tags/old"), "{report}");
        assert!(!stored(&old_layer), "{report}");
        assert!(stored(&new_layer) && stored(&config), "{report}");
        assert!(block_on(store.tag("quay.io/app", "new")).unwrap().is_some());
    });
}

#[test]
fn a_store_that_does_not_answer_fails_within_its_timeout() {
    let setup = Setup::new();
    let store = setup.store("");
    let d = digest(b"x");
    setup.s3.set_delay(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let error = setup.run(|| block_on(store.stat(&d)).unwrap_err());
    assert!(matches!(error, StoreError::Remote { .. }), "{error}");
    // One try and one retry, two seconds each, and nothing more.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.to_string().contains(setup.s3.secret_access_key()));
    setup.s3.set_delay(Duration::ZERO);
    setup.s3.set_unreachable(true);
    let error = setup.run(|| block_on(store.probe()).unwrap_err());
    assert!(error.to_string().contains(&setup.s3.endpoint()), "{error}");
}
