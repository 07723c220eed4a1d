//! The listener and the tower stack.

use crate::cli::{Failure, ServeArgs};

pub fn serve_command(_args: ServeArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!("not implemented yet")))
}
