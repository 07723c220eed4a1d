//! The operator endpoints and the startup state they report:
//!
//! - `/healthz`: the process is alive and answering (always `200 ok`);
//! - `/readyz`: `200 ready` once the store is opened and reconciled (and so the listener is up:
//!   the server binds before it opens the store), `503` with the reason before that or when
//!   opening failed;
//! - `/metrics`: the Prometheus text exposition of [`crate::metrics`].
//!
//! They are answered on the main listener, outside `/v2/`, unless `outpost.admin.listen` is set:
//! then [`serve`] answers them on that address (plain HTTP) and the main listener answers 404
//! for them, so a registry port exposed beyond the node does not expose them.
//!
//! [`Status`] is the startup state: the server creates it in the `Starting` phase, binds, and
//! opens the store in the background; requests for the registry API that arrive meanwhile wait
//! for it (up to [`STARTUP_WAIT`]) and are then answered `503 UNAVAILABLE`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::body::{empty, full, Body};
use crate::error::ApiError;
use crate::listen::{self, Limits};
use crate::metrics::{Metrics, Scrape, CONTENT_TYPE};

/// How long a registry request that arrives while the store is being opened waits for it.
pub const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// One of the operator endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
}

impl Endpoint {
    /// The endpoint a request path names (exactly; no trailing slash, no prefix).
    pub fn parse(path: &str) -> Option<Endpoint> {
        match path {
            "/metrics" => Some(Endpoint::Metrics),
            "/healthz" => Some(Endpoint::Healthz),
            "/readyz" => Some(Endpoint::Readyz),
            _ => None,
        }
    }
}

/// Where startup is.
#[derive(Clone)]
pub enum Phase {
    /// Listening; the store is being opened and reconciled.
    Starting,
    /// Serving.
    Ready(Arc<App>),
    /// The store could not be opened: the message says why (the process is about to exit).
    Failed(Arc<str>),
}

/// The startup state and the metrics, shared by the listeners.
pub struct Status {
    metrics: Arc<Metrics>,
    phase: watch::Sender<Phase>,
}

impl Status {
    pub fn new(metrics: Arc<Metrics>) -> Status {
        Status {
            metrics,
            phase: watch::Sender::new(Phase::Starting),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn set_ready(&self, app: Arc<App>) {
        self.phase.send_replace(Phase::Ready(app));
    }

    pub fn set_failed(&self, reason: String) {
        self.phase.send_replace(Phase::Failed(reason.into()));
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Waits until startup has ended: `Ok` when serving, the reason when it failed.
    pub async fn ready(&self) -> Result<Arc<App>, Arc<str>> {
        let mut rx = self.phase.subscribe();
        let phase = rx
            .wait_for(|p| !matches!(p, Phase::Starting))
            .await
            .map(|p| p.clone());
        match phase {
            Ok(Phase::Ready(app)) => Ok(app),
            Ok(Phase::Failed(reason)) => Err(reason),
            // The sender lives in `self`, so the channel cannot close while we wait.
            Ok(Phase::Starting) | Err(_) => Err("outpost stopped while starting".into()),
        }
    }

    /// The app for a registry request: at once when serving, after up to `wait` while starting,
    /// else the `503` to answer.
    pub async fn app(&self, wait: Duration) -> Result<Arc<App>, ApiError> {
        match tokio::time::timeout(wait, self.ready()).await {
            Ok(Ok(app)) => Ok(app),
            Ok(Err(reason)) => Err(ApiError::starting(
                format!("outpost could not start: {reason}"),
                None,
            )),
            Err(_) => Err(ApiError::starting(
                "outpost is starting: the store is being opened and reconciled; retry shortly",
                Some(1),
            )),
        }
    }

    /// The answer of `endpoint`.
    pub fn respond(&self, endpoint: Endpoint, head: bool) -> Response<Body> {
        let phase = self.phase();
        let (status, content_type, body) = match endpoint {
            Endpoint::Healthz => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            Endpoint::Readyz => match &phase {
                Phase::Ready(_) => (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready\n".into(),
                ),
                Phase::Starting => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "starting: the store is being opened and reconciled\n".into(),
                ),
                Phase::Failed(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("failed: {reason}\n"),
                ),
            },
            Endpoint::Metrics => {
                let scrape = match &phase {
                    Phase::Ready(app) => Scrape {
                        ready: true,
                        fills_in_flight: app.cache.as_ref().map_or(0, |c| c.fills_in_flight()),
                        store: app.cache.as_ref().map(|c| c.store().usage()),
                    },
                    _ => Scrape::default(),
                };
                (StatusCode::OK, CONTENT_TYPE, self.metrics.encode(scrape))
            }
        };
        let mut response = text(status, body, head);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The answer to a request on the admin listener: the endpoints for GET and HEAD, 405 for
    /// other methods, 404 for other paths.
    pub fn handle_admin(&self, method: &Method, path: &str) -> Response<Body> {
        let head = method == Method::HEAD;
        let status = match Endpoint::parse(path) {
            Some(endpoint) if head || method == Method::GET => return self.respond(endpoint, head),
            Some(_) => StatusCode::METHOD_NOT_ALLOWED,
            None => StatusCode::NOT_FOUND,
        };
        let body =
            format!("{status}: the admin listener answers GET /metrics, /healthz and /readyz\n");
        text(status, body, head)
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: String, head: bool) -> Response<Body> {
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(if head { empty() } else { full(body) });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, length);
    response
}

/// Serves the admin endpoints on `listener` (plain HTTP/1 and HTTP/2) until `signal` changes.
/// Scrapes are small and few: a few connections at a time, hyper's header-read timer on so an
/// idle client cannot hold one forever.
pub async fn serve(listener: TcpListener, status: Arc<Status>, signal: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = status.handle_admin(request.method(), request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let limits = Limits {
        max_connections: 64,
        max_per_address: 16,
        max_requests: 16,
        max_requests_per_address: 8,
        first_bytes: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(30),
        write_queue: None,
        h2_streams: 4,
        h2_send_buffer: 64 << 10,
        shutdown_grace: Duration::from_secs(5),
    };
    listen::serve(listener, None, limits, service, signal).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_exact_paths() {
        assert_eq!(Endpoint::parse("/metrics"), Some(Endpoint::Metrics));
        assert_eq!(Endpoint::parse("/healthz"), Some(Endpoint::Healthz));
        assert_eq!(Endpoint::parse("/readyz"), Some(Endpoint::Readyz));
        assert_eq!(Endpoint::parse("/v2/metrics"), None);
        assert_eq!(Endpoint::parse("/metrics/"), None);
        assert_eq!(Endpoint::parse("/readyz/x"), None);
    }

    #[tokio::test]
    async fn readiness_follows_the_phase() {
        let status = Status::new(Arc::new(Metrics::new()));
        let readyz = |s: &Status| s.respond(Endpoint::Readyz, false).status();
        assert_eq!(readyz(&status), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status.respond(Endpoint::Healthz, false).status(),
            StatusCode::OK
        );
        let waited = status.app(Duration::from_millis(10)).await;
        assert_eq!(
            waited.err().map(|e| (e.status, e.code)),
            Some((StatusCode::SERVICE_UNAVAILABLE, crate::error::UNAVAILABLE))
        );
        status.set_failed("the data dir is locked".to_owned());
        assert_eq!(readyz(&status), StatusCode::SERVICE_UNAVAILABLE);
        let failed = status.app(Duration::from_secs(5)).await.err().unwrap();
        assert!(failed.message.contains("the data dir is locked"));
    }
}
