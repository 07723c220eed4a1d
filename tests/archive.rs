//! `outpost export` and `outpost import`, black-box: images prefetched from a fake upstream,
//! exported to an OCI image layout archive, read back, imported into another data dir and served
//! from there with the upstream gone; corrupt and incomplete archives refused with nothing tagged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use archive::ArchiveError;
use http::StatusCode;
use oci::Digest;
use oci::ImageRef;
use oci::Registry;
use outpost_tests::fake::{FakeRegistry, PushedImage, OCI_MANIFEST};
use outpost_tests::outpost::{config_in, Client};
use prefetch::Options;
use storage::Store;

fn push(fake: &FakeRegistry, repo: &str, tag: &str, seed: u8) -> PushedImage {
    fake.push_seeded(repo, Some(tag), seed, &[70_000])
}

fn hub() -> Registry {
    Registry::parse("docker.io").unwrap()
}

/// Prefetches `names` from the fake into `dir`.
async fn prefetched(dir: &Path, names: &[String]) {
    let options = Options {
        images: names.to_vec(),
        ..Options::default()
    };
    let report = prefetch::prefetch(config_in(dir), &options).await.unwrap();
    assert!(report.success(), "{report:?}");
}

/// Every file of a tar: path -> bytes.
fn read_tar(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

/// Writes `files` as a tar at `path`.
fn write_tar(path: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}

/// Exports `names` from a store freshly prefetched from `fake`.
async fn exported(names: &[String], out: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    prefetched(dir.path(), names).await;
    let store = Store::open(dir.path()).unwrap();
    let images: Vec<ImageRef> = names
        .iter()
        .map(|n| ImageRef::parse(n, &hub()).unwrap())
        .collect();
    archive::export(&store, &images, out).unwrap();
    dir
}

#[tokio::test]
async fn export_writes_an_oci_image_layout_with_names_and_verified_blobs() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 1);
    let db = push(&fake, "apps/db", "2", 2);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("images.tar");
    let names = [format!("{host}/apps/web:1"), format!("{host}/apps/db:2")];
    let _store = exported(&names, &tar).await;

    let files = read_tar(&tar);
    let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for (entry, (name, image)) in manifests.iter().zip(names.iter().zip([&web, &db])) {
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            *name
        );
        assert_eq!(entry["digest"], image.digest.to_string());
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert_eq!(entry["size"], image.manifest.len());
    }
    // Every blob of both images, named by its digest, and nothing else.
    let blobs: BTreeMap<&str, &Vec<u8>> = files
        .iter()
        .filter_map(|(name, bytes)| Some((name.strip_prefix("blobs/sha256/")?, bytes)))
        .collect();
    let mut expected: Vec<String> = [&web, &db]
        .iter()
        .flat_map(|i| {
            std::iter::once(i.digest.hex().to_owned())
                .chain(i.blobs().map(|(d, _)| d.hex().to_owned()))
        })
        .collect();
    expected.sort();
    assert_eq!(blobs.keys().copied().collect::<Vec<_>>(), expected);
    for (hex, bytes) in blobs {
        let digest = Digest::compute(oci::Algorithm::Sha256, bytes);
        assert_eq!(digest.hex(), hex);
    }
    assert!(!out.path().join("images.tar.partial").exists());
}

#[tokio::test]
async fn export_refuses_an_image_that_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let out = dir.path().join("x.tar");
    let image = ImageRef::parse("quay.io/kairos/core:v1", &hub()).unwrap();
    let error = archive::export(&store, &[image], &out).unwrap_err();
    assert!(matches!(error, ArchiveError::NotStored { .. }), "{error}");
    assert!(error.to_string().contains("quay.io/kairos/core:v1"));
    assert!(!out.exists());
}

#[tokio::test]
async fn an_imported_archive_is_served_with_no_upstream() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 3);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("images.tar");
    let _source = exported(&[format!("{host}/apps/web:1")], &tar).await;
    fake.stop().await;

    let node = tempfile::tempdir().unwrap();
    {
        let store = Store::open(node.path()).unwrap();
        let report = archive::import(&store, &tar, &hub(), SystemTime::now()).unwrap();
        assert_eq!(
            report.tagged,
            [(format!("{host}/apps/web:1"), web.digest.clone())]
        );
        assert_eq!(report.blobs_new, 3);
        // Importing again verifies the archive's copies and adds nothing.
        let again = archive::import(&store, &tar, &hub(), SystemTime::now()).unwrap();
        assert_eq!((again.blobs_new, again.blobs_present), (0, 3));
    }

    let running = server::start(config_in(node.path())).await.unwrap();
    let client = Client::new();
    let url = |path: String| format!("http://{}{path}", running.addr);
    let reply = client
        .get_with(
            &url(format!("/v2/{host}/apps/web/manifests/1")),
            &[("accept", OCI_MANIFEST)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, web.manifest);
    assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    for (digest, bytes) in web.blobs() {
        let blob = client
            .get(&url(format!("/v2/{host}/apps/web/blobs/{digest}")))
            .await;
        let body = String::from_utf8_lossy(&blob.body);
        assert_eq!(blob.status, StatusCode::OK, "{digest}: {body}");
        assert_eq!(&blob.body, bytes);
    }
    let tags = client
        .get(&url(format!("/v2/{host}/apps/web/tags/list")))
        .await;
    assert_eq!(tags.status, StatusCode::OK);
    assert_eq!(tags.json()["tags"], serde_json::json!(["1"]));
}

#[tokio::test]
async fn a_corrupt_archive_is_refused_with_the_digest_and_nothing_is_tagged() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 4);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("images.tar");
    let _source = exported(&[format!("{host}/apps/web:1")], &tar).await;
    fake.stop().await;

    let layer = &web.layers[0].0;
    let mut files = read_tar(&tar);
    let entry = files
        .get_mut(&format!("blobs/sha256/{}", layer.hex()))
        .unwrap();
    entry[100] ^= 0xff;
    let corrupt = out.path().join("corrupt.tar");
    write_tar(&corrupt, &files);

    let node = tempfile::tempdir().unwrap();
    {
        let store = Store::open(node.path()).unwrap();
        let error = archive::import(&store, &corrupt, &hub(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Corrupt { digest, .. } if digest == layer),
            "{error}"
        );
        assert!(error.to_string().contains(&layer.to_string()), "{error}");
        assert!(store.tags(&format!("{host}/apps/web")).unwrap().is_empty());
        assert!(store.repositories().is_empty());
        assert!(store.stat(layer).is_none());
    }
    let running = server::start(config_in(node.path())).await.unwrap();
    let reply = Client::new()
        .get_with(
            &format!("http://{}/v2/{host}/apps/web/manifests/1", running.addr),
            &[("accept", OCI_MANIFEST)],
        )
        .await;
    assert_ne!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn an_archive_missing_a_layer_is_refused_and_nothing_is_tagged() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 5);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("images.tar");
    let _source = exported(&[format!("{host}/apps/web:1")], &tar).await;

    let layer = &web.layers[0].0;
    let mut files = read_tar(&tar);
    files.remove(&format!("blobs/sha256/{}", layer.hex()));
    let incomplete = out.path().join("incomplete.tar");
    write_tar(&incomplete, &files);

    let node = tempfile::tempdir().unwrap();
    let store = Store::open(node.path()).unwrap();
    let error = archive::import(&store, &incomplete, &hub(), SystemTime::now()).unwrap_err();
    assert!(
        matches!(&error, ArchiveError::Missing { digest, .. } if digest == layer),
        "{error}"
    );
    assert!(store.tags(&format!("{host}/apps/web")).unwrap().is_empty());

    // Not an image layout at all.
    let mut files = read_tar(&tar);
    files.remove("oci-layout");
    let bare = out.path().join("bare.tar");
    write_tar(&bare, &files);
    let error = archive::import(&store, &bare, &hub(), SystemTime::now()).unwrap_err();
    assert!(matches!(error, ArchiveError::NotLayout { .. }), "{error}");
}

/// A media type with a control character in an archive (declared in `index.json`, or in the
/// manifest's own `mediaType`) is refused at import, naming the manifest; nothing is tagged.
/// Stored, it would have become the `Content-Type` of every pull of that manifest.
#[tokio::test]
async fn an_archive_with_a_control_character_in_a_media_type_is_refused() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 5);
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("images.tar");
    let _source = exported(&[format!("{host}/apps/web:1")], &tar).await;
    let files = read_tar(&tar);
    let hostile = format!("{OCI_MANIFEST}\u{7}");

    // 1. Declared in index.json.
    let mut declared = files.clone();
    let mut index: serde_json::Value = serde_json::from_slice(&declared["index.json"]).unwrap();
    index["manifests"][0]["mediaType"] = serde_json::Value::String(hostile.clone());
    declared.insert("index.json".into(), serde_json::to_vec(&index).unwrap());
    let declared_tar = out.path().join("declared.tar");
    write_tar(&declared_tar, &declared);

    // 2. In the manifest itself (a new manifest, so a new digest, named by index.json).
    let mut written = files.clone();
    let manifest: serde_json::Value = serde_json::from_slice(&web.manifest).unwrap();
    let mut manifest = manifest;
    manifest["mediaType"] = serde_json::Value::String(hostile);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::compute(oci::Algorithm::Sha256, &bytes);
    written.insert(format!("blobs/sha256/{}", digest.hex()), bytes.clone());
    let mut index: serde_json::Value = serde_json::from_slice(&written["index.json"]).unwrap();
    index["manifests"][0]["mediaType"] = serde_json::Value::String(String::new());
    index["manifests"][0]["digest"] = serde_json::Value::String(digest.to_string());
    index["manifests"][0]["size"] = serde_json::json!(bytes.len());
    written.insert("index.json".into(), serde_json::to_vec(&index).unwrap());
    let written_tar = out.path().join("written.tar");
    write_tar(&written_tar, &written);

    for (tar, manifest) in [(&declared_tar, &web.digest), (&written_tar, &digest)] {
        let node = tempfile::tempdir().unwrap();
        let store = Store::open(node.path()).unwrap();
        let error = archive::import(&store, tar, &hub(), SystemTime::now()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ArchiveError::Manifest { .. }), "{message}");
        assert!(message.contains(&manifest.to_string()), "{message}");
        assert!(message.contains("media type"), "{message}");
        assert!(
            store.tags(&format!("{host}/apps/web")).unwrap().is_empty(),
            "a tag points at a refused image"
        );
    }
}

#[tokio::test]
async fn referrers_travel_in_the_archive_and_verify_on_the_node() {
    const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let web = push(&fake, "apps/web", "1", 5);
    let sig = fake.push_referrer("apps/web", &web, SIG, b"signature of web");
    let name = format!("{host}/apps/web:1");

    // Prefetched with its referrers, exported: the signature and its blobs are in the archive.
    let source = tempfile::tempdir().unwrap();
    let options = Options {
        images: vec![name.clone()],
        with_referrers: true,
        ..Options::default()
    };
    let report = prefetch::prefetch(config_in(source.path()), &options)
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("signed.tar");
    let report = {
        let store = Store::open(source.path()).unwrap();
        archive::export(&store, &[ImageRef::parse(&name, &hub()).unwrap()], &tar).unwrap()
    };
    assert_eq!(report.referrers, 1, "{report}");
    let files = read_tar(&tar);
    for (digest, _) in sig.blobs() {
        assert!(files.contains_key(&format!("blobs/sha256/{}", digest.hex())));
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [name.clone(), format!("{host}/apps/web@{}", sig.digest)]
    );
    fake.stop().await;

    // Imported on a node that never saw the upstream: the referrers API answers from the store.
    let node = tempfile::tempdir().unwrap();
    {
        let store = Store::open(node.path()).unwrap();
        let report = archive::import(&store, &tar, &hub(), SystemTime::now()).unwrap();
        assert_eq!(report.referrers, 1, "{report}");
    }
    let running = server::start(config_in(node.path())).await.unwrap();
    let client = Client::new();
    let url = |path: String| format!("http://{}{path}", running.addr);
    let reply = client
        .get(&url(format!(
            "/v2/{host}/apps/web/referrers/{}?artifactType={}",
            web.digest,
            SIG.replace('+', "%2B")
        )))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let listed = &reply.json()["manifests"];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["digest"], sig.digest.to_string());
    assert_eq!(listed[0]["artifactType"], SIG);
    let manifest = client
        .get_with(
            &url(format!("/v2/{host}/apps/web/manifests/{}", sig.digest)),
            &[("accept", OCI_MANIFEST)],
        )
        .await;
    assert_eq!(manifest.body, sig.manifest);
    for (digest, bytes) in sig.blobs() {
        let blob = client
            .get(&url(format!("/v2/{host}/apps/web/blobs/{digest}")))
            .await;
        assert_eq!(&blob.body, bytes);
    }
}
