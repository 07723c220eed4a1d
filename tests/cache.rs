//! The local registry, black-box: what is served from the store, what reaches the upstream, and
//! what survives failures. The fake upstream counts every request and blob byte it sends.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use config::Config;
use futures_util::future::join_all;
use http::StatusCode;
use oci::Digest;
use outpost_tests::fake::{FakeRegistry, PushedImage, OCI_INDEX, OCI_MANIFEST};
use outpost_tests::logs::Captured;
use outpost_tests::outpost::{external_config, Client, Opened, Outpost, Streamed};
use outpost_tests::wait::{wait_for, wait_for_async, wait_until, within, DEADLINE};

fn push_image(fake: &FakeRegistry, repo: &str, tag: &str, layer: Bytes) -> PushedImage {
    fake.push_image(
        repo,
        Some(tag),
        &format!(r#"{{"os":"linux","tag":"{tag}"}}"#),
        vec![layer],
    )
}

const REPO: &str = "p/quay.io/app/x";

fn blob_path(image_digest: &Digest) -> String {
    format!("/v2/quay.io/app/x/blobs/{image_digest}")
}

/// Blob files under the data dir's `blobs/`.
fn stored_blobs(data_dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("blobs"), &mut out);
    out
}

/// Pulls the whole image (manifest by tag, config, layer) and checks every digest.
async fn pull(client: &Client, outpost: &Outpost, image: &PushedImage) {
    let manifest = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(manifest.status, StatusCode::OK, "{:?}", manifest.body);
    assert_eq!(manifest.digest(), image.digest);
    for (digest, _) in image.blobs() {
        let blob = client.stream(&outpost.url(&blob_path(digest)), &[]).await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(&blob.body.unwrap().0, digest);
    }
}

/// Moves tokio's clock (which the cache's TTL follows) forward. Idle keep-alive connections
/// time out in the jump, so callers take a fresh client afterwards.
async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_warm_pull_costs_the_upstream_nothing() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![7u8; 300_000]));
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    pull(&client, &outpost, &image).await;
    let cold_requests = fake.requests().len();
    let cold_bytes = fake.blob_bytes_sent();
    assert_eq!(
        fake.requests_matching("GET", &image.layers[0].0.to_string())
            .len(),
        1,
        "the cold pull fetched the layer more than once"
    );
    // Warm means stored: the commits land just after the clients have their last bytes.
    wait_until_no_fill(&outpost).await;
    pull(&client, &outpost, &image).await;
    // By digest too, and HEAD.
    let by_digest = client
        .get(&outpost.url(&format!("/v2/quay.io/app/x/manifests/{}", image.digest)))
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    let head = client
        .head(&outpost.url(&blob_path(&image.layers[0].0)))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.header("content-length"),
        Some(image.layers[0].1.len().to_string().as_str())
    );
    assert_eq!(
        fake.requests().len(),
        cold_requests,
        "{:#?}",
        fake.requests()
    );
    assert_eq!(fake.blob_bytes_sent(), cold_bytes);
    // The catalog lists the repository under its source name.
    let catalog = client.get(&outpost.url("/v2/_catalog")).await;
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["quay.io/app/x"])
    );
}

/// Reads the rest of every body, concurrently; returns them in the order given.
async fn finish_all(opened: Vec<Opened>) -> Vec<Streamed> {
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|o| tokio::spawn(within("the rest of a body", DEADLINE, o.finish())))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_one_upstream_download() {
    let fake = FakeRegistry::start().await;
    let len = 64u64 << 20;
    let digest = fake.add_large_blob(REPO, len, 3);
    // The upstream sends 16 MiB, then holds the body until released: the download is running,
    // half done, for as long as the clients take to arrive.
    let held_at = 16u64 << 20;
    fake.stall_blobs_after(held_at);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url(&blob_path(&digest));
    // Ten clients arrive together and start the download (a response's headers go out once
    // the upstream has answered)…
    let mut opened = within(
        "the first ten responses",
        DEADLINE,
        join_all((0..10).map(|_| client.open(&url, &[]))),
    )
    .await;
    wait_until("the upstream to send 16 MiB and hold", DEADLINE, || {
        fake.blob_bytes_sent() == held_at
    })
    .await;
    // …ten more arrive mid-download, and are answered while it is held there.
    opened.extend(
        within(
            "the ten responses mid-download",
            DEADLINE,
            join_all((0..10).map(|_| client.open(&url, &[]))),
        )
        .await,
    );
    assert_eq!(fake.blob_bytes_sent(), held_at);
    for o in &opened {
        assert_eq!(o.status, StatusCode::OK);
        assert_eq!(
            o.headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(len.to_string().as_str())
        );
    }
    fake.release_blobs();
    for streamed in finish_all(opened).await {
        assert_eq!(streamed.status, StatusCode::OK);
        assert_eq!(streamed.body.unwrap(), (digest.clone(), len));
    }
    assert_eq!(
        fake.requests_matching("GET", &digest.to_string()).len(),
        1,
        "upstream asked more than once"
    );
    assert_eq!(fake.blob_bytes_sent(), len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_received_reach_the_client_while_the_upstream_pauses() {
    let fake = FakeRegistry::start().await;
    let len = 8u64 << 20;
    let digest = fake.add_large_blob(REPO, len, 6);
    // The upstream sends a little (less than outpost's batches and notification steps), then
    // pauses: what it sent must reach the client during the pause, not after it.
    let held_at = 300u64 << 10;
    fake.stall_blobs_after(held_at);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let mut opened = within(
        "the response",
        DEADLINE,
        client.open(&outpost.url(&blob_path(&digest)), &[]),
    )
    .await;
    assert_eq!(opened.status, StatusCode::OK);
    let got = within(
        "the bytes sent before the pause",
        DEADLINE,
        opened.read_at_least(held_at),
    )
    .await
    .expect("the body so far");
    assert_eq!(got, held_at, "exactly what the upstream has sent");
    assert_eq!(
        fake.blob_bytes_sent(),
        held_at,
        "the upstream was still paused"
    );
    fake.release_blobs();
    let streamed = within("the rest of the body", DEADLINE, opened.finish()).await;
    assert_eq!(streamed.body.unwrap(), (digest, len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_blob_does_not_stop_the_fill() {
    let logs = Captured::global();
    let fake = FakeRegistry::start().await;
    let len = 16u64 << 20;
    let digest = fake.add_large_blob(REPO, len, 4);
    // The upstream sends 4 MiB, then holds the body until released: the client leaves while
    // the download is certainly running.
    let held_at = 4u64 << 20;
    fake.stall_blobs_after(held_at);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let path = blob_path(&digest);
    let url = outpost.url(&path);
    // The first client starts the download and reads a little; a second one joins.
    let leaver_client = Client::new();
    let mut leaver = within(
        "the first client's response",
        DEADLINE,
        leaver_client.open(&url, &[]),
    )
    .await;
    assert_eq!(leaver.status, StatusCode::OK);
    within(
        "the first client's first MiB",
        DEADLINE,
        leaver.read_at_least(1 << 20),
    )
    .await
    .expect("the first client's first MiB");
    let stayer = within(
        "the second client's response",
        DEADLINE,
        client.open(&url, &[]),
    )
    .await;
    assert_eq!(stayer.status, StatusCode::OK);
    // The first client hangs up mid-blob; outpost's access log line for it (written when its
    // response is abandoned) shows outpost has seen it go.
    drop(leaver);
    drop(leaver_client);
    let line = wait_for(
        "outpost to log the first client's request as incomplete",
        DEADLINE,
        || {
            logs.access_lines(&fake.host())
                .into_iter()
                .find(|l| l["fields"]["path"] == path.as_str() && l["fields"]["complete"] == false)
                .ok_or_else(|| logs.access_lines(&fake.host()))
        },
    )
    .await;
    assert!(line["fields"]["bytes"].as_u64().is_some_and(|b| b < len));
    assert_eq!(fake.blob_bytes_sent(), held_at, "the download went on");
    // The upstream goes on; the second client gets the whole blob from the one download.
    fake.release_blobs();
    let stayer = within("the second client's body", DEADLINE, stayer.finish()).await;
    assert_eq!(stayer.body.unwrap(), (digest.clone(), len));
    assert_eq!(fake.requests_matching("GET", &digest.to_string()).len(), 1);
    // The blob was stored: the next client costs the upstream nothing.
    fake.clear_requests();
    let again = client.stream(&outpost.url(&blob_path(&digest)), &[]).await;
    assert_eq!(again.body.unwrap().0, digest);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_corrupt_upstream_blob_is_not_stored_and_the_next_pull_recovers() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![9u8; 500_000]));
    fake.corrupt_blob(&image.layers[0].0);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let bad = client
        .stream(&outpost.url(&blob_path(&image.layers[0].0)), &[])
        .await;
    assert!(bad.body.is_err(), "a corrupt blob ended cleanly");
    // The client's error comes first; the fill has ended once the gauge says so.
    wait_until_no_fill(&outpost).await;
    assert!(!stored_blobs(outpost.data_dir.path()).contains(&image.layers[0].0.hex().to_owned()));
    fake.repair_blob(&image.layers[0].0);
    let good = client
        .stream(&outpost.url(&blob_path(&image.layers[0].0)), &[])
        .await;
    assert_eq!(
        good.body.unwrap(),
        (image.layers[0].0.clone(), image.layers[0].1.len() as u64)
    );
    assert_eq!(
        fake.requests_matching("GET", &image.layers[0].0.to_string())
            .len(),
        2
    );
    // The commit (fsync, rename) finishes after the client has its last byte.
    wait_until_stored(outpost.data_dir.path(), &image.layers[0].0).await;
}

/// Waits until the blob is in the data dir's `blobs/`.
async fn wait_until_stored(data_dir: &Path, digest: &Digest) {
    let what = format!("{digest} to be stored under blobs/");
    wait_for(&what, DEADLINE, || {
        let stored = stored_blobs(data_dir);
        if stored.contains(&digest.hex().to_owned()) {
            Ok(())
        } else {
            Err(stored)
        }
    })
    .await;
}

/// Waits until outpost's `outpost_fills_in_flight` gauge is 0: every fill has ended (stored
/// or failed; a successful fill leaves the gauge after its commit).
async fn wait_until_no_fill(outpost: &Outpost) {
    wait_for_async("no fill in flight", DEADLINE, || async move {
        let fills = outpost.metric("outpost_fills_in_flight").await;
        if fills == 0.0 {
            Ok(())
        } else {
            Err(fills)
        }
    })
    .await;
}

#[tokio::test]
async fn offline_the_stored_image_is_served_by_tag_and_digest() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![1u8; 200_000]));
    let config = Config {
        cache: config::CacheConfig {
            tag_ttl: Duration::from_secs(300),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    pull(&client, &outpost, &image).await;
    fake.stop().await;
    // Within the TTL: a plain hit.
    pull(&client, &outpost, &image).await;
    let by_digest = client
        .get(&outpost.url(&format!("/v2/quay.io/app/x/manifests/{}", image.digest)))
        .await;
    assert_eq!(by_digest.digest(), image.digest);
    // After the TTL: the revalidation fails, the stored manifest is served with a Warning.
    jump(Duration::from_secs(301)).await;
    let client = Client::new();
    let stale = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(stale.status, StatusCode::OK, "{:?}", stale.body);
    assert_eq!(stale.digest(), image.digest);
    assert!(stale
        .header("warning")
        .is_some_and(|w| w.starts_with("110")));
    // tags/list falls back to the tags known locally.
    let tags = client
        .get(&outpost.url("/v2/quay.io/app/x/tags/list"))
        .await;
    assert_eq!(tags.status, StatusCode::OK);
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
    assert_eq!(tags.json()["name"], "quay.io/app/x");
}

#[tokio::test]
async fn an_expired_tag_is_revalidated_with_a_head() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![2u8; 1000]));
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");
    assert_eq!(client.get(&url).await.digest(), image.digest);
    // Within the TTL (default 5 minutes): no upstream request.
    fake.clear_requests();
    jump(Duration::from_secs(299)).await;
    let client = Client::new();
    assert_eq!(client.get(&url).await.digest(), image.digest);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    // Past it: one HEAD, no GET; the digest is unchanged so the stored manifest is served.
    jump(Duration::from_secs(2)).await;
    let client = Client::new();
    assert_eq!(client.get(&url).await.digest(), image.digest);
    assert_eq!(fake.requests_matching("HEAD", "/manifests/v1").len(), 1);
    assert_eq!(fake.requests_matching("GET", "/manifests/").len(), 0);
    // The check time was refreshed: asking again within the TTL costs nothing.
    fake.clear_requests();
    assert_eq!(client.get(&url).await.digest(), image.digest);
    assert!(fake.requests().is_empty());
    // The tag moves upstream: after the TTL the new manifest is fetched and served.
    let moved = push_image(&fake, REPO, "v1", Bytes::from(vec![3u8; 1000]));
    jump(Duration::from_secs(301)).await;
    let client = Client::new();
    let reply = client.get(&url).await;
    assert_eq!(reply.digest(), moved.digest);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(moved.digest.to_string().as_str())
    );
}

/// containerd 2.x downloads a big layer as several concurrent `Range` requests: one upstream
/// download serves them all, and a range is answered as its bytes arrive, never waiting for the
/// rest of the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ranges_of_a_cold_blob_come_from_one_download_as_it_arrives() {
    let fake = FakeRegistry::start().await;
    let (part, parts) = (8u64 << 20, 4u64);
    let len = part * parts;
    let digest = fake.add_large_blob(REPO, len, 9);
    // The upstream holds after 20 MiB: the first two ranges have all their bytes, the last
    // two do not.
    let held_at = 20u64 << 20;
    fake.stall_blobs_after(held_at);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let url = outpost.url(&blob_path(&digest));
    let tasks: Vec<_> = (0..parts)
        .map(|i| {
            let (client, url) = (Client::new(), url.clone());
            let range = format!("bytes={}-{}", i * part, (i + 1) * part - 1);
            tokio::spawn(async move { client.get_with(&url, &[("range", &range)]).await })
        })
        .collect();
    let mut tasks = tasks.into_iter();
    let mut assembled = Vec::with_capacity(len as usize);
    for i in 0..2 {
        let reply = within(
            "a range below the held point, while the upstream holds",
            DEADLINE,
            tasks.next().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(reply.body.len() as u64, part, "range {i}");
        assert_eq!(
            reply.header("content-range").map(str::to_owned),
            Some(format!("bytes {}-{}/{len}", i * part, (i + 1) * part - 1))
        );
        assembled.extend_from_slice(&reply.body);
    }
    assert_eq!(
        fake.blob_bytes_sent(),
        held_at,
        "the upstream was still holding"
    );
    let rest: Vec<_> = tasks.collect();
    assert!(
        rest.iter().all(|t| !t.is_finished()),
        "a range past the held point ended"
    );
    fake.release_blobs();
    for task in rest {
        let reply = within("the ranges past the held point", DEADLINE, task)
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assembled.extend_from_slice(&reply.body);
    }
    assert_eq!(Digest::compute(oci::Algorithm::Sha256, &assembled), digest);
    assert_eq!(
        fake.requests_matching("GET", &digest.to_string()).len(),
        1,
        "upstream asked more than once"
    );
}

#[tokio::test]
async fn ranges_cold_and_warm() {
    let fake = FakeRegistry::start().await;
    let layer: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let image = push_image(&fake, REPO, "v1", Bytes::from(layer.clone()));
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url(&blob_path(&image.layers[0].0));
    // Cold: the range is served from the fill, which downloads the whole blob once.
    let cold = client.get_with(&url, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(cold.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(cold.body, &layer[1000..2000]);
    assert_eq!(cold.header("content-range"), Some("bytes 1000-1999/100000"));
    // Warm (once the fill has committed the blob), as containerd resumes.
    wait_until_stored(outpost.data_dir.path(), &image.layers[0].0).await;
    for (range, expected, content_range) in [
        ("bytes=99990-", &layer[99990..], "bytes 99990-99999/100000"),
        ("bytes=-10", &layer[99990..], "bytes 99990-99999/100000"),
        ("bytes=0-0", &layer[..1], "bytes 0-0/100000"),
    ] {
        let warm = client.get_with(&url, &[("range", range)]).await;
        assert_eq!(warm.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(warm.body, expected, "{range}");
        assert_eq!(warm.header("content-range"), Some(content_range), "{range}");
    }
    let unsatisfiable = client.get_with(&url, &[("range", "bytes=100000-")]).await;
    assert_eq!(unsatisfiable.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some("bytes */100000")
    );
    assert_eq!(
        fake.requests_matching("GET", &image.layers[0].0.to_string())
            .len(),
        1
    );
}

#[tokio::test]
async fn infrastructure_images_pass_through_unstored() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![5u8; 10_000]));
    let config = Config {
        infrastructure_images: vec![oci::RepoPattern::parse("quay.io/app/*").unwrap()],
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    pull(&client, &outpost, &image).await;
    pull(&client, &outpost, &image).await;
    wait_until_no_fill(&outpost).await;
    assert!(stored_blobs(outpost.data_dir.path()).is_empty());
    assert_eq!(
        fake.requests_matching("GET", &image.layers[0].0.to_string())
            .len(),
        2
    );
    assert_eq!(fake.requests_matching("GET", "/manifests/v1").len(), 2);
}

#[tokio::test]
async fn without_the_local_registry_nothing_is_stored() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, REPO, "v1", Bytes::from(vec![6u8; 10_000]));
    let outpost = Outpost::start(Config {
        local_registry: false,
        ..external_config(&fake.host(), "p", None)
    })
    .await;
    let client = Client::new();
    pull(&client, &outpost, &image).await;
    assert!(
        !outpost.data_dir.path().join("blobs").exists(),
        "a store was opened"
    );
}

#[tokio::test]
async fn the_size_limit_evicts_least_recently_used_blobs() {
    let fake = FakeRegistry::start().await;
    let old = fake.add_blob(REPO, vec![1u8; 400_000]);
    let newer = fake.add_blob(REPO, vec![2u8; 400_000]);
    let newest = fake.add_blob(REPO, vec![3u8; 400_000]);
    let config = Config {
        cache: config::CacheConfig {
            max_size: Some(1_000_000),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    let dir = outpost.data_dir.path();
    for digest in [&old, &newer, &newest] {
        let blob = client.stream(&outpost.url(&blob_path(digest)), &[]).await;
        assert_eq!(&blob.body.unwrap().0, digest);
        // The client has every byte once the digest is verified; the fsync and rename of the
        // commit (and with them the blob's place in the LRU order) land just after.
        wait_until_stored(dir, digest).await;
    }
    // gc runs in the background after the commit that crossed the limit, down to 90 %; its
    // removals are counted once it is done.
    let outpost = &outpost;
    wait_for_async("the size limit's gc to finish", DEADLINE, || async move {
        let evictions = outpost.metric("outpost_evictions_total").await;
        let bytes = outpost.metric("outpost_evicted_bytes_total").await;
        if evictions > 0.0 && bytes > 0.0 {
            Ok(())
        } else {
            Err((evictions, bytes))
        }
    })
    .await;
    let stored = stored_blobs(dir);
    assert!(!stored.contains(&old.hex().to_owned()), "{stored:?}");
    assert!(stored.contains(&newest.hex().to_owned()), "{stored:?}");
    assert!(
        stored.contains(&newer.hex().to_owned()),
        "only the least recently used blob goes: {stored:?}"
    );
}

#[tokio::test]
async fn the_catalog_lists_stored_repositories_in_pages() {
    let fake = FakeRegistry::start().await;
    for (i, repo) in ["a", "b", "c"].into_iter().enumerate() {
        push_image(
            &fake,
            &format!("p/quay.io/cat/{repo}"),
            "v1",
            Bytes::from(vec![i as u8; 10]),
        );
    }
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    for repo in ["c", "a", "b"] {
        let reply = client
            .get(&outpost.url(&format!("/v2/quay.io/cat/{repo}/manifests/v1")))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let page = client.get(&outpost.url("/v2/_catalog?n=2")).await;
    assert_eq!(
        page.json()["repositories"],
        serde_json::json!(["quay.io/cat/a", "quay.io/cat/b"])
    );
    let link = page.header("link").expect("a Link to the next page");
    let next = &link[1..link.find('>').unwrap()];
    let page = client.get(&outpost.url(next)).await;
    assert_eq!(
        page.json()["repositories"],
        serde_json::json!(["quay.io/cat/c"])
    );
    assert!(page.header("link").is_none());
}

/// A tag on an index of a linux/amd64 and a linux/arm64 image; returns the index's digest and
/// the amd64 image, which the upstream picks for a client that takes no index.
fn push_multi_platform(fake: &FakeRegistry) -> (Digest, PushedImage) {
    let amd64 = fake.push_seeded(REPO, None, 11, &[3000]);
    let arm64 = fake.push_seeded(REPO, None, 12, &[3000]);
    (tag_index(fake, "v1", &amd64, &arm64), amd64)
}

/// Points `tag` at a new index of `amd64` and `arm64`; returns its digest.
fn tag_index(fake: &FakeRegistry, tag: &str, amd64: &PushedImage, arm64: &PushedImage) -> Digest {
    let entry = |image: &PushedImage, architecture: &str| {
        serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": image.digest.to_string(),
            "size": image.manifest.len(),
            "platform": {"os": "linux", "architecture": architecture},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(amd64, "amd64"), entry(arm64, "arm64")],
    });
    fake.add_manifest(REPO, tag, OCI_INDEX, index.to_string())
}

/// The `Accept` of a client that takes single images only (an old Docker, a script).
const IMAGES_ONLY: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[tokio::test]
async fn a_client_taking_no_index_does_not_change_what_the_tag_serves_to_others() {
    let fake = FakeRegistry::start().await;
    let (index, amd64) = push_multi_platform(&fake);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");

    let first = client.get(&url).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(
        first.digest(),
        index,
        "a client taking indexes gets the index"
    );
    let old = client.get_with(&url, &[("accept", IMAGES_ONLY)]).await;
    assert_eq!(old.status, StatusCode::OK, "{:?}", old.body);
    assert_eq!(
        old.digest(),
        amd64.digest,
        "the upstream's pick is passed on"
    );

    // The tag still serves the index, from the store, to an arm64 node as to any other.
    fake.clear_requests();
    let again = client.get(&url).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.digest(),
        index,
        "the tag now serves {:?}",
        again.header("content-type")
    );
    assert_eq!(again.header("content-type"), Some(OCI_INDEX));
    assert!(fake.requests_matching("GET", "/manifests/").is_empty());
}

#[tokio::test]
async fn a_client_taking_no_index_first_leaves_the_tag_to_the_next_client() {
    let fake = FakeRegistry::start().await;
    let (index, amd64) = push_multi_platform(&fake);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");

    let old = client.get_with(&url, &[("accept", IMAGES_ONLY)]).await;
    assert_eq!(old.status, StatusCode::OK, "{:?}", old.body);
    assert_eq!(old.digest(), amd64.digest);
    // The pick was not recorded as the tag: the next client gets the index, from upstream.
    let next = client.get(&url).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.digest(), index);
    assert_eq!(
        fake.requests_matching("GET", "/manifests/v1").len(),
        2,
        "both answers came from the upstream"
    );
    // That one was recorded: offline, the tag serves the index from the store.
    fake.stop().await;
    let offline = client.get(&url).await;
    assert_eq!(offline.status, StatusCode::OK, "{:?}", offline.body);
    assert_eq!(offline.digest(), index);
}

#[tokio::test]
async fn a_client_taking_no_index_does_not_keep_an_expired_tag_from_its_new_index() {
    let fake = FakeRegistry::start().await;
    let amd64 = fake.push_seeded(REPO, Some("v1"), 11, &[3000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");
    assert_eq!(Client::new().get(&url).await.digest(), amd64.digest);

    // Upstream, the tag becomes an index over the same amd64 image and an arm64 one.
    let arm64 = fake.push_seeded(REPO, None, 12, &[3000]);
    let index = tag_index(&fake, "v1", &amd64, &arm64);
    jump(Duration::from_secs(301)).await;
    // A client taking no index revalidates, and the upstream's pick is the image it has.
    fake.clear_requests();
    let old = Client::new()
        .get_with(&url, &[("accept", IMAGES_ONLY)])
        .await;
    assert_eq!(old.status, StatusCode::OK, "{:?}", old.body);
    assert_eq!(old.digest(), amd64.digest);
    // One HEAD (the revalidation, whose digest also decides the record) and one GET.
    assert_eq!(fake.requests_matching("HEAD", "/manifests/v1").len(), 1);
    assert_eq!(fake.requests_matching("GET", "/manifests/v1").len(), 1);
    // That did not renew the tag: the next client revalidates too, and gets the index.
    let next = Client::new().get(&url).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(
        next.digest(),
        index,
        "the tag still serves {:?}",
        next.header("content-type")
    );
}

#[tokio::test]
async fn a_store_that_cannot_write_passes_blobs_through() {
    let fake = FakeRegistry::start().await;
    let blob = Bytes::from(vec![6u8; 200_000]);
    let digest = fake.add_blob(REPO, blob.clone());
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    // Every temp file of an ingest now fails to be created (as on a full, read-only or failing
    // disk).
    let ingest = outpost.data_dir.path().join("ingest");
    std::fs::remove_dir_all(&ingest).unwrap();
    std::fs::write(&ingest, b"not a directory").unwrap();
    let client = Client::new();
    for _ in 0..2 {
        let reply = client.get(&outpost.url(&blob_path(&digest))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.digest(), digest);
        assert_eq!(reply.header("content-length"), Some("200000"));
    }
    assert!(stored_blobs(outpost.data_dir.path()).is_empty());
}

#[tokio::test]
async fn a_chunked_blob_that_outgrew_the_size_limit_is_passed_through_next_time() {
    let fake = FakeRegistry::start().await;
    let len = 3u64 << 20;
    let digest = fake.add_blob(REPO, Bytes::from(vec![5u8; len as usize]));
    fake.chunked_blobs(true);
    let config = Config {
        cache: config::CacheConfig {
            max_size: Some(1 << 20),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    let url = outpost.url(&blob_path(&digest));
    // No size announced: the fill is stopped once past cache.maxSize, and the client's body
    // ends in an error (its 200 was already sent).
    let first = client.stream(&url, &[]).await;
    assert!(first.body.is_err(), "{:?}", first.body);
    // From then on the blob is passed through, unstored.
    for _ in 0..2 {
        let next = client.stream(&url, &[]).await;
        assert_eq!(next.status, StatusCode::OK);
        assert_eq!(next.body, Ok((digest.clone(), len)));
    }
    assert!(stored_blobs(outpost.data_dir.path()).is_empty());
}

#[tokio::test]
async fn a_client_taking_no_index_gets_a_single_image_tag_from_the_store() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded(REPO, Some("v1"), 13, &[3000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");
    let first = client.get_with(&url, &[("accept", IMAGES_ONLY)]).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.digest(), image.digest);
    // The tag is that one image for every client (a HEAD taking every type said so): recorded.
    fake.clear_requests();
    let again = client.get_with(&url, &[("accept", IMAGES_ONLY)]).await;
    assert_eq!(again.digest(), image.digest);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    fake.stop().await;
    let offline = client.get_with(&url, &[("accept", IMAGES_ONLY)]).await;
    assert_eq!(offline.status, StatusCode::OK, "{:?}", offline.body);
    assert_eq!(offline.digest(), image.digest);
}

#[tokio::test]
async fn offline_a_manifest_by_digest_is_served_even_of_a_type_the_client_did_not_list() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded(REPO, Some("v1"), 14, &[3000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url(&format!("/v2/quay.io/app/x/manifests/{}", image.digest));
    assert_eq!(client.get(&url).await.digest(), image.digest);
    fake.stop().await;
    // A client listing only Docker's type asks for the stored OCI manifest by digest: the
    // upstream would be asked, but it is gone, and the digest pins the bytes.
    let docker_only = "application/vnd.docker.distribution.manifest.v2+json";
    let reply = client.get_with(&url, &[("accept", docker_only)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), image.digest);
    assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    assert!(
        reply
            .header("warning")
            .is_some_and(|w| w.starts_with("110 ")),
        "{:?}",
        reply.headers
    );
}
