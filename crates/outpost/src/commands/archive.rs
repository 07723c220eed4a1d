//! `outpost export` and `outpost import`: the command lines of the `archive` crate.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Args;
use oci::{ImageRef, Registry};
use storage::Store;

use super::{ConfigArgs, Failure};

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

/// The store of the configuration's data dir (`--data-dir` applied) and its default registry.
fn open_store(
    config: &ConfigArgs,
    data_dir: Option<PathBuf>,
) -> Result<(Store, Registry), Failure> {
    let mut config = config.load()?.config;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    let store = Store::open(&config.data_dir).map_err(Failure::other)?;
    Ok((store, config.default_registry))
}

/// `outpost export`.
pub fn export(args: ExportArgs) -> Result<(), Failure> {
    let (store, default) = open_store(&args.config, args.data_dir)?;
    let images = args
        .images
        .iter()
        .map(|name| ImageRef::parse(name, &default))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::other)?;
    let report = archive::export(&store, &images, &args.out).map_err(Failure::other)?;
    print!("{report}");
    Ok(())
}

/// `outpost import`.
pub fn import(args: ImportArgs) -> Result<(), Failure> {
    let (store, default) = open_store(&args.config, args.data_dir)?;
    let report = archive::import(&store, &args.archive, &default, SystemTime::now())
        .map_err(Failure::other)?;
    print!("{report}");
    Ok(())
}
