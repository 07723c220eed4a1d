//! The end-to-end suite: outpost between real clients (skopeo, containerd's ctr, curl) and real
//! upstreams (Debian's `docker-registry`, Docker Distribution 2.8), all on 127.0.0.1.
//!
//! Run it with `bash tests/e2e.sh` (installs the Debian packages that are missing, builds outpost,
//! runs this file one test at a time). It is behind the `e2e` feature so that a plain
//! `cargo test` needs nothing but the Rust toolchain.
//!
//! Every scenario synthesizes its own image (seeded, so digests are known up front), pushes it
//! into a fresh upstream, pulls it through outpost and asserts that the digests the client
//! received are the ones pushed. `harness_self_check` proves the harness itself (push, then
//! pull directly with skopeo, ctr and curl) without outpost.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use oci::Digest;
use outpost_tests::image::{Image, ImageSpec, LayerSpec, MIB};
use outpost_tests::real::{
    curl_pull, outpost_ok, skopeo_copy, skopeo_pull, Containerd, Outpost, OutpostOptions, Registry,
    RegistryOptions, SkopeoSource,
};
use outpost_tests::tools::Http;

const USER: &str = "e2e-user";
const PASS: &str = "e2e-Pa55word";

fn basic_auth() -> Option<(String, String)> {
    Some((USER.to_owned(), PASS.to_owned()))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// YAML block-scalar lines for a PEM, indented by `indent` spaces.
fn indent_pem(pem: &str, indent: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}

/// The blobs an OCI layout or content store should hold for a single-platform pull.
fn expected_single(image: &Image) -> BTreeSet<Digest> {
    let mut set = image.blob_digests();
    set.insert(image.digest().clone());
    set
}

/// Every file under a directory tree (none when it does not exist).
fn stored_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The harness alone, without outpost: images pushed into docker-registry (plain with htpasswd,
/// and TLS) come back with the same digests through skopeo, curl and ctr, and the access log
/// counts the blob GETs.
#[test]
fn harness_self_check() {
    // plain HTTP with htpasswd, and TLS without auth
    let plain = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: false,
    });
    let tls = Registry::start(RegistryOptions {
        htpasswd: None,
        tls: true,
    });
    let image = Image::build(&ImageSpec::small(1));
    plain.push(&image, "selfcheck/app", "v1");
    tls.push(&image, "selfcheck/app", "v1");

    // the registry enforces its credentials (the harness's htpasswd works)
    let anonymous = Http::get(format!("{}/v2/selfcheck/app/manifests/v1", plain.url())).send();
    assert_eq!(
        anonymous.status, 401,
        "docker-registry with htpasswd let an anonymous GET through"
    );

    // skopeo, straight from each registry
    let from_plain = skopeo_pull(
        &format!("{}/selfcheck/app:v1", plain.host()),
        &SkopeoSource {
            creds: basic_auth(),
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&from_plain.top, image.digest());
    assert_eq!(from_plain.blobs, expected_single(&image));
    let from_tls = skopeo_pull(
        &format!("{}/selfcheck/app:v1", tls.host()),
        &SkopeoSource {
            cert_dir: Some(tls.tls_files().unwrap().cert_dir.clone()),
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&from_tls.top, image.digest());
    assert_eq!(from_tls.blobs, expected_single(&image));

    // curl, manifest and every blob
    let digest = curl_pull(
        &tls.url(),
        "selfcheck/app",
        "v1",
        &image.blob_digests(),
        Some(&tls.tls_files().unwrap().ca_file),
    );
    assert_eq!(&digest, image.digest());

    // ctr, from the TLS registry with its CA in hosts.toml
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir(
        &tls.host(),
        &tls.url(),
        Some(&tls.tls_files().unwrap().ca_file),
    );
    let reference = format!("{}/selfcheck/app:v1", tls.host());
    containerd.pull_ok(&hosts, &reference, None);
    assert_eq!(&containerd.image_digest(&reference), image.digest());
    assert_eq!(containerd.content_digests(), expected_single(&image));

    // the access log counts what was served: one GET per blob per client (skopeo, curl, ctr)
    let (gets, bytes) = tls.blob_gets();
    assert_eq!(gets, 3 * image.blobs.len(), "blob GETs on the TLS registry");
    assert_eq!(
        bytes,
        3 * image.blob_bytes(),
        "blob bytes sent by the TLS registry"
    );
}

/// Asserts that skopeo, ctr and curl each receive exactly `image` through outpost for `reference`
/// (`quay.io/kairos/core:v1`, whose registry host is mirrored by containerd with `?ns=`).
fn pull_with_all_clients(
    outpost: &Outpost,
    image: &Image,
    registry_host: &str,
    name: &str,
    tag: &str,
) {
    let via_skopeo = skopeo_pull(
        &format!("{}/{registry_host}/{name}:{tag}", outpost.host()),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&via_skopeo.top, image.digest(), "skopeo: manifest digest");
    assert_eq!(via_skopeo.blobs, expected_single(image), "skopeo: blobs");

    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir(registry_host, &outpost.url(), None);
    let reference = format!("{registry_host}/{name}:{tag}");
    containerd.pull_ok(&hosts, &reference, None);
    assert_eq!(
        &containerd.image_digest(&reference),
        image.digest(),
        "ctr: image digest"
    );
    assert_eq!(
        containerd.content_digests(),
        expected_single(image),
        "ctr: content"
    );

    let via_curl = curl_pull(
        &outpost.url(),
        &format!("{registry_host}/{name}"),
        tag,
        &image.blob_digests(),
        None,
    );
    assert_eq!(&via_curl, image.digest(), "curl: manifest digest");
}

/// Asserts the upstream served `repository`'s manifest (the translated name reached it).
fn assert_upstream_saw(registry: &Registry, repository: &str) {
    let log = registry.access_log();
    assert!(
        log.iter().any(
            |e| e.path.starts_with(&format!("/v2/{repository}/manifests/"))
                && (200..300).contains(&e.status)
        ),
        "the upstream {} never served a manifest of {repository}; it saw: {:#?}",
        registry.host(),
        log
    );
}

/// Scenario 1: `stylus.registryCredentials` with a path in `domain`, a base64 password and
/// `insecure: true`; an htpasswd upstream. `quay.io/kairos/core:v1` is fetched as
/// `spectro-images/quay.io/kairos/core:v1`.
#[test]
fn single_external_registry_with_credentials() {
    let upstream = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: false,
    });
    let image = Image::build(&ImageSpec::small(11));
    upstream.push(&image, "spectro-images/quay.io/kairos/core", "v1");
    let outpost = Outpost::start(&format!(
        "#cloud-config\n\
         stylus:\n\
         \x20 registryCredentials:\n\
         \x20   domain: {}/spectro-images\n\
         \x20   username: {USER}\n\
         \x20   password: {}\n\
         \x20   encodedPassword: true\n\
         \x20   insecure: true\n",
        upstream.host(),
        b64(PASS)
    ));
    pull_with_all_clients(&outpost, &image, "quay.io", "kairos/core", "v1");
    assert_upstream_saw(&upstream, "spectro-images/quay.io/kairos/core");
    let log = outpost.settled_stderr();
    assert!(
        !log.contains(PASS) && !log.contains(&b64(PASS)),
        "outpost logged the upstream password"
    );
}

/// Issue 3: a plain upstream without auth (an external registry with only `domain`).
#[test]
fn plain_upstream_without_auth() {
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec::small(12));
    upstream.push(&image, "quay.io/kairos/core", "v1");
    let outpost = Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n",
        upstream.host()
    ));
    let via_skopeo = skopeo_pull(
        &format!("{}/quay.io/kairos/core:v1", outpost.host()),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&via_skopeo.top, image.digest());
    assert_eq!(via_skopeo.blobs, expected_single(&image));
    assert_upstream_saw(&upstream, "quay.io/kairos/core");
}

/// Scenario 2: `registryMappingRules` to two upstreams: one HTTPS with htpasswd whose CA is given
/// in `certificates`, one plain with `insecure: true`.
#[test]
fn mapping_rules_to_two_upstreams() {
    let secure = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: true,
    });
    let plain = Registry::start(RegistryOptions::default());
    let app = Image::build(&ImageSpec::small(21));
    let tool = Image::build(&ImageSpec::small(22));
    secure.push(&app, "palette-images/edge/app", "v1");
    plain.push(&tool, "mirror/acme/tool", "v2");
    let outpost = Outpost::start(&format!(
        "stylus:\n\
         \x20 externalRegistries:\n\
         \x20   registries:\n\
         \x20     - domain: {secure}\n\
         \x20       username: {USER}\n\
         \x20       password: {PASS}\n\
         \x20       certificates:\n\
         \x20         - |\n{ca}\
         \x20     - domain: {plain}\n\
         \x20       insecure: true\n\
         \x20   registryMappingRules:\n\
         \x20     \"us-docker.pkg.dev/palette-images\": \"{secure}/palette-images\"\n\
         \x20     \"ghcr.io/acme\": \"{plain}/mirror/acme\"\n",
        secure = secure.host(),
        plain = plain.host(),
        ca = indent_pem(secure.ca_pem().unwrap(), 12),
    ));
    // the TLS upstream, through skopeo (host-in-path) and curl
    let via_skopeo = skopeo_pull(
        &format!(
            "{}/us-docker.pkg.dev/palette-images/edge/app:v1",
            outpost.host()
        ),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&via_skopeo.top, app.digest());
    assert_eq!(via_skopeo.blobs, expected_single(&app));
    let via_curl = curl_pull(
        &outpost.url(),
        "us-docker.pkg.dev/palette-images/edge/app",
        "v1",
        &app.blob_digests(),
        None,
    );
    assert_eq!(&via_curl, app.digest());
    assert_upstream_saw(&secure, "palette-images/edge/app");

    // the plain upstream, through containerd (ns=ghcr.io) and skopeo
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("ghcr.io", &outpost.url(), None);
    containerd.pull_ok(&hosts, "ghcr.io/acme/tool:v2", None);
    assert_eq!(
        &containerd.image_digest("ghcr.io/acme/tool:v2"),
        tool.digest()
    );
    assert_eq!(containerd.content_digests(), expected_single(&tool));
    let via_skopeo = skopeo_pull(
        &format!("{}/ghcr.io/acme/tool:v2", outpost.host()),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&via_skopeo.top, tool.digest());
    assert_upstream_saw(&plain, "mirror/acme/tool");
}

/// Scenario 3: no external registry; the provider image's registry (HTTPS, htpasswd, its CA as
/// one PEM string in `providerCredentials.certificates`) with `providerCredentials`; the local
/// registry disabled. The provider image pulls and nothing is stored.
#[test]
fn provider_registry_with_credentials_stores_nothing() {
    let provider = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: true,
    });
    let image = Image::build(&ImageSpec::small(31));
    provider.push(&image, "kairos/core-provider", "v1");
    let outpost = Outpost::start(&format!(
        "#cloud-config\n\
         outpost:\n\
         \x20 localRegistry:\n\
         \x20   enabled: false\n\
         options:\n\
         \x20 system.uri: {host}/kairos/core-provider:v1\n\
         providerCredentials:\n\
         \x20 registry: {host}\n\
         \x20 user: {USER}\n\
         \x20 password: {PASS}\n\
         \x20 certificates: |\n{ca}",
        host = provider.host(),
        ca = indent_pem(provider.ca_pem().unwrap(), 4),
    ));
    // containerd mirrors the provider registry's host to outpost (`?ns=127.0.0.1:PORT`)
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir(&provider.host(), &outpost.url(), None);
    let reference = format!("{}/kairos/core-provider:v1", provider.host());
    containerd.pull_ok(&hosts, &reference, None);
    assert_eq!(&containerd.image_digest(&reference), image.digest());
    assert_eq!(containerd.content_digests(), expected_single(&image));
    // curl in the host-in-path form
    let via_curl = curl_pull(
        &outpost.url(),
        &format!("{}/kairos/core-provider", provider.host()),
        "v1",
        &image.blob_digests(),
        None,
    );
    assert_eq!(&via_curl, image.digest());
    assert_upstream_saw(&provider, "kairos/core-provider");

    // an image from the same registry that is not the provider image (and so not an
    // infrastructure image) passes too
    let other = Image::build(&ImageSpec::small(32));
    provider.push(&other, "apps/web", "v1");
    let via_curl = curl_pull(
        &outpost.url(),
        &format!("{}/apps/web", provider.host()),
        "v1",
        &other.blob_digests(),
        None,
    );
    assert_eq!(&via_curl, other.digest());

    // nothing is stored: no file named after, or holding, a pushed manifest or blob
    let mut pushed = expected_single(&image);
    pushed.extend(expected_single(&other));
    for file in stored_files(outpost.data_dir()) {
        let (_, digest) = outpost_tests::image::file_digest(Path::new(&file));
        assert!(
            !pushed.contains(&digest),
            "outpost stored {file} ({digest}) with the local registry disabled"
        );
        assert!(
            !pushed.iter().any(|d| file.contains(d.hex())),
            "outpost stored {file} with the local registry disabled"
        );
    }
}

/// (authenticated provider registry, authenticated external registry, local registry).
type Combination = (bool, bool, bool);

/// The YAML for one combination of the support matrix (upstreams need not exist to start).
fn matrix_config(provider_auth: bool, external_auth: bool, local_registry: bool) -> String {
    let mut yaml = format!("outpost:\n  localRegistry:\n    enabled: {local_registry}\n");
    if external_auth {
        yaml.push_str(&format!(
            "stylus:\n  registryCredentials:\n    domain: 127.0.0.1:9/spectro-images\n    username: {USER}\n    password: {PASS}\n    insecure: true\n"
        ));
    }
    yaml.push_str("options:\n  system.uri: quay.io/kairos/core:v1\n");
    if provider_auth {
        yaml.push_str(&format!(
            "providerCredentials:\n  registry: quay.io\n  user: {USER}\n  password: {PASS}\n"
        ));
    }
    yaml
}

/// Scenario 4: every forbidden combination of the support matrix: `outpost serve` exits 2, names
/// the features and keys, never listens, and prints no secret.
#[test]
fn forbidden_matrix_combinations_refuse_to_start() {
    // (provider auth, external auth, local registry), keys the message must name
    let forbidden: [(Combination, &[&str]); 3] = [
        (
            (true, false, true),
            &["providerCredentials", "localRegistry"],
        ),
        (
            (true, true, false),
            &["providerCredentials", "registryCredentials"],
        ),
        (
            (true, true, true),
            &[
                "providerCredentials",
                "localRegistry",
                "registryCredentials",
            ],
        ),
    ];
    for ((provider, external, local), keys) in forbidden {
        let yaml = matrix_config(provider, external, local);
        let (code, stderr, listened) = Outpost::serve_expect_exit(&yaml);
        assert_eq!(code, 2, "exit code for\n{yaml}\nstderr:\n{stderr}");
        for key in keys {
            assert!(
                stderr.contains(key),
                "the refusal does not name `{key}` for\n{yaml}\nstderr:\n{stderr}"
            );
        }
        assert!(
            !listened,
            "outpost listened although it refused the configuration\n{yaml}"
        );
        assert!(
            !stderr.contains(PASS),
            "the refusal printed a password:\n{stderr}"
        );
    }
}

/// Issue 2's other half of the matrix: every allowed combination starts and answers `/v2/`.
#[test]
fn allowed_matrix_combinations_start() {
    for provider in [false, true] {
        for external in [false, true] {
            for local in [false, true] {
                if provider && (external || local) {
                    continue;
                }
                let mut outpost = Outpost::start(&matrix_config(provider, external, local));
                outpost.assert_running();
            }
        }
    }
}

/// Scenario 5 setup: an htpasswd upstream holding `quay.io/e2e/cached:v1`, outpost in front of
/// it, and a first pull with ctr then skopeo (both checked against the pushed digests).
struct Cached {
    upstream: Registry,
    image: Image,
    outpost: Outpost,
    containerd: Containerd,
    hosts: std::path::PathBuf,
}

const CACHED_TAG: &str = "quay.io/e2e/cached:v1";

fn pull_twice_online(seed: u64) -> Cached {
    let upstream = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: false,
    });
    let image = Image::build(&ImageSpec::small(seed));
    upstream.push(&image, "quay.io/e2e/cached", "v1");
    let outpost = Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    username: {USER}\n    password: {PASS}\n    insecure: true\n",
        upstream.host()
    ));
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("quay.io", &outpost.url(), None);
    containerd.pull_ok(&hosts, CACHED_TAG, None);
    assert_eq!(&containerd.image_digest(CACHED_TAG), image.digest());
    let online = skopeo_pull(
        &format!("{}/{CACHED_TAG}", outpost.host()),
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&online.top, image.digest());
    assert_eq!(online.blobs, expected_single(&image));
    Cached {
        upstream,
        image,
        outpost,
        containerd,
        hosts,
    }
}

/// Scenario 5a: ctr then skopeo pull the same image; the upstream sends each blob once (the
/// cache serves the second client).
#[test]
fn cache_serves_the_second_client() {
    let Cached {
        upstream, image, ..
    } = pull_twice_online(51);
    let (gets, bytes) = upstream.blob_gets();
    assert_eq!(
        (gets, bytes),
        (image.blobs.len(), image.blob_bytes()),
        "two clients pulled; the upstream should have sent each blob once (the cache serves the second)"
    );
}

/// Scenario 5b: after a pull, stop the upstream; ctr and skopeo pull again by tag and by digest.
#[test]
fn offline_pulls_by_tag_and_digest() {
    let Cached {
        mut upstream,
        image,
        outpost,
        containerd,
        hosts,
    } = pull_twice_online(52);
    let by_tag = CACHED_TAG;
    let by_digest = format!("quay.io/e2e/cached@{}", image.digest());
    let skopeo = SkopeoSource {
        insecure: true,
        ..SkopeoSource::default()
    };
    upstream.stop();
    containerd.forget_everything();
    containerd.pull_ok(&hosts, by_tag, None);
    assert_eq!(
        &containerd.image_digest(by_tag),
        image.digest(),
        "ctr by tag, offline"
    );
    assert_eq!(containerd.content_digests(), expected_single(&image));
    containerd.forget_everything();
    containerd.pull_ok(&hosts, &by_digest, None);
    assert_eq!(
        &containerd.image_digest(&by_digest),
        image.digest(),
        "ctr by digest, offline"
    );
    assert_eq!(containerd.content_digests(), expected_single(&image));
    for reference in [by_tag.to_owned(), by_digest.clone()] {
        let offline = skopeo_copy(&format!("{}/{reference}", outpost.host()), &skopeo)
            .unwrap_or_else(|e| {
                panic!(
                    "skopeo {reference} with the upstream down: {e}\noutpost log:\n{}",
                    outpost.stderr()
                )
            });
        assert_eq!(&offline.top, image.digest(), "skopeo {reference}, offline");
        assert_eq!(offline.blobs, expected_single(&image));
    }
}

/// An outpost whose external registry is `upstream` (plain, no auth).
fn outpost_for(upstream: &Registry) -> Outpost {
    Outpost::start(&format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n",
        upstream.host()
    ))
}

/// Scenario 6a: a multi-arch OCI index (linux/amd64 + linux/arm64).
#[test]
fn multi_arch_index() {
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec {
        multi_arch: true,
        ..ImageSpec::small(61)
    });
    upstream.push(&image, "quay.io/e2e/multi", "v1");
    let outpost = outpost_for(&upstream);

    // skopeo --all: the index, both manifests, every blob
    let all = skopeo_pull(
        &format!("{}/quay.io/e2e/multi:v1", outpost.host()),
        &SkopeoSource {
            insecure: true,
            all: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&all.top, image.digest(), "skopeo --all: the index digest");
    let mut everything = image.blob_digests();
    everything.insert(image.digest().clone());
    everything.extend(image.manifests.iter().map(|m| m.digest.clone()));
    assert_eq!(all.blobs, everything);

    // ctr for arm64: the index, the arm64 manifest and its blobs only
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("quay.io", &outpost.url(), None);
    containerd.pull_ok(&hosts, "quay.io/e2e/multi:v1", Some("linux/arm64"));
    assert_eq!(
        &containerd.image_digest("quay.io/e2e/multi:v1"),
        image.digest()
    );
    assert_eq!(
        containerd.content_digests(),
        image.platform_digests("linux/arm64")
    );
}

/// Scenario 6b: one 200 MiB layer, through curl and ctr.
#[test]
fn layer_of_200_mib() {
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec {
        seed: 62,
        layers: vec![LayerSpec {
            size: 200 * MIB,
            gzip: false,
        }],
        multi_arch: false,
    });
    upstream.push(&image, "quay.io/e2e/big", "v1");
    let outpost = outpost_for(&upstream);
    let via_curl = curl_pull(
        &outpost.url(),
        "quay.io/e2e/big",
        "v1",
        &image.blob_digests(),
        None,
    );
    assert_eq!(&via_curl, image.digest());
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("quay.io", &outpost.url(), None);
    containerd.pull_ok(&hosts, "quay.io/e2e/big:v1", None);
    assert_eq!(
        &containerd.image_digest("quay.io/e2e/big:v1"),
        image.digest()
    );
    assert_eq!(containerd.content_digests(), expected_single(&image));
}

/// Scenario 6c: a gzip-compressed image of several layers, through skopeo and ctr (which unpacks
/// it and checks the diff_ids).
#[test]
fn gzip_multi_layer_image() {
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec {
        seed: 63,
        layers: (0..4)
            .map(|i| LayerSpec {
                size: (i + 1) * 128 * 1024,
                gzip: true,
            })
            .collect(),
        multi_arch: false,
    });
    upstream.push(&image, "quay.io/e2e/gzip", "v1");
    let outpost = outpost_for(&upstream);
    pull_with_all_clients(&outpost, &image, "quay.io", "e2e/gzip", "v1");
}

/// Scenario 7: containerd over HTTPS with `outpost certs generate` and `outpost containerd-config`.
#[test]
fn containerd_over_https_with_generated_certs() {
    let upstream = Registry::start(RegistryOptions {
        htpasswd: basic_auth(),
        tls: false,
    });
    let image = Image::build(&ImageSpec::small(71));
    upstream.push(&image, "spectro-images/quay.io/kairos/core", "v1");

    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().to_string_lossy().into_owned();
    outpost_ok(&[
        "certs",
        "generate",
        "--dir",
        &certs_dir,
        "--san",
        "127.0.0.1",
        "--san",
        "localhost",
    ]);
    let ca = certs.path().join("ca.pem");
    for file in ["ca.pem", "server.pem", "server-key.pem"] {
        assert!(
            certs.path().join(file).is_file(),
            "`outpost certs generate` wrote no {file}"
        );
    }
    let outpost = Outpost::start_with(
        &format!(
            "stylus:\n  registryCredentials:\n    domain: {}/spectro-images\n    username: {USER}\n    password: {PASS}\n    insecure: true\n",
            upstream.host()
        ),
        OutpostOptions {
            tls: Some((certs.path().join("server.pem"), certs.path().join("server-key.pem"))),
            data_dir: None,
            client: None,
        },
    );
    assert!(outpost.url().starts_with("https://"));
    // curl verifies outpost's certificate against the generated CA
    let via_curl = curl_pull(
        &outpost.url(),
        "quay.io/kairos/core",
        "v1",
        &image.blob_digests(),
        Some(&ca),
    );
    assert_eq!(&via_curl, image.digest());

    let containerd = Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    let config = outpost.config_path().to_string_lossy().into_owned();
    let hosts_arg = hosts.path().to_string_lossy().into_owned();
    let endpoint = outpost.url();
    let ca_arg = ca.to_string_lossy().into_owned();
    outpost_ok(&[
        "containerd-config",
        "--config",
        &config,
        "--out",
        &hosts_arg,
        "--endpoint",
        &endpoint,
        "--ca",
        &ca_arg,
        "--no-fallback",
    ]);
    containerd.pull_ok(hosts.path(), "quay.io/kairos/core:v1", None);
    assert_eq!(
        &containerd.image_digest("quay.io/kairos/core:v1"),
        image.digest()
    );
    assert_eq!(containerd.content_digests(), expected_single(&image));

    // A multi-arch index under a docker.io-style reference: containerd asks outpost with
    // `?ns=docker.io` and `library/` in the path; outpost fetches it from the external registry
    // as `spectro-images/docker.io/library/alpine`.
    let index = Image::build(&ImageSpec {
        multi_arch: true,
        ..ImageSpec::small(72)
    });
    upstream.push(&index, "spectro-images/docker.io/library/alpine", "3");
    containerd.forget_everything();
    containerd.pull_ok(
        hosts.path(),
        "docker.io/library/alpine:3",
        Some("linux/arm64"),
    );
    assert_eq!(
        &containerd.image_digest("docker.io/library/alpine:3"),
        index.digest()
    );
    assert_eq!(
        containerd.content_digests(),
        index.platform_digests("linux/arm64")
    );
    assert_upstream_saw(&upstream, "spectro-images/docker.io/library/alpine");
    // outpost served them (its access log), under the name containerd asked for.
    let log = outpost.settled_stderr();
    assert!(
        log.contains("/v2/library/alpine/manifests/3"),
        "outpost did not serve containerd's request: {log}"
    );
}

/// Who may pull, with real clients: containerd presents the client certificate that
/// `outpost certs generate --client` issued and `containerd-config --client-cert` wrote into
/// hosts.toml (mutual TLS), curl without it is refused; skopeo logs in with `--src-creds`
/// against an htpasswd file, and without it gets nothing.
#[test]
fn clients_authenticate_with_client_certificates_and_htpasswd() {
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec::small(91));
    upstream.push(&image, "spectro-images/quay.io/kairos/core", "v1");
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_string_lossy().into_owned();
    outpost_ok(&["certs", "generate", "--dir", &dir, "--san", "127.0.0.1"]);
    outpost_ok(&["certs", "generate", "--dir", &dir, "--client", "node-1"]);
    let ca = certs.path().join("ca.pem");
    let external = format!(
        "stylus:\n  registryCredentials:\n    domain: {}/spectro-images\n    insecure: true\n",
        upstream.host()
    );

    // Mutual TLS.
    let outpost = Outpost::start_with(
        &format!(
            "outpost:\n  tls:\n    clientCa: {}\n{external}",
            ca.display()
        ),
        OutpostOptions {
            tls: Some((
                certs.path().join("server.pem"),
                certs.path().join("server-key.pem"),
            )),
            client: Some((
                certs.path().join("node-1.pem"),
                certs.path().join("node-1-key.pem"),
            )),
            data_dir: None,
        },
    );
    let containerd = Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    let config = outpost.config_path().to_string_lossy().into_owned();
    let hosts_arg = hosts.path().to_string_lossy().into_owned();
    let endpoint = outpost.url();
    let ca_arg = ca.to_string_lossy().into_owned();
    let client_cert = certs
        .path()
        .join("node-1.pem")
        .to_string_lossy()
        .into_owned();
    let client_key = certs
        .path()
        .join("node-1-key.pem")
        .to_string_lossy()
        .into_owned();
    outpost_ok(&[
        "containerd-config",
        "--config",
        &config,
        "--out",
        &hosts_arg,
        "--endpoint",
        &endpoint,
        "--ca",
        &ca_arg,
        "--client-cert",
        &client_cert,
        "--client-key",
        &client_key,
        "--no-fallback",
    ]);
    containerd.pull_ok(hosts.path(), "quay.io/kairos/core:v1", None);
    assert_eq!(
        &containerd.image_digest("quay.io/kairos/core:v1"),
        image.digest()
    );
    let refused = std::process::Command::new("curl")
        .args(["-sS", "--cacert", &ca_arg, &format!("{endpoint}/v2/")])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "curl without a client certificate was served: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    drop(outpost);

    // htpasswd, plain HTTP on loopback.
    let htpasswd = certs.path().join("htpasswd");
    let hash = bcrypt::hash("node-secret", 5).unwrap();
    std::fs::write(&htpasswd, format!("node:{hash}\n")).unwrap();
    let outpost = Outpost::start(&format!(
        "outpost:\n  auth:\n    htpasswd: {}\n{external}",
        htpasswd.display()
    ));
    let source = format!("{}/quay.io/kairos/core:v1", outpost.host());
    let pulled = skopeo_pull(
        &source,
        &SkopeoSource {
            creds: Some(("node".to_owned(), "node-secret".to_owned())),
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    assert_eq!(&pulled.top, image.digest());
    let anonymous = skopeo_copy(
        &source,
        &SkopeoSource {
            insecure: true,
            ..SkopeoSource::default()
        },
    );
    let error = anonymous.err().expect("skopeo without credentials pulled");
    assert!(
        error.contains("401") || error.to_lowercase().contains("unauthorized"),
        "{error}"
    );
}
