//! The docker-compose development stack is wired together correctly, checked against outpost's
//! real command line ([`crate::cli`]), configuration schema ([`config::load`]), name rules
//! ([`oci::Source::from_name`], what the router applies to a host-in-path name) and translation
//! ([`config::translate`]) -- no Docker engine needed.
//!
//! [`check_wiring`] reads `docker-compose.yml` and the files it mounts from a repository root and
//! returns every broken link it finds. The real repository must have none; copies of it with one
//! link broken (a port, a service name, the external domain, the seed's path, the volume, the
//! password) must each be reported, so the check cannot pass by accident.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use config::translate;
use oci::Source;
use serde::Deserialize;

use crate::cli::{Cli, Command};

/// The part of the compose file format this check reads.
#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<serde_yaml_ng::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    command: Vec<String>,
    entrypoint: Vec<String>,
    environment: BTreeMap<String, String>,
    ports: Vec<String>,
    volumes: Vec<String>,
    depends_on: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Build {
    context: String,
    dockerfile: Option<String>,
}

/// One `volumes:` entry of a service: `SOURCE:TARGET[:MODE]`.
struct Mount {
    source: String,
    target: String,
}

impl Service {
    fn mounts(&self) -> Vec<Mount> {
        self.volumes
            .iter()
            .filter_map(|v| {
                let mut parts = v.split(':');
                Some(Mount {
                    source: parts.next()?.to_owned(),
                    target: parts.next()?.to_owned(),
                })
            })
            .collect()
    }

    fn mount_at(&self, target: &str) -> Option<Mount> {
        self.mounts().into_iter().find(|m| m.target == target)
    }

    /// `(published, container)` ports of `"HOST:CONTAINER"` entries.
    fn published_ports(&self) -> Vec<(u16, u16)> {
        self.ports
            .iter()
            .filter_map(|p| {
                let (host, container) = p.rsplit_once(':')?;
                let host = host.rsplit(':').next()?;
                Some((host.parse().ok()?, container.parse().ok()?))
            })
            .collect()
    }
}

fn is_bind(source: &str) -> bool {
    source.starts_with("./") || source.starts_with('/') || source.starts_with("../")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/outpost/ is two levels below the repository root")
        .to_owned()
}

/// The port registry:2 listens on inside its container (it has no setting for it here).
const REGISTRY_PORT: u16 = 5000;
/// The reference the README tells a developer to curl.
const README_PATH: &str = "/v2/quay.io/example/app/manifests/v1";

/// Every broken link in the compose stack under `root`; empty when the wiring is right.
fn check_wiring(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                problems.push(format!($($msg)+));
            }
        };
    }

    let text = match std::fs::read_to_string(root.join("docker-compose.yml")) {
        Ok(text) => text,
        Err(e) => return vec![format!("cannot read docker-compose.yml: {e}")],
    };
    let compose: Compose = match serde_yaml_ng::from_str(&text) {
        Ok(c) => c,
        Err(e) => return vec![format!("docker-compose.yml does not parse: {e}")],
    };
    let names: Vec<&str> = compose.services.keys().map(String::as_str).collect();
    ensure!(
        names == ["external", "outpost", "seed", "upstream"],
        "services are {names:?}, expected external, outpost, seed, upstream"
    );
    let (Some(outpost), Some(external), Some(upstream), Some(seed)) = (
        compose.services.get("outpost"),
        compose.services.get("external"),
        compose.services.get("upstream"),
        compose.services.get("seed"),
    ) else {
        return problems;
    };

    // outpost: built from the Dockerfile, started with `serve` as the real CLI parses it.
    match &outpost.build {
        Some(build) => {
            let dockerfile = build.dockerfile.as_deref().unwrap_or("Dockerfile");
            let path = root.join(&build.context).join(dockerfile);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    ensure!(
                        text.contains(r#"ENTRYPOINT ["outpost"]"#),
                        "{} has no `ENTRYPOINT [\"outpost\"]`",
                        path.display()
                    );
                    ensure!(
                        text.contains("--bin outpost"),
                        "{} does not build the outpost binary",
                        path.display()
                    );
                }
                Err(e) => problems.push(format!("outpost's Dockerfile {}: {e}", path.display())),
            }
        }
        None => {
            problems.push("outpost has no `build:` (it must be built from the Dockerfile)".into())
        }
    }
    let args = std::iter::once("outpost".to_owned()).chain(outpost.command.iter().cloned());
    let serve = match Cli::try_parse_from(args) {
        Ok(Cli {
            command: Command::Serve(serve),
        }) => serve,
        Ok(other) => {
            problems.push(format!("outpost's command is not `serve`: {other:?}"));
            return problems;
        }
        Err(e) => {
            problems.push(format!("outpost's command does not parse: {e}"));
            return problems;
        }
    };
    let Some(listen) = serve.listen else {
        problems.push("outpost's command has no --listen".into());
        return problems;
    };
    ensure!(
        listen.ip().is_unspecified(),
        "outpost listens on {listen}: inside a container it must listen on 0.0.0.0 to be reachable"
    );
    ensure!(
        outpost.published_ports().contains(&(listen.port(), listen.port())),
        "outpost's ports {:?} do not publish its --listen port {} as the same port (the README curls localhost:{})",
        outpost.ports,
        listen.port(),
        listen.port()
    );

    // The data directory is a named volume declared at the top level.
    match (
        &serve.data_dir,
        serve
            .data_dir
            .as_ref()
            .and_then(|d| outpost.mount_at(&d.to_string_lossy())),
    ) {
        (None, _) => problems.push("outpost's command has no --data-dir".into()),
        (Some(dir), None) => problems.push(format!(
            "nothing is mounted at outpost's --data-dir {}",
            dir.display()
        )),
        (Some(_), Some(mount)) => {
            ensure!(
                !is_bind(&mount.source) && compose.volumes.contains_key(&mount.source),
                "outpost's data mount `{}` is not a named volume declared under top-level `volumes:` ({:?})",
                mount.source,
                compose.volumes.keys().collect::<Vec<_>>()
            );
        }
    }

    // The config file: mounted at --config, present in the repository, valid for outpost.
    let [config_target] = serve.config.files.as_slice() else {
        problems.push(format!(
            "outpost's command gives {} --config files, expected one",
            serve.config.files.len()
        ));
        return problems;
    };
    let Some(config_mount) = outpost.mount_at(&config_target.to_string_lossy()) else {
        problems.push(format!(
            "nothing is mounted at outpost's --config {}",
            config_target.display()
        ));
        return problems;
    };
    let config_file = root.join(&config_mount.source);
    let loaded = match config::load(std::slice::from_ref(&config_file)) {
        Ok(loaded) => loaded,
        Err(e) => {
            problems.push(format!(
                "the mounted config {} does not load: {e}",
                config_mount.source
            ));
            return problems;
        }
    };
    let config = loaded.config;
    ensure!(
        config.listen == listen,
        "{} says `outpost.listen: {}` but the command says --listen {listen}",
        config_mount.source,
        config.listen
    );
    ensure!(
        Some(&config.data_dir) == serve.data_dir.as_ref(),
        "{} says `outpost.dataDir: {}` but the command says --data-dir {:?}",
        config_mount.source,
        config.data_dir.display(),
        serve.data_dir
    );
    ensure!(
        config.local_registry,
        "the local registry is disabled in {}",
        config_mount.source
    );

    // external: registry:2 with htpasswd, reached by outpost as `external:5000`.
    let Some(registry) = &config.registry_credentials else {
        problems.push(format!(
            "{} has no `stylus.registryCredentials`",
            config_mount.source
        ));
        return problems;
    };
    ensure!(
        registry.host.as_str() == format!("external:{REGISTRY_PORT}"),
        "`stylus.registryCredentials.domain` host is {}, but the external registry is the service `external` on port {REGISTRY_PORT}",
        registry.host
    );
    ensure!(
        registry.insecure,
        "the external registry speaks plain HTTP, so `stylus.registryCredentials.insecure` must be true"
    );
    ensure!(
        external.image.as_deref() == Some("registry:2")
            && upstream.image.as_deref() == Some("registry:2"),
        "external and upstream must run `registry:2` (they are {:?} and {:?})",
        external.image,
        upstream.image
    );
    ensure!(
        !external.environment.contains_key("REGISTRY_HTTP_ADDR")
            && !upstream.environment.contains_key("REGISTRY_HTTP_ADDR"),
        "REGISTRY_HTTP_ADDR moves a registry off port {REGISTRY_PORT}, which outpost.yaml and the seed use"
    );
    ensure!(
        external
            .environment
            .get("REGISTRY_AUTH")
            .map(String::as_str)
            == Some("htpasswd"),
        "external must have REGISTRY_AUTH=htpasswd"
    );
    ensure!(
        !upstream.environment.contains_key("REGISTRY_AUTH"),
        "upstream must be plain (anonymous), but it sets REGISTRY_AUTH"
    );
    let credentials = registry.credentials.as_ref();
    match external
        .environment
        .get("REGISTRY_AUTH_HTPASSWD_PATH")
        .and_then(|path| external.mount_at(path))
    {
        None => {
            problems.push("external's REGISTRY_AUTH_HTPASSWD_PATH is not a mounted file".into())
        }
        Some(mount) => match (
            std::fs::read_to_string(root.join(&mount.source)),
            credentials,
        ) {
            (Err(e), _) => problems.push(format!("the htpasswd file {}: {e}", mount.source)),
            (Ok(_), None) => {
                problems.push("`stylus.registryCredentials` has no username or password".into())
            }
            (Ok(htpasswd), Some(c)) => {
                let hash = htpasswd
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{}:", c.username)));
                ensure!(
                    hash.is_some_and(|h| h.starts_with("$2")
                        && bcrypt::verify(c.password.expose(), h).unwrap_or(false)),
                    "{} has no bcrypt entry for user {:?} matching the password in {}",
                    mount.source,
                    c.username,
                    config_mount.source
                );
            }
        },
    }

    // The README's curl, routed and translated by outpost's own functions, lands where seed pushed.
    let name = README_PATH
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_suffix("/manifests/v1"))
        .expect("the README path is a manifest path");
    let source =
        Source::from_name(name, &config.default_registry).expect("the README name is valid");
    let target = translate(&config, &source);
    let env = |key: &str| seed.environment.get(key).map(String::as_str).unwrap_or("");
    ensure!(
        env("SEED_REGISTRY") == target.host && env("SEED_REPOSITORY") == target.repository,
        "seed pushes to {}/{} but outpost fetches {README_PATH} from {}/{}",
        env("SEED_REGISTRY"),
        env("SEED_REPOSITORY"),
        target.host,
        target.repository
    );
    ensure!(
        env("SEED_TAG") == README_PATH.rsplit('/').next().unwrap_or_default(),
        "seed pushes tag {:?}, the README pulls {README_PATH}",
        env("SEED_TAG")
    );
    if let Some(c) = credentials {
        ensure!(
            env("SEED_USER") == c.username && env("SEED_PASSWORD") == c.password.expose(),
            "seed's SEED_USER/SEED_PASSWORD are not the credentials of {}",
            config_mount.source
        );
    }
    ensure!(
        env("SEED_ORIGIN_REGISTRY") == format!("upstream:{REGISTRY_PORT}"),
        "seed's SEED_ORIGIN_REGISTRY is {:?}, expected the `upstream` service on port {REGISTRY_PORT}",
        env("SEED_ORIGIN_REGISTRY")
    );
    match seed
        .entrypoint
        .last()
        .and_then(|script| seed.mount_at(script))
    {
        None => problems.push("seed's entrypoint does not run a mounted script".into()),
        Some(mount) => ensure!(
            root.join(&mount.source).is_file(),
            "seed's script {} is not in the repository",
            mount.source
        ),
    }
    for needed in ["external", "upstream"] {
        ensure!(
            seed.depends_on.iter().any(|d| d == needed),
            "seed does not depend on {needed}"
        );
    }
    problems
}

#[test]
fn the_compose_stack_is_wired_together() {
    let problems = check_wiring(&repo_root());
    assert!(
        problems.is_empty(),
        "docker-compose wiring:\n  {}",
        problems.join("\n  ")
    );
}

/// A copy of the files the compose stack uses, with `file`'s `from` replaced by `to`.
fn broken_copy(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("compose")).unwrap();
    for name in ["docker-compose.yml", "Dockerfile"] {
        std::fs::copy(root.join(name), dir.path().join(name)).unwrap();
    }
    for entry in std::fs::read_dir(root.join("compose")).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        std::fs::copy(
            entry.path(),
            dir.path().join("compose").join(entry.file_name()),
        )
        .unwrap();
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "{file} no longer contains {from:?}; update this test"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    dir
}

#[test]
fn an_unbroken_copy_passes() {
    let copy = broken_copy("docker-compose.yml", "services:", "services:");
    assert_eq!(check_wiring(copy.path()), Vec::<String>::new());
}

#[test]
fn each_broken_link_is_reported() {
    let cases = [
        (
            "docker-compose.yml",
            ":5000:5000\"",
            ":5000:5001\"",
            "do not publish its --listen port",
        ),
        (
            "docker-compose.yml",
            "0.0.0.0:5000",
            "0.0.0.0:5003",
            "do not publish its --listen port",
        ),
        (
            "docker-compose.yml",
            "\n  external:\n",
            "\n  ext:\n",
            "services are",
        ),
        (
            "docker-compose.yml",
            "outpost-data:/var/lib",
            "./data:/var/lib",
            "not a named volume",
        ),
        (
            "docker-compose.yml",
            "./compose/outpost.yaml:",
            "./compose/missing.yaml:",
            "does not load",
        ),
        (
            "docker-compose.yml",
            "SEED_REPOSITORY: spectro-images/quay.io/example/app",
            "SEED_REPOSITORY: quay.io/example/app",
            "seed pushes to",
        ),
        (
            "docker-compose.yml",
            "SEED_TAG: v1",
            "SEED_TAG: v2",
            "seed pushes tag",
        ),
        (
            "docker-compose.yml",
            "SEED_PASSWORD: edge-secret",
            "SEED_PASSWORD: other",
            "SEED_PASSWORD",
        ),
        (
            "docker-compose.yml",
            "REGISTRY_AUTH: htpasswd",
            "REGISTRY_AUTH: silly",
            "REGISTRY_AUTH=htpasswd",
        ),
        (
            "docker-compose.yml",
            "- serve",
            "- check",
            "outpost's command",
        ),
        (
            "compose/outpost.yaml",
            "domain: external:5000/",
            "domain: external:5001/",
            "seed pushes to",
        ),
        (
            "compose/outpost.yaml",
            "domain: external:5000/",
            "domain: outside:5000/",
            "the external registry is the service `external`",
        ),
        (
            "compose/outpost.yaml",
            "ZWRnZS1zZWNyZXQ=",
            "b3RoZXI=",
            "no bcrypt entry",
        ),
        (
            "compose/outpost.yaml",
            "insecure: true",
            "insecure: false",
            "insecure` must be true",
        ),
        (
            "compose/outpost.yaml",
            "username: edge",
            "usernam: edge",
            "no bcrypt entry",
        ),
        (
            "Dockerfile",
            "ENTRYPOINT [\"outpost\"]",
            "ENTRYPOINT [\"sh\"]",
            "ENTRYPOINT",
        ),
    ];
    for (file, from, to, expected) in cases {
        let copy = broken_copy(file, from, to);
        let problems = check_wiring(copy.path());
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{file}: {from:?} -> {to:?} should be reported with {expected:?}, got {problems:#?}"
        );
    }
}
