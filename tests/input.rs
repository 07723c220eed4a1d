//! Hostile or failing input from upstreams, answered with clear OCI errors and never a panic:
//! a manifest whose `mediaType` holds a control character, and upstreams answering 5xx to
//! `tags/list` (served from the store, like manifests).

use config::Config;
use http::StatusCode;
use outpost_tests::fake::{FakeRegistry, OCI_MANIFEST};
use outpost_tests::outpost::{external_config, Client, Outpost};

/// A manifest served without a `Content-Type` whose own `mediaType` has a BEL character in it.
fn hostile_manifest() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}\u0007","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
        "a".repeat(64)
    )
    .into_bytes()
}

#[tokio::test]
async fn a_manifest_media_type_with_a_control_character_is_refused_and_serving_goes_on() {
    let fake = FakeRegistry::start().await;
    let bad = fake.add_manifest("p/quay.io/app/bad", "v1", "", hostile_manifest());
    let good = fake.push_seeded("p/quay.io/app/good", Some("v1"), 1, &[1000]);
    for local_registry in [true, false] {
        let config = Config {
            local_registry,
            ..external_config(&fake.host(), "p", None)
        };
        let outpost = Outpost::start(config).await;
        let client = Client::new();
        for path in [
            "/v2/quay.io/app/bad/manifests/v1".to_owned(),
            format!("/v2/quay.io/app/bad/manifests/{bad}"),
        ] {
            // Twice: the first answer must not have broken anything for the second.
            for _ in 0..2 {
                let reply = client.get(&outpost.url(&path)).await;
                assert_eq!(
                    reply.status,
                    StatusCode::BAD_GATEWAY,
                    "{path}: {:?}",
                    reply.body
                );
                let error = &reply.json()["errors"][0];
                assert_eq!(error["code"], "UNAVAILABLE", "{error}");
                let message = error["message"].as_str().unwrap_or_default();
                assert!(message.contains("media type"), "{message}");
                assert!(message.contains(&fake.host()), "{message}");
            }
        }
        let reply = client
            .get(&outpost.url("/v2/quay.io/app/good/manifests/v1"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.digest(), good.digest);
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    }
}

#[tokio::test]
async fn tags_list_is_answered_from_the_store_when_the_upstream_fails_with_5xx() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app/x", Some("v1"), 2, &[1000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let pulled = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(pulled.digest(), image.digest);

    for status in [500, 502, 503] {
        fake.fail_next(1, status, None);
        let tags = client
            .get(&outpost.url("/v2/quay.io/app/x/tags/list"))
            .await;
        assert_eq!(tags.status, StatusCode::OK, "{status}: {:?}", tags.body);
        assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
        assert_eq!(tags.json()["name"], "quay.io/app/x");
        assert!(
            tags.header("warning").is_some_and(|w| w.starts_with("110")),
            "{status}: no stale warning"
        );
    }
    // An answer of the upstream itself (here 404) is relayed, not hidden behind the store.
    fake.fail_next(1, 404, None);
    let tags = client
        .get(&outpost.url("/v2/quay.io/app/x/tags/list"))
        .await;
    assert_eq!(tags.status, StatusCode::NOT_FOUND, "{:?}", tags.body);
    // And with the upstream healthy again, its own list.
    let tags = client
        .get(&outpost.url("/v2/quay.io/app/x/tags/list"))
        .await;
    assert_eq!(tags.status, StatusCode::OK);
    assert!(tags.header("warning").is_none());
}

#[tokio::test]
async fn a_tag_list_that_is_not_one_is_refused_and_serving_goes_on() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app/x", Some("v1"), 2, &[1000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let tags_url = outpost.url("/v2/quay.io/app/x/tags/list");
    for body in [
        "[]",
        "\"v1\"",
        "null",
        r#"{"name":"x","tags":[1,2]}"#,
        r#"{"name":"x","tags":"v1"}"#,
    ] {
        fake.tags_body(Some(body));
        let tags = client.get(&tags_url).await;
        assert_eq!(
            tags.status,
            StatusCode::BAD_GATEWAY,
            "{body}: {:?}",
            tags.body
        );
        assert!(
            tags.error_message().contains("invalid tag list"),
            "{body}: {}",
            tags.error_message()
        );
    }
    // A list of strings, or none at all, is a tag list.
    fake.tags_body(Some(r#"{"name":"p/quay.io/app/x","tags":null}"#));
    let tags = client.get(&tags_url).await;
    assert_eq!(tags.status, StatusCode::OK);
    assert_eq!(tags.json()["name"], "quay.io/app/x");
    fake.tags_body(None);
    let tags = client.get(&tags_url).await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
    let pulled = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(pulled.digest(), image.digest);
}

/// Moves tokio's clock (the tag TTL's and `Retry-After`'s clock) forward by `by`.
async fn jump(by: std::time::Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Docker Hub's pull limit: a `429` with `Retry-After` on revalidation serves the stored
/// manifest, and the upstream is not asked again for that repository until the time is up.
#[tokio::test]
async fn a_429_serves_the_store_and_the_upstream_is_left_alone_until_retry_after() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app/x", Some("v1"), 3, &[1000]);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let url = outpost.url("/v2/quay.io/app/x/manifests/v1");
    assert_eq!(client.get(&url).await.digest(), image.digest);

    jump(std::time::Duration::from_secs(301)).await; // past the tag TTL
    fake.clear_requests();
    fake.fail_next(1, 429, Some(120));
    for round in 0..3 {
        let client = Client::new();
        let stale = client.get(&url).await;
        assert_eq!(
            stale.status,
            StatusCode::OK,
            "round {round}: {:?}",
            stale.body
        );
        assert_eq!(stale.digest(), image.digest);
        assert!(
            stale
                .header("warning")
                .is_some_and(|w| w.starts_with("110")),
            "round {round}: no stale warning"
        );
    }
    assert_eq!(
        fake.requests().len(),
        1,
        "the upstream was asked again within Retry-After: {:#?}",
        fake.requests()
    );
    // Nothing stored for this repository can be answered meanwhile: 429 with the time left,
    // still without asking the upstream.
    let missing = Client::new()
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v2"))
        .await;
    assert_eq!(missing.status, StatusCode::TOO_MANY_REQUESTS);
    let left: u64 = missing.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&left), "{left}");
    assert_eq!(fake.requests().len(), 1);
    // Another repository of the same upstream is asked as usual.
    let other = fake.push_seeded("p/quay.io/app/y", Some("v1"), 4, &[1000]);
    let reply = Client::new()
        .get(&outpost.url("/v2/quay.io/app/y/manifests/v1"))
        .await;
    assert_eq!(reply.digest(), other.digest);

    // Once Retry-After has passed, the tag is revalidated again.
    jump(std::time::Duration::from_secs(121)).await;
    fake.clear_requests();
    let fresh = Client::new().get(&url).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert!(fresh.header("warning").is_none());
    assert_eq!(fake.requests_matching("HEAD", "/manifests/v1").len(), 1);
}

/// A blob of unknown size (chunked, no `Content-Length`) that outgrows `cache.maxSize` is
/// stopped while it downloads: nothing stored, the client's body ends in an error, and the
/// upstream is not read much past the limit. (An endless body from a broken or hostile
/// upstream no longer fills the disk.)
#[tokio::test]
async fn a_download_of_unknown_size_stops_at_the_size_limit_and_stores_nothing() {
    let fake = FakeRegistry::start().await;
    let digest = fake.add_large_blob("p/quay.io/big/blob", 64 << 20, 9);
    fake.chunked_blobs(true);
    let limit = 16u64 << 20;
    let config = Config {
        cache: config::CacheConfig {
            max_size: Some(limit),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let url = outpost.url(&format!("/v2/quay.io/big/blob/blobs/{digest}"));
    let pulled = Client::new().stream(&url, &[]).await;
    assert_eq!(pulled.status, StatusCode::OK);
    assert!(
        pulled.headers.get("content-length").is_none(),
        "the size was unknown"
    );
    let error = pulled
        .body
        .expect_err("a body past the limit ended cleanly");
    assert!(!error.is_empty());
    // Stopped at the limit: the upstream sent that, plus what the sockets buffer, not the blob.
    let sent = fake.blob_bytes_sent();
    assert!(sent < 2 * limit, "the upstream sent {sent} bytes of 64 MiB");
    assert_eq!(outpost.stored_blobs(), 0, "something was stored");

    // A blob of known size over the limit is passed through unstored, whole and verified.
    fake.chunked_blobs(false);
    let pulled = Client::new().stream(&url, &[]).await;
    assert_eq!(pulled.status, StatusCode::OK);
    let (got, len) = pulled.body.expect("the whole blob");
    assert_eq!((got, len), (digest.clone(), 64 << 20));
    assert_eq!(
        outpost.stored_blobs(),
        0,
        "a blob over cache.maxSize was stored"
    );
}

/// `cache.minFree` keeps free space on the data dir's file system: with a reserve larger than
/// what is free, nothing more is stored, and pulls still work (passed through).
#[tokio::test]
async fn with_no_room_left_pulls_pass_through_unstored() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app/x", Some("v1"), 6, &[300_000]);
    let config = Config {
        cache: config::CacheConfig {
            min_free: config::Reserve::Percent(100),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    let manifest = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_eq!(manifest.status, StatusCode::OK, "{:?}", manifest.body);
    assert_eq!(manifest.digest(), image.digest);
    for (digest, bytes) in image.blobs() {
        let blob = client
            .stream(
                &outpost.url(&format!("/v2/quay.io/app/x/blobs/{digest}")),
                &[],
            )
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.body.unwrap(), (digest.clone(), bytes.len() as u64));
    }
    assert_eq!(outpost.stored_blobs(), 0, "stored into the reserve");
    // Nothing was kept: with the upstream gone, the manifest is not there.
    fake.stop().await;
    let gone = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/v1"))
        .await;
    assert_ne!(gone.status, StatusCode::OK);
}

/// A client cannot make outpost connect to a host the configuration does not name: a
/// host-in-path or `?ns=` registry outside `upstream.allowedHosts` is refused before any
/// connection (so outpost is no port scanner of the node's networks).
#[tokio::test]
async fn registries_outside_the_allowed_hosts_are_refused_before_any_connection() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("team/app", Some("v1"), 7, &[1000]);
    let host = fake.host();
    for local_registry in [true, false] {
        let outpost = Outpost::start(Config {
            local_registry,
            ..Config::default()
        })
        .await;
        let client = Client::new();
        for path in [
            format!("/v2/{host}/team/app/manifests/v1"),
            format!("/v2/team/app/manifests/v1?ns={host}"),
            format!("/v2/{host}/team/app/tags/list"),
            format!("/v2/{host}/team/app/blobs/{}", image.digest),
        ] {
            let reply = client.get(&outpost.url(&path)).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{path}: {:?}",
                reply.body
            );
            assert_eq!(reply.error_code(), "DENIED");
            assert!(reply.error_message().contains("allowedHosts"), "{path}");
        }
        assert!(
            fake.requests().is_empty(),
            "outpost connected: {:#?}",
            fake.requests()
        );
    }
    // Allowed by the operator: served.
    let outpost = Outpost::start(Config {
        allowed_hosts: Some(vec!["127.0.0.1".parse().unwrap()]),
        ..Config::default()
    })
    .await;
    let reply = Client::new()
        .get(&outpost.url(&format!("/v2/{host}/team/app/manifests/v1")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.digest(), image.digest);
}
