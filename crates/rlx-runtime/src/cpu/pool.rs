//! Rayon pools owned by the runtime, one per thread count, shared by every graph.
//!
//! A pool's threads do not survive `fork()`: a child that inherited a pool would wait forever
//! for workers that do not exist. Pools are therefore keyed by process id too, and a child
//! builds its own on first use (the parent's pool object is leaked there, never dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::{Error, Result};

/// Thread count -> (process that built it, pool).
type Pools = HashMap<usize, (u32, Arc<ThreadPool>)>;

/// The pool with `threads` workers: the argument, else `RLX_NUM_THREADS`, else the core count.
pub fn thread_pool(threads: Option<usize>) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let n = match threads {
        Some(n) => n,
        None => match std::env::var("RLX_NUM_THREADS") {
            Ok(v) => v.trim().parse::<usize>().map_err(|_| {
                Error::Compile(format!(
                    "RLX_NUM_THREADS must be a positive integer, got `{v}`"
                ))
            })?,
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    if n == 0 || n > 1024 {
        return Err(Error::Compile(format!(
            "thread count must be in 1..=1024, got {n}"
        )));
    }
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
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
