//! [`Target`]: where and how outpost fetches one repository, the output of translation and the
//! input of the upstream client.

use crate::Credentials;

/// How to reach one upstream over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsPolicy {
    /// HTTPS without certificate verification, falling back to plain HTTP when the TLS handshake
    /// fails (what containerd and Docker do for insecure registries).
    pub insecure: bool,
    /// PEM CAs trusted for this upstream on top of the system roots (site CAs plus the registry's
    /// own `certificates`).
    pub extra_cas: Vec<String>,
}

/// Where and how outpost fetches one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The registry API host, `host[:port]` (`registry-1.docker.io`, `10.10.254.254:8000`).
    pub host: String,
    /// The repository on that host (`spectro-images/quay.io/kairos/core`).
    pub repository: String,
    /// Credentials for `host` (and token realms on its own domain); never sent anywhere else.
    pub credentials: Option<Credentials>,
    pub tls: TlsPolicy,
}
