//! outpost's configuration: YAML files in, a validated [`Config`] out, and the pure functions
//! over it: [`translate`] (which upstream serves a source) and the [`routing_table`] that
//! `outpost check` prints. No HTTP, no async runtime.
//!
//! The steps of [`load`], one module each, in order:
//!
//! - `file`: read and parse ONE file into its serde shape (every field optional). Scalars are
//!   parsed at the edge into the newtypes of `values` (domains, references, sizes, durations,
//!   PEM certificates), so a bad value is reported with its file, key path and line.
//! - `merge`: fold the files in order, later values winning key by key.
//! - `resolve`: defaults, base64 passwords, prefixes, the provider registry: the [`Config`].
//! - `matrix`: the support matrix (forbidden pairs are errors) and the warnings.
//! - `table`: the routing table that `outpost check` prints ([`routing_table`]).
//!
//! Over the result:
//! - `translate`: [`translate`], source repository to [`oci::Target`] (mapping rules, external
//!   registry, provider credentials), a pure function of the configuration.
//! - `containerd`: containerd's hosts directory (`hosts.toml` per registry) pointing at outpost.
//!
//! [`ConfigError`] messages name the file, the key path, the line where known, and the fix.
//! Secrets are [`Secret`]s once resolved and redacted while raw; no error, warning or table row
//! contains one.

#![forbid(unsafe_code)]

pub mod containerd;
mod error;
mod file;
mod matrix;
mod merge;
mod model;
mod resolve;
mod table;
mod translate;
mod values;

use std::path::PathBuf;

pub use error::{ConfigError, Conflict, Feature};
pub use model::*;
pub use table::{render_text, routing_table, RouteRow};
pub use translate::{translate, translate_path};
pub use values::{ByteSize, MAX_WORKER_THREADS};

/// A loaded configuration and the warnings about it (one sentence each, saying what to do).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// When the files set no proxy (`stylus.site.network.httpProxy`/`httpsProxy`), the proxy
    /// of the environment (`http_proxy`, `https_proxy`, `no_proxy`, lower case first, then
    /// upper case, as curl reads them); when they do, the environment is not read and a warning
    /// says so if it sets one. `var` looks a variable up (`std::env::var(..).ok()`). `Err` names
    /// the variable that does not parse.
    pub fn apply_proxy_environment(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let set_in_env: Vec<&str> = oci::PROXY_VARIABLES
            .iter()
            .copied()
            .filter(|v| var(v).is_some_and(|x| !x.trim().is_empty()))
            .collect();
        if self.config.proxy.is_some() {
            if !set_in_env.is_empty() {
                self.warnings.push(format!(
                    "the environment sets {} but `stylus.site.network` sets the proxy, which wins: \
                     the environment's proxy settings are ignored",
                    set_in_env.join(", ")
                ));
            }
            return Ok(());
        }
        self.config.proxy = oci::ProxySettings::from_env(var)
            .map_err(|e| format!("{e}; fix the variable or unset it"))?;
        Ok(())
    }
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
