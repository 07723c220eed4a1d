//! outpost's upstream client: one GET or HEAD on `/v2/<repository>/…` of a [`Target`], with
//! authentication, redirects and per-registry TLS handled here, and the body left streaming.
//! It knows nothing of outpost's configuration files, store or server: it takes a [`Target`]
//! (from `oci`) and plain [`Timeouts`], and reports its traffic to an [`Observer`].
//!
//! Layout:
//! - this file: [`Upstream::send`], the authentication loop and the redirect walk;
//! - `observe`: [`Timeouts`] and the [`Observer`] the server's metrics implement;
//! - `transport`: pooled hyper-util clients per [`TlsPolicy`](oci::TlsPolicy),
//!   timeouts, the plain-HTTP fallback of insecure registries, failure classification;
//! - `proxy`: the site's HTTP proxy under TLS: `CONNECT` tunnels for HTTPS upstreams, absolute
//!   form for plain HTTP, its failures named after the proxy;
//! - `connect`: the TCP layer (connect deadline, failures told apart from TLS);
//! - `challenge`: the `WWW-Authenticate` parser (pure);
//! - `credentials`: where stored credentials may be sent (pure) and the Basic header;
//! - `token`: the token endpoint's answer (pure) and the single-flight token cache;
//! - `redirect`: redirect statuses and `Location` resolution (pure);
//! - `error`: [`UpstreamError`], each variant naming the upstream host.
//!
//! Invariants:
//! - stored credentials (Basic, or the token obtained with them) go only to the target host and
//!   to a token realm on its registrable domain; a redirect to another host carries none;
//! - the caller's own `Authorization` (or cookies) never goes upstream;
//! - the proxy's credentials go to the proxy only (the `CONNECT` request, or `Proxy-Authorization`
//!   on a plain-HTTP request sent to it), and whether a connection uses the proxy is decided per
//!   host and port (registry, token realm, redirect target) by its `noProxy`;
//! - once a host is known to want Basic or Bearer, credentials are sent pre-emptively; a token is
//!   fetched once per (host, scope, user) until shortly before it expires, even under concurrency;
//! - response bodies are returned unread: nothing is buffered whole.

#![forbid(unsafe_code)]

mod challenge;
mod connect;
mod credentials;
mod error;
mod observe;
mod proxy;
mod redirect;
mod token;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub use challenge::{parse as parse_www_authenticate, Challenge};
pub use credentials::may_send_credentials;
pub use error::{TimeoutStage, UpstreamError};
pub use observe::{Observer, Outcome, Timeouts};
pub use redirect::resolve_location;

use oci::{Credentials, Secret, Target};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use token::{Token, TokenCache, TokenKey};
use transport::Transport;

/// The token endpoint's answer as `fetch_token` reads it (parsed, then timed), for the fuzz
/// targets in `fuzz/` (feature `fuzzing`) and nothing else: re-exports only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::token::{parse_token_response, Token};
}

/// One request to an upstream, relative to `/v2/<repository>/`.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or HEAD.
    pub method: http::Method,
    /// After `/v2/<repository>/`: `manifests/v1`, `blobs/sha256:…`, `tags/list`,
    /// `referrers/sha256:…`.
    pub path: String,
    /// Already filtered by the caller (`n`, `last`, `artifactType`), without `?`.
    pub query: Option<String>,
    /// What the caller forwards: `Accept`, `Range`. Credentials in here are dropped.
    pub headers: http::HeaderMap,
}

/// The upstream client. Cheap to clone; clones share connection pools and the token cache.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    /// Who is told of requests, latencies and token fetches, when set.
    observer: Option<Arc<dyn Observer>>,
    tokens: TokenCache,
    /// The longest the small bodies outpost reads itself (a 401's, a redirect's, a token
    /// answer) are waited for once their headers are in: `upstream.responseTimeout`.
    body_timeout: Duration,
    /// The scheme each host asked for last, to answer it without a 401 round trip.
    known: Mutex<HashMap<String, HostAuth>>,
}

#[derive(Debug, Clone)]
enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// What the current attempt carried.
enum Sent {
    Nothing,
    Basic,
    Bearer(Secret),
}

/// Bodies of 401s and redirects are read (up to this much) so their connection can be reused.
const DRAIN_LIMIT: usize = 64 * 1024;
/// The largest token endpoint answer accepted.
const TOKEN_BODY_LIMIT: usize = 1024 * 1024;
/// Attempts of one request (initial, credentials, one token refresh, and a spare for a host
/// that switches schemes).
const MAX_ATTEMPTS: usize = 4;

impl Upstream {
    /// A client with the given timeouts. Connection pools are created per TLS policy on first
    /// use.
    pub fn new(timeouts: &Timeouts) -> Result<Upstream, UpstreamError> {
        Self::build(timeouts, None, None)
    }

    /// A client that reaches upstreams through `proxy` (where its `noProxy` does not say
    /// otherwise; every host outpost talks to is decided on its own: registries, token realms,
    /// redirect targets) and tells `observer` of its requests, their latency and token fetches.
    pub fn build(
        timeouts: &Timeouts,
        proxy: Option<oci::ProxySettings>,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Upstream, UpstreamError> {
        Ok(Upstream {
            inner: Arc::new(Inner {
                transport: Transport::new(timeouts, proxy, observer.clone()),
                observer,
                tokens: TokenCache::default(),
                body_timeout: timeouts.response_header,
                known: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// GET/HEAD `{scheme}://{target.host}/v2/{target.repository}/{req.path}?{req.query}`.
    ///
    /// Answers a `401` with the target's credentials (Basic, or a Bearer token from the
    /// challenge's realm), follows redirects up to 5 hops, and returns the final response with
    /// its body unread. Statuses other than `401` (404, 429, 5xx) are returned as responses.
    pub async fn send(
        &self,
        target: &Target,
        req: Request,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let host = target.host.as_str();
        let mut headers = req.headers;
        for name in [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ] {
            headers.remove(name);
        }
        let mut pq = format!(
            "/v2/{}/{}",
            target.repository,
            req.path.trim_start_matches('/')
        );
        if let Some(query) = req.query.as_deref().filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(query);
        }
        let pq: PathAndQuery = pq.parse().map_err(|e| UpstreamError::InvalidRequest {
            host: host.to_owned(),
            detail: format!("invalid path {pq:?} ({e})"),
        })?;

        let key = TokenKey {
            host: host.to_ascii_lowercase(),
            scope: format!("repository:{}:pull", target.repository),
            credentials: target.credentials.clone(),
        };
        let (mut authorization, mut sent) = self.preemptive(target, &key).await?;
        let mut refreshed = false;

        for _ in 0..MAX_ATTEMPTS {
            let (resp, on_target) = self
                .fetch(target, &req.method, &pq, &headers, authorization.as_ref())
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || !on_target {
                return Ok(resp);
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(challenge::parse)
                .collect();
            drain(resp, self.inner.body_timeout).await;

            let bearer = challenges.iter().find_map(|c| match c {
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                } => Some((realm, service, scope)),
                _ => None,
            });
            let basic = challenges.iter().find(|c| matches!(c, Challenge::Basic));
            match (bearer, basic) {
                (Some((realm, service, scope)), _) => {
                    self.remember(
                        host,
                        HostAuth::Bearer {
                            realm: realm.clone(),
                            service: service.clone(),
                        },
                    );
                    if let Sent::Bearer(rejected) = &sent {
                        if refreshed {
                            return Err(token_rejected(target, realm));
                        }
                        self.inner.tokens.invalidate(&key, rejected).await;
                        refreshed = true;
                    }
                    let scope = scope.clone().unwrap_or_else(|| key.scope.clone());
                    let token = self
                        .token(target, &key, realm, service.as_deref(), &scope)
                        .await?;
                    authorization = Some(bearer_authorization(&token));
                    sent = Sent::Bearer(token);
                }
                (None, Some(_)) => {
                    self.remember(host, HostAuth::Basic);
                    let Some(creds) = &target.credentials else {
                        return Err(UpstreamError::AuthRequired {
                            host: host.to_owned(),
                        });
                    };
                    if matches!(sent, Sent::Basic) {
                        return Err(rejected_error(target));
                    }
                    authorization = Some(credentials::basic_authorization(creds));
                    sent = Sent::Basic;
                }
                (None, None) => {
                    return Err(match challenges.first() {
                        Some(Challenge::Other(scheme)) => UpstreamError::UnsupportedChallenge {
                            host: host.to_owned(),
                            challenge: scheme.clone(),
                        },
                        _ if matches!(sent, Sent::Nothing) => UpstreamError::AuthRequired {
                            host: host.to_owned(),
                        },
                        _ => rejected_error(target),
                    });
                }
            }
        }
        Err(rejected_error(target))
    }

    /// The `Authorization` to send before any 401, from what the host asked for last time.
    async fn preemptive(
        &self,
        target: &Target,
        key: &TokenKey,
    ) -> Result<(Option<HeaderValue>, Sent), UpstreamError> {
        let known = self
            .inner
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.host)
            .cloned();
        match (known, &target.credentials) {
            (Some(HostAuth::Basic), Some(creds)) => {
                Ok((Some(credentials::basic_authorization(creds)), Sent::Basic))
            }
            (Some(HostAuth::Bearer { realm, service }), _) => {
                let token = self
                    .token(target, key, &realm, service.as_deref(), &key.scope)
                    .await?;
                Ok((Some(bearer_authorization(&token)), Sent::Bearer(token)))
            }
            _ => Ok((None, Sent::Nothing)),
        }
    }

    fn remember(&self, host: &str, auth: HostAuth) {
        let mut known = self.inner.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_HOSTS {
            known.clear(); // a shortcut only: each host answers its next 401 again
        }
        known.insert(host.to_ascii_lowercase(), auth);
    }

    /// The cached token for `key`, or one fetched from `realm` (one fetch at a time per key).
    async fn token(
        &self,
        target: &Target,
        key: &TokenKey,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Secret, UpstreamError> {
        self.inner
            .tokens
            .get_or_fetch(key, || async {
                let fetched = self.fetch_token(target, realm, service, scope).await;
                if let Some(observer) = &self.inner.observer {
                    observer.token_fetch(&target.host, fetched.is_ok());
                }
                fetched
            })
            .await
    }

    /// GET `realm?service=…&scope=…`, with Basic credentials only when the realm may see them.
    async fn fetch_token(
        &self,
        target: &Target,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, UpstreamError> {
        let host = target.host.as_str();
        let token_error = |detail: String| UpstreamError::TokenFetch {
            host: host.to_owned(),
            realm: realm_for_display(realm),
            detail,
        };
        let realm_uri: Uri = realm
            .parse()
            .map_err(|e| token_error(format!("the realm is not a URL ({e})")))?;
        let realm_host = match (realm_uri.scheme_str(), realm_uri.authority()) {
            (Some("http" | "https"), Some(authority)) => authority.to_string(),
            _ => return Err(token_error("the realm is not an http(s) URL".to_owned())),
        };
        let mut query: Vec<String> = realm_uri
            .query()
            .filter(|q| !q.is_empty())
            .map(|q| vec![q.to_owned()])
            .unwrap_or_default();
        if let Some(service) = service {
            query.push(format!("service={}", encode_query_value(service)));
        }
        for scope in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(format!("scope={}", encode_query_value(scope)));
        }
        let uri = Uri::builder()
            .scheme(realm_uri.scheme_str().unwrap_or("https"))
            .authority(realm_host.as_str())
            .path_and_query(format!("{}?{}", realm_uri.path(), query.join("&")))
            .build()
            .map_err(|e| token_error(format!("cannot build the token URL ({e})")))?;

        let creds: Option<&Credentials> = target
            .credentials
            .as_ref()
            .filter(|_| may_send_to_realm(target, &realm_uri));
        let withheld = target.credentials.is_some() && creds.is_none();
        if withheld {
            tracing::debug!(
                host,
                realm_host,
                "token realm is on another domain or plain HTTP; asking for an anonymous token"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(creds) = creds {
            headers.insert(
                header::AUTHORIZATION,
                credentials::basic_authorization(creds),
            );
        }
        let resp = self
            .inner
            .transport
            .send_url(&target.tls, &Method::GET, uri, &headers)
            .await
            .map_err(|e| token_error(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            drain(resp, self.inner.body_timeout).await;
            return Err(match (creds, withheld) {
                (Some(c), _) => UpstreamError::CredentialsRejected {
                    host: host.to_owned(),
                    username: c.username.clone(),
                },
                (None, true) => token_error(format!(
                    "the realm answered {status} to an anonymous request; outpost does not send \
                     {host}'s credentials to {realm_host}, which is on another domain"
                )),
                (None, false) => UpstreamError::AuthRequired {
                    host: host.to_owned(),
                },
            });
        }
        if !status.is_success() {
            drain(resp, self.inner.body_timeout).await;
            return Err(token_error(format!("the realm answered {status}")));
        }
        let within = self.inner.body_timeout;
        let body = tokio::time::timeout(
            within,
            Limited::new(resp.into_body(), TOKEN_BODY_LIMIT).collect(),
        )
        .await
        .map_err(|_| {
            token_error(format!(
                "its answer did not arrive within {}s (upstream.responseTimeout)",
                within.as_secs()
            ))
        })?
        .map_err(|e| token_error(format!("reading the answer failed ({e})")))?
        .to_bytes();
        let (value, lifetime) = token::parse_token_response(&body).map_err(token_error)?;
        Ok(Token::new(value, lifetime, tokio::time::Instant::now()))
    }

    /// Sends to the target and follows redirects (GET and HEAD, at most
    /// [`redirect::MAX_HOPS`]). `authorization` goes only to hops on the target host. Returns
    /// the final response and whether it came from the target host.
    async fn fetch(
        &self,
        target: &Target,
        method: &Method,
        pq: &PathAndQuery,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<(Response<Incoming>, bool), UpstreamError> {
        let transport = &self.inner.transport;
        let with_auth = |on_target: bool| {
            let mut h = headers.clone();
            if let (true, Some(a)) = (on_target, authorization) {
                h.insert(header::AUTHORIZATION, a.clone());
            }
            h
        };
        let (mut resp, mut uri) = transport
            .send_to_host(&target.host, &target.tls, method, pq, &with_auth(true))
            .await?;
        let mut on_target = true;
        // Credentials follow a redirect on the registry's own host, but never from HTTPS down
        // to plain HTTP.
        let began_plain = uri.scheme() != Some(&Scheme::HTTPS);
        let follow = *method == Method::GET || *method == Method::HEAD;
        let mut hops = 0;
        while follow && redirect::is_redirect(resp.status()) {
            let redirect_error = |detail: String| UpstreamError::Redirect {
                host: target.host.clone(),
                detail,
            };
            if hops == redirect::MAX_HOPS {
                return Err(redirect_error(format!(
                    "more than {} redirects",
                    redirect::MAX_HOPS
                )));
            }
            hops += 1;
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    redirect_error(format!("a {} without a Location header", resp.status()))
                })?;
            drain(resp, self.inner.body_timeout).await;
            uri = resolve_location(&uri, &location).map_err(redirect_error)?;
            on_target = uri
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&target.host))
                && (began_plain || uri.scheme() == Some(&Scheme::HTTPS));
            resp = transport
                .send_url(&target.tls, method, uri.clone(), &with_auth(on_target))
                .await?;
        }
        Ok((resp, on_target))
    }
}

/// The most hosts whose authentication scheme (and whose plain-HTTP fallback) is remembered.
const MAX_HOSTS: usize = 1024;

/// What a query value may hold unencoded: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A query value percent-encoded (everything but unreserved characters).
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The upstream refused a token twice: the stored credentials were wrong when they went to the
/// realm; when they did not (a realm on another domain), say so instead of blaming them.
fn token_rejected(target: &Target, realm: &str) -> UpstreamError {
    let sent = realm
        .parse::<Uri>()
        .is_ok_and(|realm| may_send_to_realm(target, &realm));
    match &target.credentials {
        Some(_) if !sent => UpstreamError::AnonymousTokenRefused {
            host: target.host.clone(),
            realm: realm_for_display(realm),
        },
        _ => rejected_error(target),
    }
}

/// Whether `target`'s credentials may go to the token realm `realm`: on the registry's own
/// domain, and over HTTPS unless the registry is `insecure` (whose own requests may be plain
/// HTTP already).
fn may_send_to_realm(target: &Target, realm: &Uri) -> bool {
    let realm_host = realm.authority().map(|a| a.as_str()).unwrap_or_default();
    may_send_credentials(&target.host, realm_host)
        && (realm.scheme() == Some(&Scheme::HTTPS) || target.tls.insecure)
}

fn rejected_error(target: &Target) -> UpstreamError {
    match &target.credentials {
        Some(c) => UpstreamError::CredentialsRejected {
            host: target.host.clone(),
            username: c.username.clone(),
        },
        None => UpstreamError::AuthRequired {
            host: target.host.clone(),
        },
    }
}

fn bearer_authorization(token: &Secret) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
    value.set_sensitive(true);
    value
}

/// Reads and drops a small body so the connection goes back to the pool; one that does not
/// arrive `within` is dropped with its connection.
async fn drain(resp: Response<Incoming>, within: Duration) {
    let body = Limited::new(resp.into_body(), DRAIN_LIMIT).collect();
    let _ = tokio::time::timeout(within, body).await;
}

/// The realm without its query (which could carry anything).
fn realm_for_display(realm: &str) -> String {
    realm.split('?').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("repository:library/alpine:pull"),
            "repository%3Alibrary%2Falpine%3Apull"
        );
        assert_eq!(encode_query_value("a b,c"), "a%20b%2Cc");
    }

    #[test]
    fn realm_display_drops_the_query() {
        assert_eq!(
            realm_for_display("https://auth.example.com/token?account=x"),
            "https://auth.example.com/token"
        );
    }
}
