//! End to end, signatures and artifacts through outpost from a real Docker Distribution 2.8
//! (which has no referrers API): an image signed the way cosign signs for registries without
//! one (a signature manifest with `subject`, its payload and signature, and the referrers tag
//! `sha256-<hex>`), verified through outpost online and again with the upstream stopped; a
//! multi-platform index carrying a BuildKit-style attestation manifest (`unknown/unknown`)
//! pulled by containerd and by Docker Engine (a throw-away `dockerd` whose registry mirror is
//! outpost); a Helm chart (an OCI artifact) pulled with the requests `helm pull`
//! makes (no Helm client can be installed here: Debian 12 has none, nor does PyPI or npm).
//! Run with `bash tests/e2e.sh referrers`.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use oci::{Algorithm, Digest};
use outpost_tests::image::{push_blob, push_manifest, Image, ImageSpec, PushTarget};
use outpost_tests::real::{
    curl_pull, skopeo_pull, Containerd, Dockerd, Outpost, Registry, RegistryOptions, SkopeoSource,
};
use outpost_tests::tools::Http;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const COSIGN_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

fn target<'a>(registry: &'a str, repository: &'a str) -> PushTarget<'a> {
    PushTarget {
        base_url: registry,
        repository,
        tag: "unused",
        basic_auth: None,
        ca_file: None,
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// Signs `image` in `repository` as cosign does on a registry without the referrers API;
/// returns the signature manifest's digest.
fn cosign_sign(upstream: &Registry, repository: &str, image: &Image, key: &EcdsaKeyPair) -> Digest {
    let url = upstream.url();
    let to = target(&url, repository);
    let payload = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": image.digest().to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string();
    let signature = key
        .sign(&SystemRandom::new(), payload.as_bytes())
        .expect("sign the payload");
    let config = push_blob(&to, b"{}");
    let layer = push_blob(&to, payload.as_bytes());
    let mut layer_descriptor = descriptor(SIMPLESIGNING, &layer, payload.len());
    layer_descriptor["annotations"] = serde_json::json!({
        SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
    });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": COSIGN_SIG,
        "config": descriptor(EMPTY_CONFIG, &config, 2),
        "layers": [layer_descriptor],
        "subject": descriptor(image.media_type(), image.digest(), image.top_bytes().len()),
    })
    .to_string();
    let manifest_digest = Digest::compute(Algorithm::Sha256, manifest.as_bytes());
    push_manifest(
        &to,
        &manifest_digest.to_string(),
        OCI_MANIFEST,
        manifest.as_bytes(),
    );
    // The referrers tag, as clients maintain it where the registry has no referrers API.
    let mut entry = descriptor(OCI_MANIFEST, &manifest_digest, manifest.len());
    entry["artifactType"] = serde_json::json!(COSIGN_SIG);
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
            .to_string();
    let tag = image.digest().to_string().replacen(':', "-", 1);
    push_manifest(&to, &tag, OCI_INDEX, index.as_bytes());
    manifest_digest
}

/// Verifies `image`'s cosign signature through outpost, as a verifier does: referrers
/// filtered to cosign signatures, the signature manifest, the payload; checks the signature with
/// `public_key` and that the payload names the image. Returns the referrers response's
/// `Warning` header.
fn verify_through(
    outpost: &Outpost,
    name: &str,
    image: &Image,
    public_key: &[u8],
) -> Option<String> {
    let referrers = Http::get(format!(
        "{}/v2/{name}/referrers/{}?artifactType={}",
        outpost.url(),
        image.digest(),
        COSIGN_SIG.replace('/', "%2F").replace('+', "%2B")
    ))
    .send();
    assert_eq!(referrers.status, 200, "referrers: {}", referrers.text());
    assert_eq!(referrers.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        referrers.header("oci-filters-applied"),
        Some("artifactType")
    );
    let index: serde_json::Value = serde_json::from_str(&referrers.text()).unwrap();
    let signatures = index["manifests"].as_array().unwrap();
    assert_eq!(signatures.len(), 1, "{index}");
    let signature_digest = signatures[0]["digest"].as_str().unwrap();

    let manifest = Http::get(format!(
        "{}/v2/{name}/manifests/{signature_digest}",
        outpost.url()
    ))
    .header("Accept", OCI_MANIFEST)
    .send();
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    let bytes = manifest.bytes();
    assert_eq!(
        Digest::compute(Algorithm::Sha256, &bytes).to_string(),
        signature_digest
    );
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let layer = &manifest["layers"][0];
    let signature = base64::engine::general_purpose::STANDARD
        .decode(layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap())
        .unwrap();
    let payload = Http::get(format!(
        "{}/v2/{name}/blobs/{}",
        outpost.url(),
        layer["digest"].as_str().unwrap()
    ))
    .send();
    assert_eq!(payload.status, 200);
    let payload = payload.bytes();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&payload, &signature)
        .expect("the signature verifies");
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claims["critical"]["image"]["docker-manifest-digest"],
        image.digest().to_string()
    );
    referrers.header("warning").map(str::to_owned)
}

#[test]
fn a_cosign_signature_verifies_through_outpost_online_and_offline() {
    let mut upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec::small(81));
    upstream.push(&image, "quay.io/signed/app", "v1");
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &key_pair.serialize_der(),
        &rng,
    )
    .unwrap();
    cosign_sign(&upstream, "quay.io/signed/app", &image, &key);
    let public_key = key.public_key().as_ref().to_vec();

    // The external registry holds each source under its full name (`quay.io/signed/app`).
    let outpost = Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n\
         outpost:\n  cache:\n    tagTtl: 1s\n",
        upstream.host()
    ));
    let name = "quay.io/signed/app";
    // Distribution 2.8 has no referrers API: outpost answers from the referrers tag.
    assert_eq!(verify_through(&outpost, name, &image, &public_key), None);
    let pulled = skopeo_pull(
        &format!("{}/{name}:v1", outpost.host()),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&pulled.top, image.digest());
    assert!(
        upstream
            .access_log()
            .iter()
            .any(|e| e.path.contains("/referrers/") && e.status == 404),
        "outpost did not ask for the referrers API first"
    );

    // The upstream goes away; past the TTL the stored index is served stale, and the signature
    // still verifies.
    upstream.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let warning = verify_through(&outpost, name, &image, &public_key);
    assert!(warning.is_some_and(|w| w.contains("Stale")));
}

/// Pushes `image` and a BuildKit-style index over it and its attestation manifest
/// (`unknown/unknown`) as `repository:tag`; returns the index digest.
fn push_attested(upstream: &Registry, repository: &str, tag: &str, image: &Image) -> Digest {
    let url = upstream.url();
    upstream.push(image, repository, &format!("{tag}-single"));
    let to = target(&url, repository);
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document"}"#;
    let config_bytes = br#"{"architecture":"unknown","os":"unknown"}"#;
    let config = push_blob(&to, config_bytes);
    let layer = push_blob(&to, statement);
    let attestation = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config, config_bytes.len()),
        "layers": [{
            "mediaType": "application/vnd.in-toto+json",
            "digest": layer.to_string(),
            "size": statement.len(),
            "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"},
        }],
    })
    .to_string();
    let attestation_digest = Digest::compute(Algorithm::Sha256, attestation.as_bytes());
    push_manifest(
        &to,
        &attestation_digest.to_string(),
        OCI_MANIFEST,
        attestation.as_bytes(),
    );
    let mut amd64 = descriptor(image.media_type(), image.digest(), image.top_bytes().len());
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let mut att = descriptor(OCI_MANIFEST, &attestation_digest, attestation.len());
    att["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
    att["annotations"] = serde_json::json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": image.digest().to_string(),
    });
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd64, att]})
            .to_string();
    push_manifest(&to, tag, OCI_INDEX, index.as_bytes())
}

#[test]
fn an_index_with_an_attestation_manifest_and_a_helm_chart_pull_through_outpost() {
    let upstream = Registry::start(RegistryOptions::default());
    let url = upstream.url();
    let image = Image::build(&ImageSpec::small(82));
    let index_digest = push_attested(&upstream, "quay.io/acme/app", "multi", &image);

    // A Helm chart: its config and chart layer, as `helm push` stores them.
    let chart_to = target(&url, "quay.io/charts/mychart");
    let chart_config = br#"{"name":"mychart","version":"0.1.0","apiVersion":"v2"}"#;
    let chart_layer: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let chart_config_digest = push_blob(&chart_to, chart_config);
    let chart_layer_digest = push_blob(&chart_to, &chart_layer);
    let chart = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.cncf.helm.config.v1+json", &chart_config_digest, chart_config.len()),
        "layers": [descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip", &chart_layer_digest, chart_layer.len())],
    })
    .to_string();
    let chart_digest = push_manifest(&chart_to, "0.1.0", OCI_MANIFEST, chart.as_bytes());

    let outpost = Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n",
        upstream.host()
    ));

    // containerd pulls the index for linux/amd64; the attestation does not get in the way.
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("quay.io", &outpost.url(), None);
    containerd.pull_ok(&hosts, "quay.io/acme/app:multi", Some("linux/amd64"));
    assert_eq!(
        containerd.image_digest("quay.io/acme/app:multi"),
        index_digest
    );
    let mut expected: BTreeSet<Digest> = image.blob_digests();
    expected.insert(image.digest().clone());
    expected.insert(index_digest.clone());
    let content = containerd.content_digests();
    assert!(
        expected.is_subset(&content),
        "{expected:?} not in {content:?}"
    );

    // The chart, with helm's requests: the manifest (OCI types accepted), then its blobs.
    let blobs: BTreeSet<Digest> = [chart_config_digest, chart_layer_digest].into();
    let pulled = curl_pull(
        &outpost.url(),
        "quay.io/charts/mychart",
        "0.1.0",
        &blobs,
        None,
    );
    assert_eq!(pulled, chart_digest);
}

#[test]
fn docker_engine_pulls_an_attested_index_through_outpost_as_its_mirror() {
    let mut upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec::small(83));
    let index_digest = push_attested(&upstream, "docker.io/library/attested", "v1", &image);
    let outpost = Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n",
        upstream.host()
    ));
    let docker = Dockerd::start(&outpost.url());
    docker.pull_ok("attested:v1");
    let digests = docker.repo_digests("attested:v1");
    assert!(
        digests
            .iter()
            .any(|d| d.ends_with(&format!("@{index_digest}"))),
        "{digests:?} does not name {index_digest}; dockerd log:\n{}",
        docker.log()
    );
    // Docker asked outpost (its mirror) in the Docker Hub form, `library/` included.
    assert!(upstream
        .access_log()
        .iter()
        .any(|e| e.path == "/v2/docker.io/library/attested/manifests/v1"));

    // Again with the upstream stopped, from a fresh engine: served from outpost's store.
    upstream.stop();
    drop(docker);
    let docker = Dockerd::start(&outpost.url());
    docker.pull_ok(&format!("attested@{index_digest}"));
}
