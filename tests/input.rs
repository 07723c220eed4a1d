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
