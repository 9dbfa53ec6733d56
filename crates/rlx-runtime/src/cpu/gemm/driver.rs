//! The loops around the micro-kernel, written once for every ISA: the split of a product into
//! tasks (row blocks x groups of B panels, over threads), K blocking, edge panels, and the
//! epilogue (bias, activation) applied to each finished block while it is in cache.
//!
//! A is read in place (row-major, any row stride). B comes as pre-built panels, as row-major
//! rows read in place, as `[n, k]` rows copied into a per-thread panel first, or as panels the
//! caller builds on demand into that per-thread buffer (a convolution's patches).

use std::cell::RefCell;

use rayon::prelude::*;
use rlx_ir::UnaryOp;

use super::{MicroKernel, PackedB, StoreAct, TileEpilogue};
use crate::cpu::vmath::{Residual, bias_act_block, bias_residual_act_block};

/// Depth of one K block: a `KC x nr` slice of a B panel (32 KiB for AVX-512) stays in L1.
pub(crate) const KC: usize = 256;
/// Rows of one task's block (rounded to the kernel's row count) when the product is split over
/// threads.
const MC: usize = 128;
/// Rows of a block on one thread: each block streams every panel of B once, and 256 rows of
/// A still fit in L2. MiniLM on one thread, best of 3 against 128: f32 5% faster, bf16 1-4%;
/// on two threads 256-row tasks balance worse (bf16 8 x 128: 13% slower), so MC stays 128.
const MC_SERIAL: usize = 256;
/// Rows from which a product's tiles of one K block go as one run of the micro-kernel
/// (`MicroKernel::run`).
const RUN_ROWS: usize = 32;
/// Floats of B's next panel up to which the run fetches it whole before its tiles (128 lines:
/// K = 64 on AVX-512). A bigger burst stalls the core while it comes from memory: MobileNet v3's
/// 160 -> 960 products over 7 x 7 positions, whose weights are not in cache, took 190 us as
/// one run against 155 tile by tile, the next panel streamed from inside the tiles' steps.
const RUN_PANEL: usize = 2048;
/// Floats of the next panel a tile fetches at its start (32 lines).
pub(crate) const BURST: usize = 512;
/// Lines of the next panel a tile fetches at most every 16 steps (a one-row product's tile is
/// short: more would turn it into a prefetch loop).
pub(crate) const STREAM_LINES: usize = 4;
/// Rows a tile needs to fetch the next panel from inside its steps: a one-row product streams
/// B as fast as memory allows, and the fetches only compete with its loads (ResNet-50's final
/// linear: 227 -> 254 us).
const STREAM_ROWS: usize = 4;
/// f32s of A beyond which a product fetches A's rows ahead (1 MiB).
const LARGE_A: usize = 1 << 18;
/// Multiply-adds below which a product runs as one task on the calling thread.
const MIN_PARALLEL_MACS: usize = 1 << 16;
/// Tasks per thread the split aims for, so work stealing can even out uneven blocks.
const TASKS_PER_THREAD: usize = 4;

/// Where a product reads its `[k, n]` B operand.
#[derive(Clone, Copy)]
pub enum BSource<'a> {
    /// Panels built ahead of time (a bound weight).
    Packed(&'a PackedB),
    /// Panels laid out as `PackedB` does (`[panels][k][nr]`) at `ptr`.
    Panels { ptr: *const f32 },
    /// Row-major `[k, n]` rows with row stride `ld`; full panels are read in place.
    Rows { ptr: *const f32, ld: usize },
    /// `[n, k]` rows with row stride `ld` (B transposed); each panel is copied before use.
    Cols { ptr: *const f32, ld: usize },
    /// Panels built by the caller when a task reaches them, into a per-thread buffer.
    Built(&'a dyn PanelSource),
    /// bf16 panels of a bound weight (`bf16.rs`), for the AVX512-BF16 kernel.
    PackedBf16(&'a super::bf16::PackedBf16),
    /// int8 panels of a bound weight (`int8.rs`), with the job's A quantized once.
    Int8 {
        b: &'a super::int8::PackedI8,
        a: &'a super::int8::QuantA,
    },
}

/// A B operand whose panels are built on demand: a panel never leaves the cache of the thread
/// that uses it, where a whole pre-built B would round-trip through memory.
pub trait PanelSource: Sync {
    /// Writes every element of panel `j` (columns `j * nr ..`) as `k` rows of `nr` into `buf`
    /// (`buf.len() == k * nr`), zeros past the last column. Runs inside a GEMM task, with the
    /// task's scratch borrowed: it must not start a GEMM or a rayon loop.
    fn fill(&self, j: usize, buf: &mut [f32]);
}

/// One product `c[m, n] = act(a[m, k] @ b + bias)`, with row strides `lda` and `ldc`.
#[derive(Clone, Copy)]
pub struct GemmJob<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: BSource<'a>,
    pub c: *mut f32,
    pub ldc: usize,
    /// `n` values added to every row.
    pub bias: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
    /// `m x n` values added before the activation (a convolution's shortcut), laid out with
    /// their own row stride. At `c` itself (same pointer and stride): `c` holds them, and the
    /// product adds its sums onto them.
    pub residual: Option<Residual>,
}

// SAFETY: jobs are shared by tasks that read a and b and write disjoint blocks of c; the
// callers of `run` guarantee the pointers are valid for the whole call.
unsafe impl Send for GemmJob<'_> {}
unsafe impl Sync for GemmJob<'_> {}

/// Multiply-adds of one job.
fn macs(job: &GemmJob) -> usize {
    job.m.saturating_mul(job.n).saturating_mul(job.k.max(1))
}

/// How one job is cut: `mc` rows by `g` panels per task.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    mc: usize,
    g: usize,
    m_blocks: usize,
    n_groups: usize,
}

impl Split {
    fn new(job: &GemmJob, kern: &MicroKernel, threads: usize) -> Split {
        let panels = job.n.div_ceil(kern.nr).max(1);
        let round = |v: usize| v.div_ceil(kern.mr).max(1) * kern.mr;
        // Row blocks even on one thread: a block's A rows stay in L2 while every panel of B
        // passes over them (one block of 4096 rows would stream A from memory per panel).
        let serial = threads <= 1 || macs(job) < MIN_PARALLEL_MACS;
        let mut mc = round(if serial { MC_SERIAL } else { MC }).min(round(job.m.max(1)));
        if let BSource::Built(_) = job.b {
            // Panels built on demand are built once per row block: one block of every row
            // (the split then runs over panels alone).
            mc = round(job.m.max(1));
        }
        if serial {
            return Split {
                mc,
                g: panels,
                m_blocks: job.m.div_ceil(mc).max(1),
                n_groups: 1,
            };
        }
        let want = threads * TASKS_PER_THREAD;
        // Few rows: smaller row blocks before splitting B finer than one panel per task.
        let built = matches!(job.b, BSource::Built(_));
        while job.m.div_ceil(mc) * panels < want && mc > kern.mr && !built {
            mc = round(mc / 2);
        }
        let m_blocks = job.m.div_ceil(mc).max(1);
        let g = (m_blocks * panels).div_ceil(want).clamp(1, panels);
        // Even blocks and groups: 784 rows in blocks of 128 leave one of 16, and 16 panels in
        // groups of 14 one of 2 (tasks that size idle a thread). Same counts, sizes evened.
        let n_groups = panels.div_ceil(g);
        let mc = if built {
            mc
        } else {
            round(job.m.div_ceil(m_blocks))
        };
        let g = panels.div_ceil(n_groups);
        let aimed = Split {
            mc,
            g,
            m_blocks: job.m.div_ceil(mc).max(1),
            n_groups: panels.div_ceil(g),
        };
        if built {
            return aimed;
        }
        balanced(aimed, job.m, panels, kern, threads)
    }

    /// Rows x panels the busiest thread computes: tasks of one job are near-equal, so it runs
    /// `ceil(tasks / threads)` of the largest.
    fn busiest(&self, threads: usize) -> usize {
        self.tasks().div_ceil(threads) * self.mc * self.g
    }

    fn tasks(&self) -> usize {
        self.m_blocks * self.n_groups
    }
}

/// `aimed` unless its busiest thread does 4% more than the best cut's: then the cut within 3%
/// of the best that re-reads the least (each panel group reads the rows of A again, each row
/// block the panels of B). 7 equal tasks on 2 threads take 4 rounds where 14 of half the size
/// take 3.5: ResNet-50's 784-row products lost 15% that way. Splitting B instead of the rows
/// there re-read A from memory: MobileNet's 28x28 pointwise layer at batch 8, 2 threads, went
/// 472 -> 594 us.
fn balanced(aimed: Split, m: usize, panels: usize, kern: &MicroKernel, threads: usize) -> Split {
    let (mr, nr) = (kern.mr, kern.nr);
    // No cut's busiest thread does less than an even share of the rows x panels: an aimed cut
    // within 4% of that is kept without looking at the others (the common case, per product).
    let even = (m * panels).div_ceil(threads.max(1));
    if aimed.busiest(threads) * 100 <= even * 104 {
        return aimed;
    }
    let round = |v: usize| v.div_ceil(mr).max(1) * mr;
    let fewest = aimed.m_blocks;
    // Past twice the aimed blocks (or 64 more) the rounds are fine-grained already.
    let most = m.div_ceil(mr).min(fewest * 2).min(fewest + 64).max(fewest);
    let cuts = || {
        (fewest..=most).flat_map(move |blocks| {
            let mc = round(m.div_ceil(blocks));
            (1..=panels).map(move |groups| {
                let g = panels.div_ceil(groups);
                Split {
                    mc,
                    g,
                    m_blocks: m.div_ceil(mc).max(1),
                    n_groups: panels.div_ceil(g),
                }
            })
        })
    };
    let best = cuts().map(|s| s.busiest(threads)).min().unwrap_or(0);
    if aimed.busiest(threads) * 100 <= best * 104 {
        return aimed;
    }
    let traffic = |s: &Split| m * s.n_groups + panels * nr * s.m_blocks;
    cuts()
        .filter(|s| s.busiest(threads) * 100 <= best * 103)
        .min_by_key(|s| (traffic(s), s.tasks()))
        .unwrap_or(aimed)
}

/// Runs every job, split into tasks over the current rayon pool.
///
/// # Safety
/// For each job: `a` holds `m` rows of `k` elements with stride `lda`; `b` holds `k x n`
/// (as its variant describes); `c` holds `m` rows of `n` with stride `ldc`; no two jobs write
/// the same element of `c`, and nothing else reads or writes those elements during the call.
pub unsafe fn run(kern: &MicroKernel, jobs: &[GemmJob]) {
    let threads = rayon::current_num_threads().max(1);
    // Tasks are numbered job by job; within a job, group-major so that consecutive tasks
    // (which rayon hands to the same thread) share their B panels.
    let splits: Vec<Split> = jobs.iter().map(|j| Split::new(j, kern, threads)).collect();
    let total: usize = splits.iter().map(Split::tasks).sum();
    // A bf16 product split over groups of panels rounds its A rows to bf16 once for all of
    // them, not once per task (with few rows every task would round the whole of A).
    // Built only where some bf16 job is split (empty otherwise: no allocation per product).
    let split_bf16 =
        |(job, s): (&GemmJob, &Split)| matches!(job.b, BSource::PackedBf16(_)) && s.n_groups > 1;
    let rounded: Vec<Option<Vec<u32>>> = if jobs.iter().zip(&splits).any(split_bf16) {
        jobs.iter()
            .zip(&splits)
            // SAFETY: forwarded contract (A holds m rows of k).
            .map(|js| {
                split_bf16(js)
                    .then(|| unsafe { super::bf16::round_rows(js.0) })
                    .flatten()
            })
            .collect()
    } else {
        Vec::new()
    };
    let task = |mut t: usize| {
        for (i, (job, s)) in jobs.iter().zip(&splits).enumerate() {
            if t < s.tasks() {
                let (grp, mb) = (t / s.m_blocks, t % s.m_blocks);
                let rows = mb * s.mc..((mb + 1) * s.mc).min(job.m);
                let panels = grp * s.g..((grp + 1) * s.g).min(job.n.div_ceil(kern.nr));
                let a16 = rounded.get(i).and_then(Option::as_deref);
                // SAFETY: forwarded contract; tasks cover disjoint blocks of c.
                unsafe { block(kern, job, rows, panels, a16) };
                return;
            }
            t -= s.tasks();
        }
    };
    let small = jobs.iter().all(|j| macs(j) < MIN_PARALLEL_MACS);
    if threads <= 1 || total <= 1 || small {
        (0..total).for_each(task);
    } else {
        (0..total).into_par_iter().for_each(task);
    }
}

/// Runs one job on the calling thread (for kernels that are already parallel outside).
///
/// # Safety
/// As [`run`].
pub unsafe fn run_serial(kern: &MicroKernel, job: &GemmJob) {
    let panels = job.n.div_ceil(kern.nr);
    // SAFETY: forwarded contract.
    unsafe { block(kern, job, 0..job.m, 0..panels, None) }
}

thread_local! {
    /// Per-thread panel and edge-tile buffers, reused by every product on this thread.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Computes rows `rows` x panels `panels` of one job, then their epilogue (`a16`: the job's A
/// already rounded for a bf16 product, when the caller did it once for every task).
unsafe fn block(
    kern: &MicroKernel,
    job: &GemmJob,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    a16: Option<&[u32]>,
) {
    if let BSource::PackedBf16(b) = job.b {
        // SAFETY: forwarded; a bf16 operand is only formed where the CPU has AVX512-BF16.
        unsafe { super::bf16::block(kern, job, b, rows, panels, a16) };
        return;
    }
    if let BSource::Int8 { b, a } = job.b {
        // SAFETY: forwarded.
        unsafe { super::int8::block(kern, job, b, a, rows, panels) };
        return;
    }
    let (nr, mr) = (kern.nr, kern.mr);
    // With a residual, the panels get only the bias; the residual and the activation follow
    // over the whole block, whose residual rows are then read in order (per panel they are
    // 32-column pieces of rows far apart: ResNet-50 b8 1T 289 -> 300 ms that way). A residual
    // in c is added to from the first K block on, so the block is read and written once.
    let onto_c = job
        .residual
        .is_some_and(|r| std::ptr::eq(r.ptr, job.c) && r.ld == job.ldc);
    // One panel (whole or half) whose activation the tiles apply: its residual rows are
    // whole rows read in order, so the tiles add them as they store, saving a pass over c
    // (MobileNet v3's 16 -> 16 projection with its shortcut).
    let in_tiles = job.n == nr || (kern.half.is_some() && 2 * job.n == nr);
    let in_tiles = in_tiles && StoreAct::of(job.act).is_some();
    let (job, outer) = match job.residual {
        Some(_) if in_tiles && !onto_c => (job, None),
        Some(_) if onto_c => (
            &GemmJob {
                residual: None,
                ..*job
            },
            None,
        ),
        Some(r) => (
            &GemmJob {
                residual: None,
                act: None,
                ..*job
            },
            Some((r, job.act)),
        ),
        None => (job, None),
    };
    let columns = panels.start * nr..(panels.end * nr).min(job.n);
    if onto_c {
        // The block's rows of c into L2 in order first: the panels then read them as
        // 32-column pieces of rows far apart, which the hardware does not fetch ahead (2
        // threads, ResNet-50's 28x28x512 layers at b8: 2.14 -> 2.36 ms without this).
        for r in rows.clone() {
            // SAFETY: row r's columns of c lie in the job's c.
            let row = unsafe { job.c.add(r * job.ldc + columns.start) };
            prefetch_l2(row, columns.len());
        }
    }
    SCRATCH.with_borrow_mut(|(panel_buf, tile_buf)| {
        let (first_panel, last) = (panels.start, panels.end);
        // An A of more than 1 MiB was not all left in L2 by the kernel that wrote it: the
        // first panel fetches its rows ahead (a smaller one is in cache; the fetches would
        // only cost).
        let a_from_memory = job.m.saturating_mul(job.k) > LARGE_A;
        for j in panels {
            // Weights stream from memory once per call: the next panel is prefetched a
            // piece per row tile while this one is computed, so no tile waits on DRAM.
            let next = match job.b {
                BSource::Packed(p) if j + 1 < last => Some(p.panel(j + 1)),
                _ => None,
            };
            let c0 = j * nr;
            let cols = (job.n - c0).min(nr);
            // SAFETY (whole block): the job's contract covers every pointer formed here.
            unsafe {
                let (bp, ldb) = match job.b {
                    BSource::Packed(p) => (p.panel(j), nr),
                    BSource::Panels { ptr } => (ptr.add(j * job.k * nr), nr),
                    BSource::Rows { ptr, ld } if cols == nr => (ptr.add(c0), ld),
                    BSource::Rows { ptr, ld } => {
                        copy_panel(panel_buf, job.k, nr, |p, c| *ptr.add(p * ld + c0 + c), cols)
                    }
                    BSource::Built(src) => {
                        let buf = aligned(panel_buf, job.k * nr);
                        src.fill(j, buf);
                        (buf.as_ptr(), nr)
                    }
                    BSource::PackedBf16(_) | BSource::Int8 { .. } => unreachable!("handled above"),
                    BSource::Cols { ptr, ld } => copy_panel(
                        panel_buf,
                        job.k,
                        nr,
                        |p, c| *ptr.add((c0 + c) * ld + p),
                        cols,
                    ),
                };
                // A whole panel, or an edge panel of half one in half tiles (a 48-channel
                // layer's last 16 were 32 columns of products into a buffer, then copied).
                let tile = match kern.half {
                    _ if cols == nr => Some(kern.tile),
                    Some(half) if 2 * cols == nr => Some(half),
                    _ => None,
                };
                if let Some(tile) = tile {
                    let fetch_a = j == first_panel && a_from_memory;
                    let at = (c0, next, fetch_a, onto_c);
                    if full_panel(kern, tile, job, rows.clone(), bp, ldb, at) {
                        // The tiles applied the epilogue as they stored.
                        continue;
                    }
                } else if job.k <= KC {
                    // Any other edge panel of one K block: tiles that store only its columns,
                    // in place, adding onto them where c holds the residual (24 of a
                    // 24-channel layer were 32 columns of products into a buffer, then copied;
                    // MobileNet v2's 56x56x24 layers at b8 on 2 threads were 40-60% slower
                    // than ORT's).
                    if edge_panel(kern, job, rows.clone(), (bp, ldb), (c0, cols), onto_c) {
                        continue;
                    }
                } else {
                    tile_buf.resize(mr * nr, 0.0);
                    for (r0, h) in row_tiles(rows.clone(), mr) {
                        let a = job.a.add(r0 * job.lda);
                        // K blocked as full panels are, so an edge column sums in the same
                        // order as a full one (equal columns give equal results).
                        for kb in 0..job.k.div_ceil(KC).max(1) {
                            let (p0, kc) = (kb * KC, (job.k - (kb * KC).min(job.k)).min(KC));
                            (kern.tile)(
                                h,
                                kc,
                                a.add(p0),
                                job.lda,
                                bp.add(p0 * ldb),
                                ldb,
                                tile_buf.as_mut_ptr(),
                                nr,
                                kb > 0,
                                &TileEpilogue::NONE,
                            );
                        }
                        for r in 0..h {
                            let dst = job.c.add((r0 + r) * job.ldc + c0);
                            let src = tile_buf.as_ptr().add(r * nr);
                            match onto_c {
                                true => (0..cols).for_each(|i| *dst.add(i) += *src.add(i)),
                                false => std::ptr::copy_nonoverlapping(src, dst, cols),
                            }
                        }
                    }
                }
                epilogue(kern, job, rows.clone(), c0, cols);
            }
        }
    });
    if let Some((r, act)) = outer
        && !columns.is_empty()
    {
        // SAFETY: rows x columns is this task's block of c and of the residual (c's shape).
        unsafe {
            let res = Residual {
                ptr: r.ptr.add(rows.start * r.ld + columns.start),
                ld: r.ld,
            };
            let c = job.c.add(rows.start * job.ldc + columns.start);
            let (n, width) = (rows.len(), columns.len());
            bias_residual_act_block(kern.isa, c, n, width, job.ldc, None, Some(res), act);
        }
    }
}

/// An edge panel of `cols < nr` columns and at most `KC` K rows over `rows`, each tile storing
/// only those columns (`TileEpilogue::cols`), onto what c holds with `onto_c`, with the bias
/// and a relu applied in its stores; true when that was the whole epilogue (other activations
/// are left to `epilogue`).
///
/// # Safety
/// As `full_panel`; `job` has no residual apart from c itself, and `bp` holds the panel's K
/// rows.
unsafe fn edge_panel(
    kern: &MicroKernel,
    job: &GemmJob,
    rows: std::ops::Range<usize>,
    (bp, ldb): (*const f32, usize),
    (c0, cols): (usize, usize),
    onto_c: bool,
) -> bool {
    // The tile reads a whole panel's biases: the edge's, then zeros.
    let mut bias = [0.0f32; 64];
    let in_tiles = StoreAct::of(job.act).is_some() && kern.nr <= bias.len();
    let padded = match job.bias.filter(|_| in_tiles) {
        Some(b) => {
            bias[..cols].copy_from_slice(&b[c0..c0 + cols]);
            bias.as_ptr()
        }
        None => std::ptr::null(),
    };
    let epi = TileEpilogue {
        bias: padded,
        act: StoreAct::fused(job.act, in_tiles),
        cols,
        ..TileEpilogue::NONE
    };
    // Half a panel's columns or fewer: one vector per row (EfficientNet's 40-channel
    // projections computed their last 8 columns as 32).
    let tile = match kern.half {
        Some(half) if 2 * cols <= kern.nr => half,
        _ => kern.tile,
    };
    for (r0, h) in row_tiles(rows, kern.mr) {
        // SAFETY: forwarded; the tile's rows of c from column c0 hold `cols` columns.
        unsafe {
            tile(
                h,
                job.k,
                job.a.add(r0 * job.lda),
                job.lda,
                bp,
                ldb,
                job.c.add(r0 * job.ldc + c0),
                job.ldc,
                onto_c,
                &epi,
            );
        }
    }
    in_tiles
}

/// `len` floats of `buf` starting on a 64-byte boundary (a vector load of a panel row then
/// never splits across two cache lines).
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len + 16, 0.0);
    let off = buf.as_ptr().align_offset(64).min(16);
    &mut buf[off..off + len]
}

/// `rows` cut into tiles of at most `mr` rows, `(first row, rows)`, their heights differing
/// by at most one: 49 rows are 7 x 7, not 6 x 8 + 1 (a one-row tile has two accumulators, so
/// it waits on FMA latency and costs about as much as a full one).
pub(crate) fn row_tiles(
    rows: std::ops::Range<usize>,
    mr: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let n = rows.len().div_ceil(mr.max(1));
    let (base, extra) = (rows.len() / n.max(1), rows.len() % n.max(1));
    (0..n).map(move |i| {
        (
            rows.start + i * base + i.min(extra),
            base + usize::from(i < extra),
        )
    })
}

/// Hints the CPU to bring `len` floats at `p` into L1 (no effect on correctness).
pub(crate) fn prefetch(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    fetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Hints the CPU to bring `len` floats at `p` into L2.
fn prefetch_l2(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    fetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// A prefetch with `HINT` of every cache line of `len` floats at `p`.
#[cfg(target_arch = "x86_64")]
fn fetch<const HINT: i32>(p: *const f32, len: usize) {
    for off in (0..len).step_by(16) {
        // SAFETY: a prefetch never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(p.wrapping_add(off) as *const i8) };
    }
}

/// A panel over `rows` in `tile`s (whole or half), K-blocked so the B slice stays in L1.
/// `(c0, next, fetch_a, onto_c)`: its first column, the next panel to fetch, whether A comes
/// from memory, and whether the first block adds onto what c holds too. True when the tiles
/// applied the job's epilogue as they stored (bias, residual, relu).
unsafe fn full_panel(
    kern: &MicroKernel,
    tile: super::TileFn,
    job: &GemmJob,
    rows: std::ops::Range<usize>,
    bp: *const f32,
    ldb: usize,
    (c0, next, fetch_a, onto_c): (usize, Option<*const f32>, bool, bool),
) -> bool {
    let mr = kern.mr;
    // One block at least: with k = 0 the kernel writes the zeros of an empty sum.
    let blocks = job.k.div_ceil(KC).max(1);
    // Bias, residual and a relu or relu6 go in the last block's stores; other activations (and
    // a bf16 product's rational GELU) run over the finished block after. (Relu6 over the block
    // after: a 16 -> 96 expansion over 112 x 112 positions ran at 77 GFLOP/s, 92 with relu.)
    let fused = StoreAct::of(job.act).is_some();
    let epi = |r0: usize| TileEpilogue {
        bias: job.bias.map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
        // SAFETY: the residual has c's rows (the job's contract).
        res: job
            .residual
            .map_or(std::ptr::null(), |r| unsafe { r.ptr.add(r0 * r.ld + c0) }),
        ld_res: job.residual.map_or(0, |r| r.ld),
        act: StoreAct::fused(job.act, true),
        next_a: std::ptr::null(),
        next_b: std::ptr::null(),
        next_b_lines: 0,
        cols: usize::MAX,
    };
    // One K block's whole tiles as one run (`MicroKernel::run`), the next panel (KC rows at
    // most) fetched whole first: no per-tile work here. Against the tile-by-tile loop below,
    // in one process, 1 thread: 3136 x 32 x 64 105 -> 107 GFLOP/s, 12544 x 16 x 96 with relu
    // 74-86 -> 83-90, 196 x 256 x 256 112.6 -> 114.1 (fetching the next panel into L2
    // instead: the same). Not for a few rows, whose tiles stream the next panel in pieces (a
    // one-row 256 -> 1000 linear: 16-19 -> 21-22 us with the whole panel fetched first), nor
    // for a deep panel (`RUN_PANEL`). An A from memory runs too: its rows (at most
    // RUN_PANEL / nr = 64 floats) come in order, which the hardware fetches ahead; the
    // tile-by-tile loop's fetches of the next tile's rows made MobileNet v3's 16 -> 64
    // expansion over 8 x 112 x 112 positions 3.7-4.0 ms instead of 2.9-3.1 (one thread).
    let run = kern.run.filter(|_| {
        blocks == 1
            && !onto_c
            && job.n - c0 >= kern.nr
            && rows.len() >= RUN_ROWS
            && job.k * kern.nr <= RUN_PANEL
    });
    if let Some(run) = run {
        if let Some(n) = next {
            prefetch(n, job.k * kern.nr);
        }
        let e = |r0: usize| if fused { epi(r0) } else { TileEpilogue::NONE };
        let (r0, whole) = (rows.start, rows.len() / mr);
        let rest = r0 + whole * mr..rows.end;
        // SAFETY: inside the job's a, b, c, bias and residual (caller's contract); the tiles
        // are whole panels of one K block.
        unsafe {
            let (a, c) = (job.a.add(r0 * job.lda), job.c.add(r0 * job.ldc + c0));
            run(whole, job.k, a, job.lda, bp, ldb, c, job.ldc, &e(r0));
            if !rest.is_empty() {
                let (a, c) = (
                    job.a.add(rest.start * job.lda),
                    job.c.add(rest.start * job.ldc + c0),
                );
                tile(
                    rest.len(),
                    job.k,
                    a,
                    job.lda,
                    bp,
                    ldb,
                    c,
                    job.ldc,
                    false,
                    &e(rest.start),
                );
            }
        }
        return fused;
    }
    let tiles = blocks * rows.len().div_ceil(mr);
    // The next panel in even pieces over this panel's tiles: at most BURST floats at the
    // tile's start (a bigger burst stalls a short tile), the rest from inside the tile's
    // steps. (With few rows, 7x7 layers, the bursts alone covered under half of the panel.)
    let piece = (job.k * kern.nr).div_ceil(tiles.max(1)).div_ceil(16) * 16;
    let mut fetched = 0;
    for kb in 0..blocks {
        let (p0, kc) = (kb * KC, (job.k - (kb * KC).min(job.k)).min(KC));
        let mut tiles = row_tiles(rows.clone(), mr).peekable();
        while let Some((r0, h)) = tiles.next() {
            // The first panel reads A's rows from memory: the next tile's come while this
            // one computes.
            let next_a = match tiles.peek() {
                Some(&(r, _)) if fetch_a => job.a.wrapping_add(r * job.lda + p0),
                _ => std::ptr::null(),
            };
            let mut e = if fused && kb + 1 == blocks {
                epi(r0)
            } else {
                TileEpilogue::NONE
            };
            e.next_a = next_a;
            if let Some(n) = next
                && fetched < job.k * kern.nr
            {
                // A short tile fetches its burst only (the prefix of what is left, which the
                // hardware prefetcher carries on).
                let share = if h >= STREAM_ROWS {
                    piece
                } else {
                    piece.min(BURST)
                };
                let here = share.min(job.k * kern.nr - fetched);
                let burst = here.min(BURST);
                // SAFETY: the next panel holds k * nr floats; fetched + here <= that.
                prefetch(unsafe { n.add(fetched) }, burst);
                if here > burst {
                    // The rest a few lines every 16 steps of the tile.
                    e.next_b = n.wrapping_add(fetched + burst);
                    e.next_b_lines = (here - burst)
                        .div_ceil(16)
                        .div_ceil(kc.div_ceil(16).max(1))
                        .min(STREAM_LINES);
                }
                fetched += here;
            }
            // SAFETY: inside the job's a, b, c, bias and residual (caller's contract).
            unsafe {
                let a = job.a.add(r0 * job.lda + p0);
                let c = job.c.add(r0 * job.ldc + c0);
                tile(
                    h,
                    kc,
                    a,
                    job.lda,
                    bp.add(p0 * ldb),
                    ldb,
                    c,
                    job.ldc,
                    kb > 0 || onto_c,
                    &e,
                );
            }
        }
    }
    fused
}

/// Copies `cols` columns read by `at(p, c)` into `buf` as `k` rows of `nr` (zero-padded).
fn copy_panel(
    buf: &mut Vec<f32>,
    k: usize,
    nr: usize,
    at: impl Fn(usize, usize) -> f32,
    cols: usize,
) -> (*const f32, usize) {
    buf.clear();
    buf.resize(k * nr, 0.0);
    for c in 0..cols {
        for p in 0..k {
            buf[p * nr + c] = at(p, c);
        }
    }
    (buf.as_ptr(), nr)
}

/// Bias and activation over `rows` x columns `c0..c0 + cols`, just computed.
pub(super) unsafe fn epilogue(
    kern: &MicroKernel,
    job: &GemmJob,
    rows: std::ops::Range<usize>,
    c0: usize,
    cols: usize,
) {
    if job.bias.is_none() && job.act.is_none() {
        return;
    }
    let bias = job.bias.map(|b| &b[c0..c0 + cols]);
    // A bf16 product's sums carry the bf16 rounding of its operands (relative 2^-9 each): a
    // GELU within 1.2e-6 absolute (`math::gelu_rational`) adds nothing visible to that.
    let rational_gelu = matches!(job.b, BSource::PackedBf16(_));
    // SAFETY: rows x columns c0..c0 + cols lie in this task's block of c. (A residual is
    // added by `block` after all the panels.)
    unsafe {
        let c = job.c.add(rows.start * job.ldc + c0);
        bias_act_block(
            kern.isa,
            c,
            rows.len(),
            cols,
            job.ldc,
            bias,
            job.act,
            rational_gelu,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_rows_in_near_equal_heights() {
        for (rows, mr) in [
            (0..49, 8),
            (3..199, 8),
            (0..128, 8),
            (5..6, 8),
            (0..0, 8),
            (0..13, 4),
        ] {
            let t: Vec<(usize, usize)> = row_tiles(rows.clone(), mr).collect();
            let mut next = rows.start;
            for (r0, h) in &t {
                assert_eq!(*r0, next);
                assert!(*h >= 1 && *h <= mr, "{t:?}");
                next += h;
            }
            assert_eq!(next, rows.end);
            assert_eq!(t.len(), rows.len().div_ceil(mr));
            let (lo, hi) = t
                .iter()
                .fold((usize::MAX, 0), |(l, h), (_, x)| (l.min(*x), h.max(*x)));
            assert!(t.is_empty() || hi - lo <= 1, "{t:?}");
        }
    }

    #[test]
    fn splits_keep_every_thread_equally_busy() {
        // (rows, panels, threads): ResNet-50's 28x28 and 56x56 products on 2 threads, a
        // MiniLM row block, and a count no split divides.
        let kern = MicroKernel {
            mr: 8,
            nr: 32,
            ..super::super::portable::KERNEL
        };
        for (m, panels, threads) in [
            (784usize, 4usize, 2usize),
            (3136, 8, 2),
            (128, 12, 2),
            (1000, 7, 3),
        ] {
            let a = Split {
                mc: MC,
                g: panels,
                m_blocks: m.div_ceil(MC),
                n_groups: 1,
            };
            let s = balanced(a, m, panels, &kern, threads);
            assert!(
                s.mc.is_multiple_of(8) && s.mc <= MC && s.m_blocks * s.mc >= m,
                "{s:?}"
            );
            assert!(s.n_groups * s.g >= panels, "{s:?}");
            // The busiest thread's rows x panels, against an even share rounded to whole tiles.
            let busiest = s.tasks().div_ceil(threads) * s.mc * s.g;
            let even = (m.div_ceil(8) * 8 * panels).div_ceil(threads);
            assert!(
                busiest * 100 <= even * 105,
                "{m} x {panels}: {s:?} ({busiest} vs {even})"
            );
            if m == 784 {
                // 7 blocks x 4 panels: the rows split finer (10 blocks of 80, 2% over even)
                // rather than B in two (each group would read A again).
                assert_eq!((s.m_blocks, s.n_groups), (10, 1));
            }
        }
        // Within 4% of even already (25 rounds where 24.5 would do): kept, as one group of
        // panels, so A is read once.
        let aimed = Split {
            mc: 128,
            g: 4,
            m_blocks: 49,
            n_groups: 1,
        };
        assert_eq!(balanced(aimed, 6272, 4, &kern, 2), aimed);
    }

    #[test]
    fn splits_cover_rows_and_panels_with_enough_tasks() {
        let kern = super::super::portable::KERNEL;
        for (m, n, k, threads) in [
            (16, 384, 384, 2),
            (128, 1152, 384, 2),
            (4096, 384, 1536, 64),
            (1, 17, 5, 8),
        ] {
            let job = GemmJob {
                m,
                n,
                k,
                a: std::ptr::null(),
                lda: k,
                b: BSource::Rows {
                    ptr: std::ptr::null(),
                    ld: n,
                },
                c: std::ptr::null_mut(),
                ldc: n,
                bias: None,
                act: None,
                residual: None,
            };
            let s = Split::new(&job, &kern, threads);
            assert!(s.m_blocks * s.mc >= m, "{s:?}");
            assert!(s.n_groups * s.g >= n.div_ceil(kern.nr), "{s:?}");
            assert_eq!(s.mc % kern.mr, 0);
            if m * n * k >= MIN_PARALLEL_MACS {
                assert!(
                    s.tasks() >= threads.min(m.div_ceil(kern.mr) * n.div_ceil(kern.nr)),
                    "{s:?}"
                );
            }
        }
    }
}
