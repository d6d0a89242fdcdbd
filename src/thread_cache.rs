//! Per-thread allocation caches, on for the threads that serve requests and off for the
//! rest (ARCHITECTURE.md, "Memory").
//!
//! The binary's jemalloc starts with no per-thread caches (`src/main.rs`): a cache keeps
//! freed blocks for its thread, where they cannot merge with their neighbours, and with
//! the caches on a run at a time grew the daemon's memory. Without a cache every
//! allocation takes the one arena's lock, which costs webhook intake a third of its
//! CPU. So the threads that answer requests (the runtime's workers and intake's
//! writer) turn their own cache on with `keep`, and give back what it holds with
//! `empty` whenever they go idle: a burst of requests is served from the caches, and
//! an idle daemon holds nothing in them. Runs execute on blocking threads, which keep
//! none.
//!
//! Elsewhere than Linux (the system's allocator) these do nothing.

use std::cell::Cell;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

/// Turns the calling thread's cache on (once; later calls cost a thread-local read).
pub fn keep() {
    if ON.get() {
        return;
    }
    ON.set(true);
    control::set_cache(true);
}

/// Gives back what the calling thread's cache holds. Emptied at most every 100 ms
/// instead, the caches grew the daemon by 0.8 MiB over 1,000 runs (README, "Soak").
pub fn empty() {
    if ON.get() {
        control::flush();
    }
}

#[cfg(target_os = "linux")]
mod control {
    use std::ffi::{CStr, c_void};

    /// `thread.tcache.enabled`: the calling thread's cache on or off.
    pub fn set_cache(on: bool) {
        let mut value = on;
        // SAFETY: a documented jemalloc control that reads one `bool` from `newp`.
        let _ = unsafe {
            call(
                c"thread.tcache.enabled",
                (&raw mut value).cast::<c_void>(),
                size_of::<bool>(),
            )
        };
    }

    /// `thread.tcache.flush`: the calling thread's cached blocks back to the arena.
    pub fn flush() {
        // SAFETY: a documented jemalloc control that takes no value.
        let _ = unsafe { call(c"thread.tcache.flush", std::ptr::null_mut(), 0) };
    }

    /// # Safety
    /// `new` must point to `length` bytes of the type control `name` takes.
    unsafe fn call(name: &CStr, new: *mut c_void, length: usize) -> i32 {
        // SAFETY: as the caller promises; nothing is read back.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                new,
                length,
            )
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod control {
    pub fn set_cache(_on: bool) {}
    pub fn flush() {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::ffi::c_void;

    /// The calling thread's `thread.tcache.enabled`, read back from jemalloc.
    fn cache_is_on() -> bool {
        let mut value = false;
        let mut length = size_of::<bool>();
        // SAFETY: a documented jemalloc control that writes one `bool` to `oldp`.
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"thread.tcache.enabled".as_ptr(),
                (&raw mut value).cast::<c_void>(),
                &raw mut length,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(status, 0, "jemalloc answers thread.tcache.enabled");
        value
    }

    #[test]
    fn keep_turns_the_cache_on_and_emptying_leaves_it_on() {
        std::thread::spawn(|| {
            super::control::set_cache(false);
            assert!(!cache_is_on());
            super::keep();
            assert!(cache_is_on());
            let blocks: Vec<Box<[u8; 48]>> = (0..64).map(|_| Box::new([7; 48])).collect();
            drop(blocks);
            super::empty();
            assert!(cache_is_on());
        })
        .join()
        .unwrap();
    }
}
