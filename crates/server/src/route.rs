//! Routing: a pure function from a request's method, path and query to an [`Operation`] on a
//! [`Source`] repository.
//!
//! The path is split from the right on `/manifests/`, `/blobs/`, `/tags/list` and `/referrers/`
//! (a repository name may contain those words as components; a reference or digest never contains
//! `/`). The registry is, in this order: containerd's mirror query `?ns=<host>`; a first path
//! segment that is a registry host (`/v2/quay.io/kairos/core/...`); the default registry.

use http::Method;
use oci::{Digest, DigestError, Reference, Registry, Repository, Source, Tag};
use percent_encoding::percent_decode_str;

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
    DigestInvalid(String, DigestError),
    #[error("manifest unknown: {0:?} is not a valid tag, so no manifest has it (tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}})")]
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
    if !read_only {
        return Err(unsupported());
    }
    let ns = params.get("ns").map(str::to_owned);
    let source = source(name, ns.as_deref(), default_registry)?;
    let digest = |s: &str| {
        s.parse::<Digest>()
            .map_err(|e| RouteError::DigestInvalid(s.to_owned(), e))
    };
    let operation = match kind {
        Kind::Uploads => return Err(unsupported()),
        Kind::Manifests => {
            let reference = if arg.contains(':') {
                Reference::Digest(digest(arg)?)
            } else {
                Reference::Tag(Tag::parse(arg).map_err(|_| RouteError::TagInvalid(arg.into()))?)
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

/// Works out the source registry and repository of `name` (see the module docs): `ns` names
/// the registry when given, else [`Source::from_name`]'s rule.
fn source(name: &str, ns: Option<&str>, default: &Registry) -> Result<Source, RouteError> {
    let invalid = || RouteError::NameInvalid(name.to_owned());
    match ns {
        Some(ns) => {
            let registry =
                Registry::parse(ns).map_err(|_| RouteError::RegistryInvalid(ns.to_owned()))?;
            Source::new(registry, Repository::parse(name).map_err(|_| invalid())?)
                .map_err(|_| invalid())
        }
        None => Source::from_name(name, default).map_err(|_| invalid()),
    }
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
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
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
    fn registry_hosts_come_from_the_one_grammar() {
        let r = get(
            "/v2/kairos/core/manifests/v1",
            Some("ns=registry-1.docker.io"),
        )
        .unwrap();
        assert_eq!(source_of(&r), "docker.io/kairos/core");
        assert!(matches!(
            get("/v2/a/manifests/v1", Some("ns=host:99999")),
            Err(RouteError::RegistryInvalid(_))
        ));
        assert!(matches!(
            get("/v2/host:99999/a/manifests/v1", None),
            Err(RouteError::NameInvalid(_))
        ));
    }

    #[test]
    fn query_encoding_round_trips() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
        assert_eq!(
            percent_decode(&upstream::encode_query_value("a/b c+d")),
            "a/b c+d"
        );
    }
}
