//! `ForkLock`: a mutex that a forked child can take even if another thread of the parent held
//! it at the moment of `fork()`. That thread does not exist in the child, so a plain mutex would
//! stay locked forever and the child's next call would hang.
//!
//! The lock word holds the process id of the holder (0: free). A thread that finds it held by
//! another process id is in a forked child and takes the lock over. The data is then as the
//! parent's holder left it mid-operation; callers keep their state consistent at every point a
//! fork can happen (the pipeline only inserts a finished variant), so that is acceptable.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// This process's id, cached: `getpid` is a system call (glibc stopped caching it), and locks
/// taken on every run would pay it each time. A fork handler refreshes it in the child.
pub fn current_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static HOOK: Once = Once::new();
    extern "C" fn refresh_in_child() {
        PID.store(std::process::id(), Ordering::Relaxed);
    }
    HOOK.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: registers a handler that only stores an atomic (async-signal-safe enough
        // for the child side of fork, which runs before any other code of the child).
        unsafe { libc::pthread_atfork(None, None, Some(refresh_in_child)) };
    });
    PID.load(Ordering::Relaxed)
}

pub struct ForkLock<T> {
    holder: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by `holder` (one guard at a time per process), as with
// `std::sync::Mutex`.
unsafe impl<T: Send> Send for ForkLock<T> {}
unsafe impl<T: Send> Sync for ForkLock<T> {}

impl<T> ForkLock<T> {
    pub const fn new(value: T) -> ForkLock<T> {
        ForkLock {
            holder: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Waits for the lock (spinning, then yielding, then sleeping up to 1 ms at a time).
    pub fn lock(&self) -> ForkLockGuard<'_, T> {
        let me = current_pid();
        let mut spins = 0u32;
        loop {
            let held = self.holder.load(Ordering::Relaxed);
            // Free, or held by a thread of another process: this is a forked child.
            let take = held == 0 || held != me;
            if take
                && self
                    .holder
                    .compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return ForkLockGuard { lock: self };
            }
            spins = spins.saturating_add(1);
            match spins {
                0..=64 => std::hint::spin_loop(),
                65..=128 => std::thread::yield_now(),
                _ => std::thread::sleep(std::time::Duration::from_micros(
                    u64::from(spins - 128).min(1000),
                )),
            }
        }
    }
}

/// Exclusive access to a `ForkLock`'s data until dropped.
pub struct ForkLockGuard<'a, T> {
    lock: &'a ForkLock<T>,
}

impl<T> Deref for ForkLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one alive in this process.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for ForkLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference through it.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for ForkLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.holder.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_threads() {
        let lock = std::sync::Arc::new(ForkLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut g = lock.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn a_lock_held_by_another_process_is_taken_over() {
        let lock = ForkLock::new(7);
        // As a forked child sees a lock its parent's thread held: another process id.
        lock.holder
            .store(std::process::id().wrapping_add(1), Ordering::Relaxed);
        assert_eq!(*lock.lock(), 7);
    }
}
