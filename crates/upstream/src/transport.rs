//! Connections to upstreams: one pooled hyper-util client per distinct [`TlsPolicy`] (built on
//! first use), the connect and response-header timeouts, the plain-HTTP fallback of insecure
//! upstreams, and the classification of transport failures into [`UpstreamError`]s.
//!
//! TLS is rustls with the ring provider; ALPN offers `h2` and `http/1.1`, so an upstream that
//! speaks HTTP/2 gets it. Verified policies trust the system roots (none is fine: then only the
//! extra CAs) plus the policy's extra CAs. Insecure policies skip verification and, when the TLS
//! handshake with a host fails, retry in plain HTTP; what worked is remembered per host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Response, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::Instant;

use super::error::{TimeoutStage, UpstreamError};
use oci::TlsPolicy;

use crate::connect::{chain, TcpConnectError, TcpConnector, USER_AGENT};
use crate::proxy::{self, ConnectError, ProxyConnector, ProxyFailure};
use crate::{Observer, Outcome, Timeouts};

type HttpClient = Client<HttpsConnector<ProxyConnector>, Empty<Bytes>>;

/// The most an upstream connection buffers at once (hyper's default is ~400 KiB). Body frames
/// are views of this buffer, and once reads have filled it hyper reserves this much afresh for
/// every read while earlier frames are still held: a frame holds a whole buffer however few
/// bytes its read returned (about half of 1 MiB on average in a cold 1 GiB GET). hyper grows a
/// connection's buffer only while its reads fill it, so manifests and small blobs keep small
/// buffers; a big blob from a fast upstream arrives in frames of up to 512 KiB, which the fill
/// passes on whole (one wake-up of each follower and one send per frame: 128 KiB took 8 times
/// as many). 512 KiB costs a cold GET no more CPU than 1 MiB did, and holds less at the peak of
/// 20 clients on one cold blob (BENCHMARKS.md, issue 18).
const READ_BUFFER: usize = 512 << 10;

pub(crate) struct Transport {
    timeouts: Timeouts,
    provider: Arc<CryptoProvider>,
    clients: Mutex<HashMap<TlsPolicy, HttpClient>>,
    /// Insecure hosts and whether they answered in plain HTTP (`true`) or HTTPS (`false`).
    insecure_schemes: Mutex<HashMap<String, bool>>,
    /// Every request sent is counted here (host, status, time to response headers), when set.
    observer: Option<Arc<dyn Observer>>,
    /// The site's HTTP proxy, when there is one.
    proxy: Option<Arc<oci::ProxySettings>>,
}

impl Transport {
    pub(crate) fn new(
        timeouts: &Timeouts,
        proxy: Option<oci::ProxySettings>,
        observer: Option<Arc<dyn Observer>>,
    ) -> Transport {
        Transport {
            observer,
            proxy: proxy.filter(|p| p.any()).map(Arc::new),
            timeouts: timeouts.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            clients: Mutex::new(HashMap::new()),
            insecure_schemes: Mutex::new(HashMap::new()),
        }
    }

    /// Sends to the target host itself, choosing HTTPS, or for an insecure policy falling back
    /// to plain HTTP when the TLS handshake fails. Returns the response and the URL used.
    pub(crate) async fn send_to_host(
        &self,
        host: &str,
        policy: &TlsPolicy,
        method: &Method,
        path_and_query: &PathAndQuery,
        headers: &HeaderMap,
    ) -> Result<(Response<Incoming>, Uri), UpstreamError> {
        let known_plain = if policy.insecure {
            self.lock_schemes().get(&host.to_ascii_lowercase()).copied()
        } else {
            Some(false)
        };
        let plain = known_plain.unwrap_or(false);
        let uri = url(host, plain, path_and_query)?;
        match self.send(host, policy, method, uri.clone(), headers).await {
            Ok(resp) => {
                if policy.insecure && known_plain.is_none() {
                    self.remember(host, false);
                }
                Ok((resp, uri))
            }
            Err(Failure::Handshake(detail)) if policy.insecure && known_plain.is_none() => {
                tracing::debug!(host, %detail, "TLS handshake failed; trying plain HTTP (insecure registry)");
                let uri = url(host, true, path_and_query)?;
                let resp = self
                    .send(host, policy, method, uri.clone(), headers)
                    .await
                    .map_err(|f| f.into_error(host, &self.timeouts))?;
                self.remember(host, true);
                Ok((resp, uri))
            }
            Err(f) => Err(f.into_error(host, &self.timeouts)),
        }
    }

    /// Sends to any URL (a redirect target, a token realm) with `policy`.
    pub(crate) async fn send_url(
        &self,
        policy: &TlsPolicy,
        method: &Method,
        uri: Uri,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // `user:password@` in a redirect or realm URL is never a host name: not in logs, not in
        // metric labels.
        let host = uri
            .authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        self.send(&host, policy, method, uri, headers)
            .await
            .map_err(|f| f.into_error(&host, &self.timeouts))
    }

    async fn send(
        &self,
        host: &str,
        policy: &TlsPolicy,
        method: &Method,
        uri: Uri,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, Failure> {
        let client = self.client(host, policy).map_err(Failure::Built)?;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| {
                Failure::Built(UpstreamError::InvalidRequest {
                    host: host.to_owned(),
                    detail: e.to_string(),
                })
            })?;
        *request.headers_mut() = headers.clone();
        request.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        // A plain-HTTP request through the proxy is sent to the proxy itself (absolute form):
        // its credentials go along. (An HTTPS request is inside a CONNECT tunnel, which carried
        // them, and is not the proxy's to read.)
        let via = proxy::route(self.proxy.as_deref(), &uri)
            .filter(|_| uri.scheme() != Some(&Scheme::HTTPS));
        if let Some(auth) = via.and_then(proxy::authorization) {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth);
        }

        let started = Instant::now();
        let outcome =
            tokio::time::timeout(self.timeouts.response_header, client.request(request)).await;
        // Only the path: a redirect's query may carry a signature.
        let path = uri.path();
        // The proxy's own refusal of a plain-HTTP request.
        let outcome = match (outcome, via) {
            (Ok(Ok(resp)), Some(proxy))
                if resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED =>
            {
                let origin = self
                    .proxy
                    .as_ref()
                    .map_or(oci::ProxyOrigin::Config, |p| p.origin);
                Ok(Err(Failure::Proxy(ProxyFailure::auth(
                    proxy,
                    proxy::setting_name(origin, false),
                    "407 Proxy Authentication Required",
                ))))
            }
            (Ok(Ok(resp)), _) => Ok(Ok(resp)),
            (Ok(Err(e)), _) => Ok(Err(classify(&e))),
            (Err(elapsed), _) => Err(elapsed),
        };
        if let Some(observer) = &self.observer {
            let outcome = match &outcome {
                Ok(Ok(resp)) => Outcome::Status(resp.status()),
                Ok(Err(Failure::Proxy(_))) => Outcome::ProxyFailed,
                _ => Outcome::Failed,
            };
            observer.response(host, outcome, started.elapsed());
        }
        match outcome {
            Ok(Ok(resp)) => {
                tracing::debug!(
                    %method, host, path, status = resp.status().as_u16(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "upstream request"
                );
                Ok(resp)
            }
            Ok(Err(failure)) => {
                tracing::debug!(
                    %method, host, path, error = %failure,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "upstream request failed"
                );
                Err(failure)
            }
            Err(_) => {
                tracing::debug!(
                    %method, host, path,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "upstream response headers timed out"
                );
                Err(Failure::HeaderTimeout)
            }
        }
    }

    fn client(&self, host: &str, policy: &TlsPolicy) -> Result<HttpClient, UpstreamError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(policy) {
            return Ok(client.clone());
        }
        let tls = self.tls_config(host, policy)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let tcp = ProxyConnector {
            tcp: TcpConnector {
                inner: http,
                timeout: self.timeouts.connect,
            },
            settings: self.proxy.clone(),
            connect_timeout: self.timeouts.connect,
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_max_buf_size(READ_BUFFER)
            .build(https);
        clients.insert(policy.clone(), client.clone());
        Ok(client)
    }

    fn tls_config(&self, host: &str, policy: &TlsPolicy) -> Result<ClientConfig, UpstreamError> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Tls {
                host: host.to_owned(),
                detail: e.to_string(),
            })?;
        if policy.insecure {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(self.provider.clone())))
                .with_no_client_auth());
        }
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(
                errors = native.errors.len(),
                "some system CA certificates could not be loaded"
            );
        }
        roots.add_parsable_certificates(native.certs);
        for pem in &policy.extra_cas {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| UpstreamError::InvalidCa {
                    host: host.to_owned(),
                    detail: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| UpstreamError::InvalidCa {
                    host: host.to_owned(),
                    detail: e.to_string(),
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(UpstreamError::InvalidCa {
                    host: host.to_owned(),
                    detail: "an entry holds no `BEGIN CERTIFICATE` block".to_owned(),
                });
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    fn lock_schemes(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.insecure_schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, host: &str, plain: bool) {
        let mut schemes = self.lock_schemes();
        if schemes.len() >= crate::MAX_HOSTS {
            schemes.clear(); // a shortcut only: each host is tried with TLS first again
        }
        schemes.insert(host.to_ascii_lowercase(), plain);
    }
}

fn url(host: &str, plain: bool, path_and_query: &PathAndQuery) -> Result<Uri, UpstreamError> {
    Uri::builder()
        .scheme(if plain { Scheme::HTTP } else { Scheme::HTTPS })
        .authority(host)
        .path_and_query(path_and_query.clone())
        .build()
        .map_err(|e| UpstreamError::InvalidRequest {
            host: host.to_owned(),
            detail: format!("`{host}` is not a valid host[:port] ({e})"),
        })
}

/// How one request failed, before it is named after its host.
#[derive(Debug)]
enum Failure {
    /// TCP (or DNS) did not connect within the connect timeout.
    ConnectTimeout,
    /// TCP (or DNS) failed.
    Connect(String),
    /// Connected, but the TLS handshake failed.
    Handshake(String),
    /// The response headers did not arrive in time.
    HeaderTimeout,
    /// Anything after connecting (connection closed, protocol error).
    Other(String),
    /// The proxy hop failed.
    Proxy(ProxyFailure),
    /// Could not build the client or request.
    Built(UpstreamError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ConnectTimeout => f.write_str("connect timed out"),
            Failure::HeaderTimeout => f.write_str("response headers timed out"),
            Failure::Connect(d) | Failure::Handshake(d) | Failure::Other(d) => f.write_str(d),
            Failure::Built(e) => write!(f, "{e}"),
            Failure::Proxy(p) => write!(f, "{p}"),
        }
    }
}

impl Failure {
    fn into_error(self, host: &str, timeouts: &Timeouts) -> UpstreamError {
        let host = host.to_owned();
        match self {
            Failure::ConnectTimeout => UpstreamError::Timeout {
                host,
                stage: TimeoutStage::Connect,
                after: timeouts.connect,
            },
            Failure::HeaderTimeout => UpstreamError::Timeout {
                host,
                stage: TimeoutStage::ResponseHeaders,
                after: timeouts.response_header,
            },
            Failure::Connect(detail) => UpstreamError::Unreachable { host, detail },
            Failure::Handshake(detail) => UpstreamError::Tls { host, detail },
            Failure::Other(detail) => UpstreamError::Protocol { host, detail },
            Failure::Built(e) => e,
            Failure::Proxy(p) => UpstreamError::Proxy {
                host,
                proxy: p.proxy,
                problem: p.problem,
            },
        }
    }
}

fn classify(err: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            return match connect {
                ConnectError::Direct(TcpConnectError::TimedOut) => Failure::ConnectTimeout,
                ConnectError::Direct(tcp) => Failure::Connect(chain(tcp)),
                ConnectError::Proxy(p) => Failure::Proxy(p.clone()),
            };
        }
        source = e.source();
    }
    if err.is_connect() {
        Failure::Handshake(chain(err))
    } else {
        Failure::Other(chain(err))
    }
}

/// The verifier of `insecure: true` registries: accepts any certificate, still checks that the
/// handshake signatures are sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
