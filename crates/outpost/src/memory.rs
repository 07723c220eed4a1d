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
    // SAFETY: frees mimalloc's empty pages and returns them to the system; thread-safe.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Small allocations from mimalloc, large ones and everything before `main` from the system
/// allocator (glibc).
///
/// A manifest hit allocates and frees a few dozen small objects (headers, the request and its
/// futures, lookup keys); after thousands of distinct requests glibc's heap spends its time
/// consolidating and searching bins (`_int_malloc`, `malloc_consolidate`), where mimalloc's
/// per-thread, per-size free lists stay flat. Large buffers (sled's I/O buffers, body batches)
/// stay with glibc, which maps them lazily and unmaps them on free; mimalloc would keep them
/// resident. mimalloc starts in `main` ([`start_small_allocator`]), after its options are set:
/// with arenas committed eagerly (its default on Linux), freed pages stay resident (an idle
/// store of 100 000 blobs: 63 MiB instead of 27).
pub struct Split;

/// From this size on, an allocation goes to the system allocator.
const LARGE: usize = 64 * 1024;

/// Whether small allocations go to mimalloc yet.
static SMALL_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// mimalloc 3's `mi_option_arena_eager_commit` (the `mi_option_e` enum of its `mimalloc.h`;
/// the Rust bindings name only mimalloc 2's options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets mimalloc's options and sends small allocations to it from now on. Called first thing
/// in `main`: an option read after the first allocation would be too late.
#[allow(unsafe_code)]
pub fn start_small_allocator() {
    // SAFETY: sets an option value; mimalloc has not allocated anything yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    SMALL_READY.store(true, std::sync::atomic::Ordering::Release);
}

impl Split {
    fn small(layout: &std::alloc::Layout) -> bool {
        layout.size() < LARGE && SMALL_READY.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `ptr`, a block of `layout`, came from mimalloc (a small block allocated before
    /// `main` came from the system).
    #[allow(unsafe_code)]
    fn from_small(ptr: *mut u8, layout: &std::alloc::Layout) -> bool {
        // SAFETY: a lookup of an address in mimalloc's own map; it reads no memory at `ptr`.
        layout.size() < LARGE && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
    }
}

// SAFETY: a block is freed by the allocator that made it: large ones by size (the caller passes
// the layout back unchanged), small ones by asking mimalloc whether the address is its own.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Split::small(&layout) {
            mimalloc::MiMalloc.alloc(layout)
        } else {
            std::alloc::System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Split::small(&layout) {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        } else {
            std::alloc::System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if Split::from_small(ptr, &layout) {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        } else {
            std::alloc::System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let new_layout = std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
        match (Split::from_small(ptr, &layout), Split::small(&new_layout)) {
            (true, true) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
            (false, false) => std::alloc::System.realloc(ptr, layout, new_size),
            _ => {
                // Crossing sides: a block from the other allocator, the bytes, the old one freed.
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}
