//! The TCP layer under every upstream connection: hyper-util's `HttpConnector` with an overall
//! deadline, and its failures told apart from TLS failures.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What outpost calls itself upstream (and to proxies).
pub(crate) const USER_AGENT: &str = concat!("outpost/", env!("CARGO_PKG_VERSION"));

/// `outer: inner: innermost`, skipping repeats.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// A TCP connect failure, told apart from a TLS failure on an established connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TcpConnectError {
    #[error("connect timed out")]
    TimedOut,
    #[error("connect failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// hyper-util's `HttpConnector` with an overall connect deadline (DNS included) and errors that
/// say they happened before TLS.
#[derive(Clone)]
pub(crate) struct TcpConnector {
    pub inner: HttpConnector,
    pub timeout: Duration,
}

impl tower::Service<Uri> for TcpConnector {
    type Response = TokioIo<TcpStream>;
    type Error = TcpConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| TcpConnectError::Failed(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(TcpConnectError::Failed(Box::new(e))),
                Err(_) => Err(TcpConnectError::TimedOut),
            }
        })
    }
}
