//! Black-box tests of the upstream client (`upstream::Upstream`) against the in-process
//! fake registry: auth flows, token caching, redirects to a CDN, pass-through statuses, streaming
//! memory, and failures that must name the upstream host.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use oci::{Algorithm, Digest, Hasher};
use oci::{Credentials, Secret};
use oci::{Target, TlsPolicy};
use outpost_tests::fake::{Auth, FakeRegistry, DOCKER_MANIFEST, OCI_MANIFEST};
use upstream::{Request, TimeoutStage, Timeouts as UpstreamTimeouts, Upstream, UpstreamError};

const REPO: &str = "team/app";

fn timeouts() -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: Duration::from_secs(3),
        response_header: Duration::from_secs(10),
    }
}

fn upstream() -> Upstream {
    Upstream::new(&timeouts()).unwrap()
}

/// The fake speaks plain HTTP, so targets are `insecure` (HTTPS attempt, then plain HTTP).
fn target(host: &str, creds: Option<(&str, &str)>) -> Target {
    Target {
        host: host.to_owned(),
        repository: REPO.to_owned(),
        credentials: creds.map(|(u, p)| Credentials {
            username: u.to_owned(),
            password: Secret::new(p),
        }),
        tls: TlsPolicy {
            insecure: true,
            extra_cas: Vec::new(),
        },
    }
}

fn get(path: &str) -> Request {
    Request {
        method: Method::GET,
        path: path.to_owned(),
        query: None,
        headers: HeaderMap::new(),
    }
}

async fn body(resp: http::Response<hyper::body::Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::compute(Algorithm::Sha256, bytes)
}

#[tokio::test]
async fn basic_auth_is_answered_once_then_sent_preemptively() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("alice", "wonderland"));
    let digest = fake.add_blob(REPO, b"layer bytes".to_vec());
    let up = upstream();
    let t = target(&fake.host(), Some(("alice", "wonderland")));

    for _ in 0..3 {
        let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(sha256(&body(resp).await), digest);
    }
    let gets = fake.requests_matching("GET", "/blobs/");
    assert_eq!(
        gets.len(),
        4,
        "one 401 round trip, then three authorized GETs"
    );
    assert!(gets[0].authorization().is_none());
    for r in &gets[1..] {
        assert!(r.authorization().unwrap().starts_with("Basic "));
    }
}

#[tokio::test]
async fn basic_auth_required_without_credentials_names_the_host() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("alice", "wonderland"));
    let digest = fake.add_blob(REPO, b"x".to_vec());
    let err = upstream()
        .send(&target(&fake.host(), None), get(&format!("blobs/{digest}")))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::AuthRequired { .. }), "{err:?}");
    assert!(err.to_string().contains(&fake.host()), "{err}");
    assert_eq!(err.status_hint(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn rejected_basic_credentials_name_the_user_not_the_password() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("alice", "wonderland"));
    let digest = fake.add_blob(REPO, b"x".to_vec());
    let err = upstream()
        .send(
            &target(&fake.host(), Some(("alice", "not-the-password"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::CredentialsRejected { username, .. } if username == "alice"),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("alice") && text.contains(&fake.host()),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    // Basic retried exactly once with the wrong password, not in a loop.
    assert_eq!(fake.requests_matching("GET", "/blobs/").len(), 2);
}

#[tokio::test]
async fn bearer_costs_one_token_fetch_for_many_requests() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("bob", "builder", 300));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let manifest = fake.add_manifest(REPO, "v1", OCI_MANIFEST, b"{\"m\":1}".to_vec());
    let up = upstream();
    let t = target(&fake.host(), Some(("bob", "builder")));

    // Concurrent first wave: every request meets a 401, only one fetches the token.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (up, t, digest) = (up.clone(), t.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            body(resp).await
        }));
    }
    for task in tasks {
        assert_eq!(sha256(&task.await.unwrap()), digest);
    }
    // Then sequential requests: pre-emptive token, no 401.
    let before = fake.requests_matching("GET", "/v2/").len();
    for _ in 0..5 {
        let mut req = get("manifests/v1");
        req.headers
            .insert(header::ACCEPT, HeaderValue::from_static(OCI_MANIFEST));
        let resp = up.send(&t, req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(sha256(&body(resp).await), manifest);
    }
    assert_eq!(fake.requests_matching("GET", "/v2/").len() - before, 5);
    assert_eq!(fake.token_fetches(), 1);

    let token_req = &fake.requests_matching("GET", "/token")[0];
    assert!(token_req.authorization().unwrap().starts_with("Basic "));
    let query = token_req.query.clone().unwrap();
    assert!(query.contains("service=fake-registry"), "{query}");
    assert!(
        query.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{query}"
    );
}

#[tokio::test]
async fn expired_token_is_refreshed_and_a_rejected_one_refreshed_once() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("bob", "builder", 2));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let up = upstream();
    let t = target(&fake.host(), Some(("bob", "builder")));
    let fetch = || up.send(&t, get(&format!("blobs/{digest}")));

    assert_eq!(fetch().await.unwrap().status(), StatusCode::OK);
    assert_eq!(fake.token_fetches(), 1);

    // Past its lifetime (minus the margin), the token is refreshed before it is sent. The client
    // keeps token lifetimes on tokio's clock, which is moved forward here instead of sleeping
    // (paused only for the jump: with real sockets, a paused clock would also fire the client's
    // connect and header timers whenever the runtime waits for the network). The fake keeps its
    // tokens on the real clock, so for it the old token is still valid: only a refresh made
    // before sending explains a second token fetch, and the next GET is the only one.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(2100)).await;
    tokio::time::resume();
    let gets_before = fake.requests_matching("GET", "/blobs/").len();
    let unauthorized_before = unauthorized_blob_gets(&fake);
    assert_eq!(fetch().await.unwrap().status(), StatusCode::OK);
    assert_eq!(fake.token_fetches(), 2);
    assert_eq!(unauthorized_blob_gets(&fake), unauthorized_before);
    let gets = fake.requests_matching("GET", "/blobs/");
    assert_eq!(gets.len(), gets_before + 1, "no 401 round trip: {gets:#?}");
    assert_eq!(
        gets.last().unwrap().authorization(),
        Some("Bearer fake-token-1"),
        "the GET carried the new token"
    );

    // The registry forgets the token: one 401, one refresh, success.
    fake.invalidate_tokens();
    assert_eq!(fetch().await.unwrap().status(), StatusCode::OK);
    assert_eq!(fake.token_fetches(), 3);
}

/// Blob GETs that carried no valid token (the fake logs them all; those without any
/// Authorization are the 401 round trips of a client that did not know the scheme yet).
fn unauthorized_blob_gets(fake: &FakeRegistry) -> usize {
    fake.requests_matching("GET", "/blobs/")
        .iter()
        .filter(|r| r.authorization().is_none())
        .count()
}

#[tokio::test]
async fn a_token_rejected_after_refresh_is_credentials_rejected() {
    let fake = FakeRegistry::start().await;
    // expires_in 0: every token the fake issues is already expired when used.
    fake.set_auth(Auth::bearer("bob", "builder", 0));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let err = upstream()
        .send(
            &target(&fake.host(), Some(("bob", "builder"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::CredentialsRejected { username, .. } if username == "bob"),
        "{err:?}"
    );
    assert_eq!(
        fake.token_fetches(),
        2,
        "one fetch and one refresh, no loop"
    );
    assert!(!format!("{err} {err:?}").contains("builder"));
}

#[tokio::test]
async fn bearer_with_a_wrong_password_is_credentials_rejected() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("bob", "builder", 300));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let err = upstream()
        .send(
            &target(&fake.host(), Some(("bob", "wrong-pw"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::CredentialsRejected { username, .. } if username == "bob"),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        text.contains(&fake.host()) && !text.contains("wrong-pw"),
        "{text}"
    );
}

#[tokio::test]
async fn anonymous_bearer_fetches_a_token_without_credentials() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::anonymous_bearer(300));
    let digest = fake.add_blob(REPO, b"public layer".to_vec());
    let up = upstream();
    let t = target(&fake.host(), None);
    for _ in 0..3 {
        let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
        assert_eq!(sha256(&body(resp).await), digest);
    }
    assert_eq!(fake.token_fetches(), 1);
    assert!(fake.requests_matching("GET", "/token")[0]
        .authorization()
        .is_none());
}

#[tokio::test]
async fn a_realm_on_another_host_gets_no_credentials() {
    // The upstream is 127.0.0.1:<port>; the realm is advertised as localhost:<port> (the same
    // server under another name), which is not the same IP address as far as the rule goes.
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::anonymous_bearer(300));
    fake.set_realm_host(&format!("localhost:{}", fake.addr().port()));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let resp = upstream()
        .send(
            &target(&fake.host(), Some(("carol", "secret-pw"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap();
    assert_eq!(sha256(&body(resp).await), digest);
    let token_reqs = fake.requests_matching("GET", "/token");
    assert_eq!(token_reqs.len(), 1);
    assert!(token_reqs[0].authorization().is_none());

    // A realm elsewhere that insists on credentials: the error explains, and names the host.
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("carol", "secret-pw", 300));
    fake.set_realm_host(&format!("localhost:{}", fake.addr().port()));
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let err = upstream()
        .send(
            &target(&fake.host(), Some(("carol", "secret-pw"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::TokenFetch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&fake.host()) && text.contains("another domain"),
        "{text}"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.path != "/token" || r.authorization().is_none()));

    // A realm elsewhere that hands out anonymous tokens the registry then refuses: the error
    // says the credentials were withheld, never that they were rejected.
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::anonymous_bearer(300));
    fake.set_realm_host(&format!("localhost:{}", fake.addr().port()));
    fake.refuse_tokens(true);
    let digest = fake.add_blob(REPO, b"layer".to_vec());
    let err = upstream()
        .send(
            &target(&fake.host(), Some(("carol", "secret-pw"))),
            get(&format!("blobs/{digest}")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::AnonymousTokenRefused { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("without credentials"), "{text}");
    assert!(!text.contains("rejected the stored credentials"), "{text}");
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.path != "/token" || r.authorization().is_none()));
}

#[tokio::test]
async fn redirect_to_a_cdn_carries_no_authorization() {
    for auth in [Auth::basic("dave", "pw"), Auth::bearer("dave", "pw", 300)] {
        let fake = FakeRegistry::start().await;
        fake.set_auth(auth.clone());
        let cdn = fake.start_cdn().await;
        fake.redirect_blobs_to(&cdn);
        let digest = fake.add_blob(REPO, vec![7u8; 100_000]);
        let up = upstream();
        let t = target(&fake.host(), Some(("dave", "pw")));
        for _ in 0..2 {
            let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{auth:?}");
            assert_eq!(sha256(&body(resp).await), digest);
        }
        assert_eq!(cdn.rejected_with_authorization(), 0, "{auth:?}");
        let cdn_gets = cdn.requests_matching("GET", "/blobs/");
        assert_eq!(cdn_gets.len(), 2);
        assert!(cdn_gets.iter().all(|r| r.authorization().is_none()));
        assert!(cdn_gets
            .iter()
            .all(|r| r.query.as_deref().unwrap().contains("signature=")));
        assert_eq!(cdn.blob_bytes_sent(), 200_000);
        // The registry itself did get the credentials.
        let authorized = fake
            .requests_matching("GET", "/blobs/")
            .iter()
            .filter(|r| r.authorization().is_some())
            .count();
        assert_eq!(authorized, 2, "{auth:?}");
    }
}

#[tokio::test]
async fn status_429_is_passed_back_with_retry_after() {
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, b"x".to_vec());
    fake.fail_next(1, 429, Some(7));
    let up = upstream();
    let t = target(&fake.host(), None);
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_authorization_header_is_never_forwarded() {
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, b"x".to_vec());
    let up = upstream();
    let mut req = get(&format!("blobs/{digest}"));
    req.headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer client-own-token"),
    );
    let resp = up.send(&target(&fake.host(), None), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(fake.requests().iter().all(|r| r.authorization().is_none()));

    // With stored credentials, what goes up is the stored Basic, not the client's header.
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::basic("erin", "pw"));
    let digest = fake.add_blob(REPO, b"x".to_vec());
    let mut req = get(&format!("blobs/{digest}"));
    req.headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic Y2xpZW50OmNsaWVudA=="),
    );
    let resp = up
        .send(&target(&fake.host(), Some(("erin", "pw"))), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.authorization() != Some("Basic Y2xpZW50OmNsaWVudA==")));
}

#[tokio::test]
async fn manifests_tags_head_and_range_pass_through() {
    let fake = FakeRegistry::start().await;
    let manifest = fake.add_manifest(REPO, "v1", OCI_MANIFEST, b"{\"schemaVersion\":2}".to_vec());
    for tag in ["v2", "v3", "v4"] {
        fake.tag(REPO, tag, &manifest);
    }
    let digest = fake.add_blob(REPO, (0u8..=255).collect::<Vec<u8>>());
    let up = upstream();
    let t = target(&fake.host(), None);

    // HEAD: headers, no body.
    let mut req = get("manifests/v1");
    req.method = Method::HEAD;
    req.headers
        .insert(header::ACCEPT, HeaderValue::from_static(OCI_MANIFEST));
    let resp = up.send(&t, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], OCI_MANIFEST);
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "19");
    assert_eq!(
        resp.headers()["docker-content-digest"],
        manifest.to_string().as_str()
    );
    assert!(body(resp).await.is_empty());

    // Accept is honoured: an OCI manifest is not served to a Docker-only Accept.
    let mut req = get("manifests/v1");
    req.headers
        .insert(header::ACCEPT, HeaderValue::from_static(DOCKER_MANIFEST));
    assert_eq!(
        up.send(&t, req).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // tags/list with n, and a Link to the next page.
    let mut req = get("tags/list");
    req.query = Some("n=2".to_owned());
    let resp = up.send(&t, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let link = resp.headers()[header::LINK].to_str().unwrap().to_owned();
    assert_eq!(link, "</v2/team/app/tags/list?last=v2&n=2>; rel=\"next\"");
    let json: serde_json::Value = serde_json::from_slice(&body(resp).await).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["v1", "v2"]));

    // Range on a blob.
    let mut req = get(&format!("blobs/{digest}"));
    req.headers
        .insert(header::RANGE, HeaderValue::from_static("bytes=10-19"));
    let resp = up.send(&t, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 10-19/256");
    assert_eq!(&body(resp).await[..], &(10u8..20).collect::<Vec<u8>>()[..]);

    // Unknown things: 404 with an OCI error body.
    let resp = up.send(&t, get("manifests/nope")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let json: serde_json::Value = serde_json::from_slice(&body(resp).await).unwrap();
    assert_eq!(json["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn connect_failure_names_the_host_and_maps_to_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    drop(listener);
    for insecure in [false, true] {
        let mut t = target(&host, None);
        t.tls.insecure = insecure;
        let err = upstream().send(&t, get("manifests/v1")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&host), "{err}");
        assert_eq!(err.status_hint(), StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn response_header_timeout_names_the_host_and_maps_to_504() {
    // Real time (300 ms): a paused clock would fire the timeout whenever the runtime waits for
    // the loopback socket, before the request has even reached the fake, or fire the connect
    // timeout instead; what is tested is the timer against a real connection.
    let fake = FakeRegistry::start().await;
    fake.delay_responses(Some(Duration::from_secs(3)));
    let up = Upstream::new(&UpstreamTimeouts {
        connect: Duration::from_secs(3),
        response_header: Duration::from_millis(300),
    })
    .unwrap();
    let err = up
        .send(&target(&fake.host(), None), get("manifests/v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                stage: TimeoutStage::ResponseHeaders,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&fake.host()), "{err}");
    assert_eq!(err.status_hint(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn connect_timeout_names_the_host_and_maps_to_504() {
    // Real time (500 ms, and up to 200 ms per filler): the connect timer is raced against the
    // kernel's unanswered SYNs, which a paused tokio clock knows nothing about.
    // A listener that never accepts, with its accept queue filled: further SYNs go unanswered.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let up = Upstream::new(&UpstreamTimeouts {
        connect: Duration::from_millis(500),
        response_header: Duration::from_secs(10),
    })
    .unwrap();
    let host = addr.to_string();
    let mut t = target(&host, None);
    t.tls.insecure = false;
    let err = up.send(&t, get("manifests/v1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                stage: TimeoutStage::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&host), "{err}");
    assert_eq!(err.status_hint(), StatusCode::GATEWAY_TIMEOUT);
    drop(listener);
}

#[tokio::test]
async fn a_stopped_upstream_is_unreachable_and_back_after_restart() {
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, b"x".to_vec());
    let up = upstream();
    let t = target(&fake.host(), None);
    assert_eq!(
        up.send(&t, get(&format!("blobs/{digest}")))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    fake.stop().await;
    let err = up
        .send(&t, get(&format!("blobs/{digest}")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Unreachable { .. } | UpstreamError::Protocol { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&fake.host()), "{err}");
    fake.restart().await;
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    assert_eq!(sha256(&body(resp).await), digest);
}

/// The resident set size of this process, from `/proc/self/status`. The process is the test's
/// own (see [`outpost_tests::own_process`]), so it measures nothing but the test.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Memory is measured as the growth of this process's resident set while the body streams. So
/// that the process holds nothing but this test (the tests of a binary run in parallel threads,
/// and any of them would count), the test runs alone in a child process of the test binary.
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
    const SIZE: u64 = 256 << 20;
    let fake = FakeRegistry::start().await;
    let digest = fake.add_large_blob(REPO, SIZE, 42);
    let up = upstream();
    let resp = up
        .send(&target(&fake.host(), None), get(&format!("blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_LENGTH],
        SIZE.to_string().as_str()
    );

    let baseline = rss_bytes();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let mut body = resp.into_body();
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut received = 0u64;
    let mut next_sample = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            hasher.update(&data);
            received += data.len() as u64;
        }
        if received >= next_sample {
            peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::SeqCst);
            next_sample += 4 << 20;
        }
    }
    assert_eq!(received, SIZE);
    assert_eq!(hasher.finish(), digest);
    assert_eq!(fake.blob_bytes_sent(), SIZE);
    let growth = peak
        .load(std::sync::atomic::Ordering::SeqCst)
        .saturating_sub(baseline);
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB while streaming 256 MiB",
        growth >> 20
    );
}

#[tokio::test]
async fn https_upstream_trusted_through_extra_cas_speaks_http2() {
    let (fake, ca, _dir) = FakeRegistry::start_tls_with_ca().await;
    let digest = fake.add_blob(REPO, b"over tls".to_vec());
    let mut t = target(&fake.host(), None);
    t.tls = TlsPolicy {
        insecure: false,
        extra_cas: vec![ca],
    };
    let resp = upstream()
        .send(&t, get(&format!("blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(sha256(&body(resp).await), digest);
    let seen = fake.requests_matching("GET", "/blobs/");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_2);
}

#[tokio::test]
async fn https_upstream_with_an_unknown_ca_is_a_tls_error_unless_insecure() {
    let (fake, _ca, _dir) = FakeRegistry::start_tls_with_ca().await;
    let digest = fake.add_blob(REPO, b"over tls".to_vec());
    let mut t = target(&fake.host(), None);
    t.tls = TlsPolicy::default();
    let err = upstream()
        .send(&t, get(&format!("blobs/{digest}")))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains(&fake.host()), "{err}");
    assert_eq!(err.status_hint(), StatusCode::BAD_GATEWAY);
    assert!(fake.requests().is_empty());

    // insecure: HTTPS without verification (the fake only speaks HTTPS, so no fallback here).
    t.tls.insecure = true;
    let resp = upstream()
        .send(&t, get(&format!("blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(sha256(&body(resp).await), digest);
}

#[tokio::test]
async fn an_invalid_extra_ca_is_reported_for_the_host() {
    let fake = FakeRegistry::start().await;
    let mut t = target(&fake.host(), None);
    t.tls = TlsPolicy {
        insecure: false,
        extra_cas: vec!["not a certificate".to_owned()],
    };
    let err = upstream().send(&t, get("manifests/v1")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::InvalidCa { .. }), "{err:?}");
    assert!(err.to_string().contains(&fake.host()), "{err}");
}

// ---- the fake's fault switches, seen through the client ----

#[tokio::test]
async fn fake_corrupts_stalls_and_throttles_blob_bodies() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    // Corrupted: same length and Docker-Content-Digest, different bytes.
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, data.clone());
    fake.corrupt_blob(&digest);
    let up = upstream();
    let t = target(&fake.host(), None);
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    assert_eq!(
        resp.headers()["docker-content-digest"],
        digest.to_string().as_str()
    );
    let bytes = body(resp).await;
    assert_eq!(bytes.len(), data.len());
    assert_ne!(sha256(&bytes), digest);

    // Stalled after 100 000 bytes until released.
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, data.clone());
    fake.stall_blobs_after(100_000);
    let t = target(&fake.host(), None);
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    let mut stream = resp.into_body();
    let mut received = Vec::new();
    while received.len() < 100_000 {
        let frame = stream.frame().await.unwrap().unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(received.len(), 100_000);
    // Nothing more arrives while stalled. A negative can only be watched for a while (300 ms of
    // real time); the fake's own count below is the exact check.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.frame())
            .await
            .is_err(),
        "the body went on while stalled"
    );
    assert_eq!(fake.blob_bytes_sent(), 100_000);
    fake.release_blobs();
    while let Some(frame) = stream.frame().await {
        received.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(sha256(&received), digest);
    assert_eq!(fake.blob_bytes_sent(), 300_000);

    // Throttled to 1 MB/s: 300 000 bytes take about 0.3 s (of real time: the throttle's pauses
    // between chunks are what is measured, a lower bound that a slow machine only exceeds).
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, data.clone());
    fake.throttle_blobs(Some(1_000_000));
    let t = target(&fake.host(), None);
    let started = std::time::Instant::now();
    let resp = up.send(&t, get(&format!("blobs/{digest}"))).await.unwrap();
    assert_eq!(sha256(&body(resp).await), digest);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn fake_blob_head_and_unknown_blob() {
    let fake = FakeRegistry::start().await;
    let digest = fake.add_blob(REPO, vec![0u8; 1234]);
    let up = upstream();
    let t = target(&fake.host(), None);
    let mut req = get(&format!("blobs/{digest}"));
    req.method = Method::HEAD;
    let resp = up.send(&t, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1234");
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert_eq!(
        resp.headers()["docker-content-digest"],
        digest.to_string().as_str()
    );
    assert!(body(resp).await.is_empty());
    assert_eq!(fake.blob_bytes_sent(), 0);

    let unknown = sha256(b"nothing");
    let resp = up.send(&t, get(&format!("blobs/{unknown}"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let json: serde_json::Value = serde_json::from_slice(&body(resp).await).unwrap();
    assert_eq!(json["errors"][0]["code"], "BLOB_UNKNOWN");
}
