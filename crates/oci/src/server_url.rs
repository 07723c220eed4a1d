//! [`ServerUrl`]: the base URL of a registry server as an operator gives it on the command line
//! (`https://127.0.0.1:5000`): a scheme and a host, nothing after. containerd's hosts directory
//! points at outpost with one; prefetch pulls through a running outpost with one.

use std::fmt;

use crate::name::{NameError, Registry};

/// `http(s)://host[:port]`, with at most a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    pub https: bool,
    /// `host[:port]`, lower case, IPv6 in brackets.
    pub authority: String,
}

/// Why a server URL was refused; each says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    #[error("the scheme must be http:// or https://")]
    Scheme,
    #[error("it has no host")]
    NoHost,
    #[error("credentials do not belong in the URL")]
    Credentials,
    #[error("it must not have a path, query or fragment (the /v2/ API is added by the client)")]
    Path,
    #[error("the host is not a host name or IP address: {0}")]
    Host(NameError),
}

impl ServerUrl {
    pub fn parse(url: &str) -> Result<ServerUrl, ServerUrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(ServerUrlError::Scheme)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(ServerUrlError::Scheme),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(end);
        if authority.is_empty() {
            return Err(ServerUrlError::NoHost);
        }
        if authority.contains('@') {
            return Err(ServerUrlError::Credentials);
        }
        if !matches!(after, "" | "/") {
            return Err(ServerUrlError::Path);
        }
        Registry::parse(authority).map_err(ServerUrlError::Host)?;
        Ok(ServerUrl {
            https,
            authority: authority.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let ok = |s: &str| ServerUrl::parse(s).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:5000"),
            ServerUrl {
                https: false,
                authority: "127.0.0.1:5000".into()
            }
        );
        assert_eq!(
            ok("https://Outpost.Local:5443/").to_string(),
            "https://outpost.local:5443"
        );
        assert_eq!(ok("http://[::1]:5000").authority, "[::1]:5000");
        for (bad, why) in [
            ("127.0.0.1:5000", ServerUrlError::Scheme),
            ("ftp://x", ServerUrlError::Scheme),
            ("http://", ServerUrlError::NoHost),
            ("http://x/v2/", ServerUrlError::Path),
            ("http://x?a=1", ServerUrlError::Path),
            ("http://u:p@x", ServerUrlError::Credentials),
        ] {
            assert_eq!(ServerUrl::parse(bad), Err(why), "{bad}");
        }
        assert!(matches!(
            ServerUrl::parse("http://bad_host:1"),
            Err(ServerUrlError::Host(_))
        ));
        assert!(matches!(
            ServerUrl::parse("http://x:99999"),
            Err(ServerUrlError::Host(_))
        ));
    }
}
