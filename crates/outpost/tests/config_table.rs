//! The routing table `outpost check` prints must tell the truth: for every row, a repository under
//! the row's source is translated (by `translate::translate`, what the proxy really does) to the
//! row's host, prefix, credentials and TLS settings.

use std::path::PathBuf;

use config::translate;
use config::{load, routing_table};
use oci::{Registry, Repository, Source};

const CONFIGS: &[&str] = &[
    // A single external registry, mapping rules with and without a registry entry, infra images.
    r#"stylus:
  registryCredentials:
    domain: 10.10.254.254:8000/spectro-images
    username: ubuntu
    password: pw
    insecure: true
  externalRegistries:
    registries:
      - domain: registry.example.com
        username: robot
        password: pw2
        repositoryName: palette-images
    registryMappingRules:
      "us-docker.pkg.dev/palette-images": "registry.example.com/palette-images"
      "us-docker.pkg.dev/palette-images/deep": "registry.example.com/deeper"
      "gcr.io/x": "other.example.com/y"
      "docker.io/library": "registry.example.com/hub"
options:
  system.uri: quay.io/kairos/core:v1
"#,
    // Direct: provider credentials for the provider registry only, local registry off.
    r#"outpost:
  localRegistry:
    enabled: false
options:
  system.uri: quay.io/kairos/core:v1
providerCredentials:
  user: robot
  password: pw
"#,
    // The first of externalRegistries carries everything; a loopback registry; site-wide TLS off.
    r#"stylus:
  externalRegistries:
    registries:
      - domain: localhost:5001/mirror
      - domain: registry.example.com
  site:
    insecureSkipVerify: true
outpost:
  defaultRegistry: ghcr.io
"#,
];

fn source(prefix: &str) -> Source {
    let (host, path) = prefix.split_once('/').unwrap_or((prefix, ""));
    let repository = if path.is_empty() {
        "probe/image".to_owned()
    } else {
        format!("{path}/probe/image")
    };
    Source {
        registry: Registry::parse(host).unwrap(),
        repository: Repository::parse(&repository).unwrap(),
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

#[test]
fn every_row_says_where_translation_sends_its_source() {
    for (i, text) in CONFIGS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let config = load(&[path]).unwrap().config;
        let rows = routing_table(&config);
        assert!(rows.len() >= 3, "config {i}: {rows:?}");
        for row in &rows {
            let (src, expected_repository) = if row.source == "*" {
                let src = source("unlisted.example.org");
                let repository = if row.prefix.contains("<source>") {
                    row.prefix
                        .replace("<source>", "unlisted.example.org/probe/image")
                } else {
                    join(&row.prefix, "probe/image")
                };
                (src, repository)
            } else {
                (source(&row.source), join(&row.prefix, "probe/image"))
            };
            let target = translate(&config, &src);
            let label = format!("config {i}, row {row:?}");
            let expected_host = if row.host == "<source host>" {
                "unlisted.example.org"
            } else {
                row.host.as_str()
            };
            assert_eq!(target.host, expected_host, "{label}");
            assert_eq!(target.repository, expected_repository, "{label}");
            let credentials = target
                .credentials
                .as_ref()
                .map_or("anonymous".to_owned(), |c| format!("{} ****", c.username));
            assert_eq!(credentials, row.credentials, "{label}");
            assert_eq!(target.tls.insecure, row.insecure, "{label}");
            assert_eq!(target.tls.extra_cas.len(), row.extra_cas.len(), "{label}");
        }
    }
}
