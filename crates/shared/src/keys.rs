//! Where everything lives in the bucket: the only place that names object keys.
//!
//! ```text
//! <prefix>blobs/<alg>/<hex>                          the bytes of <alg>:<hex>
//!                                                    (x-amz-meta-media-type: its media type)
//! <prefix>repositories/<repository>/_tags/<tag>      {"digest": …, "checkedAt": [secs, nanos]}
//! <prefix>repositories/<repository>/_referrers/<alg>-<hex>   the same, for a subject's index
//! <prefix>catalog/<repository>                       (empty) the repository was served
//! <prefix>leases/<alg>/<hex>                         {"holder": …, "until": secs}: a node is
//!                                                    downloading the blob from its upstream
//! ```
//! No repository path component starts with `_` (the name grammar), so `_tags` and
//! `_referrers` never collide with a repository.

use object_store::path::Path;
use oci::Digest;

/// The key builder of one store: its prefix (`""` or `"site-a/"`).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` as configured: surrounding slashes are ignored, `""` means none.
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Keys { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn path(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    pub fn blobs(&self) -> Path {
        self.path("blobs")
    }

    pub fn blob(&self, digest: &Digest) -> Path {
        self.path(&format!(
            "blobs/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    /// The digest a blob key names, `None` for anything else.
    pub fn digest_of(&self, key: &Path) -> Option<Digest> {
        let rest = key.as_ref().strip_prefix(&self.prefix)?;
        let rest = rest.strip_prefix("blobs/")?;
        let (alg, hex) = rest.split_once('/')?;
        format!("{alg}:{hex}").parse().ok()
    }

    /// Everything under which tag and referrers records live.
    pub fn repositories(&self) -> Path {
        self.path("repositories")
    }

    pub fn tags(&self, repository: &str) -> Path {
        self.path(&format!("repositories/{repository}/_tags"))
    }

    pub fn tag(&self, repository: &str, tag: &str) -> Path {
        self.path(&format!("repositories/{repository}/_tags/{tag}"))
    }

    pub fn referrers(&self, repository: &str, subject: &Digest) -> Path {
        let (alg, hex) = (subject.algorithm().name(), subject.hex());
        self.path(&format!("repositories/{repository}/_referrers/{alg}-{hex}"))
    }

    pub fn catalog(&self) -> Path {
        self.path("catalog")
    }

    pub fn catalog_entry(&self, repository: &str) -> Path {
        self.path(&format!("catalog/{repository}"))
    }

    /// The repository a catalog key names.
    pub fn repository_of(&self, key: &Path) -> Option<String> {
        let rest = key.as_ref().strip_prefix(&self.prefix)?;
        rest.strip_prefix("catalog/").map(str::to_owned)
    }

    pub fn lease(&self, digest: &Digest) -> Path {
        self.path(&format!(
            "leases/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn leases(&self) -> Path {
        self.path("leases")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_under_a_prefix() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        for prefix in ["", "/", "site-a", "site-a/", "/a/b/"] {
            let keys = Keys::new(prefix);
            let blob = keys.blob(&digest);
            assert!(blob
                .as_ref()
                .ends_with(&format!("blobs/sha256/{}", "ab".repeat(32))));
            assert_eq!(keys.digest_of(&blob), Some(digest.clone()), "{prefix:?}");
            let entry = keys.catalog_entry("quay.io/kairos/core");
            assert_eq!(
                keys.repository_of(&entry).as_deref(),
                Some("quay.io/kairos/core")
            );
        }
        assert_eq!(
            Keys::new("site-a").tag("r/x", "v1").as_ref(),
            "site-a/repositories/r/x/_tags/v1"
        );
        assert_eq!(
            Keys::new("").digest_of(&Path::from("leases/sha256/00")),
            None
        );
    }
}
