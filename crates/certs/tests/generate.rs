//! `certs::generate`: what lands on disk, checked the way a client would check it.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use certs::{generate, CertsError, Layout, San};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

fn sans(names: &[&str]) -> Vec<San> {
    names.iter().map(|n| San::parse(n).unwrap()).collect()
}

fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A verifier trusting only the CA in `ca_pem`, as containerd configured with `ca = ` would.
fn verifier(ca_pem: &Path) -> Arc<WebPkiServerVerifier> {
    let mut roots = RootCertStore::empty();
    for cert in chain(ca_pem) {
        roots.add(cert).unwrap();
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), certs::crypto_provider())
        .build()
        .unwrap()
}

fn verify(ca_pem: &Path, server_pem: &Path, name: &str) -> Result<(), rustls::Error> {
    let chain = chain(server_pem);
    verifier(ca_pem)
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn san_strings(server_pem: &Path) -> Vec<String> {
    let der = chain(server_pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) => match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                _ => panic!("bad IP SAN {b:?}"),
            },
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_a_ca_and_a_server_certificate_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(
        dir.path(),
        &sans(&["registry.edge.local", "10.1.2.3", "::1"]),
        30,
        false,
    )
    .unwrap();
    let layout = Layout::new(dir.path());
    assert_eq!(out.layout, layout);
    assert!(!out.ca_reused);

    assert_eq!(
        san_strings(&layout.server_cert),
        ["registry.edge.local", "10.1.2.3", "::1"]
    );
    for name in ["registry.edge.local", "10.1.2.3", "::1"] {
        verify(&layout.ca_cert, &layout.server_cert, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A name not in the certificate is refused, so the checks above can fail.
    let err = verify(&layout.ca_cert, &layout.server_cert, "other.local").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );

    // server.pem is a chain: the server certificate, then the CA certificate.
    let server_chain = chain(&layout.server_cert);
    assert_eq!(server_chain.len(), 2);
    assert_eq!(server_chain[1], chain(&layout.ca_cert)[0]);

    // About 30 days of validity.
    let left = out
        .server_not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((29 * 86_400..=30 * 86_400).contains(&left), "{left}");
}

#[test]
fn another_ca_does_not_verify_the_server_certificate() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate(a.path(), &sans(&["localhost"]), 1, false).unwrap();
    generate(b.path(), &sans(&["localhost"]), 1, false).unwrap();
    let err = verify(
        &Layout::new(b.path()).ca_cert,
        &Layout::new(a.path()).server_cert,
        "localhost",
    )
    .unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn default_names_include_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), &[], 1, false).unwrap();
    let names = san_strings(&Layout::new(dir.path()).server_cert);
    for expected in ["localhost", "127.0.0.1", "::1"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    assert_eq!(
        names,
        out.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
}

#[cfg(unix)]
#[test]
fn keys_are_private_and_certificates_readable() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap();
    let layout = Layout::new(dir.path());
    assert_eq!(mode(&layout.ca_key), 0o600);
    assert_eq!(mode(&layout.server_key), 0o600);
    assert_eq!(mode(&layout.ca_cert), 0o644);
    assert_eq!(mode(&layout.server_cert), 0o644);
    // No temporary files left behind.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"]
    );
}

#[test]
fn refuses_to_overwrite_and_names_the_files() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap();
    let layout = Layout::new(dir.path());
    let before = fs::read(&layout.server_cert).unwrap();

    let err = generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap_err();
    assert!(matches!(err, CertsError::WouldOverwrite { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("server.pem"), "{message}");
    assert!(message.contains("server-key.pem"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert_eq!(fs::read(&layout.server_cert).unwrap(), before);
}

#[cfg(unix)]
#[test]
fn force_replaces_everything_and_keeps_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap();
    let layout = Layout::new(dir.path());
    let old_ca = fs::read(&layout.ca_cert).unwrap();
    fs::set_permissions(&layout.server_key, fs::Permissions::from_mode(0o644)).unwrap();

    let out = generate(dir.path(), &sans(&["other.local"]), 1, true).unwrap();
    assert!(!out.ca_reused);
    assert_ne!(fs::read(&layout.ca_cert).unwrap(), old_ca);
    assert_eq!(san_strings(&layout.server_cert), ["other.local"]);
    verify(&layout.ca_cert, &layout.server_cert, "other.local").unwrap();
    assert_eq!(mode(&layout.server_key), 0o600);
}

#[test]
fn an_existing_ca_issues_the_new_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(&["localhost"]), 10, false).unwrap();
    let layout = Layout::new(dir.path());
    let ca = fs::read(&layout.ca_cert).unwrap();
    let ca_key = fs::read(&layout.ca_key).unwrap();
    let old_server = fs::read(&layout.server_cert).unwrap();
    fs::remove_file(&layout.server_cert).unwrap();
    fs::remove_file(&layout.server_key).unwrap();

    let out = generate(dir.path(), &sans(&["new.edge.local"]), 100, false).unwrap();
    assert!(out.ca_reused);
    assert_eq!(fs::read(&layout.ca_cert).unwrap(), ca, "ca.pem rewritten");
    assert_eq!(
        fs::read(&layout.ca_key).unwrap(),
        ca_key,
        "ca-key.pem rewritten"
    );
    assert_ne!(fs::read(&layout.server_cert).unwrap(), old_server);
    // Trusting the old ca.pem is enough for the new server certificate.
    verify(&layout.ca_cert, &layout.server_cert, "new.edge.local").unwrap();
    // The server certificate does not outlive the CA (10 days) although 100 were asked.
    assert!(out.server_not_after <= out.ca_not_after);
}

#[test]
fn a_ca_without_its_key_is_not_reused_silently() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap();
    let layout = Layout::new(dir.path());
    for f in [&layout.ca_key, &layout.server_cert, &layout.server_key] {
        fs::remove_file(f).unwrap();
    }
    let err = generate(dir.path(), &sans(&["localhost"]), 1, false).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, CertsError::IncompleteCa { .. }), "{err:?}");
    assert!(message.contains("ca-key.pem"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert!(!layout.server_cert.exists());
}

#[test]
fn a_ca_key_that_is_not_the_cas_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate(a.path(), &sans(&["localhost"]), 1, false).unwrap();
    generate(b.path(), &sans(&["localhost"]), 1, false).unwrap();
    let la = Layout::new(a.path());
    fs::copy(Layout::new(b.path()).ca_key, &la.ca_key).unwrap();
    fs::remove_file(&la.server_cert).unwrap();
    fs::remove_file(&la.server_key).unwrap();
    let err = generate(a.path(), &sans(&["localhost"]), 1, false).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, CertsError::KeyMismatch { .. }), "{err:?}");
    assert!(
        message.contains("ca-key.pem") && message.contains("ca.pem"),
        "{message}"
    );
}

#[test]
fn days_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for days in [0, 40_000] {
        let err = generate(dir.path(), &sans(&["localhost"]), days, false).unwrap_err();
        assert!(err.to_string().contains("--days"), "{err}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
