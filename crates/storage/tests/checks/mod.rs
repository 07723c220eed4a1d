//! The checks of the [`ContentStore`] conformance suite: what the registry server relies on,
//! checked against every implementation (containerd's `core/content/testsuite` is the model).
//! `content_store.rs` runs them against the embedded store; `tests/shared_store.rs` (in the
//! workspace's `tests/`) against the S3 shared store with an in-process S3 server.
//!
//! The checks need no async runtime: futures are driven with `futures_executor::block_on`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_executor::block_on;
use oci::{Algorithm, Digest, MediaType};
use storage::{ContentStore, StoreError};

pub fn digest(bytes: &[u8]) -> Digest {
    Digest::compute(Algorithm::Sha256, bytes)
}

pub fn manifest_type() -> MediaType {
    MediaType::parse(oci::OCI_MANIFEST).unwrap()
}

/// Bytes that differ from chunk to chunk, `len` long.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// Everything `reader` yields for `[start, end)`, chunk by chunk.
pub fn read_range(reader: &mut dyn storage::BlobRead, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = start;
    while offset < end {
        let chunk = block_on(reader.read(offset, end - offset)).unwrap();
        assert!(!chunk.is_empty(), "a read returned no bytes at {offset}");
        offset += chunk.len() as u64;
        out.extend_from_slice(&chunk);
    }
    out
}

/// Writes `bytes` in `chunk`-sized pieces as `digest`, verifies and commits.
pub fn write_blob(
    store: &dyn ContentStore,
    digest: &Digest,
    size: Option<u64>,
    bytes: &[u8],
    chunk: usize,
) -> Result<storage::BlobInfo, StoreError> {
    let ingesting = block_on(store.ingest(digest, size, Box::new(|_| {})))?;
    let mut writer = ingesting.writer;
    for piece in bytes.chunks(chunk) {
        block_on(writer.write(Bytes::copy_from_slice(piece)))?;
    }
    let verified = block_on(writer.verify())?;
    block_on(verified.commit(None))
}

/// A store that reports space reports a sane one (a store without such a limit says `None`).
pub fn space_is_reported_as_the_file_system_has_it(store: Arc<dyn ContentStore>) {
    if let Some(space) = store.space() {
        assert!(
            space.total > 0 && space.available <= space.total,
            "{space:?}"
        );
    }
}

pub fn absent_blobs_are_none(store: Arc<dyn ContentStore>) {
    let d = digest(b"nothing");
    assert!(block_on(store.stat(&d)).unwrap().is_none());
    assert!(block_on(store.open(&d)).unwrap().is_none());
    assert!(block_on(store.read_all(&d, 1 << 20)).unwrap().is_none());
}

pub fn put_checks_the_digest_and_keeps_the_media_type(store: Arc<dyn ContentStore>) {
    let bytes = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let d = digest(&bytes);
    let info = block_on(store.put(&d, bytes.clone(), Some(manifest_type()))).unwrap();
    assert_eq!(
        (info.size, info.media_type),
        (bytes.len() as u64, Some(manifest_type()))
    );
    let (info, read) = block_on(store.read_all(&d, 1 << 20)).unwrap().unwrap();
    assert_eq!(read, bytes);
    assert_eq!(info.digest, d);

    let wrong = digest(b"other");
    let error = block_on(store.put(&wrong, bytes, None)).unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(block_on(store.stat(&wrong)).unwrap().is_none());

    let too_small = block_on(store.read_all(&d, 3)).unwrap_err();
    assert!(
        matches!(too_small, StoreError::TooLarge { .. }),
        "{too_small}"
    );
}

/// `read_manifest` reads a blob stored with a media type, whole, again and again; one stored
/// without (a layer) and one not stored are `None`; the limit holds.
pub fn read_manifest_reads_only_blobs_stored_with_a_media_type(store: Arc<dyn ContentStore>) {
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"x"}"#);
    let m = digest(&manifest);
    block_on(store.put(&m, manifest.clone(), Some(manifest_type()))).unwrap();
    let layer = Bytes::from(content(5000, 3));
    let l = digest(&layer);
    block_on(store.put(&l, layer, None)).unwrap();
    for _ in 0..2 {
        let (info, read) = block_on(store.read_manifest(&m, 1 << 20)).unwrap().unwrap();
        assert_eq!(read, manifest);
        assert_eq!(
            (info.digest, info.size, info.media_type),
            (m.clone(), manifest.len() as u64, Some(manifest_type()))
        );
    }
    assert!(block_on(store.read_manifest(&l, 1 << 20))
        .unwrap()
        .is_none());
    let absent = digest(b"absent");
    assert!(block_on(store.read_manifest(&absent, 1 << 20))
        .unwrap()
        .is_none());
    let too_small = block_on(store.read_manifest(&m, 3)).unwrap_err();
    assert!(
        matches!(too_small, StoreError::TooLarge { .. }),
        "{too_small}"
    );
}

pub fn a_written_blob_reads_back_whole_and_in_ranges(store: Arc<dyn ContentStore>) {
    let bytes = content(3 << 20, 7);
    let d = digest(&bytes);
    let info = write_blob(&*store, &d, Some(bytes.len() as u64), &bytes, 100_000).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(
        block_on(store.stat(&d)).unwrap().unwrap().size,
        bytes.len() as u64
    );
    let mut blob = block_on(store.open(&d)).unwrap().unwrap();
    assert_eq!(blob.info.size, bytes.len() as u64);
    let whole = read_range(&mut *blob.reader, 0, bytes.len() as u64);
    assert_eq!(digest(&whole), d, "the bytes read back are not the blob");
    assert_eq!(
        read_range(&mut *blob.reader, 1_000_000, 1_000_010),
        &bytes[1_000_000..1_000_010]
    );
    let past = block_on(blob.reader.read(bytes.len() as u64, 10)).unwrap_err();
    assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
}

pub fn followers_read_a_write_as_it_arrives(store: Arc<dyn ContentStore>) {
    let bytes = content(4 << 20, 3);
    let d = digest(&bytes);
    let reported = Arc::new(Mutex::new(0u64));
    let seen = reported.clone();
    let progress = Box::new(move |n: u64| *seen.lock().unwrap() = n);
    let ingesting = block_on(store.ingest(&d, None, progress)).unwrap();
    let follow = ingesting
        .follow
        .expect("the embedded store can be followed");
    let mut writer = ingesting.writer;
    let half = bytes.len() / 2;
    for piece in bytes[..half].chunks(64 << 10) {
        block_on(writer.write(Bytes::copy_from_slice(piece))).unwrap();
    }
    // Progress is reported as the writer gets to it (in batches of up to 1 MiB): wait
    // (bounded) for some of the first half.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while *reported.lock().unwrap() < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress reported for 2 MiB written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let readable = *reported.lock().unwrap();
    let mut follower = follow();
    assert_eq!(
        read_range(&mut *follower, 0, readable),
        &bytes[..readable as usize]
    );
    for piece in bytes[half..].chunks(64 << 10) {
        block_on(writer.write(Bytes::copy_from_slice(piece))).unwrap();
    }
    let verified = block_on(writer.verify()).unwrap();
    assert_eq!(
        *reported.lock().unwrap(),
        bytes.len() as u64,
        "the last progress is the size"
    );
    assert_eq!(
        read_range(&mut *follower, readable, bytes.len() as u64),
        &bytes[readable as usize..]
    );
    block_on(verified.commit(None)).unwrap();
    assert!(block_on(store.stat(&d)).unwrap().is_some());
}

pub fn wrong_bytes_are_never_stored(store: Arc<dyn ContentStore>) {
    let bytes = content(200_000, 1);
    let claimed = digest(b"something else");
    let error = write_blob(&*store, &claimed, None, &bytes, 50_000).unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(block_on(store.stat(&claimed)).unwrap().is_none());

    let d = digest(&bytes);
    let error = write_blob(&*store, &d, Some(bytes.len() as u64 + 1), &bytes, 50_000).unwrap_err();
    assert!(matches!(error, StoreError::SizeMismatch { .. }), "{error}");
    let error = write_blob(&*store, &d, Some(10), &bytes, 50_000).unwrap_err();
    assert!(!error.to_string().is_empty());
    assert!(block_on(store.stat(&d)).unwrap().is_none());
}

pub fn an_abandoned_write_stores_nothing(store: Arc<dyn ContentStore>) {
    let bytes = content(100_000, 9);
    let d = digest(&bytes);
    let ingesting = block_on(store.ingest(&d, None, Box::new(|_| {}))).unwrap();
    let mut writer = ingesting.writer;
    block_on(writer.write(Bytes::copy_from_slice(&bytes[..1000]))).unwrap();
    drop(writer);
    assert!(block_on(store.stat(&d)).unwrap().is_none());
    // The digest can be written again afterwards.
    write_blob(&*store, &d, None, &bytes, 30_000).unwrap();
    assert_eq!(
        block_on(store.stat(&d)).unwrap().unwrap().size,
        bytes.len() as u64
    );
}

pub fn tags_and_repositories(store: Arc<dyn ContentStore>) {
    let bytes = Bytes::from_static(b"{}");
    let d = digest(&bytes);
    block_on(store.put(&d, bytes, Some(manifest_type()))).unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    block_on(store.put_tag("quay.io/a/b", "v2", &d, at)).unwrap();
    block_on(store.put_tag("quay.io/a/b", "v1", &d, at)).unwrap();
    block_on(store.note_repository("docker.io/library/x")).unwrap();
    let entry = block_on(store.tag("quay.io/a/b", "v1")).unwrap().unwrap();
    assert_eq!((entry.digest, entry.checked_at), (d, at));
    assert!(block_on(store.tag("quay.io/a/b", "v3")).unwrap().is_none());
    assert_eq!(block_on(store.tags("quay.io/a/b")).unwrap(), ["v1", "v2"]);
    assert_eq!(
        block_on(store.repositories()).unwrap(),
        ["docker.io/library/x", "quay.io/a/b"]
    );
}

pub fn referrers_records_beside_tags(store: Arc<dyn ContentStore>) {
    let index = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
    let d = digest(&index);
    block_on(store.put(&d, index, Some(MediaType::parse(oci::OCI_INDEX).unwrap()))).unwrap();
    let subject = digest(b"subject");
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert!(block_on(store.referrers("quay.io/a/b", &subject))
        .unwrap()
        .is_none());
    block_on(store.put_tag("quay.io/a/b", "v1", &d, at)).unwrap();
    block_on(store.put_referrers("quay.io/a/b", &subject, &d, at)).unwrap();
    let entry = block_on(store.referrers("quay.io/a/b", &subject))
        .unwrap()
        .unwrap();
    assert_eq!((entry.digest, entry.checked_at), (d, at));
    assert!(block_on(store.referrers("quay.io/a/c", &subject))
        .unwrap()
        .is_none());
    // Not a tag: tags/list and the tag lookups never see it.
    assert_eq!(block_on(store.tags("quay.io/a/b")).unwrap(), ["v1"]);
}

pub fn eviction_removes_least_recently_used_but_never_a_blob_being_read(
    store: Arc<dyn ContentStore>,
) {
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| content(100_000, i)).collect();
    let digests: Vec<Digest> = blobs.iter().map(|b| digest(b)).collect();
    let stored = |i: usize| block_on(store.stat(&digests[i])).unwrap().is_some();
    let touch = |i: usize| {
        std::thread::sleep(Duration::from_millis(2)); // distinct access times
        block_on(store.open(&digests[i])).unwrap().unwrap()
    };
    for (d, b) in digests.iter().zip(&blobs) {
        write_blob(&*store, d, None, b, 40_000).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(store.usage().blobs, 3);
    // Reading blob 0 makes it the most recently used: blob 1 goes first.
    drop(touch(0));
    let report = block_on(store.evict(250_000)).unwrap();
    assert!(!stored(1), "{report}");
    assert!(stored(0) && stored(2), "{report}");
    assert!(store.usage().bytes <= 250_000);

    // Blob 2 is being read while it is the least recently used: it stays, blob 0 goes.
    let reading = touch(2);
    drop(touch(0));
    let report = block_on(store.evict(50_000)).unwrap();
    assert_eq!(report.kept_leased, 1, "{report}");
    assert!(stored(2), "a blob being read was evicted: {report}");
    assert!(!stored(0), "{report}");
    drop(reading);
    block_on(store.flush()).unwrap();
}
