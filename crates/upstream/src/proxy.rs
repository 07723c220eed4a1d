//! Upstream connections through the site's HTTP proxy ([`oci::ProxySettings`]).
//!
//! [`ProxyConnector`] is the TCP layer under hyper-rustls: for each new connection it decides,
//! from the target URI's scheme, host and port, whether to connect directly or through a proxy.
//! An HTTPS target gets a `CONNECT host:port` tunnel (TLS to the upstream then runs inside it,
//! with the upstream's own CAs and `insecure` setting); a plain-HTTP target gets a connection to
//! the proxy marked as proxied, so hyper sends absolute-form requests, and [`Transport`] adds
//! `Proxy-Authorization`. The proxy's credentials go only to the proxy; a failure of the proxy
//! hop is a [`ProxyFailure`] that names the proxy (its password redacted), not the upstream.
//!
//! [`Transport`]: crate::transport

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes};
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use oci::{ProxyOrigin, ProxySettings, ProxyUrl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::connect::{chain, TcpConnectError, TcpConnector, USER_AGENT};

/// The longest answer to `CONNECT` read before giving up on it.
const MAX_CONNECT_ANSWER: usize = 16 << 10;

/// Which proxy (if any) a connection to `uri` goes through.
pub(crate) fn route<'a>(settings: Option<&'a ProxySettings>, uri: &Uri) -> Option<&'a ProxyUrl> {
    let settings = settings?;
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host()?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    settings.proxy_for(https, host, port)
}

/// `Proxy-Authorization: Basic …` for a proxy with credentials.
pub(crate) fn authorization(proxy: &ProxyUrl) -> Option<HeaderValue> {
    let c = proxy.credentials.as_ref()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        c.username,
        c.password.expose()
    ));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Where the proxy for `https` (or plain-HTTP) upstreams is configured, for messages.
pub(crate) fn setting_name(origin: ProxyOrigin, https: bool) -> &'static str {
    match (origin, https) {
        (ProxyOrigin::Config, true) => "stylus.site.network.httpsProxy",
        (ProxyOrigin::Config, false) => "stylus.site.network.httpProxy",
        (ProxyOrigin::Environment, true) => "the HTTPS_PROXY (or https_proxy) variable",
        (ProxyOrigin::Environment, false) => "the HTTP_PROXY (or http_proxy) variable",
    }
}

/// The proxy hop failed: which proxy (credentials redacted) and how.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the proxy at {proxy} {problem}")]
pub(crate) struct ProxyFailure {
    pub proxy: String,
    pub problem: String,
}

impl ProxyFailure {
    fn new(proxy: &ProxyUrl, problem: impl Into<String>) -> ProxyFailure {
        ProxyFailure {
            proxy: proxy.to_string(),
            problem: problem.into(),
        }
    }

    /// The proxy asked for credentials: `status` is its answer (`407 Proxy Authentication
    /// Required`, or `401 Unauthorized` as tinyproxy answers wrong ones to `CONNECT`).
    pub(crate) fn auth(proxy: &ProxyUrl, setting: &str, status: &str) -> ProxyFailure {
        let problem = if proxy.credentials.is_some() {
            format!(
                "refused outpost's credentials ({status}); check the user and password in \
                 {setting}"
            )
        } else {
            format!(
                "asks for credentials ({status}) and none are configured; add \
                 `user:password@` to the proxy URL in {setting}"
            )
        };
        ProxyFailure::new(proxy, problem)
    }
}

/// A connection failure below TLS: to the upstream, or on the way through the proxy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Direct(TcpConnectError),
    #[error(transparent)]
    Proxy(ProxyFailure),
}

/// hyper-rustls' inner connector: direct, or through the proxy that [`route`] picks.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    pub tcp: TcpConnector,
    pub settings: Option<Arc<ProxySettings>>,
    /// For the proxy's `CONNECT` answer (it connects to the upstream before answering).
    pub connect_timeout: Duration,
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(ConnectError::Direct)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let Some(proxy) = route(self.settings.as_deref(), &uri).cloned() else {
            let connecting = tcp.call(uri);
            return Box::pin(async move {
                let io = connecting.await.map_err(ConnectError::Direct)?;
                Ok(Conn::new(io.into_inner(), Bytes::new(), false))
            });
        };
        let origin = self
            .settings
            .as_ref()
            .map_or(ProxyOrigin::Config, |s| s.origin);
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let proxy_uri: Uri = format!("http://{}", proxy.authority())
                .parse()
                .map_err(|e| ConnectError::Proxy(ProxyFailure::new(&proxy, format!("{e}"))))?;
            let stream = match tcp.call(proxy_uri).await {
                Ok(io) => io.into_inner(),
                Err(TcpConnectError::TimedOut) => {
                    return Err(ConnectError::Proxy(ProxyFailure::new(
                        &proxy,
                        format!(
                            "did not accept a connection within {timeout:?} \
                             (upstream.connectTimeout); check that it runs and that {} names it",
                            setting_name(origin, https)
                        ),
                    )))
                }
                Err(e) => {
                    return Err(ConnectError::Proxy(ProxyFailure::new(
                        &proxy,
                        format!(
                            "is not reachable: {}; check that it runs and that {} names it",
                            chain(&e),
                            setting_name(origin, https)
                        ),
                    )))
                }
            };
            if !https {
                return Ok(Conn::new(stream, Bytes::new(), true));
            }
            let target = authority(&uri);
            match tokio::time::timeout(timeout, tunnel(stream, &target, &proxy)).await {
                Ok(Ok((stream, early))) => Ok(Conn::new(stream, early, false)),
                Ok(Err(Tunnel::Auth(status))) => Err(ConnectError::Proxy(ProxyFailure::auth(
                    &proxy,
                    setting_name(origin, true),
                    &status,
                ))),
                Ok(Err(Tunnel::Failed(problem))) => {
                    Err(ConnectError::Proxy(ProxyFailure::new(&proxy, problem)))
                }
                Err(_) => Err(ConnectError::Proxy(ProxyFailure::new(
                    &proxy,
                    format!(
                        "did not answer CONNECT {target} within {timeout:?} (upstream.connectTimeout)"
                    ),
                ))),
            }
        })
    }
}

/// `host:port` of a URI (IPv6 in brackets), with the scheme's port when it has none.
fn authority(uri: &Uri) -> String {
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    format!("{host}:{port}")
}

enum Tunnel {
    /// The proxy's status line: it wants (other) credentials.
    Auth(String),
    Failed(String),
}

/// Asks the proxy for a tunnel to `target`; returns the stream and any bytes the proxy sent
/// after its answer (they belong to the tunnel).
async fn tunnel(
    mut stream: TcpStream,
    target: &str,
    proxy: &ProxyUrl,
) -> Result<(TcpStream, Bytes), Tunnel> {
    let mut request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {}\r\n",
        USER_AGENT
    )
    .into_bytes();
    if let Some(auth) = authorization(proxy) {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let io_failed = |e: io::Error| Tunnel::Failed(format!("dropped the connection: {e}"));
    stream.write_all(&request).await.map_err(io_failed)?;

    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io_failed)?;
        if n == 0 {
            return Err(Tunnel::Failed(format!(
                "closed the connection instead of answering CONNECT {target}"
            )));
        }
        answer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&answer) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or(0);
                let reason = response.reason.unwrap_or_default().to_owned();
                return match code {
                    200..=299 => Ok((stream, Bytes::copy_from_slice(&answer[len..]))),
                    // A CONNECT is answered by the proxy alone: a 401 is the proxy's too
                    // (tinyproxy 1.11 answers wrong credentials so).
                    401 | 407 => Err(Tunnel::Auth(format!("{code} {reason}"))),
                    _ => Err(Tunnel::Failed(format!(
                        "refused the tunnel to {target}: {code} {reason}; check that the proxy \
                         allows CONNECT to that host and port"
                    ))),
                };
            }
            Ok(httparse::Status::Partial) if answer.len() < MAX_CONNECT_ANSWER => {}
            Ok(httparse::Status::Partial) => {
                return Err(Tunnel::Failed(format!(
                    "answered CONNECT with more than {MAX_CONNECT_ANSWER} bytes of headers"
                )))
            }
            Err(e) => {
                return Err(Tunnel::Failed(format!(
                    "answered CONNECT with something that is not HTTP ({e})"
                )))
            }
        }
    }
}

/// One upstream connection: a TCP stream to the upstream, to the proxy (plain-HTTP targets,
/// `proxied`), or a tunnel through it (with the bytes the proxy sent after its answer).
pub(crate) struct Conn {
    io: TokioIo<Stream>,
    proxied: bool,
}

impl Conn {
    fn new(tcp: TcpStream, early: Bytes, proxied: bool) -> Conn {
        Conn {
            io: TokioIo::new(Stream { tcp, early }),
            proxied,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A TCP stream that first yields the bytes read past the proxy's `CONNECT` answer.
struct Stream {
    tcp: TcpStream,
    early: Bytes,
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
}
