//! `outpost verify` and `outpost gc`, run as a user would, on a data dir filled with the store.

use std::path::Path;
use std::process::Command;

use oci::{Algorithm, Digest};
use storage::Store;

fn outpost(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .output()
        .expect("run outpost");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Stores three 1000-byte blobs and returns their digests, oldest access first.
fn fill(dir: &Path) -> Vec<Digest> {
    let store = Store::open(dir).unwrap();
    let digests: Vec<Digest> = (1..=3u8)
        .map(|i| {
            let bytes = vec![i; 1000];
            let digest = Digest::compute(Algorithm::Sha256, &bytes);
            store.put_bytes(&digest, &bytes, None).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            digest
        })
        .collect();
    store.flush_access().unwrap();
    digests
}

fn blob_file(dir: &Path, digest: &Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

#[test]
fn verify_reports_and_repairs_a_corrupt_blob() {
    let dir = tempfile::tempdir().unwrap();
    let digests = fill(dir.path());
    let corrupt = blob_file(dir.path(), &digests[1]);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let data_dir = dir.path().to_str().unwrap();

    let (code, stdout, stderr) = outpost(&["verify", "--data-dir", data_dir]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("checked 3 blobs"), "{stdout}");
    assert!(stdout.contains(&digests[1].to_string()), "{stdout}");
    assert!(stderr.contains("--repair"), "{stderr}");
    assert!(corrupt.exists(), "verify without --repair removed a file");

    let (code, stdout, _) = outpost(&["verify", "--data-dir", data_dir, "--repair"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!corrupt.exists());
    assert!(blob_file(dir.path(), &digests[0]).exists());
    let (code, stdout, _) = outpost(&["verify", "--data-dir", data_dir]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("checked 2 blobs") && stdout.contains("0 corrupt"),
        "{stdout}"
    );
}

#[test]
fn gc_applies_the_size_limit_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let digests = fill(dir.path());
    let data_dir = dir.path().to_str().unwrap();
    let (code, _, stderr) = outpost(&["gc", "--data-dir", data_dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("maxSize"), "{stderr}");

    let (code, stdout, stderr) = outpost(&["gc", "--data-dir", data_dir, "--max-size", "2KB"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("removed {}", digests[0])),
        "{stdout}"
    );
    assert!(!blob_file(dir.path(), &digests[0]).exists());
    assert!(blob_file(dir.path(), &digests[2]).exists());
}

#[test]
fn a_data_dir_in_use_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let (code, _, stderr) = outpost(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("stop `outpost serve`"), "{stderr}");
}

/// A config whose shared store is the fake S3 `s3`.
fn shared_config(dir: &Path, s3: &outpost_tests::s3::FakeS3) -> std::path::PathBuf {
    let path = dir.join("outpost.yaml");
    std::fs::write(
        &path,
        format!(
            "outpost:\n  sharedStore:\n    endpoint: {}\n    bucket: {}\n    accessKeyId: {}\n    \
             secretAccessKey: {}\n",
            s3.endpoint(),
            s3.bucket(),
            s3.access_key_id(),
            s3.secret_access_key()
        ),
    )
    .unwrap();
    path
}

#[test]
fn verify_and_gc_cover_the_shared_store() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(outpost_tests::s3::FakeS3::start("outpost"));
    let good = b"a good blob".to_vec();
    let bad = b"a blob whose object was overwritten".to_vec();
    let (good_digest, bad_digest) = (
        Digest::compute(Algorithm::Sha256, &good),
        Digest::compute(Algorithm::Sha256, &bad),
    );
    s3.insert(&format!("blobs/sha256/{}", good_digest.hex()), good);
    s3.insert(
        &format!("blobs/sha256/{}", bad_digest.hex()),
        b"something else".to_vec(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(dir.path(), &s3);
    let config = config.to_str().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();

    let (code, stdout, stderr) = outpost(&["verify", "--config", config, "--data-dir", data_dir]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("shared store: 2 blobs"), "{stdout}");
    assert!(
        stdout.contains(&format!("corrupt: {bad_digest}")),
        "{stdout}"
    );
    assert!(stderr.contains("--repair"), "{stderr}");
    let (code, stdout, stderr) = outpost(&[
        "verify",
        "--config",
        config,
        "--data-dir",
        data_dir,
        "--repair",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(s3
        .object(&format!("blobs/sha256/{}", bad_digest.hex()))
        .is_none());

    // No tag reaches the good blob: gc keeps it while it is young, removes it after.
    let (code, stdout, stderr) = outpost(&["gc", "--config", config, "--data-dir", data_dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("removed 0 blobs"), "{stdout}");
    let (code, stdout, stderr) = outpost(&[
        "gc",
        "--config",
        config,
        "--data-dir",
        data_dir,
        "--shared-grace",
        "0s",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("removed 1 blobs"), "{stdout}");
    assert!(s3.keys("blobs/").is_empty());
}
