//! `outpost verify` and `outpost gc`: store maintenance from the command line. Both open the data
//! dir themselves, so they run while no `outpost serve` holds it. With `outpost.sharedStore`
//! configured they cover the shared store too (after the node's own; see the `shared` crate's
//! `maintenance.rs` for what gc keeps there).

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use config::{ByteSize, Config};
use storage::{Store, StoreError};

use super::{ConfigArgs, Failure};

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
    /// In the shared store, how old a blob no tag reaches must be before gc removes it.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub shared_grace: std::time::Duration,
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>().map(|b| b.0)
}

/// `outpost verify [--repair]`: re-hashes every stored blob (and every shared one).
pub fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let config = load(&args.config)?;
    let store = open(args.data_dir.unwrap_or(config.data_dir))?;
    let report = store.verify(args.repair);
    print!("{report}");
    let mut corrupt = report.corrupt.len();
    if let Some(settings) = &config.shared_store {
        let shared = shared_store(settings)?;
        let report = super::runtime()?
            .block_on(shared.verify(args.repair))
            .map_err(|e| Failure::Other(anyhow!(e)))?;
        print!("{report}");
        corrupt += report.corrupt.len();
        if !report.errors.is_empty() {
            return Err(Failure::Other(anyhow!(
                "the shared store could not be verified completely (see the errors above)"
            )));
        }
    }
    if corrupt > 0 && !args.repair {
        return Err(Failure::Other(anyhow!(
            "{corrupt} corrupt blobs found; run `outpost verify --repair` to remove them"
        )));
    }
    Ok(())
}

fn shared_store(settings: &config::SharedStoreConfig) -> Result<shared::SharedStore, Failure> {
    shared::SharedStore::new(&server::shared_settings(settings))
        .map_err(|e| Failure::Other(anyhow!(e)))
}

/// `outpost gc [--max-size SIZE]`: applies the size limit now (and gc's rule to the shared
/// store).
pub fn gc(args: GcArgs) -> Result<(), Failure> {
    let config = load(&args.config)?;
    if let Some(settings) = &config.shared_store {
        let shared = shared_store(settings)?;
        let report = super::runtime()?
            .block_on(shared.gc(settings.max_size, args.shared_grace))
            .map_err(|e| Failure::Other(anyhow!(e)))?;
        print!("{report}");
        if args.max_size.or(config.cache.max_size).is_none() {
            return Ok(());
        }
    }
    let max_size = match args.max_size.or(config.cache.max_size) {
        Some(max) => max,
        None => {
            return Err(Failure::Other(anyhow!(
                "no size limit: set `outpost.cache.maxSize` in the configuration or pass --max-size"
            )))
        }
    };
    let store = open(args.data_dir.unwrap_or(config.data_dir))?;
    let report = store.gc(max_size);
    print!("{report}");
    if !report.to_string().ends_with('\n') {
        println!();
    }
    store
        .flush_access()
        .map_err(|e| Failure::Other(anyhow!(e)))?;
    Ok(())
}

fn load(config: &ConfigArgs) -> Result<Config, Failure> {
    config.load().map(|loaded| loaded.config)
}

fn open(dir: PathBuf) -> Result<Store, Failure> {
    Store::open(&dir).map_err(|e| match e {
        StoreError::Locked { .. } => Failure::Other(anyhow!(
            "{e}; `outpost verify` and `outpost gc` need the data dir to themselves: stop \
             `outpost serve` first (e.g. `systemctl stop outpost`)"
        )),
        other => Failure::Other(anyhow!(other)),
    })
}
