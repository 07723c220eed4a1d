//! One module per command: its arguments (clap) and what it does with them; and what the
//! commands share: `--config` ([`ConfigArgs`]), how a command fails ([`Failure`]), a runtime.

use std::path::PathBuf;

use clap::Args;

pub mod archive;
pub mod certs;
pub mod check;
pub mod containerd_config;
pub mod maintenance;
pub mod prefetch;
pub mod serve;

/// `--config FILE`, repeatable; later files win.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// A YAML configuration file (Palette user-data, OS-pack values or outpost's own settings).
    /// May be given several times; files are merged in order, later values win.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl ConfigArgs {
    /// Loads the files, then the proxy of the environment when they set none; a refused
    /// configuration is [`Failure::Config`].
    pub fn load(&self) -> Result<config::Loaded, Failure> {
        let mut loaded = config::load(&self.files).map_err(|e| Failure::Config(e.to_string()))?;
        loaded
            .apply_proxy_environment(|name| std::env::var(name).ok())
            .map_err(Failure::Config)?;
        Ok(loaded)
    }
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The configuration is invalid or forbidden: exit 2.
    Config(String),
    /// Anything else: exit 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl Failure {
    /// Any displayable error as [`Failure::Other`].
    pub fn other(e: impl std::fmt::Display) -> Failure {
        Failure::Other(anyhow::anyhow!("{e}"))
    }
}

/// A multi-threaded tokio runtime for a command that needs one, with tokio's default number of
/// worker threads (one per core).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with_workers(None)
}

/// A multi-threaded tokio runtime with `workers` worker threads (`None`: tokio's default).
pub fn runtime_with_workers(workers: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().map_err(Failure::other)
}
