//! `outpost serve`: logging, the runtime, the configuration with the command line's overrides,
//! and the one shutdown signal (SIGINT or SIGTERM) that stops the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use config::TlsFiles;

use super::{runtime_with_workers, ConfigArgs, Failure};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to listen on (overrides `outpost.listen`; default 127.0.0.1:5000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store (overrides `outpost.dataDir`; default ./outpost-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (overrides `outpost.tls.cert`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (overrides `outpost.tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Threads that run connections and downloads (overrides `outpost.workerThreads`; default:
    /// one per core, less one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=config::MAX_WORKER_THREADS as i64))]
    pub worker_threads: Option<u16>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG), e.g. `info` or `proxy=debug`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `outpost serve`.
pub fn run(args: ServeArgs) -> Result<(), Failure> {
    // Held to the end: dropping it writes out the lines still queued.
    let _log = init_logging(args.log_format, args.log_level.as_deref())?;
    let loaded = args.config.load().inspect_err(|_| {
        server::config_refused("see the error below; `outpost check` explains the configuration")
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
    if let Some(problem) = config.serving_problem() {
        server::config_refused(&problem);
        return Err(Failure::Config(problem));
    }
    let workers = args
        .worker_threads
        .map(usize::from)
        .or(config.worker_threads.map(usize::from))
        .unwrap_or_else(default_worker_threads);
    runtime_with_workers(Some(workers))?.block_on(async move {
        let running = server::start_listening(config)
            .await
            .map_err(Failure::other)?;
        tracing::info!(
            listen = %running.addr,
            admin = %running.admin_addr.map_or("-".to_owned(), |a| a.to_string()),
            workers = tokio::runtime::Handle::current().metrics().num_workers(),
            "outpost is listening; opening the store"
        );
        tokio::select! {
            ready = running.ready() => ready.map_err(Failure::other)?,
            signal = shutdown_signal() => {
                signal?;
                tracing::info!("shutting down before the store was open");
                running.stop().await;
                return Ok(());
            }
        }
        crate::memory::release_freed();
        tracing::info!("outpost is ready");
        shutdown_signal().await?;
        tracing::info!(
            "shutting down; in-flight transfers get {:?}",
            server::SHUTDOWN_GRACE
        );
        running.stop().await;
        Ok(())
    })
}

/// The worker threads of a server not told how many: one per core (as the process may use them:
/// affinity and cgroup quota), less one, and at least one. A download's hashing and writing run
/// on threads of their own beside the workers, as do the node's own clients (containerd): on a
/// two-core node, two workers and those threads took turns on the cores, and one cold 1 GiB GET
/// took about a fifth more CPU and an eighth more time than with one (BENCHMARKS.md, issue 18).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// What the log writer's buffer holds at most: about 4 000 lines. Past this, a line is dropped
/// and counted rather than a request held up.
const LOG_QUEUE_BYTES: usize = 1 << 20;

/// Logging to stderr from a thread of its own ([`crate::log_queue`]): requests format their
/// lines and queue them; the writer thread writes them out in batches, so a slow reader of
/// stderr (a full pipe, a stalled journald) never holds up a request. Lines that find the queue
/// full are dropped and counted (`outpost_log_lines_dropped_total`).
fn init_logging(
    format: LogFormat,
    level: Option<&str>,
) -> Result<crate::log_queue::Guard, Failure> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|e| {
            eprintln!(
                "outpost: --log-level {level:?} is not a log filter ({e}); logging at \"info\" \
                 (write a level like `debug` or directives like `info,upstream=debug`)"
            );
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (queue, guard) =
        crate::log_queue::LogQueue::start(LOG_QUEUE_BYTES, std::io::stderr(), "outpost-log")
            .map_err(|e| Failure::other(format!("could not start the log writer thread: {e}")))?;
    let counter = queue.clone();
    server::count_dropped_log_lines(move || counter.dropped());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(queue);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(guard)
}

/// Resolves on SIGINT or SIGTERM: the one signal that stops everything.
async fn shutdown_signal() -> Result<(), Failure> {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::other(format_args!("cannot handle SIGTERM: {e}")))?;
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    Ok(())
}
