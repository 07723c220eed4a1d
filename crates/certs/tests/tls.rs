//! Real TLS handshakes on 127.0.0.1 against `ServerTls::server_config()`, from a rustls client
//! that trusts only the generated `ca.pem`; and certificate reloads while connections stay open.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use certs::{generate, Layout, San, ServerTls};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Accepts TLS connections with `tls`'s configuration and echoes what each client sends.
async fn echo_server(tls: Arc<ServerTls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(tls.server_config());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
            });
        }
    });
    addr
}

fn client(ca_pem: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn leaf_on_disk(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

async fn echo(stream: &mut TlsStream<TcpStream>, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

fn sans() -> Vec<San> {
    ["localhost", "127.0.0.1"]
        .iter()
        .map(|s| San::parse(s).unwrap())
        .collect()
}

#[tokio::test]
async fn handshake_with_the_generated_ca_negotiates_alpn() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(), 1, false).unwrap();
    let layout = Layout::new(dir.path());
    let tls = Arc::new(ServerTls::new(&layout.server_cert, &layout.server_key).unwrap());
    let addr = echo_server(tls).await;

    let both = client(&layout.ca_cert, &[b"h2", b"http/1.1"]);
    for name in ["127.0.0.1", "localhost"] {
        let mut stream = connect(&both, addr, name).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(peer_leaf(&stream), leaf_on_disk(&layout.server_cert));
        assert_eq!(echo(&mut stream, b"hello").await, b"hello");
    }

    let http1 = client(&layout.ca_cert, &[b"http/1.1"]);
    let stream = connect(&http1, addr, "127.0.0.1").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // A client trusting another CA refuses the server: the trust above is the CA's doing.
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &sans(), 1, false).unwrap();
    let stranger = client(&Layout::new(other.path()).ca_cert, &[b"h2"]);
    let err = connect(&stranger, addr, "127.0.0.1").await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// Replaces `to`'s server files with `from`'s the way an operator's tooling should: a rename.
fn install(from: &Layout, to: &Layout) {
    for (src, dst) in [
        (&from.server_cert, &to.server_cert),
        (&from.server_key, &to.server_key),
    ] {
        let tmp = dst.with_extension("new");
        fs::copy(src, &tmp).unwrap();
        fs::rename(&tmp, dst).unwrap();
    }
}

#[tokio::test]
async fn reload_serves_new_handshakes_the_new_certificate_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(), 1, false).unwrap();
    let served = Layout::new(dir.path());
    let first = leaf_on_disk(&served.server_cert);

    // A second server certificate from the same CA, made in a staging directory.
    let staging = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca-key.pem"] {
        fs::copy(dir.path().join(f), staging.path().join(f)).unwrap();
    }
    let out = generate(staging.path(), &sans(), 1, false).unwrap();
    assert!(out.ca_reused);
    let staged = Layout::new(staging.path());
    let second = leaf_on_disk(&staged.server_cert);
    assert_ne!(first, second);

    let tls = Arc::new(ServerTls::new(&served.server_cert, &served.server_key).unwrap());
    let addr = echo_server(tls.clone()).await;
    let connector = client(&served.ca_cert, &[b"h2", b"http/1.1"]);

    let mut old = connect(&connector, addr, "localhost").await.unwrap();
    assert_eq!(peer_leaf(&old), first);
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");
    assert!(!tls.reload().unwrap(), "same files, same certificate");

    install(&staged, &served);
    assert!(tls.reload_if_changed().unwrap());
    assert_eq!(tls.current_certificate(), second);

    let new = connect(&connector, addr, "localhost").await.unwrap();
    assert_eq!(peer_leaf(&new), second);
    // The connection made before the reload still works, on its original session.
    assert_eq!(echo(&mut old, b"still here").await, b"still here");
    assert_eq!(peer_leaf(&old), first);
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_certificate_in_service() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(), 1, false).unwrap();
    let served = Layout::new(dir.path());
    let first = leaf_on_disk(&served.server_cert);
    let tls = Arc::new(ServerTls::new(&served.server_cert, &served.server_key).unwrap());
    let addr = echo_server(tls.clone()).await;

    // Half an update: the key replaced by the CA's key, which does not match server.pem.
    fs::copy(&served.ca_key, &served.server_key).unwrap();
    let err = tls.reload_if_changed().unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(err.to_string().contains("server-key.pem"), "{err}");
    // Still broken: still reported, still not served.
    assert!(tls.reload_if_changed().is_err());
    // Once the files have settled (not modified in the last seconds), the failure is reported
    // once, not on every timer tick.
    for file in [&served.server_cert, &served.server_key] {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert!(tls.reload_if_changed().is_err());
    assert!(!tls.reload_if_changed().unwrap());

    let connector = client(&served.ca_cert, &[b"h2"]);
    let stream = connect(&connector, addr, "127.0.0.1").await.unwrap();
    assert_eq!(peer_leaf(&stream), first);
    assert_eq!(tls.current_certificate(), first);
}
