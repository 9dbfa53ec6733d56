//! Rayon pools owned by the runtime, one per thread count, shared by every graph.
//!
//! A pool's threads do not survive `fork()`: a child that inherited a pool would wait forever
//! for workers that do not exist. Pools are therefore keyed by process id too, and a child
//! builds its own on first use (the parent's pool object is leaked there, never dropped).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::{Error, ForkLock, Result};

/// Thread count -> (process that built it, pool).
type Pools = HashMap<usize, (u32, Arc<ThreadPool>)>;

/// The pool with `threads` workers: the argument, else `RLX_NUM_THREADS`, else the number of
/// physical cores this process may use (SMT siblings share one core's FMA units, so a second
/// thread per core only adds contention to GEMM-bound work).
pub fn thread_pool(threads: Option<usize>) -> Result<Arc<ThreadPool>> {
    // Fork-safe: a child forked while another thread built a pool can still take the lock.
    static POOLS: OnceLock<ForkLock<Pools>> = OnceLock::new();
    let n = match threads {
        Some(n) => n,
        None => match std::env::var("RLX_NUM_THREADS") {
            Ok(v) => v.trim().parse::<usize>().map_err(|_| {
                Error::Compile(format!(
                    "RLX_NUM_THREADS must be a positive integer, got `{v}`"
                ))
            })?,
            Err(_) => default_threads(),
        },
    };
    if n == 0 || n > 1024 {
        return Err(Error::Compile(format!(
            "thread count must be in 1..=1024, got {n}"
        )));
    }
    let mut pools = POOLS.get_or_init(|| ForkLock::new(Pools::new())).lock();
    let pid = crate::fork_lock::current_pid();
    match pools.remove(&n) {
        Some((owner, p)) if owner == pid => {
            pools.insert(n, (owner, p.clone()));
            return Ok(p);
        }
        // Inherited through fork(): its workers are gone; dropping it could wait on them.
        Some((_, stale)) => std::mem::forget(stale),
        None => {}
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("rlx-cpu-{i}"))
        .build()
        .map_err(|e| Error::Compile(format!("cannot start {n} CPU threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(n, (pid, pool.clone()));
    Ok(pool)
}

/// Runs `f` in a one-thread pool whose only worker is the calling thread: `install` runs in
/// place and every parallel loop inside runs sequentially, with no hand-off to another thread.
/// One such pool per calling thread, dropped with it. `None` (and `f` not run) where it cannot
/// be made: the thread already belongs to a rayon pool.
pub fn on_caller_thread<R: Send>(f: impl FnOnce() -> R + Send) -> Option<R> {
    thread_local! {
        static LOCAL: Option<ThreadPool> = ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build()
            .ok();
    }
    LOCAL.with(|pool| pool.as_ref().map(|p| p.install(f)))
}

/// Physical cores among the CPUs this process may run on (Linux sysfs topology), never more
/// than `available_parallelism`; the latter where the topology cannot be read.
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(logical, |p| p.clamp(1, logical))
}

fn physical_cores() -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu").ok()? {
        let path = entry.ok()?.path();
        let name = path.file_name()?.to_str()?;
        if !name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(path.join("topology").join(f)).ok();
        // Offline CPUs have no topology; they are not ours to use anyway.
        if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((pkg.trim().to_string(), core.trim().to_string()));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_threads_is_at_least_one_and_at_most_the_logical_cpus() {
        let n = super::default_threads();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
}
