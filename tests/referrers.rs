//! Referrers (signatures, SBOMs, attestations) at the edge: the referrers index of a subject is
//! stored like a tag (fresh → from the store, expired → asked again, upstream down → stale with a
//! `Warning`), filtered by `artifactType` by outpost itself, answered from the tag schema for an
//! upstream without the referrers API, and the signature's manifest and blobs are served
//! offline once fetched.

use std::time::Duration;

use config::Config;
use http::StatusCode;
use outpost_tests::fake::{FakeRegistry, PushedImage};
use outpost_tests::outpost::{external_config, Client, Outpost, Reply};

const REPO: &str = "quay.io/app";
const UPSTREAM_REPO: &str = "p/quay.io/app";
const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn config(fake: &FakeRegistry, tag_ttl: Duration) -> Config {
    let mut config = external_config(&fake.host(), "p", None);
    config.cache.tag_ttl = tag_ttl;
    config
}

async fn get(outpost: &Outpost, path: &str) -> Reply {
    Client::new().get(&outpost.url(path)).await
}

/// The digests listed by a referrers answer, in order.
fn listed(reply: &Reply) -> Vec<String> {
    reply.json()["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests list: {:?}", reply.body))
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn referrers_path(image: &PushedImage, artifact_type: Option<&str>) -> String {
    match artifact_type {
        // As Go clients (cosign, oras) encode it: `+` as `%2B`.
        Some(t) => format!(
            "/v2/{REPO}/referrers/{}?artifactType={}",
            image.digest,
            t.replace('+', "%2B")
        ),
        None => format!("/v2/{REPO}/referrers/{}", image.digest),
    }
}

fn referrers_asked(fake: &FakeRegistry) -> usize {
    fake.requests_matching("GET", "/referrers/").len()
}

#[tokio::test]
async fn referrers_are_stored_filtered_by_outpost_and_served_offline_with_the_signature() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded(UPSTREAM_REPO, Some("v1"), 1, &[1000]);
    let sig = fake.push_referrer(UPSTREAM_REPO, &image, SIG, b"signature payload");
    let sbom = fake.push_referrer(
        UPSTREAM_REPO,
        &image,
        SBOM,
        b"{\"spdxVersion\":\"SPDX-2.3\"}",
    );
    let outpost = Outpost::start(config(&fake, Duration::from_millis(300))).await;

    // Unfiltered: both, as an OCI index, no filter header.
    let all = get(&outpost, &referrers_path(&image, None)).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.header("content-type"), Some(OCI_INDEX));
    assert_eq!(all.header("oci-filters-applied"), None);
    let mut both = vec![sig.digest.to_string(), sbom.digest.to_string()];
    both.sort();
    assert_eq!(listed(&all), both);
    assert_eq!(referrers_asked(&fake), 1);

    // Filtered by outpost from the stored index: no new upstream request while fresh.
    let sigs = get(&outpost, &referrers_path(&image, Some(SIG))).await;
    assert_eq!(sigs.status, StatusCode::OK);
    assert_eq!(sigs.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(listed(&sigs), [sig.digest.to_string()]);
    assert_eq!(sigs.json()["manifests"][0]["artifactType"], SIG);
    assert_eq!(referrers_asked(&fake), 1, "a fresh index was asked again");

    // The signature's manifest and blobs, fetched once, as a verifier does.
    let client = Client::new();
    let manifest = get(&outpost, &format!("/v2/{REPO}/manifests/{}", sig.digest)).await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(manifest.digest(), sig.digest);
    for (digest, _) in sig.blobs() {
        let blob = client
            .get(&outpost.url(&format!("/v2/{REPO}/blobs/{digest}")))
            .await;
        assert_eq!(blob.digest(), *digest);
    }

    // Expired: asked again (and unchanged); then the upstream goes down: stale, with a Warning.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = get(&outpost, &referrers_path(&image, Some(SIG))).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(referrers_asked(&fake), 2);
    assert_eq!(again.header("warning"), None);
    fake.stop().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let offline = get(&outpost, &referrers_path(&image, Some(SIG))).await;
    assert_eq!(offline.status, StatusCode::OK, "{:?}", offline.body);
    assert!(offline.header("warning").is_some(), "{:?}", offline.headers);
    assert_eq!(listed(&offline), [sig.digest.to_string()]);
    let manifest = get(&outpost, &format!("/v2/{REPO}/manifests/{}", sig.digest)).await;
    assert_eq!(manifest.digest(), sig.digest);
    for (digest, _) in sig.blobs() {
        let blob = client
            .get(&outpost.url(&format!("/v2/{REPO}/blobs/{digest}")))
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.digest(), *digest);
    }
    // A subject never asked for while online is unavailable, not made up.
    let never = get(&outpost, &referrers_path(&sig, None)).await;
    assert_eq!(never.status, StatusCode::BAD_GATEWAY, "{:?}", never.body);
}

#[tokio::test]
async fn an_upstream_without_the_referrers_api_is_answered_from_the_tag_schema() {
    let fake = FakeRegistry::start().await;
    fake.referrers_api(false);
    let image = fake.push_seeded(UPSTREAM_REPO, Some("v1"), 2, &[1000]);
    let other = fake.push_seeded(UPSTREAM_REPO, Some("v2"), 3, &[1000]);
    let sig = fake.push_referrer(UPSTREAM_REPO, &image, SIG, b"signature");
    let sbom = fake.push_referrer(UPSTREAM_REPO, &image, SBOM, b"sbom");
    // The referrers tag `sha256-<hex>` of the subject, as clients of such registries push it.
    let descriptor = |p: &PushedImage, t: &str| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": p.digest.to_string(), "size": p.manifest.len(), "artifactType": t});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(&sig, SIG), descriptor(&sbom, SBOM)],
    })
    .to_string();
    let tag = image.digest.to_string().replacen(':', "-", 1);
    fake.add_manifest(UPSTREAM_REPO, &tag, OCI_INDEX, index);
    let outpost = Outpost::start(config(&fake, Duration::from_secs(300))).await;

    let all = get(&outpost, &referrers_path(&image, None)).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(
        listed(&all),
        [sig.digest.to_string(), sbom.digest.to_string()]
    );
    let sboms = get(&outpost, &referrers_path(&image, Some(SBOM))).await;
    assert_eq!(sboms.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(listed(&sboms), [sbom.digest.to_string()]);

    // A subject without a referrers tag: the empty index, never NAME_UNKNOWN.
    let none = get(&outpost, &referrers_path(&other, None)).await;
    assert_eq!(none.status, StatusCode::OK, "{:?}", none.body);
    assert_eq!(none.header("content-type"), Some(OCI_INDEX));
    assert!(listed(&none).is_empty());
    // A repository that does not exist stays unknown.
    let missing = get(
        &outpost,
        &format!("/v2/quay.io/nothing-here/referrers/{}", image.digest),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
    assert_eq!(missing.error_code(), "NAME_UNKNOWN");
}

#[tokio::test]
async fn without_a_local_registry_referrers_pass_through_filtered() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded(UPSTREAM_REPO, Some("v1"), 4, &[100]);
    let sig = fake.push_referrer(UPSTREAM_REPO, &image, SIG, b"s");
    fake.push_referrer(UPSTREAM_REPO, &image, SBOM, b"b");
    let config = Config {
        local_registry: false,
        ..config(&fake, Duration::from_secs(300))
    };
    let outpost = Outpost::start(config).await;
    for _ in 0..2 {
        let sigs = get(&outpost, &referrers_path(&image, Some(SIG))).await;
        assert_eq!(sigs.status, StatusCode::OK);
        assert_eq!(sigs.header("oci-filters-applied"), Some("artifactType"));
        assert_eq!(listed(&sigs), [sig.digest.to_string()]);
    }
    assert_eq!(
        referrers_asked(&fake),
        2,
        "nothing is stored without the local registry"
    );
}
