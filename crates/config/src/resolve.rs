//! From the merged files to the resolved [`Config`]: defaults filled in, base64 passwords
//! decoded, prefixes joined, the provider registry derived.
//!
//! What needs more than one key (`encodedPassword` with `password`, `tls.cert` with `tls.key`)
//! is checked here; an error names the file that last set the key.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::error::ConfigError;
use super::file::{FileConfig, ParsedFile, RegistrySection, SharedStoreSection};
use super::model::*;
use oci::{Credentials, ImageRef, RepoPattern, Secret};

use super::values::{join, repository_path, CertPem, ProxyUrlText};

/// The file that last set what `is_set` looks at (the file whose value won the merge).
pub fn last_setter(files: &[ParsedFile], is_set: impl Fn(&FileConfig) -> bool) -> Option<&Path> {
    files
        .iter()
        .rev()
        .find(|f| is_set(&f.content))
        .map(|f| f.path.as_path())
}

/// `KEY in FILE`, or just `KEY` when no file set it.
pub fn key_in(key: &str, file: Option<&Path>) -> String {
    match file {
        Some(file) => format!("`{key}` in {}", file.display()),
        None => format!("`{key}` (default)"),
    }
}

fn pems(certs: Option<&[CertPem]>) -> Vec<String> {
    certs
        .unwrap_or_default()
        .iter()
        .map(|c| c.pem.clone())
        .collect()
}

/// Resolve one external registry section. `key` is its key path
/// (`stylus.registryCredentials`, `stylus.externalRegistries.registries[0]`).
fn external_registry(
    section: &RegistrySection,
    key: &str,
    file_of: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Option<ExternalRegistry>, ConfigError> {
    let value_error = |field: &str, problem: String| ConfigError::Value {
        file: file_of(field).unwrap_or_default(),
        key: format!("{key}.{field}"),
        line: None,
        problem,
    };
    let Some(domain) = &section.domain else {
        if section.authenticated() || section.repository_name.is_some() {
            // Named after the file holding the section, since no file set `domain`.
            return Err(ConfigError::Value {
                file: file_of("").unwrap_or_default(),
                key: format!("{key}.domain"),
                line: None,
                problem: "missing: a registry with credentials or a repositoryName needs `domain: host[:port][/path]`".to_owned(),
            });
        }
        return Ok(None);
    };
    let repository_name = section.repository_name.as_deref().unwrap_or("").trim();
    let repository_name = repository_name.trim_matches('/');
    if !repository_name.is_empty() {
        repository_path(repository_name, repository_name)
            .map_err(|problem| value_error("repositoryName", problem))?;
    }
    let username = section.username.clone().unwrap_or_default();
    let raw_password = section
        .password
        .as_ref()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let password = if section.encoded_password == Some(true) && !raw_password.is_empty() {
        let compact: String = raw_password.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| {
                value_error(
                    "password",
                    format!("is not valid base64, but `{key}.encodedPassword` is true; base64-encode the password (`printf %s PASSWORD | base64`) or set `encodedPassword: false`"),
                )
            })?;
        String::from_utf8(decoded).map_err(|_| {
            value_error(
                "password",
                "decodes from base64 to bytes that are not UTF-8 text; base64-encode the password text itself".to_owned(),
            )
        })?
    } else {
        raw_password
    };
    let credentials = (!username.is_empty() || !password.is_empty()).then(|| Credentials {
        username,
        password: Secret::new(password),
    });
    Ok(Some(ExternalRegistry {
        host: domain.host.clone(),
        prefix: join(&[&domain.path, repository_name]),
        credentials,
        certificates: pems(section.certificates.as_ref().map(|c| c.0.as_slice())),
        insecure: section.insecure.unwrap_or(false),
    }))
}

/// `outpost.sharedStore`, checked: endpoint, bucket and both halves of the key are required.
fn shared_store(
    section: &SharedStoreSection,
    files: &[ParsedFile],
) -> Result<SharedStoreConfig, ConfigError> {
    let file_of = |is_set: fn(&SharedStoreSection) -> bool| {
        last_setter(files, |f| {
            f.outpost
                .as_ref()
                .and_then(|o| o.shared_store.as_ref())
                .is_some_and(is_set)
        })
        .map(Path::to_owned)
        .unwrap_or_default()
    };
    let section_file = file_of(|_| true);
    let problem = |key: &str, file: PathBuf, problem: String| ConfigError::Value {
        file,
        key: format!("outpost.sharedStore.{key}"),
        line: None,
        problem,
    };
    let required = |key: &str, value: &Option<String>, example: &str| match value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(v) => Ok(v.to_owned()),
        None => Err(problem(
            key,
            section_file.clone(),
            format!("missing: the shared store needs it (for example `{key}: {example}`)"),
        )),
    };
    let endpoint = required("endpoint", &section.endpoint, "http://127.0.0.1:3900")?;
    if !is_endpoint(&endpoint) {
        return Err(problem(
            "endpoint",
            file_of(|s| s.endpoint.is_some()),
            format!(
                "{endpoint:?} is not an S3 API address: write `http://host:port` or \
                 `https://host:port`, without a path"
            ),
        ));
    }
    let bucket = required("bucket", &section.bucket, "outpost")?;
    let access_key_id = required(
        "accessKeyId",
        &section.access_key_id,
        "GK31c2f218a2e44f485b94239e",
    )?;
    let secret = match (&section.secret_access_key, &section.secret_access_key_file) {
        (Some(_), Some(_)) => {
            return Err(problem(
                "secretAccessKeyFile",
                file_of(|s| s.secret_access_key_file.is_some()),
                "both `secretAccessKey` and `secretAccessKeyFile` are set: keep one".to_owned(),
            ))
        }
        (Some(secret), None) => secret.0.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                problem(
                    "secretAccessKeyFile",
                    file_of(|s| s.secret_access_key_file.is_some()),
                    format!(
                        "cannot read {}: {e}; check the path and that outpost may read it",
                        path.display()
                    ),
                )
            })?
            .trim()
            .to_owned(),
        (None, None) => String::new(),
    };
    if secret.is_empty() {
        return Err(problem(
            "secretAccessKey",
            section_file.clone(),
            "missing: give the key's secret as `secretAccessKey`, or a file holding it as \
             `secretAccessKeyFile`"
                .to_owned(),
        ));
    }
    let prefix = section
        .prefix
        .as_deref()
        .unwrap_or("")
        .trim_matches('/')
        .to_owned();
    if prefix
        .split('/')
        .any(|p| p == "." || p == ".." || (p.is_empty() && !prefix.is_empty()))
        || prefix.chars().any(|c| c.is_control())
    {
        return Err(problem(
            "prefix",
            file_of(|s| s.prefix.is_some()),
            format!("{prefix:?} is not a usable key prefix: use path segments such as `site-a/`"),
        ));
    }
    Ok(SharedStoreConfig {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        region: section
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SHARED_REGION.to_owned()),
        bucket,
        access_key_id,
        secret_access_key: Secret::new(secret),
        prefix: if prefix.is_empty() {
            prefix
        } else {
            format!("{prefix}/")
        },
        max_size: section.max_size.map(|s| s.0),
        timeout: section
            .timeout
            .map(|t| t.0)
            .unwrap_or(DEFAULT_SHARED_TIMEOUT),
    })
}

/// `http(s)://host[:port]` with nothing after it but an optional `/`.
fn is_endpoint(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && oci::split_host_port(authority).is_some()
}

/// Build the [`Config`] from the merged content of `files`.
pub fn resolve(merged: &FileConfig, files: &[ParsedFile]) -> Result<Config, ConfigError> {
    let mut config = Config::default();

    if let Some(o) = &merged.outpost {
        if let Some(listen) = o.listen {
            config.listen = listen.0;
        }
        if let Some(dir) = &o.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(registry) = &o.default_registry {
            config.default_registry = registry.0.clone();
        }
        if let Some(enabled) = o.local_registry.as_ref().and_then(|l| l.enabled) {
            config.local_registry = enabled;
        }
        if let Some(cache) = &o.cache {
            if let Some(size) = cache.max_size {
                config.cache.max_size = Some(size.0);
            }
            if let Some(ttl) = cache.tag_ttl {
                config.cache.tag_ttl = ttl.0;
            }
            if let Some(timeout) = cache.fill_timeout {
                config.cache.fill_timeout = timeout.0;
            }
            if let Some(reserve) = cache.min_free {
                config.cache.min_free = reserve.0;
            }
        }
        if let Some(up) = &o.upstream {
            if let Some(t) = up.connect_timeout {
                config.upstream.connect = t.0;
            }
            if let Some(t) = up.response_timeout {
                config.upstream.response_header = t.0;
            }
            if let Some(rules) = &up.allowed_hosts {
                config.allowed_hosts = Some(rules.iter().map(|r| r.0.clone()).collect());
            }
        }
        config.worker_threads = o.worker_threads.map(|w| w.0);
        config.admin_listen = o.admin.as_ref().and_then(|a| a.listen).map(|l| l.0);
        if let Some(tls) = &o.tls {
            let tls_file = |pick: fn(&super::file::TlsSection) -> bool| {
                last_setter(files, |f| {
                    f.outpost
                        .as_ref()
                        .and_then(|o| o.tls.as_ref())
                        .is_some_and(pick)
                })
                .map(Path::to_owned)
                .unwrap_or_default()
            };
            config.tls = match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::Value {
                        file: tls_file(|t| t.cert.is_some()),
                        key: "outpost.tls.key".to_owned(),
                        line: None,
                        problem: "missing: `outpost.tls.cert` is set, so give its private key file too (or remove `tls.cert`)".to_owned(),
                    })
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Value {
                        file: tls_file(|t| t.key.is_some()),
                        key: "outpost.tls.cert".to_owned(),
                        line: None,
                        problem: "missing: `outpost.tls.key` is set, so give its certificate chain file too (or remove `tls.key`)".to_owned(),
                    })
                }
            };
            // Whether TLS is served is known after the command line (`--tls-cert`): see
            // `Config::serving_problem`.
            config.client_auth.client_ca = tls.client_ca.clone();
        }
        if let Some(auth) = &o.auth {
            config.client_auth.htpasswd = auth.htpasswd.clone();
            config.client_auth.anonymous = auth.anonymous.unwrap_or(false);
        }
        if let Some(section) = &o.shared_store {
            config.shared_store = Some(shared_store(section, files)?);
        }
    }

    let stylus = merged.stylus.as_ref();
    if let Some(section) = stylus.and_then(|s| s.registry_credentials.as_ref()) {
        let file_of = |field: &str| {
            last_setter(files, |f| {
                f.stylus
                    .as_ref()
                    .and_then(|s| s.registry_credentials.as_ref())
                    .is_some_and(|r| match field {
                        "password" => r.password.is_some(),
                        "domain" => r.domain.is_some(),
                        "repositoryName" => r.repository_name.is_some(),
                        _ => true,
                    })
            })
            .map(Path::to_owned)
        };
        config.registry_credentials =
            external_registry(section, "stylus.registryCredentials", &file_of)?;
    }
    let external = stylus.and_then(|s| s.external_registries.as_ref());
    if let Some(registries) = external.and_then(|e| e.registries.as_ref()) {
        let list_file = last_setter(files, |f| {
            f.stylus
                .as_ref()
                .and_then(|s| s.external_registries.as_ref())
                .is_some_and(|e| e.registries.is_some())
        })
        .map(Path::to_owned);
        for (i, section) in registries.iter().enumerate() {
            let key = format!("stylus.externalRegistries.registries[{i}]");
            if let Some(r) = external_registry(section, &key, &|_| list_file.clone())? {
                config.external_registries.push(r);
            }
        }
    }
    if let Some(rules) = external.and_then(|e| e.registry_mapping_rules.as_ref()) {
        config.mapping_rules = rules
            .0
            .iter()
            .map(|(source, target)| MappingRule {
                source: source.0.clone(),
                target: target.0.clone(),
            })
            .collect();
    }
    if let Some(site) = stylus.and_then(|s| s.site.as_ref()) {
        config.site = Site {
            ca_certs: pems(site.ca_certs.as_ref().map(|c| c.0.as_slice())),
            insecure_skip_verify: site.insecure_skip_verify.unwrap_or(false),
        };
        if let Some(network) = site.network.as_ref().filter(|n| n.sets_proxy()) {
            let url = |p: &Option<ProxyUrlText>| p.as_ref().and_then(|p| p.0.clone());
            config.proxy = Some(oci::ProxySettings {
                http: url(&network.http_proxy),
                https: url(&network.https_proxy),
                no_proxy: network
                    .no_proxy
                    .as_ref()
                    .map(|n| n.0.clone())
                    .unwrap_or_default(),
                origin: oci::ProxyOrigin::Config,
            });
        }
    }

    // Checked when the file was parsed; read again with the configured default registry.
    let image = match merged.options.as_ref().and_then(|o| o.system_uri.as_ref()) {
        Some(text) => Some(
            ImageRef::parse(&text.0, &config.default_registry).map_err(|e| ConfigError::Value {
                file: last_setter(files, |f| {
                    f.options.as_ref().is_some_and(|o| o.system_uri.is_some())
                })
                .map(Path::to_owned)
                .unwrap_or_default(),
                key: "options.system.uri".to_owned(),
                line: None,
                problem: e.to_string(),
            })?,
        ),
        None => None,
    };
    let provider = merged.provider_credentials.as_ref();
    let user = provider.and_then(|p| p.user.clone()).unwrap_or_default();
    let password = provider
        .and_then(|p| p.password.as_ref())
        .map(|p| p.0.clone())
        .unwrap_or_default();
    config.provider = Provider {
        registry: provider
            .and_then(|p| p.registry.as_ref())
            .map(|r| r.0.clone())
            .or_else(|| image.as_ref().map(|i| i.source.registry.clone())),
        credentials: (!user.is_empty() || !password.is_empty()).then(|| Credentials {
            username: user,
            password: Secret::new(password),
        }),
        certificates: pems(
            provider
                .and_then(|p| p.certificates.as_ref())
                .map(|c| c.0.as_slice()),
        ),
        image,
    };

    config.infrastructure_images = match merged
        .outpost
        .as_ref()
        .and_then(|o| o.infrastructure_images.as_ref())
    {
        Some(patterns) => patterns.iter().map(|p| p.0.clone()).collect(),
        // The provider image's repository, exactly.
        None => config
            .provider
            .image
            .iter()
            .filter_map(|i| RepoPattern::parse(&i.source.to_string()).ok())
            .collect(),
    };

    Ok(config)
}
