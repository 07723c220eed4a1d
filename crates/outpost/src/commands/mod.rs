//! One module per command: its arguments (clap) and what it does with them.

pub mod archive;
pub mod certs;
pub mod check;
pub mod containerd_config;
pub mod maintenance;
pub mod prefetch;
pub mod serve;
