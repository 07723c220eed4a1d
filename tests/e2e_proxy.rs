//! End to end through a real site proxy: Debian's `tinyproxy` with Basic proxy credentials
//! between outpost and two real Distribution upstreams: one HTTPS with htpasswd (reached in a
//! `CONNECT` tunnel), one plain HTTP with Bearer tokens whose realm is a second host
//! (127.0.0.2; absolute-form requests). skopeo and ctr pull through outpost; the proxy's log shows
//! every upstream and realm request; with the proxy stopped, stored content is still served and
//! a new image fails with the proxy named in the error. Run with `bash tests/e2e.sh proxy`.

use std::collections::BTreeSet;

use oci::Digest;
use outpost_tests::image::{Image, ImageSpec};
use outpost_tests::real::{
    skopeo_copy, skopeo_pull, Containerd, Outpost, Registry, RegistryOptions, SkopeoSource,
    Tinyproxy,
};
use outpost_tests::token_server::TokenServer;
use outpost_tests::tools::Http;

const USER: &str = "e2e-user";
const PASS: &str = "e2e-Pa55word";
const PROXY_USER: &str = "edge";
const PROXY_PASS: &str = "pr0xy-Pa55";

fn expected_single(image: &Image) -> BTreeSet<Digest> {
    let mut set = image.blob_digests();
    set.insert(image.digest().clone());
    set
}

fn indent_pem(pem: &str, indent: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}

/// outpost with the HTTPS upstream as the external registry (`quay.io/...` → `spectro/quay.io/...`)
/// and `docker.io/library` mapped to the token upstream, through `proxy_url`.
fn config(secure: &Registry, tokens_upstream: &Registry, proxy_url: &str) -> String {
    format!(
        "stylus:\n\
         \x20 site:\n\
         \x20   network:\n\
         \x20     httpProxy: {proxy_url}\n\
         \x20     httpsProxy: {proxy_url}\n\
         \x20     noProxy: \"\"\n\
         \x20 registryCredentials:\n\
         \x20   domain: {secure}/spectro\n\
         \x20   username: {USER}\n\
         \x20   password: {PASS}\n\
         \x20   certificates:\n\
         \x20     - |\n{ca}\
         \x20 externalRegistries:\n\
         \x20   registries:\n\
         \x20     - domain: {plain}\n\
         \x20       insecure: true\n\
         \x20   registryMappingRules:\n\
         \x20     \"docker.io/library\": \"{plain}/mirror/library\"\n",
        secure = secure.host(),
        plain = tokens_upstream.host(),
        ca = indent_pem(secure.ca_pem().unwrap(), 8),
    )
}

fn insecure() -> SkopeoSource {
    SkopeoSource {
        insecure: true,
        ..SkopeoSource::default()
    }
}

#[test]
fn pulls_go_through_a_real_proxy_and_survive_it_going_down() {
    let mut proxy = Tinyproxy::start(Some((PROXY_USER, PROXY_PASS)));

    let secure = Registry::start(RegistryOptions {
        htpasswd: Some((USER.to_owned(), PASS.to_owned())),
        tls: true,
    });
    let app = Image::build(&ImageSpec::small(71));
    secure.push(&app, "spectro/quay.io/kairos/core", "v1");

    let tokens = TokenServer::start("127.0.0.2");
    let mut plain = Registry::start(RegistryOptions::default());
    let tool = Image::build(&ImageSpec::small(72));
    let later = Image::build(&ImageSpec::small(73));
    plain.push(&tool, "mirror/library/tool", "v1");
    plain.push(&later, "mirror/library/later", "v1");
    plain.require_tokens(&tokens);

    let outpost = Outpost::start(&config(&secure, &plain, &proxy.url()));

    // The HTTPS upstream: skopeo (host in path) and ctr (?ns=quay.io).
    let via_skopeo = skopeo_pull(
        &format!("{}/quay.io/kairos/core:v1", outpost.host()),
        &insecure(),
    );
    assert_eq!(&via_skopeo.top, app.digest());
    assert_eq!(via_skopeo.blobs, expected_single(&app));
    let containerd = Containerd::start();
    let quay = containerd.mirror_hosts_dir("quay.io", &outpost.url(), None);
    containerd.pull_ok(&quay, "quay.io/kairos/core:v1", None);
    assert_eq!(
        &containerd.image_digest("quay.io/kairos/core:v1"),
        app.digest()
    );

    // The token upstream, its realm on 127.0.0.2: ctr (?ns=docker.io) and skopeo.
    let docker = containerd.mirror_hosts_dir("docker.io", &outpost.url(), None);
    containerd.pull_ok(&docker, "docker.io/library/tool:v1", None);
    assert_eq!(
        &containerd.image_digest("docker.io/library/tool:v1"),
        tool.digest()
    );
    let via_skopeo = skopeo_pull(&format!("{}/library/tool:v1", outpost.host()), &insecure());
    assert_eq!(&via_skopeo.top, tool.digest());
    assert_eq!(via_skopeo.blobs, expected_single(&tool));
    assert!(tokens.issued() >= 1, "the token server issued nothing");

    // The proxy saw every upstream and the realm: a CONNECT to the HTTPS upstream, absolute-form
    // GETs of the plain upstream's manifests and blobs, and of the realm.
    let requests = proxy.requests();
    let seen = |method: &str, prefix: &str| {
        requests
            .iter()
            .filter(|(m, t)| m == method && t.starts_with(prefix))
            .count()
    };
    assert!(seen("CONNECT", &secure.host()) >= 1, "{requests:#?}");
    let plain_url = format!("http://{}/v2/mirror/library/tool/", plain.host());
    assert!(
        seen("GET", &format!("{plain_url}manifests/")) >= 1,
        "{requests:#?}"
    );
    assert!(
        seen("GET", &format!("{plain_url}blobs/")) >= 1,
        "{requests:#?}"
    );
    assert!(seen("GET", &tokens.realm()) >= 1, "{requests:#?}");
    // The upstreams saw nothing that did not pass the proxy: each pulled manifest reached them.
    for (registry, repository) in [
        (&secure, "spectro/quay.io/kairos/core"),
        (&plain, "mirror/library/tool"),
    ] {
        assert!(
            registry.access_log().iter().any(|e| e
                .path
                .starts_with(&format!("/v2/{repository}/manifests/"))
                && e.status == 200),
            "{repository}"
        );
    }
    let log = outpost.settled_stderr();
    assert!(
        !log.contains(PROXY_PASS) && !log.contains(PASS),
        "a password in outpost's log"
    );

    // The proxy goes down: stored content is served (ctr again from an empty content store,
    // skopeo by digest), a new image fails naming the proxy.
    proxy.stop();
    containerd.forget_everything();
    containerd.pull_ok(&docker, "docker.io/library/tool:v1", None);
    assert_eq!(
        &containerd.image_digest("docker.io/library/tool:v1"),
        tool.digest()
    );
    let by_digest = skopeo_pull(
        &format!("{}/quay.io/kairos/core@{}", outpost.host(), app.digest()),
        &insecure(),
    );
    assert_eq!(by_digest.blobs, expected_single(&app));

    let failed = skopeo_copy(&format!("{}/library/later:v1", outpost.host()), &insecure());
    assert!(
        failed.is_err(),
        "an image never stored pulled with the proxy down"
    );
    let reply = Http::get(format!("{}/v2/library/later/manifests/v1", outpost.url()))
        .header("Accept", outpost_tests::image::ACCEPT_MANIFESTS)
        .send();
    assert_eq!(reply.status, 502, "{}", reply.text());
    let body = reply.text();
    let proxy_shown = format!("http://{PROXY_USER}:****@127.0.0.1:");
    assert!(
        body.contains("the proxy at") && body.contains(&proxy_shown),
        "{body}"
    );
    assert!(body.contains("is not reachable"), "{body}");
    assert!(!body.contains(PROXY_PASS), "{body}");
}

#[test]
fn wrong_proxy_credentials_are_named_and_nothing_bypasses_the_proxy() {
    let proxy = Tinyproxy::start(Some((PROXY_USER, PROXY_PASS)));
    let secure = Registry::start(RegistryOptions {
        htpasswd: Some((USER.to_owned(), PASS.to_owned())),
        tls: true,
    });
    let app = Image::build(&ImageSpec::small(74));
    secure.push(&app, "spectro/quay.io/kairos/core", "v1");
    let tokens = TokenServer::start("127.0.0.2");
    let plain = Registry::start(RegistryOptions::default());
    let wrong = proxy
        .url_without_credentials()
        .replace("http://", &format!("http://{PROXY_USER}:not-the-password@"));
    let outpost = Outpost::start(&config(&secure, &plain, &wrong));

    let reply = Http::get(format!(
        "{}/v2/quay.io/kairos/core/manifests/v1",
        outpost.url()
    ))
    .header("Accept", outpost_tests::image::ACCEPT_MANIFESTS)
    .send();
    assert_eq!(reply.status, 502, "{}", reply.text());
    let body = reply.text();
    // tinyproxy 1.11 answers wrong credentials with 401 (407 only when none are sent).
    for part in [
        "refused outpost's credentials (401 Unauthorized)",
        "stylus.site.network.httpsProxy",
    ] {
        assert!(body.contains(part), "{part:?} not in {body}");
    }
    assert!(!body.contains("not-the-password"), "{body}");
    // The upstream was never reached: not around the proxy either.
    assert!(
        !secure
            .access_log()
            .iter()
            .any(|e| e.method != "PUT" && e.path.contains("/manifests/")),
        "{:?}",
        secure.access_log()
    );
    assert_eq!(tokens.issued(), 0);
}

#[test]
fn a_proxy_without_credentials_carries_both_upstreams() {
    let proxy = Tinyproxy::start(None);
    let secure = Registry::start(RegistryOptions {
        htpasswd: Some((USER.to_owned(), PASS.to_owned())),
        tls: true,
    });
    let app = Image::build(&ImageSpec::small(75));
    secure.push(&app, "spectro/quay.io/kairos/core", "v2");
    let tokens = TokenServer::start("127.0.0.2");
    let mut plain = Registry::start(RegistryOptions::default());
    let tool = Image::build(&ImageSpec::small(76));
    plain.push(&tool, "mirror/library/tool", "v2");
    plain.require_tokens(&tokens);
    let outpost = Outpost::start(&config(&secure, &plain, &proxy.url()));

    for (reference, image) in [("quay.io/kairos/core:v2", &app), ("library/tool:v2", &tool)] {
        let pulled = skopeo_pull(&format!("{}/{reference}", outpost.host()), &insecure());
        assert_eq!(&pulled.top, image.digest(), "{reference}");
        assert_eq!(pulled.blobs, expected_single(image), "{reference}");
    }
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|(m, t)| m == "CONNECT" && *t == secure.host()),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|(m, t)| m == "GET" && t.starts_with(&tokens.realm())),
        "{requests:#?}"
    );
}
