//! The `outpost` command line: the subcommands, the dispatch to `commands/`, and the exit code
//! of each [`Failure`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    archive, certs, check, containerd_config, maintenance, prefetch, serve, Failure,
};

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
