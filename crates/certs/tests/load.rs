//! `certs::load_certified_key`: accepted key encodings, and errors that name the file and the
//! problem.

use std::fs;
use std::path::{Path, PathBuf};

use certs::{generate, load_certified_key, CertsError, Layout, San};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn generated() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[San::parse("localhost").unwrap()], 1, false).unwrap();
    let layout = Layout::new(dir.path());
    (dir, layout)
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// A self-signed certificate valid from `not_before` to `not_after`, written as cert.pem/key.pem.
fn dated(dir: &Path, not_before: OffsetDateTime, not_after: OffsetDateTime) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&c, cert.pem()).unwrap();
    fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn loads_a_generated_chain_and_pkcs8_key() {
    let (_dir, layout) = generated();
    let key = load_certified_key(&layout.server_cert, &layout.server_key).unwrap();
    assert_eq!(key.cert.len(), 2);
    assert_eq!(key.cert[0], first_cert(&layout.server_cert));
}

#[test]
fn loads_pkcs1_rsa_and_sec1_ec_keys() {
    for (cert, key) in [
        ("rsa-cert.pem", "rsa-pkcs1-key.pem"),
        ("ec-cert.pem", "ec-sec1-key.pem"),
    ] {
        let header = fs::read_to_string(fixture(key)).unwrap();
        assert!(
            header.starts_with("-----BEGIN RSA PRIVATE KEY")
                || header.starts_with("-----BEGIN EC PRIVATE KEY"),
            "{key} is not the encoding this test is about"
        );
        let loaded = load_certified_key(&fixture(cert), &fixture(key))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(loaded.cert[0], first_cert(&fixture(cert)));
    }
}

#[test]
fn a_certificate_file_without_a_certificate() {
    let (_dir, layout) = generated();
    // The classic mix-up: the key given as the certificate.
    let err = load_certified_key(&layout.server_key, &layout.server_key).unwrap_err();
    assert!(matches!(err, CertsError::NoCertificate { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("server-key.pem"), "{message}");
    assert!(message.contains("no certificate found"), "{message}");
    // Key material never ends up in the message.
    assert!(!message.contains("BEGIN PRIVATE KEY-----\n"), "{message}");
}

#[test]
fn a_key_file_without_a_key() {
    let (_dir, layout) = generated();
    let err = load_certified_key(&layout.server_cert, &layout.ca_cert).unwrap_err();
    assert!(matches!(err, CertsError::NoKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("ca.pem"), "{message}");
    assert!(message.contains("no private key found"), "{message}");
}

#[test]
fn a_key_that_belongs_to_another_certificate() {
    let (_dir, layout) = generated();
    let err = load_certified_key(&layout.server_cert, &layout.ca_key).unwrap_err();
    assert!(matches!(err, CertsError::KeyMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("ca-key.pem") && message.contains("server.pem"),
        "{message}"
    );
    assert!(message.contains("does not match"), "{message}");
}

#[test]
fn an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let (cert, key) = dated(
        dir.path(),
        now - Duration::days(30),
        now - Duration::days(1),
    );
    let err = load_certified_key(&cert, &key).unwrap_err();
    assert!(matches!(err, CertsError::Expired { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("cert.pem"), "{message}");
    assert!(message.contains("expired"), "{message}");
    assert!(message.contains("outpost certs generate"), "{message}");
}

#[test]
fn a_certificate_not_yet_valid() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let (cert, key) = dated(
        dir.path(),
        now + Duration::days(1),
        now + Duration::days(30),
    );
    let err = load_certified_key(&cert, &key).unwrap_err();
    assert!(matches!(err, CertsError::NotYetValid { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("cert.pem"), "{message}");
    assert!(message.contains("not valid before"), "{message}");
}

#[test]
fn a_missing_file_and_broken_pem() {
    let (dir, layout) = generated();
    let missing = dir.path().join("nope.pem");
    let err = load_certified_key(&missing, &layout.server_key).unwrap_err();
    assert!(matches!(err, CertsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let broken = dir.path().join("broken.pem");
    let text = fs::read_to_string(&layout.server_cert).unwrap();
    fs::write(&broken, &text[..text.len() / 3]).unwrap();
    let err = load_certified_key(&broken, &layout.server_key).unwrap_err();
    assert!(matches!(err, CertsError::BadPem { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.pem"), "{err}");
}
