//! `outpost verify` and `outpost gc`: store maintenance from the command line. Both open the data
//! dir themselves, so they run while no `outpost serve` holds it.

use std::path::PathBuf;

use anyhow::anyhow;
use storage::{Store, StoreError};

use crate::cli::{Failure, GcArgs, VerifyArgs};
use crate::config::Config;

/// `outpost verify [--repair]`: re-hashes every stored blob.
pub fn verify_command(args: VerifyArgs) -> Result<(), Failure> {
    let config = load(&args.config.files)?;
    let store = open(args.data_dir.unwrap_or(config.data_dir))?;
    let report = store.verify(args.repair);
    print!("{report}");
    if !report.corrupt.is_empty() && !args.repair {
        return Err(Failure::Other(anyhow!(
            "{} corrupt blobs found; run `outpost verify --repair` to remove them",
            report.corrupt.len()
        )));
    }
    Ok(())
}

/// `outpost gc [--max-size SIZE]`: applies the size limit now.
pub fn gc_command(args: GcArgs) -> Result<(), Failure> {
    let config = load(&args.config.files)?;
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

fn load(files: &[PathBuf]) -> Result<Config, Failure> {
    crate::config::load(files)
        .map(|loaded| loaded.config)
        .map_err(|e| Failure::Config(e.to_string()))
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
