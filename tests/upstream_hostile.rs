//! The upstream client against upstreams that misbehave: every wait on a body is bounded, stored
//! credentials never step down from HTTPS to plain HTTP (redirect or token realm), a token is
//! never reused for other credentials. A scripted in-process fake (raw HTTP/1.1; TLS and plain
//! HTTP on the same port, told apart by the first byte) plays the upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use oci::{Credentials, Secret, Target, TlsPolicy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use upstream::{Request, Timeouts, Upstream};

#[derive(Clone, Debug)]
struct Seen {
    tls: bool,
    head: String,
}

impl Seen {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }
    fn authorization(&self) -> Option<String> {
        self.head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .map(|l| l["authorization:".len()..].trim().to_owned())
    }
}

/// What the fake answers: bytes to write, and whether to then hold the connection open silently.
struct Reply {
    bytes: Vec<u8>,
    stall: bool,
}

fn reply(s: String) -> Reply {
    Reply {
        bytes: s.into_bytes(),
        stall: false,
    }
}

type Handler = Arc<dyn Fn(&Seen, SocketAddr) -> Reply + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    tls: bool,
    addr: SocketAddr,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let s = Seen {
        tls,
        head: String::from_utf8_lossy(&buf).into_owned(),
    };
    seen.lock().unwrap().push(s.clone());
    let r = handler(&s, addr);
    let _ = io.write_all(&r.bytes).await;
    let _ = io.flush().await;
    if r.stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let _ = io.shutdown().await;
}

impl Fake {
    async fn start(tls: Option<TlsAcceptor>, handler: Handler) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (handler, seen, tls) = (handler.clone(), seen2.clone(), tls.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    let is_tls = matches!(tcp.peek(&mut first).await, Ok(1)) && first[0] == 0x16;
                    match (is_tls, tls) {
                        (true, Some(acceptor)) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, true, addr, handler, seen).await;
                            }
                        }
                        // A TLS hello to a plain-HTTP fake: hang up (a handshake failure, so an
                        // insecure target falls back to plain HTTP).
                        (true, None) => drop(tcp),
                        (false, _) => serve(tcp, false, addr, handler, seen).await,
                    }
                });
            }
        });
        Fake { addr, seen }
    }
    fn host(&self) -> String {
        self.addr.to_string()
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        response_header: Duration::from_secs(2),
    }
}

fn target(host: &str, tls: TlsPolicy) -> Target {
    Target {
        host: host.to_owned(),
        repository: "team/app".to_owned(),
        credentials: Some(Credentials {
            username: "alice".to_owned(),
            password: Secret::new("wonderland"),
        }),
        tls,
    }
}

fn plain() -> TlsPolicy {
    TlsPolicy {
        insecure: true,
        extra_cas: Vec::new(),
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

/// A TLS acceptor (HTTP/1.1 only) for 127.0.0.1 and the CA that signed it.
fn tls_acceptor() -> (TlsAcceptor, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let generated = certs::generate(dir.path(), &certs::default_sans(), 30, false).unwrap();
    let tls =
        certs::ServerTls::new(&generated.layout.server_cert, &generated.layout.server_key).unwrap();
    let mut config = (*tls.server_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ca = std::fs::read_to_string(&generated.layout.ca_cert).unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca, dir)
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

// ---- Bodies outpost reads itself are waited for within upstream.responseTimeout ------------

/// A 401 whose headers arrive but whose (announced, small) body never does: `send` still returns.
#[tokio::test]
async fn a_401_with_a_stalled_body_does_not_hang_send() {
    let fake = Fake::start(
        None,
        Arc::new(|_s: &Seen, _| Reply {
            bytes: b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\n\
                     Content-Length: 100\r\n\r\n"
                .to_vec(),
            stall: true,
        }),
    )
    .await;
    let up = Upstream::new(&timeouts()).unwrap();
    let t = target(&fake.host(), plain());
    let outcome = tokio::time::timeout(Duration::from_secs(15), up.send(&t, get("blobs/x"))).await;
    assert!(
        outcome.is_ok(),
        "send() still pending 15 s after the 401's headers (connect 2 s, response 2 s timeouts)"
    );
}

/// The token realm sends its headers and stalls its body: the fetch ends with the timeout, and
/// the requests for the same key queued behind its single-flight slot end too.
#[tokio::test]
async fn a_stalled_token_answer_does_not_hang_every_request_for_the_key() {
    let fake = Fake::start(
        None,
        Arc::new(|s: &Seen, addr| {
            if s.path().starts_with("/token") {
                return Reply {
                    bytes: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: 1000\r\n\r\n{\"tok"
                        .to_vec(),
                    stall: true,
                };
            }
            reply(format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",\
                 service=\"s\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ))
        }),
    )
    .await;
    let up = Upstream::new(&timeouts()).unwrap();
    let t = target(&fake.host(), plain());
    let (a, b) = (up.clone(), up.clone());
    let (ta, tb) = (t.clone(), t.clone());
    let first = tokio::spawn(async move { a.send(&ta, get("manifests/v1")).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn(async move { b.send(&tb, get("blobs/y")).await.map(|_| ()) });
    let both = tokio::time::timeout(Duration::from_secs(15), async {
        (first.await, second.await)
    })
    .await;
    assert!(
        both.is_ok(),
        "both requests still pending 15 s later, behind one stalled token answer"
    );
}

// ---- Credentials never go from HTTPS down to plain HTTP ----------------------------------

/// The registry (verified TLS, `insecure: false`) redirects to `http://` on the same host:port:
/// the request is followed, without the stored credentials.
#[tokio::test]
async fn credentials_do_not_follow_a_redirect_downgraded_to_plain_http() {
    let (acceptor, ca, _dir) = tls_acceptor();
    let fake = Fake::start(
        Some(acceptor),
        Arc::new(|s: &Seen, addr| {
            if !s.tls {
                return reply(OK.to_owned());
            }
            if s.authorization().is_none() {
                return reply(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned(),
                );
            }
            reply(format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{addr}/storage/blob\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ))
        }),
    )
    .await;
    let up = Upstream::new(&timeouts()).unwrap();
    let t = target(
        &fake.host(),
        TlsPolicy {
            insecure: false,
            extra_cas: vec![ca],
        },
    );
    let resp = up.send(&t, get("blobs/x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cleartext: Vec<_> = fake.seen().into_iter().filter(|s| !s.tls).collect();
    assert_eq!(cleartext.len(), 1);
    assert_eq!(
        cleartext[0].authorization(),
        None,
        "the stored credentials went over plain HTTP:\n{}",
        cleartext[0].head
    );
}

/// Same downgrade through the token realm: a verified-TLS registry names an `http://` realm on
/// its own host, which is asked for an anonymous token only.
#[tokio::test]
async fn credentials_do_not_go_to_a_plain_http_realm_of_a_tls_registry() {
    let (acceptor, ca, _dir) = tls_acceptor();
    let fake = Fake::start(
        Some(acceptor),
        Arc::new(|s: &Seen, addr| {
            if !s.tls {
                return reply(
                    "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n\
                     {\"token\":\"t1\"}"
                        .to_owned(),
                );
            }
            if s.authorization().is_none() {
                return reply(format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\"\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                ));
            }
            reply(OK.to_owned())
        }),
    )
    .await;
    let up = Upstream::new(&timeouts()).unwrap();
    let t = target(
        &fake.host(),
        TlsPolicy {
            insecure: false,
            extra_cas: vec![ca],
        },
    );
    let _ = up.send(&t, get("blobs/x")).await;
    let cleartext: Vec<_> = fake.seen().into_iter().filter(|s| !s.tls).collect();
    assert!(!cleartext.is_empty());
    for s in cleartext {
        assert_eq!(
            s.authorization(),
            None,
            "Basic over plain HTTP:\n{}",
            s.head
        );
    }
}

// ---- A relative Location may carry a URL in its query ------------------------------------

#[test]
fn a_relative_location_with_a_url_in_its_query_is_followed() {
    let base: http::Uri = "https://registry.example.com/v2/a/blobs/sha256:abc"
        .parse()
        .unwrap();
    let got = upstream::resolve_location(&base, "/storage/blob?return=https://x.example/y");
    assert_eq!(
        got.map(|u| u.to_string()),
        Ok("https://registry.example.com/storage/blob?return=https://x.example/y".to_owned())
    );
}

// ---- A token answers only for the credentials it was fetched with ------------------------

/// Two targets on the same registry and repository, same user, different passwords (a reloaded
/// config, two entries for one host): the one with the wrong password must not be served the
/// token the other obtained, which would hide the wrong password for the token's lifetime.
#[tokio::test]
async fn a_token_is_not_reused_for_other_credentials() {
    use outpost_tests::fake::{Auth, FakeRegistry};
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("alice", "wonderland", 3600));
    let digest = fake.add_blob("team/app", b"layer".to_vec());
    let up = Upstream::new(&timeouts()).unwrap();
    let good = target(&fake.host(), plain());
    let resp = up
        .send(&good, get(&format!("blobs/{digest}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let mut wrong = good.clone();
    wrong.credentials = Some(Credentials {
        username: "alice".to_owned(),
        password: Secret::new("not-the-password"),
    });
    let got = up.send(&wrong, get(&format!("blobs/{digest}"))).await;
    assert!(
        matches!(
            got,
            Err(upstream::UpstreamError::CredentialsRejected { .. })
        ),
        "wrong password served with the other target's token: {:?} (token fetches: {})",
        got.map(|r| r.status()),
        fake.token_fetches()
    );
}
