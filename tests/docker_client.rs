//! Docker Engine as outpost's client, replayed: the requests `dockerd` 20.10 (Debian's docker.io)
//! sends to a `registry-mirrors` entry, captured once from a real daemon pulling `alpine:3.19`
//! (no `?ns=`, `library/` for official images, its `Accept` list as one header line per type,
//! in a different order for HEAD and GET). outpost must answer them as Docker expects: the index
//! with its media type and digest, then the platform manifest and the blobs.

use http::{Method, StatusCode};
use outpost_tests::fake::{FakeRegistry, OCI_INDEX, OCI_MANIFEST};
use outpost_tests::outpost::{external_config, Client, Outpost};

const USER_AGENT: &str = "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44-fc-v1045 os/linux arch/amd64 UpstreamClient(Docker-Client/20.10.24+dfsg1 \\(linux\\))";

/// The `Accept` lines of Docker's manifest HEAD, in its order.
const HEAD_ACCEPT: [&str; 6] = [
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` lines of Docker's manifest GET, in its order.
const GET_ACCEPT: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn headers<'a>(accept: &[&'a str]) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![("user-agent", USER_AGENT), ("accept-encoding", "gzip")];
    headers.extend(accept.iter().map(|a| ("accept", *a)));
    headers
}

#[tokio::test]
async fn docker_mirror_requests_get_the_index_the_platform_manifest_and_the_blobs() {
    let fake = FakeRegistry::start().await;
    let repo = "p/docker.io/library/alpine";
    let amd64 = fake.push_seeded(repo, None, 7, &[2000]);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": amd64.digest.to_string(),
            "size": amd64.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"},
        }],
    })
    .to_string();
    let index_digest = fake.add_manifest(repo, "3.19", OCI_INDEX, index);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();

    let base = outpost.url("/v2/");
    let ping = client.send(Method::GET, &base, &headers(&[])).await;
    assert_eq!(ping.status, StatusCode::OK);

    // HEAD, then GET by tag, exactly as Docker sends them (no `ns`).
    let url = outpost.url("/v2/library/alpine/manifests/3.19");
    for (method, accept) in [(Method::HEAD, HEAD_ACCEPT), (Method::GET, GET_ACCEPT)] {
        let reply = client.send(method.clone(), &url, &headers(&accept)).await;
        assert_eq!(reply.status, StatusCode::OK, "{method}: {:?}", reply.body);
        assert_eq!(reply.header("content-type"), Some(OCI_INDEX), "{method}");
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(index_digest.to_string().as_str()),
            "{method}"
        );
        if method == Method::GET {
            assert_eq!(reply.digest(), index_digest);
        }
    }

    // The platform manifest by digest, then its blobs.
    let reply = client
        .send(
            Method::GET,
            &outpost.url(&format!("/v2/library/alpine/manifests/{}", amd64.digest)),
            &headers(&GET_ACCEPT),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(reply.digest(), amd64.digest);
    for (digest, _) in amd64.blobs() {
        let reply = client
            .send(
                Method::GET,
                &outpost.url(&format!("/v2/library/alpine/blobs/{digest}")),
                &headers(&[]),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.digest(), *digest);
    }
    // Docker's name reached the upstream with `library/`, under the external registry's prefix.
    assert!(!fake
        .requests_matching("GET", "/v2/p/docker.io/library/alpine/manifests/3.19")
        .is_empty());
}
