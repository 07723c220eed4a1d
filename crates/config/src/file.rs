//! The serde shape of ONE configuration file, every field optional, and its parsing.
//!
//! A Palette user-data file is read as it is: the `#cloud-config` first line is a YAML comment, and
//! keys outpost does not use (most of `stylus:`, everything at the top level other than `outpost`,
//! `stylus`, `options`, `providerCredentials`) are ignored. Only `outpost:` refuses unknown keys,
//! since a typo there would silently change outpost's behaviour.
//!
//! Scalars are parsed during deserialization into the newtypes of [`super::values`], so a bad
//! value is reported with its file, key path and line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ConfigError;
use super::values::{
    ByteSize, CaCertificates, Domain, HostRuleText, HumanDuration, ImageText, ListenAddr, MinFree,
    NoProxyText, Pattern, PemCertificates, ProxyUrlText, RefPrefix, RegistryHost, WorkerThreads,
};

/// A password as written in a file. `Debug` prints `****`.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// One file, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileConfig {
    pub outpost: Option<OutpostSection>,
    pub stylus: Option<StylusSection>,
    /// OS-pack values.
    pub options: Option<OptionsSection>,
    pub provider_credentials: Option<ProviderCredentialsSection>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutpostSection {
    pub listen: Option<ListenAddr>,
    pub data_dir: Option<PathBuf>,
    pub default_registry: Option<RegistryHost>,
    pub local_registry: Option<LocalRegistrySection>,
    pub cache: Option<CacheSection>,
    pub infrastructure_images: Option<Vec<Pattern>>,
    pub tls: Option<TlsSection>,
    pub upstream: Option<UpstreamSection>,
    pub admin: Option<AdminSection>,
    pub auth: Option<AuthSection>,
    pub shared_store: Option<SharedStoreSection>,
    pub worker_threads: Option<WorkerThreads>,
}

/// `outpost.sharedStore`: the site's S3 bucket behind every node's own store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedStoreSection {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<RawSecret>,
    pub secret_access_key_file: Option<PathBuf>,
    pub prefix: Option<String>,
    pub max_size: Option<ByteSize>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRegistrySection {
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSection {
    pub max_size: Option<ByteSize>,
    pub tag_ttl: Option<HumanDuration>,
    pub fill_timeout: Option<HumanDuration>,
    pub min_free: Option<MinFree>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSection {
    pub htpasswd: Option<PathBuf>,
    pub anonymous: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamSection {
    pub connect_timeout: Option<HumanDuration>,
    pub response_timeout: Option<HumanDuration>,
    pub allowed_hosts: Option<Vec<HostRuleText>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<ListenAddr>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StylusSection {
    pub registry_credentials: Option<RegistrySection>,
    pub external_registries: Option<ExternalRegistriesSection>,
    pub site: Option<SiteSection>,
}

/// `stylus.registryCredentials` or one entry of `stylus.externalRegistries.registries`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySection {
    /// An empty string counts as not set (Palette templates leave `domain: ""`).
    #[serde(default, deserialize_with = "optional_domain")]
    pub domain: Option<Domain>,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    pub repository_name: Option<String>,
    pub certificates: Option<PemCertificates>,
    pub insecure: Option<bool>,
    pub encoded_password: Option<bool>,
}

impl RegistrySection {
    /// Has a username or a password: an *authenticated* external registry.
    pub fn authenticated(&self) -> bool {
        self.username.as_ref().is_some_and(|u| !u.is_empty())
            || self.password.as_ref().is_some_and(|p| !p.0.is_empty())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRegistriesSection {
    pub registries: Option<Vec<RegistrySection>>,
    pub registry_mapping_rules: Option<MappingRules>,
}

/// `domain`, where an empty string or null means "not set".
fn optional_domain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Domain>, D::Error> {
    // Through `Option`: serde_yaml_ng hands a plain `null` to `visit_str` as the text "null",
    // which is a valid host name.
    match Option::<String>::deserialize(d)? {
        Some(v) if !v.trim().is_empty() => v.parse().map(Some).map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

/// `registryMappingRules`: source → target, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingRules(pub Vec<(RefPrefix, RefPrefix)>);

impl<'de> Deserialize<'de> for MappingRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MappingRules;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of `source host[/path]: target host[/path]`")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<MappingRules, E> {
                Ok(MappingRules::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MappingRules, A::Error> {
                let mut rules = Vec::new();
                while let Some((source, target)) = map.next_entry()? {
                    rules.push((source, target));
                }
                Ok(MappingRules(rules))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteSection {
    pub ca_certs: Option<CaCertificates>,
    pub insecure_skip_verify: Option<bool>,
    pub network: Option<NetworkSection>,
}

/// `stylus.site.network`: the site's HTTP proxy, as Palette writes it (other keys of the
/// section, such as static addresses, are not outpost's and are ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSection {
    pub http_proxy: Option<ProxyUrlText>,
    pub https_proxy: Option<ProxyUrlText>,
    pub no_proxy: Option<NoProxyText>,
}

impl NetworkSection {
    /// Sets a proxy (a non-empty `httpProxy` or `httpsProxy`).
    pub fn sets_proxy(&self) -> bool {
        [&self.http_proxy, &self.https_proxy]
            .into_iter()
            .any(|p| p.as_ref().is_some_and(|p| p.0.is_some()))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct OptionsSection {
    /// The provider image; the YAML key is literally `system.uri`.
    #[serde(rename = "system.uri")]
    pub system_uri: Option<ImageText>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProviderCredentialsSection {
    pub registry: Option<RegistryHost>,
    pub user: Option<String>,
    pub password: Option<RawSecret>,
    pub certificates: Option<PemCertificates>,
}

impl FileConfig {
    /// Does this file itself hold a secret (any non-empty password)?
    pub fn holds_secret(&self) -> bool {
        let stylus = self.stylus.as_ref();
        let registry_passwords = stylus
            .and_then(|s| s.registry_credentials.as_ref())
            .into_iter()
            .chain(
                stylus
                    .and_then(|s| s.external_registries.as_ref())
                    .and_then(|e| e.registries.as_ref())
                    .into_iter()
                    .flatten(),
            )
            .filter_map(|r| r.password.as_ref());
        let network = stylus
            .and_then(|s| s.site.as_ref())
            .and_then(|s| s.network.as_ref());
        let proxy_passwords = network
            .into_iter()
            .flat_map(|n| [&n.http_proxy, &n.https_proxy])
            .filter_map(|p| p.as_ref().and_then(|p| p.0.as_ref()))
            .filter_map(|p| p.credentials.as_ref())
            .any(|c| !c.password.is_empty());
        let shared_store_secret = self
            .outpost
            .as_ref()
            .and_then(|o| o.shared_store.as_ref())
            .and_then(|s| s.secret_access_key.as_ref())
            .is_some_and(|k| !k.0.is_empty());
        proxy_passwords
            || shared_store_secret
            || registry_passwords
                .chain(
                    self.provider_credentials
                        .as_ref()
                        .and_then(|p| p.password.as_ref()),
                )
                .any(|p| !p.0.is_empty())
    }
}

/// One file read and parsed, with where it came from.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    pub path: PathBuf,
    pub content: FileConfig,
}

/// Read and parse one file.
pub fn read(path: &Path) -> Result<ParsedFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text).map(|content| ParsedFile {
        path: path.to_owned(),
        content,
    })
}

/// Parse the text of one file. `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    // First pass: syntax only, so a syntax error is told apart from a wrong value. Not into a
    // `Value`, which refuses an integer wider than 64 bits (a long numeric password) and would
    // echo it as a syntax error.
    match serde_yaml_ng::from_str::<Shape>(text) {
        Err(e) => {
            return Err(ConfigError::Syntax {
                file: path.to_owned(),
                line: e.location().map(|l| l.line()),
                column: e.location().map(|l| l.column()),
                message: strip_location(&e.to_string()),
            })
        }
        Ok(Shape::Empty) => return Ok(FileConfig::default()),
        Ok(Shape::Map) => {}
        Ok(Shape::Other) => {
            return Err(ConfigError::Value {
                file: path.to_owned(),
                key: ".".to_owned(),
                line: Some(1),
                problem: "the file is not a YAML map of keys; write `outpost:`, `stylus:`, ... at the top level".to_owned(),
            })
        }
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.inner();
        let line = inner.location().map(|l| l.line());
        let mut message = strip_location(&inner.to_string());
        // serde_yaml_ng prefixes the path of the enclosing map; the key path says it better.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.contains(' ') && key.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        if let Some(rest) = message.strip_prefix("invalid type: string ") {
            // serde writes the string with `{:?}`, escaping a `"` inside it: cut it whole.
            let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
            message = format!("invalid type: a string, expected {expected}");
        }
        if message.starts_with("invalid type") || message.starts_with("invalid value") {
            // Never echo a value: it may be a secret pasted under the wrong key.
            message = format!("{}; change the value to that type", drop_quoted(&message));
        }
        if message.starts_with("unknown field") {
            ConfigError::UnknownKey {
                file: path.to_owned(),
                key,
                line,
                message,
            }
        } else {
            ConfigError::Value {
                file: path.to_owned(),
                key,
                line,
                problem: message,
            }
        }
    })
}

/// What the top of a file is, found by reading every value without keeping any.
enum Shape {
    Empty,
    Map,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML document")
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Empty)
            }
            fn visit_none<E>(self) -> Result<Shape, E> {
                Ok(Shape::Empty)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Map)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Drop serde_yaml_ng's ` at line L column C`: the error carries the line itself.
fn strip_location(message: &str) -> String {
    let mut out = message.to_owned();
    if let Some(i) = out.find(" at line ") {
        let rest = &out[i + " at line ".len()..];
        let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).count();
        let line_len = digits(rest);
        if line_len > 0 {
            let after_line = &rest[line_len..];
            let mut end = i + " at line ".len() + line_len;
            if let Some(col) = after_line.strip_prefix(" column ") {
                end += " column ".len() + digits(col);
            }
            out.replace_range(i..end, "");
        }
    }
    out
}

/// Remove every ` "..."` from a message (serde quotes the offending value).
fn drop_quoted(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('"').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out.replace(" ,", ",").replace("  ", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_comment_only_files_are_empty_configs() {
        for text in ["", "#cloud-config\n", "\n\n# nothing\n"] {
            let c = parse(Path::new("x.yaml"), text).unwrap();
            assert!(c.outpost.is_none() && c.stylus.is_none());
        }
    }

    #[test]
    fn messages_lose_values_and_locations() {
        assert_eq!(
            drop_quoted(r#"invalid type: string "hunter2", expected a boolean"#),
            "invalid type: string, expected a boolean"
        );
        assert_eq!(
            strip_location("did not find expected ',' at line 3 column 1, while parsing"),
            "did not find expected ',', while parsing"
        );
        assert_eq!(strip_location("x at line 3"), "x");
    }

    #[test]
    fn raw_secret_debug_is_redacted() {
        let r = RegistrySection {
            password: Some(RawSecret("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
