//! The embedded store's own suite (files on disk, crash and reconcile, locks, gc and verify);
//! `content_store.rs` is the conformance suite of the `ContentStore` seam, run against every
//! implementation of it. Here, every test takes a store constructor (`fn(&Path) -> Result<Store, _>`
//! over a data dir) and checks what a user of the store can observe: returned infos and errors,
//! bytes read back, files in the documented on-disk tree, usage, tags. `store_suite!` runs the
//! whole suite against one constructor, like containerd's `core/content/testsuite`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci::{Algorithm, Digest, MediaType};
use rand::RngCore;
use storage::{Problem, Store, StoreError, Usage};

type Open = fn(&Path) -> Result<Store, StoreError>;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn manifest_type() -> MediaType {
    MediaType::parse(MANIFEST).unwrap()
}

fn layer() -> MediaType {
    MediaType::parse(LAYER).unwrap()
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::compute(Algorithm::Sha256, bytes)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// The documented place of a blob: `blobs/<alg>/<first two hex>/<hex>`.
fn blob_file(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().name())
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read_all(store: &Store, digest: &Digest) -> Option<Vec<u8>> {
    let mut blob = store.open_blob(digest).unwrap()?;
    let mut bytes = Vec::new();
    blob.read_to_end(&mut bytes).unwrap();
    Some(bytes)
}

fn commit_writes_the_blob_where_documented(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = random_bytes(300_000);
    let digest = sha256(&bytes);

    let mut ingest = store.ingest(&digest, Some(bytes.len() as u64)).unwrap();
    for chunk in bytes.chunks(7_000) {
        ingest.write_all(chunk).unwrap();
    }
    assert_eq!(ingest.written(), bytes.len() as u64);
    assert_eq!(store.stat(&digest), None, "visible before commit");
    let info = ingest.commit(Some(&layer())).unwrap();

    assert_eq!(info.digest, digest);
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.media_type.as_ref().map(MediaType::as_str), Some(LAYER));
    assert_eq!(store.stat(&digest), Some(info.clone()));
    assert_eq!(fs::read(blob_file(store.dir(), &digest)).unwrap(), bytes);
    assert_eq!(read_all(&store, &digest).unwrap(), bytes);
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        store.usage(),
        Usage {
            bytes: bytes.len() as u64,
            blobs: 1
        }
    );

    // Survives a restart with its media type.
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.stat(&digest), Some(info));
    assert_eq!(read_all(&store, &digest).unwrap(), bytes);
}

fn put_bytes_stores_small_blobs_and_checks_them(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let manifest = br#"{"schemaVersion":2}"#;
    let digest = sha256(manifest);

    let info = store
        .put_bytes(&digest, manifest, Some(&manifest_type()))
        .unwrap();
    assert_eq!(info.size, manifest.len() as u64);
    assert_eq!(read_all(&store, &digest).unwrap(), manifest);
    // Again: same answer, still one blob.
    assert_eq!(store.put_bytes(&digest, manifest, None).unwrap(), info);
    assert_eq!(store.usage().blobs, 1);

    // Wrong bytes for a stored digest are refused, and the stored blob is untouched.
    let err = store
        .put_bytes(&digest, b"other", Some(&manifest_type()))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(read_all(&store, &digest).unwrap(), manifest);

    // sha512 digests work the same way.
    let d512 = Digest::compute(Algorithm::Sha512, manifest);
    store
        .put_bytes(&d512, manifest, Some(&manifest_type()))
        .unwrap();
    assert_eq!(fs::read(blob_file(store.dir(), &d512)).unwrap(), manifest);
}

fn verify_checks_before_commit(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = random_bytes(10_000);
    let digest = sha256(&bytes);
    // Verified before the fsync and rename: nothing is in blobs/ yet, and no more may be written.
    let mut ingest = store.ingest(&digest, Some(bytes.len() as u64)).unwrap();
    ingest.write_all(&bytes).unwrap();
    ingest.verify().unwrap();
    assert!(ingest.write_all(b"more").is_err());
    assert!(!blob_file(dir.path(), &digest).exists());
    ingest.commit(Some(&layer())).unwrap();
    assert_eq!(read_all(&store, &digest).unwrap(), bytes);
    // Wrong bytes fail verification, and commit after that stores nothing.
    let other = random_bytes(10_000);
    let wrong = sha256(&other);
    let mut ingest = store.ingest(&wrong, None).unwrap();
    ingest.write_all(&bytes).unwrap();
    assert!(matches!(
        ingest.verify(),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(ingest.commit(None).is_err());
    assert!(store.stat(&wrong).is_none());
    assert!(files_under(&dir.path().join("ingest")).is_empty());
}

fn digest_mismatch_stores_nothing(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let claimed = sha256(b"the real layer");
    let served = b"something else entirely";

    let mut ingest = store.ingest(&claimed, None).unwrap();
    ingest.write_all(served).unwrap();
    let err = ingest.commit(Some(&layer())).unwrap_err();

    match &err {
        StoreError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &claimed);
            assert_eq!(actual, &sha256(served));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&claimed.to_string()));
    assert_eq!(store.stat(&claimed), None);
    assert_eq!(
        store.open_blob(&claimed).unwrap().map(|b| b.info().clone()),
        None
    );
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_under(&store.dir().join("blobs")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(store.usage(), Usage::default());
}

fn size_mismatch_stores_nothing(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = b"0123456789";
    let digest = sha256(bytes);

    // Fewer bytes than announced.
    let mut ingest = store.ingest(&digest, Some(20)).unwrap();
    ingest.write_all(bytes).unwrap();
    match ingest.commit(None).unwrap_err() {
        StoreError::SizeMismatch {
            digest: d,
            expected,
            actual,
        } => assert_eq!((d, expected, actual), (digest.clone(), 20, 10)),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }

    // More bytes than announced: the write itself fails.
    let mut ingest = store.ingest(&digest, Some(4)).unwrap();
    assert!(ingest.write_all(bytes).is_err());
    drop(ingest);

    assert_eq!(store.stat(&digest), None);
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_under(&store.dir().join("blobs")),
        Vec::<PathBuf>::new()
    );
}

fn dropped_ingest_leaves_no_temp_file(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let digest = sha256(b"abandoned");
    let mut ingest = store.ingest(&digest, None).unwrap();
    ingest.write_all(b"aban").unwrap();
    ingest.flush().unwrap();
    assert_eq!(files_under(&store.dir().join("ingest")).len(), 1);
    drop(ingest);
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(store.stat(&digest), None);
}

/// The blocks of a blob whose size is known up front (1 MiB or more) are reserved when its temp
/// file is created; the file's length still grows with the bytes written, and a blob that cannot
/// fit fails at once, leaving nothing behind. (Needs a file system with `fallocate(2)` under the
/// test's temp dir: ext4, xfs, btrfs, tmpfs.)
fn large_blobs_get_their_blocks_up_front(open: Open) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = random_bytes(4 << 20);
    let digest = sha256(&bytes);
    let mut ingest = store.ingest(&digest, Some(bytes.len() as u64)).unwrap();
    let temps = files_under(&store.dir().join("ingest"));
    assert_eq!(temps.len(), 1, "{temps:?}");
    let meta = fs::metadata(&temps[0]).unwrap();
    assert_eq!(meta.len(), 0, "the length is what was written");
    assert!(
        meta.blocks() * 512 >= bytes.len() as u64,
        "{} bytes of blocks reserved for a blob of {}: the file system under {} must support \
         fallocate(2)",
        meta.blocks() * 512,
        bytes.len(),
        dir.path().display()
    );
    ingest.write_all(&bytes[..1 << 20]).unwrap();
    ingest.flush().unwrap();
    assert_eq!(fs::metadata(&temps[0]).unwrap().len(), 1 << 20);
    ingest.write_all(&bytes[1 << 20..]).unwrap();
    ingest.commit(Some(&layer())).unwrap();
    let stored = fs::metadata(blob_file(store.dir(), &digest)).unwrap();
    assert_eq!(stored.len(), bytes.len() as u64);
    assert!(
        stored.blocks() * 512 < bytes.len() as u64 + (1 << 20),
        "no more blocks than the blob needs: {}",
        stored.blocks() * 512
    );
    assert_eq!(read_all(&store, &digest).unwrap(), bytes);

    // Far more than any disk holds: refused when the ingest starts, nothing left in ingest/.
    let huge = sha256(b"huge");
    let Err(err) = store.ingest(&huge, Some(1 << 60)) else {
        panic!("an ingest of 1 EiB was accepted");
    };
    assert!(err.to_string().contains("reserve space"), "{err}");
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(store.stat(&huge), None);
}

fn an_ingest_can_be_read_while_it_is_written(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = random_bytes(200_000);
    let digest = sha256(&bytes);
    let mut ingest = store.ingest(&digest, Some(bytes.len() as u64)).unwrap();
    let mut reader = ingest.reader().unwrap();

    ingest.write_all(&bytes[..50_000]).unwrap();
    ingest.flush().unwrap();
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, &bytes[..50_000]);
    assert_eq!(
        store.stat(&digest),
        None,
        "an ingest in progress is not stored"
    );

    ingest.write_all(&bytes[50_000..]).unwrap();
    ingest.commit(None).unwrap();
    // The handle follows the file into blobs/.
    reader.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, bytes);
}

fn concurrent_ingests_of_one_digest_all_succeed(open: Open) {
    const WRITERS: usize = 8;
    const READERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let bytes = Arc::new(random_bytes(2 * 1024 * 1024));
    let digest = sha256(&bytes);
    let barrier = Arc::new(Barrier::new(WRITERS));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, digest, bytes) = (store.clone(), digest.clone(), bytes.clone());
            thread::spawn(move || {
                // Until the blob shows up, and a few times after: every read is whole.
                let mut seen = 0;
                while seen < 3 {
                    if let Some(read) = read_all(&store, &digest) {
                        assert!(
                            read == *bytes,
                            "a reader saw {} bytes of wrong content",
                            read.len()
                        );
                        seen += 1;
                    }
                    thread::yield_now();
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, digest, bytes, barrier) = (
                store.clone(),
                digest.clone(),
                bytes.clone(),
                barrier.clone(),
            );
            thread::spawn(move || {
                let mut ingest = store.ingest(&digest, Some(bytes.len() as u64)).unwrap();
                for chunk in bytes.chunks(64 * 1024) {
                    ingest.write_all(chunk).unwrap();
                }
                barrier.wait();
                ingest.commit(Some(&layer())).unwrap()
            })
        })
        .collect();
    let infos: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for reader in readers {
        reader.join().unwrap();
    }

    for info in &infos {
        assert_eq!(info, &infos[0]);
    }
    assert_eq!(infos[0].size, bytes.len() as u64);
    assert_eq!(
        store.usage(),
        Usage {
            bytes: bytes.len() as u64,
            blobs: 1
        }
    );
    assert_eq!(fs::read(blob_file(store.dir(), &digest)).unwrap(), *bytes);
    assert_eq!(
        files_under(&store.dir().join("ingest")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(store.verify(false).corrupt, vec![]);
}

fn reopen_cleans_up_after_a_crash(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let kept = b"kept manifest".to_vec();
    let lost = b"blob whose file vanished".to_vec();
    let orphan = b"blob renamed into place, index never written".to_vec();
    let (kept_d, lost_d, orphan_d) = (sha256(&kept), sha256(&lost), sha256(&orphan));
    let data = {
        let store = open(dir.path()).unwrap();
        store
            .put_bytes(&kept_d, &kept, Some(&manifest_type()))
            .unwrap();
        store
            .put_bytes(&lost_d, &lost, Some(&manifest_type()))
            .unwrap();
        store
            .put_tag("library/app", "kept", &kept_d, SystemTime::now())
            .unwrap();
        store
            .put_tag("library/app", "lost", &lost_d, SystemTime::now())
            .unwrap();
        store.dir().to_path_buf()
    };
    // What a crash (or a hand) leaves behind:
    let temp = data.join("ingest").join("sha256-deadbeef.123.0");
    fs::write(&temp, b"half a layer").unwrap();
    let stray = blob_file(&data, &orphan_d).with_extension("partial");
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, b"partial").unwrap();
    fs::write(blob_file(&data, &orphan_d), &orphan).unwrap();
    fs::remove_file(blob_file(&data, &lost_d)).unwrap();
    // Strays beside the two-hex-digit directories too, and in another one of them: each
    // directory is walked by one of several threads, and their counts add up.
    let alg_dir = blob_file(&data, &kept_d)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let odd_file = alg_dir.join("notes.txt");
    let odd_dir = alg_dir.join("abc");
    fs::write(&odd_file, b"not a blob").unwrap();
    fs::create_dir_all(odd_dir.join("inner")).unwrap();
    let other_prefix = (0..=255u8)
        .map(|b| alg_dir.join(format!("{b:02x}")))
        .find(|d| !stray.starts_with(d))
        .unwrap();
    fs::create_dir_all(&other_prefix).unwrap();
    let other_stray = other_prefix.join("not-a-digest");
    fs::write(&other_stray, b"?").unwrap();

    let store = open(dir.path()).unwrap();
    assert!(!temp.exists(), "temp file survived reopen");
    assert!(!stray.exists(), "stray partial file survived reopen");
    for path in [&odd_file, &odd_dir, &other_stray] {
        assert!(!path.exists(), "stray {} survived reopen", path.display());
    }
    assert_eq!(store.stat(&lost_d), None, "entry without file kept");
    let orphan_info = store
        .stat(&orphan_d)
        .expect("file without entry not re-indexed");
    assert_eq!(
        (orphan_info.size, orphan_info.media_type),
        (orphan.len() as u64, None)
    );
    assert_eq!(read_all(&store, &orphan_d).unwrap(), orphan);
    assert_eq!(
        store
            .stat(&kept_d)
            .unwrap()
            .media_type
            .as_ref()
            .map(MediaType::as_str),
        Some(MANIFEST)
    );
    assert_eq!(store.tags("library/app").unwrap(), vec!["kept".to_owned()]);
    assert_eq!(
        store.usage(),
        Usage {
            bytes: (kept.len() + orphan.len()) as u64,
            blobs: 2
        }
    );
    let report = store.reconcile_report();
    assert_eq!(
        (
            report.removed_temp_files,
            report.removed_stray_files,
            report.dropped_entries,
            report.reindexed_files,
            report.dropped_tags
        ),
        (1, 4, 1, 1, 1)
    );

    // A re-indexed blob gets its media type when it is stored again with one.
    store
        .put_bytes(&orphan_d, &orphan, Some(&manifest_type()))
        .unwrap();
    assert_eq!(
        store
            .stat(&orphan_d)
            .unwrap()
            .media_type
            .as_ref()
            .map(MediaType::as_str),
        Some(MANIFEST)
    );
}

fn reconcile_handles_ten_thousand_blobs(open: Open) {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("blob number {i}").into_bytes())
        .collect();
    let digests: Vec<Digest> = contents.iter().map(|c| sha256(c)).collect();
    let data = open(dir.path()).unwrap().dir().to_path_buf();
    for (content, digest) in contents.iter().zip(&digests) {
        let path = blob_file(&data, digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let total: u64 = contents.iter().map(|c| c.len() as u64).sum();

    // Files only: everything is indexed.
    let store = open(dir.path()).unwrap();
    assert_eq!(
        store.usage(),
        Usage {
            bytes: total,
            blobs: N as u64
        }
    );
    assert_eq!(store.reconcile_report().reindexed_files, N);
    drop(store);

    // Index and files agree, except 100 removed files and 50 added ones.
    for digest in &digests[..100] {
        fs::remove_file(blob_file(&data, digest)).unwrap();
    }
    let extra: Vec<Vec<u8>> = (0..50).map(|i| format!("extra {i}").into_bytes()).collect();
    for content in &extra {
        let path = blob_file(&data, &sha256(content));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let store = open(dir.path()).unwrap();
    let report = store.reconcile_report().clone();
    assert_eq!((report.dropped_entries, report.reindexed_files), (100, 50));
    assert_eq!(report.blobs, (N - 100 + 50) as u64);
    assert_eq!(store.usage().blobs, (N - 100 + 50) as u64);
    assert_eq!(store.stat(&digests[0]), None);
    assert_eq!(
        store.stat(&digests[N - 1]).unwrap().size,
        contents[N - 1].len() as u64
    );
    assert_eq!(read_all(&store, &sha256(&extra[7])).unwrap(), extra[7]);
    let verify = store.verify(false);
    assert_eq!((verify.checked, verify.corrupt.len()), ((N - 50) as u64, 0));

    // A store this big reopens its index after the reconcile: what the reconcile wrote and
    // what is written after it are both kept.
    store
        .put_tag("library/app", "v1", &digests[N - 1], SystemTime::now())
        .unwrap();
    drop(store);
    let store = open(dir.path()).unwrap();
    let report = store.reconcile_report();
    assert_eq!((report.dropped_entries, report.reindexed_files), (0, 0));
    assert_eq!(store.usage().blobs, (N - 100 + 50) as u64);
    assert_eq!(
        store.tag("library/app", "v1").map(|t| t.digest),
        Some(digests[N - 1].clone())
    );
}

fn leased_blobs_survive_gc(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let blobs: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(1000)).collect();
    let digests: Vec<Digest> = blobs.iter().map(|b| sha256(b)).collect();
    for (b, d) in blobs.iter().zip(&digests) {
        store.put_bytes(d, b, Some(&layer())).unwrap();
    }
    // Being read: blob 0. Being written again: blob 1.
    let mut reading = store.open_blob(&digests[0]).unwrap().unwrap();
    let writing = store.ingest(&digests[1], None).unwrap();

    let report = store.gc(0);
    let removed: Vec<_> = report.removed.iter().map(|b| b.digest.clone()).collect();
    assert_eq!(removed, vec![digests[2].clone()]);
    assert_eq!(report.kept_leased, 2);
    assert!(blob_file(store.dir(), &digests[0]).exists());
    assert!(blob_file(store.dir(), &digests[1]).exists());
    assert!(!blob_file(store.dir(), &digests[2]).exists());
    let mut read = Vec::new();
    reading.read_to_end(&mut read).unwrap();
    assert_eq!(read, blobs[0]);

    drop(reading);
    drop(writing);
    let report = store.gc(0);
    assert_eq!(report.removed.len(), 2);
    assert_eq!(store.usage(), Usage::default());
    assert_eq!(
        files_under(&store.dir().join("blobs")),
        Vec::<PathBuf>::new()
    );
}

fn gc_removes_least_recently_used_first(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let blobs: Vec<Vec<u8>> = (0..5).map(|_| random_bytes(100)).collect();
    let digests: Vec<Digest> = blobs.iter().map(|b| sha256(b)).collect();
    {
        let store = open(dir.path()).unwrap();
        for (b, d) in blobs.iter().zip(&digests) {
            store.put_bytes(d, b, None).unwrap();
        }
        for i in [3, 1, 4, 0, 2] {
            read_all(&store, &digests[i]).unwrap();
        }
        // Under the limit: nothing to do.
        let report = store.gc(500);
        assert!(report.removed.is_empty());
        assert!(report.to_string().contains("nothing removed"), "{report}");
    }
    // Access order survives a restart (batched to the index on close).
    let store = open(dir.path()).unwrap();
    // 500 bytes > 350: remove until <= 315, least recently read first.
    let report = store.gc(350);
    let removed: Vec<_> = report.removed.iter().map(|b| b.digest.clone()).collect();
    assert_eq!(removed, vec![digests[3].clone(), digests[1].clone()]);
    assert_eq!(
        store.usage(),
        Usage {
            bytes: 300,
            blobs: 3
        }
    );
    assert_eq!((report.before.bytes, report.after.bytes), (500, 300));
    for i in [4, 0, 2] {
        assert_eq!(read_all(&store, &digests[i]).unwrap(), blobs[i]);
    }
    // Reading blob 4 again makes it the most recent: next to go are 0 then 2.
    read_all(&store, &digests[4]).unwrap();
    let report = store.gc(150);
    let removed: Vec<_> = report.removed.iter().map(|b| b.digest.clone()).collect();
    assert_eq!(removed, vec![digests[0].clone(), digests[2].clone()]);
    assert!(store.stat(&digests[4]).is_some());
}

fn tags_and_repositories(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
    let digest = sha256(manifest);
    let checked_at = UNIX_EPOCH + Duration::new(1_750_000_000, 987_654_321);
    {
        let store = open(dir.path()).unwrap();
        store
            .put_bytes(&digest, manifest, Some(&manifest_type()))
            .unwrap();
        for tag in ["latest", "3.20", "edge"] {
            store
                .put_tag("library/alpine", tag, &digest, checked_at)
                .unwrap();
        }
        // Repository and tag joined differently never collide.
        store.put_tag("a", "b", &digest, checked_at).unwrap();
        store.put_tag("a/b", "c", &digest, checked_at).unwrap();
        store.note_repository("library/busybox").unwrap();
        store.note_repository("library/busybox").unwrap();

        assert!(matches!(
            store.put_tag("library/alpine", "bad\0tag", &digest, checked_at),
            Err(StoreError::InvalidKey { what: "tag", .. })
        ));
        assert!(store.put_tag("", "latest", &digest, checked_at).is_err());
    }
    let store = open(dir.path()).unwrap();
    let entry = store.tag("library/alpine", "latest").unwrap();
    assert_eq!(
        (entry.digest, entry.checked_at),
        (digest.clone(), checked_at)
    );
    assert_eq!(
        store.tags("library/alpine").unwrap(),
        vec!["3.20", "edge", "latest"]
    );
    assert_eq!(store.tags("a").unwrap(), vec!["b"]);
    assert_eq!(store.tags("a/b").unwrap(), vec!["c"]);
    assert_eq!(store.tags("nothing/here").unwrap(), Vec::<String>::new());
    assert_eq!(
        store.repositories(),
        vec!["a", "a/b", "library/alpine", "library/busybox"]
    );

    // Re-checked later: the time moves.
    let later = checked_at + Duration::from_secs(60);
    store
        .put_tag("library/alpine", "latest", &digest, later)
        .unwrap();
    assert_eq!(
        store.tag("library/alpine", "latest").unwrap().checked_at,
        later
    );

    assert!(store.remove_tag("library/alpine", "edge").unwrap());
    assert!(!store.remove_tag("library/alpine", "edge").unwrap());
    assert_eq!(store.tag("library/alpine", "edge"), None);
    assert_eq!(
        store.tags("library/alpine").unwrap(),
        vec!["3.20", "latest"]
    );

    // gc of the manifest takes its tags along.
    let report = store.gc(0);
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed_tags.len(), 4);
    assert_eq!(store.tags("library/alpine").unwrap(), Vec::<String>::new());
    assert_eq!(store.tag("a", "b"), None);
}

fn verify_finds_and_repairs_corrupt_blobs(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let (good, flipped, truncated) = (random_bytes(5000), random_bytes(5000), random_bytes(5000));
    let (good_d, flipped_d, truncated_d) = (sha256(&good), sha256(&flipped), sha256(&truncated));
    for (b, d) in [
        (&good, &good_d),
        (&flipped, &flipped_d),
        (&truncated, &truncated_d),
    ] {
        store.put_bytes(d, b, Some(&manifest_type())).unwrap();
    }
    store
        .put_tag("r", "flipped", &flipped_d, SystemTime::now())
        .unwrap();
    store
        .put_tag("r", "good", &good_d, SystemTime::now())
        .unwrap();

    // Bit rot and a truncation, behind the store's back.
    let mut bad = flipped.clone();
    bad[1234] ^= 0x40;
    fs::write(blob_file(store.dir(), &flipped_d), &bad).unwrap();
    fs::write(blob_file(store.dir(), &truncated_d), &truncated[..100]).unwrap();

    let report = store.verify(false);
    assert_eq!(report.checked, 3);
    let mut problems: Vec<_> = report
        .corrupt
        .iter()
        .map(|c| (c.digest.clone(), c.problem.clone()))
        .collect();
    problems.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (
            flipped_d.clone(),
            Problem::WrongDigest {
                actual: sha256(&bad),
            },
        ),
        (
            truncated_d.clone(),
            Problem::WrongSize {
                expected: 5000,
                actual: 100,
            },
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(problems, expected);
    assert!(report.to_string().contains("--repair"), "{report}");
    // Without repair nothing changes.
    assert!(store.stat(&flipped_d).is_some());
    assert!(blob_file(store.dir(), &truncated_d).exists());

    let report = store.verify(true);
    assert_eq!(report.corrupt.len(), 2);
    assert_eq!(
        report.removed_tags,
        vec![("r".to_owned(), "flipped".to_owned())]
    );
    assert_eq!(store.stat(&flipped_d), None);
    assert_eq!(store.stat(&truncated_d), None);
    assert!(!blob_file(store.dir(), &flipped_d).exists());
    assert!(!blob_file(store.dir(), &truncated_d).exists());
    assert_eq!(
        store.usage(),
        Usage {
            bytes: 5000,
            blobs: 1
        }
    );
    assert_eq!(store.tags("r").unwrap(), vec!["good"]);
    assert_eq!(store.verify(false).corrupt, vec![]);

    // The next pull stores it again.
    store.put_bytes(&flipped_d, &flipped, None).unwrap();
    assert_eq!(read_all(&store, &flipped_d).unwrap(), flipped);
}

fn a_second_store_on_the_same_dir_is_refused(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another outpost"), "{err}");
    drop(store);
    open(dir.path()).unwrap();
}

fn an_index_of_another_schema_is_refused(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let data = open(dir.path()).unwrap().dir().to_path_buf();
    {
        // The store just dropped may still be releasing sled's lock on its own threads (the
        // store's own open waits for it the same way).
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(data.join("index")) {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                opened => break opened.unwrap(),
            }
        };
        db.insert("schema_version", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::SchemaVersion { .. }), "{err:?}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

macro_rules! store_suite {
    ($name:ident, $open:expr) => {
        mod $name {
            use super::*;

            const OPEN: Open = $open;

            #[test]
            fn commit_writes_the_blob_where_documented() {
                super::commit_writes_the_blob_where_documented(OPEN)
            }
            #[test]
            fn put_bytes_stores_small_blobs_and_checks_them() {
                super::put_bytes_stores_small_blobs_and_checks_them(OPEN)
            }
            #[test]
            fn digest_mismatch_stores_nothing() {
                super::digest_mismatch_stores_nothing(OPEN)
            }
            #[test]
            fn verify_checks_before_commit() {
                super::verify_checks_before_commit(OPEN)
            }
            #[test]
            fn size_mismatch_stores_nothing() {
                super::size_mismatch_stores_nothing(OPEN)
            }
            #[test]
            fn dropped_ingest_leaves_no_temp_file() {
                super::dropped_ingest_leaves_no_temp_file(OPEN)
            }
            #[test]
            fn large_blobs_get_their_blocks_up_front() {
                super::large_blobs_get_their_blocks_up_front(OPEN)
            }
            #[test]
            fn an_ingest_can_be_read_while_it_is_written() {
                super::an_ingest_can_be_read_while_it_is_written(OPEN)
            }
            #[test]
            fn concurrent_ingests_of_one_digest_all_succeed() {
                super::concurrent_ingests_of_one_digest_all_succeed(OPEN)
            }
            #[test]
            fn reopen_cleans_up_after_a_crash() {
                super::reopen_cleans_up_after_a_crash(OPEN)
            }
            #[test]
            fn reconcile_handles_ten_thousand_blobs() {
                super::reconcile_handles_ten_thousand_blobs(OPEN)
            }
            #[test]
            fn leased_blobs_survive_gc() {
                super::leased_blobs_survive_gc(OPEN)
            }
            #[test]
            fn gc_removes_least_recently_used_first() {
                super::gc_removes_least_recently_used_first(OPEN)
            }
            #[test]
            fn tags_and_repositories() {
                super::tags_and_repositories(OPEN)
            }
            #[test]
            fn verify_finds_and_repairs_corrupt_blobs() {
                super::verify_finds_and_repairs_corrupt_blobs(OPEN)
            }
            #[test]
            fn a_second_store_on_the_same_dir_is_refused() {
                super::a_second_store_on_the_same_dir_is_refused(OPEN)
            }
            #[test]
            fn an_index_of_another_schema_is_refused() {
                super::an_index_of_another_schema_is_refused(OPEN)
            }
        }
    };
}

// The data dir exists (created by the installer).
store_suite!(existing_dir, |dir| Store::open(dir));
// The data dir does not exist yet: the store creates it, parents included.
store_suite!(new_nested_dir, |dir| Store::open(
    &dir.join("var/lib/outpost")
));
