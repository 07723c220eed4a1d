//! Configuration: YAML files in, a validated [`Config`] out.
//!
//! The steps, one module each, in the order [`load`] runs them:
//!
//! - `file`: read and parse ONE file into its serde shape (every field optional). Scalars are
//!   parsed at the edge into the newtypes of `values` (domains, references, sizes, durations,
//!   PEM certificates), so a bad value is reported with its file, key path and line.
//! - `merge`: fold the files in order, later values winning key by key.
//! - `resolve`: defaults, base64 passwords, prefixes, the provider registry: the [`Config`].
//! - `matrix`: the support matrix (forbidden pairs are errors) and the warnings.
//! - `table`: the routing table that `outpost check` prints ([`routing_table`]).
//!
//! [`ConfigError`] messages name the file, the key path, the line where known, and the fix.
//! Secrets are [`Secret`]s once resolved and redacted while raw; no error, warning or table row
//! contains one.

mod error;
mod file;
mod matrix;
mod merge;
mod model;
mod resolve;
mod table;
mod values;

use std::io::Write as _;
use std::path::PathBuf;

pub use error::{ConfigError, Conflict, Feature};
pub use model::*;
pub use table::{render_text, routing_table, RouteRow};
pub use values::ByteSize;

use crate::cli::{CheckArgs, Failure};

/// A loaded configuration and the warnings about it (one sentence each, saying what to do).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Load, merge (later files win, key by key), validate and resolve `files`.
/// No files gives [`Config::default()`].
pub fn load(files: &[PathBuf]) -> Result<Loaded, ConfigError> {
    let parsed = files
        .iter()
        .map(|path| file::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge::merge_all(parsed.iter().map(|f| &f.content));
    let config = resolve::resolve(&merged, &parsed)?;
    matrix::check(&config, &merged, &parsed)?;
    let warnings = matrix::warnings(&config, &merged, &parsed);
    Ok(Loaded { config, warnings })
}

/// `outpost check`: print the routing table (text, or JSON with `--json`) to stdout and the
/// warnings to stderr; a configuration error becomes exit code 2.
pub fn check_command(args: CheckArgs) -> Result<(), Failure> {
    let loaded = load(&args.config.files).map_err(|e| Failure::Config(e.to_string()))?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let rows = routing_table(&loaded.config);
    let text = if args.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| Failure::Other(anyhow::anyhow!("cannot print the table as JSON: {e}")))?;
        json + "\n"
    } else {
        render_text(&rows)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`outpost check | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Other(
            anyhow::anyhow!("cannot write the routing table to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}
