//! How the process asks glibc's allocator to hold less memory. These are the workspace's only
//! `unsafe` blocks: libc calls that set or apply an allocator policy, no memory handling.

/// glibc gives every thread that allocates an arena of its own (up to eight per core) and keeps
/// freed memory there for reuse. outpost's heap is mostly body chunks that one thread allocates
/// and another frees, so two arenas do the same work and hold back less memory. An operator's
/// `MALLOC_ARENA_MAX` wins.
#[allow(unsafe_code)]
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Gives the pages of freed memory back to the system. glibc returns only the top of a heap by
/// itself; memory freed below a live allocation stays resident until reused. Opening a big
/// store frees tens of MiB that way (the startup reconcile's working set: ~25 MiB for 100 000
/// blobs), so `serve` calls this once the store is open. Takes a few milliseconds.
#[allow(unsafe_code)]
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the allocator's heaps; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
