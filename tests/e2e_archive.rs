//! End-to-end interop of `outpost export` / `outpost import` with the real skopeo
//! (`cargo test -p outpost-tests --features e2e --test e2e_archive`): skopeo reads outpost's
//! archives by the names in them, and an archive skopeo wrote is imported and served offline.

use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use oci::Digest;
use oci::ImageRef;
use oci::Registry;
use outpost_tests::fake::{FakeRegistry, OCI_MANIFEST};
use outpost_tests::outpost::{config_in, Client};
use outpost_tests::tools::Tool;
use prefetch::Options;
use storage::Store;

/// A single-layer image whose layer is a real tar, so skopeo can handle it.
fn push(fake: &FakeRegistry, repo: &str, tag: &str) -> (Digest, Vec<Digest>) {
    let mut builder = tar::Builder::new(Vec::new());
    let data = vec![7u8; 40_000];
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "data.bin", data.as_slice())
        .unwrap();
    let layer = Bytes::from(builder.into_inner().unwrap());
    let layer_digest = Digest::compute(oci::Algorithm::Sha256, &layer);
    let config = Bytes::from(
        serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        })
        .to_string(),
    );
    let config_digest = fake.add_blob(repo, config.clone());
    fake.add_blob(repo, layer.clone());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.to_string(), "size": layer.len()}],
    })
    .to_string();
    let digest = fake.add_manifest(repo, tag, OCI_MANIFEST, manifest);
    (digest, vec![config_digest, layer_digest])
}

fn skopeo(args: &[&str]) {
    let output = Tool::Skopeo
        .command()
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn skopeo_reads_exports_and_skopeo_archives_import_and_serve_offline() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let (digest, blobs) = push(&fake, "apps/web", "1");
    let name = format!("{host}/apps/web:1");
    let work = tempfile::tempdir().unwrap();

    // Prefetch and export.
    let source = work.path().join("source");
    let report = prefetch::prefetch(
        config_in(&source),
        &Options {
            images: vec![name.clone()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(report.success(), "{report:?}");
    let ours = work.path().join("ours.tar");
    let hub = Registry::parse("docker.io").unwrap();
    {
        let store = Store::open(&source).unwrap();
        let image = ImageRef::parse(&name, &hub).unwrap();
        archive::export(&store, &[image], &ours).unwrap();
    }

    // skopeo finds the image by its full name and copies it out unchanged.
    let dir = work.path().join("dir");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}:{name}", ours.display()),
        &format!("dir:{}", dir.display()),
    ]);
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    assert_eq!(Digest::compute(oci::Algorithm::Sha256, &manifest), digest);
    for blob in &blobs {
        let bytes = std::fs::read(dir.join(blob.hex())).unwrap();
        assert_eq!(&Digest::compute(oci::Algorithm::Sha256, &bytes), blob);
    }

    // skopeo writes an archive under another name; outpost imports it.
    let theirs = work.path().join("theirs.tar");
    let other = "docker.io/library/web-copy:2";
    skopeo(&[
        "copy",
        &format!("oci-archive:{}:{name}", ours.display()),
        &format!("oci-archive:{}:{other}", theirs.display()),
    ]);
    fake.stop().await;
    let node = work.path().join("node");
    let imported = {
        let store = Store::open(&node).unwrap();
        archive::import(&store, &theirs, &hub, SystemTime::now()).unwrap()
    };
    assert_eq!(imported.tagged.len(), 1);
    assert_eq!(imported.tagged[0].0, other);
    let served_digest = imported.tagged[0].1.clone();

    // Served with no upstream at all: the manifest by tag, then every blob it names.
    let running = server::start(config_in(&node)).await.unwrap();
    let client = Client::new();
    let url = |path: &str| format!("http://{}{path}", running.addr);
    let reply = client
        .get_with(
            &url("/v2/library/web-copy/manifests/2"),
            &[("accept", OCI_MANIFEST)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), served_digest);
    let manifest = reply.json();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for d in digests {
        let blob = client
            .stream(&url(&format!("/v2/library/web-copy/blobs/{d}")), &[])
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.body.unwrap().0.to_string(), d);
    }
}
