//! The on-disk tree under the data dir (drawn in the crate docs) and the one function that turns a
//! digest into a path: [`Layout::blob_path`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci::{Algorithm, Digest};

/// Every algorithm that may have a directory under `blobs/`.
pub(crate) const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// Paths of one data dir.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/blobs`
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// `<root>/blobs/<alg>`
    pub(crate) fn algorithm_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.blobs_dir().join(algorithm.name())
    }

    /// `<root>/ingest`
    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// `<root>/index` (the sled database)
    pub(crate) fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// `<root>/lock` (held exclusively while a `Store` is open)
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `<root>/blobs/<alg>/<first two hex>/<hex>`: the only digest-to-path function. The digest is
    /// validated (known algorithm, lower-case hex), so the path cannot leave `blobs/`.
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.algorithm_dir(digest.algorithm())
            .join(&hex[..2])
            .join(hex)
    }

    /// A fresh, unique temp file path under `ingest/` for content that should become `digest`.
    pub(crate) fn ingest_path(&self, digest: &Digest) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.ingest_dir().join(format!(
            "{}-{}.{}.{}",
            digest.algorithm().name(),
            digest.hex(),
            std::process::id(),
            n
        ))
    }
}

/// The digest a file under `blobs/<alg>/<prefix>/` names, if the file is where that digest's
/// [`Layout::blob_path`] would put it; `None` for strays (partial files, foreign names).
pub(crate) fn digest_of_blob_file(
    algorithm: Algorithm,
    prefix: &str,
    name: &str,
) -> Option<Digest> {
    let digest: Digest = format!("{}:{}", algorithm.name(), name).parse().ok()?;
    (digest.hex().get(..2) == Some(prefix)).then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_path_follows_the_documented_tree() {
        let layout = Layout::new(Path::new("/data"));
        let d = Digest::compute(Algorithm::Sha256, b"");
        assert_eq!(
            layout.blob_path(&d),
            Path::new(
                "/data/blobs/sha256/e3/\
                 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
    }

    #[test]
    fn file_names_map_back_to_digests_only_when_canonical() {
        let d = Digest::compute(Algorithm::Sha256, b"x");
        let prefix = &d.hex()[..2];
        assert_eq!(
            digest_of_blob_file(Algorithm::Sha256, prefix, d.hex()),
            Some(d.clone())
        );
        assert_eq!(digest_of_blob_file(Algorithm::Sha256, "zz", d.hex()), None);
        assert_eq!(
            digest_of_blob_file(Algorithm::Sha512, prefix, d.hex()),
            None
        );
        let partial = format!("{}.partial", d.hex());
        assert_eq!(
            digest_of_blob_file(Algorithm::Sha256, prefix, &partial),
            None
        );
    }

    #[test]
    fn ingest_paths_are_unique_and_inside_ingest() {
        let layout = Layout::new(Path::new("/data"));
        let d = Digest::compute(Algorithm::Sha256, b"");
        let a = layout.ingest_path(&d);
        let b = layout.ingest_path(&d);
        assert_ne!(a, b);
        assert!(a.starts_with("/data/ingest"));
    }
}
