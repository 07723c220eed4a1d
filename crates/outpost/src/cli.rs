//! The `outpost` command line: the subcommands, the arguments they share, how a command fails,
//! and the dispatch to `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::{archive, certs, check, containerd_config, maintenance, prefetch, serve};

/// A pull-through OCI registry proxy for edge Kubernetes nodes.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the proxy.
    Serve(serve::ServeArgs),
    /// Load and validate the configuration, print the routing table and any warnings.
    Check(check::CheckArgs),
    /// Create TLS material for serving HTTPS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Write containerd's hosts directory (hosts.toml per registry) pointing at outpost.
    ContainerdConfig(containerd_config::ContainerdConfigArgs),
    /// Pull images into the local registry (provider and infrastructure images first).
    Prefetch(prefetch::PrefetchArgs),
    /// Write stored images to an OCI image layout archive (for air-gapped nodes).
    Export(archive::ExportArgs),
    /// Load an OCI image layout archive into the store, verifying every digest.
    Import(archive::ImportArgs),
    /// Re-hash every stored blob and report (with --repair, remove) corrupt ones.
    Verify(maintenance::VerifyArgs),
    /// Apply the cache size limit now: remove least-recently-used blobs.
    Gc(maintenance::GcArgs),
}

/// `--config FILE`, repeatable; later files win.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// A YAML configuration file (Palette user-data, OS-pack values or outpost's own settings).
    /// May be given several times; files are merged in order, later values win.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl ConfigArgs {
    /// Loads the files; a refused configuration is [`Failure::Config`].
    pub fn load(&self) -> Result<config::Loaded, Failure> {
        config::load(&self.files).map_err(|e| Failure::Config(e.to_string()))
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

/// A multi-threaded tokio runtime for a command that needs one.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::other)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Certs(certs::CertsCommand::Generate(args)) => certs::run(args),
        Command::ContainerdConfig(args) => containerd_config::run(args),
        Command::Prefetch(args) => prefetch::run(args),
        Command::Export(args) => archive::export(args),
        Command::Import(args) => archive::import(args),
        Command::Verify(args) => maintenance::verify(args),
        Command::Gc(args) => maintenance::gc(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("outpost: configuration error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(error)) => {
            eprintln!("outpost: error: {error:#}");
            ExitCode::from(1)
        }
    }
}
