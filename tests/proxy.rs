//! Upstreams reached through the site's HTTP proxy (`stylus.site.network`), against the
//! in-process [`FakeProxy`]: HTTPS upstreams through `CONNECT` tunnels, plain-HTTP upstreams in
//! absolute form, the proxy's credentials sent to the proxy only, `noProxy` decided for every
//! host outpost talks to (registry, token realm, redirect target), and proxy failures as OCI
//! errors that name the proxy, with stored content still served while the proxy is down.

use std::time::Duration;

use base64::Engine as _;
use config::Config;
use http::StatusCode;
use oci::{NoProxy, ProxyOrigin, ProxySettings};
use outpost_tests::fake::{Auth, FakeRegistry, PushedImage};
use outpost_tests::logs::Captured;
use outpost_tests::outpost::{external_config, Client, Outpost};
use outpost_tests::proxy::FakeProxy;

const REPO: &str = "quay.io/app";

/// The proxy for both schemes, with `no_proxy`.
fn proxied(proxy_url: &str, no_proxy: &str) -> Option<ProxySettings> {
    Some(ProxySettings {
        http: Some(proxy_url.parse().unwrap()),
        https: Some(proxy_url.parse().unwrap()),
        no_proxy: no_proxy.parse::<NoProxy>().unwrap(),
        origin: ProxyOrigin::Config,
    })
}

/// outpost with `fake` as its external registry (prefix `p`), verified with `ca` when given.
fn config_for(fake: &FakeRegistry, ca: Option<&str>, credentials: Option<(&str, &str)>) -> Config {
    let mut config = external_config(&fake.host(), "p", credentials);
    if let (Some(ca), Some(registry)) = (ca, config.registry_credentials.as_mut()) {
        registry.insecure = false;
        registry.certificates = vec![ca.to_owned()];
    }
    config
}

/// Pulls `image` by tag `v1` and each of its blobs; asserts every body's digest.
async fn pull(outpost: &Outpost, image: &PushedImage) {
    let client = Client::new();
    let reply = client
        .get(&outpost.url(&format!("/v2/{REPO}/manifests/v1")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), image.digest);
    for (digest, _) in image.blobs() {
        let reply = client
            .get(&outpost.url(&format!("/v2/{REPO}/blobs/{digest}")))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.digest(), *digest);
    }
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_a_connect_tunnel_with_the_proxy_credentials() {
    let logs = Captured::global();
    let (fake, ca, _dir) = FakeRegistry::start_tls_with_ca().await;
    fake.set_auth(Auth::basic("alice", "registry-pw"));
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 1, &[3000, 5000]);
    let proxy = FakeProxy::start().await;
    proxy.require_credentials("edge", "pr0xy:s3cret");

    let mut config = config_for(&fake, Some(&ca), Some(("alice", "registry-pw")));
    config.proxy = proxied(&proxy.url_with("edge", "pr0xy:s3cret"), "");
    let outpost = Outpost::start(config).await;
    pull(&outpost, &image).await;

    let seen = proxy.requests();
    assert!(!seen.is_empty(), "the proxy saw nothing");
    for request in &seen {
        assert_eq!(request.method, "CONNECT", "{request:?}");
        assert_eq!(request.target, fake.host(), "{request:?}");
        assert_eq!(
            request.proxy_authorization.as_deref(),
            Some(basic("edge", "pr0xy:s3cret").as_str()),
            "{request:?}"
        );
        assert_eq!(request.status, 200, "{request:?}");
    }
    // The upstream got its own credentials, never the proxy's.
    let upstream = fake.requests();
    assert!(!upstream.is_empty());
    for request in &upstream {
        assert!(
            !request.headers.contains_key("proxy-authorization"),
            "{request:?}"
        );
    }
    assert!(upstream
        .iter()
        .any(|r| r.authorization() == Some(basic("alice", "registry-pw").as_str())));
    // Nor does any log line hold the proxy's password, plain or encoded.
    let text = logs.text();
    assert!(!text.contains("pr0xy:s3cret") && !text.contains("pr0xy%3As3cret"));
    assert!(!text.contains(&basic("edge", "pr0xy:s3cret")[6..]));
}

#[tokio::test]
async fn a_plain_http_upstream_gets_absolute_form_requests_and_the_credentials_stay_at_the_proxy() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 2, &[1000]);
    let proxy = FakeProxy::start().await;
    proxy.require_credentials("edge", "pw");

    let mut config = config_for(&fake, None, None);
    config.proxy = proxied(&proxy.url_with("edge", "pw"), "");
    let outpost = Outpost::start(config).await;
    pull(&outpost, &image).await;

    let manifest_url = format!("http://{}/v2/p/{REPO}/manifests/v1", fake.host());
    let seen = proxy.requests();
    let gets: Vec<_> = seen.iter().filter(|r| r.method != "CONNECT").collect();
    assert!(
        gets.iter()
            .any(|r| r.target == manifest_url && r.status == 200),
        "no absolute-form GET of {manifest_url}: {seen:?}"
    );
    for request in &seen {
        assert_eq!(
            request.proxy_authorization.as_deref(),
            Some(basic("edge", "pw").as_str()),
            "{request:?}"
        );
    }
    // Every request reached the upstream through the proxy, which dropped its header.
    let upstream = fake.requests();
    assert_eq!(upstream.len(), gets.len(), "{upstream:?} vs {gets:?}");
    for request in &upstream {
        assert!(
            !request.headers.contains_key("proxy-authorization"),
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn no_proxy_is_decided_for_the_registry_and_its_token_realm_one_by_one() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::anonymous_bearer(300));
    let realm_host = format!("localhost:{}", fake.addr().port());
    fake.set_realm_host(&realm_host);
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 3, &[1000]);
    let proxy = FakeProxy::start().await;

    // The realm's host is excluded: the registry through the proxy, the realm directly.
    let mut config = config_for(&fake, None, None);
    config.proxy = proxied(&proxy.url(), "localhost");
    let outpost = Outpost::start(config.clone()).await;
    pull(&outpost, &image).await;
    let seen = proxy.requests();
    assert!(fake.token_fetches() >= 1);
    assert!(
        seen.iter().any(|r| r.target.contains(&fake.host())),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r.target.contains("localhost")),
        "the realm went through the proxy: {seen:?}"
    );

    // The registry's host excluded (with its port): only the realm through the proxy.
    proxy.clear_requests();
    config.proxy = proxied(&proxy.url(), &fake.host());
    let outpost = Outpost::start(config).await;
    let fetches = fake.token_fetches();
    pull(&outpost, &image).await;
    assert!(fake.token_fetches() > fetches);
    let seen = proxy.requests();
    assert!(!seen.is_empty(), "the realm did not go through the proxy");
    for request in &seen {
        assert!(request.target.contains(&realm_host), "{request:?}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_host_goes_through_the_proxy_unless_no_proxy_names_it() {
    let fake = FakeRegistry::start().await;
    let cdn = fake.start_cdn().await;
    fake.redirect_blobs_to(&cdn);
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 4, &[2000]);
    let proxy = FakeProxy::start().await;

    let mut config = config_for(&fake, None, None);
    config.proxy = proxied(&proxy.url(), "");
    let outpost = Outpost::start(config.clone()).await;
    pull(&outpost, &image).await;
    assert!(!cdn.requests().is_empty(), "the blobs were not redirected");
    let seen = proxy.requests();
    assert!(
        seen.iter().any(|r| r.target.contains(&cdn.host())),
        "the CDN was reached directly: {seen:?}"
    );

    // `host:port` of the CDN only: the registry still through the proxy, the CDN directly.
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 5, &[2000]);
    proxy.clear_requests();
    config.proxy = proxied(&proxy.url(), &cdn.host());
    let outpost = Outpost::start(config).await;
    pull(&outpost, &image).await;
    let seen = proxy.requests();
    assert!(
        seen.iter().any(|r| r.target.contains(&fake.host())),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r.target.contains(&cdn.host())),
        "the CDN went through the proxy: {seen:?}"
    );
}

/// The OCI error of a manifest GET through outpost: (status, code, message).
async fn manifest_error(outpost: &Outpost, reference: &str) -> (StatusCode, String, String) {
    let reply = Client::new()
        .get(&outpost.url(&format!("/v2/{REPO}/manifests/{reference}")))
        .await;
    (reply.status, reply.error_code(), reply.error_message())
}

#[tokio::test]
async fn proxy_refusals_are_errors_that_name_the_proxy_and_the_setting() {
    let (fake, ca, _dir) = FakeRegistry::start_tls_with_ca().await;
    fake.push_seeded("p/quay.io/app", Some("v1"), 6, &[100]);
    let proxy = FakeProxy::start().await;
    proxy.require_credentials("edge", "right");

    // No credentials configured.
    let mut config = config_for(&fake, Some(&ca), None);
    config.proxy = proxied(&proxy.url(), "");
    let outpost = Outpost::start(config.clone()).await;
    let (status, code, message) = manifest_error(&outpost, "v1").await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
    );
    for part in [
        &format!("the proxy at {}", proxy.url()),
        "407 Proxy Authentication Required",
        "none are configured",
        "stylus.site.network.httpsProxy",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert_eq!(
        outpost
            .metric(&format!(
                "outpost_upstream_requests_total{{host=\"{}\",status=\"proxy_error\"}}",
                fake.host()
            ))
            .await,
        1.0
    );

    // Wrong credentials: named as such, the password never repeated.
    config.proxy = proxied(&proxy.url_with("edge", "wr0ng-pw"), "");
    let outpost = Outpost::start(config.clone()).await;
    let (status, _, message) = manifest_error(&outpost, "v1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        message.contains("refused outpost's credentials"),
        "{message}"
    );
    assert!(message.contains("check the user and password in stylus.site.network.httpsProxy"));
    assert!(message.contains("http://edge:****@"), "{message}");
    assert!(!message.contains("wr0ng-pw"), "{message}");
    // As tinyproxy 1.11 answers a CONNECT with wrong credentials: 401, the same failure.
    proxy.answer_wrong_credentials_with(StatusCode::UNAUTHORIZED);
    let outpost = Outpost::start(config.clone()).await;
    let (status, _, message) = manifest_error(&outpost, "v1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        message.contains("refused outpost's credentials (401 Unauthorized)"),
        "{message}"
    );

    // A tunnel the proxy refuses: its status.
    proxy.refuse_connect_to(&fake.host());
    config.proxy = proxied(&proxy.url_with("edge", "right"), "");
    let outpost = Outpost::start(config).await;
    let (status, _, message) = manifest_error(&outpost, "v1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(message.contains("refused the tunnel"), "{message}");
    assert!(message.contains("403"), "{message}");
    assert!(message.contains(&fake.host()), "{message}");
}

#[tokio::test]
async fn with_the_proxy_down_stored_content_is_served_and_new_content_names_the_proxy() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app", Some("v1"), 7, &[1500]);
    fake.push_seeded("p/quay.io/app", Some("v2"), 8, &[1500]);
    let proxy = FakeProxy::start().await;

    let mut config = config_for(&fake, None, None);
    config.proxy = proxied(&proxy.url(), "");
    config.cache.tag_ttl = Duration::ZERO;
    let outpost = Outpost::start(config).await;
    pull(&outpost, &image).await;
    proxy.stop().await;
    let upstream_requests = fake.requests().len();

    // The stored tag (its TTL over: revalidation fails) stale, with a Warning; blobs by digest.
    let client = Client::new();
    let reply = client
        .get(&outpost.url(&format!("/v2/{REPO}/manifests/v1")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), image.digest);
    assert!(reply.header("warning").is_some(), "{:?}", reply.headers);
    for (digest, _) in image.blobs() {
        let reply = client
            .get(&outpost.url(&format!("/v2/{REPO}/blobs/{digest}")))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.digest(), *digest);
    }

    // A new image fails, naming the proxy rather than the upstream as what is down.
    let (status, code, message) = manifest_error(&outpost, "v2").await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
    );
    assert!(
        message.contains(&format!("the proxy at {} is not reachable", proxy.url())),
        "{message}"
    );
    // A plain-HTTP upstream (this fake): the proxy for plain HTTP is the one named.
    assert!(
        message.contains("stylus.site.network.httpProxy"),
        "{message}"
    );
    assert_eq!(
        fake.requests().len(),
        upstream_requests,
        "the upstream was reached"
    );
}
