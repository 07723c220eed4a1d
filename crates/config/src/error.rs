//! [`ConfigError`]: why a configuration was refused, naming the file, the key and the fix.
//!
//! No variant carries a secret: messages are built from key paths and from parse errors of
//! non-secret values; `file::parse` drops the quoted value from serde's type errors, since a
//! secret pasted under the wrong key would otherwise be echoed.

use std::fmt;
use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}; check the path and that outpost may read it", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}{}: YAML syntax error: {message}; fix the YAML there (indentation, quoting, a missing `:`)", file.display(), At(*line, *column))]
    Syntax {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    #[error("{}{}: unknown key `{key}` under `outpost:` ({message}); fix the spelling or remove the key", file.display(), At(*line, None))]
    UnknownKey {
        file: PathBuf,
        key: String,
        line: Option<usize>,
        message: String,
    },

    /// A value of the wrong type or malformed (domain, PEM, size, ...). `problem` says the fix.
    #[error("{}{}: key `{key}`: {problem}", file.display(), At(*line, None))]
    Value {
        file: PathBuf,
        key: String,
        line: Option<usize>,
        problem: String,
    },

    /// One or both forbidden pairs of the support matrix.
    #[error("{}", Conflicts(.0))]
    Forbidden(Vec<Conflict>),
}

/// One forbidden pair of features, with what turned each on and the ways out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// e.g. `the local registry`
    pub first: Feature,
    pub second: Feature,
    /// e.g. `set `outpost.localRegistry.enabled: false``
    pub ways_out: Vec<String>,
}

/// A feature of the support matrix and the keys (with files) that turned it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// e.g. `providerCredentials.user in /etc/outpost/values.yaml`
    pub turned_on_by: Vec<String>,
}

struct At(Option<usize>, Option<usize>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

struct Conflicts<'a>(&'a [Conflict]);

impl fmt::Display for Conflicts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} forbidden combination{} of the support matrix:",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for c in self.0 {
            write!(
                f,
                "\n  - {} cannot be used with {}",
                c.first.name, c.second.name
            )?;
            for feature in [&c.first, &c.second] {
                write!(
                    f,
                    "\n      {} is on by: {}",
                    feature.name,
                    feature.turned_on_by.join("; ")
                )?;
            }
            write!(f, "\n      ways out: {}", c.ways_out.join(", or "))?;
        }
        Ok(())
    }
}
