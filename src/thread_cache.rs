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
//! The process keeps no freed pages either (decay 0, `src/main.rs`): each page no block
//! uses goes back to the system at once, which a flood of webhooks pays for in system
//! calls, cross-core TLB flushes and page faults as the same pages come and go many
//! times a second. So during a flood of webhooks (`Burst`, begun by intake's writer),
//! freed pages are kept for `BURST_DECAY` and reused; when the last burst ends they all
//! go back.
//!
//! Elsewhere than Linux (the system's allocator) these do nothing.

use std::cell::Cell;
use std::time::Duration;

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

/// How long freed pages are kept during a burst before they go back to the system
/// (jemalloc's decay time: the pages freed within this are reused, not returned and
/// faulted in again). At 5,000 deliveries/s, keeping them took the daemon's CPU from
/// 1.7–1.8 to 1.4–1.5 CPU-s a pass (README, "Webhook intake").
pub const BURST_DECAY: Duration = Duration::from_secs(1);

/// Bursts going on now; freed pages are kept while there is one.
static BURSTS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// A stretch of many requests a second (a flood of webhooks): while one lives,
/// freed pages are kept for `BURST_DECAY`; when the last one is dropped every page kept
/// goes back to the system at once.
#[derive(Debug)]
pub struct Burst(());

impl Burst {
    pub fn begin() -> Burst {
        let mut bursts = BURSTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *bursts == 0 {
            control::set_decay(BURST_DECAY);
        }
        *bursts += 1;
        Burst(())
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        let mut bursts = BURSTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *bursts -= 1;
        if *bursts == 0 {
            // Setting the decay counts every kept page as decayed: all go back now.
            control::set_decay(Duration::ZERO);
        }
    }
}

#[cfg(target_os = "linux")]
mod control {
    use std::ffi::{CStr, c_void};
    use std::time::Duration;

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

    /// `arena.0.dirty_decay_ms` and `arena.0.muzzy_decay_ms` of the one arena
    /// (`narenas:1`, `src/main.rs`): how long freed pages are kept.
    pub fn set_decay(keep: Duration) {
        let millis = isize::try_from(keep.as_millis()).unwrap_or(isize::MAX);
        for name in [c"arena.0.dirty_decay_ms", c"arena.0.muzzy_decay_ms"] {
            let mut value = millis;
            // SAFETY: a documented jemalloc control that reads one `ssize_t` from `newp`.
            let _ = unsafe { call(name, (&raw mut value).cast::<c_void>(), size_of::<isize>()) };
        }
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
    pub fn set_decay(_keep: std::time::Duration) {}
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

    /// The one arena's `dirty_decay_ms` and `muzzy_decay_ms`, read back from jemalloc.
    fn decays() -> (isize, isize) {
        let read = |name: &std::ffi::CStr| {
            let mut value: isize = -2;
            let mut length = size_of::<isize>();
            // SAFETY: a documented jemalloc control that writes one `ssize_t` to `oldp`.
            let status = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    (&raw mut value).cast::<c_void>(),
                    &raw mut length,
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!(status, 0, "jemalloc answers {name:?}");
            value
        };
        (
            read(c"arena.0.dirty_decay_ms"),
            read(c"arena.0.muzzy_decay_ms"),
        )
    }

    #[test]
    fn freed_pages_are_kept_while_a_burst_lasts_and_go_back_when_the_last_ends() {
        let kept = super::BURST_DECAY.as_millis() as isize;
        let first = super::Burst::begin();
        assert_eq!(decays(), (kept, kept));
        let second = super::Burst::begin();
        drop(first);
        assert_eq!(decays(), (kept, kept), "one burst still goes on");
        drop(second);
        assert_eq!(decays(), (0, 0));
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
