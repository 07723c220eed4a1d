//! `outpost prefetch`, black-box: images pulled from a fake upstream that counts requests, into
//! a data dir that outpost then serves with the upstream gone.

use config::Config;
use http::StatusCode;
use oci::Digest;
use oci::{ImageRef, Platform, RepoPattern};
use outpost_tests::fake::{FakeRegistry, PushedImage, OCI_INDEX, OCI_MANIFEST};
use outpost_tests::outpost::{config_in, Client, Outpost};
use prefetch::{Options, PrefetchError};
use storage::Store;

/// An image pushed to the fake: manifest digest and its blobs (config first).
fn image_of(
    fake: &FakeRegistry,
    repo: &str,
    tag: Option<&str>,
    seed: u8,
    layers: usize,
) -> PushedImage {
    let sizes: Vec<usize> = (0..layers).map(|i| 50_000 + i * 1000).collect();
    fake.push_seeded(repo, tag, seed, &sizes)
}

fn push(fake: &FakeRegistry, repo: &str, tag: &str, seed: u8, layers: usize) -> PushedImage {
    image_of(fake, repo, Some(tag), seed, layers)
}

/// A multi-platform image: an index over linux/amd64, linux/arm64 and linux/s390x.
fn push_index(fake: &FakeRegistry, repo: &str, tag: &str) -> (Digest, Vec<PushedImage>) {
    let platforms = ["amd64", "arm64", "s390x"];
    let children: Vec<PushedImage> = platforms
        .iter()
        .enumerate()
        .map(|(i, _)| image_of(fake, repo, None, 100 + i as u8 * 10, 1))
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().zip(platforms).map(|(c, arch)| serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": c.digest.to_string(), "size": c.manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    })
    .to_string();
    (fake.add_manifest(repo, tag, OCI_INDEX, index), children)
}

fn options(images: &[String]) -> Options {
    Options {
        images: images.to_vec(),
        jobs: 2,
        ..Options::default()
    }
}

/// The blob GETs the fake saw, as digests.
fn blob_gets(fake: &FakeRegistry) -> Vec<String> {
    fake.requests_matching("GET", "/blobs/")
        .into_iter()
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn provider_first_then_infrastructure_images_then_the_rest() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let core = push(&fake, "kairos/core", "v1", 1, 1);
    let pause = push(&fake, "infra/pause", "3.9", 2, 1);
    let web = push(&fake, "apps/web", "1", 3, 2);
    let db = push(&fake, "apps/db", "1", 4, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    let default = config.default_registry.clone();
    config.provider.image =
        Some(ImageRef::parse(&format!("{host}/kairos/core:v1"), &default).unwrap());
    let pattern = |p: String| RepoPattern::parse(&p).unwrap();
    config.infrastructure_images = vec![
        pattern(format!("{host}/kairos/core")),
        pattern(format!("{host}/infra/*")),
    ];

    let report = prefetch::prefetch(
        config,
        &options(&[
            format!("{host}/apps/web:1"),
            format!("{host}/infra/pause:3.9"),
            format!("{host}/apps/db:1"),
        ]),
    )
    .await
    .unwrap();
    assert!(report.success(), "{report:?}");

    // The order the upstream saw the manifests in.
    let manifests: Vec<String> = fake
        .requests_matching("GET", "/manifests/")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        manifests,
        [
            "/v2/kairos/core/manifests/v1",
            "/v2/infra/pause/manifests/3.9",
            "/v2/apps/web/manifests/1",
            "/v2/apps/db/manifests/1",
        ]
    );
    let names: Vec<&str> = report.images.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{host}/kairos/core:v1"),
            format!("{host}/infra/pause:3.9"),
            format!("{host}/apps/web:1"),
            format!("{host}/apps/db:1"),
        ]
    );
    // Infrastructure images: fetched (every blob once) and verified, but not stored.
    assert!(!report.images[0].stored && !report.images[1].stored);
    assert!(report.images[2].stored && report.images[3].stored);
    assert!(report.table().contains("not stored (infrastructure image)"));
    let gets = blob_gets(&fake);
    for image in [&core, &pause, &web, &db] {
        for (digest, _) in image.blobs() {
            assert_eq!(
                gets.iter().filter(|g| **g == digest.to_string()).count(),
                1,
                "{digest}"
            );
        }
    }
    let store = Store::open(dir.path()).unwrap();
    for (digest, _) in web.blobs().chain(db.blobs()) {
        assert!(store.stat(digest).is_some(), "{digest} not stored");
    }
    for (digest, _) in core.blobs().chain(pause.blobs()) {
        assert!(store.stat(digest).is_none(), "{digest} stored");
    }
    assert_eq!(
        store.tag(&format!("{host}/apps/web"), "1").unwrap().digest,
        web.digest
    );
    assert_eq!(report.images[2].digest.as_ref(), Some(&web.digest));
    assert_eq!(report.images[2].layers, 2);
    let web_bytes: u64 = web.blobs().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(report.images[2].bytes, web_bytes);
    assert_eq!(report.images[2].from_upstream, web_bytes);
}

#[tokio::test]
async fn a_rerun_after_an_interruption_fetches_only_what_is_missing() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let image = push(&fake, "apps/web", "1", 7, 3);
    let broken = image.layers[1].0.clone();
    fake.corrupt_blob(&broken);
    let dir = tempfile::tempdir().unwrap();
    let names = [format!("{host}/apps/web:1")];

    let first = prefetch::prefetch(config_in(dir.path()), &options(&names))
        .await
        .unwrap();
    assert!(!first.success());
    let error = first.images[0].error.clone().unwrap();
    assert!(error.contains(&broken.to_string()), "{error}");
    assert_eq!(blob_gets(&fake).len(), 4);

    fake.repair_blob(&broken);
    fake.clear_requests();
    let second = prefetch::prefetch(config_in(dir.path()), &options(&names))
        .await
        .unwrap();
    assert!(second.success(), "{second:?}");
    assert_eq!(blob_gets(&fake), [broken.to_string()]);
    let broken_size = image.layers[1].1.len() as u64;
    assert_eq!(second.images[0].from_upstream, broken_size);
    assert_eq!(
        second.images[0].from_store,
        second.images[0].bytes - broken_size
    );

    fake.clear_requests();
    let third = prefetch::prefetch(config_in(dir.path()), &options(&names))
        .await
        .unwrap();
    assert!(third.success());
    assert!(blob_gets(&fake).is_empty());
    assert_eq!(third.images[0].from_upstream, 0);
}

#[tokio::test]
async fn standalone_prefetch_of_an_index_is_served_offline() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let (index, children) = push_index(&fake, "apps/multi", "2");
    let dir = tempfile::tempdir().unwrap();
    let report = prefetch::prefetch(
        config_in(dir.path()),
        &options(&[format!("{host}/apps/multi:2")]),
    )
    .await
    .unwrap();
    assert!(report.success(), "{report:?}");
    assert_eq!(report.images[0].digest.as_ref(), Some(&index));
    assert_eq!(report.images[0].platforms, ["linux/amd64", "linux/arm64"]);
    // The default platforms only: s390x's manifest and layers were never asked for.
    let s390x = &children[2];
    let asked = fake.requests();
    assert!(!asked
        .iter()
        .any(|r| r.path.ends_with(&s390x.digest.to_string())));
    for (digest, _) in s390x.blobs() {
        assert!(!asked.iter().any(|r| r.path.ends_with(&digest.to_string())));
    }

    // Served from the data dir with the upstream gone.
    fake.stop().await;
    let running = server::start(config_in(dir.path())).await.unwrap();
    let client = Client::new();
    let url = |path: String| format!("http://{}{path}", running.addr);
    let reply = client
        .get_with(
            &url(format!("/v2/{host}/apps/multi/manifests/2")),
            &[("accept", OCI_INDEX)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), index);
    for child in &children[..2] {
        let reply = client
            .get_with(
                &url(format!("/v2/{host}/apps/multi/manifests/{}", child.digest)),
                &[("accept", OCI_MANIFEST)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, child.manifest);
        for (digest, bytes) in child.blobs() {
            let blob = client
                .get(&url(format!("/v2/{host}/apps/multi/blobs/{digest}")))
                .await;
            assert_eq!(blob.status, StatusCode::OK);
            assert_eq!(&blob.body, bytes);
        }
    }
}

#[tokio::test]
async fn platforms_can_be_chosen_and_a_missing_one_is_reported() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let (_, children) = push_index(&fake, "apps/multi", "2");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&[format!("{host}/apps/multi:2")]);
    opts.platforms = vec![Platform::parse("linux/s390x").unwrap()];
    let report = prefetch::prefetch(config_in(dir.path()), &opts)
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    assert_eq!(report.images[0].platforms, ["linux/s390x"]);
    let gets = blob_gets(&fake);
    assert_eq!(gets.len(), children[2].blobs().count());

    opts.platforms = vec![Platform::parse("windows/amd64").unwrap()];
    let report = prefetch::prefetch(config_in(dir.path()), &opts)
        .await
        .unwrap();
    assert!(!report.success());
    let error = report.images[0].error.clone().unwrap();
    assert!(error.contains("windows/amd64"), "{error}");
    assert!(error.contains("linux/s390x"), "{error}");
}

#[tokio::test]
async fn through_a_running_server_which_stores_the_content() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let image = push(&fake, "apps/web", "1", 9, 2);
    // The server fetches from the fake's host because its operator allowed it.
    let outpost = Outpost::start(Config {
        allowed_hosts: Some(vec![host.parse().unwrap()]),
        ..Config::default()
    })
    .await;
    let names = [format!("{host}/apps/web:1")];

    // Without --server, the locked data dir is explained, with the way out.
    let mut local = config_in(outpost.data_dir.path());
    local.listen = outpost.running.addr;
    let error = prefetch::prefetch(local, &options(&names))
        .await
        .unwrap_err();
    assert!(matches!(error, PrefetchError::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("--server http://{}", outpost.running.addr)),
        "{message}"
    );
    assert!(blob_gets(&fake).is_empty());

    let mut through = options(&names);
    through.server = Some(outpost.url(""));
    let scratch = tempfile::tempdir().unwrap();
    let report = prefetch::prefetch(config_in(scratch.path()), &through)
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    let total: u64 = image.blobs().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(report.images[0].via_server, total);
    assert_eq!(report.images[0].digest.as_ref(), Some(&image.digest));
    assert_eq!(blob_gets(&fake).len(), image.blobs().count());

    // The server kept it: again through it, the upstream sees no blob request.
    fake.clear_requests();
    let report = prefetch::prefetch(config_in(scratch.path()), &through)
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    assert!(blob_gets(&fake).is_empty());
    // And nothing was written to the local data dir of the prefetch itself.
    assert!(!scratch.path().join("blobs").exists());
}

#[tokio::test]
async fn with_referrers_signatures_come_along_and_verify_offline() {
    const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    const SBOM: &str = "application/spdx+json";
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let (index, children) = push_index(&fake, "apps/signed", "1");
    let index_image = PushedImage {
        digest: index.clone(),
        manifest: bytes::Bytes::new(),
        config: children[0].config.clone(),
        layers: Vec::new(),
    };
    // A signature of the index, an SBOM of the amd64 image, and one of s390x (not fetched).
    let sig = fake.push_referrer("apps/signed", &index_image, SIG, b"signature of the index");
    let sbom = fake.push_referrer("apps/signed", &children[0], SBOM, b"sbom of amd64");
    let unwanted = fake.push_referrer("apps/signed", &children[2], SBOM, b"sbom of s390x");
    let dir = tempfile::tempdir().unwrap();

    let report = prefetch::prefetch(
        config_in(dir.path()),
        &Options {
            with_referrers: true,
            ..options(&[format!("{host}/apps/signed:1")])
        },
    )
    .await
    .unwrap();
    assert!(report.success(), "{report:?}");
    assert_eq!(report.images[0].referrers, 2, "{report:?}");
    assert!(report.table().contains("2 referrers"), "{}", report.table());
    assert!(!fake
        .requests()
        .iter()
        .any(|r| r.path.ends_with(&unwanted.digest.to_string())));

    // Offline: the referrers of the index and of amd64, their manifests and blobs.
    fake.stop().await;
    let running = server::start(config_in(dir.path())).await.unwrap();
    let client = Client::new();
    let url = |path: String| format!("http://{}{path}", running.addr);
    for (subject, referrer) in [(&index, &sig), (&children[0].digest, &sbom)] {
        let reply = client
            .get(&url(format!("/v2/{host}/apps/signed/referrers/{subject}")))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let listed: Vec<String> = reply.json()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, [referrer.digest.to_string()]);
        let manifest = client
            .get_with(
                &url(format!(
                    "/v2/{host}/apps/signed/manifests/{}",
                    referrer.digest
                )),
                &[("accept", OCI_MANIFEST)],
            )
            .await;
        assert_eq!(manifest.status, StatusCode::OK);
        assert_eq!(manifest.body, referrer.manifest);
        for (digest, bytes) in referrer.blobs() {
            let blob = client
                .get(&url(format!("/v2/{host}/apps/signed/blobs/{digest}")))
                .await;
            assert_eq!(blob.status, StatusCode::OK);
            assert_eq!(&blob.body, bytes);
        }
    }
}

/// prefetch is there to keep images for offline use: what the store has no room for fails the
/// image, naming the limit, and is not downloaded at all (never "done" with nothing kept).
#[tokio::test]
async fn what_the_store_has_no_room_for_fails_the_image_and_is_not_downloaded() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    let image = push(&fake, "apps/web", "1", 5, 2);
    let names = [format!("{host}/apps/web:1")];

    // Layers over cache.maxSize: the manifest and the small config are kept, the layers are
    // refused before any GET.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.cache.max_size = Some(10_000);
    let report = prefetch::prefetch(config, &options(&names)).await.unwrap();
    assert!(!report.success(), "{report:?}");
    let error = report.images[0].error.clone().unwrap();
    assert!(error.contains("was not stored"), "{error}");
    assert!(error.contains("cache.maxSize"), "{error}");
    let gets = blob_gets(&fake);
    for (layer, _) in &image.layers {
        assert!(
            !gets.contains(&layer.to_string()),
            "{layer} was downloaded though it could not be kept: {gets:?}"
        );
    }
    let store = Store::open(dir.path()).unwrap();
    for (layer, _) in &image.layers {
        assert!(store.stat(layer).is_none(), "{layer} stored over the limit");
    }
    drop(store);

    // No room on the file system (cache.minFree 100 %): not even the manifest is kept, and the
    // image fails there.
    fake.clear_requests();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.cache.min_free = config::Reserve::Percent(100);
    let report = prefetch::prefetch(config, &options(&names)).await.unwrap();
    assert!(!report.success(), "{report:?}");
    let error = report.images[0].error.clone().unwrap();
    assert!(error.contains("the manifest"), "{error}");
    assert!(error.contains("cache.minFree"), "{error}");
    assert!(blob_gets(&fake).is_empty(), "{:?}", blob_gets(&fake));
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.stat(&image.digest).is_none(),
        "the manifest was stored"
    );
}
