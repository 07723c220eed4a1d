//! What can go wrong talking to an upstream registry, each case naming the upstream host (never a
//! credential) and, where there is one, the fix.
//!
//! [`UpstreamError::status_hint`] says which HTTP status the client should get; the mapping to
//! OCI error bodies itself lives in `crate::error`.

use std::time::Duration;

use http::StatusCode;

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    /// Opening the TCP connection (DNS included).
    Connect,
    /// Waiting for the response headers after the request was sent.
    ResponseHeaders,
}

impl std::fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutStage::Connect => "accept a connection (upstream.connectTimeout)",
            TimeoutStage::ResponseHeaders => "send response headers (upstream.responseTimeout)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "upstream {host} is not reachable: {detail}; check the registry address, DNS and firewall"
    )]
    Unreachable { host: String, detail: String },

    #[error("upstream {host} did not {stage} within {after:?}")]
    Timeout {
        host: String,
        stage: TimeoutStage,
        after: Duration,
    },

    #[error(
        "TLS with upstream {host} failed: {detail}; add the registry's CA to its `certificates` \
         or to `site.caCerts`, or mark the registry `insecure: true`"
    )]
    Tls { host: String, detail: String },

    #[error(
        "the trusted CAs configured for upstream {host} are not valid PEM certificates: {detail}; \
         fix the registry's `certificates` or `site.caCerts`"
    )]
    InvalidCa { host: String, detail: String },

    #[error(
        "upstream {host} rejected the stored credentials of user {username:?}; \
         fix that user's password in the configuration (or the account on the registry)"
    )]
    CredentialsRejected { host: String, username: String },

    #[error(
        "upstream {host} requires credentials and none are configured for it; add them to \
         `registryCredentials`, `externalRegistries` or `providerCredentials`"
    )]
    AuthRequired { host: String },

    #[error(
        "upstream {host} refused the token that {realm} issued without credentials: outpost does \
         not send {host}'s credentials to a token realm on another domain, nor over plain HTTP \
         when the registry is not `insecure`; serve the realm over HTTPS from the registry's own \
         domain, or reach the registry without a token service"
    )]
    AnonymousTokenRefused { host: String, realm: String },

    #[error("upstream {host} asked for authentication outpost cannot answer: {challenge:?}")]
    UnsupportedChallenge { host: String, challenge: String },

    #[error("fetching a token for upstream {host} from {realm} failed: {detail}")]
    TokenFetch {
        host: String,
        realm: String,
        detail: String,
    },

    #[error("following a redirect from upstream {host} failed: {detail}")]
    Redirect { host: String, detail: String },

    #[error("the request to upstream {host} failed: {detail}")]
    Protocol { host: String, detail: String },

    #[error("outpost reaches upstream {host} through a proxy, and the proxy at {proxy} {problem}")]
    Proxy {
        host: String,
        /// The proxy URL, its password redacted.
        proxy: String,
        problem: String,
    },

    #[error("cannot build a request for upstream {host}: {detail}")]
    InvalidRequest { host: String, detail: String },
}

impl UpstreamError {
    /// The upstream host this error is about.
    pub fn host(&self) -> &str {
        match self {
            UpstreamError::Unreachable { host, .. }
            | UpstreamError::Timeout { host, .. }
            | UpstreamError::Tls { host, .. }
            | UpstreamError::InvalidCa { host, .. }
            | UpstreamError::CredentialsRejected { host, .. }
            | UpstreamError::AuthRequired { host }
            | UpstreamError::AnonymousTokenRefused { host, .. }
            | UpstreamError::UnsupportedChallenge { host, .. }
            | UpstreamError::TokenFetch { host, .. }
            | UpstreamError::Redirect { host, .. }
            | UpstreamError::Protocol { host, .. }
            | UpstreamError::Proxy { host, .. }
            | UpstreamError::InvalidRequest { host, .. } => host,
        }
    }

    /// The status a client of outpost should see: 504 for timeouts, 502 for everything else the
    /// upstream (or the way to it) did wrong, 500 for a request outpost could not even build.
    pub fn status_hint(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::InvalidRequest { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}
