//! Per-run scratch memory: 64-byte aligned, allocated without aborting, pooled for reuse.

use crate::{Error, Result};

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Bytes of a huge page (x86-64 and aarch64 Linux with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// One arena: `size` bytes at a 64-byte aligned base (2 MiB aligned for large arenas).
pub struct Arena {
    lines: Vec<Line>,
    /// Lines before the base (the alignment offset).
    skip: usize,
}

impl Arena {
    fn new(size: usize) -> Result<Arena> {
        let n = size.div_ceil(64);
        // Activations of a large model span hundreds of MiB: on 4 KiB pages every layer
        // misses the TLB. A large arena is asked for on huge pages (where the kernel grants
        // them: transparent huge pages in `madvise` mode are the common default).
        let huge = size >= 4 * HUGE_PAGE;
        let pad = if huge { HUGE_PAGE / 64 } else { 0 };
        let mut lines: Vec<Line> = Vec::new();
        lines
            .try_reserve_exact(n + pad)
            .map_err(|_| Error::Memory(format!("cannot allocate a {size}-byte arena")))?;
        let skip = if huge {
            let skip = lines.as_ptr().cast::<u8>().align_offset(HUGE_PAGE) / 64;
            advise_huge_pages(lines.as_mut_ptr().wrapping_add(skip).cast(), n * 64);
            skip
        } else {
            0
        };
        lines.resize(n + skip, Line([0; 64]));
        Ok(Arena { lines, skip })
    }

    pub fn base(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().wrapping_add(self.skip).cast()
    }
}

/// Asks the kernel to back `len` bytes at `ptr` with huge pages (a hint: nothing changes
/// where it is refused or unsupported).
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: madvise only reads the range's mapping; `ptr..ptr + len` lies in one allocation
    // the caller owns, and MADV_HUGEPAGE leaves its contents as they are.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Arenas of one size, so concurrent runs each get their own and later runs reuse them. The
/// free list is a `ForkLock`: a child forked while another thread takes or returns an arena
/// can still run.
pub struct ArenaPool {
    size: usize,
    free: crate::ForkLock<Vec<Arena>>,
}

impl ArenaPool {
    pub fn new(size: usize) -> ArenaPool {
        ArenaPool {
            size,
            free: crate::ForkLock::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Result<Arena> {
        let reused = self.free.lock().pop();
        match reused {
            Some(a) => Ok(a),
            None => Arena::new(self.size),
        }
    }

    pub fn give_back(&self, arena: Arena) {
        let mut free = self.free.lock();
        // Keep a few for concurrent runs; more would only hold memory.
        if free.len() < 4 {
            free.push(arena);
        }
    }
}

/// Bytes one run may allocate: `RLX_MEMORY_LIMIT` (bytes) if set, else the machine's memory.
/// Checked when a variant is compiled, so a size the machine cannot hold is a `MemoryError`
/// up front instead of an abort (Rust aborts on a failed allocation) or the OOM killer later.
/// A malformed value is an error (as a malformed `RLX_NUM_THREADS` is), never ignored.
pub fn memory_budget() -> Result<Option<usize>> {
    if let Ok(v) = std::env::var("RLX_MEMORY_LIMIT") {
        return match v.trim().parse::<usize>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(Error::Compile(format!(
                "RLX_MEMORY_LIMIT must be a number of bytes (a non-negative integer), got `{v}`"
            ))),
        };
    }
    Ok(machine_memory())
}

fn machine_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

pub fn check_budget(name: &str, arena: usize, outputs: usize, scratch: usize) -> Result<()> {
    let need = arena.saturating_add(outputs).saturating_add(scratch);
    match memory_budget()? {
        Some(limit) if need > limit => Err(Error::Memory(format!(
            "`{name}` needs {need} bytes per run (arena {arena}, outputs {outputs}, kernel scratch {scratch}), over the {limit}-byte budget (RLX_MEMORY_LIMIT or the machine's memory)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_aligned_zeroed_and_large_ones_on_huge_page_boundaries() {
        for (size, align) in [
            (100, 64),
            (4 * HUGE_PAGE - 64, 64),
            (4 * HUGE_PAGE, HUGE_PAGE),
        ] {
            let mut a = Arena::new(size).unwrap();
            let base = a.base();
            assert_eq!(base as usize % align, 0, "{size} bytes");
            // SAFETY: the arena holds at least `size` bytes from its base.
            let bytes = unsafe { std::slice::from_raw_parts_mut(base, size) };
            assert!(bytes.iter().all(|b| *b == 0));
            bytes[size - 1] = 1;
        }
    }
}
