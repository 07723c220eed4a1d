//! outpost serving HTTPS with the material `outpost certs generate` makes: a client that trusts
//! only the generated CA talks HTTP/2 or HTTP/1.1 to it; plaintext and silent clients neither
//! hang nor block others; a replaced certificate is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use config::{Config, TlsFiles};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_tests::outpost::Outpost;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn generate(dir: &std::path::Path) -> certs::Generated {
    let sans = [certs::San::parse("127.0.0.1").unwrap()];
    certs::generate(dir, &sans, 30, true).expect("generate certificates")
}

fn connector(ca_pem: &std::path::Path, alpn: &[&[u8]]) -> TlsConnector {
    let pem = std::fs::read(ca_pem).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn tls_outpost(dir: &std::path::Path) -> (Outpost, certs::Generated) {
    let generated = generate(dir);
    let config = Config {
        tls: Some(TlsFiles {
            cert: generated.layout.server_cert.clone(),
            key: generated.layout.server_key.clone(),
        }),
        ..Config::default()
    };
    (Outpost::start(config).await, generated)
}

/// `GET /v2/` over TLS; returns the status, the negotiated ALPN and the server's certificate.
async fn get_v2(
    outpost: &Outpost,
    connector: &TlsConnector,
) -> (StatusCode, Option<Vec<u8>>, CertificateDer<'static>) {
    let tcp = TcpStream::connect(outpost.running.addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let cert = session.peer_certificates().unwrap()[0].clone().into_owned();
    let io = TokioIo::new(tls);
    let request = Request::get(format!(
        "https://127.0.0.1:{}/v2/",
        outpost.running.addr.port()
    ))
    .body(Empty::<Bytes>::new())
    .unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{}");
    (status, alpn, cert)
}

#[tokio::test]
async fn https_with_the_generated_ca_over_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (outpost, generated) = tls_outpost(dir.path()).await;
    let h2 = connector(&generated.layout.ca_cert, &[b"h2", b"http/1.1"]);
    let (status, alpn, _) = get_v2(&outpost, &h2).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let http1 = connector(&generated.layout.ca_cert, &[b"http/1.1"]);
    let (status, alpn, _) = get_v2(&outpost, &http1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn plaintext_to_the_tls_port_is_closed_not_left_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let (outpost, _) = tls_outpost(dir.path()).await;
    let mut tcp = TcpStream::connect(outpost.running.addr).await.unwrap();
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) | Ok(Err(_)) => {} // closed (possibly after a TLS alert) or reset
        Err(_) => panic!("a plaintext request to the TLS port hung"),
    }
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "plaintext was served");
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let (outpost, generated) = tls_outpost(dir.path()).await;
    let _silent: Vec<TcpStream> =
        futures_util::future::join_all((0..20).map(|_| TcpStream::connect(outpost.running.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let connector = connector(&generated.layout.ca_cert, &[b"http/1.1"]);
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), get_v2(&outpost, &connector))
        .await
        .expect("a client waited behind silent connections");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (outpost, generated) = tls_outpost(dir.path()).await;
    let first = connector(&generated.layout.ca_cert, &[b"http/1.1"]);
    let (_, _, before) = get_v2(&outpost, &first).await;
    // A new server certificate from the same CA (the CA files are reused).
    std::fs::remove_file(&generated.layout.server_cert).unwrap();
    std::fs::remove_file(&generated.layout.server_key).unwrap();
    let renewed = certs::generate(
        dir.path(),
        &[certs::San::parse("127.0.0.1").unwrap()],
        30,
        false,
    )
    .expect("reissue");
    assert!(renewed.ca_reused);
    let mut after = before.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A fresh client each time: a resumed TLS session would show the old certificate.
        let fresh = connector(&generated.layout.ca_cert, &[b"http/1.1"]);
        after = get_v2(&outpost, &fresh).await.2;
        if after != before {
            break;
        }
    }
    assert_ne!(after, before, "the new certificate was not picked up");
}
