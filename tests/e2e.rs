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
use outpost_tests::image::{Image, ImageSpec, LayerSpec, MIB};
use outpost_tests::real::{
    curl_pull, outpost_ok, skopeo_copy, skopeo_pull, Containerd, Outpost, OutpostOptions, Registry,
    RegistryOptions, SkopeoSource,
};
use outpost_tests::tools::Http;
use storage::Digest;

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

/// Files under a directory tree that look like stored blobs (named by a 64-hex digest).
fn stored_blob_files(dir: &Path) -> Vec<String> {
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
            } else if entry.metadata().map(|m| m.len() > 1024).unwrap_or(false) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

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
