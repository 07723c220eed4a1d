//! Routing: a pure function from a request's method, path and query to an [`Operation`] on a
//! [`Source`] repository.
//!
//! The path is split from the right on `/manifests/`, `/blobs/`, `/tags/list` and `/referrers/`
//! (a repository name may contain those words as components; a reference or digest never contains
//! `/`). The registry is, in this order: containerd's mirror query `?ns=<host>`; a first path
//! segment that is a registry host (`/v2/quay.io/kairos/core/...`); the default registry.

use std::fmt;

use http::Method;
use storage::Digest;

/// A canonical registry host, `host[:port]`, lower case. `index.docker.io` and
/// `registry-1.docker.io` are both `docker.io`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Registry(String);

/// The name the Docker Hub registry goes by in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

impl Registry {
    /// Parses and canonicalises a registry host. `None` when it is not `host[:port]`.
    pub fn parse(host: &str) -> Option<Registry> {
        let host = host.to_ascii_lowercase();
        if !is_host(&host) {
            return None;
        }
        Some(match host.as_str() {
            "index.docker.io" | DOCKER_HUB_API => Registry(DOCKER_HUB.to_owned()),
            _ => Registry(host),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }

    /// The host that serves this registry's API.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API
        } else {
            &self.0
        }
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `host[:port]` with a DNS name, IPv4 address or bracketed IPv6 address.
fn is_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, port.strip_prefix(':').map(Some).unwrap_or(None))
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    }
}

/// A repository name that follows the distribution spec's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository(String);

impl Repository {
    pub fn parse(name: &str) -> Option<Repository> {
        (!name.is_empty() && name.len() <= 255 && name.split('/').all(is_path_component))
            .then(|| Repository(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Option<Tag> {
        let bytes = tag.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        ok.then(|| Tag(tag.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The repository a client asked for, on the registry it names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub registry: Registry,
    pub repository: Repository,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `GET /v2/`: the API version check.
    Base,
    /// `GET /v2/_catalog?n=&last=`: the repositories held locally.
    Catalog {
        n: Option<u32>,
        last: Option<String>,
    },
    /// `GET|HEAD /v2/<name>/manifests/<reference>`
    Manifest {
        source: Source,
        reference: Reference,
    },
    /// `GET|HEAD /v2/<name>/blobs/<digest>`
    Blob { source: Source, digest: Digest },
    /// `GET /v2/<name>/tags/list?n=&last=`
    Tags {
        source: Source,
        n: Option<u32>,
        last: Option<String>,
    },
    /// `GET /v2/<name>/referrers/<digest>?artifactType=`
    Referrers {
        source: Source,
        digest: Digest,
        artifact_type: Option<String>,
    },
}

impl Operation {
    /// The source repository, for operations on one.
    pub fn source(&self) -> Option<&Source> {
        match self {
            Operation::Base | Operation::Catalog { .. } => None,
            Operation::Manifest { source, .. }
            | Operation::Blob { source, .. }
            | Operation::Tags { source, .. }
            | Operation::Referrers { source, .. } => Some(source),
        }
    }
}

/// A routed request: the operation, and the name as the client wrote it (for `Link` headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub operation: Operation,
    /// The `<name>` part of the client's path, e.g. `quay.io/kairos/core`.
    pub client_name: String,
    /// The client's `ns` query value, kept for links back to outpost.
    pub ns: Option<String>,
    /// HEAD rather than GET.
    pub head: bool,
}

/// Why a request cannot be routed. Mapped to OCI errors in `error.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0} is not an OCI Distribution API path; outpost serves /v2/")]
    NotFound(String),
    #[error("{method} {path} is not supported: outpost is a pull-through cache and serves only GET and HEAD of manifests and blobs, tags/list and referrers")]
    Unsupported { method: Method, path: String },
    #[error("invalid repository name {0:?}: names are lower-case components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'")]
    NameInvalid(String),
    #[error("invalid registry host {0:?} in the ns query")]
    RegistryInvalid(String),
    #[error("invalid digest {0:?}: {1}")]
    DigestInvalid(String, storage::DigestError),
    #[error("invalid tag {0:?}: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    TagInvalid(String),
    #[error("invalid query parameter {0}")]
    QueryInvalid(String),
}

/// Routes one request. `default_registry` is `outpost.defaultRegistry`.
pub fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    default_registry: &Registry,
) -> Result<Route, RouteError> {
    let head = *method == Method::HEAD;
    let unsupported = || RouteError::Unsupported {
        method: method.clone(),
        path: path.to_owned(),
    };
    let read_only = head || *method == Method::GET;

    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => {
            return if read_only {
                Ok(Route {
                    operation: Operation::Base,
                    client_name: String::new(),
                    ns: None,
                    head,
                })
            } else {
                Err(unsupported())
            };
        }
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => return Err(RouteError::NotFound(path.to_owned())),
    };
    let params = Query::parse(query.unwrap_or(""));

    let n = || match params.get("n") {
        None => Ok(None),
        Some(n) => n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| RouteError::QueryInvalid(format!("n={n:?}: expected a number"))),
    };
    if rest == "_catalog" {
        return if read_only {
            Ok(Route {
                operation: Operation::Catalog {
                    n: n()?,
                    last: params.get("last").map(str::to_owned),
                },
                client_name: String::new(),
                ns: None,
                head,
            })
        } else {
            Err(unsupported())
        };
    }

    let (name, kind, arg) = split_path(rest).ok_or_else(unsupported)?;
    if !read_only || kind == Kind::Uploads {
        return Err(unsupported());
    }
    let ns = params.get("ns").map(str::to_owned);
    let source = source(name, ns.as_deref(), default_registry)?;
    let digest = |s: &str| {
        s.parse::<Digest>()
            .map_err(|e| RouteError::DigestInvalid(s.to_owned(), e))
    };
    let operation = match kind {
        Kind::Manifests => {
            let reference = if arg.contains(':') {
                Reference::Digest(digest(arg)?)
            } else {
                Reference::Tag(Tag::parse(arg).ok_or_else(|| RouteError::TagInvalid(arg.into()))?)
            };
            Operation::Manifest { source, reference }
        }
        Kind::Blobs => Operation::Blob {
            source,
            digest: digest(arg)?,
        },
        Kind::Tags => Operation::Tags {
            source,
            n: n()?,
            last: params.get("last").map(str::to_owned),
        },
        Kind::Referrers => Operation::Referrers {
            source,
            digest: digest(arg)?,
            artifact_type: params.get("artifactType").map(str::to_owned),
        },
        Kind::Uploads => unreachable!("uploads are refused above"),
    };
    Ok(Route {
        operation,
        client_name: name.to_owned(),
        ns,
        head,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifests,
    Blobs,
    Uploads,
    Tags,
    Referrers,
}

/// Splits `<name>/<kind>/<arg>` from the right. `None` for anything else.
fn split_path(rest: &str) -> Option<(&str, Kind, &str)> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some((name, Kind::Tags, ""));
    }
    // `<name>/blobs/uploads/` and `<name>/blobs/uploads/<uuid>`: the push side.
    if let Some((name, _)) = rest.rsplit_once("/blobs/uploads") {
        let after = &rest[name.len() + "/blobs/uploads".len()..];
        if after.is_empty() || after.starts_with('/') {
            return Some((name, Kind::Uploads, ""));
        }
    }
    let (head, arg) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    let kind = match kind {
        "manifests" => Kind::Manifests,
        "blobs" => Kind::Blobs,
        "referrers" => Kind::Referrers,
        _ => return None,
    };
    (!name.is_empty() && !arg.is_empty()).then_some((name, kind, arg))
}

/// Works out the source registry and repository of `name` (see the module docs).
fn source(name: &str, ns: Option<&str>, default: &Registry) -> Result<Source, RouteError> {
    let (registry, repository) = match ns {
        Some(ns) => (
            Registry::parse(ns).ok_or_else(|| RouteError::RegistryInvalid(ns.to_owned()))?,
            name,
        ),
        None => match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (
                Registry::parse(first).ok_or_else(|| RouteError::NameInvalid(name.to_owned()))?,
                rest,
            ),
            _ => (default.clone(), name),
        },
    };
    let mut repository =
        Repository::parse(repository).ok_or_else(|| RouteError::NameInvalid(name.to_owned()))?;
    if registry.is_docker_hub() && !repository.0.contains('/') {
        repository = Repository(format!("library/{}", repository.0));
    }
    Ok(Source {
        registry,
        repository,
    })
}

/// Docker's rule for the first component of a reference: a host when it has a `.` or a `:`, or is
/// `localhost`.
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// The decoded `key=value` pairs of a query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes and `+` (form encoding). Invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
            {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn hub() -> Registry {
        Registry::parse("docker.io").unwrap()
    }

    fn get(path: &str, query: Option<&str>) -> Result<Route, RouteError> {
        route(&Method::GET, path, query, &hub())
    }

    fn source_of(r: &Route) -> String {
        match &r.operation {
            Operation::Manifest { source, .. }
            | Operation::Blob { source, .. }
            | Operation::Tags { source, .. }
            | Operation::Referrers { source, .. } => source.to_string(),
            other => panic!("no source in {other:?}"),
        }
    }

    #[test]
    fn base_and_catalog() {
        assert_eq!(get("/v2/", None).unwrap().operation, Operation::Base);
        assert_eq!(get("/v2", None).unwrap().operation, Operation::Base);
        assert_eq!(
            get("/v2/_catalog", Some("n=2&last=a%2Fb"))
                .unwrap()
                .operation,
            Operation::Catalog {
                n: Some(2),
                last: Some("a/b".into())
            }
        );
        assert!(matches!(get("/v1/", None), Err(RouteError::NotFound(_))));
    }

    #[test]
    fn ns_query_names_the_registry() {
        let r = get("/v2/kairos/core/manifests/v1", Some("ns=quay.io")).unwrap();
        assert_eq!(source_of(&r), "quay.io/kairos/core");
        assert_eq!(r.ns.as_deref(), Some("quay.io"));
        // containerd sends library/ already for docker.io.
        let r = get("/v2/library/alpine/manifests/3", Some("ns=docker.io")).unwrap();
        assert_eq!(source_of(&r), "docker.io/library/alpine");
        let r = get("/v2/alpine/manifests/3", Some("ns=index.docker.io")).unwrap();
        assert_eq!(source_of(&r), "docker.io/library/alpine");
        // With ns, a first segment that looks like a host is part of the repository.
        let r = get(
            "/v2/spectro-images/quay.io/kairos/core/manifests/v1",
            Some("ns=10.10.254.254%3A8000"),
        );
        // `quay.io` is not a valid path component? It is: dots join alphanumerics.
        assert_eq!(
            source_of(&r.unwrap()),
            "10.10.254.254:8000/spectro-images/quay.io/kairos/core"
        );
    }

    #[test]
    fn host_in_path() {
        let r = get("/v2/quay.io/kairos/core/manifests/v1", None).unwrap();
        assert_eq!(source_of(&r), "quay.io/kairos/core");
        assert_eq!(r.client_name, "quay.io/kairos/core");
        let r = get(&format!("/v2/localhost/app/blobs/{D}"), None).unwrap();
        assert_eq!(source_of(&r), "localhost/app");
        let r = get("/v2/127.0.0.1:5000/a/b/tags/list", None).unwrap();
        assert_eq!(source_of(&r), "127.0.0.1:5000/a/b");
        let r = get("/v2/index.docker.io/nginx/manifests/latest", None).unwrap();
        assert_eq!(source_of(&r), "docker.io/library/nginx");
        let r = get("/v2/Quay.IO/kairos/core/manifests/v1", None).unwrap();
        assert_eq!(source_of(&r), "quay.io/kairos/core");
    }

    #[test]
    fn default_registry_and_library_rule() {
        let r = get("/v2/alpine/manifests/latest", None).unwrap();
        assert_eq!(source_of(&r), "docker.io/library/alpine");
        let r = get("/v2/bitnami/redis/manifests/7", None).unwrap();
        assert_eq!(source_of(&r), "docker.io/bitnami/redis");
        let ghcr = Registry::parse("ghcr.io").unwrap();
        let r = route(&Method::GET, "/v2/alpine/manifests/latest", None, &ghcr).unwrap();
        assert_eq!(source_of(&r), "ghcr.io/alpine");
    }

    #[test]
    fn operations_and_references() {
        let r = route(&Method::HEAD, &format!("/v2/a/manifests/{D}"), None, &hub()).unwrap();
        assert!(r.head);
        assert!(matches!(
            r.operation,
            Operation::Manifest {
                reference: Reference::Digest(_),
                ..
            }
        ));
        let r = get("/v2/a/b/tags/list", Some("n=10&last=v%201")).unwrap();
        match r.operation {
            Operation::Tags { n, last, .. } => {
                assert_eq!(n, Some(10));
                assert_eq!(last.as_deref(), Some("v 1"));
            }
            other => panic!("{other:?}"),
        }
        let r = get(
            &format!("/v2/a/referrers/{D}"),
            Some("artifactType=application%2Fvnd.example"),
        )
        .unwrap();
        match r.operation {
            Operation::Referrers { artifact_type, .. } => {
                assert_eq!(artifact_type.as_deref(), Some("application/vnd.example"))
            }
            other => panic!("{other:?}"),
        }
        // A repository may contain the words blobs and manifests as components.
        let r = get("/v2/x/blobs/manifests/manifests/v1", None).unwrap();
        assert_eq!(source_of(&r), "docker.io/x/blobs/manifests");
    }

    #[test]
    fn invalid_names_digests_and_tags() {
        for path in [
            "/v2/UPPER/manifests/v1",
            "/v2/a//b/manifests/v1",
            "/v2/-a/manifests/v1",
            "/v2/a..b/manifests/v1",
            "/v2/quay.io/../etc/manifests/v1",
            "/v2/quay.io/manifests/v1/x/manifests/v1/../manifests/v1",
        ] {
            assert!(
                matches!(get(path, None), Err(RouteError::NameInvalid(_))),
                "{path}: {:?}",
                get(path, None)
            );
        }
        for path in [
            "/v2/a/blobs/sha256:abc",
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "/v2/a/manifests/sha256:zz",
            "/v2/a/blobs/latest",
        ] {
            assert!(
                matches!(get(path, None), Err(RouteError::DigestInvalid(..))),
                "{path}"
            );
        }
        assert!(matches!(
            get("/v2/a/manifests/-bad", None),
            Err(RouteError::TagInvalid(_))
        ));
        assert!(matches!(
            get("/v2/a/tags/list", Some("n=many")),
            Err(RouteError::QueryInvalid(_))
        ));
    }

    #[test]
    fn unsupported_methods_and_paths() {
        for (method, path) in [
            (Method::PUT, "/v2/a/manifests/v1".to_owned()),
            (Method::DELETE, format!("/v2/a/blobs/{D}")),
            (Method::POST, "/v2/a/blobs/uploads/".to_owned()),
            (Method::PATCH, "/v2/a/blobs/uploads/1234".to_owned()),
            (Method::GET, "/v2/a/blobs/uploads/1234".to_owned()),
            (Method::GET, "/v2/a/something/else".to_owned()),
            (Method::POST, "/v2/".to_owned()),
        ] {
            assert!(
                matches!(
                    route(&method, &path, None, &hub()),
                    Err(RouteError::Unsupported { .. })
                ),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "quay.io",
            "localhost:5000",
            "10.0.0.1:8000",
            "[::1]:5000",
            "a-b.c",
        ] {
            assert!(Registry::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "a_b.io",
            "host:",
            "host:99999x",
            "-a.io",
            "[zz]:1",
            "a/b",
        ] {
            assert!(Registry::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(hub().api_host(), "registry-1.docker.io");
        assert_eq!(
            Registry::parse("registry-1.docker.io").unwrap().as_str(),
            "docker.io"
        );
    }

    #[test]
    fn query_encoding_round_trips() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
