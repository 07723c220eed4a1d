//! The listener, the per-connection tasks and the tower stack.
//!
//! Connections are limited separately from requests: a semaphore bounds open connections, a
//! tower concurrency limit bounds requests in flight. The TLS handshake runs inside the
//! per-connection task with a timeout, so a silent client never stalls the accept loop. One
//! shutdown signal (SIGINT/SIGTERM, or dropping [`Running`]) stops accepting and lets in-flight
//! transfers finish within a grace period.
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

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;

use crate::access_log;
use crate::admin::{self, Endpoint, Phase, Status};
use crate::api::{self, App, Body};
use crate::cache::Cache;
use crate::cli::{Failure, LogFormat, ServeArgs};
use crate::config::{Config, TlsFiles};
use crate::metrics::{self, Metrics};
use crate::route::Registry;
use crate::upstream::Upstream;

/// Open connections at most; further ones wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;
/// Requests in flight at most, over all connections.
const MAX_REQUESTS: usize = 512;
/// How long a client may take to send its request headers (HTTP/1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight transfers may run on after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How many bytes of a response hyper queues for a connection before it stops pulling the body
/// (hyper's default is ~400 KiB, per connection); also the largest request head accepted.
const WRITE_QUEUE: usize = 64 << 10;

/// `outpost serve`.
pub fn serve_command(args: ServeArgs) -> Result<(), Failure> {
    init_logging(args.log_format, args.log_level.as_deref());
    let loaded = crate::config::load(&args.config.files).map_err(|e| {
        metrics::config_refused("see the error below; `outpost check` explains the configuration");
        Failure::Config(e.to_string())
    })?;
    let mut config = loaded.config;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsFiles { cert, key });
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    runtime.block_on(async move {
        let running = start_listening(config).await?;
        tracing::info!(
            listen = %running.addr,
            admin = %running.admin_addr.map_or("-".to_owned(), |a| a.to_string()),
            "outpost is listening; opening the store"
        );
        tokio::select! {
            ready = running.ready() => ready?,
            _ = shutdown_signal() => {
                tracing::info!("shutting down before the store was open");
                running.stop().await;
                return Ok(());
            }
        }
        tracing::info!("outpost is ready");
        shutdown_signal().await;
        tracing::info!("shutting down; in-flight transfers get {SHUTDOWN_GRACE:?}");
        running.stop().await;
        Ok(())
    })
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|e| {
            eprintln!(
                "outpost: --log-level {level:?} is not a log filter ({e}); logging at \"info\" \
                 (write a level like `debug` or directives like `info,proxy::upstream=debug`)"
            );
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.status
            .ready()
            .await
            .map(drop)
            .map_err(|reason| anyhow::anyhow!("{reason}"))
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
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let running = start_listening(config).await?;
    running.ready().await?;
    Ok(running)
}

/// Binds `config.listen` (and `config.admin_listen`) and serves in the background; returns once
/// listening, while the store is still being opened (see [`Running::ready`]).
pub async fn start_listening(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(metrics.clone()));
    let parts =
        check_config(config, &metrics).inspect_err(|e| metrics::config_refused(&e.to_string()))?;
    let listener = TcpListener::bind(parts.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", parts.config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match parts.config.admin_listen {
        Some(admin) => Some(TcpListener::bind(admin).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {admin} (outpost.admin.listen): {e}")
        })?),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let (shutdown, signal) = watch::channel(false);
    let tls = match &parts.config.tls {
        Some(files) => Some(tls_acceptor(files, signal.clone())?),
        None => None,
    };
    let admin_task =
        admin_listener.map(|l| tokio::spawn(admin::serve(l, status.clone(), signal.clone())));
    let front = Front {
        status: status.clone(),
        admin_here: admin_addr.is_none(),
    };
    let task = tokio::spawn(accept_loop(listener, front, tls, signal));
    let opening = status.clone();
    tokio::spawn(async move {
        let dir = parts.config.data_dir.clone();
        match open_app(parts).await {
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

/// The app a server runs: used by `outpost serve` and, in-process, by `outpost prefetch`. Its
/// metrics start empty (a server creates them first, see [`start_listening`]).
pub async fn build_app(config: Config) -> anyhow::Result<App> {
    open_app(check_config(config, &Arc::new(Metrics::new()))?).await
}

/// The parts of the app that do not need the store, checked before listening.
struct Checked {
    config: Config,
    default_registry: Registry,
    upstream: Upstream,
    metrics: Arc<Metrics>,
}

fn check_config(config: Config, metrics: &Arc<Metrics>) -> anyhow::Result<Checked> {
    let default_registry = Registry::parse(&config.default_registry).ok_or_else(|| {
        anyhow::anyhow!(
            "outpost.defaultRegistry {:?} is not a registry host",
            config.default_registry
        )
    })?;
    let upstream = Upstream::with_metrics(&config.upstream, metrics.clone())?;
    Ok(Checked {
        config,
        default_registry,
        upstream,
        metrics: metrics.clone(),
    })
}

/// Opens (and reconciles) the store and completes the app.
async fn open_app(parts: Checked) -> anyhow::Result<App> {
    // With the local registry disabled no store is opened at all: a pure streaming proxy.
    let cache = if parts.config.local_registry {
        Some(Cache::open(&parts.config).await?)
    } else {
        None
    };
    Ok(App {
        config: Arc::new(parts.config),
        default_registry: parts.default_registry,
        upstream: parts.upstream,
        cache,
        metrics: parts.metrics,
    })
}

/// How often the certificate files are checked for changes.
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The TLS acceptor, and a task that reloads the certificate when its files change or on SIGHUP
/// (new handshakes get the new certificate; open connections are untouched).
fn tls_acceptor(
    files: &TlsFiles,
    mut signal: watch::Receiver<bool>,
) -> anyhow::Result<TlsAcceptor> {
    let tls = certs::ServerTls::new(&files.cert, &files.key)?;
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
}

/// The tower stack every request goes through, outermost first.
fn service(
    front: Front,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
       + Send {
    ServiceBuilder::new()
        // Bound the requests in flight over all connections, so a burst queues instead of
        // exhausting file descriptors and upstream connections. Outside the handler, inside the
        // connection: a waiting request holds no upstream resources.
        .concurrency_limit(MAX_REQUESTS)
        // The handler: never fails (errors are OCI error responses); the access log line is
        // written when the response body ends, so it knows the bytes sent. The admin endpoints
        // (when served here) bypass the log and the request metrics: scrapes are not traffic.
        // Registry requests that arrive while the store opens wait for it (up to a few seconds).
        .service_fn(move |request: Request<Incoming>| {
            let front = front.clone();
            async move {
                let started = Instant::now();
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let head = method == Method::HEAD;
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

async fn accept_loop(
    listener: TcpListener,
    front: Front,
    tls: Option<TlsAcceptor>,
    mut signal: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let service = service(front);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(WRITE_QUEUE)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = signal.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = signal.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(acceptor, stream, peer).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
