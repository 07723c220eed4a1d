//! Translation: from the *source* a client asked for (`quay.io` + `kairos/core`) to the *target*
//! outpost fetches from (endpoint, remote repository, credentials, TLS settings).
//!
//! A pure function of the configuration and the source; see [`translate`].

use oci::{is_loopback, Credentials, Registry, Source, Target, TlsPolicy};

use crate::model::{Config, ExternalRegistry};
use crate::values::join;

/// Translates a source repository to the target outpost fetches it from, in this order:
///
/// 1. `registryMappingRules`: the longest rule whose source is a prefix of `host/repository` at a
///    `/` boundary; its target replaces the matched part. Credentials, certificates and `insecure`
///    come from the `externalRegistries` entry of the target host.
/// 2. the external registry (`registryCredentials`, else the first of `externalRegistries`): the
///    whole source goes under its `domain` path and `repositoryName`.
/// 3. the source registry itself, with `providerCredentials` when it is the provider registry.
///
/// Loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) are treated as insecure registries, as
/// Docker and containerd do.
pub fn translate(config: &Config, source: &Source) -> Target {
    translate_path(config, &source.registry, source.repository.as_str())
}

/// [`translate`] for a source *prefix*: a registry and a path below it, which may be empty (the
/// whole registry) or a part of a repository name. The routing table of `outpost check` shows
/// these.
pub fn translate_path(config: &Config, registry: &Registry, path: &str) -> Target {
    let full = join(&[registry.as_str(), path]);
    if let Some((rule_target, rest)) = longest_rule(config, &full) {
        let repository = join(&[rule_target.path.as_ref().map_or("", |p| p.as_str()), rest]);
        return match config.registry_for(&rule_target.registry, &repository) {
            Some(registry) => via(config, registry, repository),
            None => direct(
                config,
                rule_target.registry.api_host().to_owned(),
                repository,
                None,
                &[],
                false,
            ),
        };
    }
    if let Some(external) = config.external_registry() {
        let repository = join(&[&external.prefix, registry.as_str(), path]);
        return via(config, external, repository);
    }
    let provider = &config.provider;
    let (credentials, certificates) = if provider.registry.as_ref() == Some(registry) {
        (provider.credentials.clone(), &provider.certificates[..])
    } else {
        (None, &[][..])
    };
    direct(
        config,
        registry.api_host().to_owned(),
        path.to_owned(),
        credentials,
        certificates,
        false,
    )
}

/// The mapping rule with the longest source that is a prefix of `full` at a `/` boundary, as
/// (rule target, the rest of `full` after the prefix).
fn longest_rule<'a>(config: &'a Config, full: &'a str) -> Option<(&'a oci::Prefix, &'a str)> {
    config
        .mapping_rules
        .iter()
        .filter_map(|rule| {
            let rest = rule.source.strip(full)?;
            Some((full.len() - rest.len(), &rule.target, rest))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, target, rest)| (target, rest))
}

fn via(config: &Config, registry: &ExternalRegistry, repository: String) -> Target {
    direct(
        config,
        registry.host.api_host().to_owned(),
        repository,
        registry.credentials.clone(),
        &registry.certificates,
        registry.insecure,
    )
}

fn direct(
    config: &Config,
    host: String,
    repository: String,
    credentials: Option<Credentials>,
    certificates: &[String],
    insecure: bool,
) -> Target {
    let extra_cas = config
        .site
        .ca_certs
        .iter()
        .chain(certificates)
        .cloned()
        .collect();
    let insecure = insecure || config.site.insecure_skip_verify || is_loopback(&host);
    Target {
        host,
        repository,
        credentials,
        tls: TlsPolicy {
            insecure,
            extra_cas,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MappingRule;
    use oci::{Prefix, Repository, Secret};

    fn src(s: &str) -> Source {
        let (host, repo) = s.split_once('/').unwrap();
        Source {
            registry: Registry::parse(host).unwrap(),
            repository: Repository::parse(repo).unwrap(),
        }
    }

    fn rule(source: &str, target: &str) -> MappingRule {
        MappingRule {
            source: Prefix::parse(source).unwrap(),
            target: Prefix::parse(target).unwrap(),
        }
    }

    fn creds(user: &str) -> Option<Credentials> {
        Some(Credentials {
            username: user.into(),
            password: Secret::new("pw"),
        })
    }

    fn external(host: &str, prefix: &str, user: &str) -> ExternalRegistry {
        ExternalRegistry {
            host: Registry::parse(host).unwrap(),
            prefix: prefix.into(),
            credentials: creds(user),
            certificates: vec![format!("CA of {host}")],
            insecure: false,
        }
    }

    fn target(config: &Config, s: &str) -> (String, String, Option<String>) {
        let t = translate(config, &src(s));
        (t.host, t.repository, t.credentials.map(|c| c.username))
    }

    #[test]
    fn external_registry_prefixes_the_whole_source() {
        let config = Config {
            registry_credentials: Some(external("10.10.254.254:8000", "spectro-images", "ubuntu")),
            ..Config::default()
        };
        assert_eq!(
            target(&config, "quay.io/kairos/core-ubuntu-20-lts-rke2"),
            (
                "10.10.254.254:8000".into(),
                "spectro-images/quay.io/kairos/core-ubuntu-20-lts-rke2".into(),
                Some("ubuntu".into())
            )
        );
        assert_eq!(
            target(&config, "docker.io/library/alpine").1,
            "spectro-images/docker.io/library/alpine"
        );
        let t = translate(&config, &src("quay.io/a"));
        assert_eq!(t.tls.extra_cas, vec!["CA of 10.10.254.254:8000".to_owned()]);
        assert!(!t.tls.insecure);
    }

    #[test]
    fn first_external_registry_when_no_registry_credentials() {
        let config = Config {
            external_registries: vec![
                external("registry.example.com", "palette-images", "robot"),
                external("other.example.com", "", "other"),
            ],
            ..Config::default()
        };
        assert_eq!(
            target(&config, "ghcr.io/org/app"),
            (
                "registry.example.com".into(),
                "palette-images/ghcr.io/org/app".into(),
                Some("robot".into())
            )
        );
    }

    #[test]
    fn mapping_rules_longest_match_at_a_slash_boundary() {
        let config = Config {
            external_registries: vec![
                external("registry.example.com", "", "robot"),
                external("mirror.example.com", "", "mirror"),
            ],
            mapping_rules: vec![
                rule(
                    "us-docker.pkg.dev/palette-images",
                    "registry.example.com/palette-images",
                ),
                rule(
                    "us-docker.pkg.dev/palette-images/edge",
                    "mirror.example.com/edge-mirror",
                ),
                rule("index.docker.io/library", "unlisted.example.com/hub"),
            ],
            ..Config::default()
        };
        assert_eq!(
            target(&config, "us-docker.pkg.dev/palette-images/a/b"),
            (
                "registry.example.com".into(),
                "palette-images/a/b".into(),
                Some("robot".into())
            )
        );
        assert_eq!(
            target(&config, "us-docker.pkg.dev/palette-images/edge/x"),
            (
                "mirror.example.com".into(),
                "edge-mirror/x".into(),
                Some("mirror".into())
            )
        );
        // `palette-images-2` does not match `palette-images` (no `/` boundary): the external
        // registry (the first entry) carries it instead.
        assert_eq!(
            target(&config, "us-docker.pkg.dev/palette-images-2/a"),
            (
                "registry.example.com".into(),
                "us-docker.pkg.dev/palette-images-2/a".into(),
                Some("robot".into())
            )
        );
        // A target host with no externalRegistries entry: anonymous.
        assert_eq!(
            target(&config, "docker.io/library/alpine"),
            ("unlisted.example.com".into(), "hub/alpine".into(), None)
        );
    }

    #[test]
    fn direct_with_provider_credentials_and_docker_hub_host() {
        let mut config = Config::default();
        config.provider.registry = Some(Registry::parse("quay.io").unwrap());
        config.provider.credentials = creds("robot");
        config.provider.certificates = vec!["provider CA".into()];
        config.site.ca_certs = vec!["site CA".into()];
        let t = translate(&config, &src("quay.io/kairos/core"));
        assert_eq!(t.host, "quay.io");
        assert_eq!(t.repository, "kairos/core");
        assert_eq!(t.credentials.unwrap().username, "robot");
        assert_eq!(
            t.tls.extra_cas,
            vec!["site CA".to_owned(), "provider CA".into()]
        );
        let t = translate(&config, &src("docker.io/library/alpine"));
        assert_eq!(t.host, "registry-1.docker.io");
        assert_eq!(t.repository, "library/alpine");
        assert!(
            t.credentials.is_none(),
            "provider credentials leaked to docker.io"
        );
        assert_eq!(t.tls.extra_cas, vec!["site CA".to_owned()]);
    }

    #[test]
    fn insecure_sources() {
        let mut config = Config::default();
        assert!(translate(&config, &src("127.0.0.1:5000/a")).tls.insecure);
        assert!(translate(&config, &src("localhost/a")).tls.insecure);
        assert!(!translate(&config, &src("quay.io/a")).tls.insecure);
        config.site.insecure_skip_verify = true;
        assert!(translate(&config, &src("quay.io/a")).tls.insecure);
    }
}
