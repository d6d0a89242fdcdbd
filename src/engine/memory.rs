//! How the daemon keeps its resident memory from creeping: glibc's allocator bounded
//! at startup, and a run's freed memory given back when it ends.
//!
//! Left to its defaults, glibc gives every thread that allocates while another holds
//! an arena lock an arena of its own (up to eight per core), and lets large blocks
//! raise the size below which freed memory is kept rather than returned. A run's
//! work is spread over the runtime's threads, blocking threads for git and files, and
//! the store's connection threads: each arena kept freed pages of its own, and
//! `scripts/bench-soak.sh` saw the resident memory grow run after run while the live
//! heap stayed flat. Nothing here allocates or frees on its own; it only sets how the
//! allocator behaves. Other allocators and other C libraries are left as they are.

/// At most this many arenas: one per core of the 2-core machine the goals are set on.
/// A thread that finds them all locked waits instead of making another; the threads
/// that allocate most (the runtime's two workers) still rarely meet.
const MAX_ARENAS: i32 = 2;
/// Blocks of this size or more are mapped on their own and unmapped when freed. Setting
/// it turns off glibc's dynamic threshold, which after one large block is freed (a
/// build context, a layer's upload buffer) keeps every later block up to 32 MiB, and
/// up to twice that of free space at an arena's top, inside the arenas.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Bounds glibc's allocator; call it before any other thread starts.
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other
    // thread exists, so no allocation runs beside it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Gives the memory a run freed back to the system. glibc keeps freed memory in the
/// arena of the thread that allocated it, and a run's work is spread over several
/// threads: without this the daemon's resident memory grew by about 18 KiB a run
/// (`scripts/bench-soak.sh`) while its live heap stayed under 4 MiB.
pub(super) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the
    // system; it takes the arenas' locks itself and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
