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

thread_local! {
    /// Whether this thread is a worker of a pool that one thread alone runs graphs on (the
    /// main thread's own pool, [`on_caller_pool`]): its runs come one after another.
    static SOLE_CALLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` in the pool whose worker 0 is the calling thread (`use_current_thread`), so a run
/// starts at once: no hand-off to a pool thread and back (two wake-ups, ~20-40 us on a VM).
/// A thread belongs to one pool at most, built at its first call:
/// - `threads == 1`: one worker, the caller (every parallel loop runs in place);
/// - more: `threads` workers, for the process's main thread only (where a script's runs
///   come from), so threads that come and go never leave pool threads behind.
///
/// `f` runs there when the pool fits: exactly `threads` workers, or at most that many for an
/// `inline` run (a small graph whose loops hardly split). `Err(f)`, not run, otherwise (and in
/// a forked child, whose copy of a wider pool has lost its workers). A worker of any pool of
/// `threads` workers runs `f` in place.
pub fn on_caller_pool<R: Send, F: FnOnce() -> R + Send>(
    threads: usize,
    inline: bool,
    f: F,
) -> std::result::Result<R, F> {
    thread_local! {
        /// This thread's pool: undecided (`None`), none (a worker of another pool), or its
        /// size, the process that built it, and the pool.
        static OWN: std::cell::RefCell<Option<Option<(usize, u32, ThreadPool)>>> =
            const { std::cell::RefCell::new(None) };
    }
    // Already a worker of a pool of that size (a sample of a batch run sample by sample):
    // run in place, as installing into the same pool would.
    if rayon::current_thread_index().is_some() && rayon::current_num_threads() == threads {
        return Ok(f());
    }
    let pid = crate::fork_lock::current_pid();
    OWN.with(|own| {
        if own.borrow().is_none() {
            if rayon::current_thread_index().is_some() {
                *own.borrow_mut() = Some(None);
                return Err(f);
            }
            let n = match threads {
                1 => 1,
                _ if is_main_thread() => threads,
                _ if inline => 1,
                // Undecided still: a later one-worker request may build one.
                _ => return Err(f),
            };
            let built = ThreadPoolBuilder::new()
                .num_threads(n)
                .use_current_thread()
                .thread_name(|i| format!("rlx-caller-{i}"))
                .start_handler(|_| SOLE_CALLER.set(true))
                .build();
            *own.borrow_mut() = Some(built.ok().map(|pool| (n, pid, pool)));
        }
        match &*own.borrow() {
            Some(Some((n, at, pool)))
                if (*n == threads || (inline && *n <= threads)) && (*n == 1 || *at == pid) =>
            {
                Ok(pool.install(f))
            }
            _ => Err(f),
        }
    })
}

/// Runs `f` with `threads` workers: on the caller's own pool where it fits
/// ([`on_caller_pool`]), else on `pool` (built by process `pool_pid`), else, in a forked
/// child, on the child's own pool of that size.
pub fn run_on<R: Send>(
    pool: &ThreadPool,
    pool_pid: u32,
    inline: bool,
    f: impl FnOnce() -> R + Send,
) -> Result<R> {
    let threads = pool.current_num_threads();
    let f = move || match inline {
        true => f(),
        false => with_workers_polling(f),
    };
    match on_caller_pool(threads, inline, f) {
        Ok(r) => Ok(r),
        Err(f) if crate::fork_lock::current_pid() == pool_pid => Ok(pool.install(f)),
        Err(f) => Ok(thread_pool(Some(threads))?.install(f)),
    }
}

/// How long a run waits for the pool's other workers to start polling for its jobs (a sleeping
/// worker takes 20-40 us to wake on a VM). One that starts later does not poll.
const POLLERS_WAIT: std::time::Duration = std::time::Duration::from_micros(200);
/// How long a poller goes on finding nothing before it returns (a run's serial stretches
/// between loops are 5-20 us; a longer one pays a wake-up, as without polling). On the main
/// thread's pool a poller also outlives its run by as much: a script's next run, some
/// microseconds of Python later, finds the workers polling instead of asleep (MobileNet-like
/// at batch 1 on two threads waited 28-35 us on average at the start of each 0.8 ms run for
/// the other worker to wake; 3-7 us so).
const POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Runs `f` on a worker of the current pool while the pool's other workers poll for its jobs
/// (rayon's `yield_now` in a loop) until it returns. An idle rayon worker goes to sleep after
/// some 30 yields; the next parallel loop then waits for it to be woken, 20-40 us on a VM, and
/// a run's serial kernels (a squeeze-excitation's small products, 5-20 us) were long enough to
/// put it to sleep before nearly every loop after them: EfficientNet-B0 on two threads paid
/// ~25 us at each of its 16 excitation multiplies. (ONNX Runtime's threads spin too.)
///
/// A poller must start before the run's first job: a worker that stole a job, then waited
/// inside it for another and took its poller there, would poll on top of that job until the
/// run ended, and the run would wait for the job. So `f` starts once every other worker polls
/// (or after [`POLLERS_WAIT`]), and a poller that starts after that returns at once. Runs from
/// two threads on one shared pool could still each take the other's poller inside their own
/// waits and hold each other; a poller therefore also returns after [`POLL_IDLE`] without
/// work. On the main thread's pool, where runs come one at a time, a poller outlives its run
/// ([`POLL_IDLE`]): it is at the bottom of its worker's stack (no other run's job is below
/// it), and the next run's poller, taken inside it, counts as joined and returns at once.
fn with_workers_polling<R>(f: impl FnOnce() -> R) -> R {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    thread_local! {
        /// Whether this thread runs a run whose workers poll (a run inside it, as a batch
        /// runs sample by sample, has them already).
        static POLLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Whether this worker polls already (a poller of an earlier run that outlives it).
        static POLLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let others = rayon::current_num_threads().saturating_sub(1);
    let me = rayon::current_thread_index().filter(|_| others > 0);
    let Some(me) = me.filter(|_| !POLLED.get()) else {
        return f();
    };
    /// Workers polling (`CLOSED` set once the run has started), and whether it is over.
    struct Poll {
        joined: AtomicUsize,
        over: AtomicBool,
    }
    const CLOSED: usize = 1 << (usize::BITS - 1);
    let poll = Arc::new(Poll {
        joined: AtomicUsize::new(0),
        over: AtomicBool::new(false),
    });
    let shared = poll.clone();
    // A copy per worker; the caller's returns at once (it runs the run).
    rayon::spawn_broadcast(move |ctx| {
        let join = |j: usize| (j & CLOSED == 0).then_some(j + 1);
        if ctx.index() == me
            || (shared.joined)
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, join)
                .is_err()
        {
            return;
        }
        // On the main thread's own pool a poller outlives its run; the next run's, taken
        // inside it, returns at once. (Elsewhere runs from several threads interleave: one
        // taken inside another run's job would hold that job while it outlived its own run.)
        let linger = SOLE_CALLER.get();
        if linger && POLLING.replace(true) {
            return;
        }
        let mut idle_since = None;
        loop {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > POLL_IDLE || (!linger && shared.over.load(Ordering::Acquire)) {
                break;
            }
            std::hint::spin_loop();
        }
        if linger {
            POLLING.set(false);
        }
    });
    let start = std::time::Instant::now();
    while poll.joined.load(Ordering::Acquire) < others && start.elapsed() < POLLERS_WAIT {
        std::hint::spin_loop();
    }
    poll.joined.fetch_or(CLOSED, Ordering::AcqRel);
    /// Ends the polling (but on the main thread's pool) and clears `POLLED` however the run
    /// ends (a panic unwinds).
    struct Over(Arc<Poll>);
    impl Drop for Over {
        fn drop(&mut self) {
            self.0.over.store(true, Ordering::Release);
            POLLED.set(false);
        }
    }
    POLLED.set(true);
    let over = Over(poll);
    let r = f();
    drop(over);
    r
}

/// Whether this is the process's main thread (Linux: its thread id is the process id).
fn is_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both calls only read ids of the calling thread and process.
        unsafe { libc::gettid() == libc::getpid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
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
    fn other_threads_get_one_worker_pools_and_runs_that_fit_them() {
        std::thread::spawn(|| {
            let here = std::thread::current().id();
            let on_caller = || (std::thread::current().id(), rayon::current_num_threads());
            // Not the main thread: no pool of two workers, and nothing decided yet.
            assert!(super::on_caller_pool(2, false, on_caller).is_err());
            assert_eq!(
                super::on_caller_pool(1, false, on_caller).ok(),
                Some((here, 1))
            );
            // A small run of a two-thread graph fits the one-worker pool; a large one does not.
            assert_eq!(
                super::on_caller_pool(2, true, on_caller).ok(),
                Some((here, 1))
            );
            assert!(super::on_caller_pool(2, false, on_caller).is_err());
            // A worker of another pool has no pool of its own, and runs in place what asks
            // for that pool's size.
            let pool = super::thread_pool(Some(2)).unwrap();
            assert!(pool.install(|| super::on_caller_pool(1, true, || ()).is_err()));
            let inside = pool.install(|| super::on_caller_pool(2, false, on_caller).ok());
            assert!(inside.is_some_and(|(t, n)| n == 2 && t != here));
        })
        .join()
        .unwrap();
    }

    /// A polled run of nested loops (jobs to steal and wait inside) on the current pool:
    /// `sum over j < 16, k < 4 of (j * k + add)`, which is `6 * 120 + 64 * add`.
    fn polled_nested_sum(add: usize) -> usize {
        use rayon::prelude::*;
        super::with_workers_polling(|| {
            (0..16usize)
                .into_par_iter()
                .map(|j| {
                    (0..4usize)
                        .into_par_iter()
                        .map(|k| j * k + add)
                        .sum::<usize>()
                })
                .sum::<usize>()
        })
    }

    #[test]
    fn runs_with_polling_workers_all_finish() {
        // Nested loops give the other worker jobs to steal and wait inside: a poller it took
        // there would hang the run (the test then fails on the timeout, not by hanging). The
        // pool's worker 0 is the calling thread, as a process's main thread runs graphs.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .use_current_thread()
                .build()
                .unwrap();
            for round in 0..20_000usize {
                let sum = pool.install(|| polled_nested_sum(round));
                assert_eq!(sum, 6 * 120 + 64 * round);
            }
            done.send(()).unwrap();
        });
        let waited = finished.recv_timeout(std::time::Duration::from_secs(120));
        assert!(waited.is_ok(), "a two-thread run never finished");
    }

    #[test]
    fn concurrent_runs_on_one_shared_pool_all_finish() {
        // Two threads' runs on the same two-worker pool, each with nested loops: each run's
        // poller may land inside the other run's waits; neither may hold the other for good.
        let (done, finished) = std::sync::mpsc::channel();
        let pool = std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
        );
        for t in 0..2usize {
            let (pool, done) = (pool.clone(), done.clone());
            std::thread::spawn(move || {
                for round in 0..2_000usize {
                    let sum = pool.install(|| polled_nested_sum(t));
                    assert_eq!(sum, 6 * 120 + 64 * t, "round {round}");
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..2 {
            let waited = finished.recv_timeout(std::time::Duration::from_secs(120));
            assert!(waited.is_ok(), "a run on the shared pool never finished");
        }
    }

    #[test]
    fn default_threads_is_at_least_one_and_at_most_the_logical_cpus() {
        let n = super::default_threads();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
}
