//! `outpost prefetch`: the command line of [`prefetch::prefetch`], its table and exit status.

use std::path::PathBuf;

use clap::Args;
use oci::Platform;
use prefetch::{ImageReport, Options};

use super::{runtime, ConfigArgs, Failure};

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
    /// Also fetch the referrers of every image (signatures, attestations, SBOMs), with their
    /// manifests and blobs, so they verify offline.
    #[arg(long)]
    pub with_referrers: bool,
}

pub fn run(args: PrefetchArgs) -> Result<(), Failure> {
    let loaded = args.config.load()?;
    let mut config = loaded.config;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    for warning in &loaded.warnings {
        eprintln!("outpost: warning: {warning}");
    }
    let platforms = args
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::other)?;
    let options = Options {
        images: args.images,
        list: args.list,
        platforms,
        jobs: usize::from(args.jobs),
        server: args.server,
        server_ca: args.server_ca,
        include_provider: !args.no_provider,
        with_referrers: args.with_referrers,
        progress: true,
    };
    let report = runtime()?
        .block_on(prefetch::prefetch(config, &options))
        .map_err(Failure::other)?;
    print!("{}", report.table());
    let unstored: Vec<&str> = report
        .images
        .iter()
        .filter(|i| !i.stored && i.error.is_none())
        .map(|i| i.image.as_str())
        .collect();
    if !unstored.is_empty() {
        println!(
            "\nfetched and verified but not stored, as when serving (outpost.infrastructureImages): {}",
            unstored.join(", ")
        );
    }
    let failed: Vec<&ImageReport> = report.images.iter().filter(|i| i.error.is_some()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for image in &failed {
        eprintln!(
            "outpost: {}: {}",
            image.image,
            image.error.as_deref().unwrap_or_default()
        );
    }
    Err(Failure::other(format_args!(
        "{} of {} images were not fetched (see above); run prefetch again to fetch what is missing",
        failed.len(),
        report.images.len()
    )))
}
