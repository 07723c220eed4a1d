//! Nodes of one site sharing a bucket (`outpost.sharedStore`), black-box: outposts in-process
//! with separate data dirs, a fake upstream that counts what it sends, and the in-process fake S3.
//! What a node fetched, another serves without the upstream; a corrupt object is never served
//! as good; a shared store that does not answer degrades the tier, not the node; nodes that miss
//! one blob at once download it once.

use std::time::Duration;

use bytes::Bytes;
use config::{Config, SharedStoreConfig};
use http::StatusCode;
use oci::{Digest, Secret};
use outpost_tests::fake::{FakeRegistry, PushedImage};
use outpost_tests::outpost::{external_config, Client, Outpost};
use outpost_tests::s3::FakeS3;
use outpost_tests::wait::{wait_for_async, wait_until, DEADLINE};

const REPO: &str = "p/quay.io/app/x";

fn shared_config(upstream: &str, s3: &FakeS3) -> Config {
    let mut config = external_config(upstream, "p", None);
    config.shared_store = Some(SharedStoreConfig {
        endpoint: s3.endpoint(),
        region: "garage".to_owned(),
        bucket: s3.bucket().to_owned(),
        access_key_id: s3.access_key_id().to_owned(),
        secret_access_key: Secret::new(s3.secret_access_key()),
        prefix: "site-a/".to_owned(),
        max_size: None,
        timeout: Duration::from_secs(2),
    });
    config
}

fn push(fake: &FakeRegistry, layer: Bytes) -> PushedImage {
    fake.push_image(REPO, Some("v1"), r#"{"os":"linux"}"#, vec![layer])
}

fn blob_key(digest: &Digest) -> String {
    format!("site-a/blobs/sha256/{}", digest.hex())
}

/// Waits until the bucket holds every blob of `image` and its tag record.
async fn wait_uploaded(s3: &FakeS3, image: &PushedImage) {
    let mut keys: Vec<String> = image.blobs().map(|(d, _)| blob_key(d)).collect();
    keys.push(blob_key(&image.digest));
    keys.push("site-a/repositories/quay.io/app/x/_tags/v1".to_owned());
    wait_until("the image in the shared store", DEADLINE, || {
        keys.iter().all(|k| s3.object(k).is_some())
    })
    .await;
}

async fn pull(client: &Client, outpost: &Outpost, image: &PushedImage) {
    let manifest = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(manifest.status, StatusCode::OK, "{:?}", manifest.body);
    assert_eq!(manifest.digest(), image.digest);
    for (digest, _) in image.blobs() {
        let blob = client
            .stream(
                &outpost.url(&format!("/v2/quay.io/app/x/blobs/{digest}")),
                &[],
            )
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(&blob.body.unwrap().0, digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pulls_by_tag_and_digest_what_another_fetched_while_the_upstream_is_down() {
    let s3 = FakeS3::start("outpost").await;
    let fake = FakeRegistry::start().await;
    let image = push(&fake, Bytes::from(vec![5u8; 3 << 20]));
    let a = Outpost::start(shared_config(&fake.host(), &s3)).await;
    let client = Client::new();
    pull(&client, &a, &image).await;
    wait_uploaded(&s3, &image).await;
    let upstream = fake.host();
    drop(fake); // the upstream is gone

    let b = Outpost::start(shared_config(&upstream, &s3)).await;
    pull(&client, &b, &image).await;
    let by_digest = client
        .get(&b.url(&format!("/v2/quay.io/app/x/manifests/{}", image.digest)))
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    assert_eq!(by_digest.digest(), image.digest);
    let shared = b
        .metric("outpost_cache_requests_total{outcome=\"shared\"}")
        .await;
    assert_eq!(
        shared, 3.0,
        "manifest by tag, config and layer came from the shared store"
    );
    // B keeps them: served again with the shared store gone too.
    drop(s3);
    wait_until("B's fills committed", DEADLINE, || b.stored_blobs() == 3).await;
    pull(&client, &b, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shared_object_is_not_served_as_good_and_is_fetched_again() {
    let s3 = FakeS3::start("outpost").await;
    let fake = FakeRegistry::start().await;
    let image = push(&fake, Bytes::from(vec![9u8; 1 << 20]));
    let a = Outpost::start(shared_config(&fake.host(), &s3)).await;
    let client = Client::new();
    pull(&client, &a, &image).await;
    wait_uploaded(&s3, &image).await;
    let (layer, bytes) = &image.layers[0];
    s3.overwrite(&blob_key(layer), Bytes::from(wrong_bytes(bytes)));

    let b = Outpost::start(shared_config(&fake.host(), &s3)).await;
    let url = b.url(&format!("/v2/quay.io/app/x/blobs/{layer}"));
    let first = client.stream(&url, &[]).await;
    assert!(
        !matches!(&first.body, Ok((d, _)) if d == layer),
        "a corrupt object was served as good"
    );
    assert_eq!(b.metric("outpost_shared_store_corrupt_total").await, 1.0);
    wait_until("the corrupt object removed", DEADLINE, || {
        s3.object(&blob_key(layer)).as_deref() != Some(&wrong_bytes(bytes)[..])
    })
    .await;
    let again = client.stream(&url, &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(&again.body.unwrap().0, layer);
    assert_eq!(
        fake.requests_matching("GET", &format!("blobs/{layer}"))
            .len(),
        2,
        "A's download and B's, after the corrupt object"
    );
}

fn wrong_bytes(bytes: &Bytes) -> Vec<u8> {
    let mut wrong = bytes.to_vec();
    wrong[1000] ^= 0xff;
    wrong
}

// On the current-thread runtime: the test moves tokio's clock past the back-off.
#[tokio::test]
async fn a_shared_store_that_does_not_answer_degrades_the_tier_not_the_node() {
    let s3 = FakeS3::start("outpost").await;
    s3.set_unreachable(true);
    let fake = FakeRegistry::start().await;
    let image = push(&fake, Bytes::from(vec![3u8; 1 << 20]));
    let a = Outpost::start(shared_config(&fake.host(), &s3)).await;
    let client = Client::new();
    let started = std::time::Instant::now();
    pull(&client, &a, &image).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a dead shared store held the pull for {:?}",
        started.elapsed()
    );
    let ready = client.get(&a.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(a.metric("outpost_shared_store_up").await, 0.0);
    // The copies that could not go out are written down.
    let pending = a.data_dir.path().join("shared-pending");
    wait_until("pending uploads written down", DEADLINE, || {
        std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0) >= 3
    })
    .await;

    // The store answers again: after the back-off, the next call finds it and the pending
    // copies go out.
    s3.set_unreachable(false);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(16)).await;
    tokio::time::resume();
    let client = Client::new();
    let unknown = format!("/v2/quay.io/app/x/manifests/sha256:{}", "0".repeat(64));
    let _ = client.get(&a.url(&unknown)).await;
    wait_uploaded(&s3, &image).await;
    wait_for_async("no pending upload left", DEADLINE, || async {
        let n = a.metric("outpost_shared_store_pending_uploads").await;
        if n == 0.0 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    assert_eq!(a.metric("outpost_shared_store_up").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_missing_one_blob_at_once_download_it_once() {
    let s3 = FakeS3::start("outpost").await;
    let fake = FakeRegistry::start().await;
    let len = 24u64 << 20;
    let digest = fake.add_large_blob(REPO, len, 7);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Outpost::start(shared_config(&fake.host(), &s3)).await);
    }
    let client = Client::new();
    let path = format!("/v2/quay.io/app/x/blobs/{digest}");
    let pulls: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (client, url) = (client.clone(), node.url(&path));
            tokio::spawn(async move { client.stream(&url, &[]).await })
        })
        .collect();
    for pull in pulls {
        let streamed = pull.await.unwrap();
        assert_eq!(streamed.status, StatusCode::OK);
        assert_eq!(streamed.body.unwrap(), (digest.clone(), len));
    }
    let gets = fake
        .requests_matching("GET", &format!("blobs/{digest}"))
        .len();
    println!("upstream GETs for 3 nodes x 1 blob, cold and simultaneous: {gets}");
    assert_eq!(gets, 1, "the three nodes downloaded the blob {gets} times");
}
