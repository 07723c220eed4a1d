//! The registry listener: binding, startup, the service every request goes through, graceful
//! shutdown.
//!
//! Connections are limited separately from requests, both in the accept loop
//! ([`crate::listen`]): open connections (in all and per client address) and requests in flight
//! (each until its response body has been sent). One shutdown signal
//! (dropping [`Running`], or [`Running::stop`]) stops accepting and lets in-flight transfers
//! finish within a grace period; the binary turns SIGINT/SIGTERM into it.
//!
//! Startup order: the configuration is checked, the listener (and the admin listener, when
//! configured) is bound, and only then is the store opened and reconciled, in the background, so
//! `/healthz` and `/metrics` answer at once and `/readyz` reports the reconcile. Registry requests
//! that arrive meanwhile wait for it (see [`crate::admin`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{Config, TlsFiles};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::access_log;
use crate::admin::{self, Endpoint, Phase, Status};
use crate::api;
use crate::app::{AppError, Parts};
use crate::auth::{Authenticator, Htpasswd};
use crate::body::Body;
use crate::listen::{self, Limits, Peer};
use crate::metrics::{self, Metrics};

/// Open connections at most; further ones wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// Open connections from one client address at most (a node's containerd needs a few dozen;
/// a load test from one host a thousand).
const MAX_PER_ADDRESS: usize = 1024;
/// Requests in flight at most, over all connections, each until its body has been sent.
const MAX_REQUESTS: usize = 512;
/// Requests in flight from one client address at most: a quarter of all, so a flood from one
/// host (h2load, a misbehaving node) leaves the rest to everyone else.
const MAX_REQUESTS_PER_ADDRESS: usize = MAX_REQUESTS / 4;
/// How long a new connection may take to send its first bytes, and a request head.
const FIRST_BYTES: Duration = Duration::from_secs(10);
/// How long a connection may stay open without a request in flight.
const IDLE: Duration = Duration::from_secs(60);
/// HTTP/2 streams per connection, and bytes buffered per stream for sending.
const H2_STREAMS: u32 = 32;
const H2_SEND_BUFFER: usize = 64 << 10;
/// How long in-flight transfers may run on after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How many bytes of a response hyper queues for a connection before it stops pulling the body
/// (hyper's default is ~400 KiB, per connection); also the largest request head accepted.
const WRITE_QUEUE: usize = 64 << 10;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (outpost.admin.listen): {source}")]
    AdminListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] certs::CertsError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Htpasswd(#[from] crate::auth::HtpasswdError),
    /// The configuration cannot be served as it stands ([`config::Config::serving_problem`]).
    #[error("{0}")]
    Refused(String),
    /// The store could not be opened: the reason.
    #[error("{0}")]
    NotReady(String),
}

/// A server started by [`start`]. Dropping it stops accepting at once; [`Running::stop`] also
/// waits for in-flight requests (up to the grace period).
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address, when `outpost.admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    status: Arc<Status>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    admin_task: Option<JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the store is open and reconciled (`/readyz` answers 200); the error says
    /// why it could not be opened.
    pub async fn ready(&self) -> Result<(), ServeError> {
        self.status
            .ready()
            .await
            .map(drop)
            .map_err(|reason| ServeError::NotReady(reason.to_string()))
    }

    /// The process's metrics, as `/metrics` shows them.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.status.metrics()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts serving `config` in the background and returns once the store is open:
/// [`start_listening`], then [`Running::ready`].
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let running = start_listening(config).await?;
    running.ready().await?;
    Ok(running)
}

/// Binds `config.listen` (and `config.admin_listen`) and serves in the background; returns once
/// listening, while the store is still being opened (see [`Running::ready`]).
pub async fn start_listening(config: Config) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(metrics.clone()));
    if let Some(problem) = config.serving_problem() {
        metrics::config_refused(&problem);
        return Err(ServeError::Refused(problem));
    }
    let auth = match &config.client_auth.htpasswd {
        Some(path) => {
            let htpasswd = Htpasswd::load(path)?;
            tracing::info!(file = %path.display(), users = htpasswd.users(), "clients log in with Basic credentials (outpost.auth.htpasswd)");
            Some(Arc::new(Authenticator::new(htpasswd)))
        }
        None => None,
    };
    if let Some(ca) = &config.client_auth.client_ca {
        tracing::info!(ca = %ca.display(), "clients present a certificate of this CA (outpost.tls.clientCa)");
    }
    if config.client_auth.anonymous && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "every client that reaches this address may pull through the stored credentials and read the store (outpost.auth.anonymous: true)");
    }
    let parts = Parts::new(config, metrics.clone())
        .inspect_err(|e| metrics::config_refused(&e.to_string()))?;
    let listen = parts.config.listen;
    let bound = |source| ServeError::Listen {
        addr: listen,
        source,
    };
    let listener = listen::bind(listen).map_err(bound)?;
    let addr = listener.local_addr().map_err(bound)?;
    let (admin_listener, admin_addr) = match parts.config.admin_listen {
        Some(admin) => {
            let bound = |source| ServeError::AdminListen {
                addr: admin,
                source,
            };
            let listener = listen::bind(admin).map_err(bound)?;
            let addr = listener.local_addr().map_err(bound)?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };
    let (shutdown, signal) = watch::channel(false);
    let tls = match &parts.config.tls {
        Some(files) => {
            let client_ca = parts.config.client_auth.client_ca.as_deref();
            Some(tls_acceptor(files, client_ca, signal.clone())?)
        }
        None => None,
    };
    let admin_task =
        admin_listener.map(|l| tokio::spawn(admin::serve(l, status.clone(), signal.clone())));
    let front = Front {
        status: status.clone(),
        admin_here: admin_addr.is_none(),
        auth,
    };
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        max_per_address: MAX_PER_ADDRESS,
        max_requests: MAX_REQUESTS,
        max_requests_per_address: MAX_REQUESTS_PER_ADDRESS,
        first_bytes: FIRST_BYTES,
        header_read_timeout: FIRST_BYTES,
        first_request: FIRST_BYTES,
        idle: IDLE,
        write_queue: Some(WRITE_QUEUE),
        h2_streams: H2_STREAMS,
        h2_send_buffer: H2_SEND_BUFFER,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    let service = service(front);
    let task = tokio::spawn(listen::serve(listener, tls, limits, service, signal));
    let opening = status.clone();
    tokio::spawn(async move {
        let dir = parts.config.data_dir.clone();
        match parts.open().await {
            Ok(app) => opening.set_ready(Arc::new(app)),
            Err(e) => {
                tracing::error!(data_dir = %dir.display(), error = %e, "cannot open the store");
                opening.set_failed(e.to_string());
            }
        }
    });
    Ok(Running {
        addr,
        admin_addr,
        status,
        shutdown,
        task: Some(task),
        admin_task,
    })
}

/// How often the certificate files are checked for changes.
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The TLS acceptor, and a task that reloads the certificate when its files change or on SIGHUP
/// (new handshakes get the new certificate; open connections are untouched).
fn tls_acceptor(
    files: &TlsFiles,
    client_ca: Option<&std::path::Path>,
    mut signal: watch::Receiver<bool>,
) -> Result<TlsAcceptor, ServeError> {
    let tls = certs::ServerTls::with_client_ca(&files.cert, &files.key, client_ca)?;
    let acceptor = TlsAcceptor::from(tls.server_config());
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut interval = tokio::time::interval(CERT_RELOAD_INTERVAL);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(hup) => hup.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let result = tokio::select! {
                _ = interval.tick() => tls.reload_if_changed(),
                _ = hangup => tls.reload(),
                _ = signal.changed() => return,
            };
            match result {
                Ok(true) => {
                    tracing::info!(cert = %tls.cert_path().display(), "reloaded the TLS certificate")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "keeping the previous TLS certificate"),
            }
        }
    });
    Ok(acceptor)
}

/// What the main listener serves: the app once it is open, and the admin endpoints unless they
/// have their own listener.
#[derive(Clone)]
struct Front {
    status: Arc<Status>,
    admin_here: bool,
    /// `outpost.auth.htpasswd`, when set.
    auth: Option<Arc<Authenticator>>,
}

/// What every request of the registry listener goes through, outermost first. Around it,
/// [`crate::listen`] has applied the connection limits, the client's address, and the request
/// slot (at most [`MAX_REQUESTS`] in flight, each held until its response body has been sent).
fn service(
    front: Front,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
       + Send
       + Sync {
    // Client authentication first (mutual TLS was checked by the handshake): nothing, not even
    // the admin endpoints, is answered to a client that did not log in; a refusal is logged.
    // Then the handler: never fails (errors are OCI error responses); the access log line is
    // written when the response body ends, so it knows the bytes sent. The admin endpoints (when
    // served here) bypass the log and the request metrics: scrapes are not traffic. Registry
    // requests that arrive while the store opens wait for it (up to a few seconds).
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let front = front.clone();
        async move {
            let started = Instant::now();
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let head = method == Method::HEAD;
            if let Some(auth) = &front.auth {
                let client = request
                    .extensions()
                    .get::<Peer>()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.0.ip());
                if let Err(error) = auth.check(request.headers(), client).await {
                    let metrics = front.status.metrics();
                    let response = error.into_response(head);
                    return Ok(access_log::wrap(response, method, path, started, metrics));
                }
            }
            if front.admin_here && (head || method == Method::GET) {
                if let Some(endpoint) = Endpoint::parse(&path) {
                    return Ok(front.status.respond(endpoint, head));
                }
            }
            let app = match front.status.phase() {
                Phase::Ready(app) => Ok(app),
                _ => front.status.app(admin::STARTUP_WAIT).await,
            };
            let response = match app {
                Ok(app) => api::handle(app, request).await,
                Err(error) => error.into_response(head),
            };
            let metrics = front.status.metrics();
            Ok::<_, Infallible>(access_log::wrap(response, method, path, started, metrics))
        }
    })
}
