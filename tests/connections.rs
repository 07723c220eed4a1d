//! Connection hygiene, from the outside: a silent or stalling client is given up on after the
//! first-bytes deadline (10 s) without holding up anyone else, one host's flood of requests
//! leaves request slots for the others, and both HTTP/1.1 and HTTP/2 (prior knowledge, no TLS)
//! are told apart by their first bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config::Config;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_tests::fake::FakeRegistry;
use outpost_tests::outpost::{external_config, Client, Outpost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from the loopback address `from` (another "host").
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn silent_and_stalling_clients_are_closed_after_the_deadline_and_delay_nobody() {
    let outpost = Outpost::start(Config::default()).await;
    let addr = outpost.running.addr;
    let mut attackers = Vec::new();
    for i in 0..40 {
        let mut stream = connect_from("127.0.0.2", addr).await;
        match i % 4 {
            0 => {}                                                      // says nothing
            1 => stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(), // half a preface
            2 => stream.write_all(b"GET /v2/ HTT").await.unwrap(),       // half a request head
            // HTTP/2's preface and an empty SETTINGS frame, then nothing: never a request, and
            // never the acknowledgement of the ping that comes with the GOAWAY
            _ => stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await
                .unwrap(),
        }
        attackers.push(stream);
    }
    // A well-behaved client is served at once.
    let started = Instant::now();
    let reply = Client::new().get(&outpost.url("/v2/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Each attacker is closed once the 10 s deadline has passed (and not before 9 s); an HTTP/2
    // one that does not finish the graceful close within 5 s more is cut off.
    let started = Instant::now();
    for (i, stream) in attackers.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // an error response for the broken request head
                }
            }
        })
        .await;
        assert!(end.is_ok(), "connection {i} still open after 20 s");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_and_http1_are_both_served() {
    let outpost = Outpost::start(Config::default()).await;
    let stream = TcpStream::connect(outpost.running.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = http::Request::get(outpost.url("/v2/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{}");
    }
    let reply = Client::new().get(&outpost.url("/v2/")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// 640 HTTP/2 requests for a cached 1 MiB blob from one host (127.0.0.2) whose bodies it never
/// reads hold request slots until they end; the host gets its own share (128 of the 512), so a
/// client on another address is still served at once.
#[tokio::test]
async fn one_host_flooding_requests_leaves_slots_for_everyone_else() {
    let fake = FakeRegistry::start().await;
    let blob = fake.add_large_blob("p/quay.io/app/x", 1 << 20, 7);
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let url = outpost.url(&format!("/v2/quay.io/app/x/blobs/{blob}"));
    let warm = Client::new().get(&url).await;
    assert_eq!(warm.digest(), blob, "the blob is cached");

    let answered = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..20 {
        let stream = connect_from("127.0.0.2", outpost.running.addr).await;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
        held.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in 0..32 {
            let mut sender = sender.clone();
            let answered = answered.clone();
            let request = http::Request::get(&url).body(Empty::new()).unwrap();
            held.push(tokio::spawn(async move {
                if let Ok(response) = sender.send_request(request).await {
                    answered.fetch_add(1, Ordering::SeqCst);
                    // Holds the body unread until the test ends.
                    std::future::pending::<()>().await;
                    drop(response);
                }
            }));
        }
    }
    let share = tokio::time::timeout(Duration::from_secs(20), async {
        while answered.load(Ordering::SeqCst) < 128 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(share.is_ok(), "the flooding host did not get its 128 slots");

    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), Client::new().get(&url))
        .await
        .expect("a client on another address waited more than 10 s for a request slot");
    assert_eq!(reply.digest(), blob);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answered.load(Ordering::SeqCst),
        128,
        "the flooding host holds exactly its share"
    );
    for task in held {
        task.abort();
    }
}
