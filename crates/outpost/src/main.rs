//! The `outpost` binary: a thin command line over the library crates. `cli` parses the
//! arguments; each command lives in its own module under `commands/` and turns its arguments
//! into the plain option structs of the library it drives.
//!
//! Exit codes: 0 success, 2 configuration error, 1 anything else. Errors go to stderr.

mod cli;
mod commands;
#[cfg(test)]
mod compose_wiring;
mod log_queue;
mod memory;

fn main() -> std::process::ExitCode {
    memory::limit_malloc_arenas();
    raise_open_files_limit();
    cli::main()
}

/// Raises the soft limit on open files to the hard one: every connection and every blob being
/// read or written is a file descriptor, and the server's own limits (connections, requests)
/// are what should bound them, not a default soft limit of 1024.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}
