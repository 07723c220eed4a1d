//! The resolved configuration: what the rest of outpost reads.
//!
//! `config::load` turns one or more YAML files (Palette user-data, OS-pack values, outpost's own
//! `outpost:` block) into this. Everything here is already validated: hosts are `host[:port]`,
//! PEM blocks parse, base64 passwords are decoded, durations and sizes are numbers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use oci::{Credentials, HostRule, ImageRef, Prefix, Registry, RepoPattern, Secret, Source};

/// One registry outpost may fetch from in place of the source registry
/// (`stylus.registryCredentials`, or an entry of `stylus.externalRegistries.registries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalRegistry {
    /// `host[:port]`, e.g. `10.10.254.254:8000` (canonical: Docker Hub's hosts are `docker.io`).
    pub host: Registry,
    /// The path part of `domain` joined with `repositoryName`, without leading or trailing `/`;
    /// empty when neither is set. `10.10.254.254:8000/spectro-images` gives `spectro-images`.
    pub prefix: String,
    pub credentials: Option<Credentials>,
    /// Extra trusted CAs for this registry, one PEM block (or chain) per entry.
    pub certificates: Vec<String>,
    /// HTTPS without verification, falling back to plain HTTP if the handshake fails.
    pub insecure: bool,
}

/// `registryMappingRules`: a source prefix (`host[/path]`) replaced by a target (`host[/path]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingRule {
    pub source: Prefix,
    pub target: Prefix,
}

/// The provider (OS) image from the OS-pack values, and its registry's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// `options.system.uri`, e.g. `quay.io/kairos/core-ubuntu-20-lts-rke2:v1.25.2-rke2r1`, read
    /// with `outpost.defaultRegistry` as the registry of a name without one.
    pub image: Option<ImageRef>,
    /// The registry host of the provider image: `providerCredentials.registry`, or else the host of `image`.
    pub registry: Option<Registry>,
    pub credentials: Option<Credentials>,
    pub certificates: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `cache.maxSize` in bytes; `None` means unlimited.
    pub max_size: Option<u64>,
    /// `cache.tagTtl`: how long a tag answer is served without asking the upstream.
    pub tag_ttl: Duration,
    /// `cache.fillTimeout`: the longest one upstream download may take.
    pub fill_timeout: Duration,
    /// `cache.minFree`: space the store leaves free on the data dir's file system.
    pub min_free: Reserve,
}

/// Space left free on the data dir's file system (`cache.minFree`): a download into the store
/// stops, and a manifest is passed through unstored, rather than eat into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// A size, e.g. `2GiB`.
    Bytes(u64),
    /// A share of the file system, e.g. `10%`.
    Percent(u8),
    /// The default: 5 % of the file system, at most 1 GiB.
    Default,
}

impl Reserve {
    /// The reserve in bytes on a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(bytes) => bytes,
            Reserve::Percent(percent) => total / 100 * u64::from(percent),
            Reserve::Default => (total / 20).min(1 << 30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// `upstream.connectTimeout`
    pub connect: Duration,
    /// `upstream.responseTimeout`: until the response headers arrive.
    pub response_header: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The registries users pull public images from: the hosts outpost may fetch from, besides
/// those the configuration names, when `outpost.upstream.allowedHosts` is not set.
pub const PUBLIC_REGISTRIES: &[&str] = &[
    "registry-1.docker.io",
    "quay.io",
    "ghcr.io",
    "gcr.io",
    ".gcr.io",
    ".pkg.dev",
    "registry.k8s.io",
    "public.ecr.aws",
    "mcr.microsoft.com",
    "registry.gitlab.com",
    "nvcr.io",
    "docker.elastic.co",
];

/// Who may pull: the client authentication of the registry listener.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientAuth {
    /// `outpost.tls.clientCa`: clients must present a certificate this CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// `outpost.auth.htpasswd`: clients must send Basic credentials of this file (bcrypt).
    pub htpasswd: Option<PathBuf>,
    /// `outpost.auth.anonymous`: serve a non-loopback address with neither of the above.
    pub anonymous: bool,
}

impl ClientAuth {
    /// Whether a client must authenticate at all.
    pub fn required(&self) -> bool {
        self.client_ca.is_some() || self.htpasswd.is_some()
    }
}

/// The site-wide TLS settings for every upstream (`stylus.site`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Site {
    pub ca_certs: Vec<String>,
    pub insecure_skip_verify: bool,
}

/// Everything outpost was configured with, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The registry of a name with no registry host in it (`docker.io`).
    pub default_registry: Registry,
    /// `outpost.localRegistry.enabled`: store content in the embedded store.
    pub local_registry: bool,
    pub cache: CacheConfig,
    /// Repository patterns (`host/path`, a trailing `/*` or `*` matches everything below) that are
    /// streamed but never stored. Defaults to the provider image's repository.
    pub infrastructure_images: Vec<RepoPattern>,
    pub tls: Option<TlsFiles>,
    /// Who may pull (mutual TLS, htpasswd).
    pub client_auth: ClientAuth,
    pub upstream: UpstreamTimeouts,
    /// `outpost.upstream.allowedHosts`: the hosts outpost may fetch from besides those the
    /// configuration names; `None`: [`PUBLIC_REGISTRIES`].
    pub allowed_hosts: Option<Vec<HostRule>>,
    /// `stylus.registryCredentials`: the single external registry, when set.
    pub registry_credentials: Option<ExternalRegistry>,
    /// `stylus.externalRegistries.registries`.
    pub external_registries: Vec<ExternalRegistry>,
    /// `stylus.externalRegistries.registryMappingRules`, in file order.
    pub mapping_rules: Vec<MappingRule>,
    pub site: Site,
    /// The site's HTTP proxy: `stylus.site.network`, or else the environment (`HTTPS_PROXY`, …,
    /// applied by [`crate::Loaded::apply_proxy_environment`]); `None`: every upstream directly.
    pub proxy: Option<oci::ProxySettings>,
    pub provider: Provider,
    /// `outpost.admin.listen`: where the admin endpoints (metrics, health) listen, when set.
    pub admin_listen: Option<SocketAddr>,
    /// `outpost.sharedStore`: the site's S3 bucket behind the node's store, when set.
    pub shared_store: Option<SharedStoreConfig>,
    /// `outpost.workerThreads`: the threads that run connections and downloads; `None`: one
    /// per core, less one (see `outpost serve`).
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

/// `outpost.sharedStore`, validated: every node of a site shares blobs, manifests and tag
/// records in one bucket of an S3-compatible engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStoreConfig {
    /// `http://host:port` or `https://host:port` of the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    /// From `secretAccessKey`, or read from `secretAccessKeyFile`.
    pub secret_access_key: Secret,
    /// `""` or a key prefix ending in `/`.
    pub prefix: String,
    /// `sharedStore.maxSize`: gc removes the oldest blobs beyond it.
    pub max_size: Option<u64>,
    /// Every request to the shared store (connect, response headers, a pause in a body).
    pub timeout: Duration,
}

/// The default region: Garage's.
pub const DEFAULT_SHARED_REGION: &str = "garage";
/// The default timeout of a shared store request.
pub const DEFAULT_SHARED_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./outpost-data"),
            default_registry: Registry::docker_hub(),
            local_registry: true,
            cache: CacheConfig {
                max_size: None,
                tag_ttl: Duration::from_secs(300),
                fill_timeout: Duration::from_secs(3600),
                min_free: Reserve::Default,
            },
            infrastructure_images: Vec::new(),
            tls: None,
            client_auth: ClientAuth::default(),
            upstream: UpstreamTimeouts {
                connect: Duration::from_secs(10),
                response_header: Duration::from_secs(60),
            },
            allowed_hosts: None,
            registry_credentials: None,
            external_registries: Vec::new(),
            mapping_rules: Vec::new(),
            site: Site::default(),
            proxy: None,
            provider: Provider {
                image: None,
                registry: None,
                credentials: None,
                certificates: Vec::new(),
            },
            admin_listen: None,
            shared_store: None,
            worker_threads: None,
        }
    }
}

impl Config {
    /// The external registry that carries every image not matched by a mapping rule:
    /// `registryCredentials`, or else the first of `externalRegistries.registries`.
    pub fn external_registry(&self) -> Option<&ExternalRegistry> {
        self.registry_credentials
            .as_ref()
            .or_else(|| self.external_registries.first())
    }

    /// The `externalRegistries` entry (or `registryCredentials`) for a target registry.
    pub fn registry_for_host(&self, host: &Registry) -> Option<&ExternalRegistry> {
        self.registry_for(host, "")
    }

    /// The entry for `repository` on the registry `host`: of the entries on that host, the one
    /// whose path (`domain`'s path and `repositoryName`) is the longest prefix of `repository`
    /// at a `/` boundary, so that two projects of one Harbor each get their own robot account;
    /// else the first entry on that host.
    pub fn registry_for(&self, host: &Registry, repository: &str) -> Option<&ExternalRegistry> {
        let on_host = || {
            self.external_registries
                .iter()
                .chain(self.registry_credentials.iter())
                .filter(move |r| r.host == *host)
        };
        let under = |prefix: &str| {
            !prefix.is_empty()
                && repository
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        on_host()
            .filter(|r| under(&r.prefix))
            .fold(None, |best: Option<&ExternalRegistry>, r| match best {
                Some(b) if b.prefix.len() >= r.prefix.len() => Some(b),
                _ => Some(r),
            })
            .or_else(|| on_host().next())
    }

    /// Whether outpost may connect to the upstream `host` (`host[:port]`): a registry the
    /// configuration names (external registries, mapping-rule targets, the provider and the
    /// default registry, infrastructure images), or one of `upstream.allowedHosts` (by default
    /// [`PUBLIC_REGISTRIES`]). Anything else a client names in a path or `?ns=` is refused before
    /// a connection is made, so outpost cannot be made to probe the node's networks.
    pub fn allows_upstream(&self, host: &str) -> bool {
        let named = |registry: &Registry| registry.api_host().eq_ignore_ascii_case(host);
        let configured = self
            .registry_credentials
            .iter()
            .chain(&self.external_registries)
            .map(|r| &r.host)
            .chain(self.mapping_rules.iter().map(|r| &r.target.registry))
            .chain(self.provider.registry.iter())
            .chain(std::iter::once(&self.default_registry))
            .chain(
                self.infrastructure_images
                    .iter()
                    .map(|p| &p.prefix().registry),
            )
            .any(named);
        if configured {
            return true;
        }
        match &self.allowed_hosts {
            Some(rules) => rules.iter().any(|rule| rule.matches(host)),
            None => PUBLIC_REGISTRIES
                .iter()
                .filter_map(|rule| rule.parse::<HostRule>().ok())
                .any(|rule| rule.matches(host)),
        }
    }

    /// `Err` (what to say) when outpost may not connect to `host` ([`Config::allows_upstream`]).
    pub fn check_upstream(&self, host: &str) -> Result<(), String> {
        if self.allows_upstream(host) {
            return Ok(());
        }
        Err(format!(
            "outpost does not fetch from {host}: it is neither a registry of the configuration \
             nor in `outpost.upstream.allowedHosts`; add it there (or configure the registry) if \
             it should be reached"
        ))
    }

    /// Why this configuration cannot be served as it stands (checked once the command line has
    /// been applied): mutual TLS without TLS, or a listen address beyond this machine with no
    /// client authentication and no explicit `outpost.auth.anonymous: true` (which would expose
    /// the stored credentials and the store to anyone who reaches the port). `None` when fine.
    pub fn serving_problem(&self) -> Option<String> {
        if self.client_auth.client_ca.is_some() && self.tls.is_none() {
            return Some(
                "`outpost.tls.clientCa` asks for mutual TLS, but outpost does not serve TLS: set \
                 `outpost.tls.cert` and `outpost.tls.key` (or --tls-cert and --tls-key)"
                    .to_owned(),
            );
        }
        let ip = self.listen.ip();
        if ip.is_loopback() || self.client_auth.required() || self.client_auth.anonymous {
            return None;
        }
        Some(format!(
            "outpost would listen on {} (beyond this machine) with no client authentication: \
             anyone who reaches the port could pull through the stored credentials and read \
             the store. Set `outpost.tls.clientCa` (mutual TLS) or `outpost.auth.htpasswd`, or \
             say `outpost.auth.anonymous: true` to serve everyone on purpose",
            self.listen
        ))
    }

    /// Whether `source` is an infrastructure image (`outpost.infrastructureImages`): streamed,
    /// never stored. The one place that decides it.
    pub fn is_infrastructure(&self, source: &Source) -> bool {
        self.infrastructure_images.iter().any(|p| p.matches(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_the_configuration_names_or_allows() {
        let mut config = Config::default();
        for public in [
            "registry-1.docker.io",
            "quay.io",
            "us.gcr.io",
            "europe-docker.pkg.dev",
        ] {
            assert!(config.allows_upstream(public), "{public}");
        }
        for other in [
            "127.0.0.1:22",
            "10.0.0.5:5000",
            "localhost:6379",
            "gcr.io.evil.example",
        ] {
            assert!(!config.allows_upstream(other), "{other}");
            assert!(config
                .check_upstream(other)
                .unwrap_err()
                .contains("allowedHosts"));
        }
        config.external_registries.push(ExternalRegistry {
            host: Registry::parse("10.10.254.254:8000").unwrap(),
            prefix: String::new(),
            credentials: None,
            certificates: Vec::new(),
            insecure: true,
        });
        config.default_registry = Registry::parse("registry.local:5000").unwrap();
        assert!(config.allows_upstream("10.10.254.254:8000"));
        assert!(config.allows_upstream("registry.local:5000"));
        assert!(!config.allows_upstream("registry.local:5001"));
        config.allowed_hosts = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(config.allows_upstream("10.0.0.5:5000"));
        assert!(
            !config.allows_upstream("quay.io"),
            "the list replaces the public registries"
        );
        assert!(
            config.allows_upstream("10.10.254.254:8000"),
            "configured ones stay"
        );
    }
}
