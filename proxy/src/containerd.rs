//! `outpost containerd-config`: containerd's hosts directory pointing at outpost.

use crate::cli::{ContainerdConfigArgs, Failure};

pub fn config_command(_args: ContainerdConfigArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!("not implemented yet")))
}
