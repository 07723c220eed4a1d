//! The `outpost` binary; see `proxy::cli`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    proxy::cli::main()
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
