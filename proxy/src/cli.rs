//! The `outpost` command line: argument parsing and dispatch to the module that does the work.
//!
//! Exit codes: 0 success, 2 configuration error, 1 anything else. Errors go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Load and validate the configuration, print the routing table and any warnings.
    Check(CheckArgs),
    /// Create TLS material for serving HTTPS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Write containerd's hosts directory (hosts.toml per registry) pointing at outpost.
    ContainerdConfig(ContainerdConfigArgs),
    /// Pull images into the local registry (provider and infrastructure images first).
    Prefetch(PrefetchArgs),
    /// Write stored images to an OCI image layout archive (for air-gapped nodes).
    Export(ExportArgs),
    /// Load an OCI image layout archive into the store, verifying every digest.
    Import(ImportArgs),
    /// Re-hash every stored blob and report (with --repair, remove) corrupt ones.
    Verify(VerifyArgs),
    /// Apply the cache size limit now: remove least-recently-used blobs.
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Directory of the embedded store (overrides `outpost.dataDir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Remove corrupt blobs (and tags of corrupt manifests); they are fetched again on the next pull.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Directory of the embedded store (overrides `outpost.dataDir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The size limit to apply, e.g. `50GiB` (overrides `outpost.cache.maxSize`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<crate::config::ByteSize>().map(|b| b.0)
}

/// `--config FILE`, repeatable; later files win.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// A YAML configuration file (Palette user-data, OS-pack values or outpost's own settings).
    /// May be given several times; files are merged in order, later values win.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

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

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the routing table as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a CA (ca.pem, ca-key.pem) and a server certificate signed by it (server.pem, server-key.pem).
    Generate(CertsGenerateArgs),
}

#[derive(Debug, Args)]
pub struct CertsGenerateArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name or IP address for the server certificate; repeatable.
    /// Default: localhost, 127.0.0.1, ::1 and this host's name.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
    /// Validity of the certificates in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// containerd's hosts directory to write (`config_path` in containerd's CRI registry config).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// outpost's URL as containerd reaches it (default: from `outpost.listen` and `outpost.tls`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The CA that signed outpost's certificate, for `ca = ` in hosts.toml.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Leave out the real upstream as `server`, so containerd never falls back to it (air-gapped nodes).
    #[arg(long)]
    pub no_fallback: bool,
}

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Image references, e.g. quay.io/kairos/core:v1 or alpine:3.19.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// A file with one image reference per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Platform to fetch from a multi-platform image, repeatable (default: linux/amd64 and linux/arm64).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<String>,
    /// Blobs of one image downloaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Pull through a running outpost (it stores the content), e.g. http://127.0.0.1:5000.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// PEM CA trusted for an https --server (e.g. the ca.pem of `outpost certs generate`).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub server_ca: Option<PathBuf>,
    /// Directory of the embedded store (overrides `outpost.dataDir`); not with --server.
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// Do not prefetch the provider image (`options.system.uri`).
    #[arg(long)]
    pub no_provider: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The archive to write (an OCI image layout in a tar file).
    #[arg(long, value_name = "FILE.tar")]
    pub out: PathBuf,
    /// Stored images to export, e.g. quay.io/kairos/core:v1.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Directory of the embedded store (overrides `outpost.dataDir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The archive to load (an OCI image layout in a tar file, e.g. from `outpost export` or skopeo).
    #[arg(value_name = "FILE.tar")]
    pub archive: PathBuf,
    /// Directory of the embedded store (overrides `outpost.dataDir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => crate::server::serve_command(args),
        Command::Check(args) => crate::config::check_command(args),
        Command::Certs(CertsCommand::Generate(args)) => crate::certs_cmd::generate_command(args),
        Command::ContainerdConfig(args) => crate::containerd::config_command(args),
        Command::Prefetch(args) => crate::prefetch::prefetch_command(args),
        Command::Export(args) => crate::archive::export_command(args),
        Command::Import(args) => crate::archive::import_command(args),
        Command::Verify(args) => crate::maintenance::verify_command(args),
        Command::Gc(args) => crate::maintenance::gc_command(args),
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
