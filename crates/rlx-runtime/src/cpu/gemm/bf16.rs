//! bf16 products with f32 accumulation on AVX512-BF16 (`vdpbf16ps`).
//!
//! Weights are packed once into panels of `nr = 32` columns, where each 32-bit element holds
//! the bf16 pair of rows `(2p, 2p + 1)` of one column (`[panels][k / 2][32]`, zero-padded).
//! Each task rounds its block of A rows to bf16 pairs once. The micro-kernel then broadcasts one
//! A pair per row and does one `vdpbf16ps` per 16 columns: 8 rows x 32 columns, 16
//! accumulators. Rounding is to nearest even, with subnormals flushed to zero, which is what the
//! instructions do. Bias and activation run in f32 in the shared epilogue.

use std::cell::RefCell;

use super::MicroKernel;
use super::driver::{GemmJob, epilogue};
use super::pack::{panel_len, weight_at};
use crate::Result;
use crate::fallible::try_zeroed;

/// Panel width in columns (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows of one register tile.
const MR: usize = 8;
/// K pairs per block: a `KCP x 32` slice of a panel (16 KiB) stays in L1.
const KCP: usize = 128;

/// `x` rounded to bf16 (to nearest even; NaN stays NaN, subnormals become zero).
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded to the nearest bf16, as f32.
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Whether this CPU runs the bf16 kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A `[k, n]` weight as bf16 pairs in panels of 32 columns.
#[derive(Debug)]
pub struct PackedBf16 {
    pub k: usize,
    pub n: usize,
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Packs `b` (`[k, n]`, or `[n, k]` when `transposed`), rounding each weight to bf16.
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool) -> Result<PackedBf16> {
        let kp = k.div_ceil(2);
        let mut data = try_zeroed("a bf16 weight", panel_len(b, k, n, NR, 2)?)?;
        let at = |p: usize, c: usize| -> u32 {
            if p >= k {
                return 0;
            }
            u32::from(to_bf16(weight_at(b, k, n, transposed, p, c)))
        };
        for (j, panel) in data.chunks_mut((kp * NR).max(1)).enumerate() {
            let cols = (n - j * NR).min(NR);
            for p in 0..kp {
                for c in 0..cols {
                    let col = j * NR + c;
                    panel[p * NR + c] = at(2 * p, col) | (at(2 * p + 1, col) << 16);
                }
            }
        }
        Ok(PackedBf16 { k, n, data })
    }

    fn panel(&self, j: usize) -> *const u32 {
        self.data[j * self.k.div_ceil(2) * NR..].as_ptr()
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

thread_local! {
    /// Per-thread A block in bf16 pairs, and an edge tile.
    static SCRATCH: RefCell<(Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Rows `rows` x panels `panels` of one job whose B is `b`, then their epilogue.
///
/// # Safety
/// As `driver::run`: the job's pointers cover `m x k` of A and `m x n` of C, and the CPU has
/// AVX512-BF16 (`supported()`).
pub(super) unsafe fn block(
    kern: &MicroKernel,
    job: &GemmJob,
    b: &PackedBf16,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    rounded: Option<&[u32]>,
) {
    let kp = job.k.div_ceil(2);
    SCRATCH.with_borrow_mut(|(a16, tile_buf)| {
        // SAFETY (whole block): the job's contract covers every pointer formed here.
        unsafe {
            // The block's A rows in bf16 pairs, `kp` apart: rounded by the caller for the
            // whole job, or here for these rows.
            let a_rows = match rounded {
                Some(all) => all[rows.start * kp..].as_ptr(),
                None => {
                    a16.clear();
                    a16.resize(rows.len() * kp, 0);
                    for (i, r) in rows.clone().enumerate() {
                        let src = std::slice::from_raw_parts(job.a.add(r * job.lda), job.k);
                        round_pairs(src, &mut a16[i * kp..(i + 1) * kp]);
                    }
                    a16.as_ptr()
                }
            };
            for j in panels {
                let (c0, bp) = (j * NR, b.panel(j));
                let cols = (job.n - c0).min(NR);
                for r0 in rows.clone().step_by(MR) {
                    let h = (rows.end - r0).min(MR);
                    let a = a_rows.add((r0 - rows.start) * kp);
                    if cols == NR {
                        let c = job.c.add(r0 * job.ldc + c0);
                        for kb in 0..kp.div_ceil(KCP).max(1) {
                            let (p0, n) = (kb * KCP, (kp - (kb * KCP).min(kp)).min(KCP));
                            tile(h, n, a.add(p0), kp, bp.add(p0 * NR), c, job.ldc, kb > 0);
                        }
                    } else {
                        tile_buf.resize(MR * NR, 0.0);
                        // K blocked as full panels are: equal columns give equal results.
                        for kb in 0..kp.div_ceil(KCP).max(1) {
                            let (p0, n) = (kb * KCP, (kp - (kb * KCP).min(kp)).min(KCP));
                            tile(
                                h,
                                n,
                                a.add(p0),
                                kp,
                                bp.add(p0 * NR),
                                tile_buf.as_mut_ptr(),
                                NR,
                                kb > 0,
                            );
                        }
                        for r in 0..h {
                            let dst = job.c.add((r0 + r) * job.ldc + c0);
                            std::ptr::copy_nonoverlapping(tile_buf.as_ptr().add(r * NR), dst, cols);
                        }
                    }
                }
                epilogue(kern, job, rows.clone(), c0, cols);
            }
        }
    });
}

/// Every A row of `job` in bf16 pairs (`k.div_ceil(2)` apart), rounded in parallel; None if
/// the buffer cannot be allocated (the tasks then round their own rows).
///
/// # Safety
/// `job.a` holds `m` rows of `k` with stride `lda`.
pub(super) unsafe fn round_rows(job: &GemmJob) -> Option<Vec<u32>> {
    use rayon::prelude::*;
    let kp = job.k.div_ceil(2);
    let mut out = try_zeroed::<u32>("bf16 rows", job.m.checked_mul(kp)?).ok()?;
    out.par_chunks_mut(kp.max(1))
        .enumerate()
        .for_each(|(r, dst)| {
            // SAFETY: row r of A (caller's contract); a job is shared by tasks (Sync).
            let src = unsafe { std::slice::from_raw_parts(job.a.add(r * job.lda), job.k) };
            round_pairs(src, dst);
        });
    Some(out)
}

/// `out[p]` = the bf16 pair of `src[2p], src[2p + 1]` (0 past the end).
pub(crate) fn round_pairs(src: &[f32], out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: the CPU has the feature; the vector loop stays inside both slices.
        unsafe { round_pairs_avx512(src, out) };
        return;
    }
    round_pairs_scalar(src, out, 0);
}

fn round_pairs_scalar(src: &[f32], out: &mut [u32], from: usize) {
    for (p, o) in out.iter_mut().enumerate().skip(from) {
        let lo = src.get(2 * p).map_or(0, |x| u32::from(to_bf16(*x)));
        let hi = src.get(2 * p + 1).map_or(0, |x| u32::from(to_bf16(*x)));
        *o = lo | (hi << 16);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_pairs_avx512(src: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    let whole = src.len() / 32;
    for i in 0..whole {
        // SAFETY: 32 floats from 32 * i lie in src; 16 pairs from 16 * i lie in out.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(32 * i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
            // Lanes 0..16 from `lo`, 16..32 from `hi`: as 32-bit lanes, pairs (2p, 2p + 1).
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * i).cast(), v);
        }
    }
    round_pairs_scalar(src, out, 16 * whole);
}

/// `k` rows of `n` f32 columns (`at(r)` is row `r`) as bf16 pair panels: panel `j` at
/// `dst[j * kp * 32..]` holds columns `j * 32 ..` as `kp = k.div_ceil(2)` rows of 32 pairs
/// (rows `2p`, `2p + 1`), zeros past `k` and `n`. The layout of a `PackedBf16`, built per call
/// (attention's values) on the CPU's bf16 conversion.
pub(crate) fn pack_pairs<'a>(at: impl Fn(usize) -> &'a [f32], k: usize, n: usize, dst: &mut [u32]) {
    let kp = k.div_ceil(2);
    let zeros = [0.0f32; NR];
    for (j, panel) in dst
        .chunks_exact_mut((kp * NR).max(1))
        .enumerate()
        .take(n.div_ceil(NR))
    {
        let (c0, cols) = (j * NR, (n - j * NR).min(NR));
        for (p, out) in panel.chunks_exact_mut(NR).enumerate() {
            let row = |r: usize| {
                if r < k {
                    &at(r)[c0..c0 + cols]
                } else {
                    &zeros[..cols]
                }
            };
            pair_row(row(2 * p), row(2 * p + 1), out);
        }
    }
}

/// `out[c] = bf16(lo[c]) | bf16(hi[c]) << 16`, zeros past `lo.len()`.
fn pair_row(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if supported() && lo.len() == NR {
        // SAFETY: the CPU has the feature; 32 floats in each row, 32 pairs in out.
        unsafe { pair_row_avx512(lo, hi, out) };
        return;
    }
    for (c, o) in out.iter_mut().enumerate() {
        let at = |r: &[f32]| r.get(c).map_or(0, |x| u32::from(to_bf16(*x)));
        *o = at(lo) | (at(hi) << 16);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pair_row_avx512(lo: &[f32], hi: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    for h in 0..NR / 16 {
        // SAFETY: 16 floats from 16 * h lie in lo and hi; 16 pairs in out.
        unsafe {
            let l: __m256i =
                std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(lo.as_ptr().add(16 * h))));
            let u: __m256i =
                std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(hi.as_ptr().add(16 * h))));
            let pairs = _mm512_or_si512(
                _mm512_cvtepu16_epi32(l),
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(u)),
            );
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * h).cast(), pairs);
        }
    }
}

/// `c[m, n] = a @ b` on one thread: A is `m` rows of `kp` bf16 pairs (row stride `lda`), B is
/// panels as [`pack_pairs`] writes them with `b_kp` pair rows each (only the first `kp` read),
/// C is `m` rows of `n` f32 (row stride `ldc`).
///
/// # Safety
/// The pointers cover those extents, and the CPU has AVX512-BF16 (`supported()`).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product_pairs(
    m: usize,
    n: usize,
    kp: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    b_kp: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut edge = [0.0f32; MR * NR];
    for j in 0..n.div_ceil(NR) {
        let (c0, cols) = (j * NR, (n - j * NR).min(NR));
        // SAFETY (whole loop): the caller's contract covers every pointer formed here.
        unsafe {
            let bp = b.add(j * b_kp * NR);
            for r0 in (0..m).step_by(MR) {
                let h = (m - r0).min(MR);
                let (dst, ld) = if cols == NR {
                    (c.add(r0 * ldc + c0), ldc)
                } else {
                    (edge.as_mut_ptr(), NR)
                };
                for kb in 0..kp.div_ceil(KCP).max(1) {
                    let (p0, len) = (kb * KCP, (kp - (kb * KCP).min(kp)).min(KCP));
                    tile(
                        h,
                        len,
                        a.add(r0 * lda + p0),
                        lda,
                        bp.add(p0 * NR),
                        dst,
                        ld,
                        kb > 0,
                    );
                }
                if cols < NR {
                    for r in 0..h {
                        let to = c.add((r0 + r) * ldc + c0);
                        std::ptr::copy_nonoverlapping(edge.as_ptr().add(r * NR), to, cols);
                    }
                }
            }
        }
    }
}

/// `c[r, 0..32] (+)= sum_p a[r * lda + p] . b[p * 32 + 0..32]` over `kp` pairs, for `h` rows.
///
/// # Safety
/// `a` holds `h` rows of `kp` pairs (stride `lda`), `b` `kp` rows of 32 pairs, `c` `h` rows of
/// 32 floats (stride `ldc`); the CPU has AVX512-BF16.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    h: usize,
    kp: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded.
    unsafe {
        match h {
            1 => rows_n::<1>(kp, a, lda, b, c, ldc, accumulate),
            2 => rows_n::<2>(kp, a, lda, b, c, ldc, accumulate),
            3 => rows_n::<3>(kp, a, lda, b, c, ldc, accumulate),
            4 => rows_n::<4>(kp, a, lda, b, c, ldc, accumulate),
            5 => rows_n::<5>(kp, a, lda, b, c, ldc, accumulate),
            6 => rows_n::<6>(kp, a, lda, b, c, ldc, accumulate),
            7 => rows_n::<7>(kp, a, lda, b, c, ldc, accumulate),
            8 => rows_n::<8>(kp, a, lda, b, c, ldc, accumulate),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (h, kp, a, lda, b, c, ldc, accumulate);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows_n<const R: usize>(
    kp: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract bounds every pointer below.
    unsafe {
        let mut lo: [__m512; R] = [_mm512_setzero_ps(); R];
        let mut hi: [__m512; R] = [_mm512_setzero_ps(); R];
        for p in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            for r in 0..R {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + p) as i32));
                lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
                hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
            }
        }
        for r in 0..R {
            let (c0, c1) = (c.add(r * ldc), c.add(r * ldc + 16));
            if accumulate {
                lo[r] = _mm512_add_ps(lo[r], _mm512_loadu_ps(c0));
                hi[r] = _mm512_add_ps(hi[r], _mm512_loadu_ps(c1));
            }
            _mm512_storeu_ps(c0, lo[r]);
            _mm512_storeu_ps(c1, hi[r]);
        }
    }
}
