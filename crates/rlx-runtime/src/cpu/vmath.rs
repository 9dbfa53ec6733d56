//! Activations on explicit SIMD vectors (AVX-512 and AVX2), the hot loops of GEMM epilogues
//! and elementwise kernels. The math is written once over a small vector trait and matches the
//! scalar functions in `math.rs` (same range reduction, polynomials and edge cases, within a
//! few ulp: FMA rounds once where the scalar code rounds twice).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rlx_ir::UnaryOp;

use super::isa::Isa;
use super::math;

/// Whether `op` has a vector implementation here (others use the scalar loop).
pub fn vectorized(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Exp | UnaryOp::Gelu | UnaryOp::Sigmoid | UnaryOp::Silu | UnaryOp::GeluTanh
    )
}

/// `xs[i] = op(xs[i])` on the vectors of `isa`; ops without a vector form (and the scalar
/// ISA) go through `math::unary_in_place`.
pub fn unary_in_place(isa: Isa, op: UnaryOp, xs: &mut [f32]) {
    let p = xs.as_mut_ptr();
    // SAFETY: reading and writing the same slice element by element is in bounds.
    unsafe { map_ptr(isa, op, p, p, xs.len()) }
}

/// `c[r, j] = act(c[r, j] + bias[j])` over a `rows x cols` block with row stride `ldc`: a GEMM
/// epilogue, one call per block so the per-row work is a tight vector loop.
///
/// # Safety
/// `c` holds `rows` rows of `cols` elements with stride `ldc`; `bias` (if any) holds `cols`.
pub unsafe fn bias_act_block(
    isa: Isa,
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    let bias = bias.map(|b| &b[..cols]);
    // SAFETY: forwarded; an ISA is only chosen on a CPU that has it.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => block_avx512(c, rows, cols, ldc, bias, act),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => block_avx2(c, rows, cols, ldc, bias, act),
            _ => {
                for r in 0..rows {
                    let row = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
                    if let Some(b) = bias {
                        row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                    }
                    if let Some(op) = act {
                        math::unary_in_place(op, row);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    unsafe { block_v::<V512>(c, rows, cols, ldc, bias, act) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    unsafe { block_v::<V256>(c, rows, cols, ldc, bias, act) }
}

#[inline(always)]
unsafe fn block_v<V: F32s>(
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    // SAFETY: every access is inside the block the caller describes.
    unsafe {
        for r in 0..rows {
            let row = c.add(r * ldc);
            if let Some(b) = bias {
                let body = cols - cols % V::N;
                let mut j = 0;
                while j < body {
                    V::load(row.add(j))
                        .add(V::load(b.as_ptr().add(j)))
                        .store(row.add(j));
                    j += V::N;
                }
                for (j, bj) in b.iter().enumerate().skip(body) {
                    *row.add(j) += bj;
                }
            }
            match act {
                Some(op) if vectorized(op) => map_v::<V>(op, row, row, cols),
                Some(op) => math::unary_in_place(op, std::slice::from_raw_parts_mut(row, cols)),
                None => {}
            }
        }
    }
}

/// Softmax of one attention row in place, on the vectors of `isa`: keys `0..live` take part
/// (the rest become 0), each score scaled by `scale` and shifted by `add[j]` when given (a
/// bias, or -inf for a masked key). A row with no key to attend becomes all zeros; NaN scores
/// give NaN.
pub fn softmax_row(isa: Isa, row: &mut [f32], live: usize, add: Option<&[f32]>, scale: f32) {
    let inv = softmax_row_unnormalized(isa, row, live, add, scale);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// As [`softmax_row`] without the last pass: the row holds `exp(x - max)` and the returned
/// factor (`1 / sum`, 0 for a row with no key) normalizes it. Attention applies the factor to
/// its `dv`-wide output row instead of the `sk`-wide score row.
pub fn softmax_row_unnormalized(
    isa: Isa,
    row: &mut [f32],
    live: usize,
    add: Option<&[f32]>,
    scale: f32,
) -> f32 {
    let (row, dead) = row.split_at_mut(live.min(row.len()));
    dead.fill(0.0);
    let add = add.map(|a| &a[..row.len()]);
    // SAFETY: an ISA is only chosen on a CPU that has it.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => softmax_avx512(row, add, scale),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => softmax_avx2(row, add, scale),
            _ => softmax_v::<Scalar>(row, add, scale),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32], add: Option<&[f32]>, scale: f32) -> f32 {
    unsafe { softmax_v::<V512>(row, add, scale) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32], add: Option<&[f32]>, scale: f32) -> f32 {
    unsafe { softmax_v::<V256>(row, add, scale) }
}

/// One softmax row, two vector passes: scale + shift + max, then exp + sum; returns 1 / sum.
#[inline(always)]
unsafe fn softmax_v<V: F32s>(row: &mut [f32], add: Option<&[f32]>, scale: f32) -> f32 {
    // SAFETY: every pointer below stays inside `row`.
    unsafe {
        let max = scale_max_v::<V>(row, add, scale);
        let no_key =
            || row.is_empty() || add.is_some_and(|a| a.iter().all(|x| *x == f32::NEG_INFINITY));
        if max == f32::NEG_INFINITY && no_key() {
            row.fill(0.0);
            return 0.0;
        }
        let (n, p) = (row.len(), row.as_mut_ptr());
        let body = n - n % V::N;
        let (mv, mut acc, mut tail) = (V::splat(max), V::splat(0.0), 0.0f32);
        let mut j = 0;
        while j < body {
            let e = exp_nonpositive_v(V::load(p.add(j)).sub(mv));
            e.store(p.add(j));
            acc = acc.add(e);
            j += V::N;
        }
        for j in body..n {
            let e = math::exp(*p.add(j) - max);
            *p.add(j) = e;
            tail += e;
        }
        1.0 / (hsum(acc) + tail)
    }
}

/// `row[j] = row[j] * scale + add[j]`, returning the row's maximum (vector lanes, then their
/// maximum); a NaN may be dropped by the max, but it still turns the row into NaN after.
#[inline(always)]
unsafe fn scale_max_v<V: F32s>(row: &mut [f32], add: Option<&[f32]>, scale: f32) -> f32 {
    let n = row.len();
    let body = n - n % V::N;
    let p = row.as_mut_ptr();
    // SAFETY: indices below n are inside row and add (same length).
    unsafe {
        let (sv, mut m) = (V::splat(scale), V::splat(f32::NEG_INFINITY));
        let mut j = 0;
        while j < body {
            let mut v = V::load(p.add(j)).mul(sv);
            if let Some(a) = add {
                v = v.add(V::load(a.as_ptr().add(j)));
            }
            v.store(p.add(j));
            m = m.at_least(v);
            j += V::N;
        }
        let mut lanes = [f32::NEG_INFINITY; 16];
        m.store(lanes.as_mut_ptr());
        let mut max = lanes[..V::N]
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for j in body..n {
            let v = *p.add(j) * scale + add.map_or(0.0, |a| a[j]);
            *p.add(j) = v;
            max = max.max(v);
        }
        max
    }
}

/// Layer norm of one row on the vectors of `isa`: `out = norm(a + b) * gamma + beta` (`b`
/// optional), with `out` allowed to be `a` or `b` (each element is read before it is written).
///
/// # Safety
/// `a`, `b` (if given) and `out` hold `d` elements; `gamma` and `beta` hold `d`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn add_norm_row(
    isa: Isa,
    a: *const f32,
    b: Option<*const f32>,
    out: *mut f32,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
) {
    // SAFETY: forwarded; an ISA is only chosen on a CPU that has it.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => add_norm_avx512(a, b, out, gamma, beta, eps, d),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => add_norm_avx2(a, b, out, gamma, beta, eps, d),
            _ => add_norm_v::<Scalar>(a, b, out, gamma, beta, eps, d),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn add_norm_avx512(
    a: *const f32,
    b: Option<*const f32>,
    out: *mut f32,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
) {
    unsafe { add_norm_v::<V512>(a, b, out, gamma, beta, eps, d) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn add_norm_avx2(
    a: *const f32,
    b: Option<*const f32>,
    out: *mut f32,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
) {
    unsafe { add_norm_v::<V256>(a, b, out, gamma, beta, eps, d) }
}

/// Sum of a vector's lanes.
#[inline(always)]
unsafe fn hsum<V: F32s>(v: V) -> f32 {
    let mut lanes = [0.0f32; 16];
    unsafe { v.store(lanes.as_mut_ptr()) };
    lanes[..V::N].iter().sum()
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn add_norm_v<V: F32s>(
    a: *const f32,
    b: Option<*const f32>,
    out: *mut f32,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
) {
    let body = d - d % V::N;
    let (g, bt) = (&gamma[..d], &beta[..d]);
    // SAFETY: every index is below d (the caller's contract).
    unsafe {
        // Sum (and the added row, stored in out).
        let (mut acc, mut tail) = (V::splat(0.0), 0.0f32);
        let mut j = 0;
        while j < body {
            let mut v = V::load(a.add(j));
            if let Some(b) = b {
                v = v.add(V::load(b.add(j)));
            }
            v.store(out.add(j));
            acc = acc.add(v);
            j += V::N;
        }
        for j in body..d {
            let v = *a.add(j) + b.map_or(0.0, |b| *b.add(j));
            *out.add(j) = v;
            tail += v;
        }
        let mean = (hsum(acc) + tail) / d as f32;
        // Variance from deviations (two passes: no cancellation for rows far from 0).
        let (mv, mut sq, mut tail) = (V::splat(mean), V::splat(0.0), 0.0f32);
        let mut j = 0;
        while j < body {
            let dv = V::load(out.add(j)).sub(mv);
            sq = dv.fma(dv, sq);
            j += V::N;
        }
        for j in body..d {
            let dv = *out.add(j) - mean;
            tail += dv * dv;
        }
        let inv = 1.0 / ((hsum(sq) + tail) / d as f32 + eps).sqrt();
        let iv = V::splat(inv);
        let mut j = 0;
        while j < body {
            let y = V::load(out.add(j)).sub(mv).mul(iv);
            y.fma(V::load(g.as_ptr().add(j)), V::load(bt.as_ptr().add(j)))
                .store(out.add(j));
            j += V::N;
        }
        for j in body..d {
            *out.add(j) = (*out.add(j) - mean) * inv * g[j] + bt[j];
        }
    }
}

/// One-lane stand-in for the portable path of the softmax helpers.
#[derive(Clone, Copy)]
struct Scalar(f32);

impl F32s for Scalar {
    const N: usize = 1;
    unsafe fn splat(x: f32) -> Self {
        Scalar(x)
    }
    unsafe fn load(p: *const f32) -> Self {
        unsafe { Scalar(*p) }
    }
    unsafe fn store(self, p: *mut f32) {
        unsafe { *p = self.0 }
    }
    unsafe fn add(self, o: Self) -> Self {
        Scalar(self.0 + o.0)
    }
    unsafe fn sub(self, o: Self) -> Self {
        Scalar(self.0 - o.0)
    }
    unsafe fn mul(self, o: Self) -> Self {
        Scalar(self.0 * o.0)
    }
    unsafe fn div(self, o: Self) -> Self {
        Scalar(self.0 / o.0)
    }
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Scalar(self.0.mul_add(a.0, b.0))
    }
    unsafe fn at_least(self, lo: Self) -> Self {
        Scalar(if self.0 < lo.0 { lo.0 } else { self.0 })
    }
    unsafe fn at_most(self, hi: Self) -> Self {
        Scalar(if self.0 > hi.0 { hi.0 } else { self.0 })
    }
    unsafe fn abs(self) -> Self {
        Scalar(self.0.abs())
    }
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        if self.0 < b.0 { then } else { other }
    }
    unsafe fn pow2_of_rounded(self) -> Self {
        Scalar(f32::from_bits(
            (self
                .0
                .to_bits()
                .wrapping_sub(12_582_912.0f32.to_bits())
                .wrapping_add(127))
                << 23,
        ))
    }
}

/// `dst[i] = op(src[i])` on the vectors of the process's ISA (`RLX_ISA` or the CPU's best),
/// for elementwise kernels.
pub fn unary_map_default(op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    unary_map(
        super::isa::default_isa().unwrap_or(Isa::Scalar),
        op,
        src,
        dst,
    )
}

/// `dst[i] = op(src[i])` on the vectors of `isa`.
pub fn unary_map(isa: Isa, op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    // SAFETY: both slices hold n elements; they are distinct borrows.
    unsafe { map_ptr(isa, op, src.as_ptr(), dst.as_mut_ptr(), n) }
}

/// # Safety
/// `src` and `dst` hold `n` elements; they may be equal, but must not partly overlap.
unsafe fn map_ptr(isa: Isa, op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    // SAFETY: an ISA is only chosen on a CPU that has it (`Isa::resolve`).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if vectorized(op) => map_avx512(op, src, dst, n),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if vectorized(op) => map_avx2(op, src, dst, n),
            _ if std::ptr::eq(src, dst) => {
                math::unary_in_place(op, std::slice::from_raw_parts_mut(dst, n))
            }
            _ => math::unary_map(
                op,
                std::slice::from_raw_parts(src, n),
                std::slice::from_raw_parts_mut(dst, n),
            ),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn map_avx512(op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    unsafe { map_v::<V512>(op, src, dst, n) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    unsafe { map_v::<V256>(op, src, dst, n) }
}

/// The operations the activations need, on one vector of `N` lanes.
trait F32s: Copy {
    const N: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self * a + b`, rounded once.
    unsafe fn fma(self, a: Self, b: Self) -> Self;
    /// Lane-wise `max(lo, self)`, keeping NaN lanes of `self`.
    unsafe fn at_least(self, lo: Self) -> Self;
    /// Lane-wise `min(hi, self)`, keeping NaN lanes of `self`.
    unsafe fn at_most(self, hi: Self) -> Self;
    unsafe fn abs(self) -> Self;
    /// `if self < b { then } else { other }` per lane (false for NaN).
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self;
    /// `2^n` for lanes holding `n + 1.5 * 2^23` (the rounding trick of `exp`).
    unsafe fn pow2_of_rounded(self) -> Self;
}

/// Applies `op` to `n` elements, vector by vector; the tail goes through the scalar function.
#[inline(always)]
unsafe fn map_v<V: F32s>(op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds of src and dst.
    unsafe {
        // Four independent vectors per step: the functions are long dependency chains, and
        // interleaving four of them keeps the FMA units busy.
        macro_rules! each {
            ($f:expr) => {{
                let mut i = 0;
                while i + 4 * V::N <= body {
                    let (a, b) = (V::load(src.add(i)), V::load(src.add(i + V::N)));
                    let (c, d) = (
                        V::load(src.add(i + 2 * V::N)),
                        V::load(src.add(i + 3 * V::N)),
                    );
                    let (a, b, c, d) = ($f(a), $f(b), $f(c), $f(d));
                    a.store(dst.add(i));
                    b.store(dst.add(i + V::N));
                    c.store(dst.add(i + 2 * V::N));
                    d.store(dst.add(i + 3 * V::N));
                    i += 4 * V::N;
                }
                while i < body {
                    $f(V::load(src.add(i))).store(dst.add(i));
                    i += V::N;
                }
            }};
        }
        match op {
            UnaryOp::Exp => each!(exp_v::<V>),
            UnaryOp::Gelu => each!(gelu_v::<V>),
            UnaryOp::Sigmoid => each!(sigmoid_v::<V>),
            UnaryOp::Silu => each!(|x: V| x.mul(sigmoid_v(x))),
            UnaryOp::GeluTanh => each!(gelu_tanh_v::<V>),
            _ => {}
        }
        for i in body..n {
            *dst.add(i) = math::unary(op, *src.add(i));
        }
    }
}

/// `math::exp` on a vector.
#[inline(always)]
unsafe fn exp_v<V: F32s>(x: V) -> V {
    unsafe {
        let c = x.at_least(V::splat(-87.0)).at_most(V::splat(88.0));
        let r = c.fma(V::splat(std::f32::consts::LOG2_E), V::splat(12_582_912.0));
        let n = r.sub(V::splat(12_582_912.0));
        let g = n.fma(V::splat(-0.693_359_4), c);
        let g = n.fma(V::splat(2.121_944_4e-4), g);
        let mut p = V::splat(1.0 / 720.0);
        for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.fma(g, V::splat(k));
        }
        let y = p.mul(r.pow2_of_rounded());
        let y = x.select_lt(V::splat(-87.0), V::splat(0.0), y);
        V::splat(88.0).select_lt(x, V::splat(f32::INFINITY), y)
    }
}

/// `exp(x)` for `x <= 0` (softmax after the max is taken): no overflow to handle, and below
/// -87 the result is flushed to 0 by a clamp. NaN propagates (through the clamp's order).
#[inline(always)]
unsafe fn exp_nonpositive_v<V: F32s>(x: V) -> V {
    unsafe {
        let c = x.at_least(V::splat(-87.0));
        let r = c.fma(V::splat(std::f32::consts::LOG2_E), V::splat(12_582_912.0));
        let n = r.sub(V::splat(12_582_912.0));
        let g = n.fma(V::splat(-0.693_359_4), c);
        let g = n.fma(V::splat(2.121_944_4e-4), g);
        let mut p = V::splat(1.0 / 720.0);
        for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.fma(g, V::splat(k));
        }
        // Below -87 (and for -inf) c = -87: e^-87 is 1.6e-38, which the select makes exactly 0.
        x.select_lt(V::splat(-87.0), V::splat(0.0), p.mul(r.pow2_of_rounded()))
    }
}

/// `math::erfc` on a vector.
#[inline(always)]
unsafe fn erfc_v<V: F32s>(x: V) -> V {
    unsafe {
        let z = x.abs();
        let t = V::splat(1.0).div(z.fma(V::splat(0.5), V::splat(1.0)));
        let mut p = V::splat(0.170_872_77);
        for k in [-0.822_152_2, 1.488_515_9, -1.135_204] {
            p = p.fma(t, V::splat(k));
        }
        for k in [
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_7,
        ] {
            p = t.fma(p, V::splat(k));
        }
        let arg = t.fma(p, V::splat(-1.265_512_2)).sub(z.mul(z));
        let r = t.mul(exp_v(arg));
        x.select_lt(V::splat(0.0), V::splat(2.0).sub(r), r)
    }
}

/// `math::gelu`: `0.5 * x * erfc(-x / sqrt(2))`.
#[inline(always)]
unsafe fn gelu_v<V: F32s>(x: V) -> V {
    unsafe {
        let e = erfc_v(x.mul(V::splat(-std::f32::consts::FRAC_1_SQRT_2)));
        x.mul(V::splat(0.5)).mul(e)
    }
}

#[inline(always)]
unsafe fn sigmoid_v<V: F32s>(x: V) -> V {
    unsafe { V::splat(1.0).div(V::splat(1.0).add(exp_v(V::splat(0.0).sub(x)))) }
}

/// `x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 x^3))`, as `math::unary` computes it.
#[inline(always)]
unsafe fn gelu_tanh_v<V: F32s>(x: V) -> V {
    unsafe {
        let x3 = x.mul(x).mul(x);
        let u = x3
            .fma(V::splat(0.044_715), x)
            .mul(V::splat(2.0 * 0.797_884_6));
        x.mul(sigmoid_v(u))
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V512(__m512);

// Each method is one intrinsic; the callers are compiled with the ISA's target features.
#[cfg(target_arch = "x86_64")]
impl F32s for V512 {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { V512(_mm512_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { V512(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        unsafe { V512(_mm512_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        unsafe { V512(_mm512_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        unsafe { V512(_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        unsafe { V512(_mm512_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        unsafe { V512(_mm512_fmadd_ps(self.0, a.0, b.0)) }
    }
    // max_ps / min_ps return their second operand when either is NaN: NaN goes second.
    #[inline(always)]
    unsafe fn at_least(self, lo: Self) -> Self {
        unsafe { V512(_mm512_max_ps(lo.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn at_most(self, hi: Self) -> Self {
        unsafe { V512(_mm512_min_ps(hi.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe {
            let mask = _mm512_set1_epi32(0x7fff_ffff);
            V512(_mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(self.0),
                mask,
            )))
        }
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        unsafe {
            V512(_mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, b.0),
                other.0,
                then.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn pow2_of_rounded(self) -> Self {
        unsafe {
            let bits = _mm512_castps_si512(self.0);
            let bias = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32 - 127);
            V512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
                _mm512_sub_epi32(bits, bias),
            )))
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V256(__m256);

// Each method is one intrinsic; the callers are compiled with the ISA's target features.
#[cfg(target_arch = "x86_64")]
impl F32s for V256 {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { V256(_mm256_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { V256(_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        unsafe { V256(_mm256_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        unsafe { V256(_mm256_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        unsafe { V256(_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        unsafe { V256(_mm256_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        unsafe { V256(_mm256_fmadd_ps(self.0, a.0, b.0)) }
    }
    // max_ps / min_ps return their second operand when either is NaN: NaN goes second.
    #[inline(always)]
    unsafe fn at_least(self, lo: Self) -> Self {
        unsafe { V256(_mm256_max_ps(lo.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn at_most(self, hi: Self) -> Self {
        unsafe { V256(_mm256_min_ps(hi.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe {
            let mask = _mm256_set1_epi32(0x7fff_ffff);
            V256(_mm256_castsi256_ps(_mm256_and_si256(
                _mm256_castps_si256(self.0),
                mask,
            )))
        }
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        unsafe {
            V256(_mm256_blendv_ps(
                other.0,
                then.0,
                _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, b.0),
            ))
        }
    }
    #[inline(always)]
    unsafe fn pow2_of_rounded(self) -> Self {
        unsafe {
            let bits = _mm256_castps_si256(self.0);
            let bias = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32 - 127);
            V256(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
                _mm256_sub_epi32(bits, bias),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_match_f64_on_every_isa() {
        let n = 75;
        let x: Vec<f32> = (0..n).map(|i| ((i * 29 % 17) as f32 - 8.0) * 1.7).collect();
        let mut mask = vec![0.0f32; n];
        mask[3] = f32::NEG_INFINITY;
        mask[40] = f32::NEG_INFINITY;
        for isa in Isa::available() {
            for (live, add) in [
                (n, None),
                (n, Some(&mask[..])),
                (50, Some(&mask[..])),
                (1, None),
            ] {
                let mut row = x.clone();
                softmax_row(isa, &mut row, live, add, 0.5);
                let e: Vec<f64> = (0..live)
                    .map(|j| f64::from(x[j]) * 0.5 + add.map_or(0.0, |a| f64::from(a[j])))
                    .collect();
                let max = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = e.iter().map(|v| (v - max).exp()).sum();
                for j in 0..n {
                    let want = if j < live {
                        (e[j] - max).exp() / sum
                    } else {
                        0.0
                    };
                    assert!(
                        (f64::from(row[j]) - want).abs() < 1e-6,
                        "{isa} live={live} [{j}] {} vs {want}",
                        row[j]
                    );
                }
            }
            // Every key masked: zeros, not NaN; a NaN score: NaN.
            let mut row = x.clone();
            softmax_row(isa, &mut row, n, Some(&vec![f32::NEG_INFINITY; n]), 1.0);
            assert!(row.iter().all(|v| *v == 0.0), "{isa}");
            let mut row = x.clone();
            row[7] = f32::NAN;
            softmax_row(isa, &mut row, n, None, 1.0);
            assert!(row.iter().all(|v| v.is_nan()), "{isa}");
        }
    }

    #[test]
    fn add_norm_rows_match_f64_on_every_isa() {
        for d in [1usize, 7, 16, 37, 384] {
            let a: Vec<f32> = (0..d)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + 100.0)
                .collect();
            let b: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.1).collect();
            let g: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 0.01).collect();
            let bt: Vec<f32> = (0..d).map(|i| i as f32 * -0.02).collect();
            let x: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(a, b)| f64::from(*a) + f64::from(*b))
                .collect();
            let mean = x.iter().sum::<f64>() / d as f64;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for isa in Isa::available() {
                let mut out = a.clone();
                // In place over a, as add_layer_norm may run.
                unsafe {
                    add_norm_row(
                        isa,
                        out.as_ptr(),
                        Some(b.as_ptr()),
                        out.as_mut_ptr(),
                        &g,
                        &bt,
                        1e-5,
                        d,
                    )
                };
                for i in 0..d {
                    let want =
                        (x[i] - mean) / (var + 1e-5).sqrt() * f64::from(g[i]) + f64::from(bt[i]);
                    assert!(
                        (f64::from(out[i]) - want).abs() < 2e-4,
                        "{isa} d={d} [{i}] {} vs {want}",
                        out[i]
                    );
                }
            }
        }
    }

    #[test]
    fn vectors_match_the_scalar_functions_on_every_isa() {
        // Within 2e-5 relative: in gelu's far tail (x < -10) the erfc argument -z^2 is large
        // and one rounding of it moves the result by a few 1e-6 in either implementation.
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 20.0).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e-30,
            -1e-30,
            87.5,
            -87.5,
        ]);
        for isa in Isa::available() {
            for op in [
                UnaryOp::Exp,
                UnaryOp::Gelu,
                UnaryOp::Sigmoid,
                UnaryOp::Silu,
                UnaryOp::GeluTanh,
            ] {
                let mut got = vec![0.0; xs.len()];
                unary_map(isa, op, &xs, &mut got);
                for (x, g) in xs.iter().zip(&got) {
                    let want = math::unary(op, *x);
                    let ok = (want.is_nan() && g.is_nan())
                        || want == *g
                        || (want - g).abs() <= 2e-5 * want.abs() + 1e-30;
                    assert!(ok, "{isa} {op}({x}) = {g}, scalar {want}");
                }
            }
        }
    }
}

#[cfg(test)]
mod probe {
    use super::*;

    #[test]
    #[ignore = "timing probe: cargo test --release -p rlx-runtime --lib vmath -- --ignored --nocapture"]
    fn probe_vector_speed() {
        let xs: Vec<f32> = (0..1 << 16).map(|i| (i as f32 / 4096.0) - 8.0).collect();
        let mut out = vec![0.0; xs.len()];
        for isa in Isa::available() {
            for op in [UnaryOp::Exp, UnaryOp::Gelu] {
                let t = std::time::Instant::now();
                for _ in 0..200 {
                    unary_map(isa, op, &xs, &mut out);
                }
                let ns = t.elapsed().as_nanos() as f64 / (200.0 * xs.len() as f64);
                println!("{isa} {op}: {ns:.3} ns/elem");
            }
        }
    }
}
