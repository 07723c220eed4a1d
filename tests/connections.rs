//! Connection hygiene, from the outside: a silent or stalling client is given up on after the
//! first-bytes deadline (10 s) without holding up anyone else, and both HTTP/1.1 and HTTP/2
//! (prior knowledge, no TLS) are told apart by their first bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config::Config;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_tests::outpost::{Client, Outpost};
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
        match i % 3 {
            0 => {}                                                      // says nothing
            1 => stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(), // half a preface
            _ => stream.write_all(b"GET /v2/ HTT").await.unwrap(),       // half a request head
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

    // Each attacker is closed once the 10 s deadline has passed (and not before 9 s).
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
