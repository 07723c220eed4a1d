//! The `outpost` binary: a thin command line over the library crates. `cli` parses the
//! arguments; each command lives in its own module under `commands/` and turns its arguments
//! into the plain option structs of the library it drives.
//!
//! Exit codes: 0 success, 2 configuration error, 1 anything else. Errors go to stderr.

mod cli;
mod commands;
#[cfg(test)]
mod compose_wiring;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
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

/// glibc gives every thread that allocates an arena of its own (up to eight per core) and keeps
/// freed memory there for reuse. outpost's heap is mostly body chunks that one thread allocates
/// and another frees, so two arenas do the same work and hold back less memory. An operator's
/// `MALLOC_ARENA_MAX` wins. (The workspace's one `unsafe`: a libc call, no memory handling.)
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
