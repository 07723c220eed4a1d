//! Synthesized OCI images, and pushing them into a real registry with the Distribution API.
//!
//! An [`ImageSpec`] says how many layers of which size (and which are gzip-compressed), and
//! whether to wrap per-platform manifests in an OCI index (linux/amd64 + linux/arm64). Layers are
//! tar archives holding one file of seeded pseudo-random bytes, written straight to a temp dir
//! while they are hashed, so a 200 MiB layer is never held in memory. Every image carries a config
//! whose `rootfs.diff_ids` are the digests of the uncompressed tars, as a runtime checks on unpack.
//!
//! [`Image::push`] uploads every blob (monolithic `POST` + `PUT ?digest=`) and then the
//! manifests (children by digest, the top one by tag) with `curl`, optionally with Basic auth and
//! a CA file. The test then compares what a client received against [`Image::digest`] and
//! [`Image::blob_digests`].

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use oci::{Algorithm, Digest, Hasher};
use serde_json::json;

use crate::tools::Http;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest type a client may accept; what the tests send as `Accept`.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub const MIB: u64 = 1024 * 1024;

/// One layer: a tar holding `size` pseudo-random bytes, optionally gzip-compressed.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec {
    pub size: u64,
    pub gzip: bool,
}

/// What image to synthesize.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Seeds the layer contents: a different seed gives different digests (an uncached image).
    pub seed: u64,
    pub layers: Vec<LayerSpec>,
    /// Wrap one manifest per platform in an OCI index (linux/amd64 and linux/arm64).
    pub multi_arch: bool,
}

impl ImageSpec {
    /// A small image: one 256 KiB uncompressed layer and one 64 KiB gzip layer.
    pub fn small(seed: u64) -> ImageSpec {
        ImageSpec {
            seed,
            layers: vec![
                LayerSpec {
                    size: 256 * 1024,
                    gzip: false,
                },
                LayerSpec {
                    size: 64 * 1024,
                    gzip: true,
                },
            ],
            multi_arch: false,
        }
    }
}

/// One blob of a synthesized image, stored in the image's temp dir.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: &'static str,
    pub path: PathBuf,
}

/// One image manifest (per platform when the image is multi-arch).
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    /// `os/architecture`, e.g. `linux/amd64`.
    pub platform: String,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

/// A synthesized image on disk, ready to push.
pub struct Image {
    _dir: tempfile::TempDir,
    /// The per-platform manifests (one when not multi-arch).
    pub manifests: Vec<Manifest>,
    /// The OCI index bytes and digest, when multi-arch.
    pub index: Option<(Digest, Vec<u8>)>,
    /// Every config and layer blob, of every platform.
    pub blobs: Vec<Blob>,
}

/// Where to push: a registry base URL (`http://127.0.0.1:PORT`), a repository, a tag.
#[derive(Clone, Debug)]
pub struct PushTarget<'a> {
    pub base_url: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    pub basic_auth: Option<(&'a str, &'a str)>,
    pub ca_file: Option<&'a Path>,
}

impl Image {
    /// Writes the layers, configs and manifests of `spec` into a new temp dir.
    pub fn build(spec: &ImageSpec) -> Image {
        let dir = tempfile::Builder::new()
            .prefix("outpost-e2e-image.")
            .tempdir()
            .expect("temp dir for an image");
        let platforms: &[(&str, &str)] = if spec.multi_arch {
            &[("linux", "amd64"), ("linux", "arm64")]
        } else {
            &[("linux", "amd64")]
        };
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        for (p, (os, arch)) in platforms.iter().enumerate() {
            let mut layers = Vec::new();
            let mut diff_ids = Vec::new();
            for (i, layer) in spec.layers.iter().enumerate() {
                let seed = spec
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((p * 1000 + i) as u64);
                let (blob, diff_id) = write_layer(dir.path(), *layer, seed, i);
                diff_ids.push(diff_id.to_string());
                layers.push(blob);
            }
            let config = json!({
                "created": "1970-01-01T00:00:00Z",
                "architecture": arch,
                "os": os,
                "config": { "Env": [format!("OUTPOST_E2E_SEED={}", spec.seed)] },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": spec.layers.iter().map(|_| json!({"created_by": "outpost e2e synthesized layer"})).collect::<Vec<_>>(),
            });
            let config = write_blob(
                dir.path(),
                &serde_json::to_vec(&config).unwrap(),
                OCI_CONFIG,
            );
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(&config),
                "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
            });
            let bytes = serde_json::to_vec(&manifest).unwrap();
            manifests.push(Manifest {
                digest: Digest::compute(Algorithm::Sha256, &bytes),
                bytes,
                platform: format!("{os}/{arch}"),
                config: config.digest.clone(),
                layers: layers.iter().map(|l| l.digest.clone()).collect(),
            });
            blobs.push(config);
            blobs.extend(layers);
        }
        let index = spec.multi_arch.then(|| {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": manifests.iter().map(|m| {
                    let (os, arch) = m.platform.split_once('/').unwrap();
                    json!({
                        "mediaType": OCI_MANIFEST,
                        "digest": m.digest.to_string(),
                        "size": m.bytes.len(),
                        "platform": { "os": os, "architecture": arch },
                    })
                }).collect::<Vec<_>>(),
            });
            let bytes = serde_json::to_vec(&index).unwrap();
            (Digest::compute(Algorithm::Sha256, &bytes), bytes)
        });
        Image {
            _dir: dir,
            manifests,
            index,
            blobs,
        }
    }

    /// The digest a client resolves the tag to: the index when multi-arch, else the manifest.
    pub fn digest(&self) -> &Digest {
        match &self.index {
            Some((digest, _)) => digest,
            None => &self.manifests[0].digest,
        }
    }

    /// The media type of the top manifest.
    pub fn media_type(&self) -> &'static str {
        if self.index.is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        }
    }

    /// The bytes of the top manifest.
    pub fn top_bytes(&self) -> &[u8] {
        match &self.index {
            Some((_, bytes)) => bytes,
            None => &self.manifests[0].bytes,
        }
    }

    /// Every config and layer digest of every platform.
    pub fn blob_digests(&self) -> BTreeSet<Digest> {
        self.blobs.iter().map(|b| b.digest.clone()).collect()
    }

    /// The manifest of one platform (`linux/amd64`).
    pub fn manifest_for(&self, platform: &str) -> &Manifest {
        self.manifests
            .iter()
            .find(|m| m.platform == platform)
            .unwrap_or_else(|| panic!("the synthesized image has no {platform} manifest"))
    }

    /// Every digest a client pulling `platform` stores: the top manifest (and index), that
    /// platform's manifest, its config and layers.
    pub fn platform_digests(&self, platform: &str) -> BTreeSet<Digest> {
        let m = self.manifest_for(platform);
        let mut set: BTreeSet<Digest> = m.layers.iter().cloned().collect();
        set.insert(m.config.clone());
        set.insert(m.digest.clone());
        set.insert(self.digest().clone());
        set
    }

    /// The blob of `digest`.
    pub fn blob(&self, digest: &Digest) -> &Blob {
        self.blobs
            .iter()
            .find(|b| &b.digest == digest)
            .unwrap_or_else(|| panic!("{digest} is not a blob of the synthesized image"))
    }

    /// Total bytes of all config and layer blobs.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// Pushes every blob, then the manifests (children by digest), then the top one by tag.
    /// Panics with the registry's answer when a step fails.
    pub fn push(&self, to: &PushTarget<'_>) {
        for blob in &self.blobs {
            push_blob_file(to, &blob.digest, &blob.path, blob.size);
        }
        if self.index.is_some() {
            for m in &self.manifests {
                push_manifest(to, &m.digest.to_string(), OCI_MANIFEST, &m.bytes);
            }
        }
        push_manifest(to, to.tag, self.media_type(), self.top_bytes());
    }
}

/// Uploads the blob in `path` (`digest`, `size` bytes) to `to.repository` (a monolithic upload:
/// POST, then PUT with the digest).
fn push_blob_file(to: &PushTarget<'_>, digest: &Digest, path: &Path, size: u64) {
    let base = to.base_url.trim_end_matches('/');
    let repo = to.repository;
    let prepare = |http: Http| http.basic_auth(to.basic_auth).ca_file(to.ca_file);
    let start = prepare(Http::new(
        "POST",
        format!("{base}/v2/{repo}/blobs/uploads/"),
    ))
    .header("Content-Length", "0")
    .send();
    assert_eq!(
        start.status,
        202,
        "starting an upload to {base}/v2/{repo}: {}",
        start.text()
    );
    let location = start
        .header("location")
        .expect("upload POST answered without Location");
    let location = if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let mut put = prepare(Http::new("PUT", format!("{location}{sep}digest={digest}")))
        .header("Content-Type", "application/octet-stream");
    put.body_file = Some(path.to_path_buf());
    let done = put.send();
    assert_eq!(
        done.status,
        201,
        "uploading blob {digest} ({size} bytes) to {base}/v2/{repo}: {}",
        done.text()
    );
}

/// Uploads `bytes` as a blob of `to.repository`; returns its digest.
pub fn push_blob(to: &PushTarget<'_>, bytes: &[u8]) -> Digest {
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let file = tempfile::NamedTempFile::new().expect("a temp file for a blob");
    std::fs::write(file.path(), bytes).expect("write a blob");
    push_blob_file(to, &digest, file.path(), bytes.len() as u64);
    digest
}

/// PUTs a manifest of `media_type` as `reference` (a tag or its digest) into `to.repository`;
/// returns its digest.
pub fn push_manifest(
    to: &PushTarget<'_>,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let base = to.base_url.trim_end_matches('/');
    let repo = to.repository;
    let mut put = Http::new("PUT", format!("{base}/v2/{repo}/manifests/{reference}"))
        .basic_auth(to.basic_auth)
        .ca_file(to.ca_file)
        .header("Content-Type", media_type);
    put.body = Some(bytes.to_vec());
    let done = put.send();
    assert_eq!(
        done.status,
        201,
        "putting manifest {reference} into {base}/v2/{repo}: {}",
        done.text()
    );
    Digest::compute(Algorithm::Sha256, bytes)
}

fn descriptor(blob: &Blob) -> serde_json::Value {
    json!({ "mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.size })
}

/// Writes `bytes` as a blob file named by its digest.
fn write_blob(dir: &Path, bytes: &[u8], media_type: &'static str) -> Blob {
    let digest = Digest::compute(Algorithm::Sha256, bytes);
    let path = dir.join(digest.hex());
    std::fs::write(&path, bytes).expect("write blob");
    Blob {
        digest,
        size: bytes.len() as u64,
        media_type,
        path,
    }
}

/// Writes one layer; returns the blob and the diff_id (digest of the uncompressed tar).
fn write_layer(dir: &Path, spec: LayerSpec, seed: u64, index: usize) -> (Blob, Digest) {
    let tar_path = dir.join(format!("layer-{seed}.tar"));
    let tar_file = HashingWriter::new(BufWriter::new(
        File::create(&tar_path).expect("create layer file"),
    ));
    let mut builder = tar::Builder::new(tar_file);
    let mut header = tar::Header::new_gnu();
    header.set_size(spec.size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(
            &mut header,
            format!("outpost-e2e/layer-{index}.bin"),
            SeededBytes::new(seed, spec.size),
        )
        .expect("write tar entry");
    let tar_file = builder.into_inner().expect("finish tar");
    let (tar_size, diff_id, mut inner) = tar_file.finish();
    inner.flush().expect("flush layer");
    drop(inner);
    if !spec.gzip {
        let path = dir.join(diff_id.hex());
        std::fs::rename(&tar_path, &path).expect("rename layer");
        let blob = Blob {
            digest: diff_id.clone(),
            size: tar_size,
            media_type: OCI_LAYER_TAR,
            path,
        };
        return (blob, diff_id);
    }
    let gz_path = dir.join(format!("layer-{seed}.tar.gz"));
    let out = HashingWriter::new(BufWriter::new(
        File::create(&gz_path).expect("create gzip layer"),
    ));
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    std::io::copy(
        &mut File::open(&tar_path).expect("reopen layer"),
        &mut encoder,
    )
    .expect("gzip layer");
    let (size, digest, mut inner) = encoder.finish().expect("finish gzip").finish();
    inner.flush().expect("flush gzip layer");
    drop(inner);
    std::fs::remove_file(&tar_path).expect("remove uncompressed layer");
    let path = dir.join(digest.hex());
    std::fs::rename(&gz_path, &path).expect("rename gzip layer");
    let blob = Blob {
        digest,
        size,
        media_type: OCI_LAYER_GZIP,
        path,
    };
    (blob, diff_id)
}

/// The size and sha256 digest of a file, read in chunks.
pub fn file_digest(path: &Path) -> (u64, Digest) {
    let mut file =
        File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    (size, hasher.finish())
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            written: 0,
        }
    }

    fn finish(self) -> (u64, Digest, W) {
        (self.written, self.hasher.finish(), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `len` pseudo-random bytes from a seed (xorshift64*): cheap, reproducible, incompressible.
struct SeededBytes {
    state: u64,
    remaining: u64,
}

impl SeededBytes {
    fn new(seed: u64, len: u64) -> Self {
        SeededBytes {
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
            remaining: len,
        }
    }
}

impl Read for SeededBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
