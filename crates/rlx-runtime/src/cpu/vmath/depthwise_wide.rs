//! Output rows of a channels-last depthwise convolution with a square kernel wider than 3
//! (5x5 and 7x7, as EfficientNet and ConvNeXt use), stride 1 or 2, no dilation: every position
//! of a row, edges included, in registers. For each channel vector a few positions go at a
//! time; each kernel row inside the image loads its weights and the inputs the positions share
//! once, and every product is a fused multiply-add on registers. Taps outside the image are
//! skipped, not multiplied by zero (a NaN or infinite weight stays out of a sum it has no tap
//! in, as the reference makes it).
//!
//! (The per-tap path this replaces loaded an input and a weight per multiply-add and built the
//! list of taps per edge position: a 5x5 over 7x7x1152 ran at 30 GFLOP/s, ONNX Runtime at 70.)

use super::StoreAct;
use super::depthwise_last::{DepthwiseRows, RowShift};
use super::lanes::F32s;

/// Whether `depthwise_wide_rows` takes this geometry on vectors of `lanes` floats.
pub(super) fn fits(g: &DepthwiseRows, lanes: usize) -> bool {
    g.kh == g.kw
        && matches!(g.kw, 5 | 7)
        && (g.dh, g.dw) == (1, 1)
        && matches!(g.sw, 1 | 2)
        && g.c >= lanes
}

/// Output rows `first..first + count` (`out` holds them, `ow * c` floats each):
/// `out[ox * c + ch] = shift(sum over the taps inside the image, kernel rows then columns in
/// order, of x * w)` (`w`: the weights as `[k * k, c]`), row by row. (Each channel vector over
/// all of a task's rows before the next, to keep its inputs in L1 between rows, was no faster
/// at 7x7x1152 and 6% slower at 14x14x672.)
///
/// # Safety
/// `V`'s ISA is available on this CPU; `fits(g, V::N)`; `x` holds `ih * iw * c` floats, `w`
/// `k * k * c`, `out` `count * ow * c`, a bias `c`; `first + count <= oh`.
#[inline(always)]
pub(super) unsafe fn depthwise_wide_rows<V: F32s>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    (first, count): (usize, usize),
    shift: RowShift,
    out: &mut [f32],
) {
    debug_assert!(fits(g, V::N));
    debug_assert!(x.len() >= g.ih * g.iw * g.c && w.len() >= g.kh * g.kw * g.c);
    debug_assert!(out.len() >= count * g.ow * g.c);
    let row_len = g.ow * g.c;
    for (oy, out) in (first..first + count).zip(out.chunks_exact_mut(row_len)) {
        // SAFETY: forwarded, `out` being row oy's; the kernel width and stride select the
        // instance.
        unsafe {
            match (g.kw, g.sw) {
                (5, 1) => row::<V, 5, 1>(g, x, w, oy, shift, out),
                (5, _) => row::<V, 5, 2>(g, x, w, oy, shift, out),
                (7, 1) => row::<V, 7, 1>(g, x, w, oy, shift, out),
                _ => row::<V, 7, 2>(g, x, w, oy, shift, out),
            }
        }
    }
}

/// Output row `oy` of `depthwise_wide_rows`.
#[inline(always)]
unsafe fn row<V: F32s, const K: usize, const S: usize>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    oy: usize,
    shift: RowShift,
    out: &mut [f32],
) {
    let c = g.c;
    // The kernel rows inside the image: (offset of the row's weights, of its input row).
    let mut taps = [(0usize, 0usize); K];
    let mut n_rows = 0;
    for ky in 0..K {
        if let Some(iy) = (oy * g.sh + ky).checked_sub(g.ph).filter(|iy| *iy < g.ih) {
            taps[n_rows] = (ky * K * c, iy * g.iw * c);
            n_rows += 1;
        }
    }
    let (lo, hi) = g.interior();
    // The widest group the registers hold while it fits, then narrower ones; the last group
    // ends at the row's end, overlapping the one before where fewer positions are left (it
    // stores the same values again: a lone position's one chain of multiply-adds was
    // latency-bound). A group with a position outside the interior columns checks each tap.
    let wide = if V::N == 16 && S == 1 { 8 } else { 4 };
    // SAFETY: every offset formed below is a tap inside the image (interior positions, or
    // edge taps checked), a weight, a bias or an output of this row.
    unsafe {
        let zero = V::splat(0.0);
        // Channels a vector at a time, the last vector ending at channel c (it overlaps the
        // one before where c is not a multiple of the lanes, and stores the same values).
        for ch in (0..c).step_by(V::N).map(|ch| ch.min(c - V::N)) {
            let run = Run::<V, K, S> {
                x: x.as_ptr().add(ch),
                w: w.as_ptr().add(ch),
                rows: &taps[..n_rows],
                c,
                iw: g.iw,
                pw: g.pw,
                init: shift.bias.map_or(zero, |b| V::load(b.as_ptr().add(ch))),
                act: shift.act,
                out: out.as_mut_ptr().add(ch),
            };
            let mut ox = 0;
            while ox < g.ow {
                let left = g.ow - ox;
                let q = if left >= wide {
                    wide
                } else if g.ow >= 4 {
                    4
                } else {
                    left.min(2)
                };
                let at = ox.min(g.ow - q);
                match (q, at >= lo && at + q <= hi) {
                    (8, true) => run.group::<8, false>(at),
                    (8, false) => run.group::<8, true>(at),
                    (4, true) => run.group::<4, false>(at),
                    (4, false) => run.group::<4, true>(at),
                    (2, true) => run.group::<2, false>(at),
                    (2, false) => run.group::<2, true>(at),
                    (_, true) => run.group::<1, false>(at),
                    (_, false) => run.group::<1, true>(at),
                }
                ox = at + q;
            }
        }
    }
}

/// One channel vector of an output row (pointers already at the vector's first channel).
struct Run<'a, V, const K: usize, const S: usize> {
    x: *const f32,
    w: *const f32,
    rows: &'a [(usize, usize)],
    c: usize,
    iw: usize,
    pw: usize,
    init: V,
    act: StoreAct,
    out: *mut f32,
}

impl<V: F32s, const K: usize, const S: usize> Run<'_, V, K, S> {
    /// Positions `ox..ox + Q`: each kernel row's `K` weights and `(Q - 1) * S + K` inputs
    /// loaded once, each input used by every position it is a tap of. With `EDGE`, inputs
    /// outside the image's columns are neither loaded nor added.
    #[inline(always)]
    unsafe fn group<const Q: usize, const EDGE: bool>(&self, ox: usize) {
        let span = (Q - 1) * S + K;
        // Input column of the group's first tap (negative in the left padding).
        let first = (ox * S) as isize - self.pw as isize;
        let inside = |j: usize| {
            let col = first + j as isize;
            !EDGE || (col >= 0 && (col as usize) < self.iw)
        };
        // SAFETY: the caller's contract; loads happen only where `inside`.
        unsafe {
            let mut acc = [self.init; Q];
            for &(wo, xo) in self.rows {
                let wv: [V; K] = std::array::from_fn(|kx| V::load(self.w.add(wo + kx * self.c)));
                let p = self
                    .x
                    .wrapping_add(xo)
                    .wrapping_offset(first * self.c as isize);
                let mut xin = [self.init; 16];
                for (j, v) in xin.iter_mut().enumerate().take(span) {
                    if inside(j) {
                        *v = V::load(p.wrapping_add(j * self.c));
                    }
                }
                for (kx, wk) in wv.iter().enumerate() {
                    for (q, a) in acc.iter_mut().enumerate() {
                        if inside(q * S + kx) {
                            *a = xin[q * S + kx].fma(*wk, *a);
                        }
                    }
                }
            }
            for (q, sum) in acc.iter().enumerate() {
                self.act.on(*sum).store(self.out.add((ox + q) * self.c));
            }
        }
    }
}
