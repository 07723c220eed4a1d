//! `outpost certs generate`, run as an operator would: the binary, its exit code, its output and
//! the files it leaves.

use std::path::Path;
use std::process::{Command, Output};

fn outpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .output()
        .expect("run outpost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_writes_the_files_and_says_what_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let dir_s = dir.to_str().unwrap();
    let out = outpost(&[
        "certs",
        "generate",
        "--dir",
        dir_s,
        "--san",
        "outpost.local",
        "--san",
        "10.0.0.5",
        "--days",
        "3",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for file in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
        let path = dir.join(file);
        assert!(path.is_file(), "{file} missing");
        assert!(
            stdout.contains(path.to_str().unwrap()),
            "{file} not printed: {stdout}"
        );
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&dir.join("server-key.pem")), 0o600);
    }
    assert!(stdout.contains("outpost.local, 10.0.0.5"), "{stdout}");
    assert!(stdout.contains("valid until"), "{stdout}");
    assert!(
        stdout.contains(&format!("--tls-cert {}", dir.join("server.pem").display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("--ca {}", dir.join("ca.pem").display())),
        "{stdout}"
    );

    // The generated pair is what the server loads.
    certs::load_certified_key(&dir.join("server.pem"), &dir.join("server-key.pem")).unwrap();
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert!(
        outpost(&["certs", "generate", "--dir", dir, "--san", "localhost"])
            .status
            .success()
    );
    let before = std::fs::read(tmp.path().join("server.pem")).unwrap();

    let out = outpost(&["certs", "generate", "--dir", dir, "--san", "localhost"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("server.pem") && stderr.contains("server-key.pem"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read(tmp.path().join("server.pem")).unwrap(),
        before
    );

    let out = outpost(&[
        "certs",
        "generate",
        "--dir",
        dir,
        "--san",
        "localhost",
        "--force",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(
        std::fs::read(tmp.path().join("server.pem")).unwrap(),
        before
    );
}

#[test]
fn generate_rejects_a_bad_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = outpost(&[
        "certs",
        "generate",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--san",
        "not a host",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\"not a host\""), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn generate_client_issues_a_client_certificate_from_the_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let dir_s = dir.to_str().unwrap();
    // No CA yet: refused, saying what to run first.
    let out = outpost(&["certs", "generate", "--dir", dir_s, "--client", "node-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("certs generate --dir"),
        "{}",
        text(&out.stderr)
    );

    assert!(outpost(&["certs", "generate", "--dir", dir_s])
        .status
        .success());
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();
    let out = outpost(&["certs", "generate", "--dir", dir_s, "--client", "node-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("--client-cert"), "{stdout}");
    assert!(
        stdout.contains("node-1.pem") && stdout.contains("node-1-key.pem"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca_before,
        "the CA was replaced"
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("node-1-key.pem")), 0o600);
    // The certificate is signed by the CA and is for client authentication.
    let chain = std::fs::read(dir.join("node-1.pem")).unwrap();
    let pem = text(&chain);
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "certificate and CA"
    );
    let der = x509_parser::pem::parse_x509_pem(&chain).unwrap().1.contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let usage = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.client_auth && !usage.server_auth);
    assert!(cert.subject().to_string().contains("node-1"));
    // Not again without --force; a name that is not a file name is refused.
    let again = outpost(&["certs", "generate", "--dir", dir_s, "--client", "node-1"]);
    assert_eq!(again.status.code(), Some(1));
    let bad = outpost(&["certs", "generate", "--dir", dir_s, "--client", "../x"]);
    assert!(
        text(&bad.stderr).contains("invalid client name"),
        "{}",
        text(&bad.stderr)
    );
}
