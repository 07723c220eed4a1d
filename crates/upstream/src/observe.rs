//! What the client is given and what it reports: [`Timeouts`] (a plain option struct, filled
//! from the configuration by the server) and the [`Observer`] that hears of every request (the
//! server's metrics implement it).

use std::time::Duration;

use http::StatusCode;

/// How long the client waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection, DNS included (`upstream.connectTimeout`).
    pub connect: Duration,
    /// From sending a request until its response headers arrive (`upstream.responseTimeout`).
    pub response_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response_header: Duration::from_secs(60),
        }
    }
}

/// Hears of the client's traffic. `host` is a host name from the target, a redirect or a token
/// realm, never with credentials.
pub trait Observer: Send + Sync {
    /// One request sent: how it ended and the time to the response headers (or the failure).
    fn response(&self, host: &str, outcome: Outcome, elapsed: Duration);
    /// One token fetched from a realm for `host`, and whether it worked.
    fn token_fetch(&self, host: &str, ok: bool);
}

/// How one upstream request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived with this status.
    Status(StatusCode),
    /// No response: connect, TLS, timeout or protocol failure.
    Failed,
    /// No response: the site's HTTP proxy failed (unreachable, refused the tunnel or the
    /// credentials).
    ProxyFailed,
}
