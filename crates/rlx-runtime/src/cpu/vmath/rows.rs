//! Row kernels on vectors: attention softmax rows and layer-norm rows, each one
//! target-feature call per row with all its passes inside.

use super::lanes::F32s;
use super::{exp_nonpositive_v, per_isa};
use crate::cpu::isa::Isa;
use crate::cpu::math;

/// Softmax of one attention row in place, on the vectors of `isa`: keys `0..live` take part
/// (the rest become 0), each score scaled by `scale`, and `add[j]`, when given, is a key mask:
/// 0 keeps key `j`, -inf drops it whatever its score (a NaN score of a masked key is dropped
/// too, as the reference does). A row with no key to attend becomes all zeros; a NaN score of
/// a kept key gives NaN.
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
    // SAFETY: the slices bound every access.
    unsafe { softmax(isa, row, add, scale) }
}

per_isa!(unsafe fn softmax(row: &mut [f32], add: Option<&[f32]>, scale: f32) -> f32 => softmax_v);

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

/// `row[j] = row[j] * scale + add[j]` (-inf where `add[j]` is), returning the row's maximum (vector lanes, then their
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
                // -inf (a masked key) wins over any score, NaN included.
                let a = V::load(a.as_ptr().add(j));
                v = a.select_lt(V::splat(0.0), a, v.add(a));
            }
            v.store(p.add(j));
            m = m.at_least(v);
            j += V::N;
        }
        let mut max = m.reduce_max();
        for j in body..n {
            let v = match add.map(|a| a[j]) {
                Some(f32::NEG_INFINITY) => f32::NEG_INFINITY,
                a => *p.add(j) * scale + a.unwrap_or(0.0),
            };
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
    // SAFETY: forwarded.
    unsafe { add_norm(isa, a, b, out, gamma, beta, eps, d) }
}

per_isa!(unsafe fn add_norm(a: *const f32, b: Option<*const f32>, out: *mut f32, gamma: &[f32], beta: &[f32], eps: f32, d: usize) => add_norm_v);

/// Sum of a vector's lanes.
#[inline(always)]
unsafe fn hsum<V: F32s>(v: V) -> f32 {
    unsafe { v.reduce_add() }
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
        // Variance from deviations (two passes: no cancellation for rows far from 0), with the
        // sum of the deviations correcting the rounded mean (the corrected two-pass form): a
        // row of equal values normalizes to exactly 0 instead of rounding error / sqrt(eps).
        let mv = V::splat(mean);
        let (mut sq, mut dev) = (V::splat(0.0), V::splat(0.0));
        let (mut sq_tail, mut dev_tail) = (0.0f32, 0.0f32);
        let mut j = 0;
        while j < body {
            let dv = V::load(out.add(j)).sub(mv);
            sq = dv.fma(dv, sq);
            dev = dev.add(dv);
            j += V::N;
        }
        for j in body..d {
            let dv = *out.add(j) - mean;
            sq_tail += dv * dv;
            dev_tail += dv;
        }
        let (sq, dev) = (hsum(sq) + sq_tail, hsum(dev) + dev_tail);
        let mean = mean + dev / d as f32;
        let mv = V::splat(mean);
        let var = ((sq - dev * dev / d as f32) / d as f32).max(0.0);
        let inv = 1.0 / (var + eps).sqrt();
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
