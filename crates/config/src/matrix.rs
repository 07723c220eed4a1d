//! The support matrix (which features may be combined) and the configuration warnings.
//!
//! | Feature | Can be used with | Cannot be used with |
//! |---|---|---|
//! | Local registry | authenticated external registry, public provider registry | authenticated provider registry |
//! | Authenticated external registry | local registry, public provider registry | authenticated provider registry |
//! | Authenticated provider registry | nothing listed | authenticated external registry, local registry |
//!
//! A forbidden pair is a [`ConfigError::Forbidden`] naming both features, the keys and files that
//! turned each on, and the ways out; both pairs are reported together.

use std::path::Path;

use super::error::{ConfigError, Conflict, Feature};
use super::file::{FileConfig, ParsedFile, ProviderCredentialsSection, RegistrySection};
use super::model::Config;
use super::resolve::{key_in, last_setter};

const LOCAL: &str = "the local registry";
const EXTERNAL: &str = "an authenticated external registry";
const PROVIDER: &str = "an authenticated provider registry";

fn provider_section(f: &FileConfig) -> Option<&ProviderCredentialsSection> {
    f.provider_credentials.as_ref()
}

fn non_empty(s: Option<&str>) -> bool {
    s.is_some_and(|s| !s.is_empty())
}

/// What turned on the authenticated provider registry: `providerCredentials.user`/`password`.
fn provider_keys(merged: &FileConfig, files: &[ParsedFile]) -> Vec<String> {
    let mut keys = Vec::new();
    let section = provider_section(merged);
    if non_empty(section.and_then(|p| p.user.as_deref())) {
        let file = last_setter(files, |f| {
            provider_section(f).is_some_and(|p| p.user.is_some())
        });
        keys.push(key_in("providerCredentials.user", file));
    }
    if non_empty(
        section
            .and_then(|p| p.password.as_ref())
            .map(|p| p.0.as_str()),
    ) {
        let file = last_setter(files, |f| {
            provider_section(f).is_some_and(|p| p.password.is_some())
        });
        keys.push(key_in("providerCredentials.password", file));
    }
    keys
}

fn registry_keys(section: &RegistrySection, key: &str, file: Option<&Path>) -> Vec<String> {
    let mut keys = Vec::new();
    if non_empty(section.username.as_deref()) {
        keys.push(key_in(&format!("{key}.username"), file));
    }
    if non_empty(section.password.as_ref().map(|p| p.0.as_str())) {
        keys.push(key_in(&format!("{key}.password"), file));
    }
    keys
}

/// What turned on an authenticated external registry: usernames and passwords of
/// `registryCredentials` and of `externalRegistries.registries[]`.
fn external_keys(merged: &FileConfig, files: &[ParsedFile]) -> Vec<String> {
    let mut keys = Vec::new();
    let stylus = merged.stylus.as_ref();
    if let Some(section) = stylus.and_then(|s| s.registry_credentials.as_ref()) {
        if section.domain.is_some() {
            let file = last_setter(files, |f| {
                f.stylus
                    .as_ref()
                    .and_then(|s| s.registry_credentials.as_ref())
                    .is_some_and(|r| r.username.is_some() || r.password.is_some())
            });
            keys.extend(registry_keys(section, "stylus.registryCredentials", file));
        }
    }
    let list = stylus
        .and_then(|s| s.external_registries.as_ref())
        .and_then(|e| e.registries.as_ref());
    if let Some(list) = list {
        let file = last_setter(files, |f| {
            f.stylus
                .as_ref()
                .and_then(|s| s.external_registries.as_ref())
                .is_some_and(|e| e.registries.is_some())
        });
        for (i, section) in list.iter().enumerate() {
            if section.domain.is_some() {
                let key = format!("stylus.externalRegistries.registries[{i}]");
                keys.extend(registry_keys(section, &key, file));
            }
        }
    }
    keys
}

fn local_keys(merged: &FileConfig, files: &[ParsedFile]) -> Vec<String> {
    let set = |f: &FileConfig| {
        f.outpost
            .as_ref()
            .and_then(|o| o.local_registry.as_ref())
            .is_some_and(|l| l.enabled.is_some())
    };
    if set(merged) {
        vec![format!(
            "{}: true",
            key_in("outpost.localRegistry.enabled", last_setter(files, set))
        )]
    } else {
        vec![
            "the default (`outpost.localRegistry.enabled` is not set in any file, so it is true)"
                .to_owned(),
        ]
    }
}

/// Refuse the forbidden pairs of the support matrix.
pub fn check(
    config: &Config,
    merged: &FileConfig,
    files: &[ParsedFile],
) -> Result<(), ConfigError> {
    let provider = provider_keys(merged, files);
    if provider.is_empty() {
        return Ok(());
    }
    let provider = Feature {
        name: PROVIDER,
        turned_on_by: provider,
    };
    let remove_provider = "remove `providerCredentials.user` and `providerCredentials.password` (make the provider registry public to outpost)".to_owned();
    let mut conflicts = Vec::new();
    if config.local_registry {
        conflicts.push(Conflict {
            first: Feature {
                name: LOCAL,
                turned_on_by: local_keys(merged, files),
            },
            second: provider.clone(),
            ways_out: vec![
                "set `outpost.localRegistry.enabled: false` (images are then passed through, not stored)".to_owned(),
                remove_provider.clone(),
            ],
        });
    }
    let external = external_keys(merged, files);
    if !external.is_empty() {
        conflicts.push(Conflict {
            first: Feature {
                name: EXTERNAL,
                turned_on_by: external,
            },
            second: provider,
            ways_out: vec![
                "remove the username and password of the external registries listed above"
                    .to_owned(),
                remove_provider,
            ],
        });
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Forbidden(conflicts))
    }
}

/// The warnings of an allowed configuration, one sentence each, saying what to do.
pub fn warnings(config: &Config, merged: &FileConfig, files: &[ParsedFile]) -> Vec<String> {
    let mut warnings = Vec::new();

    if config.provider.credentials.is_some() {
        if let Some(external) = config.external_registry() {
            let keys = provider_keys(merged, files).join(", ");
            warnings.push(format!(
                "provider credentials ({keys}) are unused: every image is fetched through the external registry {} (as Palette documents, provider credentials are then ignored); remove them, or remove the external registry",
                external.host
            ));
        }
    }

    for rule in &config.mapping_rules {
        let host = &rule.target.registry;
        if config.registry_for_host(host).is_none() {
            warnings.push(format!(
                "mapping rule `{}: {}`: the target registry {host} has no entry in `stylus.externalRegistries.registries`, so it is reached anonymously with only the site CAs; add an entry with `domain: {host}` if it needs credentials, certificates or `insecure`",
                rule.source, rule.target
            ));
        }
    }

    let network = merged
        .stylus
        .as_ref()
        .and_then(|s| s.site.as_ref())
        .and_then(|s| s.network.as_ref());
    if let Some(network) = network {
        let no_proxy = network.no_proxy.as_ref().is_some_and(|n| !n.0.is_empty());
        if no_proxy && !network.sets_proxy() {
            warnings.push("`stylus.site.network.noProxy` is set without `httpProxy` or `httpsProxy`: it has no effect, and the proxy of the environment (if any) applies with the environment's NO_PROXY; set the proxy in `stylus.site.network` too".to_owned());
        }
    }

    if config.site.insecure_skip_verify {
        warnings.push("`stylus.site.insecureSkipVerify` is true: every upstream is reached without TLS verification; set it to false and add the upstreams' CAs to `stylus.site.caCerts`".to_owned());
    } else {
        let insecure = config
            .registry_credentials
            .iter()
            .map(|r| ("stylus.registryCredentials".to_owned(), r))
            .chain(
                config
                    .external_registries
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("stylus.externalRegistries.registries[{i}]"), r)),
            )
            .filter(|(_, r)| r.insecure);
        for (key, registry) in insecure {
            warnings.push(format!(
                "the upstream {} (`{key}.insecure: true`) is reached without TLS verification (and may fall back to plain HTTP); set `insecure: false` and give its CA in `certificates`",
                registry.host
            ));
        }
    }

    for file in files {
        if let Some(mode) = loose_mode(&file.path, &file.content) {
            warnings.push(format!(
                "{} holds a password but its mode {mode:04o} lets other users read or change it; run `chmod 600 {}` (or 640 for a trusted group)",
                file.path.display(),
                file.path.display()
            ));
        }
    }
    warnings
}

/// The file's permission bits when it holds a secret and is more open than 0640
/// (group write/execute, or any access by others).
#[cfg(unix)]
fn loose_mode(path: &Path, content: &FileConfig) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    if !content.holds_secret() {
        return None;
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o037 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_: &Path, _: &FileConfig) -> Option<u32> {
    None
}
