//! outpost's core types: what every other crate agrees on, parsed once and carried as types.
//! No I/O, no async runtime, no HTTP.
//!
//! # What lives where
//! - `digest.rs`: [`Digest`] (validated `sha256:`/`sha512:` hex), [`Algorithm`], [`Hasher`].
//! - `name.rs`: the name grammar, once: [`Registry`] hosts, [`Repository`] names, [`Tag`]s,
//!   [`Reference`]s, [`Source`] (a repository on a registry) and Docker's name rules
//!   ([`looks_like_host`], `library/`, the Docker Hub host aliases), [`is_loopback`].
//! - `host_rule.rs`: [`HostRule`], one entry of a host list (host, `host:port`, `.domain`,
//!   CIDR, `*`).
//! - `image.rs`: [`ImageRef`], an image reference as operators write it.
//! - `pattern.rs`: [`Prefix`] (`host[/path]`) and [`RepoPattern`] (infrastructure images).
//! - `manifest.rs`: [`MediaType`] (safe as a header), media type constants, [`Descriptor`],
//!   [`Platform`], [`ManifestContent`].
//! - `proxy.rs`: the site's HTTP proxy: [`ProxyUrl`], [`NoProxy`] (curl's rules) and
//!   [`ProxySettings`], which picks the proxy (or none) of each upstream connection.
//! - `secret.rs`: [`Secret`] (redacted in `Debug`/`Display`) and [`Credentials`].
//! - `server_url.rs`: [`ServerUrl`], `http(s)://host[:port]` of a registry server.
//! - `target.rs`: [`Target`] and [`TlsPolicy`]: where and how one repository is fetched.
//!
//! # Invariants
//! - A value of one of these types was validated by its parser: a `Digest` is a digest, a
//!   `Repository` matches the distribution grammar, a `MediaType` holds no control character.
//! - No type here prints a secret.
#![forbid(unsafe_code)]

mod digest;
mod host_rule;
mod image;
mod manifest;
mod name;
mod pattern;
mod proxy;
mod secret;
mod server_url;
mod target;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use host_rule::{HostRule, HostRuleError};
pub use image::{ImageRef, ImageRefError};
pub use manifest::{
    is_index_type, manifest_media_type, Descriptor, ManifestContent, ManifestError, MediaType,
    MediaTypeError, Platform, PlatformError, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MANIFEST_TYPES,
    MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
pub use name::{
    is_loopback, looks_like_host, NameError, Reference, Registry, Repository, Source, Tag,
    DOCKER_HUB, DOCKER_HUB_API, MAX_REPOSITORY_LEN,
};
pub use pattern::{PatternError, Prefix, RepoPattern};
pub use proxy::{
    split_host_port, NoProxy, NoProxyError, ProxyEnvError, ProxyOrigin, ProxySettings, ProxyUrl,
    ProxyUrlError, PROXY_VARIABLES,
};
pub use secret::{Credentials, Secret};
pub use server_url::{ServerUrl, ServerUrlError};
pub use target::{Target, TlsPolicy};
