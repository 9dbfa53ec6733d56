//! int8 products: u8 activations x s8 weights with i32 accumulation, dequantized to f32.
//!
//! Weights are quantized once, per output column and symmetric: `scale[n] = max|w[:, n]| / 127`
//! and `wq = round(w / scale)` in [-127, 127]. They are packed into panels of 32 columns where
//! each 32-bit element holds rows `4q .. 4q + 4` of one column (`[panels][k / 4][32][4]`,
//! zero-padded), with the column sums of `wq`. Activations are quantized per row when the
//! product runs, asymmetric: `[lo, hi]` (widened to hold 0), `scale = (hi - lo) / 255`,
//! `zp = round(-lo / scale)`, and `xq = clamp(round(x / scale) + zp, 0, 255)`, rounding to
//! nearest even; each product quantizes its A once, before its tasks start. Then
//! `y = (sum xq * wq - zp * colsum) * scale_row * scale[n]`; bias and activation follow in f32.
//! On AVX512-VNNI one `vpdpbusd` does four multiply-adds per lane (8 x 32 tiles, 16 i32
//! accumulators). Elsewhere a portable loop computes the same integers, so every path gives the
//! same result. A row holding NaN or infinity gives NaN.

use std::cell::RefCell;

use super::MicroKernel;
use super::driver::{GemmJob, epilogue};
use super::pack::{panel_len, weight_at};
use crate::cpu::isa::Isa;
use crate::fallible::try_zeroed;
use crate::{Error, Result};

/// Panel width in columns.
pub const NR: usize = 32;
/// Rows of one register tile.
const MR: usize = 8;

/// Whether this CPU has the 256-bit VNNI of AVX-VNNI (the `avx2` path's int8 kernel).
pub fn avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The int8 tile an ISA path runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX512-VNNI, 512-bit `vpdpbusd`.
    Avx512Vnni,
    /// AVX-VNNI, 256-bit `vpdpbusd` (on the `avx2` path).
    AvxVnni,
    /// Plain integer loops.
    Portable,
}

impl Int8Kernel {
    pub fn for_isa(isa: Isa) -> Int8Kernel {
        match isa {
            Isa::Avx512 if vnni() => Int8Kernel::Avx512Vnni,
            Isa::Avx2 | Isa::Avx512 if avx_vnni() => Int8Kernel::AvxVnni,
            _ => Int8Kernel::Portable,
        }
    }
}

/// Whether this CPU has the VNNI kernel.
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x * inv_scale` rounded to nearest even (as `vcvtps2dq` does) and clamped to `[lo, hi]`
/// (NaN gives 0).
fn quantize(x: f32, inv_scale: f32, lo: f32, hi: f32) -> i32 {
    (x * inv_scale).round_ties_even().clamp(lo, hi) as i32
}

/// A `[k, n]` weight quantized per column to s8, in VNNI panels.
#[derive(Debug)]
pub struct PackedI8 {
    pub k: usize,
    pub n: usize,
    data: Vec<u32>,
    /// Per column (padded to whole panels): the dequantization scale and the sum of `wq`.
    scales: Vec<f32>,
    colsum: Vec<i32>,
}

impl PackedI8 {
    /// Quantizes and packs `b` (`[k, n]`, or `[n, k]` when `transposed`).
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool) -> Result<PackedI8> {
        let (kq, padded) = (k.div_ceil(4), n.div_ceil(NR) * NR);
        let mut data = try_zeroed("an int8 weight", panel_len(b, k, n, NR, 4)?)?;
        let at = |p: usize, c: usize| weight_at(b, k, n, transposed, p, c);
        let (mut scales, mut colsum) = (vec![0.0f32; padded], vec![0i32; padded]);
        for c in 0..n {
            let max = (0..k).fold(0.0f32, |m, p| m.max(at(p, c).abs()));
            let scale = if max.is_finite() && max > 0.0 {
                max / 127.0
            } else {
                0.0
            };
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            scales[c] = if max.is_finite() { scale } else { f32::NAN };
            let (panel, col) = (c / NR, c % NR);
            for p in 0..k {
                let q = quantize(at(p, c), inv, -127.0, 127.0);
                colsum[c] += q;
                let word = &mut data[(panel * kq + p / 4) * NR + col];
                *word |= ((q as i8 as u8) as u32) << (8 * (p % 4));
            }
        }
        Ok(PackedI8 {
            k,
            n,
            data,
            scales,
            colsum,
        })
    }

    fn panel(&self, j: usize) -> *const u32 {
        self.data[j * self.k.div_ceil(4) * NR..].as_ptr()
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4 + self.scales.len() * 8
    }

    /// The dequantized weight `wq * scale` at `[p, c]` (for tests and the reference model).
    pub fn dequantized(&self, p: usize, c: usize) -> f32 {
        let word = self.data[((c / NR) * self.k.div_ceil(4) + p / 4) * NR + c % NR];
        let q = (word >> (8 * (p % 4))) as u8 as i8;
        f32::from(q) * self.scales[c]
    }
}

/// Per-row quantization of activations: the `u8` codes (as 4-byte words along k), the scale and
/// the zero point.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowQuant {
    pub scale: f32,
    pub zp: i32,
}

/// Quantizes one row into `out` (`ceil(k / 4)` words, zero-padded) and returns its parameters.
pub fn quantize_row(x: &[f32], out: &mut [u32]) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature; the loops stay inside both slices.
        return unsafe { quantize_row_avx512(x, out) };
    }
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let finite = x.iter().all(|v| v.is_finite());
    out.fill(0);
    let Some(q) = row_params(lo, hi, finite) else {
        return RowQuant {
            scale: if finite { 0.0 } else { f32::NAN },
            zp: 0,
        };
    };
    let inv = 1.0 / q.scale;
    for (p, v) in x.iter().enumerate() {
        let code = (quantize(*v, inv, -255.0, 255.0) + q.zp).clamp(0, 255) as u32;
        out[p / 4] |= code << (8 * (p % 4));
    }
    q
}

/// Scale and zero point of a row spanning `[lo, hi]` (0 included); `None` for a row of zeros
/// or a non-finite one.
fn row_params(lo: f32, hi: f32, finite: bool) -> Option<RowQuant> {
    let scale = (hi - lo) / 255.0;
    if !finite || scale <= 0.0 || !scale.is_normal() {
        return None;
    }
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
    Some(RowQuant { scale, zp })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(x: &[f32], out: &mut [u32]) -> RowQuant {
    use std::arch::x86_64::*;
    let whole = x.len() / 16;
    // SAFETY: every vector access below is inside `x` (16 * whole floats) or `out`'s bytes.
    unsafe {
        let (mut lo, mut hi, mut bad) = (
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
        );
        for i in 0..whole {
            let v = _mm512_loadu_ps(x.as_ptr().add(16 * i));
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
            // x * 0 is NaN exactly for infinities and NaNs.
            bad = _mm512_add_ps(bad, _mm512_mul_ps(v, _mm512_setzero_ps()));
        }
        let tail = &x[16 * whole..];
        let lo = tail.iter().fold(_mm512_reduce_min_ps(lo), |m, v| m.min(*v));
        let hi = tail.iter().fold(_mm512_reduce_max_ps(hi), |m, v| m.max(*v));
        let finite = _mm512_reduce_add_ps(bad) == 0.0 && tail.iter().all(|v| v.is_finite());
        out.fill(0);
        let Some(q) = row_params(lo, hi, finite) else {
            return RowQuant {
                scale: if finite { 0.0 } else { f32::NAN },
                zp: 0,
            };
        };
        let (inv, zp) = (_mm512_set1_ps(1.0 / q.scale), _mm512_set1_epi32(q.zp));
        let (zero, top) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        let bytes = out.as_mut_ptr().cast::<u8>();
        for i in 0..whole {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(16 * i)), inv);
            let c = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
            let c = _mm512_min_epi32(_mm512_max_epi32(c, zero), top);
            _mm_storeu_si128(bytes.add(16 * i).cast(), _mm512_cvtepi32_epi8(c));
        }
        let inv = 1.0 / q.scale;
        for (p, v) in tail.iter().enumerate() {
            let code = (quantize(*v, inv, -255.0, 255.0) + q.zp).clamp(0, 255) as u8;
            *bytes.add(16 * whole + p) = code;
        }
        q
    }
}

/// An A operand quantized row by row, once per product (shared by all its tasks).
#[derive(Debug, Default)]
pub struct QuantA {
    /// `ceil(k / 4)` words per row.
    pub words: Vec<u32>,
    pub rows: Vec<RowQuant>,
    pub kq: usize,
}

impl QuantA {
    /// Quantizes `m` rows of `k` (row stride `lda`) from `a`, rows split over the pool.
    ///
    /// # Safety
    /// `a` holds `m` rows of `k` floats with stride `lda`.
    pub unsafe fn new(a: *const f32, m: usize, k: usize, lda: usize) -> Result<QuantA> {
        use rayon::prelude::*;
        let kq = k.div_ceil(4);
        let len = m
            .checked_mul(kq)
            .ok_or_else(|| Error::Memory("quantized rows overflow".into()))?;
        let mut words: Vec<u32> = try_zeroed("quantized rows", len)?;
        let mut rows: Vec<RowQuant> = try_zeroed("quantized row scales", m)?;
        let base = crate::cpu::OutPtr(a as *mut f32);
        let quantize = |(r, (w, q)): (usize, (&mut [u32], &mut RowQuant))| {
            // SAFETY: row r of a (the caller's contract).
            let src = unsafe { std::slice::from_raw_parts(base.get().add(r * lda), k) };
            *q = quantize_row(src, w);
        };
        let it = words.chunks_mut(kq.max(1)).zip(rows.iter_mut());
        if m * k < 1 << 15 {
            it.enumerate().for_each(quantize);
        } else {
            words
                .par_chunks_mut(kq.max(1))
                .zip(rows.par_iter_mut())
                .enumerate()
                .for_each(quantize);
        }
        Ok(QuantA { words, rows, kq })
    }
}

thread_local! {
    /// Per-thread edge tile.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows `rows` x panels `panels` of one job whose B is `b` and whose A, quantized, is `qa`,
/// then their epilogue.
///
/// # Safety
/// As `driver::run`: the job's pointers cover `m x n` of C; `qa` holds the job's `m` rows.
pub(super) unsafe fn block(
    kern: &MicroKernel,
    job: &GemmJob,
    b: &PackedI8,
    qa: &QuantA,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
) {
    let kq = qa.kq;
    let which = Int8Kernel::for_isa(kern.isa);
    SCRATCH.with_borrow_mut(|tile_buf| {
        tile_buf.resize(MR * NR, 0.0);
        // SAFETY (whole block): the job's contract covers every pointer formed here.
        unsafe {
            for j in panels {
                let c0 = j * NR;
                let cols = (job.n - c0).min(NR);
                let (bp, scales, sums) =
                    (b.panel(j), &b.scales[c0..c0 + NR], &b.colsum[c0..c0 + NR]);
                for r0 in rows.clone().step_by(MR) {
                    let h = (rows.end - r0).min(MR);
                    let a = qa.words.as_ptr().add(r0 * kq);
                    let q = &qa.rows[r0..r0 + h];
                    let (c, ldc) = if cols == NR {
                        (job.c.add(r0 * job.ldc + c0), job.ldc)
                    } else {
                        (tile_buf.as_mut_ptr(), NR)
                    };
                    let tile = Tile {
                        kq,
                        a,
                        b: bp,
                        scales,
                        sums,
                        rows: q,
                        c,
                        ldc,
                    };
                    match which {
                        Int8Kernel::Avx512Vnni => tile_vnni(&tile),
                        Int8Kernel::AvxVnni => tile_avx_vnni(&tile),
                        Int8Kernel::Portable => tile_portable(&tile),
                    }
                    if cols < NR {
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

/// One register tile: `rows.len()` quantized A rows (stride `kq` words) by one panel.
struct Tile<'a> {
    kq: usize,
    a: *const u32,
    b: *const u32,
    scales: &'a [f32],
    sums: &'a [i32],
    rows: &'a [RowQuant],
    c: *mut f32,
    ldc: usize,
}

/// The dequantized value of one accumulated sum.
fn dequantize(acc: i32, row: RowQuant, sum: i32, scale: f32) -> f32 {
    acc.wrapping_sub(row.zp.wrapping_mul(sum)) as f32 * (row.scale * scale)
}

/// # Safety
/// The tile's pointers hold its rows (`kq` words each), `kq` rows of 32 words, and its output.
unsafe fn tile_portable(t: &Tile) {
    for (r, row) in t.rows.iter().enumerate() {
        let mut acc = [0i32; NR];
        for q in 0..t.kq {
            // SAFETY: inside the tile's A row and B panel.
            let aw = unsafe { *t.a.add(r * t.kq + q) };
            for (c, a) in acc.iter_mut().enumerate() {
                let bw = unsafe { *t.b.add(q * NR + c) };
                for j in 0..4 {
                    let x = ((aw >> (8 * j)) & 0xff) as i32;
                    let w = ((bw >> (8 * j)) as u8 as i8) as i32;
                    *a += x * w;
                }
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: the output row holds 32 floats.
            unsafe { *t.c.add(r * t.ldc + c) = dequantize(*a, *row, t.sums[c], t.scales[c]) };
        }
    }
}

/// # Safety
/// As `tile_portable`, on a CPU with AVX512-VNNI.
unsafe fn tile_vnni(t: &Tile) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded.
    unsafe {
        match t.rows.len() {
            1 => vnni_rows::<1>(t),
            2 => vnni_rows::<2>(t),
            3 => vnni_rows::<3>(t),
            4 => vnni_rows::<4>(t),
            5 => vnni_rows::<5>(t),
            6 => vnni_rows::<6>(t),
            7 => vnni_rows::<7>(t),
            8 => vnni_rows::<8>(t),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unsafe {
        tile_portable(t)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni_rows<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    // SAFETY: the tile's contract bounds every pointer below.
    unsafe {
        let mut lo: [__m512i; R] = [_mm512_setzero_si512(); R];
        let mut hi: [__m512i; R] = [_mm512_setzero_si512(); R];
        for q in 0..t.kq {
            let b0 = _mm512_loadu_si512(t.b.add(q * NR).cast());
            let b1 = _mm512_loadu_si512(t.b.add(q * NR + 16).cast());
            for r in 0..R {
                let av = _mm512_set1_epi32(*t.a.add(r * t.kq + q) as i32);
                lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
            }
        }
        let (s0, s1) = (
            _mm512_loadu_ps(t.scales.as_ptr()),
            _mm512_loadu_ps(t.scales.as_ptr().add(16)),
        );
        let (c0, c1) = (
            _mm512_loadu_si512(t.sums.as_ptr().cast()),
            _mm512_loadu_si512(t.sums.as_ptr().add(16).cast()),
        );
        for r in 0..R {
            let row = t.rows[r];
            let zp = _mm512_set1_epi32(row.zp);
            let rs = _mm512_set1_ps(row.scale);
            let y0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(lo[r], _mm512_mullo_epi32(zp, c0)));
            let y1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(hi[r], _mm512_mullo_epi32(zp, c1)));
            _mm512_storeu_ps(t.c.add(r * t.ldc), _mm512_mul_ps(y0, _mm512_mul_ps(rs, s0)));
            _mm512_storeu_ps(
                t.c.add(r * t.ldc + 16),
                _mm512_mul_ps(y1, _mm512_mul_ps(rs, s1)),
            );
        }
    }
}

/// # Safety
/// As `tile_portable`, on a CPU with AVX-VNNI. Two rows at a time: 8 accumulators of 8 lanes
/// plus 4 panel vectors stay within the 16 ymm registers.
unsafe fn tile_avx_vnni(t: &Tile) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded.
    unsafe {
        for r0 in (0..t.rows.len()).step_by(2) {
            if t.rows.len() - r0 >= 2 {
                avx_vnni_rows::<2>(t, r0);
            } else {
                avx_vnni_rows::<1>(t, r0);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unsafe {
        tile_portable(t)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni_rows<const R: usize>(t: &Tile, r0: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the tile's contract bounds every pointer below.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        for q in 0..t.kq {
            let b: [__m256i; 4] =
                std::array::from_fn(|v| _mm256_loadu_si256(t.b.add(q * NR + 8 * v).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*t.a.add((r0 + r) * t.kq + q) as i32);
                for (a, bv) in row.iter_mut().zip(&b) {
                    *a = _mm256_dpbusd_avx_epi32(*a, av, *bv);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let q = t.rows[r0 + r];
            let (zp, rs) = (_mm256_set1_epi32(q.zp), _mm256_set1_ps(q.scale));
            for (v, a) in row.iter().enumerate() {
                let sums = _mm256_loadu_si256(t.sums.as_ptr().add(8 * v).cast());
                let scales = _mm256_loadu_ps(t.scales.as_ptr().add(8 * v));
                let y = _mm256_cvtepi32_ps(_mm256_sub_epi32(*a, _mm256_mullo_epi32(zp, sums)));
                _mm256_storeu_ps(
                    t.c.add((r0 + r) * t.ldc + 8 * v),
                    _mm256_mul_ps(y, _mm256_mul_ps(rs, scales)),
                );
            }
        }
    }
}
