//! Output rows of a channels-last 3x3 depthwise convolution in groups. Two rows at row stride
//! 1 read four input rows instead of six, four rows at stride 2 nine instead of twelve: each
//! input row is loaded once and added into every output it is a kernel row of. Positions go a
//! few at a time, every channel vector of a block before the next block, so a block's input
//! positions are read whole, in order. (One row at a time, each channel vector over a run of
//! positions, read each input row once per output row it feeds: ~55 GFLOP/s at stride 2 and
//! ~80 at stride 1 on a Zen 4 core; ~65 and ~93 in groups.)

use super::StoreAct;
use super::depthwise_last::{DepthwiseRows, RowShift};
use super::lanes::F32s;

/// Where output rows `oy..oy + R` go as a group: a 3x3 kernel without dilation, strides of 1
/// or 2, every kernel row of each inside the image. Returns the offset of `oy`'s first kernel
/// row in the image.
pub(super) fn top_row<const R: usize>(g: &DepthwiseRows, oy: usize) -> Option<usize> {
    let fits =
        (g.kh, g.kw, g.dh, g.dw) == (3, 3, 1, 1) && matches!(g.sh, 1 | 2) && matches!(g.sw, 1 | 2);
    let top = (oy * g.sh).checked_sub(g.ph)?;
    (fits && top + (R - 1) * g.sh + 3 <= g.ih).then_some(top * g.iw * g.c)
}

/// The interior positions (`DepthwiseRows::interior`) of `R` rows whose first kernel row is at
/// `top` (`top_row`), into `out` (`R` rows of `ow * c`).
///
/// # Safety
/// `V`'s ISA is available; `top` came from `top_row::<R>` for this geometry; `c >= V::N`;
/// `x` holds the image, `w` `9 * c`, a bias `c`, `out` `R` rows.
#[inline(always)]
pub(super) unsafe fn group<V: F32s, const R: usize>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    top: usize,
    shift: RowShift,
    out: &mut [f32],
) {
    debug_assert!(g.c >= V::N && w.len() >= 9 * g.c);
    debug_assert!(out.len() >= R * g.ow * g.c);
    // SAFETY: forwarded; the strides select the instance.
    unsafe {
        match (g.sh, g.sw) {
            (1, 1) => sweep::<V, R, 1, 1>(g, x, w, top, shift, out),
            (1, _) => sweep::<V, R, 1, 2>(g, x, w, top, shift, out),
            (_, 1) => sweep::<V, R, 2, 1>(g, x, w, top, shift, out),
            _ => sweep::<V, R, 2, 2>(g, x, w, top, shift, out),
        }
    }
}

/// `group` at row stride `SH` and column stride `S`: blocks of `8 / R` positions, then
/// narrower ones.
#[inline(always)]
unsafe fn sweep<V: F32s, const R: usize, const SH: usize, const S: usize>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    top: usize,
    shift: RowShift,
    out: &mut [f32],
) {
    let (c, (lo, hi)) = (g.c, g.interior());
    let (row, row_len) = (g.iw * c, g.ow * c);
    let widest = 8 / R;
    let mut i = lo;
    // SAFETY: positions lo..hi of the rows read inside the image (interior columns, rows
    // inside by `top_row`); vectors start at most at c - V::N.
    unsafe {
        while i < hi {
            let q = match hi - i {
                n if n >= widest => widest,
                n if n >= 2 => 2,
                _ => 1,
            };
            // The last vector ends at channel c: where c is not a multiple of the lanes it
            // overlaps the one before, storing the same values again.
            for ch in (0..c).step_by(V::N).map(|ch| ch.min(c - V::N)) {
                let wv: [V; 9] = std::array::from_fn(|t| V::load(w.as_ptr().add(t * c + ch)));
                let init = shift
                    .bias
                    .map_or(V::splat(0.0), |b| V::load(b.as_ptr().add(ch)));
                let at = Block {
                    x: x.as_ptr().add(top + (i * S - g.pw) * c + ch),
                    row,
                    c,
                    out: out.as_mut_ptr().add(i * c + ch),
                    row_len,
                    act: shift.act,
                };
                match q {
                    4 => at.sums::<V, R, 4, S, SH>(&wv, init),
                    3 => at.sums::<V, R, 3, S, SH>(&wv, init),
                    2 => at.sums::<V, R, 2, S, SH>(&wv, init),
                    _ => at.sums::<V, R, 1, S, SH>(&wv, init),
                }
            }
            i += q;
        }
    }
}

/// One channel vector of a block of positions of every row of a group.
struct Block {
    /// The first position's first tap in the top kernel row.
    x: *const f32,
    /// Floats between input rows.
    row: usize,
    c: usize,
    /// The first position's output in the first row, and floats between output rows.
    out: *mut f32,
    row_len: usize,
    act: StoreAct,
}

impl Block {
    /// `Q` positions `S` columns apart in `R` rows: the `(R - 1) * SH + 3` input rows in
    /// order, each row's `(Q - 1) * S + 3` inputs loaded once and added into every output row
    /// it is a kernel row of, kernel rows in order (the sums one row alone would make).
    #[inline(always)]
    unsafe fn sums<V: F32s, const R: usize, const Q: usize, const S: usize, const SH: usize>(
        &self,
        wv: &[V; 9],
        init: V,
    ) {
        let span = (Q - 1) * S + 3;
        let mut acc = [[init; Q]; R];
        // SAFETY: the caller's contract (rows and columns of the block inside the image).
        unsafe {
            for j in 0..(R - 1) * SH + 3 {
                let p = self.x.add(j * self.row);
                let mut xin = [init; 9];
                for (t, v) in xin.iter_mut().enumerate().take(span) {
                    *v = V::load(p.add(t * self.c));
                }
                // Kernel row j - o * SH of output row o.
                for (o, sums) in acc.iter_mut().enumerate() {
                    let ky = j.wrapping_sub(o * SH);
                    if ky >= 3 {
                        continue;
                    }
                    for kx in 0..3 {
                        for (q, a) in sums.iter_mut().enumerate() {
                            *a = xin[q * S + kx].fma(wv[ky * 3 + kx], *a);
                        }
                    }
                }
            }
            for (o, sums) in acc.iter().enumerate() {
                for (q, v) in sums.iter().enumerate() {
                    self.act
                        .on(*v)
                        .store(self.out.add(o * self.row_len + q * self.c));
                }
            }
        }
    }
}
