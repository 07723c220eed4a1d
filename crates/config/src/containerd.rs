//! containerd's hosts directory (`config_path`) pointing at outpost, as `outpost
//! containerd-config` writes it.
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

use oci::{Registry, ServerUrl, ServerUrlError};

use crate::model::Config;

/// The directory name containerd falls back to for a registry with no directory of its own.
pub const DEFAULT_DIR: &str = "_default";

/// Why `containerd-config` cannot write the hosts directory.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("invalid --endpoint {value:?}: {why}; give outpost's URL as containerd reaches it, e.g. https://127.0.0.1:5000")]
    Endpoint { value: String, why: ServerUrlError },

    #[error("--ca {} was given but the endpoint {endpoint} is plain HTTP: use an https:// --endpoint (outpost serving TLS), or leave out --ca", ca.display())]
    CaWithoutTls { ca: PathBuf, endpoint: Endpoint },

    #[error("--client-cert {} was given but the endpoint {endpoint} is plain HTTP: mutual TLS needs an https:// --endpoint", cert.display())]
    ClientWithoutTls { cert: PathBuf, endpoint: Endpoint },

    #[error("the file {}: {source}; give a file that `outpost certs generate` wrote", path.display())]
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
        let url = ServerUrl::parse(value).map_err(|why| ContainerdError::Endpoint {
            value: value.to_owned(),
            why,
        })?;
        Ok(Endpoint {
            https: url.https,
            authority: url.authority,
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

    /// What to tell the operator when the site has a proxy: containerd (which on such sites
    /// uses the proxy too) must reach outpost directly, so outpost's host belongs in
    /// containerd's `NO_PROXY`. `None` when there is no proxy, when outpost is on loopback (Go
    /// programs such as containerd never send loopback through a proxy) or when `noProxy`
    /// already names it.
    pub fn proxy_hint(&self, config: &Config) -> Option<String> {
        let proxy = config.proxy.as_ref().filter(|p| p.any())?;
        let (host, port) = oci::split_host_port(&self.authority)?;
        let port = port.unwrap_or(if self.https { 443 } else { 80 });
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback || proxy.no_proxy.matches(&host, port) {
            return None;
        }
        Some(format!(
            "a proxy is configured for this site: containerd must reach outpost at {self} \
             directly, so add {host} to containerd's NO_PROXY (on Palette, to \
             `stylus.site.network.noProxy`, which containerd gets as well)"
        ))
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
    let mut registries: Vec<Registry> = vec![config.default_registry.clone()];
    registries.extend(config.provider.registry.clone());
    registries.extend(
        config
            .mapping_rules
            .iter()
            .map(|r| r.source.registry.clone()),
    );
    registries.extend(
        config
            .infrastructure_images
            .iter()
            .map(|p| p.prefix().registry.clone()),
    );
    registries.sort();
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
    /// Absolute paths of the client certificate and key containerd presents (mutual TLS).
    pub client: Option<(String, String)>,
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
        if let Some((cert, key)) = &settings.client {
            let _ = writeln!(
                out,
                "{indent}client = [[{}, {}]]",
                toml_string(cert),
                toml_string(key)
            );
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

/// A TOML string, as the `toml` crate writes (and escapes) it.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// Decides the settings from the arguments and the configuration: the endpoint (`--endpoint`,
/// else `outpost.listen` with https when `outpost.tls` is set) and the CA (`--ca`, else the
/// `ca.pem` next to `outpost.tls.cert` when it exists; never for an http endpoint).
pub fn settings(
    config: &Config,
    endpoint: Option<&str>,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
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
    let ca = ca_file.as_deref().map(existing_absolute).transpose()?;
    let client = match client {
        Some((cert, _)) if !endpoint.is_https() => {
            return Err(ContainerdError::ClientWithoutTls {
                cert: cert.to_path_buf(),
                endpoint,
            })
        }
        Some((cert, key)) => Some((existing_absolute(cert)?, existing_absolute(key)?)),
        None => None,
    };
    Ok(Settings {
        endpoint,
        ca,
        client,
        fallback: !no_fallback,
    })
}

/// An existing file's absolute path as UTF-8: containerd resolves a relative path against the
/// host directory, not our working directory.
fn existing_absolute(path: &Path) -> Result<String, ContainerdError> {
    let absolute = std::path::absolute(path).map_err(|source| ContainerdError::Ca {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::metadata(&absolute).map_err(|source| ContainerdError::Ca {
        path: absolute.clone(),
        source,
    })?;
    absolute
        .to_str()
        .map(str::to_owned)
        .ok_or(ContainerdError::NonUtf8Path { path: absolute })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MappingRule, Provider, TlsFiles};
    use oci::{ImageRef, Prefix, RepoPattern};

    fn registry(host: &str) -> Registry {
        Registry::parse(host).unwrap()
    }

    fn https(ca: Option<&str>, fallback: bool) -> Settings {
        Settings {
            endpoint: Endpoint::parse("https://127.0.0.1:5000").unwrap(),
            ca: ca.map(str::to_owned),
            fallback,
            client: None,
        }
    }

    #[test]
    fn a_proxy_hint_when_containerd_would_send_outpost_through_the_proxy() {
        let mut config = Config::default();
        let node = Endpoint::parse("https://10.0.0.5:5000").unwrap();
        assert_eq!(node.proxy_hint(&config), None, "no proxy");
        config.proxy = Some(oci::ProxySettings {
            http: None,
            https: Some("http://proxy.site.local:3128".parse().unwrap()),
            no_proxy: ".site.local".parse().unwrap(),
            origin: oci::ProxyOrigin::Config,
        });
        let hint = node.proxy_hint(&config).expect("a hint");
        assert!(
            hint.contains("add 10.0.0.5 to containerd's NO_PROXY"),
            "{hint}"
        );
        for direct in [
            "https://127.0.0.1:5000",
            "http://[::1]:5000",
            "https://node.site.local:5000",
        ] {
            let endpoint = Endpoint::parse(direct).unwrap();
            assert_eq!(endpoint.proxy_hint(&config), None, "{direct}");
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
            client: None,
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
    fn a_client_certificate_goes_into_every_host_block() {
        let settings = Settings {
            client: Some(("/tls/node.pem".into(), "/tls/node-key.pem".into())),
            ..https(Some("/tls/ca.pem"), false)
        };
        let text = render(Some(&registry("quay.io")), &settings);
        let parsed: toml::Table = text.parse().unwrap();
        let expected = toml::Value::Array(vec![toml::Value::Array(vec![
            "/tls/node.pem".into(),
            "/tls/node-key.pem".into(),
        ])]);
        assert_eq!(
            parsed["host"]["https://127.0.0.1:5000"]["client"], expected,
            "{text}"
        );
        assert_eq!(
            parsed["client"], expected,
            "the no-fallback server block: {text}"
        );
    }

    #[test]
    fn paths_are_toml_escaped() {
        let path = r#"/odd "dir"\ca.pem"#;
        let text = render(None, &https(Some(path), true));
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(
            parsed["host"]["https://127.0.0.1:5000"]["ca"].as_str(),
            Some(path),
            "{text}"
        );
    }

    fn rule(source: &str, target: &str) -> MappingRule {
        MappingRule {
            source: Prefix::parse(source).unwrap(),
            target: Prefix::parse(target).unwrap(),
        }
    }

    fn config() -> Config {
        Config {
            mapping_rules: vec![
                rule("quay.io/kairos", "10.10.254.254:8000/mirror"),
                rule("index.docker.io/library", "10.10.254.254:8000/hub"),
                rule("registry.local:5443", "10.10.254.254:8000/local"),
            ],
            infrastructure_images: vec![RepoPattern::parse("ghcr.io/spectrocloud/*").unwrap()],
            provider: Provider {
                image: Some(
                    ImageRef::parse("quay.io/kairos/core:v1", &registry("docker.io")).unwrap(),
                ),
                registry: Some(registry("quay.io")),
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
        let s = settings(&config, None, None, None, false).unwrap();
        assert_eq!(s.endpoint.to_string(), "http://127.0.0.1:5000");
        assert_eq!(s.ca, None);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
        config.listen = "[::]:5443".parse().unwrap();
        config.tls = Some(TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
        });
        let s = settings(&config, None, None, None, true).unwrap();
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
            None,
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
            None,
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
    }
}
