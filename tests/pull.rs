//! The pull path, black-box: outpost in-process in front of a fake upstream that counts requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use config::{Config, ExternalRegistry, MappingRule};
use http::{Method, StatusCode};
use oci::Digest;
use oci::{Credentials, Secret};
use outpost_tests::fake::{Auth, FakeRegistry, PushedImage, OCI_INDEX, OCI_MANIFEST};
use outpost_tests::outpost::{external_config, Client, Outpost};

/// A small image in `repo` of `fake`: a config blob, one layer, and a manifest tagged `tag`.
fn push_image(fake: &FakeRegistry, repo: &str, tag: &str, seed: u8) -> PushedImage {
    fake.push_seeded(repo, Some(tag), seed, &[100_000])
}

#[tokio::test]
async fn api_version_check() {
    let outpost = Outpost::start(Config::default()).await;
    let reply = Client::new().get(&outpost.url("/v2/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "{}");
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn external_registry_prefix_in_every_routing_form() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("ubuntu", "s3cret"));
    let image = push_image(&fake, "spectro-images/quay.io/kairos/core", "v1", 1);
    let hub = push_image(&fake, "spectro-images/docker.io/library/alpine", "3", 2);
    let outpost = Outpost::start(external_config(
        &fake.host(),
        "spectro-images",
        Some(("ubuntu", "s3cret")),
    ))
    .await;
    let client = Client::new();

    for path in [
        "/v2/quay.io/kairos/core/manifests/v1",
        "/v2/kairos/core/manifests/v1?ns=quay.io",
    ] {
        let reply = client.get(&outpost.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        assert_eq!(reply.body, image.manifest, "{path}");
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(image.digest.to_string().as_str())
        );
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            reply.header("content-length"),
            Some(image.manifest.len().to_string().as_str())
        );
    }
    // The default registry with docker.io's library/ rule, and containerd's ns=docker.io form.
    for path in [
        "/v2/alpine/manifests/3",
        "/v2/library/alpine/manifests/3?ns=docker.io",
    ] {
        let reply = client.get(&outpost.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        assert_eq!(reply.digest(), hub.digest, "{path}");
    }
    let upstream_paths: Vec<String> = fake
        .requests_matching("GET", "/manifests/")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(upstream_paths.iter().all(|p| p
        == "/v2/spectro-images/quay.io/kairos/core/manifests/v1"
        || p == "/v2/spectro-images/docker.io/library/alpine/manifests/3"));

    let blob = client
        .stream(
            &outpost.url(&format!(
                "/v2/quay.io/kairos/core/blobs/{}",
                image.layers[0].0
            )),
            &[],
        )
        .await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(
        blob.body.unwrap(),
        (image.layers[0].0.clone(), image.layers[0].1.len() as u64)
    );
}

#[tokio::test]
async fn head_answers_the_same_headers_without_a_body() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 3);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    for (path, digest, len, content_type) in [
        (
            "/v2/quay.io/a/b/manifests/v1".to_owned(),
            &image.digest,
            image.manifest.len(),
            OCI_MANIFEST,
        ),
        (
            format!("/v2/quay.io/a/b/blobs/{}", image.layers[0].0),
            &image.layers[0].0,
            image.layers[0].1.len(),
            "application/octet-stream",
        ),
    ] {
        let head = client.head(&outpost.url(&path)).await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert_eq!(
            head.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
        assert_eq!(head.header("content-type"), Some(content_type), "{path}");
    }
}

#[tokio::test]
async fn client_without_accept_still_gets_oci_manifests_and_indexes() {
    let fake = FakeRegistry::start().await;
    let index = Bytes::from(
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            .to_string(),
    );
    let digest = fake.add_manifest("p/quay.io/a/multi", "v1", OCI_INDEX, index.clone());
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let reply = Client::new()
        .get(&outpost.url("/v2/quay.io/a/multi/manifests/v1"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), digest);
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    // Asked again (read from its file, then from memory), it costs the upstream nothing.
    fake.clear_requests();
    for _ in 0..2 {
        let again = Client::new()
            .get(&outpost.url("/v2/quay.io/a/multi/manifests/v1"))
            .await;
        assert_eq!(again.digest(), digest);
        assert_eq!(again.header("content-type"), Some(OCI_INDEX));
    }
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    // A client that accepts only Docker manifests gets the upstream's 404.
    let reply = Client::new()
        .get_with(
            &outpost.url("/v2/quay.io/a/multi/manifests/v1"),
            &[(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_by_digest_is_checked_against_the_digest() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 4);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let by_digest = client
        .get(&outpost.url(&format!("/v2/quay.io/a/b/manifests/{}", image.digest)))
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    assert_eq!(by_digest.body, image.manifest);

    assert_eq!(
        by_digest.header("docker-content-digest"),
        Some(image.digest.to_string().as_str())
    );

    // An upstream answering a digest request with other bytes: 502, nothing returned.
    let wrong = Digest::compute(oci::Algorithm::Sha256, b"something else");
    fake.add_manifest_under_wrong_digest(
        "p/quay.io/a/b",
        &wrong,
        OCI_MANIFEST,
        image.manifest.clone(),
    );
    let reply = client
        .get(&outpost.url(&format!("/v2/quay.io/a/b/manifests/{wrong}")))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.error_message().contains(&wrong.to_string()),
        "{}",
        reply.error_message()
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains("schemaVersion"));
    // Nor was it stored: asking again goes upstream again.
    let before = fake.requests_matching("GET", &wrong.to_string()).len();
    let again = client
        .get(&outpost.url(&format!("/v2/quay.io/a/b/manifests/{wrong}")))
        .await;
    assert_eq!(again.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        fake.requests_matching("GET", &wrong.to_string()).len(),
        before + 1
    );
}

#[tokio::test]
async fn corrupt_blob_never_ends_cleanly() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 5);
    fake.corrupt_blob(&image.layers[0].0);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let streamed = Client::new()
        .stream(
            &outpost.url(&format!("/v2/quay.io/a/b/blobs/{}", image.layers[0].0)),
            &[],
        )
        .await;
    assert!(
        streamed.body.is_err(),
        "a corrupt blob ended cleanly: {:?}",
        streamed.body
    );
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_for_many_requests() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("robot", "tok-pass", 300));
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 6);
    let outpost = Outpost::start(external_config(
        &fake.host(),
        "p",
        Some(("robot", "tok-pass")),
    ))
    .await;
    let client = Client::new();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        let url = outpost.url(&format!("/v2/quay.io/a/b/blobs/{}", image.layers[0].0));
        tasks.push(tokio::spawn(async move { client.stream(&url, &[]).await }));
    }
    for task in tasks {
        let streamed = task.await.unwrap();
        assert_eq!(streamed.status, StatusCode::OK);
        assert_eq!(streamed.body.unwrap().0, image.layers[0].0);
    }
    assert_eq!(fake.token_fetches(), 1);
}

#[tokio::test]
async fn wrong_stored_credentials_name_the_user_not_the_password() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("ubuntu", "right"));
    push_image(&fake, "p/quay.io/a/b", "v1", 7);
    let outpost = Outpost::start(external_config(
        &fake.host(),
        "p",
        Some(("ubuntu", "wrong-pass")),
    ))
    .await;
    let reply = Client::new()
        .get(&outpost.url("/v2/quay.io/a/b/manifests/v1"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error_code(), "DENIED");
    let message = reply.error_message();
    assert!(message.contains("ubuntu"), "{message}");
    assert!(message.contains(&fake.host()), "{message}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("wrong-pass"));
}

#[tokio::test]
async fn redirects_to_a_cdn_carry_no_credentials() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("ubuntu", "pw"));
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 8);
    let cdn = fake.start_cdn().await;
    fake.redirect_blobs_to(&cdn);
    let outpost = Outpost::start(external_config(&fake.host(), "p", Some(("ubuntu", "pw")))).await;
    let streamed = Client::new()
        .stream(
            &outpost.url(&format!("/v2/quay.io/a/b/blobs/{}", image.layers[0].0)),
            &[],
        )
        .await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(streamed.body.unwrap().0, image.layers[0].0);
    assert_eq!(cdn.rejected_with_authorization(), 0);
    assert_eq!(cdn.requests_matching("GET", "/blobs/").len(), 1);
}

#[tokio::test]
async fn a_client_authorization_header_is_not_forwarded() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, "p/quay.io/a/b", "v1", 9);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let reply = client
        .get_with(
            &outpost.url("/v2/quay.io/a/b/manifests/v1"),
            &[("authorization", "Basic Y2xpZW50OnNlY3JldA==")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.digest(), image.digest);
    assert!(!fake.requests().is_empty());
    assert!(fake.requests().iter().all(|r| r.authorization().is_none()));
}

#[tokio::test]
async fn too_many_requests_passes_retry_after_on() {
    let fake = FakeRegistry::start().await;
    push_image(&fake, "p/quay.io/a/b", "v1", 10);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    fake.fail_next(1, 429, Some(17));
    let reply = Client::new()
        .get(&outpost.url("/v2/quay.io/a/b/manifests/v1"))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error_code(), "TOOMANYREQUESTS");
    assert_eq!(reply.header("retry-after"), Some("17"));
}

#[tokio::test]
async fn invalid_input_and_unsupported_methods_get_oci_errors() {
    let outpost = Outpost::start(Config::default()).await;
    let client = Client::new();
    for (method, path, status, code) in [
        (Method::GET, "/v2/UPPER/manifests/v1", 400, "NAME_INVALID"),
        (Method::GET, "/v2/a/../b/manifests/v1", 400, "NAME_INVALID"),
        (
            Method::GET,
            "/v2/a/blobs/sha256:1234",
            400,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
            "DIGEST_INVALID",
        ),
        (Method::PUT, "/v2/a/manifests/v1", 405, "UNSUPPORTED"),
        (Method::DELETE, "/v2/a/manifests/v1", 405, "UNSUPPORTED"),
        (Method::POST, "/v2/a/blobs/uploads/", 405, "UNSUPPORTED"),
        (Method::PATCH, "/v2/a/blobs/uploads/123", 405, "UNSUPPORTED"),
    ] {
        let reply = client.send(method.clone(), &outpost.url(path), &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{method} {path}");
        assert_eq!(reply.error_code(), code, "{method} {path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn tags_list_paginates_with_links_back_to_outpost() {
    let fake = FakeRegistry::start().await;
    for (i, tag) in ["a", "b", "c"].into_iter().enumerate() {
        push_image(&fake, "p/quay.io/x/y", tag, 20 + i as u8);
    }
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let page = client
        .get(&outpost.url("/v2/quay.io/x/y/tags/list?n=2"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json()["name"], "quay.io/x/y");
    assert_eq!(page.json()["tags"], serde_json::json!(["a", "b"]));
    let link = page.header("link").expect("a Link header").to_owned();
    assert!(link.starts_with("</v2/quay.io/x/y/tags/list?"), "{link}");
    let next = link[1..link.find('>').unwrap()].to_owned();
    let page = client.get(&outpost.url(&next)).await;
    assert_eq!(page.json()["tags"], serde_json::json!(["c"]));
    assert!(page.header("link").is_none());
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_naming_the_host() {
    let fake = FakeRegistry::start().await;
    let host = fake.host();
    fake.stop().await;
    let outpost = Outpost::start(external_config(&host, "p", None)).await;
    let reply = Client::new()
        .get(&outpost.url("/v2/quay.io/a/b/manifests/v1"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.error_message().contains(&host),
        "{}",
        reply.error_message()
    );
}

#[tokio::test]
async fn mapping_rules_pick_the_target_and_its_credentials() {
    let mirror = FakeRegistry::start().await;
    mirror.set_auth(Auth::basic("robot", "mirror-pw"));
    let image = push_image(&mirror, "palette-images/edge/app", "v1", 30);
    let fallback = FakeRegistry::start().await;
    let config = Config {
        external_registries: vec![
            ExternalRegistry {
                host: oci::Registry::parse(&fallback.host()).unwrap(),
                prefix: "all".into(),
                credentials: None,
                certificates: vec![],
                insecure: true,
            },
            ExternalRegistry {
                host: oci::Registry::parse(&mirror.host()).unwrap(),
                prefix: String::new(),
                credentials: Some(Credentials {
                    username: "robot".into(),
                    password: Secret::new("mirror-pw"),
                }),
                certificates: vec![],
                insecure: true,
            },
        ],
        mapping_rules: vec![MappingRule {
            source: oci::Prefix::parse("us-docker.pkg.dev/palette-images").unwrap(),
            target: oci::Prefix::parse(&format!("{}/palette-images", mirror.host())).unwrap(),
        }],
        ..Config::default()
    };
    let outpost = Outpost::start(config).await;
    let reply = Client::new()
        .get(&outpost.url("/v2/us-docker.pkg.dev/palette-images/edge/app/manifests/v1"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), image.digest);
    assert!(fallback.requests().is_empty());
    assert_eq!(
        mirror
            .requests_matching("GET", "/manifests/")
            .last()
            .unwrap()
            .path,
        "/v2/palette-images/edge/app/manifests/v1"
    );
}

/// VmRSS of this process in KiB. The process is the test's own (see
/// [`outpost_tests::own_process`]), so it measures nothing but the test.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Memory is measured as the growth of this process's resident set while outpost (in-process)
/// passes the body from the fake upstream to the client. So that the process holds nothing but
/// this test (the tests of a binary run in parallel threads, and any of them would count), the
/// test runs alone in a child process of the test binary.
#[test]
fn a_256_mib_blob_streams_with_bounded_memory() {
    outpost_tests::own_process::run("a_256_mib_blob_streams_with_bounded_memory", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(stream_256_mib_measuring_memory());
    });
}

async fn stream_256_mib_measuring_memory() {
    let fake = FakeRegistry::start().await;
    let len = 256u64 << 20;
    let digest = fake.add_large_blob("p/quay.io/big/blob", len, 7);
    let outpost = Outpost::start(Config {
        local_registry: false,
        ..external_config(&fake.host(), "p", None)
    })
    .await;
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let streamed = Client::new()
        .stream(
            &outpost.url(&format!("/v2/quay.io/big/blob/blobs/{digest}")),
            &[],
        )
        .await;
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed).max(rss_kib());
    assert_eq!(streamed.status, StatusCode::OK);
    assert_eq!(streamed.body.unwrap(), (digest, len));
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "memory grew by {growth_mib} MiB while streaming 256 MiB"
    );
}
