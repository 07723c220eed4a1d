//! Times `Store::open` (the startup reconcile) on a data dir with many blobs.
//!
//! `cargo run --release -p storage --example reconcile_bench -- [blobs] [dir]`
//! (default: 10000 blobs in a fresh temp dir). Prints one line per scenario.

use std::fs;
use std::path::Path;
use std::time::Instant;

use oci::{Algorithm, Digest};
use storage::Store;

fn blob_file(dir: &Path, digest: &Digest) -> std::path::PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().name())
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

fn timed_open(label: &str, dir: &Path) -> Store {
    let started = Instant::now();
    let store = Store::open(dir).expect("open store");
    let elapsed = started.elapsed();
    let r = store.reconcile_report();
    println!(
        "{label:<40} {:>8.1} ms  blobs={} reindexed={} dropped={} (reconcile itself {:.1} ms)",
        elapsed.as_secs_f64() * 1e3,
        r.blobs,
        r.reindexed_files,
        r.dropped_entries,
        r.elapsed.as_secs_f64() * 1e3
    );
    store
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse().expect("blob count must be a number"))
        .unwrap_or(10_000);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().join("data"));

    drop(Store::open(&dir).expect("create store"));
    let started = Instant::now();
    let mut digests = Vec::with_capacity(n);
    for i in 0..n {
        let content = format!("bench blob {i}");
        let digest = Digest::compute(Algorithm::Sha256, content.as_bytes());
        let path = blob_file(&dir, &digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        digests.push(digest);
    }
    println!(
        "wrote {n} blob files by hand in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    drop(timed_open("open: every file unindexed", &dir));
    drop(timed_open("open: files and index agree", &dir));
    for digest in &digests[..n / 100] {
        fs::remove_file(blob_file(&dir, digest)).unwrap();
    }
    drop(timed_open("open: 1% of the files removed", &dir));
    let store = timed_open("open: again, clean", &dir);

    let started = Instant::now();
    let mut reads = 0;
    for digest in &digests[n / 100..] {
        if store.open_blob(digest).unwrap().is_some() {
            reads += 1;
        }
    }
    let read_time = started.elapsed();
    let started = Instant::now();
    store.flush_access().unwrap();
    println!(
        "{reads} open_blob calls in {:.1} ms; flush_access of their access times {:.1} ms",
        read_time.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
}
