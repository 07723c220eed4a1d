//! `outpost containerd-config` through the binary: a configuration in, containerd's hosts
//! directory out (exact file text), and the errors an operator can hit.

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

/// Certificates in `tmp/tls` and a configuration serving them on 0.0.0.0:5443, with quay.io and a
/// `host:port` source mapped to an external registry.
fn setup(tmp: &Path) -> std::path::PathBuf {
    let tls = tmp.join("tls");
    let out = outpost(&["certs", "generate", "--dir", tls.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = tmp.join("outpost.yaml");
    std::fs::write(
        &config,
        format!(
            "outpost:
  listen: 0.0.0.0:5443
  tls:
    cert: {cert}
    key: {key}
stylus:
  externalRegistries:
    registries:
      - domain: 10.10.254.254:8000/spectro-images
    registryMappingRules:
      quay.io/kairos: 10.10.254.254:8000/kairos
      registry.local:5443/team: 10.10.254.254:8000/team
",
            cert = tls.join("server.pem").display(),
            key = tls.join("server-key.pem").display(),
        ),
    )
    .unwrap();
    config
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn writes_a_hosts_file_per_known_registry_with_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let hosts = tmp.path().join("certs.d");
    let out = outpost(&[
        "containerd-config",
        "--config",
        config.to_str().unwrap(),
        "--out",
        hosts.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));

    let mut dirs: Vec<String> = std::fs::read_dir(&hosts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        ["_default", "docker.io", "quay.io", "registry.local:5443"]
    );

    let ca = tmp.path().join("tls/ca.pem");
    assert_eq!(
        read(&hosts.join("docker.io/hosts.toml")),
        format!(
            "# Written by `outpost containerd-config`: pull docker.io through outpost.
# When outpost fails, containerd falls back to the registry itself.
server = \"https://registry-1.docker.io\"

[host.\"https://127.0.0.1:5443\"]
  capabilities = [\"pull\", \"resolve\"]
  ca = \"{}\"
",
            ca.display()
        )
    );
    assert!(read(&hosts.join("registry.local:5443/hosts.toml"))
        .contains("server = \"https://registry.local:5443\"\n"));
    assert!(!read(&hosts.join("_default/hosts.toml")).contains("server ="));

    for dir in &dirs {
        let path = hosts.join(dir).join("hosts.toml");
        assert!(stdout.contains(path.to_str().unwrap()), "{dir}: {stdout}");
    }
    assert!(
        stdout.contains(&format!("config_path = \"{}\"", hosts.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("--hosts-dir {}", hosts.display())),
        "{stdout}"
    );
}

#[test]
fn no_fallback_with_an_explicit_endpoint_and_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let hosts = tmp.path().join("certs.d");
    let ca = tmp.path().join("tls/ca.pem");
    let out = outpost(&[
        "containerd-config",
        "--config",
        config.to_str().unwrap(),
        "--out",
        hosts.to_str().unwrap(),
        "--endpoint",
        "https://outpost.local:5443",
        "--ca",
        ca.to_str().unwrap(),
        "--no-fallback",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        read(&hosts.join("quay.io/hosts.toml")),
        format!(
            "# Written by `outpost containerd-config`: pull quay.io through outpost.
# No fallback: `server` is outpost too (left out, containerd would use the registry itself).
server = \"https://outpost.local:5443\"
capabilities = [\"pull\", \"resolve\"]
ca = \"{ca}\"

[host.\"https://outpost.local:5443\"]
  capabilities = [\"pull\", \"resolve\"]
  ca = \"{ca}\"
",
            ca = ca.display()
        )
    );
    for dir in ["docker.io", "_default", "registry.local:5443"] {
        let text = read(&hosts.join(dir).join("hosts.toml"));
        assert!(
            text.contains("server = \"https://outpost.local:5443\"\n"),
            "{dir}: {text}"
        );
        assert!(!text.contains("registry-1.docker.io"), "{dir}: {text}");
    }
}

#[test]
fn plain_http_outpost_gets_nothing_tls_related() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("certs.d");
    let out = outpost(&["containerd-config", "--out", hosts.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        read(&hosts.join("docker.io/hosts.toml")),
        "# Written by `outpost containerd-config`: pull docker.io through outpost.
# When outpost fails, containerd falls back to the registry itself.
server = \"https://registry-1.docker.io\"

[host.\"http://127.0.0.1:5000\"]
  capabilities = [\"pull\", \"resolve\"]
"
    );

    let out = outpost(&[
        "containerd-config",
        "--out",
        hosts.to_str().unwrap(),
        "--ca",
        "/some/ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--ca /some/ca.pem"), "{stderr}");
    assert!(stderr.contains("plain HTTP"), "{stderr}");
}

#[test]
fn a_bad_configuration_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.yaml");
    std::fs::write(&config, "outpost:\n  listen: not-an-address\n").unwrap();
    let hosts = tmp.path().join("certs.d");
    let out = outpost(&[
        "containerd-config",
        "--config",
        config.to_str().unwrap(),
        "--out",
        hosts.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.yaml"),
        "{}",
        text(&out.stderr)
    );
    assert!(!hosts.exists());
}

#[test]
fn a_bad_endpoint_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("certs.d");
    let out = outpost(&[
        "containerd-config",
        "--out",
        hosts.to_str().unwrap(),
        "--endpoint",
        "127.0.0.1:5000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--endpoint \"127.0.0.1:5000\""), "{stderr}");
    assert!(!hosts.exists());
}
