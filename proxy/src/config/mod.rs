//! Configuration: YAML files in, a validated [`Config`] out.

mod model;

pub use model::*;

use crate::cli::{CheckArgs, Failure};

pub fn check_command(_args: CheckArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!("not implemented yet")))
}
