//! `outpost certs generate`.

use crate::cli::{CertsGenerateArgs, Failure};

pub fn generate_command(_args: CertsGenerateArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!("not implemented yet")))
}
