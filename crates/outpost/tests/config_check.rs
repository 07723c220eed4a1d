//! `outpost check` run as a user runs it: the built binary, config files on disk, exit codes,
//! stdout (the routing table) and stderr (warnings, errors).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn check(files: &[&Path], json: bool) -> Output {
    check_with_env(files, json, &[])
}

/// `outpost check` with exactly `env` of the proxy variables set (the others removed).
fn check_with_env(files: &[&Path], json: bool, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.arg("check");
    for var in oci::PROXY_VARIABLES {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    for file in files {
        cmd.arg("--config").arg(file);
    }
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const USER_DATA: &str = r#"#cloud-config
stylus:
  site:
    paletteEndpoint: api.spectrocloud.com
  registryCredentials:
    domain: 10.10.254.254:8000/spectro-images
    username: ubuntu
    password: c2VjcmV0LXBhc3N3b3Jk
    encodedPassword: true
    insecure: true
  externalRegistries:
    registries:
      - domain: registry.example.com
        username: robot
        password: hunter2-robot
        repositoryName: palette-images
    registryMappingRules:
      "us-docker.pkg.dev/palette-images": "registry.example.com/palette-images"
"#;

const VALUES: &str = r#"options:
  system.uri: quay.io/kairos/core-ubuntu-20-lts-rke2:v1.25.2-rke2r1
"#;

#[test]
fn check_prints_the_routing_table_and_warnings_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let values = write(dir.path(), "values.yaml", VALUES);
    let out = check(&[&user_data, &values], false);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");

    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("SOURCE"), "{stdout}");
    let row = |source: &str| -> &str {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(source))
            .unwrap_or_else(|| panic!("no row for {source}: {stdout}"))
    };
    let rule = row("us-docker.pkg.dev/palette-images");
    assert!(
        rule.contains("https://registry.example.com/palette-images"),
        "{rule}"
    );
    assert!(rule.contains("robot ****"), "{rule}");
    assert!(rule.contains("  stored  "), "{rule}");
    assert!(rule.ends_with("  direct"), "{rule}");
    let docker = row("docker.io");
    assert!(
        docker.contains("10.10.254.254:8000/spectro-images/docker.io"),
        "{docker}"
    );
    assert!(docker.contains("ubuntu ****"), "{docker}");
    assert!(docker.contains("(insecure)"), "{docker}");
    let infra = row("quay.io/kairos/core-ubuntu-20-lts-rke2");
    assert!(infra.contains("  pass-through  "), "{infra}");
    assert!(row("quay.io").contains("  stored  "));
    assert!(row("*").contains("10.10.254.254:8000/spectro-images/<source>"));
    // Columns are aligned: every row starts its destination where the header does.
    let column = lines[0].find("DESTINATION").unwrap();
    for line in &lines[1..] {
        assert_eq!(&line[column - 2..column], "  ", "misaligned: {line}");
        assert_ne!(&line[column..=column], " ", "misaligned: {line}");
    }

    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("without TLS verification")),
        "{stderr}"
    );
    for secret in ["secret-password", "c2VjcmV0LXBhc3N3b3Jk", "hunter2"] {
        assert!(!stdout.contains(secret), "`{secret}` on stdout: {stdout}");
        assert!(!stderr.contains(secret), "`{secret}` on stderr: {stderr}");
    }
}

#[test]
fn check_json_prints_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let values = write(dir.path(), "values.yaml", VALUES);
    let out = check(&[&user_data, &values], true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let docker = rows
        .iter()
        .find(|r| r["source"] == "docker.io")
        .unwrap_or_else(|| panic!("no docker.io row: {stdout}"));
    assert_eq!(docker["host"], "10.10.254.254:8000");
    assert_eq!(docker["prefix"], "spectro-images/docker.io");
    assert_eq!(docker["scheme"], "http(insecure)");
    assert_eq!(docker["credentials"], "ubuntu ****");
    assert_eq!(docker["content"], "stored");
    let rule = rows
        .iter()
        .find(|r| r["source"] == "us-docker.pkg.dev/palette-images")
        .unwrap();
    assert_eq!(rule["host"], "registry.example.com");
    assert_eq!(rule["scheme"], "https");
    // Same rows, in the same order, as the text table.
    let text_out = check(&[&user_data, &values], false);
    let text_sources: Vec<String> = text(&text_out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let json_sources: Vec<String> = rows
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text_sources, json_sources);
    assert!(!stdout.contains("hunter2") && !stdout.contains("secret-password"));
}

#[test]
fn direct_routes_without_an_external_registry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["quay-ca.example.com".to_owned()])
        .unwrap()
        .cert
        .pem();
    let ca_yaml: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let config = write(
        dir.path(),
        "values.yaml",
        &format!(
            "outpost:\n  localRegistry:\n    enabled: false\noptions:\n  system.uri: quay.io/kairos/core:v1\nproviderCredentials:\n  user: robot\n  password: pw-provider-123\n  certificates: |\n{ca_yaml}"
        ),
    );
    let out = check(&[&config], true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let find = |source: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == source)
            .cloned()
            .unwrap_or_else(|| panic!("no row {source}: {stdout}"))
    };
    let docker = find("docker.io");
    assert_eq!(docker["host"], "registry-1.docker.io");
    assert_eq!(docker["credentials"], "anonymous");
    assert_eq!(docker["content"], "pass-through", "local registry is off");
    let quay = find("quay.io");
    assert_eq!(quay["host"], "quay.io");
    assert_eq!(quay["credentials"], "robot ****");
    let cas = quay["extra_cas"].as_array().unwrap();
    assert_eq!(cas.len(), 1);
    assert!(
        cas[0].as_str().unwrap().contains("rcgen self signed cert"),
        "{cas:?}"
    );
    assert_eq!(find("*")["host"], "<source host>");
    assert!(!stdout.contains("pw-provider-123"));
}

#[test]
fn forbidden_configuration_exits_2_naming_both_features() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let values = write(
        dir.path(),
        "values.yaml",
        "options:\n  system.uri: quay.io/kairos/core:v1\nproviderCredentials:\n  user: robot\n  password: pw-provider-123\n",
    );
    let out = check(&[&user_data, &values], false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no table on error");
    assert!(
        stderr
            .contains("the local registry cannot be used with an authenticated provider registry"),
        "{stderr}"
    );
    assert!(stderr.contains("an authenticated external registry cannot be used with an authenticated provider registry"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`providerCredentials.user` in {}",
            values.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "`stylus.registryCredentials.username` in {}",
            user_data.display()
        )),
        "{stderr}"
    );
    for secret in ["pw-provider-123", "hunter2", "secret-password"] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

#[test]
fn invalid_configuration_exits_2_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "outpost:\n  cache:\n    tagTTL: 5m\n",
    );
    let out = check(&[&bad], false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:3", bad.display())), "{stderr}");
    assert!(stderr.contains("outpost.cache.tagTTL"), "{stderr}");

    let missing = dir.path().join("missing.yaml");
    let out = check(&[&missing], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&missing.display().to_string()));
}

#[test]
fn check_without_config_runs_on_defaults() {
    let out = check(&[], false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("docker.io ")
            && l.contains("https://registry-1.docker.io")
            && l.contains("  stored  ")
            && l.ends_with("  direct")),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "no warnings: {}", text(&out.stderr));
}

/// Values that the configuration once accepted and the rest of outpost refused (or read
/// differently): `check` now applies the one grammar the server, prefetch and import use.
#[test]
fn check_applies_the_same_name_rules_as_the_server() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, problem) in [
        // prefetch refused this provider image: `sha256:abcd` is not a digest.
        (
            "options:\n  system.uri: quay.io/kairos/core@sha256:abcd\n",
            "options.system.uri",
            "sha256:abcd",
        ),
        // request routing refused `a..b` as a repository path component.
        (
            "stylus:\n  registryCredentials:\n    domain: r.example.com\n    repositoryName: a..b\n",
            "stylus.registryCredentials.repositoryName",
            "`a..b`",
        ),
        (
            "stylus:\n  registryCredentials:\n    domain: r.example.com/team/a..b\n",
            "stylus.registryCredentials.domain",
            "`a..b`",
        ),
    ] {
        let file = write(dir.path(), "grammar.yaml", text);
        let out = check(&[&file], false);
        let stderr = self::text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(stderr.contains(problem), "{text}: {stderr}");
    }

    // registry-1.docker.io is Docker Hub, in a file as in a request path: one row, reached at
    // its API host.
    let file = write(
        dir.path(),
        "hub.yaml",
        "stylus:\n  externalRegistries:\n    registryMappingRules:\n      \"registry-1.docker.io/library\": \"mirror.example.com/hub\"\n",
    );
    let out = check(&[&file], true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(sources.contains(&"docker.io/library"), "{sources:?}");
    assert!(
        !sources.iter().any(|s| s.contains("registry-1")),
        "{sources:?}"
    );
}

/// A listen address beyond this machine needs client authentication, or an explicit
/// `outpost.auth.anonymous: true`: `check` and `serve` refuse it otherwise (exit 2), naming the
/// keys; `check` says who may pull.
#[test]
fn an_unprotected_listen_address_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = write(
        dir.path(),
        "open.yaml",
        "outpost:\n  listen: 0.0.0.0:5000\n",
    );
    let data = dir.path().join("data");
    for command in ["check", "serve"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
        cmd.args([command, "--config"]).arg(&open);
        if command == "serve" {
            cmd.arg("--data-dir").arg(&data);
        }
        let out = cmd.output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        for key in [
            "outpost.tls.clientCa",
            "outpost.auth.htpasswd",
            "outpost.auth.anonymous",
        ] {
            assert!(stderr.contains(key), "{command}: {stderr}");
        }
        assert!(!data.exists(), "serve opened a store");
    }
    // Said on purpose: accepted, and `check` says who may pull.
    let anonymous = write(
        dir.path(),
        "anonymous.yaml",
        "outpost:\n  listen: 0.0.0.0:5000\n  auth:\n    anonymous: true\n",
    );
    let out = check(&[&anonymous], false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("CLIENTS: anyone who reaches 0.0.0.0:5000"));
    let htpasswd = write(dir.path(), "htpasswd", "edge:$2y$05$abc\n");
    let protected = write(
        dir.path(),
        "protected.yaml",
        &format!(
            "outpost:\n  listen: 0.0.0.0:5000\n  auth:\n    htpasswd: {}\n",
            htpasswd.display()
        ),
    );
    let out = check(&[&protected], false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("CLIENTS: must present a user of"),
        "{}",
        text(&out.stdout)
    );
    // mutual TLS without TLS is a mistake to point out.
    let no_tls = write(
        dir.path(),
        "no-tls.yaml",
        "outpost:\n  tls:\n    clientCa: /etc/outpost/ca.pem\n",
    );
    let out = check(&[&no_tls], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("outpost.tls.cert"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_shows_which_upstreams_go_through_the_site_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let network = "stylus:\n  site:\n    network:\n      httpProxy: http://proxy.site.local:3128\n      httpsProxy: http://edge:pr0xy-pw@proxy.site.local:3128\n      noProxy: 10.0.0.0/8,.site.local\n";
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let site = write(dir.path(), "network.yaml", network);
    let out = check_with_env(
        &[&user_data, &site],
        false,
        &[("HTTPS_PROXY", "http://env:1")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with("CONTENT  VIA"), "{stdout}");
    let row = |source: &str| -> &str {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(source))
            .unwrap_or_else(|| panic!("no row for {source}: {stdout}"))
    };
    // The external registry 10.10.254.254:8000 is in noProxy; registry.example.com is not.
    assert!(row("docker.io").ends_with("  direct"), "{stdout}");
    let rule = row("us-docker.pkg.dev/palette-images");
    assert!(
        rule.ends_with("  http://edge:****@proxy.site.local:3128"),
        "{rule}"
    );
    assert!(!stdout.contains("pr0xy-pw") && !stderr.contains("pr0xy-pw"));
    // The environment's proxy is named as ignored.
    assert!(
        stderr.contains("HTTPS_PROXY") && stderr.contains("ignored"),
        "{stderr}"
    );

    let out = check_with_env(&[&user_data, &site], true, &[]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "us-docker.pkg.dev/palette-images")
        .unwrap();
    assert_eq!(rule["via"], "http://edge:****@proxy.site.local:3128");
    assert!(!text(&out.stdout).contains("pr0xy-pw"));
}

#[test]
fn check_reads_the_proxy_of_the_environment_when_the_files_set_none() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let env = [
        ("https_proxy", "http://proxy.local:3128"),
        ("NO_PROXY", "registry.example.com"),
    ];
    let out = check_with_env(&[&user_data], false, &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = |source: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(source))
            .unwrap_or_else(|| panic!("no row for {source}: {stdout}"))
            .to_owned()
    };
    assert!(
        line("us-docker.pkg.dev/palette-images").ends_with("  direct"),
        "{stdout}"
    );
    // The insecure external registry: HTTPS through the proxy, its plain-HTTP fallback direct
    // (no http_proxy).
    assert!(
        line("docker.io").ends_with("https: http://proxy.local:3128; http: direct"),
        "{stdout}"
    );

    let out = check_with_env(&[&user_data], false, &[("HTTP_PROXY", "socks5://x:1")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HTTP_PROXY") && stderr.contains("http://"),
        "{stderr}"
    );
}

const SHARED_SECRET: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1c9d1d0c1ad2e7c1d1";

fn shared_store_yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "outpost:\n  sharedStore:\n    endpoint: {endpoint}\n    bucket: outpost\n    \
         accessKeyId: {key}\n    prefix: site-a/\n{extra}",
        key = outpost_tests::s3::ACCESS_KEY_ID
    )
}

#[test]
fn check_shows_the_shared_store_and_probes_it_without_showing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(outpost_tests::s3::FakeS3::start("outpost"));
    let secret_file = write(dir.path(), "s3-secret", &format!("{SHARED_SECRET}\n"));
    let file = write(
        dir.path(),
        "outpost.yaml",
        &shared_store_yaml(
            &s3.endpoint(),
            &format!("    secretAccessKeyFile: {}\n", secret_file.display()),
        ),
    );
    let out = check(&[&file], false);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SHARED STORE:"))
        .unwrap_or_else(|| panic!("no SHARED STORE line:\n{stdout}"));
    assert!(
        line.contains(&s3.endpoint()) && line.contains("bucket outpost"),
        "{line}"
    );
    assert!(
        line.contains("prefix site-a/") && line.contains("not contacted"),
        "{line}"
    );
    assert!(
        s3.requests().is_empty(),
        "check without --probe contacted the store"
    );

    // stdout, then stderr, of `outpost check --probe`.
    let probe = || {
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["check", "--probe", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        text(&out.stdout) + &text(&out.stderr)
    };
    let probed = probe();
    assert!(probed.contains(": reachable, 0 blobs"), "{probed}");
    assert!(!probed.contains(SHARED_SECRET), "{probed}");

    s3.set_unreachable(true);
    let probed = probe();
    assert!(probed.contains("NOT REACHABLE"), "{probed}");
    assert!(!probed.contains(SHARED_SECRET), "{probed}");
}

#[test]
fn a_shared_store_without_bucket_or_secret_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "outpost:\n  sharedStore:\n    endpoint: http://127.0.0.1:3900\n    accessKeyId: GK1\n    secretAccessKey: s\n".to_owned(),
            "outpost.sharedStore.bucket",
        ),
        (shared_store_yaml("http://127.0.0.1:3900", ""), "outpost.sharedStore.secretAccessKey"),
        (
            shared_store_yaml("127.0.0.1:3900", "    secretAccessKey: s\n"),
            "outpost.sharedStore.endpoint",
        ),
        (
            shared_store_yaml(
                "http://127.0.0.1:3900",
                "    secretAccessKeyFile: /nonexistent/secret\n",
            ),
            "outpost.sharedStore.secretAccessKeyFile",
        ),
        (
            shared_store_yaml("http://127.0.0.1:3900", "    secretAccesKey: s\n"),
            "secretAccesKey",
        ),
    ];
    for (yaml, key) in cases {
        let file = write(dir.path(), "outpost.yaml", &yaml);
        let out = check(&[&file], false);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{stderr}");
        assert!(stderr.contains(key), "{yaml}\nexpected {key} in: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    }
}
