//! The 2-D depthwise convolution kernel over padded planes: whole-vector sums, a block of
//! vectors x rows at a time; a 3x3 kernel loads each input row once for every output row it
//! feeds.

use super::lanes::F32s;
use super::per_isa;
use crate::cpu::isa::Isa;

/// One 2-D depthwise plane over a zero-padded copy of its input: `rows` holds the padded rows
/// (`row_len` apart, each split by column phase when strided, with `N` floats of slack after
/// the last), so every tap of every output column reads inside; `offsets[kx]` is where tap
/// column `kx` of output column 0 sits in a row; `taps` the `kh x kw` weights.
pub struct DepthwisePlane<'a> {
    pub rows: &'a [f32],
    pub row_len: usize,
    pub ow: usize,
    /// Row stride and dilation.
    pub sh: usize,
    pub dh: usize,
    pub kh: usize,
    pub offsets: &'a [usize],
    pub taps: &'a [f32],
}

/// Slack the padded rows of a [`DepthwisePlane`] need after their end: one vector of the
/// widest ISA, read past the last output column and discarded.
pub const DEPTHWISE_SLACK: usize = 16;

per_isa!(
    /// Each output row of `dst` sums, tap by tap, whole vectors of a padded input row.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `p.rows` holds the rows the window reaches plus
    /// `DEPTHWISE_SLACK` floats.
    pub unsafe fn depthwise_plane(p: &DepthwisePlane, dst: &mut [f32]) => depthwise_plane_v
);

#[inline(always)]
unsafe fn depthwise_plane_v<V: F32s>(p: &DepthwisePlane, dst: &mut [f32]) {
    debug_assert!(V::N <= DEPTHWISE_SLACK);
    let ow = p.ow.max(1);
    let mut ox = 0;
    // Columns in blocks of up to 4 vectors, rows in groups so that each tap feeds about 8
    // independent sums (one sum per vector would wait on the FMA latency at every tap).
    // SAFETY (all blocks): forwarded contract.
    unsafe {
        if p.kh == 3 && p.offsets.len() == 3 && p.dh == 1 && matches!(p.sh, 1 | 2) {
            let w: [V; 9] = std::array::from_fn(|t| V::splat(p.taps[t]));
            while ox < ow {
                let b = (ow - ox).div_ceil(V::N).min(4);
                match (b, p.sh) {
                    (4, 1) => rows3_of::<V, 4, 2, 1>(p, &w, ox, dst),
                    (4, _) => rows3_of::<V, 4, 2, 2>(p, &w, ox, dst),
                    (3, 1) => rows3_of::<V, 3, 2, 1>(p, &w, ox, dst),
                    (3, _) => rows3_of::<V, 3, 2, 2>(p, &w, ox, dst),
                    (2, 1) => rows3_of::<V, 2, 4, 1>(p, &w, ox, dst),
                    (2, _) => rows3_of::<V, 2, 4, 2>(p, &w, ox, dst),
                    (_, 1) => rows3_of::<V, 1, 4, 1>(p, &w, ox, dst),
                    (_, _) => rows3_of::<V, 1, 4, 2>(p, &w, ox, dst),
                }
                ox += b * V::N;
            }
            return;
        }
        while ox < ow {
            let b = (ow - ox).div_ceil(V::N).min(4);
            match b {
                4 => rows_of::<V, 4, 2>(p, ox, dst),
                3 => rows_of::<V, 3, 2>(p, ox, dst),
                2 => rows_of::<V, 2, 4>(p, ox, dst),
                _ => rows_of::<V, 1, 8>(p, ox, dst),
            }
            ox += b * V::N;
        }
    }
}

/// A 3x3 kernel (row stride `SH`, no row dilation): every output row's `B` vectors from
/// column `ox`, `R` rows at a time, the 9 weights in registers.
#[inline(always)]
unsafe fn rows3_of<V: F32s, const B: usize, const R: usize, const SH: usize>(
    p: &DepthwisePlane,
    w: &[V; 9],
    ox: usize,
    dst: &mut [f32],
) {
    let oh = dst.len() / p.ow.max(1);
    let mut oy = 0;
    // SAFETY: forwarded contract.
    unsafe {
        while oy + R <= oh {
            block3::<V, B, R, SH>(p, w, oy, ox, dst);
            oy += R;
        }
        while oy < oh {
            block3::<V, B, 1, SH>(p, w, oy, ox, dst);
            oy += 1;
        }
    }
}

/// Output rows `oy..oy + R` of a 3x3 kernel, input row by input row: each vector of taps is
/// loaded once and feeds every output row whose window holds that input row (stride 1: up to
/// 3), where the per-tap loop would load it again for each.
#[inline(always)]
unsafe fn block3<V: F32s, const B: usize, const R: usize, const SH: usize>(
    p: &DepthwisePlane,
    w: &[V; 9],
    oy: usize,
    ox: usize,
    dst: &mut [f32],
) {
    let ow = p.ow;
    // SAFETY: input rows oy * SH .. + (R - 1) * SH + 3 are the window's (inside the padded
    // rows); the lanes past ow read at most N - 1 further floats, inside the slack.
    unsafe {
        let mut acc = [[V::splat(0.0); B]; R];
        for j in 0..(R - 1) * SH + 3 {
            let line = p.rows.as_ptr().add((oy * SH + j) * p.row_len + ox);
            for (kx, &off) in p.offsets.iter().enumerate().take(3) {
                let v: [V; B] = std::array::from_fn(|b| V::load(line.add(off + b * V::N)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Input row j is window row ky = j - r * SH of output row oy + r.
                    if j >= r * SH && j - r * SH < 3 {
                        let wk = w[(j - r * SH) * 3 + kx];
                        for (a, v) in acc.iter_mut().zip(&v) {
                            *a = wk.fma(*v, *a);
                        }
                    }
                }
            }
        }
        store(&acc, oy, ox, ow, dst);
    }
}

/// Every output row's `B` vectors from column `ox`, `R` rows at a time.
#[inline(always)]
unsafe fn rows_of<V: F32s, const B: usize, const R: usize>(
    p: &DepthwisePlane,
    ox: usize,
    dst: &mut [f32],
) {
    let oh = dst.len() / p.ow.max(1);
    let mut oy = 0;
    // SAFETY: forwarded contract.
    unsafe {
        while oy + R <= oh {
            block::<V, B, R>(p, oy, ox, dst);
            oy += R;
        }
        while oy < oh {
            block::<V, B, 1>(p, oy, ox, dst);
            oy += 1;
        }
    }
}

/// Output rows `oy..oy + R`, `B` vectors of columns from `ox` (the lanes past `ow` are
/// computed from the slack and dropped).
#[inline(always)]
unsafe fn block<V: F32s, const B: usize, const R: usize>(
    p: &DepthwisePlane,
    oy: usize,
    ox: usize,
    dst: &mut [f32],
) {
    let (kw, ow) = (p.offsets.len(), p.ow);
    // SAFETY: the padded rows hold every tap of output columns < ow; the lanes past ow read
    // at most N - 1 further floats, inside the slack (caller's contract).
    unsafe {
        let mut acc = [[V::splat(0.0); B]; R];
        for ky in 0..p.kh {
            for (kx, &off) in p.offsets.iter().enumerate() {
                let w = V::splat(*p.taps.get_unchecked(ky * kw + kx));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let y = (oy + r) * p.sh + ky * p.dh;
                    let line = p.rows.as_ptr().add(y * p.row_len + ox + off);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = w.fma(V::load(line.add(b * V::N)), *a);
                    }
                }
            }
        }
        store(&acc, oy, ox, ow, dst);
    }
}

/// Rows `oy..oy + R` of sums, `B` vectors each from column `ox`, into `dst` (rows of `ow`): the
/// lanes past `ow` are dropped.
#[inline(always)]
unsafe fn store<V: F32s, const B: usize, const R: usize>(
    acc: &[[V; B]; R],
    oy: usize,
    ox: usize,
    ow: usize,
    dst: &mut [f32],
) {
    for (r, acc) in acc.iter().enumerate() {
        let out = &mut dst[(oy + r) * ow..(oy + r + 1) * ow];
        for (b, a) in acc.iter().enumerate() {
            let x = ox + b * V::N;
            // SAFETY: a whole vector from x lies in the row; a tail goes through a buffer.
            unsafe {
                if x + V::N <= ow {
                    a.store(out.as_mut_ptr().add(x));
                } else {
                    let mut tail = [0.0f32; DEPTHWISE_SLACK];
                    a.store(tail.as_mut_ptr());
                    out[x..].copy_from_slice(&tail[..ow - x]);
                }
            }
        }
    }
}
