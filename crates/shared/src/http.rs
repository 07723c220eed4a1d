//! The HTTP client object_store talks S3 through: outpost's own hyper 1 client (HTTP/1.1 for
//! `http://`, rustls with the ring provider and the system's roots for `https://`), not reqwest.
//!
//! Every request has a deadline for its response headers ([`Settings::timeout`]); a body that
//! stalls longer than that between two frames is cut off, so a shared store that stops answering
//! never holds a caller longer than one timeout per step.
//!
//! [`Settings::timeout`]: crate::Settings::timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use object_store::client::{
    ClientOptions, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use tokio::time::Sleep;

/// Builds the hyper client object_store uses (`AmazonS3Builder::with_http_connector`).
#[derive(Debug, Clone)]
pub struct Connector {
    pub timeout: Duration,
}

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(https);
        Ok(HttpClient::new(Service {
            client,
            timeout: self.timeout,
        }))
    }
}

type HyperClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, HttpRequestBody>;

#[derive(Debug)]
struct Service {
    client: HyperClient,
    timeout: Duration,
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| {
                HttpError::new(
                    HttpErrorKind::Timeout,
                    Timeout("no response headers", self.timeout),
                )
            })?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let timeout = self.timeout;
        Ok(response.map(|body| {
            HttpResponseBody::new(Stalling {
                body,
                timeout,
                sleep: None,
            })
        }))
    }
}

#[derive(Debug)]
struct Timeout(&'static str, Duration);

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} within {:?}", self.0, self.1)
    }
}

impl std::error::Error for Timeout {}

/// A response body that fails when no frame arrives for `timeout`.
struct Stalling {
    body: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(
                    frame.map(|f| f.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e))),
                )
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::new(
                        HttpErrorKind::Timeout,
                        Timeout("no body bytes", timeout),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
