//! Who may pull: htpasswd (Basic) and mutual TLS on the registry listener, from the outside.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use config::{Config, TlsFiles};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use outpost_tests::fake::FakeRegistry;
use outpost_tests::outpost::{external_config, Client, Outpost};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn htpasswd_users_pull_and_everyone_else_gets_401() {
    let fake = FakeRegistry::start().await;
    let image = fake.push_seeded("p/quay.io/app/x", Some("v1"), 1, &[1000]);
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("edge-secret", 4).unwrap();
    std::fs::write(&htpasswd, format!("edge:{hash}\n")).unwrap();
    let mut config = external_config(&fake.host(), "p", None);
    config.client_auth.htpasswd = Some(htpasswd);
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    let manifest = outpost.url("/v2/quay.io/app/x/manifests/v1");

    for (what, headers) in [
        ("no credentials", vec![]),
        (
            "a wrong password",
            vec![("authorization", basic("edge", "guess"))],
        ),
        (
            "an unknown user",
            vec![("authorization", basic("root", "edge-secret"))],
        ),
        (
            "a bearer token",
            vec![("authorization", "Bearer abc".to_owned())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in [
            manifest.clone(),
            outpost.url("/v2/"),
            outpost.url("/metrics"),
        ] {
            let reply = client.get_with(&path, &headers).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {path}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Basic realm=\"outpost\""),
                "{what}"
            );
            assert_eq!(reply.error_code(), "UNAUTHORIZED", "{what}");
        }
    }
    assert!(
        fake.requests().is_empty(),
        "a refused client reached the upstream"
    );

    let login = basic("edge", "edge-secret");
    let auth = [("authorization", login.as_str())];
    let reply = client.get_with(&manifest, &auth).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.digest(), image.digest);
    for (digest, bytes) in image.blobs() {
        let blob = client
            .get_with(
                &outpost.url(&format!("/v2/quay.io/app/x/blobs/{digest}")),
                &auth,
            )
            .await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(&blob.body, bytes);
    }
    assert_eq!(
        client
            .get_with(&outpost.url("/metrics"), &auth)
            .await
            .status,
        StatusCode::OK
    );
}

/// The CA, server and client files of `certs generate` (and `--client`).
fn material(dir: &Path, client: &str) -> (certs::Generated, certs::GeneratedClient) {
    let sans = [certs::San::parse("127.0.0.1").unwrap()];
    let generated = certs::generate(dir, &sans, 30, true).unwrap();
    let client = certs::generate_client(dir, client, 30, false).unwrap();
    (generated, client)
}

/// `GET /v2/` over TLS trusting `ca`, presenting `identity` (cert, key) when given.
async fn get_v2(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<StatusCode, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get("/v2/")
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_of_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (generated, node) = material(dir.path(), "node-1");
    let elsewhere = tempfile::tempdir().unwrap();
    let (_, stranger) = material(elsewhere.path(), "node-1");
    let config = Config {
        tls: Some(TlsFiles {
            cert: generated.layout.server_cert.clone(),
            key: generated.layout.server_key.clone(),
        }),
        client_auth: config::ClientAuth {
            client_ca: Some(generated.layout.ca_cert.clone()),
            ..Default::default()
        },
        ..Config::default()
    };
    let outpost = Outpost::start(config).await;
    let addr = outpost.running.addr;
    let ca = &generated.layout.ca_cert;
    assert_eq!(
        get_v2(addr, ca, Some((&node.cert, &node.key))).await,
        Ok(StatusCode::OK)
    );
    let without = get_v2(addr, ca, None).await;
    assert!(
        without.is_err(),
        "served a client without a certificate: {without:?}"
    );
    let foreign = get_v2(addr, ca, Some((&stranger.cert, &stranger.key))).await;
    assert!(
        foreign.is_err(),
        "served a certificate of another CA: {foreign:?}"
    );
    // The client certificate is for clients: presented by a server it is no use, and the
    // files are where `certs generate --client` says.
    assert_eq!(node.cert, dir.path().join("node-1.pem"));
    assert_eq!(node.key, dir.path().join("node-1-key.pem"));
}
