//! `outpost containerd-config`: containerd's hosts directory (`config_path`) pointing at outpost.
//!
//! One `hosts.toml` per registry host outpost knows from its configuration, plus `_default` for
//! every other host:
//!
//! ```text
//! DIR/
//!   docker.io/hosts.toml          server = "https://registry-1.docker.io", then outpost
//!   quay.io/hosts.toml            server = "https://quay.io", then outpost
//!   10.0.0.9:5000/hosts.toml      a host with a port keeps its `host:port` name
//!   _default/hosts.toml           every other registry, through outpost
//! ```
//!
//! containerd (1.5 and later, `remotes/docker/config`) tries `[host."<outpost>"]` first, sending
//! the source registry in the `?ns=` query, then `server`. Reading of the directory, as
//! containerd 1.6 does it on Linux (`hostPaths`): `DIR/host_port_`, then `DIR/host:port`, then
//! `DIR/_default`. outpost writes `host:port`, the name containerd's documentation uses.
//!
//! Fallback: when `server` is absent, containerd does not stop at the mirror; it fills in the
//! registry's own default endpoint (`ConfigureHosts` replaces an empty root host with
//! `registry-1.docker.io` or the namespace host). So `--no-fallback` sets `server` to outpost
//! itself (with the same capabilities and CA), which is the only way to keep containerd off the
//! real upstream. containerd may then ask outpost twice for something outpost does not have.
//! A `[host]` table is required all the same: containerd 1.6 rejects a hosts.toml without one
//! and then uses the registry directly. (Checked against Debian's containerd 1.6.20 with
//! `ctr images pull --hosts-dir`: without `server` it went on to the registry after the mirror's
//! 404; with `server` = the mirror it asked the mirror twice and stopped.)
//!
//! The file text is made by [`render`], a pure function; [`plan`] decides which files to write.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::cli::{ContainerdConfigArgs, Failure};
use crate::config::Config;
use crate::route::Registry;

/// The directory name containerd falls back to for a registry with no directory of its own.
pub const DEFAULT_DIR: &str = "_default";

/// Why `containerd-config` cannot write the hosts directory.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("invalid --endpoint {value:?}: {why}; give outpost's URL as containerd reaches it, e.g. https://127.0.0.1:5000")]
    Endpoint { value: String, why: &'static str },

    #[error("--ca {} was given but the endpoint {endpoint} is plain HTTP: use an https:// --endpoint (outpost serving TLS), or leave out --ca", ca.display())]
    CaWithoutTls { ca: PathBuf, endpoint: Endpoint },

    #[error("the CA file {}: {source}; give the ca.pem that `outpost certs generate` wrote", path.display())]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the CA path {} is not valid UTF-8, which hosts.toml cannot hold: move it to a plain path", path.display())]
    NonUtf8Path { path: PathBuf },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// outpost's URL as containerd reaches it: `http(s)://host[:port]`, nothing after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    /// `host[:port]`, IPv6 in brackets.
    authority: String,
}

impl Endpoint {
    /// Parses `https://127.0.0.1:5000` or `http://[::1]:5000`. A path, query, or user info is
    /// refused: containerd appends `/v2` itself.
    pub fn parse(value: &str) -> Result<Endpoint, ContainerdError> {
        let invalid = |why| ContainerdError::Endpoint {
            value: value.to_owned(),
            why,
        };
        let uri: http::Uri = value.parse().map_err(|_| invalid("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("the scheme must be http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials do not belong in the URL"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("it must not have a path or query"));
        }
        if Registry::parse(authority.as_str()).is_none() {
            return Err(invalid("the host is not a host name or IP address"));
        }
        Ok(Endpoint {
            https,
            authority: authority.as_str().to_ascii_lowercase(),
        })
    }

    /// The endpoint for outpost listening on `listen`: an unspecified address (`0.0.0.0`, `::`)
    /// becomes loopback, since containerd runs on the same node.
    pub fn from_listen(listen: SocketAddr, https: bool) -> Endpoint {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Endpoint {
            https,
            authority: SocketAddr::new(ip, listen.port()).to_string(),
        }
    }

    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// The registries containerd should send through outpost, each getting its own directory:
/// the default registry (`docker.io`), the provider registry, the hosts of mapping-rule sources
/// and of infrastructure-image patterns. Canonical (`index.docker.io` is `docker.io`), sorted,
/// without duplicates. External registries are targets outpost fetches from, not names clients
/// pull by, so they get no directory (`_default` covers them).
pub fn known_registries(config: &Config) -> Vec<Registry> {
    let first_segment = |s: &str| s.split('/').next().unwrap_or("").to_owned();
    let mut hosts: Vec<String> = vec![config.default_registry.clone()];
    hosts.extend(config.provider.registry.clone());
    hosts.extend(
        config
            .mapping_rules
            .iter()
            .map(|r| first_segment(&r.source)),
    );
    hosts.extend(
        config
            .infrastructure_images
            .iter()
            .map(|p| first_segment(p))
            // `*` alone, or a repository pattern without a registry, names no host.
            .filter(|h| h.contains('.') || h.contains(':') || h == "localhost"),
    );
    let mut registries: Vec<Registry> = hosts.iter().filter_map(|h| Registry::parse(h)).collect();
    registries.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    registries.dedup();
    registries
}

/// containerd's directory name for a registry: the host, with its port (`10.0.0.9:5000`).
pub fn directory_name(registry: &Registry) -> String {
    registry.as_str().to_owned()
}

/// What to point containerd at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub endpoint: Endpoint,
    /// Absolute path of the CA for `ca = `; only with an https endpoint.
    pub ca: Option<String>,
    /// Write the real upstream as `server` so containerd falls back to it when outpost fails.
    pub fallback: bool,
}

/// One file to write: `DIR/<directory>/hosts.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsFile {
    pub directory: String,
    pub contents: String,
}

/// Every hosts.toml for `registries`, then `_default`.
pub fn plan(registries: &[Registry], settings: &Settings) -> Vec<HostsFile> {
    registries
        .iter()
        .map(|r| HostsFile {
            directory: directory_name(r),
            contents: render(Some(r), settings),
        })
        .chain(std::iter::once(HostsFile {
            directory: DEFAULT_DIR.to_owned(),
            contents: render(None, settings),
        }))
        .collect()
}

/// The text of one hosts.toml: for `registry`, or for `_default` when `None`.
pub fn render(registry: Option<&Registry>, settings: &Settings) -> String {
    let endpoint = settings.endpoint.to_string();
    let name = registry.map_or("every registry without a directory of its own", |r| {
        r.as_str()
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `outpost containerd-config`: pull {name} through outpost."
    );
    let host_block = |out: &mut String, indent: &str| {
        let _ = writeln!(out, "{indent}capabilities = [\"pull\", \"resolve\"]");
        if let Some(ca) = &settings.ca {
            let _ = writeln!(out, "{indent}ca = {}", toml_string(ca));
        }
    };
    if settings.fallback {
        match registry {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "# When outpost fails, containerd falls back to the registry itself."
                );
                let _ = writeln!(
                    out,
                    "server = {}",
                    toml_string(&format!("https://{}", r.api_host()))
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# No `server`: when outpost fails, containerd falls back to each registry itself."
                );
            }
        }
    } else {
        let _ = writeln!(
            out,
            "# No fallback: `server` is outpost too (left out, containerd would use the registry itself)."
        );
        let _ = writeln!(out, "server = {}", toml_string(&endpoint));
        host_block(&mut out, "");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "[host.{}]", toml_string(&endpoint));
    host_block(&mut out, "  ");
    out
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Decides the settings from the arguments and the configuration: the endpoint (`--endpoint`,
/// else `outpost.listen` with https when `outpost.tls` is set) and the CA (`--ca`, else the
/// `ca.pem` next to `outpost.tls.cert` when it exists; never for an http endpoint).
pub fn settings(
    config: &Config,
    endpoint: Option<&str>,
    ca: Option<&Path>,
    no_fallback: bool,
) -> Result<Settings, ContainerdError> {
    let endpoint = match endpoint {
        Some(value) => Endpoint::parse(value)?,
        None => Endpoint::from_listen(config.listen, config.tls.is_some()),
    };
    let ca_file = match ca {
        Some(path) if !endpoint.is_https() => {
            return Err(ContainerdError::CaWithoutTls {
                ca: path.to_path_buf(),
                endpoint,
            })
        }
        Some(path) => Some(path.to_path_buf()),
        None if endpoint.is_https() => config
            .tls
            .as_ref()
            .and_then(|tls| tls.cert.parent().map(|dir| dir.join("ca.pem")))
            .filter(|p| p.is_file()),
        None => None,
    };
    let ca = match ca_file {
        Some(path) => {
            // containerd resolves a relative `ca` against the host directory, not our cwd.
            let absolute = std::path::absolute(&path).map_err(|source| ContainerdError::Ca {
                path: path.clone(),
                source,
            })?;
            std::fs::metadata(&absolute).map_err(|source| ContainerdError::Ca {
                path: absolute.clone(),
                source,
            })?;
            Some(
                absolute
                    .to_str()
                    .ok_or_else(|| ContainerdError::NonUtf8Path {
                        path: absolute.clone(),
                    })?
                    .to_owned(),
            )
        }
        None => None,
    };
    Ok(Settings {
        endpoint,
        ca,
        fallback: !no_fallback,
    })
}

/// Writes every file of `plan` under `out`, replacing existing `hosts.toml` files (each through
/// a temporary file and a rename, so containerd never reads half a file). Returns the paths.
pub fn write(out: &Path, files: &[HostsFile]) -> Result<Vec<PathBuf>, ContainerdError> {
    let mut written = Vec::with_capacity(files.len());
    for file in files {
        let dir = out.join(&file.directory);
        let path = dir.join("hosts.toml");
        let err = |source| ContainerdError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = dir.join(".hosts.toml.tmp");
        std::fs::write(&tmp, &file.contents)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(err)?;
        written.push(path);
    }
    Ok(written)
}

pub fn config_command(args: ContainerdConfigArgs) -> Result<(), Failure> {
    let loaded =
        crate::config::load(&args.config.files).map_err(|e| Failure::Config(e.to_string()))?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let config = &loaded.config;
    let settings = settings(
        config,
        args.endpoint.as_deref(),
        args.ca.as_deref(),
        args.no_fallback,
    )
    .map_err(|e| Failure::Other(e.into()))?;
    if settings.endpoint.is_https() && settings.ca.is_none() {
        eprintln!(
            "warning: no CA for {}: containerd will only trust outpost if its certificate chains to \
             the system roots; pass --ca with the ca.pem of `outpost certs generate`",
            settings.endpoint
        );
    }
    let files = plan(&known_registries(config), &settings);
    let written = write(&args.out, &files).map_err(|e| Failure::Other(e.into()))?;
    print!("{}", summary(&args.out, &written, &settings));
    Ok(())
}

/// What the command prints: the files and how to enable the directory.
fn summary(out: &Path, written: &[PathBuf], settings: &Settings) -> String {
    let dir = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Wrote containerd's hosts directory for {} ({}):",
        settings.endpoint,
        if settings.fallback {
            "falling back to the real registries"
        } else {
            "no fallback"
        }
    );
    for path in written {
        let _ = writeln!(text, "  {}", path.display());
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Enable it in containerd's config.toml (no restart needed for later changes to the directory):"
    );
    let _ = writeln!(text, "  [plugins.\"io.containerd.grpc.v1.cri\".registry]");
    let _ = writeln!(
        text,
        "    config_path = {}",
        toml_string(&dir.to_string_lossy())
    );
    let _ = writeln!(text, "For ctr:");
    let _ = writeln!(
        text,
        "  ctr images pull --hosts-dir {} docker.io/library/alpine:latest",
        dir.display()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MappingRule, TlsFiles};

    fn registry(host: &str) -> Registry {
        Registry::parse(host).unwrap()
    }

    fn https(ca: Option<&str>, fallback: bool) -> Settings {
        Settings {
            endpoint: Endpoint::parse("https://127.0.0.1:5000").unwrap(),
            ca: ca.map(str::to_owned),
            fallback,
        }
    }

    #[test]
    fn docker_io_with_ca_falls_back_to_registry_1() {
        assert_eq!(
            render(
                Some(&registry("docker.io")),
                &https(Some("/etc/outpost/tls/ca.pem"), true)
            ),
            r#"# Written by `outpost containerd-config`: pull docker.io through outpost.
# When outpost fails, containerd falls back to the registry itself.
server = "https://registry-1.docker.io"

[host."https://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/outpost/tls/ca.pem"
"#
        );
    }

    #[test]
    fn quay_io_without_ca() {
        assert_eq!(
            render(Some(&registry("quay.io")), &https(None, true)),
            r#"# Written by `outpost containerd-config`: pull quay.io through outpost.
# When outpost fails, containerd falls back to the registry itself.
server = "https://quay.io"

[host."https://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
"#
        );
    }

    #[test]
    fn no_fallback_makes_outpost_the_server_too() {
        assert_eq!(
            render(
                Some(&registry("10.10.254.254:8000")),
                &https(Some("/tls/ca.pem"), false)
            ),
            r#"# Written by `outpost containerd-config`: pull 10.10.254.254:8000 through outpost.
# No fallback: `server` is outpost too (left out, containerd would use the registry itself).
server = "https://127.0.0.1:5000"
capabilities = ["pull", "resolve"]
ca = "/tls/ca.pem"

[host."https://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/tls/ca.pem"
"#
        );
    }

    #[test]
    fn default_directory_has_no_server_unless_no_fallback() {
        assert_eq!(
            render(None, &https(None, true)),
            r#"# Written by `outpost containerd-config`: pull every registry without a directory of its own through outpost.
# No `server`: when outpost fails, containerd falls back to each registry itself.

[host."https://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
"#
        );
        let plain = Settings {
            endpoint: Endpoint::parse("http://[::1]:5000").unwrap(),
            ca: None,
            fallback: false,
        };
        assert_eq!(
            render(None, &plain),
            r#"# Written by `outpost containerd-config`: pull every registry without a directory of its own through outpost.
# No fallback: `server` is outpost too (left out, containerd would use the registry itself).
server = "http://[::1]:5000"
capabilities = ["pull", "resolve"]

[host."http://[::1]:5000"]
  capabilities = ["pull", "resolve"]
"#
        );
    }

    #[test]
    fn paths_are_toml_escaped() {
        let text = render(None, &https(Some(r#"/odd "dir"\ca.pem"#), true));
        assert!(text.contains(r#"ca = "/odd \"dir\"\\ca.pem""#), "{text}");
    }

    fn config() -> Config {
        Config {
            mapping_rules: vec![
                MappingRule {
                    source: "quay.io/kairos".into(),
                    target: "10.10.254.254:8000/mirror".into(),
                },
                MappingRule {
                    source: "index.docker.io/library".into(),
                    target: "10.10.254.254:8000/hub".into(),
                },
                MappingRule {
                    source: "registry.local:5443".into(),
                    target: "10.10.254.254:8000/local".into(),
                },
            ],
            infrastructure_images: vec!["ghcr.io/spectrocloud/*".into(), "*".into()],
            provider: crate::config::Provider {
                image: Some("quay.io/kairos/core:v1".into()),
                registry: Some("quay.io".into()),
                credentials: None,
                certificates: Vec::new(),
            },
            ..Config::default()
        }
    }

    #[test]
    fn known_registries_come_from_the_configuration() {
        let names: Vec<String> = known_registries(&config())
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        assert_eq!(
            names,
            ["docker.io", "ghcr.io", "quay.io", "registry.local:5443"]
        );
    }

    #[test]
    fn plan_has_one_directory_per_registry_then_default() {
        let files = plan(&known_registries(&config()), &https(None, true));
        let dirs: Vec<&str> = files.iter().map(|f| f.directory.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "docker.io",
                "ghcr.io",
                "quay.io",
                "registry.local:5443",
                "_default"
            ]
        );
        assert!(files[3]
            .contents
            .contains("server = \"https://registry.local:5443\""));
    }

    #[test]
    fn endpoint_defaults_from_listen_and_tls() {
        let mut config = Config {
            listen: "0.0.0.0:5000".parse().unwrap(),
            ..Config::default()
        };
        let s = settings(&config, None, None, false).unwrap();
        assert_eq!(s.endpoint.to_string(), "http://127.0.0.1:5000");
        assert_eq!(s.ca, None);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
        config.listen = "[::]:5443".parse().unwrap();
        config.tls = Some(TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
        });
        let s = settings(&config, None, None, true).unwrap();
        assert_eq!(s.endpoint.to_string(), "https://[::1]:5443");
        assert_eq!(
            s.ca.as_deref(),
            Some(dir.path().join("ca.pem").to_str().unwrap())
        );
        assert!(!s.fallback);
    }

    #[test]
    fn ca_with_a_plain_http_endpoint_is_refused() {
        let err = settings(
            &Config::default(),
            Some("http://127.0.0.1:5000"),
            Some(Path::new("/tls/ca.pem")),
            false,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("--ca /tls/ca.pem"), "{message}");
        assert!(message.contains("https://"), "{message}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = settings(
            &Config::default(),
            Some("https://127.0.0.1:5000"),
            Some(Path::new("/nonexistent/ca.pem")),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn endpoints_are_parsed_at_the_edge() {
        assert_eq!(
            Endpoint::parse("HTTPS://Outpost.Local:5000/")
                .unwrap()
                .to_string(),
            "https://outpost.local:5000"
        );
        for bad in [
            "127.0.0.1:5000",
            "ftp://x:1",
            "https://x:1/v2",
            "https://u:p@x:1",
            "https://x:1?a=b",
            "https://",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn write_creates_each_directory() {
        let out = tempfile::tempdir().unwrap();
        let files = plan(&[registry("registry.local:5443")], &https(None, true));
        let written = write(out.path(), &files).unwrap();
        assert_eq!(
            written,
            [
                out.path().join("registry.local:5443/hosts.toml"),
                out.path().join("_default/hosts.toml")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&written[0]).unwrap(),
            files[0].contents
        );
        let summary = summary(out.path(), &written, &https(None, true));
        assert!(summary.contains("config_path = "), "{summary}");
        assert!(summary.contains("--hosts-dir"), "{summary}");
    }
}
