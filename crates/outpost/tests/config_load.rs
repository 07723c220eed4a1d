//! `config::load` as a user meets it: YAML files on disk in, a `Config`, warnings or an error out.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use config::{load, Config, ConfigError, Loaded};

/// A temporary directory of configuration files.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Write `name` with mode 0600 (so no mode warning unless a test asks for one).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o600);
        path
    }
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn load_ok(paths: &[PathBuf]) -> Loaded {
    match load(paths) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the configuration to load, got: {e}"),
    }
}

fn load_err(paths: &[PathBuf]) -> String {
    match load(paths) {
        Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

fn cert_pem(name: &str) -> String {
    rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .unwrap()
        .cert
        .pem()
}

/// Indent every line of `text` by `n` spaces (for YAML block scalars).
fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

#[test]
fn no_files_give_the_defaults() {
    let loaded = load_ok(&[]);
    let c = loaded.config;
    assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
    assert_eq!(c.data_dir, PathBuf::from("./outpost-data"));
    assert!(c.local_registry);
    assert_eq!(c.default_registry, "docker.io");
    assert_eq!(c.worker_threads, None);
    assert!(loaded.warnings.is_empty());
}

const ISSUE_EXAMPLE: &str = r#"#cloud-config
outpost:
  listen: 127.0.0.1:5001
  dataDir: /var/lib/outpost
  defaultRegistry: docker.io
  localRegistry:
    enabled: true
  cache:
    maxSize: 50GiB
    tagTtl: 5m
    fillTimeout: 30m
  tls:
    cert: /etc/outpost/server.pem
    key: /etc/outpost/server-key.pem
  upstream:
    connectTimeout: 3s
    responseTimeout: 45s
  admin:
    listen: 127.0.0.1:9100
  workerThreads: 3
install:
  device: /dev/sda
stylus:
  site:
    paletteEndpoint: api.spectrocloud.com
    caCerts: []
    insecureSkipVerify: false
  registryCredentials:
    domain: 10.10.254.254:8000/spectro-images
    username: ubuntu
    password: c2VjcmV0
    encodedPassword: true
    insecure: true
  externalRegistries:
    registries:
      - domain: registry.example.com
        username: robot
        password: hunter2
        repositoryName: palette-images
        certificates: ""
        insecure: false
        encodedPassword: false
    registryMappingRules:
      "us-docker.pkg.dev/palette-images": "registry.example.com/palette-images"
      "gcr.io/spectro-images-public": "registry.example.com/mirror"
options:
  system.uri: quay.io/kairos/core-ubuntu-20-lts-rke2:v1.25.2-rke2r1
"#;

#[test]
fn the_issue_example_resolves_every_key() {
    let files = Files::new();
    let loaded = load_ok(&[files.write("user-data", ISSUE_EXAMPLE)]);
    let c = &loaded.config;
    assert_eq!(c.listen.to_string(), "127.0.0.1:5001");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/outpost"));
    assert_eq!(c.cache.max_size, Some(50 * 1024 * 1024 * 1024));
    assert_eq!(c.cache.tag_ttl, Duration::from_secs(300));
    assert_eq!(c.cache.fill_timeout, Duration::from_secs(1800));
    assert_eq!(c.upstream.connect, Duration::from_secs(3));
    assert_eq!(c.upstream.response_header, Duration::from_secs(45));
    assert_eq!(c.admin_listen.unwrap().to_string(), "127.0.0.1:9100");
    assert_eq!(c.worker_threads.map(usize::from), Some(3));
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/outpost/server.pem"));

    let single = c.registry_credentials.as_ref().unwrap();
    assert_eq!(single.host, "10.10.254.254:8000");
    assert_eq!(single.prefix, "spectro-images");
    let creds = single.credentials.as_ref().unwrap();
    assert_eq!(creds.username, "ubuntu");
    assert_eq!(creds.password.expose(), "secret", "base64 decoded");
    assert!(single.insecure);

    let external = &c.external_registries[0];
    assert_eq!(external.host, "registry.example.com");
    assert_eq!(external.prefix, "palette-images");
    assert_eq!(
        external.credentials.as_ref().unwrap().password.expose(),
        "hunter2"
    );
    assert!(external.certificates.is_empty(), "empty string = none");

    let rules: Vec<(String, String)> = c
        .mapping_rules
        .iter()
        .map(|r| (r.source.to_string(), r.target.to_string()))
        .collect();
    let rules: Vec<(&str, &str)> = rules
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            (
                "us-docker.pkg.dev/palette-images",
                "registry.example.com/palette-images"
            ),
            (
                "gcr.io/spectro-images-public",
                "registry.example.com/mirror"
            ),
        ]
    );
    assert_eq!(
        c.provider.registry.as_ref().map(|r| r.as_str()),
        Some("quay.io")
    );
    assert_eq!(
        c.infrastructure_images,
        ["quay.io/kairos/core-ubuntu-20-lts-rke2"]
    );
}

/// One row of the support matrix.
struct Case {
    provider: bool,
    external: bool,
    local: bool,
    /// Expected feature pairs in the error; empty = allowed.
    conflicts: &'static [&'static str],
}

const LOCAL_VS_PROVIDER: &str =
    "the local registry cannot be used with an authenticated provider registry";
const EXTERNAL_VS_PROVIDER: &str =
    "an authenticated external registry cannot be used with an authenticated provider registry";

#[test]
fn support_matrix_all_eight_combinations() {
    let cases = [
        Case {
            provider: false,
            external: false,
            local: false,
            conflicts: &[],
        },
        Case {
            provider: false,
            external: false,
            local: true,
            conflicts: &[],
        },
        Case {
            provider: false,
            external: true,
            local: false,
            conflicts: &[],
        },
        Case {
            provider: false,
            external: true,
            local: true,
            conflicts: &[],
        },
        Case {
            provider: true,
            external: false,
            local: false,
            conflicts: &[],
        },
        Case {
            provider: true,
            external: false,
            local: true,
            conflicts: &[LOCAL_VS_PROVIDER],
        },
        Case {
            provider: true,
            external: true,
            local: false,
            conflicts: &[EXTERNAL_VS_PROVIDER],
        },
        Case {
            provider: true,
            external: true,
            local: true,
            conflicts: &[LOCAL_VS_PROVIDER, EXTERNAL_VS_PROVIDER],
        },
    ];
    for case in cases {
        let files = Files::new();
        let mut yaml = format!("outpost:\n  localRegistry:\n    enabled: {}\n", case.local);
        if case.external {
            yaml.push_str("stylus:\n  registryCredentials:\n    domain: 10.0.0.1:8000/images\n    username: ubuntu\n    password: pw-external\n");
        }
        if case.provider {
            yaml.push_str("options:\n  system.uri: quay.io/kairos/core:v1\nproviderCredentials:\n  registry: quay.io\n  user: robot\n  password: pw-provider\n");
        }
        let path = files.write("user-data", &yaml);
        let label = format!(
            "provider={} external={} local={}",
            case.provider, case.external, case.local
        );
        match load(std::slice::from_ref(&path)) {
            Ok(loaded) => {
                assert!(case.conflicts.is_empty(), "{label}: expected refusal");
                assert_eq!(loaded.config.local_registry, case.local, "{label}");
            }
            Err(e) => {
                assert!(!case.conflicts.is_empty(), "{label}: unexpected error {e}");
                assert!(
                    matches!(e, ConfigError::Forbidden(ref c) if c.len() == case.conflicts.len()),
                    "{label}: {e}"
                );
                let msg = e.to_string();
                for conflict in case.conflicts {
                    assert!(msg.contains(conflict), "{label}: {msg}");
                }
                let file = path.display().to_string();
                assert!(
                    msg.contains(&format!("`providerCredentials.user` in {file}")),
                    "{msg}"
                );
                assert!(msg.contains("remove `providerCredentials.user`"), "{msg}");
                if case.local {
                    assert!(
                        msg.contains(&format!("`outpost.localRegistry.enabled` in {file}: true")),
                        "{msg}"
                    );
                    assert!(
                        msg.contains("set `outpost.localRegistry.enabled: false`"),
                        "{msg}"
                    );
                }
                if case.external {
                    assert!(
                        msg.contains(&format!("`stylus.registryCredentials.username` in {file}")),
                        "{msg}"
                    );
                }
                assert!(!msg.contains("pw-"), "a password leaked: {msg}");
            }
        }
    }
}

#[test]
fn local_registry_is_on_by_default_and_the_error_says_so() {
    let files = Files::new();
    let path = files.write(
        "values.yaml",
        "providerCredentials:\n  registry: quay.io\n  password: pw\n",
    );
    let msg = load_err(&[path]);
    assert!(msg.contains(LOCAL_VS_PROVIDER), "{msg}");
    assert!(
        msg.contains("`outpost.localRegistry.enabled` is not set in any file"),
        "{msg}"
    );
    assert!(msg.contains("`providerCredentials.password` in"), "{msg}");
}

#[test]
fn files_merge_in_order_later_values_win_key_by_key() {
    let files = Files::new();
    let user_data = files.write(
        "user-data",
        "#cloud-config\noutpost:\n  listen: 127.0.0.1:6000\n  dataDir: /data\n  localRegistry:\n    enabled: true\nstylus:\n  externalRegistries:\n    registryMappingRules:\n      a.example.com/x: b.example.com/x\n      c.example.com: d.example.com\n",
    );
    let values = files.write(
        "values.yaml",
        "outpost:\n  listen: 127.0.0.1:6001\n  localRegistry:\n    enabled: false\nstylus:\n  externalRegistries:\n    registryMappingRules:\n      c.example.com: e.example.com\noptions:\n  system.uri: quay.io/kairos/core:v1\nproviderCredentials:\n  user: robot\n  password: pw\n",
    );
    let loaded = load_ok(&[user_data.clone(), values.clone()]);
    let c = &loaded.config;
    assert_eq!(c.listen.to_string(), "127.0.0.1:6001", "later file wins");
    assert_eq!(c.data_dir, PathBuf::from("/data"), "earlier key kept");
    assert!(!c.local_registry);
    assert_eq!(
        c.provider.registry.as_ref().map(|r| r.as_str()),
        Some("quay.io")
    );
    let rules: Vec<(String, String)> = c
        .mapping_rules
        .iter()
        .map(|r| (r.source.to_string(), r.target.to_string()))
        .collect();
    let rules: Vec<(&str, &str)> = rules
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("a.example.com/x", "b.example.com/x"),
            ("c.example.com", "e.example.com")
        ]
    );

    // The other order: the user-data file re-enables the local registry, and the error names
    // the file of each feature.
    let msg = load_err(&[values.clone(), user_data.clone()]);
    assert!(msg.contains(LOCAL_VS_PROVIDER), "{msg}");
    assert!(
        msg.contains(&format!(
            "`outpost.localRegistry.enabled` in {}",
            user_data.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "`providerCredentials.user` in {}",
            values.display()
        )),
        "{msg}"
    );
}

#[test]
fn a_later_list_replaces_the_earlier_list() {
    let files = Files::new();
    let a = files.write(
        "a.yaml",
        "stylus:\n  externalRegistries:\n    registries:\n      - domain: one.example.com\n      - domain: two.example.com\n",
    );
    let b = files.write(
        "b.yaml",
        "stylus:\n  externalRegistries:\n    registries:\n      - domain: three.example.com/p\n        repositoryName: r\n",
    );
    let c = load_ok(&[a, b]).config;
    let hosts: Vec<(&str, &str)> = c
        .external_registries
        .iter()
        .map(|r| (r.host.as_str(), r.prefix.as_str()))
        .collect();
    assert_eq!(hosts, [("three.example.com", "p/r")]);
}

/// (file text, key path the error must name, line if the parser knows it, words of the fix)
const ERRORS: &[(&str, &str, Option<usize>, &str)] = &[
    ("outpost:\n  listn: 127.0.0.1:1\n", "outpost.listn", Some(2), "fix the spelling"),
    ("outpost:\n  cache:\n    maxSise: 1GiB\n", "outpost.cache.maxSise", Some(3), "fix the spelling"),
    ("outpost:\n  localRegistry:\n    enabled: maybe\n", "outpost.localRegistry.enabled", Some(3), "expected a boolean"),
    ("stylus:\n  registryCredentials:\n    domain: https://r.example.com\n", "stylus.registryCredentials.domain", Some(3), "remove `https://`"),
    ("stylus:\n  externalRegistries:\n    registries:\n      - domain: r.example.com:99999\n", "stylus.externalRegistries.registries[0].domain", Some(4), "1 to 65535"),
    ("stylus:\n  externalRegistries:\n    registries:\n      - domain: r.example.com\n        username: u\n        password: \"not base64 at all!\"\n        encodedPassword: true\n", "stylus.externalRegistries.registries[0].password", None, "base64"),
    ("stylus:\n  externalRegistries:\n    registries:\n      - domain: r.example.com\n        certificates:\n          - |\n            -----BEGIN CERTIFICATE-----\n            ...\n", "stylus.externalRegistries.registries[0].certificates[0]", Some(6), "-----END CERTIFICATE-----"),
    ("providerCredentials:\n  certificates: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"\n", "providerCredentials.certificates", Some(2), "X.509"),
    ("stylus:\n  site:\n    caCerts:\n      - not a certificate\n", "stylus.site.caCerts[0]", Some(4), "PEM"),
    ("stylus:\n  externalRegistries:\n    registryMappingRules:\n      \"us-docker.pkg.dev/x\": \"palette-images/x\"\n", "stylus.externalRegistries.registryMappingRules", Some(4), "does not start with a registry host"),
    ("stylus:\n  externalRegistries:\n    registryMappingRules:\n      \"nohost\": \"r.example.com/x\"\n", "stylus.externalRegistries.registryMappingRules", Some(4), "does not start with a registry host"),
    ("outpost:\n  listen: localhost:5000\n", "outpost.listen", Some(2), "`IP:PORT`"),
    ("outpost:\n  admin:\n    listen: 5000\n", "outpost.admin.listen", Some(3), "`IP:PORT`"),
    ("outpost:\n  cache:\n    maxSize: 5 parsecs\n", "outpost.cache.maxSize", Some(3), "GiB"),
    ("outpost:\n  cache:\n    tagTtl: soon\n", "outpost.cache.tagTtl", Some(3), "`5m`"),
    ("outpost:\n  upstream:\n    connectTimeout: 10\n", "outpost.upstream.connectTimeout", Some(3), "`30s`"),
    ("outpost:\n  tls:\n    cert: /c.pem\n", "outpost.tls.key", None, "private key"),
    ("outpost:\n  workerThreads: 0\n", "outpost.workerThreads", Some(2), "from 1 to 256"),
    ("outpost:\n  workerThreads: 257\n", "outpost.workerThreads", Some(2), "from 1 to 256"),
    ("outpost:\n  workerThreads: two\n", "outpost.workerThreads", Some(2), "from 1 to 256"),
    ("options:\n  system.uri: \"quay.io/\"\n", "options.system.uri", Some(2), "no repository"),
    ("stylus:\n  site:\n    network:\n      httpsProxy: socks5://proxy:1080\n", "stylus.site.network.httpsProxy", Some(4), "http://[user:password@]host:port"),
    ("stylus:\n  site:\n    network:\n      httpProxy: http://proxy:3128\n      noProxy: 10.0.0.0/8,10.0.0.0/33\n", "stylus.site.network.noProxy", Some(5), "CIDR range"),
];

#[test]
fn each_error_names_the_file_the_key_the_line_and_the_fix() {
    for (text, key, line, fix) in ERRORS {
        let files = Files::new();
        let path = files.write("config.yaml", text);
        let msg = load_err(std::slice::from_ref(&path));
        let file = path.display().to_string();
        let at = match line {
            Some(line) => format!("{file}:{line}"),
            None => file.clone(),
        };
        assert!(msg.starts_with(&at), "expected `{at}` first: {msg}");
        assert!(msg.contains(key), "expected key `{key}`: {msg}");
        assert!(msg.contains(fix), "expected fix `{fix}`: {msg}");
    }
}

#[test]
fn syntax_and_read_errors_name_the_file() {
    let files = Files::new();
    let path = files.write("broken.yaml", "outpost:\n  listen: [127.0.0.1\n");
    let msg = load_err(std::slice::from_ref(&path));
    assert!(msg.starts_with(&format!("{}:3", path.display())), "{msg}");
    assert!(msg.contains("YAML syntax error"), "{msg}");

    let missing = files.dir.path().join("missing.yaml");
    let msg = load_err(std::slice::from_ref(&missing));
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("cannot read"), "{msg}");
}

#[test]
fn unknown_keys_outside_outpost_are_ignored() {
    let files = Files::new();
    let path = files.write(
        "user-data",
        "#cloud-config\nusers:\n  - name: kairos\nstylus:\n  site:\n    paletteEndpoint: x\n    edgeHostToken: t\n  includeTui: true\n  registryCredentials:\n    domain: r.example.com\n    someFutureKey: 1\noptions:\n  system.uri: quay.io/kairos/core:v1\n  other.key: 2\n",
    );
    let c = load_ok(&[path]).config;
    assert_eq!(c.registry_credentials.unwrap().host, "r.example.com");
}

#[test]
fn certificates_as_a_list_or_as_one_string_of_blocks() {
    let (a, b) = (cert_pem("a.example.com"), cert_pem("b.example.com"));
    let files = Files::new();
    let as_list = format!(
        "stylus:\n  externalRegistries:\n    registries:\n      - domain: r.example.com\n        certificates:\n          - |\n{}          - |\n{}",
        indent(&a, 12),
        indent(&b, 12)
    );
    let as_string = format!(
        "stylus:\n  externalRegistries:\n    registries:\n      - domain: r.example.com\n        certificates: |\n{}{}",
        indent(&a, 10),
        indent(&b, 10)
    );
    let from_list = load_ok(&[files.write("list.yaml", &as_list)]).config;
    let from_string = load_ok(&[files.write("string.yaml", &as_string)]).config;
    let list_certs = &from_list.external_registries[0].certificates;
    assert_eq!(list_certs.len(), 2);
    assert_eq!(list_certs, &from_string.external_registries[0].certificates);
    // The resolved PEM is the same certificate (same DER) as the one written.
    let der = |pem: &str| -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    assert_eq!(der(&list_certs[0]), der(&a));
    assert_eq!(der(&list_certs[1]), der(&b));
}

#[test]
fn site_ca_certs_accept_pem_and_base64_encoded_pem() {
    let pem = cert_pem("ca.example.com");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pem);
    let files = Files::new();
    let text = format!(
        "stylus:\n  site:\n    caCerts:\n      - |\n{}      - {encoded}\n",
        indent(&pem, 8)
    );
    let c = load_ok(&[files.write("site.yaml", &text)]).config;
    assert_eq!(c.site.ca_certs.len(), 2);
    assert_eq!(c.site.ca_certs[0], c.site.ca_certs[1]);
}

#[test]
fn provider_registry_comes_from_credentials_or_the_image() {
    let files = Files::new();
    for (text, registry, infra) in [
        ("options:\n  system.uri: ubuntu:20.04\n", "docker.io", "docker.io/library/ubuntu"),
        ("options:\n  system.uri: index.docker.io/kairos/core:v1\n", "docker.io", "docker.io/kairos/core"),
        (
            "options:\n  system.uri: quay.io/kairos/core:v1\nproviderCredentials:\n  registry: mirror.example.com:5000\n",
            "mirror.example.com:5000",
            "quay.io/kairos/core",
        ),
    ] {
        let c = load_ok(&[files.write("values.yaml", text)]).config;
        assert_eq!(c.provider.registry.as_ref().map(|r| r.as_str()), Some(registry), "{text}");
        assert_eq!(c.infrastructure_images, [infra], "{text}");
    }
    let c = load_ok(&[files.write(
        "values.yaml",
        "outpost:\n  infrastructureImages: []\noptions:\n  system.uri: quay.io/kairos/core:v1\n",
    )])
    .config;
    assert!(c.infrastructure_images.is_empty(), "an explicit list wins");
}

fn has_warning(loaded: &Loaded, words: &[&str]) -> bool {
    loaded
        .warnings
        .iter()
        .any(|w| words.iter().all(|word| w.contains(word)))
}

#[test]
fn warnings() {
    let files = Files::new();
    // Provider credentials with an anonymous external registry carrying every image, and the
    // local registry off (so the combination is allowed).
    let text = "outpost:\n  localRegistry:\n    enabled: false\nstylus:\n  registryCredentials:\n    domain: 10.0.0.1:8000\n    insecure: true\n  externalRegistries:\n    registryMappingRules:\n      gcr.io/x: other.example.com/x\nproviderCredentials:\n  user: robot\n  password: pw\n";
    let loaded = load_ok(&[files.write("w.yaml", text)]);
    assert!(
        has_warning(
            &loaded,
            &["provider credentials", "unused", "10.0.0.1:8000"]
        ),
        "{:?}",
        loaded.warnings
    );
    assert!(
        has_warning(
            &loaded,
            &[
                "other.example.com",
                "no entry in `stylus.externalRegistries.registries`"
            ]
        ),
        "{:?}",
        loaded.warnings
    );
    assert!(
        has_warning(&loaded, &["10.0.0.1:8000", "without TLS verification"]),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);

    let loaded = load_ok(&[files.write(
        "site.yaml",
        "stylus:\n  site:\n    insecureSkipVerify: true\n",
    )]);
    assert!(
        has_warning(&loaded, &["insecureSkipVerify", "every upstream"]),
        "{:?}",
        loaded.warnings
    );

    let quiet = load_ok(&[files.write(
        "quiet.yaml",
        "stylus:\n  registryCredentials:\n    domain: r.example.com\n",
    )]);
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
}

#[cfg(unix)]
#[test]
fn a_readable_file_holding_a_secret_is_warned_about() {
    let files = Files::new();
    let secret = "stylus:\n  registryCredentials:\n    domain: r.example.com\n    username: u\n    password: pw\n";
    let path = files.write("secret.yaml", secret);
    for (mode, warned) in [
        (0o600, false),
        (0o640, false),
        (0o644, true),
        (0o660, true),
        (0o604, true),
    ] {
        set_mode(&path, mode);
        let loaded = load_ok(std::slice::from_ref(&path));
        let fix = format!("chmod 600 {}", path.display());
        assert_eq!(
            has_warning(&loaded, &[&fix, &format!("{mode:04o}")]),
            warned,
            "mode {mode:o}: {:?}",
            loaded.warnings
        );
    }
    // A world-readable file without a secret is fine.
    let public = files.write("public.yaml", "outpost:\n  listen: 127.0.0.1:5000\n");
    set_mode(&public, 0o644);
    assert!(load_ok(&[public]).warnings.is_empty());
}

#[test]
fn no_secret_in_debug_or_errors() {
    let files = Files::new();
    let loaded = load_ok(&[files.write("user-data", ISSUE_EXAMPLE)]);
    let debug = format!("{loaded:?} {:?}", loaded.config);
    for secret in ["hunter2", "c2VjcmV0", "secret"] {
        assert!(!debug.contains(secret), "`{secret}` in Debug: {debug}");
    }
    // A password pasted under a boolean key is not echoed in the error.
    let msg = load_err(&[files.write(
        "oops.yaml",
        "stylus:\n  registryCredentials:\n    domain: r.example.com\n    insecure: hunter2\n",
    )]);
    assert!(msg.contains("stylus.registryCredentials.insecure"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = load_err(&[files.write(
        "forbidden.yaml",
        "stylus:\n  registryCredentials:\n    domain: r.example.com\n    username: u\n    password: hunter2\nproviderCredentials:\n  user: p\n  password: hunter3\n",
    )]);
    assert!(!msg.contains("hunter"), "{msg}");
}

#[test]
fn default_config_matches_no_files() {
    let defaults = Config::default();
    let loaded = load_ok(&[]).config;
    assert_eq!(format!("{defaults:?}"), format!("{loaded:?}"));
}

#[test]
fn an_empty_domain_is_no_registry_unless_it_has_credentials() {
    let files = Files::new();
    let c = load_ok(&[files.write(
        "user-data",
        "stylus:\n  registryCredentials:\n    domain: \"\"\n    insecure: false\n  externalRegistries:\n    registries:\n      - domain:\n",
    )])
    .config;
    assert!(c.registry_credentials.is_none() && c.external_registries.is_empty());
    let path = files.write(
        "creds.yaml",
        "stylus:\n  registryCredentials:\n    domain: \"\"\n    username: u\n    password: p\n",
    );
    let msg = load_err(std::slice::from_ref(&path));
    assert!(msg.contains("stylus.registryCredentials.domain"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn the_site_proxy_is_read_as_palette_writes_it() {
    let files = Files::new();
    let path = files.write(
        "user-data.yaml",
        "#cloud-config\nstylus:\n  site:\n    network:\n      httpProxy: http://proxy.site.local:3128\n      httpsProxy: http://edge:s%40cret@proxy.site.local:3129\n      noProxy: 10.0.0.0/8,192.168.0.0/16,.site.local,registry.local:5000\n      staticIp: 10.0.0.5\n",
    );
    let mut loaded = load_ok(&[path]);
    let proxy = loaded.config.proxy.clone().expect("a proxy");
    assert_eq!(proxy.origin, oci::ProxyOrigin::Config);
    assert_eq!(
        proxy.http.as_ref().unwrap().authority(),
        "proxy.site.local:3128"
    );
    let https = proxy.https.as_ref().unwrap();
    assert_eq!(https.port, 3129);
    assert_eq!(
        https.credentials.as_ref().unwrap().password.expose(),
        "s@cret"
    );
    assert_eq!(https.to_string(), "http://edge:****@proxy.site.local:3129");
    assert!(proxy.proxy_for(true, "quay.io", 443).is_some());
    assert!(proxy.proxy_for(true, "registry.site.local", 443).is_none());
    assert!(proxy.proxy_for(true, "registry.local", 5000).is_none());
    assert!(proxy.proxy_for(true, "10.10.254.254", 8000).is_none());
    assert!(!format!("{:?}", loaded.config).contains("s@cret"));

    // The configuration wins over the environment, with a warning that says so.
    loaded
        .apply_proxy_environment(|v| (v == "HTTPS_PROXY").then(|| "http://other:1".to_owned()))
        .unwrap();
    assert_eq!(loaded.config.proxy, Some(proxy));
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("HTTPS_PROXY") && w.contains("ignored")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn without_a_site_proxy_the_environment_is_read() {
    let files = Files::new();
    let path = files.write(
        "user-data.yaml",
        "stylus:\n  site:\n    network:\n      httpProxy: \"\"\n      httpsProxy: \"\"\n",
    );
    let mut loaded = load_ok(&[path]);
    assert_eq!(loaded.config.proxy, None, "empty values are not a proxy");
    let env = |v: &str| match v {
        "https_proxy" => Some("proxy.local:3128".to_owned()),
        "NO_PROXY" => Some("localhost,127.0.0.0/8".to_owned()),
        _ => None,
    };
    loaded.apply_proxy_environment(env).unwrap();
    let proxy = loaded
        .config
        .proxy
        .clone()
        .expect("the environment's proxy");
    assert_eq!(proxy.origin, oci::ProxyOrigin::Environment);
    assert_eq!(
        proxy.https.as_ref().unwrap().authority(),
        "proxy.local:3128"
    );
    assert!(proxy.proxy_for(true, "127.0.0.1", 5000).is_none());

    let mut loaded = load_ok(&[]);
    let err = loaded
        .apply_proxy_environment(|v| (v == "HTTP_PROXY").then(|| "http://u:pw@h:nope".to_owned()))
        .unwrap_err();
    assert!(err.contains("HTTP_PROXY") && !err.contains("pw@"), "{err}");
}

#[test]
fn no_proxy_without_a_proxy_is_a_warning() {
    let files = Files::new();
    let path = files.write(
        "user-data.yaml",
        "stylus:\n  site:\n    network:\n      noProxy: .site.local\n",
    );
    let loaded = load_ok(&[path]);
    assert!(loaded.config.proxy.is_none());
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("noProxy") && w.contains("no effect")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn a_null_domain_is_not_set() {
    // Not a registry called `null` that the credentials would be sent to.
    let files = Files::new();
    for null in ["null", "~"] {
        let msg = load_err(&[files.write(
            "user-data",
            &format!(
                "stylus:\n  registryCredentials:\n    domain: {null}\n    username: ubuntu\n    password: pw\n"
            ),
        )]);
        assert!(
            msg.contains("stylus.registryCredentials.domain") && msg.contains("missing"),
            "{null}: {msg}"
        );
    }
}

#[test]
fn a_secret_with_a_double_quote_under_the_wrong_key_is_not_echoed() {
    let files = Files::new();
    let msg = load_err(&[files.write(
        "oops.yaml",
        "stylus:\n  registryCredentials:\n    domain: r.example.com\n    insecure: hunter\"2secret\n",
    )]);
    assert!(msg.contains("stylus.registryCredentials.insecure"), "{msg}");
    assert!(msg.contains("expected a boolean"), "{msg}");
    assert!(!msg.contains("hunter") && !msg.contains("2secret"), "{msg}");
}

#[test]
fn a_long_numeric_password_is_read_as_text() {
    let files = Files::new();
    let path = files.write(
        "user-data",
        "stylus:\n  registryCredentials:\n    domain: r.example.com\n    username: u\n    password: 123456789012345678901234\n",
    );
    let loaded = load(std::slice::from_ref(&path)).unwrap_or_else(|e| {
        panic!(
            "refused: {}",
            e.to_string()
                .replace("123456789012345678901234", "<the password>")
        )
    });
    let credentials = loaded
        .config
        .registry_credentials
        .unwrap()
        .credentials
        .unwrap();
    assert_eq!(credentials.password.expose(), "123456789012345678901234");
}

#[test]
fn a_later_file_sets_worker_threads() {
    let files = Files::new();
    let a = files.write("a.yaml", "outpost:\n  workerThreads: 2\n");
    let b = files.write("b.yaml", "outpost:\n  workerThreads: 4\n");
    let config = load_ok(&[a, b]).config;
    assert_eq!(
        config.worker_threads.map(|n| n.get()),
        Some(4),
        "the later file wins"
    );
}

#[test]
fn a_world_readable_file_with_the_s3_secret_is_warned_about() {
    let files = Files::new();
    let path = files.write(
        "outpost.yaml",
        "outpost:\n  sharedStore:\n    endpoint: http://127.0.0.1:3900\n    bucket: outpost\n    accessKeyId: GK31c2f218a2e44f485b94239e\n    secretAccessKey: s3-secret-value\n",
    );
    set_mode(&path, 0o644);
    let warnings = load_ok(std::slice::from_ref(&path)).warnings;
    assert!(
        warnings.iter().any(|w| w.contains("chmod 600")),
        "no mode warning: {warnings:?}"
    );
}

#[test]
fn a_later_file_naming_another_registry_does_not_inherit_the_earlier_credentials() {
    let files = Files::new();
    let a = files.write(
        "a.yaml",
        "stylus:\n  registryCredentials:\n    domain: a.example.com\n    username: alice\n    password: for-a-only\n",
    );
    let b = files.write(
        "b.yaml",
        "stylus:\n  registryCredentials:\n    domain: b.example.com\n",
    );
    let registry = load_ok(&[a.clone(), b])
        .config
        .registry_credentials
        .unwrap();
    assert_eq!(registry.host.to_string(), "b.example.com");
    assert!(
        registry.credentials.is_none(),
        "a.example.com's password would go to b.example.com"
    );
    // The same registry again: key by key, as before.
    let c = files.write(
        "c.yaml",
        "stylus:\n  registryCredentials:\n    domain: a.example.com\n    password: rotated\n",
    );
    let registry = load_ok(&[a, c]).config.registry_credentials.unwrap();
    let credentials = registry.credentials.unwrap();
    assert_eq!(
        (credentials.username.as_str(), credentials.password.expose()),
        ("alice", "rotated")
    );
    // Credentials in one file, the domain in a later one: they were written for that domain.
    let creds = files.write(
        "creds.yaml",
        "stylus:\n  registryCredentials:\n    username: alice\n    password: pw\n",
    );
    let domain = files.write(
        "domain.yaml",
        "stylus:\n  registryCredentials:\n    domain: a.example.com\n",
    );
    let registry = load_ok(&[creds, domain])
        .config
        .registry_credentials
        .unwrap();
    assert_eq!(registry.host.to_string(), "a.example.com");
    let credentials = registry.credentials.unwrap();
    assert_eq!(
        (credentials.username.as_str(), credentials.password.expose()),
        ("alice", "pw")
    );
}

#[test]
fn a_later_file_naming_another_shared_store_endpoint_does_not_inherit_the_secret() {
    let files = Files::new();
    let a = files.write(
        "a.yaml",
        "outpost:\n  sharedStore:\n    endpoint: http://127.0.0.1:3900\n    bucket: outpost\n    accessKeyId: GKa\n    secretAccessKey: secret-a\n",
    );
    set_mode(&a, 0o600);
    let b = files.write(
        "b.yaml",
        "outpost:\n  sharedStore:\n    endpoint: http://127.0.0.2:3900\n    bucket: outpost\n",
    );
    // The new endpoint's section stands alone: it has no key of its own.
    let msg = load_err(&[a, b]);
    assert!(
        msg.contains("b.yaml") && msg.contains("outpost.sharedStore.accessKeyId"),
        "{msg}"
    );
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn a_rule_into_one_of_two_projects_on_one_registry_uses_that_projects_account() {
    let files = Files::new();
    let config = load_ok(&[files.write(
        "user-data",
        "stylus:\n  externalRegistries:\n    registries:\n      - domain: harbor.example.com/proja\n        username: robot-a\n        password: pa\n      - domain: harbor.example.com/projb\n        username: robot-b\n        password: pb\n    registryMappingRules:\n      quay.io/kairos: harbor.example.com/projb/kairos\n      ghcr.io/tools: harbor.example.com/projbx/tools\n",
    )])
    .config;
    let user = |name: &str| {
        let source = oci::Source::from_name(name, &oci::Registry::docker_hub()).unwrap();
        let target = config::translate(&config, &source);
        (target.repository, target.credentials.map(|c| c.username))
    };
    assert_eq!(
        user("quay.io/kairos/core"),
        ("projb/kairos/core".to_owned(), Some("robot-b".to_owned()))
    );
    // `projbx` is not under `projb`: the registry's first entry, as before.
    assert_eq!(
        user("ghcr.io/tools/x"),
        ("projbx/tools/x".to_owned(), Some("robot-a".to_owned()))
    );
}
