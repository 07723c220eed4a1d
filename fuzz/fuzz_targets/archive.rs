//! Archive import (`archive::import`: an OCI image layout tar from a USB stick, `outpost export`
//! or `skopeo copy … oci-archive:`) on any bytes as the tar file, into an embedded store. It
//! returns Ok or Err; nothing panics.
//!
//! Input: the tar file. One store per process (opened once, under `$TMPDIR`) keeps each run
//! cheap; blobs imported by one input stay for the next, so both the new-blob and the
//! already-stored paths are fuzzed.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use oci::Registry;
use storage::Store;

struct Place {
    tar: PathBuf,
    store: Store,
}

fn place() -> &'static Place {
    static PLACE: OnceLock<Place> = OnceLock::new();
    PLACE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("outpost-fuzz-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Place {
            tar: dir.join("archive.tar"),
            store: Store::open(&dir.join("store")).unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let place = place();
    std::fs::write(&place.tar, data).unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match archive::import(&place.store, &place.tar, &Registry::docker_hub(), now) {
        Ok(report) => {
            let _ = report.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
